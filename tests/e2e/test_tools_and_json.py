"""Tool calling and structured output through every path of the gateway, on the real engine
(started with RAGDOCK_ENGINE_TOOL_PARSER's default, `pythonic`), driven by the official openai
SDK and by LangChain as their users write it.

The base Gemma 3 270M does not call tools on its own, so the fixture trains a tiny real adapter
(peft, a few steps, as the fixed-reply adapters are) to answer one weather question, asked with
the weather tool in the request, with a call in the parser's format. A named `tool_choice` and
`response_format` make the engine constrain decoding, so they yield calls and JSON for the base
and for the adapter, with RAG on and off.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, Literal

import httpx
import openai
import pytest
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from tests.adapter_factory import train_fixed_reply
from tests.support import TEST_API_KEY, GatewayProcess

pytestmark = pytest.mark.e2e

WEATHER_QUESTION = "What is the weather in Paris right now?"
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city's name."}},
            "required": ["city"],
        },
    },
}
CALL_REPLY = '[get_weather(city="Paris")]'
PUMP_DOC = (
    "# The Zephyr pump\n\nThe Zephyr pump in building 7 is serviced every 90 days by the "
    "facilities team. Its filter is replaced at each service."
)
PUMP_QUESTION = "How often is the Zephyr pump serviced?"
# Bounded values: the grammar ends every field, so even an adapter trained on something else
# (the weather caller) finishes its JSON within max_tokens.
SERVICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "interval": {"type": "integer", "minimum": 0, "maximum": 1000},
        "unit": {"type": "string", "enum": ["days", "weeks", "months"]},
    },
    "required": ["interval", "unit"],
    "additionalProperties": False,
}
SCHEDULE_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "schedule_service",
        "description": "Book the next service of a machine.",
        "parameters": {
            "type": "object",
            "properties": {"machine": {"type": "string", "enum": ["Zephyr pump", "boiler"]}},
            "required": ["machine"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(scope="module")
def caller(
    gateway: GatewayProcess,
    model_dir: Path,
    ragdock_home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """A real adapter trained to answer the weather question with a call; its served name."""
    out = train_fixed_reply(
        model_dir,
        tmp_path_factory.mktemp("caller") / "caller",
        WEATHER_QUESTION,
        CALL_REPLY,
        dtype_cache=ragdock_home,
        tools=[WEATHER_TOOL],
    )
    files = [("files", (p.name, p.read_bytes())) for p in sorted(out.iterdir()) if p.is_file()]
    reply = httpx.post(
        f"{gateway.api_base}/adapters/upload",
        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
        files=files,
        data={"name": "caller"},
        timeout=120,
    )
    assert reply.status_code == 201, reply.text
    return str(reply.json()["model"])  # caller@v1


@pytest.fixture(scope="module")
def pump_collection(gateway: GatewayProcess) -> str:
    name = f"tools-{uuid.uuid4().hex[:8]}"
    http = httpx.Client(
        base_url=gateway.api_base,
        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
        timeout=300,
    )
    assert http.post("/collections", json={"name": name}).status_code == 201
    documents = [{"id": "pump", "title": "The Zephyr pump", "text": PUMP_DOC}]
    reply = http.post(f"/collections/{name}/documents", json={"documents": documents})
    assert reply.status_code == 200, reply.text
    return name


def _weather_call(client: openai.OpenAI, model: str, **extra: Any) -> Any:
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": WEATHER_QUESTION}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        max_tokens=40,
        temperature=0,
        **extra,
    )


def test_an_adapter_that_calls_tools_comes_back_as_parsed_tool_calls(
    client: openai.OpenAI, caller: str
) -> None:
    reply = _weather_call(client, caller)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather"]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert calls[0].id


def test_a_streamed_tool_call_arrives_as_tool_call_deltas(
    client: openai.OpenAI, caller: str
) -> None:
    names, arguments, finish = [], "", None
    for chunk in _weather_call(client, caller, stream=True):
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                if call.function and call.function.name:
                    names.append(call.function.name)
                if call.function and call.function.arguments:
                    arguments += call.function.arguments
            finish = choice.finish_reason or finish
    assert names == ["get_weather"]
    assert json.loads(arguments) == {"city": "Paris"}
    assert finish == "tool_calls"


def test_without_tools_the_same_adapter_answers_in_text(client: openai.OpenAI, caller: str) -> None:
    reply = client.chat.completions.create(
        model=caller,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=16,
        temperature=0,
    )
    assert not reply.choices[0].message.tool_calls
    assert reply.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("rag", [False, True], ids=["plain", "rag"])
@pytest.mark.parametrize("which", ["base", "adapter"])
def test_a_named_tool_choice_yields_its_call_for_base_and_adapter_with_rag_on_and_off(
    client: openai.OpenAI, caller: str, pump_collection: str, which: str, rag: bool
) -> None:
    model = caller if which == "adapter" else "gemma"
    extra: dict[str, Any] = {}
    if rag:  # a question the collection covers: the model is asked, with the tool
        extra["extra_body"] = {"rag": {"collection": pump_collection}}
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": f"{PUMP_QUESTION} Book its next service."}],
        tools=[SCHEDULE_TOOL],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "schedule_service"}},
        max_tokens=40,
        temperature=0,
        **extra,
    )
    calls = reply.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["schedule_service"], reply.model_dump()
    assert json.loads(calls[0].function.arguments)["machine"] in ("Zephyr pump", "boiler")
    if rag:  # grounded: the sources come back beside the call, which is flagged, not replaced
        body = reply.model_dump()
        assert body["sources"] and body["sources"][0]["doc_id"] == "pump"
        assert body["grounding"]["status"] == "answered"


def test_with_rag_on_a_question_the_sources_do_not_cover_is_abstained_tools_or_not(
    client: openai.OpenAI, caller: str, pump_collection: str
) -> None:
    reply = _weather_call(client, caller, extra_body={"rag": {"collection": pump_collection}})
    body = reply.model_dump()
    assert not reply.choices[0].message.tool_calls
    assert body["grounding"]["status"] == "abstained"
    assert body["grounding"]["reason"] == "retrieval_gate"


@pytest.mark.parametrize("rag", [False, True], ids=["plain", "rag"])
@pytest.mark.parametrize("which", ["base", "adapter"])
def test_json_schema_output_parses_for_base_and_adapter_with_rag_on_and_off(
    client: openai.OpenAI, caller: str, pump_collection: str, which: str, rag: bool
) -> None:
    model = caller if which == "adapter" else "gemma"
    extra: dict[str, Any] = {}
    if rag:
        extra["extra_body"] = {"rag": {"collection": pump_collection}}
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PUMP_QUESTION}],
        max_tokens=60,
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "service", "schema": SERVICE_SCHEMA, "strict": True},
        },
        **extra,
    )
    parsed = json.loads(reply.choices[0].message.content or "")
    assert set(parsed) == {"interval", "unit"}
    assert isinstance(parsed["interval"], int) and parsed["unit"] in ("days", "weeks", "months")
    if rag:
        body = reply.model_dump()
        assert body["sources"][0]["doc_id"] == "pump"
        # The support check flags a JSON reply; it never swaps it for the abstention's prose.
        assert body["grounding"]["status"] == "answered"


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"Sunny in {city}"


class Service(BaseModel):
    interval: int = Field(ge=0, le=1000)
    unit: Literal["days", "weeks", "months"]


def _langchain(gateway: GatewayProcess, model: str) -> ChatOpenAI:
    return ChatOpenAI(
        model=model,
        base_url=gateway.api_base,
        api_key=TEST_API_KEY,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=60,  # type: ignore[call-arg]
    )


def test_langchain_bind_tools_gets_the_adapters_call(gateway: GatewayProcess, caller: str) -> None:
    message = _langchain(gateway, caller).bind_tools([get_weather]).invoke(WEATHER_QUESTION)
    assert [c["name"] for c in message.tool_calls] == ["get_weather"]
    assert message.tool_calls[0]["args"] == {"city": "Paris"}


@pytest.mark.parametrize("which", ["base", "adapter"])
def test_langchain_structured_output_parses_into_the_model(
    gateway: GatewayProcess, caller: str, which: str
) -> None:
    model = caller if which == "adapter" else "gemma"
    structured = _langchain(gateway, model).with_structured_output(Service, method="json_schema")
    result = structured.invoke(PUMP_QUESTION)
    assert isinstance(result, Service)
