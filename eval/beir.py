"""Read a BEIR dataset in place (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BeirDoc:
    """One corpus entry."""

    doc_id: str
    title: str
    text: str


@dataclass(frozen=True)
class BeirDataset:
    """Corpus, the queries that have judgements in the split, and the judgements."""

    corpus: list[BeirDoc]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def load_beir(directory: Path, split: str = "test") -> BeirDataset:
    """Load a BEIR layout without copying it anywhere.

    Args:
        directory: folder with corpus.jsonl, queries.jsonl and qrels/<split>.tsv.
        split: which qrels file.

    Returns:
        The dataset; queries are limited to those judged in the split.

    Raises:
        FileNotFoundError: when one of the three files is missing.
    """
    directory = Path(directory)
    qrels: dict[str, dict[str, int]] = {}
    with (directory / "qrels" / f"{split}.tsv").open(encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t")
        for row in reader:
            if len(row) < 3 or row[2] == "score":  # the header line
                continue
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    queries: dict[str, str] = {}
    with (directory / "queries.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            item = json.loads(line)
            if str(item["_id"]) in qrels:
                queries[str(item["_id"])] = item["text"]
    corpus: list[BeirDoc] = []
    with (directory / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            item = json.loads(line)
            corpus.append(BeirDoc(str(item["_id"]), item.get("title", ""), item.get("text", "")))
    return BeirDataset(corpus, queries, qrels)
