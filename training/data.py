"""Reading and validating training data: chat JSONL and prompt/completion JSONL.

Two record shapes are accepted, one per line:
  * chat (OpenAI fine-tuning format): `{"messages": [{"role": "system"|"user"|"assistant",
    "content": "..."}, ...]}`; loss is taken on assistant turns only;
  * prompt/completion: `{"prompt": "...", "completion": "..."}`; loss on the completion only.
Other top-level keys (e.g. `metadata`, written by the RAFT builder) are carried but ignored.

Every problem is collected with its line number before anything is rejected, so one run of the
validator shows all that is wrong with a file rather than the first error only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROLES = ("system", "user", "assistant")
# Problems listed in an error message; the rest are counted.
_MAX_LISTED = 20


class DataError(ValueError):
    """The data cannot be trained on; the message lists the offending lines."""


@dataclass(frozen=True)
class Example:
    """One training example, normalised to chat messages.

    Attributes:
        messages: role/content dicts; prompt/completion records become user/assistant turns.
        source: `file:line` where it came from, for error messages.
        kind: `chat` or `prompt_completion` (the latter may be rendered as plain text).
        metadata: whatever else the record carried.
    """

    messages: tuple[dict[str, str], ...]
    source: str
    kind: str = "chat"
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def prompt_text(self) -> str:
        return "\n".join(m["content"] for m in self.messages if m["role"] != "assistant")


@dataclass
class Problems:
    """Problems found while reading, keyed by kind, each a list of `file:line: detail` strings."""

    by_kind: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, where: str, detail: str) -> None:
        self.by_kind.setdefault(kind, []).append(f"{where}: {detail}")

    def count(self, kind: str) -> int:
        return len(self.by_kind.get(kind, []))

    def __bool__(self) -> bool:
        return any(self.by_kind.values())

    def summary(self) -> str:
        lines = []
        for kind, items in self.by_kind.items():
            lines.append(f"{len(items)} {kind}:")
            lines.extend(f"  {item}" for item in items[:_MAX_LISTED])
            if len(items) > _MAX_LISTED:
                lines.append(f"  ... and {len(items) - _MAX_LISTED} more")
        return "\n".join(lines)


def read_examples(path: Path) -> list[Example]:
    """Read and validate a JSONL file of chat or prompt/completion records.

    Args:
        path: the JSONL file (blank lines are skipped).

    Returns:
        The examples, in file order.

    Raises:
        DataError: the file is missing or empty, or any line is invalid JSON, has an unknown
            shape, a wrong role, an empty turn, or no assistant turn to learn from; the message
            gives every offending line number grouped by problem.
    """
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    problems = Problems()
    examples: list[Example] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path.name}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.add("lines that are not valid JSON", where, exc.msg)
                continue
            example = parse_record(record, where, problems)
            if example is not None:
                examples.append(example)
    if problems:
        raise DataError(f"{path} has invalid records:\n{problems.summary()}")
    if not examples:
        raise DataError(f"{path} holds no examples")
    return examples


def parse_record(record: Any, where: str, problems: Problems) -> Example | None:
    """Validate one decoded JSON record; record problems and return None when it is invalid."""
    if not isinstance(record, dict):
        problems.add("records that are not JSON objects", where, type(record).__name__)
        return None
    extras = {k: v for k, v in record.items() if k not in {"messages", "prompt", "completion"}}
    if "messages" in record:
        messages = _check_messages(record["messages"], where, problems)
        return None if messages is None else Example(messages, where, "chat", extras)
    if "prompt" in record and "completion" in record:
        prompt, completion = record["prompt"], record["completion"]
        if not (isinstance(prompt, str) and isinstance(completion, str)):
            problems.add("prompt/completion records that are not strings", where, "")
            return None
        if not prompt.strip() or not completion.strip():
            problems.add("empty turns", where, "prompt or completion is empty")
            return None
        turns = ({"role": "user", "content": prompt}, {"role": "assistant", "content": completion})
        return Example(turns, where, "prompt_completion", extras)
    problems.add(
        "records of unknown shape",
        where,
        "expected {'messages': [...]} or {'prompt': ..., 'completion': ...}",
    )
    return None


def _check_messages(
    messages: Any, where: str, problems: Problems
) -> tuple[dict[str, str], ...] | None:
    if not isinstance(messages, list) or not messages:
        problems.add("records with no messages", where, "'messages' must be a non-empty list")
        return None
    clean: list[dict[str, str]] = []
    ok = True
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            problems.add("messages that are not objects", where, f"message {index}")
            ok = False
            continue
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            problems.add("wrong roles", where, f"message {index} has role {role!r}; use {ROLES}")
            ok = False
        elif role == "system" and index != 0:
            problems.add("wrong roles", where, f"message {index}: system is allowed first only")
            ok = False
        if not isinstance(content, str) or not content.strip():
            problems.add("empty turns", where, f"message {index} ({role}) has no text content")
            ok = False
        else:
            clean.append({"role": str(role), "content": content})
    if ok and not any(m["role"] == "assistant" for m in clean):
        problems.add("records with no assistant turn", where, "nothing to learn from")
        ok = False
    if ok and clean[-1]["role"] != "assistant":
        problems.add("records not ending with an assistant turn", where, "last turn is untrained")
        ok = False
    return tuple(clean) if ok else None


def example_count_by(examples: Iterable[Example], key: str) -> dict[str, int]:
    """Counts of examples per value of a metadata key (e.g. RAFT `kind`)."""
    counts: dict[str, int] = {}
    for example in examples:
        value = str(example.metadata.get("metadata", {}).get(key, "?"))
        counts[value] = counts.get(value, 0) + 1
    return counts
