"""Collections, documents (ingestion with atomic replacement), search alone, and embeddings."""
