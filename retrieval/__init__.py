"""Hybrid retrieval over Qdrant: chunking, dense + sparse encoders, fused search.

Entry points (import them from their modules; nothing heavy is imported here):
- `retrieval.factory.open_retriever(data_dir, qdrant_url=None, ...)` -> `Retriever`
- `retrieval.service.Retriever`: create/list/delete collections, `ingest`, `search`,
  `list_documents`, `get_document`, `delete_document`
- `retrieval.types`: `Document`, `ScoredChunk`, `SearchFilter`, `SearchMode`, `DocumentInfo`
- `retrieval.ranking`: `FusionConfig`, `RecencyDecay`
- `retrieval.store`: `VectorStore` protocol, `EdgeStore`, `QdrantClientStore`
- `retrieval.freshness`: how re-ingesting a document swaps its chunks atomically
"""
