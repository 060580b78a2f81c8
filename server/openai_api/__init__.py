"""The OpenAI-compatible API surface: chat completions, completions, models."""
