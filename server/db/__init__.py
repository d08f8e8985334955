"""PostgreSQL access: the pool, the deadline-bounded executor, the embedded server and the migration runner."""
