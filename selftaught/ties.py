"""RewardBench 2's Ties score: candidates rated one by one, several of them correct.

An item (its "ref" form has one correct answer, its "tied" form several, for the same prompt) is
*accurate* when every correct answer is rated above every wrong one. The score, as RewardBench 2
defines it, weighs: accuracy on the tied items (0.30) and on the ref items (0.30); on prompts with
both forms, how often the gap between the worst correct and the best wrong answer exceeds the
spread among the correct ones, with the tied gap (0.20) and with the smaller of both gaps (0.20);
and a soft margin term, ``tanh(gap / spread - 1)`` (0.01), clipped to [0, 1]. Ratings here are
1-5 gradings (RewardBench 2 rates 1-10), so ties between ratings are frequent and count against
the judge; an unparsed rating makes its item inaccurate and leaves it out of the margins.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Optional

from selftaught.stats import wilson

WEIGHTS = {"tied_accuracy": 0.30, "ref_accuracy": 0.30, "correct_gap_preferred": 0.20,
           "correct_gap_preferred_hard": 0.20, "margin_score": 0.01}


def item_stats(rated: list[tuple[bool, Optional[float]]]) -> Optional[tuple[bool, Optional[float], float]]:
    """(accurate, spread among the correct answers or None with one, worst correct - best wrong) of one
    item's (correct, rating) list; None when a rating is missing or a side is empty."""
    if any(r is None for _, r in rated):
        return None
    good = [r for c, r in rated if c]
    bad = [r for c, r in rated if not c]
    if not good or not bad:
        return None
    gap = min(good) - max(bad)
    return gap > 0, (max(good) - min(good)) if len(good) > 1 else None, gap


def _prompt_key(group: str) -> tuple[str, str]:
    """("ref" | "tied", the prompt's id): RewardBench 2 ids its Ties items "ref:N" and "tied:N"."""
    last = group.rsplit("/", 1)[-1]
    kind, _, pid = last.partition(":")
    return (kind, pid) if kind in ("ref", "tied") and pid else ("", last)


def ties_metrics(rows: list[dict], key: str = "score") -> dict:
    """The Ties score and its parts over graded rows with ``ties_group``, ``correct`` and ``key``."""
    groups: dict[str, list[tuple[bool, Optional[float]]]] = defaultdict(list)
    n_correct: dict[str, int] = {}
    for r in rows:
        groups[r["ties_group"]].append((bool(r["correct"]), r.get(key)))
        n_correct[r["ties_group"]] = r.get("num_correct") or 0
    ref, tied = {}, {}
    unrated = 0
    for g, rated in groups.items():
        kind, pid = _prompt_key(g)
        if not kind:  # no "ref:"/"tied:" id: one correct answer is a ref item, more a tied one
            kind = "ref" if n_correct[g] == 1 else "tied"
        st = item_stats(rated)
        if st is None:
            unrated += 1
        (ref if kind == "ref" else tied)[pid] = st
    m: dict = {"ties_items": len(groups), "ties_unrated": unrated}
    for name, items in (("tied_accuracy", tied), ("ref_accuracy", ref)):
        hits = [bool(s and s[0]) for s in items.values()]
        m[name] = _mean(hits)
        ci = wilson(sum(hits), len(hits))
        if ci is not None:
            m[f"{name}_lo"], m[f"{name}_hi"] = round(ci[0], 4), round(ci[1], 4)
    both = [(ref[p], tied[p]) for p in ref.keys() & tied.keys() if ref[p] and tied[p] and tied[p][1] is not None]
    m["correct_gap_preferred"] = _mean([t[2] > t[1] for _, t in both])
    m["correct_gap_preferred_hard"] = _mean([min(r[2], t[2]) > t[1] for r, t in both])
    m["margin_score"] = _mean([math.tanh(min(r[2], t[2]) / t[1] - 1) if t[1] > 0 else 0.0 for r, t in both])
    parts = {k: m[k] for k in WEIGHTS}
    m["ties_score"] = (None if any(v is None for v in parts.values())
                       else round(max(0.0, min(1.0, sum(WEIGHTS[k] * v for k, v in parts.items()))), 4))
    return m


def _mean(xs: list) -> Optional[float]:
    return round(sum(xs) / len(xs), 4) if xs else None
