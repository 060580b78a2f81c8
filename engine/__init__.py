"""The base model and the vLLM engine process: build the default checkpoint, start and supervise vLLM."""
