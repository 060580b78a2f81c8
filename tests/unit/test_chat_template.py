"""The Gemma 3 chat template ragdock builds into the model: tools in the pythonic format vLLM's
`pythonic` parser reads, and conversations without tools rendered as they always were."""

from __future__ import annotations

import json
from typing import Any

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.gemma3_template import GEMMA3_CHAT_TEMPLATE


def render(messages: list[dict[str, Any]], **extra: Any) -> str:
    # As transformers renders chat templates: a sandbox, loop controls, raise_exception.
    env = ImmutableSandboxedEnvironment(extensions=["jinja2.ext.loopcontrols"])

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    env.globals["raise_exception"] = raise_exception
    env.filters["tojson"] = json.dumps  # plain text, not jinja's HTML-escaped Markup
    return env.from_string(GEMMA3_CHAT_TEMPLATE).render(
        messages=messages, bos_token="<bos>", **extra
    )


def test_a_plain_conversation_renders_as_gemma_3_expects() -> None:
    text = render(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Bye"},
        ],
        add_generation_prompt=True,
    )
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    )


def test_tools_calls_and_results_render_in_the_pythonic_format() -> None:
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    text = render(
        [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                    {"function": {"name": "get_time", "arguments": {"zone": "CET", "n": 2}}},
                ],
            },
            {"role": "tool", "name": "get_weather", "content": "18C"},
            {"role": "tool", "tool_call_id": "c2", "content": "14:00"},
        ],
        tools=[tool],
        add_generation_prompt=True,
    )
    assert text.startswith("<bos><start_of_turn>user\nYou can call these functions:\n")
    assert '"name": "get_weather"' in text
    assert "Weather in Paris?<end_of_turn>\n" in text
    assert '<start_of_turn>model\n[get_weather(city="Paris"), get_time(zone="CET", n=2)]' in text
    assert (
        "<start_of_turn>user\nResult of get_weather: 18C\nResult of c2: 14:00<end_of_turn>" in text
    )
    assert text.endswith("<start_of_turn>model\n")


def test_roles_that_do_not_alternate_are_refused() -> None:
    with pytest.raises(jinja2.exceptions.TemplateError, match="alternate"):
        render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
