"""The entities as plain dataclasses, one module per entity, shared by the stores, the cache and the API layer."""
