"""The relay on its own, over a scripted engine: one framer for every way the network can cut a
stream, the usage chunk counted whether or not it reaches the client, a 404 for a lost adapter
answered by one reload and one retry, and an engine that drops a stream mid-way turned into one
OpenAI error event."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from server.engine_client import EngineClient, EngineReply
from server.metrics import GatewayMetrics, RequestMeter
from server.relay.engine_call import EngineCall
from server.relay.framing import SseFramer, event_data, events_of, is_done, sse_event
from server.relay.stream import EngineStream, client_stream
from tests.unit.fake_engine import DONE, chat_stream, engine_over, pieces, streamed, usage_chunk

pytestmark = pytest.mark.anyio

MODEL = "gemma"
STREAM = chat_stream(MODEL, ["The", " pump", " is", " serviced", " every", " 90", " days", " [1]"])
USAGE = usage_chunk(MODEL, 7, 8)
WITHOUT_USAGE = STREAM.replace(USAGE, b"")
EVENTS = events_of(STREAM)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_the_stream_under_test_is_realistic() -> None:
    assert USAGE in STREAM and STREAM.endswith(DONE)
    assert b": keep-alive" in EVENTS and EVENTS[-1] == b"data: [DONE]"
    assert len(EVENTS) == 12


def _framed(reads: list[bytes]) -> tuple[bytes, list[bytes]]:
    framer = SseFramer()
    blocks = [framer.feed(read) for read in reads]
    rest = framer.rest()
    events = [event for block in blocks for event in events_of(block)]
    return b"".join(blocks) + rest, events


def test_a_stream_cut_at_every_byte_is_framed_the_same() -> None:
    for cut in range(len(STREAM) + 1):
        relayed, events = _framed([STREAM[:cut], STREAM[cut:]])
        assert relayed == STREAM, cut
        assert events == EVENTS, cut


def test_a_stream_read_byte_by_byte_or_in_three_reads_is_framed_the_same() -> None:
    assert _framed([STREAM[i : i + 1] for i in range(len(STREAM))]) == (STREAM, EVENTS)
    for first in range(0, len(STREAM), 7):
        for second in range(first, len(STREAM), 29):
            reads = [STREAM[:first], STREAM[first:second], STREAM[second:]]
            assert _framed(reads) == (STREAM, EVENTS), (first, second)


def test_a_block_holds_only_whole_events_and_a_whole_read_is_passed_on_as_it_is() -> None:
    framer = SseFramer()
    whole = STREAM[: STREAM.index(b"\n\n") + 2]
    assert framer.feed(whole) is whole  # the usual read: no copy
    assert framer.feed(b"data: {") == b""
    assert framer.feed(b'"a":1}\n') == b""
    assert framer.feed(b"\ndata: [DO") == b'data: {"a":1}\n\n'
    assert framer.rest() == b"data: [DO"


def test_events_are_written_as_vllm_writes_them_and_read_back() -> None:
    written = sse_event({"a": 1, "b": [True, None], "t": "é"})
    assert written == b'data: {"a":1,"b":[true,null],"t":"\\u00e9"}\n\n'  # compact, ASCII
    assert event_data(written.removesuffix(b"\n\n")) == {"a": 1, "b": [True, None], "t": "é"}
    assert event_data('data: {"a":1}') == {"a": 1}  # a stream's line, as text
    for not_data in (b"data: [DONE]", b": keep-alive", b"data: {", "event: ping", b""):
        assert event_data(not_data) is None
    assert is_done(b"data: [DONE]") and is_done("data: [DONE]") and not is_done(b"data: {}")


def _sample(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def _relay_plain(
    data: bytes, cuts: list[int], *, keep_usage: bool, metrics: GatewayMetrics
) -> bytes:
    """The client's bytes when the engine sends `data` in reads cut at `cuts`."""
    engine = _engine_sending(data, cuts)
    async with AsyncExitStack() as held:
        meter = held.enter_context(RequestMeter(metrics, "chat", MODEL, 0.0))
        meter.status = 200
        call = EngineCall(
            engine, "/v1/chat/completions", meter=meter, reload=_no_reload, keep_usage=keep_usage
        )
        opened = await call.open(b"{}")
        assert isinstance(opened, EngineStream)
        stream = client_stream(opened.blocks(), held.pop_all())
        return b"".join([block async for block in stream])


def _engine_sending(data: bytes, cuts: list[int]) -> EngineClient:
    return engine_over(lambda request: streamed(data, cuts))


async def _no_reload() -> bool:
    return False


async def test_usage_is_dropped_unless_asked_and_counted_either_way_at_every_cut() -> None:
    metrics = GatewayMetrics()
    runs = 0
    for cut in range(len(STREAM) + 1):
        for keep_usage in (False, True):
            out = await _relay_plain(STREAM, [cut], keep_usage=keep_usage, metrics=metrics)
            assert out == (STREAM if keep_usage else WITHOUT_USAGE), (cut, keep_usage)
            runs += 1
            labels = {"model": MODEL}
            assert _sample(metrics, "ragdock_prompt_tokens_total", **labels) == 7 * runs
            assert _sample(metrics, "ragdock_completion_tokens_total", **labels) == 8 * runs
    finished = {"route": "chat", "model": MODEL, "status": "200"}
    assert _sample(metrics, "ragdock_requests_total", **finished) == runs
    assert _sample(metrics, "ragdock_requests_in_flight", route="chat", model=MODEL) == 0


async def test_the_grounded_path_reads_the_same_events_at_every_cut() -> None:
    metrics = GatewayMetrics()
    for cut in range(len(STREAM) + 1):
        engine = _engine_sending(STREAM, [cut])
        meter = RequestMeter(metrics, "chat", MODEL, 0.0)
        call = EngineCall(engine, "/v1/chat/completions", meter=meter, reload=_no_reload)
        opened = await call.open(b"{}")
        assert isinstance(opened, EngineStream)
        events = [event async for event in opened.events()]
        assert events == [e for e in EVENTS if e != USAGE[:-2]], cut
        meter.close()
    assert _sample(metrics, "ragdock_prompt_tokens_total", model=MODEL) > 0


class ForgetfulEngine:
    """An engine that lost the adapter once: its first answer for it is 404."""

    def __init__(self, *, stream: bool) -> None:
        self.stream = stream
        self.asked: list[dict[str, Any]] = []
        self.lost = True

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.asked.append(json.loads(request.content))
        if self.lost:
            self.lost = False
            return httpx.Response(
                404, json={"error": {"message": "The model `a@v1` does not exist."}}
            )
        if self.stream:
            return streamed(chat_stream("a@v1", ["ok"]), [])
        return httpx.Response(200, json={"choices": [], "usage": {"prompt_tokens": 3}})


@pytest.mark.parametrize("stream", [False, True])
async def test_a_404_reloads_and_asks_once_more(stream: bool) -> None:
    engine = ForgetfulEngine(stream=stream)
    reloads: list[str] = []

    async def reload() -> bool:
        reloads.append("a@v1")
        return True

    metrics = GatewayMetrics()
    meter = RequestMeter(metrics, "chat", "a@v1", 0.0)
    call = EngineCall(engine_over(engine), "/v1/chat/completions", meter=meter, reload=reload)
    if stream:
        opened = await call.open(b'{"n": 1}')
        assert isinstance(opened, EngineStream)
        assert [b async for b in opened.blocks()][-1].endswith(DONE)
    else:
        reply = await call.post(b'{"n": 1}')
        assert reply.status_code == 200
    assert reloads == ["a@v1"] and engine.asked == [{"n": 1}, {"n": 1}]
    assert _sample(metrics, "ragdock_prompt_tokens_total", model="a@v1") > 0


@pytest.mark.parametrize("stream", [False, True])
async def test_a_404_that_no_reload_can_mend_is_returned_after_one_ask(stream: bool) -> None:
    engine = ForgetfulEngine(stream=stream)
    meter = RequestMeter(GatewayMetrics(), "chat", "gemma", 0.0)
    call = EngineCall(engine_over(engine), "/v1/chat/completions", meter=meter, reload=_no_reload)
    reply = await (call.open(b"{}") if stream else call.post(b"{}"))
    assert isinstance(reply, EngineReply) and reply.status_code == 404
    assert b"does not exist" in reply.content and len(engine.asked) == 1


async def _dropped_mid_event() -> AsyncGenerator[bytes, None]:
    async for read in pieces(STREAM, [200]):
        yield read
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message")


async def test_an_engine_that_drops_the_stream_ends_it_with_one_error_event() -> None:
    engine = engine_over(lambda request: httpx.Response(200, content=_dropped_mid_event()))
    metrics = GatewayMetrics()
    released: list[bool] = []
    async with AsyncExitStack() as held:
        meter = held.enter_context(RequestMeter(metrics, "chat", MODEL, 0.0))
        meter.status = 200
        held.callback(released.append, True)
        call = EngineCall(engine, "/v1/chat/completions", meter=meter, reload=_no_reload)
        opened = await call.open(b"{}")
        assert isinstance(opened, EngineStream)
        stream = client_stream(opened.blocks(), held.pop_all())
        out = [block async for block in stream]
    whole_events = STREAM[: STREAM.rfind(b"\n\n", 0, 200) + 2]
    assert out[0] == whole_events  # the half-received event is never sent
    error = event_data(out[-1].removesuffix(b"\n\n"))["error"]
    assert out[-1].endswith(b"\n\n") and error["code"] == "engine_unavailable"
    assert set(error) == {"message", "type", "param", "code"}
    assert released == [True]  # the lease and meter were let go when the stream ended
    assert _sample(metrics, "ragdock_requests_total", route="chat", model=MODEL, status="200")


async def test_a_reader_that_stops_early_counts_none_of_the_usage_it_left_unread() -> None:
    metrics = GatewayMetrics()
    meter = RequestMeter(metrics, "chat", MODEL, 0.0)
    call = EngineCall(
        _engine_sending(STREAM, []), "/v1/chat/completions", meter=meter, reload=_no_reload
    )
    opened = await call.open(b"{}")
    assert isinstance(opened, EngineStream)
    events = opened.events()
    assert await anext(events) == EVENTS[0]  # the whole stream came in one read
    await events.aclose()  # as a grounded answer judged at its first token does
    assert _sample(metrics, "ragdock_prompt_tokens_total", model=MODEL) == 0
