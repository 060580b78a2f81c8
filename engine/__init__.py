"""The base model and the vLLM engine: build the default checkpoint, start and supervise vLLM."""
