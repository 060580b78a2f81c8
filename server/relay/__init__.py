"""The way to the engine and back: one call that posts or streams with adapter reload on 404, one
SSE framer, token usage read from the engine's answer, and engine failures as OpenAI errors."""
