"""Reads an strace log of socket calls and names every one that could leave the machine.

tests/e2e/test_no_egress.py runs the whole product under
`strace -f -s 0 -e signal=none -e trace=connect,sendto,sendmsg,sendmmsg` inside a network
namespace that has only loopback; this module turns that log into `Attempt`s and judges them.
Judging fails closed: an address family this module does not know, or a connect whose address it
cannot read, counts as leaving. A lookup on port 53 counts too, even on loopback: a local stub
resolver (127.0.0.53) forwards the name it is asked to the world.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections import Counter
from dataclasses import dataclass

# Every socket call that names a destination. `sendto`/`sendmsg` on a connected socket name
# none (NULL): their destination is the `connect` already recorded.
TRACED_SYSCALLS = ("connect", "sendto", "sendmsg", "sendmmsg")
STRACE_ARGS = (
    "-f",  # every child: the engine, its workers, the gateway, the CLIs
    "--seccomp-bpf",  # stop only at the traced calls: the engine runs at full speed
    "-qq",  # no attach/exit lines
    "-s", "0",  # no payload bytes in the log (it would copy documents and answers)
    "-e", "signal=none",
    "-e", f"trace={','.join(TRACED_SYSCALLS)}",
)  # fmt: skip
# Families that never reach another host: a local socket file, the kernel, a UDP disconnect.
LOCAL_FAMILIES = frozenset({"AF_UNIX", "AF_LOCAL", "AF_NETLINK", "AF_UNSPEC"})
INET_FAMILIES = frozenset({"AF_INET", "AF_INET6"})
UNREAD = "?"  # the family of a connect whose address strace did not decode
DNS_PORT = 53

_CALL = re.compile(r"^(?P<pid>\d+)\s+(?P<syscall>\w+)\((?P<args>.*)$")
_FAMILY = re.compile(r"sa_family=(AF_\w+)")
_PORT = re.compile(r"sin6?_port=htons\((\d+)\)")
_ADDRESS = re.compile(r'inet_addr\("([^"]*)"\)|inet_pton\(AF_INET6?, "([^"]*)"')


@dataclass(frozen=True)
class Attempt:
    """One destination one traced call named (a `sendmmsg` may name several)."""

    pid: int
    syscall: str
    family: str  # "AF_INET", ...; UNREAD when strace showed no readable address
    host: str | None
    port: int | None
    line: str


def parse_strace(log: str) -> list[Attempt]:
    """The destinations in an strace log written with `STRACE_ARGS` (one file, pid-prefixed).

    Args:
        log: the log's text.

    Returns:
        One `Attempt` per destination named, in log order; a `connect` whose address strace did
        not decode (a bad pointer, say) is an `Attempt` of family UNREAD.
    """
    attempts: list[Attempt] = []
    for line in log.splitlines():
        call = _CALL.match(line)
        if call is None or call["syscall"] not in TRACED_SYSCALLS:
            continue  # "<... connect resumed>": its address was on the "<unfinished ...>" line
        pid, syscall, args = int(call["pid"]), call["syscall"], call["args"]
        # Each destination's fields run from its sa_family to the next one's.
        starts = [m.start() for m in _FAMILY.finditer(args)]
        if not starts and syscall == "connect":
            attempts.append(Attempt(pid, syscall, UNREAD, None, None, line))
        for start, end in itertools.pairwise([*starts, len(args)]):
            attempts.append(_destination(pid, syscall, args[start:end], line))
    return attempts


def _destination(pid: int, syscall: str, fields: str, line: str) -> Attempt:
    family = _FAMILY.match(fields)
    assert family is not None  # `fields` starts at a match
    port = _PORT.search(fields)
    address = _ADDRESS.search(fields)
    host = (address[1] or address[2]) if address else None
    return Attempt(pid, syscall, family[1], host, int(port[1]) if port else None, line)


def why_it_leaves(attempt: Attempt) -> str | None:
    """Why `attempt` could reach beyond this machine, or None when it cannot."""
    if attempt.family in LOCAL_FAMILIES:
        return None
    if attempt.family == UNREAD:
        return "no address could be read"
    if attempt.family not in INET_FAMILIES:
        return f"address family {attempt.family} is not known to stay local"
    if attempt.host is None:
        return f"no {attempt.family} address could be read"
    if attempt.port == DNS_PORT:
        return "a name lookup: the resolver asks the world"
    try:
        address = ipaddress.ip_address(attempt.host)
    except ValueError:
        return f"{attempt.host!r} is not an IP address"
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    if address.is_loopback or (mapped is not None and mapped.is_loopback):
        return None
    return f"{address} is outside loopback"


def leaving(attempts: list[Attempt]) -> list[tuple[Attempt, str]]:
    """The attempts that could leave the machine, each with the reason."""
    judged = ((attempt, why_it_leaves(attempt)) for attempt in attempts)
    return [(attempt, why) for attempt, why in judged if why is not None]


def tally(attempts: list[Attempt]) -> Counter[str]:
    """Attempts counted by call and family (`connect AF_INET`: 123), for the test's report."""
    return Counter(f"{a.syscall} {a.family}" for a in attempts)
