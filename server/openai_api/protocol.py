"""Request and response models with OpenAI's field names and order.

Only the fields the gateway must understand, or must reject when malformed, are typed; anything else
(vLLM's sampling extras such as `top_k`, `min_p`, `chat_template_kwargs`) passes through untouched,
so the gateway never narrows what the engine accepts. Strict types: a string where OpenAI expects a
number is a 400 here too, not a silent coercion.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from server.rag.protocol import RagOptions

Number = StrictFloat | StrictInt


class _PassThrough(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChatMessage(_PassThrough):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[dict[str, Any]] | None = None
    name: StrictStr | None = None


class StreamOptions(_PassThrough):
    include_usage: StrictBool | None = None


class _SamplingFields(_PassThrough):
    """Fields shared by chat and text completions."""

    model: StrictStr = Field(min_length=1)
    frequency_penalty: Number | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, Number] | None = None
    max_tokens: StrictInt | None = Field(None, ge=1)
    n: StrictInt | None = Field(None, ge=1, le=16)
    presence_penalty: Number | None = Field(None, ge=-2, le=2)
    seed: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    temperature: Number | None = Field(None, ge=0, le=2)
    top_p: Number | None = Field(None, ge=0, le=1)
    user: StrictStr | None = None

    @property
    def client_wants_usage(self) -> bool:
        """The client asked for the usage chunk at the end of its stream."""
        return bool(self.stream_options and self.stream_options.include_usage)

    def to_engine_payload(self, engine_model: str) -> dict[str, Any]:
        """The request as the engine gets it: every field the client sent (the gateway's own
        `rag` aside) under the engine's name for the model. A stream always asks for the usage
        chunk, which the gateway counts and drops again unless the client asked for it."""
        payload = self.model_dump(exclude_unset=True)
        payload.pop("rag", None)
        payload["model"] = engine_model
        if self.stream:
            options = payload.get("stream_options") or {}
            payload["stream_options"] = {**options, "include_usage": True}
        return payload


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = Field(None, ge=0, le=20)
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: StrictStr | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    rag: RagOptions | None = Field(
        None, description="ragdock: ground the answer in retrieved sources."
    )


class CompletionRequest(_SamplingFields):
    prompt: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
    echo: StrictBool | None = None
    logprobs: StrictInt | None = Field(None, ge=0, le=5)
    suffix: StrictStr | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "ragdock"
    root: str | None = None
    parent: str | None = None
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
