"""The OpenAI-compatible gateway: auth, routing to the engine, streaming relay, errors."""
