"""RAFT-style grounded-answering data from a SQuAD (2.0) file.

Each question becomes a chat example built by `grounding.prompt.grounded_messages`, the
same function the gateway uses at serve time, so the adapter learns exactly the prompt it will see.
Three kinds of answer:
  * `answerable`: the oracle paragraph among k distractors (shuffled position); the reply is the
    answer span followed by the oracle's citation, e.g. `1976 [3]`;
  * `oracle_removed`: an answerable question whose oracle was left out (with probability
    `p_remove_oracle`), k+1 distractors: the reply is the abstention message, exactly;
  * `unanswerable`: a SQuAD 2.0 impossible question with its own (plausible but non-supporting)
    paragraph among k distractors: the reply is the abstention message.
With `train_turns` > 1, a train example asks several questions over one set of sources: the
questions of one paragraph (answerable and impossible alike, shuffled) become successive turns, the
first user turn holding the sources as the gateway sends them and each later one `Question: ...`.
A ~700-token prompt then trains several short replies instead of one, and the model must tell
answerable from unanswerable questions over the very same sources. Validation and holdout stay one
question per example: that is the prompt the gateway serves and the eval asks.
With `replay_every` > 0, one plain-text `replay` record (prompt/completion: a few paragraphs of a
train article, then the next paragraph to predict) joins every that many train examples, so the
adapter keeps modelling ordinary text (the forgetting gate measures plain-text perplexity).
Distractors come from the same article (harder and closer to what retrieval returns) and never
contain an answer string, so the citation is unambiguous and "no oracle" really means no support.
Articles, not questions, are split into train / validation / frozen holdout: questions about one
paragraph are near-paraphrases, and a question split would leak them across the splits.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grounding.prompt import (
    DEFAULT_ABSTENTION_MESSAGE,
    PromptSource,
    grounded_messages,
)

SPLITS = ("train", "validation", "holdout")


@dataclass(frozen=True)
class RaftOptions:
    """How the examples are built (all deterministic given `seed`).

    Attributes:
        distractors: k, the distractor paragraphs beside the oracle.
        p_remove_oracle: probability that an answerable question gets distractors only.
        validation_articles: articles put in the validation split.
        holdout_articles: articles put in the frozen holdout.
        max_per_split: cap on examples per split (random subset), None = all.
        include_unanswerable: keep SQuAD 2.0 impossible questions.
        p_keep_unanswerable: probability of keeping each impossible question (SQuAD 2.0 dev is
            half impossible; with oracle removal on top, abstention can outweigh answering).
        max_tokens: drop distractors (never the oracle) until the rendered example fits; a
            multi-turn example first moves turns to the paragraph's next example.
        train_turns: the most question/answer turns per train example (1 = one question each).
        replay_every: one plain-text replay record per this many train examples (0 = none).
        train_p_keep_unanswerable: `p_keep_unanswerable` for the train split (None = the same).
        abstention_message: the exact reply when the sources do not answer.
        seed: seeds the article split, distractor choice, positions and subsampling.
    """

    distractors: int = 3
    p_remove_oracle: float = 0.2
    validation_articles: int = 1
    holdout_articles: int = 2
    max_per_split: dict[str, int] = field(default_factory=dict)
    include_unanswerable: bool = True
    p_keep_unanswerable: float = 1.0
    max_tokens: int | None = 1024
    abstention_message: str = DEFAULT_ABSTENTION_MESSAGE
    seed: int = 0
    train_turns: int = 1
    replay_every: int = 0
    train_p_keep_unanswerable: float | None = None


# Characters of a replay record, prompt and completion together (~850 Gemma tokens of English).
REPLAY_CONTEXT_CHARS = 3600


@dataclass
class RaftReport:
    """Counts per split and kind, and what was skipped."""

    articles: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    fewer_distractors: int = 0
    skipped_too_long: int = 0
    files: dict[str, str] = field(default_factory=dict)


def _main_answer(answers: list[dict[str, Any]]) -> str:
    # SQuAD dev questions carry several annotator answers; the most frequent text is the
    # consensus (ties: the first given).
    texts = [a["text"].strip() for a in answers if a["text"].strip()]
    return str(Counter(texts).most_common(1)[0][0])


def split_articles(titles: list[str], options: RaftOptions) -> dict[str, list[str]]:
    """Assign whole articles to splits, deterministically from the seed.

    Raises:
        ValueError: not enough articles for the requested validation + holdout + 1 train.
    """
    needed = options.validation_articles + options.holdout_articles + 1
    if len(titles) < needed:
        raise ValueError(f"{len(titles)} articles cannot make {needed - 1} held out + 1 train")
    order = sorted(titles)
    random.Random(options.seed).shuffle(order)
    hold = order[: options.holdout_articles]
    val = order[options.holdout_articles : options.holdout_articles + options.validation_articles]
    return {"train": order[len(hold) + len(val) :], "validation": val, "holdout": hold}


def _pick_distractors(
    pool: list[str], oracle: str, answers: list[str], k: int, rng: random.Random
) -> list[str]:
    lowered = [a.lower() for a in answers]
    usable = [p for p in pool if p != oracle and not any(a in p.lower() for a in lowered)]
    rng.shuffle(usable)
    return usable[:k]


def build_example(
    question: dict[str, Any],
    context: str,
    title: str,
    pool: list[str],
    options: RaftOptions,
    count_tokens: Any = None,
) -> dict[str, Any] | None:
    """One chat record for a SQuAD question (None if it cannot fit `max_tokens`).

    Args:
        question: the SQuAD `qas` entry.
        context: its paragraph (the oracle when answerable).
        title: the article title (shown with each source, as retrieval would).
        pool: paragraphs distractors may be drawn from (its split only).
        options: builder options.
        count_tokens: callable(messages) -> token count, or None to skip the length check.
    """
    # A per-question RNG keeps each example stable when other questions or caps change.
    rng = random.Random(f"{options.seed}:{question['id']}")
    impossible = bool(question.get("is_impossible")) or not question.get("answers")
    avoid = [a["text"] for a in question.get("answers", []) + question.get("plausible_answers", [])]
    if impossible:
        kind, oracle = "unanswerable", None
    elif rng.random() < options.p_remove_oracle:
        kind, oracle = "oracle_removed", None
    else:
        kind, oracle = "answerable", context
    k = options.distractors + (1 if kind == "oracle_removed" else 0)
    distractors = _pick_distractors(pool, context, avoid, k, rng)
    # The impossible question's own paragraph is the most tempting non-answer: keep it in.
    fixed = [context] if kind != "oracle_removed" else []
    while True:
        passages = fixed + distractors
        order = list(range(len(passages)))
        rng.shuffle(order)
        shuffled = [passages[i] for i in order]
        if oracle is not None:
            number = shuffled.index(oracle) + 1
            reply = f"{_main_answer(question['answers'])} [{number}]"
        else:
            reply = options.abstention_message
        sources = [PromptSource(text=p, title=title) for p in shuffled]
        messages = grounded_messages(
            question["question"], sources, abstention_message=options.abstention_message
        )
        messages.append({"role": "assistant", "content": reply})
        if count_tokens is None or options.max_tokens is None:
            break
        if count_tokens(messages) <= options.max_tokens:
            break
        if not distractors:
            return None
        distractors = distractors[:-1]
    return {
        "messages": messages,
        "metadata": {
            "id": question["id"],
            "kind": kind,
            "article": title,
            "answers": sorted({a["text"] for a in question.get("answers", [])}),
            "oracle_source": shuffled.index(oracle) + 1 if oracle is not None else None,
            "num_sources": len(shuffled),
        },
    }


def _keep_unanswerable(question: dict[str, Any], options: RaftOptions, split: str) -> bool:
    if not options.include_unanswerable:
        return False
    keep = options.p_keep_unanswerable
    if split == "train" and options.train_p_keep_unanswerable is not None:
        keep = options.train_p_keep_unanswerable
    draw = random.Random(f"{options.seed}:keep:{question['id']}").random()
    return draw < keep


def _reply(question: dict[str, Any], oracle_number: int | None, options: RaftOptions) -> str:
    impossible = bool(question.get("is_impossible")) or not question.get("answers")
    if impossible or oracle_number is None:
        return options.abstention_message
    return f"{_main_answer(question['answers'])} [{oracle_number}]"


def build_multiturn_examples(
    questions: list[dict[str, Any]],
    context: str,
    title: str,
    pool: list[str],
    options: RaftOptions,
    count_tokens: Any = None,
) -> list[dict[str, Any]]:
    """Chat records asking a paragraph's questions as turns over one set of sources.

    Questions are shuffled and cut into groups of at most `train_turns`; each group gets its own
    sources (the paragraph among distractors, or with probability `p_remove_oracle` distractors
    only, every reply then the abstention). Turns that do not fit `max_tokens` move on to the
    next group; a single question that does not fit with any distractor is dropped.
    """
    key = hashlib.sha256(context.encode()).hexdigest()[:16]
    rng = random.Random(f"{options.seed}:turns:{key}")
    pending = list(questions)
    rng.shuffle(pending)
    records: list[dict[str, Any]] = []
    while pending:
        group, pending = pending[: options.train_turns], pending[options.train_turns :]
        removed = rng.random() < options.p_remove_oracle
        avoid = [
            a["text"]
            for q in questions
            for a in q.get("answers", []) + q.get("plausible_answers", [])
        ]
        k = options.distractors + (1 if removed else 0)
        distractors = _pick_distractors(pool, context, avoid, k, rng)
        while True:
            passages = ([] if removed else [context]) + distractors
            rng_order = random.Random(f"{options.seed}:order:{key}:{len(records)}")
            shuffled = passages[:]
            rng_order.shuffle(shuffled)
            number = None if removed else shuffled.index(context) + 1
            sources = [PromptSource(text=p, title=title) for p in shuffled]
            messages = grounded_messages(
                group[0]["question"], sources, abstention_message=options.abstention_message
            )
            messages.append({"role": "assistant", "content": _reply(group[0], number, options)})
            for question in group[1:]:
                messages.append({"role": "user", "content": f"Question: {question['question']}"})
                messages.append({"role": "assistant", "content": _reply(question, number, options)})
            if count_tokens is None or options.max_tokens is None:
                break
            if count_tokens(messages) <= options.max_tokens:
                break
            if len(group) > 1:
                pending.insert(0, group[-1])
                group = group[:-1]
            elif distractors:
                distractors = distractors[:-1]
            else:
                group = []
                break
        if not group:
            continue
        kinds = [
            "unanswerable" if q.get("is_impossible") or not q.get("answers")
            else ("oracle_removed" if removed else "answerable")
            for q in group
        ]  # fmt: skip
        records.append(
            {
                "messages": messages,
                "metadata": {
                    "id": "+".join(q["id"] for q in group),
                    "kind": "multi_turn_oracle_removed" if removed else "multi_turn",
                    "turn_kinds": kinds,
                    "article": title,
                    "oracle_source": number,
                    "num_sources": len(shuffled),
                },
            }
        )
    return records


def replay_records(paragraphs: dict[str, list[str]], count: int, seed: int) -> list[dict[str, Any]]:
    """`count` plain-text records: some consecutive paragraphs of an article as the prompt, the
    next paragraph as the completion (the loss falls on it only)."""
    rng = random.Random(f"{seed}:replay")
    targets = [(t, i) for t in sorted(paragraphs) for i in range(1, len(paragraphs[t]))]
    records = []
    # Without replacement: the same target twice would be an exact duplicate.
    for number, (title, target) in enumerate(rng.sample(targets, min(count, len(targets)))):
        texts = paragraphs[title]
        budget = REPLAY_CONTEXT_CHARS - len(texts[target])  # prompt + completion ~ 850 tokens
        context: list[str] = []
        for text in reversed(texts[:target]):
            if sum(map(len, context)) + len(text) > budget:
                break
            context.insert(0, text)
        if not context:  # the target alone fills the budget: a short prompt, a long completion
            context = [texts[target - 1][-max(200, budget) :]]
        prompt = "\n\n".join([title.replace("_", " "), *context])
        records.append(
            {
                "prompt": prompt,
                "completion": "\n\n" + texts[target],
                "metadata": {"id": f"replay-{number}", "kind": "replay", "article": title},
            }
        )
    return records


def build_raft(
    squad_path: Path, out_dir: Path, options: RaftOptions, tokenizer: Any = None
) -> RaftReport:
    """Build train / validation / holdout JSONL files from a SQuAD-format file.

    Args:
        squad_path: SQuAD 1.1/2.0 JSON (read in place; its text is not copied anywhere else).
        out_dir: where `train.jsonl`, `validation.jsonl`, `holdout.jsonl` and `raft_build.json` go.
        options: builder options.
        tokenizer: the target model's tokenizer, used to keep examples within `max_tokens`.

    Returns:
        The counts per split and kind.
    """
    squad = json.loads(squad_path.read_text(encoding="utf-8"))
    articles = {a["title"]: a for a in squad["data"]}
    report = RaftReport(articles=split_articles(list(articles), options))
    count = None
    if tokenizer is not None:

        def count(messages: list[dict[str, str]]) -> int:
            return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False))

    out_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        records: list[dict[str, Any]] = []
        multiturn = split == "train" and options.train_turns > 1
        for title in report.articles[split]:
            pool = [p["context"] for p in articles[title]["paragraphs"]]
            for paragraph in articles[title]["paragraphs"]:
                kept = [
                    q
                    for q in paragraph["qas"]
                    if not q.get("is_impossible") or _keep_unanswerable(q, options, split)
                ]
                if multiturn:
                    records += build_multiturn_examples(
                        kept, paragraph["context"], title, pool, options, count
                    )
                    continue
                for question in kept:
                    record = build_example(
                        question, paragraph["context"], title, pool, options, count
                    )
                    if record is None:
                        report.skipped_too_long += 1
                        continue
                    expected = options.distractors + 1
                    if record["metadata"]["num_sources"] < expected:
                        report.fewer_distractors += 1
                    records.append(record)
        cap = options.max_per_split.get(split)
        if cap is not None and len(records) > cap:
            keep = set(random.Random(f"{options.seed}:{split}").sample(range(len(records)), cap))
            records = [r for i, r in enumerate(records) if i in keep]
        if split == "train" and options.replay_every > 0:
            texts = {
                t: [p["context"] for p in articles[t]["paragraphs"]] for t in report.articles[split]
            }
            records += replay_records(texts, len(records) // options.replay_every, options.seed)
            random.Random(f"{options.seed}:mix").shuffle(records)
        path = out_dir / f"{split}.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        report.files[split] = hashlib.sha256(path.read_bytes()).hexdigest()
        # Counted per question asked (a multi-turn record asks several) and per replay record.
        kinds = Counter(
            kind
            for r in records
            for kind in r["metadata"].get("turn_kinds", [r["metadata"]["kind"]])
        )
        report.counts[split] = dict(sorted(kinds.items()))
    info = {
        "source": str(squad_path),
        "source_sha256": hashlib.sha256(squad_path.read_bytes()).hexdigest(),
        "options": {**options.__dict__},
        "articles": report.articles,
        "counts": report.counts,
        "fewer_distractors": report.fewer_distractors,
        "skipped_too_long": report.skipped_too_long,
        "files_sha256": report.files,
    }
    (out_dir / "raft_build.json").write_text(json.dumps(info, indent=2) + "\n")
    return report
