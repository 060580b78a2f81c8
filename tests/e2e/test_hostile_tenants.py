"""One tenant against the whole gateway, on a real `ragdock serve` (no engine: a request that
reached it would come back 503, so a 429 proves the refusal came first), `/healthz` sampled
throughout and the process's memory and threads read before and after:

- an ingest-only key creating collections until it is refused (before: 200 created in 49 s, the
  embedded store's 8 threads each, 124 -> 1,725 threads, and no way for the tenant to drop
  them), then its tenant admin dropping every one, threads given back;
- one completion with `echo`, `logprobs` and `n: 16` (before: 144 s of engine CPU from one
  request) refused by the tenant's token budget before the engine, with `Retry-After`."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.connection_attacks import Watch
from tests.support import GatewayProcess, free_port, start_gateway

# No `e2e` marker: no engine or model, only the embedder the gateway loads.
INGEST, ADMIN = "tenant-ingest-0123456789", "tenant-admin-01234567890"
MAX_COLLECTIONS, TOKENS_PER_MINUTE = 12, 20_000
PROBE_BOUND_S = 2.0


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("tenants")
    keys = [
        {"key": INGEST, "name": "docs", "tenant": "t", "scopes": ["ingest", "chat"]},
        {"key": ADMIN, "name": "admin", "tenant": "t", "scopes": ["admin"]},
    ]
    env = {
        "RAGDOCK_API_KEYS": json.dumps(keys),
        "RAGDOCK_TENANT_MAX_COLLECTIONS": str(MAX_COLLECTIONS),
        "RAGDOCK_TENANT_TOKENS_PER_MINUTE": str(TOKENS_PER_MINUTE),
    }
    process = start_gateway(f"http://127.0.0.1:{free_port()}", workdir / "gateway.log", env)
    yield process
    process.stop()


def _client(gateway: GatewayProcess, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=gateway.api_base, headers={"Authorization": f"Bearer {key}"}, timeout=60
    )


def test_a_collection_flood_stops_at_the_quota_and_the_tenant_admin_drops_it(
    gateway: GatewayProcess,
) -> None:
    ingest, admin = _client(gateway, INGEST), _client(gateway, ADMIN)
    with Watch(gateway) as watch:
        statuses = [ingest.post("/collections", json={"name": f"flood-{i}"}).status_code
                    for i in range(MAX_COLLECTIONS + 8)]  # fmt: skip
        refused = ingest.post("/collections", json={"name": "one-more"})
        flooded = watch.cost()
        dropped = [admin.delete(f"/collections/flood-{i}").status_code
                   for i in range(MAX_COLLECTIONS)]  # fmt: skip
        after = ingest.post("/collections", json={"name": "after-the-drop"})
    cost = watch.cost()
    print(f"\ncollection flood: {statuses.count(201)} created, then "
          f"{statuses.count(429)} refused; at the quota {flooded.line()}; "
          f"after the drops {cost.line()}")  # fmt: skip
    assert statuses == [201] * MAX_COLLECTIONS + [429] * 8
    error = refused.json()["error"]
    assert (refused.status_code, error["code"]) == (429, "insufficient_quota")
    assert "RAGDOCK_TENANT_MAX_COLLECTIONS" in error["message"]
    assert dropped == [204] * MAX_COLLECTIONS and after.status_code == 201
    listed = [c["name"] for c in ingest.get("/collections").json()["data"]]
    assert listed == ["after-the-drop"], listed
    assert watch.failures == 0 and cost.worst_probe_s < PROBE_BOUND_S
    # 8 threads per open collection (tests/retrieval/test_store_cost.py): bounded at the quota,
    # and given back by the drops.
    assert flooded.threads_after <= flooded.threads_before + 8 * MAX_COLLECTIONS + 4
    assert cost.threads_after <= cost.threads_before + 8 + 4


def test_a_costly_completion_is_refused_by_the_token_budget_before_the_engine(
    gateway: GatewayProcess,
) -> None:
    chat = _client(gateway, INGEST)
    body = {"model": "gemma", "prompt": "Tell me everything. " * 20, "n": 16, "echo": True,
            "logprobs": 5}  # fmt: skip
    with Watch(gateway) as watch:
        reply = chat.post("/completions", json=body)
        small = chat.post("/completions", json={"model": "gemma", "prompt": "Hi", "max_tokens": 4})
    cost = watch.cost()
    print(f"\necho+logprobs+n=16: {reply.status_code} {reply.json()['error']['code']}; "
          f"a small one: {small.status_code}; {cost.line()}")  # fmt: skip
    error = reply.json()["error"]
    assert (reply.status_code, error["type"], error["code"]) == (
        429,
        "tokens",
        "rate_limit_exceeded",
    )
    assert "RAGDOCK_TENANT_TOKENS_PER_MINUTE" in error["message"]
    assert int(reply.headers["Retry-After"]) >= 0
    # A request within the budget goes on to the engine (none listens here: 503).
    assert small.status_code == 503 and small.json()["error"]["code"] == "engine_unavailable"
    assert watch.failures == 0 and cost.worst_probe_s < PROBE_BOUND_S
