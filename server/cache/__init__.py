"""The read-through cache: one ``Cache`` protocol, a Redis and an in-process implementation, and the
entity-level read-through objects that the servicers call instead of the stores."""
