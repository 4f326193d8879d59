"""Degenerate text: how much of a judgment repeats itself.

Small judges sampled at temperature often loop ("The answer is correct. The answer is correct. ...")
until the token limit. Such judgments make poor SFT targets, so the judge stage measures every
sample and can drop the degenerate ones.

``repeat_ratio`` is the share of a text's word n-grams (n = 4) that repeat an earlier n-gram of
the same text: 0 for text without repeats, close to 1 for one phrase repeated to the limit.
"""
from __future__ import annotations

import re

NGRAM = 4
# A judgment counts as degenerate above this ratio: more than half of its 4-grams are repeats.
DEFAULT_THRESHOLD = 0.5
_WORD = re.compile(r"\w+|[^\w\s]")


def repeat_ratio(text: str, n: int = NGRAM) -> float:
    """Share of the word n-grams of ``text`` that occurred earlier in it (0.0 for fewer than n+1 words)."""
    words = _WORD.findall(text.lower())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if len(grams) < 2:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def is_degenerate(text: str, threshold: float = DEFAULT_THRESHOLD) -> bool:
    return repeat_ratio(text) > threshold
