"""Turning examples into token ids and labels through the model's OWN chat template.

No turn syntax is written here: Gemma 3 folds the system prompt into the first user turn, Gemma 4
has `<|turn>` markers and a system role, and both are whatever `tokenizer.apply_chat_template`
renders. The assistant-only loss mask is found from the template itself: for assistant turn i,
the text rendered for `messages[:i]` with the generation prompt ends where the reply starts, and
the text rendered for `messages[:i+1]` ends after it. Those character offsets, mapped through the
fast tokenizer's offset mapping over the full conversation, select the reply tokens exactly, even
where a token straddles a boundary. Tokens after the turn's stop token (template whitespace such as
Gemma's newline after `<end_of_turn>`) are not trained: the model never generates them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.data import DataError, Example, Problems

IGNORE_INDEX = -100  # the label value torch's cross-entropy skips


@dataclass(frozen=True)
class Tokenized:
    """One example as model inputs: ids and labels of equal length (labels -100 off-reply)."""

    input_ids: list[int]
    labels: list[int]
    source: str

    @property
    def num_label_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def stop_token_ids(tokenizer: Any, model_dir: Path | None = None) -> set[int]:
    """Token ids that end a reply: the generation config's eos ids, else the tokenizer's eos."""
    ids: set[int] = set()
    if model_dir is not None and (model_dir / "generation_config.json").is_file():
        eos = json.loads((model_dir / "generation_config.json").read_text()).get("eos_token_id")
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )
    return str(text)


def tokenize_chat(example: Example, tokenizer: Any, stop_ids: set[int]) -> Tokenized:
    """Render a chat example with the model's template and label its assistant replies only.

    Raises:
        DataError: the template rejects the conversation (e.g. roles that do not alternate) or
            does not render each prefix of it as a prefix of the whole (then no exact mask exists).
    """
    messages = list(example.messages)
    try:
        full = _render(tokenizer, messages, generation_prompt=False)
        spans: list[tuple[int, int]] = []
        for index, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            start = len(_render(tokenizer, messages[:index], generation_prompt=True))
            before_end = _render(tokenizer, messages[: index + 1], generation_prompt=False)
            if not full.startswith(before_end) or start > len(before_end):
                raise DataError(
                    f"{example.source}: the chat template does not render conversation prefixes "
                    "as prefixes of the whole, so the assistant turns cannot be located"
                )
            spans.append((start, len(before_end)))
    except DataError:
        raise
    except Exception as exc:  # jinja raises TemplateError and friends for rejected conversations
        raise DataError(f"{example.source}: the chat template rejected it: {exc}") from exc
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(encoded["input_ids"])
    offsets: list[tuple[int, int]] = [tuple(o) for o in encoded["offset_mapping"]]
    labels = [IGNORE_INDEX] * len(ids)
    for start, end in spans:
        inside = [k for k, (a, b) in enumerate(offsets) if b > start and a < end and b > a]
        # Keep the reply up to and including its stop token; template whitespace after it is
        # context, not something the model should learn to emit.
        stops = [k for k in inside if ids[k] in stop_ids]
        if stops:
            inside = [k for k in inside if k <= stops[0]]
        for k in inside:
            labels[k] = ids[k]
    return Tokenized(ids, labels, example.source)


def tokenize_text(example: Example, tokenizer: Any) -> Tokenized:
    """Render a prompt/completion example as plain text: [bos] prompt completion eos.

    The prompt and the completion are tokenized separately so the boundary is exact; the
    tokenizer's own special tokens (e.g. <bos>) are added to the prompt as it would add them.
    """
    prompt, completion = example.messages[0]["content"], example.messages[1]["content"]
    prompt_ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    completion_ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
    completion_ids.append(int(tokenizer.eos_token_id))
    return Tokenized(
        prompt_ids + completion_ids,
        [IGNORE_INDEX] * len(prompt_ids) + completion_ids,
        example.source,
    )


@dataclass
class TokenizeReport:
    """What tokenization kept and dropped."""

    kept: int = 0
    dropped_too_long: int = 0
    longest: int = 0
    total_tokens: int = 0
    label_tokens: int = 0


def tokenize_all(
    examples: list[Example],
    tokenizer: Any,
    *,
    max_seq_len: int,
    too_long: str,
    prompt_completion_as: str = "chat",
    stop_ids: set[int] | None = None,
) -> tuple[list[Tokenized], TokenizeReport]:
    """Tokenize every example, applying the too-long policy.

    Args:
        examples: validated examples.
        tokenizer: a fast tokenizer with a chat template.
        max_seq_len: the longest sequence allowed, in tokens.
        too_long: `drop` (skip and count) or `fail` (raise listing them).
        prompt_completion_as: `chat` or `text` rendering of prompt/completion records.
        stop_ids: tokens that end a reply; defaults to the tokenizer's eos.

    Returns:
        The tokenized examples and a report of counts.

    Raises:
        DataError: a template failure, an example with no trainable token left, or (with
            `too_long: fail`) any example over `max_seq_len`, each with its line.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise DataError("a fast tokenizer (tokenizer.json) is needed for exact label masks")
    stops = stop_ids if stop_ids is not None else stop_token_ids(tokenizer)
    report = TokenizeReport()
    problems = Problems()
    out: list[Tokenized] = []
    for example in examples:
        if example.kind == "prompt_completion" and prompt_completion_as == "text":
            item = tokenize_text(example, tokenizer)
        else:
            item = tokenize_chat(example, tokenizer, stops)
        if len(item.input_ids) > max_seq_len:
            report.dropped_too_long += 1
            problems.add(
                f"examples longer than max_seq_len={max_seq_len}",
                example.source,
                f"{len(item.input_ids)} tokens",
            )
            continue
        if item.num_label_tokens == 0:
            problems.add("examples with no trainable token", example.source, "empty reply")
            continue
        report.kept += 1
        report.longest = max(report.longest, len(item.input_ids))
        report.total_tokens += len(item.input_ids)
        report.label_tokens += item.num_label_tokens
        out.append(item)
    fatal = {
        k: v for k, v in problems.by_kind.items() if "longer than" not in k or too_long == "fail"
    }
    if fatal:
        raise DataError(
            Problems(fatal).summary()
            + ("\nset data.too_long: drop to skip long examples" if too_long == "fail" else "")
        )
    return out, report
