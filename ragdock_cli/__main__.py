"""`python -m ragdock_cli ...`: the `ragdock` command, for subprocesses that start it by module."""

from ragdock_cli.app import main

main()
