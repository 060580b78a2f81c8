"""Pure metric functions (no I/O)."""
