"""The one tokenizer BM25 uses for documents and queries: lowercase, word split, English
stopwords dropped, and an optional light suffix stemmer.

The stemmer only folds inflections (plurals, -ing, -ed) so that "cells"/"cell" and
"treated"/"treat" meet; it leaves derivations alone, which keeps precision on technical text.
"""

from __future__ import annotations

import re
import unicodedata

# Hyphens and apostrophes split words ("T-cell" meets "T cell"), as Lucene's analyzers do.
_WORD = re.compile(r"[a-z0-9]+")

# Common English function words; kept short so query words that carry meaning survive.
STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for
    from further had has have having he her here hers herself him himself his how i if in
    into is it its itself just me more most my myself no nor not now of off on once only or
    other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your yours
    yourself yourselves s t also may might must shall upon via within without whether
    """.split()  # noqa: SIM905 (one word list reads better than 140 lines)
)

_VOWEL = re.compile(r"[aeiouy]")


def light_stem(word: str) -> str:
    """Strip one inflectional suffix when a vowel-bearing stem of 3+ letters is left.

    Args:
        word: a lowercase token.

    Returns:
        The stem, or the word unchanged when no rule applies safely.
    """
    if len(word) <= 3 or not word.isalpha():
        return word
    for suffix, replacement in (("ies", "y"), ("sses", "ss"), ("es", "e"), ("s", "")):
        if word.endswith(suffix) and not word.endswith(("ss", "us", "is")):
            stem = word[: -len(suffix)] + replacement
            word = stem if len(stem) >= 3 and _VOWEL.search(stem) else word
            break
    if word.endswith("ied") and len(word) > 4:  # "studied" meets "study"
        return word[:-3] + "y"
    for suffix in ("ing", "ed"):
        if word.endswith(suffix):
            stem = word[: -len(suffix)]
            if len(stem) >= 3 and _VOWEL.search(stem):
                # "stopped" -> "stop", "treated" -> "treat"; keep "ll"/"ss"/"zz" doubles.
                if len(stem) > 3 and stem[-1] == stem[-2] and stem[-1] not in "lsz":
                    stem = stem[:-1]
                return stem
    return word


def tokenize(text: str, *, stem: bool = True, stopwords: frozenset[str] = STOPWORDS) -> list[str]:
    """Terms of `text` in order, with repeats.

    Args:
        text: any text.
        stem: apply `light_stem`.
        stopwords: terms to drop.

    Returns:
        Lowercase terms (accents folded to ASCII).
    """
    folded = unicodedata.normalize("NFKD", text.lower()).encode("ascii", "ignore").decode("ascii")
    terms = [word for word in _WORD.findall(folded) if word not in stopwords]
    return [light_stem(word) for word in terms] if stem else terms
