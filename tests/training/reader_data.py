"""A tiny SQuAD-format corpus for the reader tests: short paragraphs, so windows are ~40 tokens."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# (title, [(paragraph, [(question, answer or None)])]); every answer occurs once in its paragraph.
ARTICLES: list[tuple[str, list[tuple[str, list[tuple[str, str | None]]]]]] = [
    (
        "Orion_Vault",
        [
            (
                "The Orion vault was built in 1921 by the engineer Mara Vell. Its door weighs "
                "forty tonnes and opens only at dawn.",
                [
                    ("When was the Orion vault built?", "1921"),
                    ("Who built the Orion vault?", "Mara Vell"),
                    ("When was the Orion vault demolished?", None),
                ],
            ),
            (
                "The vault keeps the gold reserve of the city of Lyra, about nine hundred bars "
                "stacked on oak shelves.",
                [("Whose gold reserve does the vault keep?", "the city of Lyra")],
            ),
            (
                "Visitors reach the vault through a tunnel lined with green tiles from Porto.",
                [("Where do the green tiles come from?", "Porto")],
            ),
        ],
    ),
    (
        "Kestrel_Bridge",
        [
            (
                "The Kestrel bridge spans the river Ambel and was opened in 1887 by Queen Ysolde.",
                [
                    ("Which river does the Kestrel bridge span?", "Ambel"),
                    ("Who opened the Kestrel bridge?", "Queen Ysolde"),
                ],
            ),
            (
                "Its towers are made of red granite quarried near the village of Harrowmere.",
                [
                    ("What are the towers of the bridge made of?", "red granite"),
                    ("How tall are the towers of the bridge?", None),
                ],
            ),
        ],
    ),
    (
        "Heron_Lighthouse",
        [
            (
                "The Heron lighthouse stands above the bay of Serre; it was lit in 1902.",
                [
                    ("When was the Heron lighthouse lit?", "1902"),
                    ("Who designed the Heron lighthouse?", None),
                ],
            ),
            (
                "Its lamp is turned by a clockwork that the keeper winds every four hours.",
                [("How often is the clockwork wound?", "every four hours")],
            ),
        ],
    ),
    (
        "Plover_Mill",
        [
            (
                "The Plover mill grinds barley with two stones brought from the island of Tarn.",
                [
                    ("Where were the mill stones brought from?", "the island of Tarn"),
                    ("When did the Plover mill close?", None),
                ],
            ),
            (
                "The miller Oda Fenn ran the mill for fifty years.",
                [("Who ran the Plover mill?", "Oda Fenn")],
            ),
        ],
    ),
]


def squad_json(articles: list[Any] | None = None) -> dict[str, Any]:
    """The articles in SQuAD 2.0's JSON format."""
    data = []
    for title, paragraphs in articles or ARTICLES:
        out = []
        for p_number, (context, questions) in enumerate(paragraphs):
            qas = []
            for q_number, (question, answer) in enumerate(questions):
                qid = f"{title}-{p_number}-{q_number}"
                if answer is None:
                    qas.append(
                        {"id": qid, "question": question, "answers": [], "is_impossible": True,
                         "plausible_answers": []}
                    )  # fmt: skip
                else:
                    start = context.index(answer)
                    qas.append(
                        {"id": qid, "question": question, "is_impossible": False,
                         "answers": [{"text": answer, "answer_start": start}]}
                    )  # fmt: skip
            out.append({"context": context, "qas": qas})
        data.append({"title": title, "paragraphs": out})
    return {"version": "v2.0", "data": data}


def write_squad(path: Path) -> Path:
    path.write_text(json.dumps(squad_json()), encoding="utf-8")
    return path


def reader_config(squad: Path, output_dir: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """A reader config over the tiny corpus: short windows, small batches, no periodic evals."""
    config: dict[str, Any] = {
        "kind": "reader",
        "method": "lora",
        "output_dir": str(output_dir),
        "seed": 0,
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "data": {
            "files": [str(squad)],
            "splits": {
                "train": ["Orion_Vault", "Kestrel_Bridge"],
                "validation": ["Heron_Lighthouse"],
                "calibration": ["Plover_Mill"],
            },
            "max_seq_len": 64,
            "stride": 16,
            "max_question_tokens": 24,
            "hard_negatives": 1,
        },
        "eval": {"max_answer_tokens": 10, "batch_size": 16},
        "optim": {
            "lr": 2e-3,
            "head_lr": 1e-2,
            "batch_size": 4,
            "warmup_ratio": 0.0,
            "max_steps": 6,
            "schedule": "linear",
        },
        "loop": {"threads": 1, "eval_every": 0, "checkpoint_every": 0, "dtype": "float32"},
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return config
