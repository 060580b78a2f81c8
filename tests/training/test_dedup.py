"""Exact and near-duplicate detection (pure functions)."""

from __future__ import annotations

import random

from training.dedup import exact_duplicates, jaccard, near_duplicates, normalize, shingles


def test_normalize_ignores_case_accents_punctuation_and_spacing() -> None:
    assert normalize("  Café,  NAÏVE -- test!\n") == "cafe naive test"


def test_exact_duplicates_group_normalised_copies() -> None:
    texts = ["Hello, world", "other", "hello world!", "HELLO   WORLD", "other thing"]
    assert exact_duplicates(texts) == [[0, 2, 3]]


def test_near_duplicates_agree_with_brute_force_jaccard() -> None:
    # A congruence test: the MinHash/LSH search must report exactly the pairs an all-pairs
    # comparison finds above the threshold, on texts with a range of overlaps.
    rng = random.Random(7)
    words = [f"w{i}" for i in range(300)]
    base = [" ".join(rng.choices(words, k=60)) for _ in range(20)]
    left, right = [], []
    for text in base:
        tokens = text.split()
        left.append(text)
        edited = list(tokens)
        for _ in range(rng.randint(0, 12)):
            edited[rng.randrange(len(edited))] = rng.choice(words)
        right.append(" ".join(edited))
    threshold = 0.7
    found = {(p.left, p.right) for p in near_duplicates(left, right, threshold)}
    expected = {
        (i, j)
        for i, a in enumerate(left)
        for j, b in enumerate(right)
        if jaccard(shingles(a), shingles(b)) >= threshold
    }
    assert expected, "the fixture should contain near duplicates"
    assert found == expected


def test_unrelated_texts_are_not_near_duplicates() -> None:
    pairs = near_duplicates(["the cat sat on the mat"], ["quantum chromodynamics lecture"], 0.3)
    assert pairs == []
