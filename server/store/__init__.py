"""All SQL of the service: one module per entity, functions named for their intent, domain errors out."""
