"""Conversions between the domain dataclasses and the protobuf messages, one module per entity.

Shared by the API layer (responses) and the cache (whose stored values are serialized messages, so an
entry written by one replica is read by any other).
"""
