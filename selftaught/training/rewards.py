"""GRPO's rewards for a judge (J1, Whitehouse et al. 2025): pure functions of judgments and their labels.

A GRPO prompt is one presentation of a pair: the pair in order AB or BA (``judge.mode=pairwise``; label ``A`` or
``B``), or one of its answers alone (``judge.mode=verify``; label ``Yes`` for the chosen answer, ``No`` for the
rejected one). Its two presentations are the pair's two "orders". Each judgment (the verdict's prefilled opening
plus what the judge wrote) earns:

- ``correctness``: 1 when its verdict parses and equals the label, else 0 (an unparseable judgment is wrong);
- ``consistency``: 1 when it is right *and* the same-numbered sample of the pair's other order is right too
  (J1: consistency pays only for both orders right, so a position-biased judge that always says A earns nothing
  from it); computed over the whole generation batch (``consistency``), where both orders of a pair are;
- ``format``: 1 when the judgment holds exactly one verdict, where its form wants it (``parsing``);
- ``degeneracy``: -1 when the judgment repeats itself (``degeneracy.is_degenerate``), else 0.

``weights`` (``train.grpo``) scale each; the trainer adds them up per judgment.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from selftaught.degeneracy import is_degenerate
from selftaught.parsing import REASONING_FIRST, VERDICT_FIRST, VERIFY_FORMAT as VERIFY
from selftaught.stages.judge import VERIFY as VERIFY_FORM, VerdictForm, pairwise_form

FORMS = (REASONING_FIRST, VERDICT_FIRST, VERIFY)  # how a judgment is read: the pairwise formats, or yes/no
NAMES = ("correctness", "consistency", "format", "degeneracy")


def _form(form: str) -> VerdictForm:
    """The judge's own verdict form (its opening and its parser) for a ``grpo_data`` row's ``form``."""
    return VERIFY_FORM if form == VERIFY else pairwise_form(form)


def prefill(form: str) -> str:
    """The verdict's opening that ends a prefilled prompt (empty for reasoning_first, which reasons first)."""
    return "" if form == REASONING_FIRST else _form(form).open


def verdict(judgment: str, form: str) -> Optional[str]:
    """The verdict of a whole judgment (opening included), or None when it does not parse."""
    return _form(form).parse(judgment).winner


def correctness(judgments: Sequence[str], labels: Sequence[str], forms: Sequence[str]) -> list[float]:
    return [float(verdict(j, f) == lab) for j, lab, f in zip(judgments, labels, forms, strict=True)]


def format_ok(judgments: Sequence[str], forms: Sequence[str]) -> list[float]:
    return [float(verdict(j, f) is not None) for j, f in zip(judgments, forms, strict=True)]


def degeneracy(judgments: Sequence[str]) -> list[float]:
    return [-float(is_degenerate(j)) for j in judgments]


def consistency(correct: Sequence[float], pair_ids: Sequence[str], orders: Sequence[str]) -> tuple[list[float], int]:
    """Per judgment: 1 when it is right and its partner is right. Judgments are matched by pair, order and their
    number among the judgments of that (pair, order) in the batch (sample i of AB with sample i of BA). Also
    returns how many judgments found no partner (0 when the batch holds whole pairs, as the sampler makes it)."""
    seen: dict[tuple[str, str], int] = {}
    key_of: list[tuple[str, str, int]] = []
    for pid, order in zip(pair_ids, orders, strict=True):
        i = seen.get((pid, order), 0)
        seen[(pid, order)] = i + 1
        key_of.append((pid, order, i))
    right = {k: c > 0 for k, c in zip(key_of, correct, strict=True)}
    by_pair: dict[str, set[str]] = {}
    for pid, order, _ in key_of:
        by_pair.setdefault(pid, set()).add(order)
    out, unpaired = [], 0
    for (pid, order, i), c in zip(key_of, correct, strict=True):
        others = [o for o in by_pair[pid] if o != order]
        partner = right.get((pid, others[0], i)) if len(others) == 1 else None
        if partner is None:
            unpaired += 1
        out.append(float(c > 0 and bool(partner)))
    return out, unpaired


@dataclass(frozen=True)
class Weights:
    correctness: float = 1.0
    consistency: float = 1.0
    format: float = 0.1
    degeneracy: float = 0.5

    def as_list(self) -> list[float]:
        return [getattr(self, n) for n in NAMES]


def total(judgments: Sequence[str], labels: Sequence[str], forms: Sequence[str], pair_ids: Sequence[str],
          orders: Sequence[str], w: Weights) -> list[float]:
    """Every reward, weighted and added up per judgment (what the trainer optimises; for tests and reports)."""
    c = correctness(judgments, labels, forms)
    cons, _ = consistency(c, pair_ids, orders)
    parts = (c, cons, format_ok(judgments, forms), degeneracy(judgments))
    return [sum(wi * p[i] for wi, p in zip(w.as_list(), parts)) for i in range(len(judgments))]


def pair_advantages(totals: Sequence[float], pair_ids: Sequence[str], scale: bool = True) -> tuple[list[float], float]:
    """GRPO's advantages with one group per pair (``train.grpo.group=pair``) instead of one per prompt: each
    judgment's total reward minus the mean over every judgment of its pair, both presentations together
    (divided by their std + 1e-4 when ``scale``, as TRL's ``scale_rewards="group"``).

    Per prompt (TRL's groups), a judge that says Yes to everything earns the same reward on every sample of a
    prompt: no spread, no advantage, nothing left to learn (the collapse the demo's GRPO round shows). Per pair,
    its Yes to the chosen answer (right) and its Yes to the rejected one (wrong) still differ, so the group ranks
    them. Returns (advantages in input order, the share of pairs whose rewards have no spread). A NaN total (an
    unscorable judgment) gets 0 and stays out of its pair's mean."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(pair_ids):
        groups.setdefault(p, []).append(i)
    out = [0.0] * len(totals)
    flat = 0
    for idx in groups.values():
        vals = [totals[i] for i in idx if not math.isnan(totals[i])]
        if not vals:
            flat += 1
            continue
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
        flat += std == 0.0
        for i in idx:
            if not math.isnan(totals[i]):
                out[i] = (totals[i] - mean) / (std + 1e-4) if scale else totals[i] - mean
    return out, flat / len(groups) if groups else 0.0
