"""Assistant-only labels through the model's own chat template, checked token by token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.data import Example
from training.render import IGNORE_INDEX, stop_token_ids, tokenize_chat, tokenize_text

# Gemma 3 token ids, written out here as an independent oracle for the mask: the renderer itself
# knows nothing of Gemma's turn syntax.
START_OF_TURN, END_OF_TURN, MODEL, NEWLINE = 105, 106, 4368, 107


def expected_gemma3_mask(ids: list[int]) -> list[bool]:
    """True from the token after `<start_of_turn>model\\n` up to and including `<end_of_turn>`."""
    mask, inside = [False] * len(ids), False
    for k, token in enumerate(ids):
        if inside:
            mask[k] = True
            if token == END_OF_TURN:
                inside = False
        elif k >= 2 and ids[k - 2 : k + 1] == [START_OF_TURN, MODEL, NEWLINE]:
            inside = True
    return mask


def test_the_mask_covers_exactly_the_assistant_tokens(tokenizer: Any, model_dir: Path) -> None:
    example = Example(
        (
            {"role": "system", "content": "Answer from the sources."},
            {"role": "user", "content": "Who wrote it? [1] says Ada."},
            {"role": "assistant", "content": "Ada wrote it [1]."},
            {"role": "user", "content": "And when?"},
            {"role": "assistant", "content": "  In 1843.  "},
        ),
        "t:1",
    )
    item = tokenize_chat(example, tokenizer, stop_token_ids(tokenizer, model_dir))
    assert item.input_ids == tokenizer.apply_chat_template(
        list(example.messages), tokenize=True, return_dict=False
    )
    got = [label != IGNORE_INDEX for label in item.labels]
    assert got == expected_gemma3_mask(item.input_ids)
    for label, token, trained in zip(item.labels, item.input_ids, got, strict=True):
        assert label == (token if trained else IGNORE_INDEX)
    replies = tokenizer.decode([t for t, m in zip(item.input_ids, got, strict=True) if m])
    assert replies == "Ada wrote it [1].<end_of_turn>In 1843.<end_of_turn>"


def test_the_stop_tokens_come_from_the_generation_config(tokenizer: Any, model_dir: Path) -> None:
    assert stop_token_ids(tokenizer, model_dir) == {1, END_OF_TURN}


def test_prompt_completion_as_text_trains_on_the_completion_and_eos(tokenizer: Any) -> None:
    example = Example(
        (
            {"role": "user", "content": "The capital of France is"},
            {"role": "assistant", "content": " Paris"},
        ),
        "t:1",
        kind="prompt_completion",
    )
    item = tokenize_text(example, tokenizer)
    prompt = tokenizer("The capital of France is")["input_ids"]
    assert item.input_ids[: len(prompt)] == prompt and prompt[0] == tokenizer.bos_token_id
    assert item.labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    trained = [
        t for t, label in zip(item.input_ids, item.labels, strict=True) if label != IGNORE_INDEX
    ]
    assert tokenizer.decode(trained) == " Paris<eos>"
