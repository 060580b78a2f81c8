"""Benchmarks that print tables (bounded to minutes on a 2-core machine)."""
