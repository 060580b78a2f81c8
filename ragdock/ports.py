"""A free TCP port on loopback, for whatever starts a server of its own (the gateway or engine
that `ragdock up` starts, a throwaway PostgreSQL, the tests and the benchmarks)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback TCP port nobody listened on a moment ago (the OS's pick).

    Returns:
        The port number; another process may take it before the caller binds it.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
