"""Connection-level attacks on a real `ragdock serve` (no engine: none of these requests needs
one), with `/healthz` sampled throughout and the process's memory and threads read before and
after; each attack is cut off in bounded time. Also `/metrics` behind its own credential.

The limits are set shorter than their defaults (2-3 s instead of 10-30 s) so the module runs in
about a minute; the code path is the same. The figures printed are what the closing note quotes
(`python -m tests.connection_attacks` prints the same table with the defaults)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.connection_attacks import (
    ATTACK_KEY,
    METRICS_TOKEN,
    Watch,
    drain,
    endless_header,
    half_request_lines,
    is_open,
    key_status,
    stalled_uploads,
    unread_embeddings,
    wait_for_the_answer,
)
from tests.support import GatewayProcess, free_port, start_gateway

# No `e2e` marker: that one claims an engine and the model; this module needs only the
# embedder the gateway loads (tests/conftest.py puts tests/e2e files in that tier by default).
PROBE_BOUND_S = 2.0
HEAD_TIMEOUT_S, BODY_TIMEOUT_S, SEND_TIMEOUT_S = 2, 3, 3
CHAT_KEY = "chat-key-0123456789abcdef"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("connections")
    nowhere = f"http://127.0.0.1:{free_port()}"
    keys = [
        {"key": ATTACK_KEY, "name": "attacker", "tenant": "t", "scopes": ["admin"]},
        {"key": CHAT_KEY, "name": "app", "tenant": "t", "scopes": ["chat"]},
    ]
    env = {
        "RAGDOCK_API_KEYS": json.dumps(keys),
        "RAGDOCK_METRICS_TOKEN": METRICS_TOKEN,
        "RAGDOCK_HEAD_TIMEOUT_S": str(HEAD_TIMEOUT_S),
        "RAGDOCK_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "RAGDOCK_SEND_TIMEOUT_S": str(SEND_TIMEOUT_S),
    }
    process = start_gateway(nowhere, workdir / "gateway.log", env)
    yield process
    process.stop()


def check_probes(name: str, watch: Watch) -> None:
    cost = watch.cost()
    print(f"\n{name}: {cost.line()}")
    assert watch.failures == 0 and watch.samples > 0
    assert cost.worst_probe_s < PROBE_BOUND_S, f"/healthz took {cost.worst_probe_s:.2f} s"
    assert cost.threads_after <= cost.threads_before + 2


def test_a_header_that_never_ends_is_cut_at_32_kib(gateway: GatewayProcess) -> None:
    with Watch(gateway) as watch:
        sent, answer = endless_header(gateway, 48 << 20)
    print(f"\nendless header: {sent} bytes taken, answer {answer[:40]!r}")
    check_probes("endless header", watch)
    # What the client could write before the cut, the sockets' kernel buffers included (a few
    # MiB on loopback); the gateway itself read 32 KiB and one more read. Before: all 48 MiB.
    assert sent < 8 << 20
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert watch.cost().rss_peak_mb - watch.cost().rss_before_mb < 20  # before: +78 MB


def test_half_request_lines_are_all_dropped_after_the_head_timeout(
    gateway: GatewayProcess,
) -> None:
    with Watch(gateway) as watch:
        held = half_request_lines(gateway, 200, HEAD_TIMEOUT_S + 3)
    print(f"\n200 half request lines: {held} held after {HEAD_TIMEOUT_S + 3} s")
    check_probes("half request lines", watch)
    assert held == 0  # before: 200 of 200


def test_stalled_uploads_give_their_slots_back(gateway: GatewayProcess) -> None:
    with Watch(gateway) as watch:
        socks = stalled_uploads(gateway, 128, "stalls")
        time.sleep(1)
        during = key_status(gateway)
        time.sleep(BODY_TIMEOUT_S + 3)
        after = key_status(gateway)
        held = sum(is_open(s) for s in socks)
        for s in socks:
            s.close()
    print(f"\n128 stalled uploads: the key got {during}, then {after}; {held} held")
    check_probes("stalled uploads", watch)
    assert during == 429  # all 128 of the key's slots were taken
    assert (after, held) == (200, 0)  # before: still 429, all 128 held after 45 s


def test_an_unread_large_answer_is_dropped(gateway: GatewayProcess) -> None:
    with Watch(gateway) as watch:
        sock, _ = unread_embeddings(gateway, 2048)
        answered_after = wait_for_the_answer(sock)  # computing 2048 embeddings takes seconds
        time.sleep(SEND_TIMEOUT_S + 2)
        got, _ = drain(sock)
        sock.close()
    print(
        f"\nunread /v1/embeddings: answered after {answered_after:.1f} s; "
        f"{got} bytes reached the client"
    )
    check_probes("unread embeddings", watch)
    # The answer is ~16.6 MB (before: all of it kept for the client, +96 MB RSS); cut off,
    # the client gets only what the kernel's socket buffers held.
    assert got < 8 << 20


def test_metrics_needs_the_metrics_token(gateway: GatewayProcess) -> None:
    url = f"{gateway.url}/metrics"
    assert httpx.get(url).status_code == 401
    chat = httpx.get(url, headers={"Authorization": f"Bearer {CHAT_KEY}"})
    assert chat.status_code == 403 and "ragdock_" not in chat.text
    scraped = httpx.get(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert scraped.status_code == 200
    assert "ragdock_requests_in_flight" in scraped.text
