"""Retrieval-augmented chat: the retrieval gate, grounded prompts, citations and abstention."""
