"""The last minute of traffic per tenant: events leave the window on every write and read, memory
stays bounded, a tenant sees only its own events (a platform viewer all of them), percentiles are
nearest-rank; and the pipeline records each request and grounded outcome under the caller's
tenant, where the Prometheus series are counted."""

from __future__ import annotations

import pytest

from server.auth import Principal
from server.errors import ModelNotFoundError
from server.metrics import GatewayMetrics, RequestMeter
from server.recent_activity import RecentActivity
from tests.unit import test_grounded_step as grounded
from tests.unit import test_pipeline as pipeline
from tests.unit.fake_engine import engine_over

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_events_older_than_the_window_are_dropped_on_read_and_on_write() -> None:
    clock = Clock()
    recent = RecentActivity(window_s=60, clock=clock)
    recent.request("acme", 0.5, 200)
    recent.outcome("acme", "abstained", "retrieval_gate")
    clock.now += 30
    recent.request("acme", 1.5, 502)
    assert recent.summary(None).requests == 2 and len(recent) == 3
    clock.now += 31  # the first two are 61 s old
    summary = recent.summary(None)
    assert (summary.requests, summary.errors, summary.grounded) == (1, 1, 0)
    assert len(recent) == 1  # pruned by the read itself
    clock.now += 100
    recent.outcome("beta", "answered", "cited")  # a write prunes too
    assert len(recent) == 1


def test_memory_is_bounded_whatever_the_rate() -> None:
    recent = RecentActivity(max_events=100, clock=Clock())
    for i in range(1000):
        recent.request("acme", float(i), 200)
    assert len(recent) == 100
    assert recent.summary(None).latency_p50_s == 950.0  # the oldest 900 went first


def test_a_tenant_sees_its_own_events_and_a_platform_viewer_everyones() -> None:
    recent = RecentActivity(clock=Clock())
    recent.request("acme", 0.1, 200)
    recent.request("beta", 0.2, 500)
    recent.outcome("acme", "answered", "cited")
    recent.outcome("beta", "abstained", "low_answerability")
    recent.outcome("beta", "abstained", "retrieval_gate")
    recent.outcome("beta", "answered", "cited")

    acme = recent.summary("acme")
    assert (acme.requests, acme.errors, acme.grounded, acme.abstained) == (1, 0, 1, 0)
    assert acme.abstentions_by_reason == {} and acme.abstention_rate == 0.0
    beta = recent.summary("beta")
    assert (beta.requests, beta.errors, beta.answered, beta.abstained) == (1, 1, 1, 2)
    assert beta.abstentions_by_reason == {"low_answerability": 1, "retrieval_gate": 1}
    assert beta.abstention_rate == pytest.approx(2 / 3)
    everyone = recent.summary(None)
    assert (everyone.requests, everyone.errors, everyone.grounded) == (2, 1, 4)
    assert recent.summary("gamma").abstention_rate is None  # nothing grounded: no rate


def test_in_flight_counts_per_tenant() -> None:
    recent = RecentActivity(clock=Clock())
    recent.started("acme")
    recent.started("acme")
    recent.started("beta")
    recent.ended("acme")
    assert (recent.in_flight("acme"), recent.in_flight("beta"), recent.in_flight(None)) == (1, 1, 2)
    recent.ended("acme")
    assert recent.in_flight("acme") == 0


def test_percentiles_are_nearest_rank() -> None:
    recent = RecentActivity(clock=Clock())
    summary = recent.summary(None)
    assert summary.latency_p50_s is None and summary.latency_p95_s is None
    for latency in [5.0, 1.0, 4.0, 2.0, 3.0]:
        recent.request("acme", latency, 200)
    summary = recent.summary(None)
    assert (summary.latency_p50_s, summary.latency_p95_s) == (3.0, 5.0)


def test_a_request_meter_records_its_tenant_status_and_latency() -> None:
    metrics = GatewayMetrics()
    with RequestMeter(metrics, "chat", "gemma", 0.0, tenant="acme") as meter:
        assert metrics.recent.in_flight("acme") == 1
        meter.status = 200
    with pytest.raises(ModelNotFoundError), RequestMeter(metrics, "chat", "g", 0.0, tenant="beta"):
        raise ModelNotFoundError("g")
    assert metrics.recent.in_flight(None) == 0
    assert metrics.recent.summary("acme").requests == 1
    beta = metrics.recent.summary("beta")
    assert (beta.requests, beta.errors) == (1, 0)  # a 404 is no error of the gateway's
    assert beta.latency_p50_s is not None and beta.latency_p50_s > 0


async def test_a_gate_abstention_counts_for_the_callers_tenant() -> None:
    step, metrics, _ = grounded._step([], engine_over(grounded._no_engine))
    await step.prepare(grounded._request(), grounded.WHO)
    acme = metrics.recent.summary(grounded.WHO.tenant)
    assert (acme.grounded, acme.abstained) == (1, 1)
    assert acme.abstentions_by_reason == {"retrieval_gate": 1}
    assert metrics.recent.summary("beta").grounded == 0


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_the_pipeline_records_requests_and_verdicts_under_the_callers_tenant(
    stream: bool,
) -> None:
    service, _, metrics = pipeline._service(pipeline.Engine())
    messages = [{"role": "user", "content": "How often is the pump serviced?"}]
    request = pipeline._chat("gemma", messages, stream=stream, rag={"collection": "manuals"})
    assert await pipeline._read(await service.chat(request, pipeline.WHO))
    beta = Principal(name="b", tenant="beta", scopes=frozenset({"chat"}))
    with pytest.raises(ModelNotFoundError):
        await service.chat(pipeline._chat("nope", messages), beta)

    acme = metrics.recent.summary("acme")
    assert (acme.requests, acme.errors, acme.grounded, acme.answered) == (1, 0, 1, 1)
    beta_summary = metrics.recent.summary("beta")
    assert (beta_summary.requests, beta_summary.grounded) == (1, 0)
    assert metrics.recent.in_flight(None) == 0
