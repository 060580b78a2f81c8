"""The strace-log reader behind tests/e2e/test_no_egress.py, on lines strace 6.1 wrote."""

from __future__ import annotations

import pytest

from tests.egress import Attempt, leaving, parse_strace, tally, why_it_leaves

LOOPBACK_V4 = (
    '7 connect(6, {sa_family=AF_INET, sin_port=htons(8100), sin_addr=inet_addr("127.0.0.1")}, 16)'
    " = 0"
)
OUTSIDE_V4 = (
    '7 connect(3, {sa_family=AF_INET, sin_port=htons(443), sin_addr=inet_addr("10.0.0.1")}, 16)'
    " = -1 ENETUNREACH (Network is unreachable)"
)
UNIX = '8 connect(4, {sa_family=AF_UNIX, sun_path="/tmp/x{y}z.sock"}, 17) = 0'


def v6(call: str, address: str) -> str:
    return (
        f"9 {call}(7, {{sa_family=AF_INET6, sin6_port=htons(80), sin6_flowinfo=htonl(0), "
        f'inet_pton(AF_INET6, "{address}", &sin6_addr), sin6_scope_id=0}}, 28) = 0'
    )


def only(line: str) -> Attempt:
    (attempt,) = parse_strace(line)
    return attempt


def test_an_address_outside_loopback_is_flagged_and_loopback_is_not() -> None:
    attempts = parse_strace("\n".join([LOOPBACK_V4, OUTSIDE_V4, UNIX]))
    assert [(a.pid, a.family, a.host, a.port) for a in attempts] == [
        (7, "AF_INET", "127.0.0.1", 8100),
        (7, "AF_INET", "10.0.0.1", 443),
        (8, "AF_UNIX", None, None),
    ]
    ((leak, why),) = leaving(attempts)
    assert leak.host == "10.0.0.1" and leak.line == OUTSIDE_V4
    assert why == "10.0.0.1 is outside loopback"
    assert tally(attempts) == {"connect AF_INET": 2, "connect AF_UNIX": 1}


@pytest.mark.parametrize(
    ("address", "leaves"),
    [
        ("::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("2001:4860:4860::8888", True),
        ("::ffff:10.0.0.1", True),
        ("::", True),  # fails closed: not loopback by name
    ],
)
def test_ipv6_destinations(address: str, leaves: bool) -> None:
    assert (why_it_leaves(only(v6("connect", address))) is not None) is leaves


def test_sendto_and_sendmsg_are_judged_by_the_destination_they_name() -> None:
    sendto = (
        '5 sendto(3, ""..., 20, 0, {sa_family=AF_INET, sin_port=htons(9), '
        'sin_addr=inet_addr("192.168.1.2")}, 16) = 20'
    )
    sendmsg = (
        "5 sendmsg(3, {msg_name={sa_family=AF_INET, sin_port=htons(5000), sin_addr=inet_addr("
        '"8.8.8.8")}, msg_namelen=16, msg_iov=[...], msg_iovlen=1, msg_controllen=0, '
        "msg_flags=0}, 0) = -1 ENETUNREACH (Network is unreachable)"
    )
    connected = '5 sendto(6, ""..., 3, 0, NULL, 0)   = 3'  # destination: its connect's
    attempts = parse_strace("\n".join([sendto, sendmsg, connected, v6("sendto", "::1")]))
    assert [a.host for a in attempts] == ["192.168.1.2", "8.8.8.8", "::1"]
    assert [a.host for a, _ in leaving(attempts)] == ["192.168.1.2", "8.8.8.8"]


def test_a_sendmmsg_is_judged_by_every_destination_it_names() -> None:
    line = (
        "4 sendmmsg(3, [{msg_hdr={msg_name={sa_family=AF_INET, sin_port=htons(9), "
        'sin_addr=inet_addr("127.0.0.1")}, ...}}, {msg_hdr={msg_name={sa_family=AF_INET, '
        'sin_port=htons(9), sin_addr=inet_addr("10.1.2.3")}, ...}}], 2, 0) = 2'
    )
    assert [a.host for a, _ in leaving(parse_strace(line))] == ["10.1.2.3"]


def test_a_name_lookup_leaves_even_through_a_loopback_resolver() -> None:
    line = LOOPBACK_V4.replace("htons(8100)", "htons(53)").replace("127.0.0.1", "127.0.0.53")
    assert why_it_leaves(only(line)) == "a name lookup: the resolver asks the world"


def test_what_cannot_be_read_fails_closed() -> None:
    bad_pointer = "3 connect(5, 0x7ffd1234, 16) = -1 EFAULT (Bad address)"
    packet = (
        '3 sendto(5, ""..., 60, 0, {sa_family=AF_PACKET, sll_protocol=htons(ETH_P_ALL), '
        "sll_ifindex=2}, 20) = 60"
    )
    assert why_it_leaves(only(bad_pointer)) == "no address could be read"
    assert why_it_leaves(only(packet)) == "address family AF_PACKET is not known to stay local"


def test_local_families_and_other_lines_are_not_attempts_outside() -> None:
    log = "\n".join(
        [
            UNIX,
            '2 connect(9, {sa_family=AF_UNSPEC, sa_data="\\0\\0"}, 16) = 0',  # UDP disconnect
            "2 sendto(9, {nlmsg_len=20, ...}, 20, 0, {sa_family=AF_NETLINK, nl_pid=0, "
            "nl_groups=00000000}, 12) = 20",
            "2 connect(3, {sa_family=AF_INET, sin_port=htons(80), sin_addr=inet_addr("
            '"127.0.0.1")}, 16 <unfinished ...>',
            "2 <... connect resumed>) = 0",  # its address was on the line above
            "2 +++ exited with 0 +++",
        ]
    )
    attempts = parse_strace(log)
    assert len(attempts) == 4 and not leaving(attempts)
