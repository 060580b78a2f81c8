"""Evaluation: retrieval, generation, grounding, forgetting; gates; benchmarks."""
