"""Adapter registry: validation, aliases, hot-swap on the engine."""
