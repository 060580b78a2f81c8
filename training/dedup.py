"""Exact and near-duplicate detection over example texts: pure functions, no I/O.

Exact duplicates compare normalised text (case-folded, punctuation-free, whitespace-collapsed), so
trivial edits do not hide a copy. Near duplicates use character 5-gram Jaccard similarity,
estimated with MinHash and banded locality-sensitive hashing to find candidate pairs in roughly
linear time, then confirmed with the exact Jaccard of the two shingle sets; the threshold applies to
that exact value, so the estimate only decides what gets checked.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SHINGLE = 5
NUM_HASHES = 64
BANDS = 32  # 2 rows per band: pairs near Jaccard 0.3 already become candidates
_PRIME = (1 << 61) - 1
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalize(text: str) -> str:
    """Case-folded, accent-stripped text with punctuation removed and whitespace collapsed."""
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return " ".join(_NON_WORD.sub(" ", text).split())


def shingles(text: str, size: int = SHINGLE) -> set[int]:
    """Hashes of the character `size`-grams of normalised text (the text itself if shorter)."""
    norm = normalize(text)
    grams = {norm[i : i + size] for i in range(max(1, len(norm) - size + 1))}
    return {
        int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "little") >> 4
        for g in grams
    }


def jaccard(a: set[int], b: set[int]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def exact_duplicates(texts: Sequence[str]) -> list[list[int]]:
    """Groups (2 or more) of indices whose normalised texts are identical, first-seen order."""
    groups: dict[str, list[int]] = {}
    for index, text in enumerate(texts):
        groups.setdefault(normalize(text), []).append(index)
    return [group for group in groups.values() if len(group) > 1]


@dataclass(frozen=True)
class NearDuplicate:
    """A pair across two collections whose shingle sets have Jaccard >= the threshold."""

    left: int
    right: int
    similarity: float


def near_duplicates(
    left: Sequence[str], right: Sequence[str], threshold: float, *, seed: int = 0
) -> list[NearDuplicate]:
    """Pairs (i, j) with Jaccard(left[i], right[j]) >= threshold, highest first.

    Args:
        left: texts of one collection (e.g. training examples).
        right: texts of the other (e.g. holdout examples).
        threshold: the minimum exact 5-gram Jaccard similarity reported, in (0, 1].
        seed: seeds the MinHash permutations (the result does not depend on it above ~0.5).

    Returns:
        The confirmed pairs, sorted by decreasing similarity.
    """
    left_sets = [shingles(t) for t in left]
    right_sets = [shingles(t) for t in right]
    rng = np.random.default_rng(seed)
    a = rng.integers(1, _PRIME, size=NUM_HASHES, dtype=np.uint64)
    b = rng.integers(0, _PRIME, size=NUM_HASHES, dtype=np.uint64)
    buckets: dict[tuple[int, bytes], list[int]] = {}
    for j, sig in enumerate(_signatures(right_sets, a, b)):
        for band, key in enumerate(_band_keys(sig)):
            buckets.setdefault((band, key), []).append(j)
    found: dict[tuple[int, int], float] = {}
    for i, sig in enumerate(_signatures(left_sets, a, b)):
        candidates = {
            j for band, key in enumerate(_band_keys(sig)) for j in buckets.get((band, key), [])
        }
        for j in candidates:
            if (i, j) not in found:
                similarity = jaccard(left_sets[i], right_sets[j])
                if similarity >= threshold:
                    found[(i, j)] = similarity
    pairs = [NearDuplicate(i, j, s) for (i, j), s in found.items()]
    return sorted(pairs, key=lambda p: (-p.similarity, p.left, p.right))


def _signatures(sets: list[set[int]], a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    out = []
    for items in sets:
        values = np.fromiter(items, dtype=np.uint64, count=len(items))
        # (a*x + b) mod p with uint64 wrap-around is a fine universal-ish hash for 60-bit inputs.
        hashed = (values[None, :] * a[:, None] + b[:, None]) % np.uint64(_PRIME)
        out.append(hashed.min(axis=1))
    return out


def _band_keys(signature: np.ndarray) -> list[bytes]:
    rows = NUM_HASHES // BANDS
    return [signature[k * rows : (k + 1) * rows].tobytes() for k in range(BANDS)]
