"""Hybrid retrieval over Qdrant: chunking, dense + sparse encoders, fused search."""
