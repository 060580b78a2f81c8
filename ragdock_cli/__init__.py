"""The `ragdock` command line, above every package: `ragdock = "ragdock_cli:main"`."""

from ragdock_cli.app import app, expand_short_forms, main

__all__ = ["app", "expand_short_forms", "main"]
