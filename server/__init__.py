"""dataservice: the gRPC data-access service (users, sessions, content, recommendations, embeddings)."""

__version__ = "0.1.0"
