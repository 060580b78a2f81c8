"""The first step of a completion request: refuse an overlong prompt before any retrieval or
engine work. Its cost (tokenizing, prefill) grows with its length, and the engine would refuse it
past its context anyway."""

from __future__ import annotations

from server.auth import Principal
from server.errors import InvalidRequestError
from server.metrics import GatewayMetrics
from server.openai_api.protocol import ChatCompletionRequest, CompletionRequest


class PromptGuard:
    def __init__(self, max_prompt_chars: int | None, metrics: GatewayMetrics) -> None:
        """
        Args:
            max_prompt_chars: the most prompt characters a request may carry (None: no limit).
            metrics: where refusals are counted, by the caller's key.
        """
        self._limit = max_prompt_chars
        self._metrics = metrics

    def check(
        self, request: ChatCompletionRequest | CompletionRequest, principal: Principal
    ) -> None:
        """
        Raises:
            InvalidRequestError: the prompt's text is over `max_prompt_chars`.
        """
        if self._limit is None:
            return
        size, param = prompt_chars(request)
        if size > self._limit:
            key = self._metrics.key_label(principal.name)
            self._metrics.rejections.labels("prompt_too_long", key).inc()
            raise InvalidRequestError(
                f"The prompt has {size} characters, over this gateway's limit of {self._limit}",
                param=param,
                code="prompt_too_long",
            )


def prompt_chars(request: ChatCompletionRequest | CompletionRequest) -> tuple[int, str]:
    """The characters of prompt text a request carries, and the field that carries them.

    Token-id prompts count as nothing here: their size is the engine's context check to make.
    """
    if isinstance(request, ChatCompletionRequest):
        size = 0
        for message in request.messages:
            if isinstance(message.content, str):
                size += len(message.content)
            elif message.content:
                size += sum(len(str(part.get("text") or "")) for part in message.content)
        return size, "messages"
    prompt = request.prompt
    if isinstance(prompt, str):
        return len(prompt), "prompt"
    return sum(len(p) for p in prompt if isinstance(p, str)), "prompt"
