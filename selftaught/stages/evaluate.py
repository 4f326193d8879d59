"""Evaluation: the judge's pairwise accuracy on gold preference pairs, in both orders.

Each gold pair (``io.load_pairwise_eval`` rows: instruction, chosen, rejected, subset) is judged
twice, chosen shown first (order AB, gold A) and second (order BA, gold B), with greedy decoding;
optionally also by majority vote over ``majority_k`` samples. A parse failure is never a win: it
counts as wrong. ``metrics`` turns the rows into per-set and per-subset numbers:

- ``acc_AB`` / ``acc_BA``: accuracy with the better answer in position A / B
- ``accuracy``: over both orders (the mean of the two)
- ``consistency``: the same answer wins in both orders (position consistency)
- ``parse_failure_rate``, ``verdict_A_rate`` (position bias), ``majority_accuracy`` (when k > 1)
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Optional

from selftaught.config import EvalConfig
from selftaught.engines import Engine, Sampling
from selftaught.prompts import load_template
from selftaught.stages.base import OK, TOO_LONG, StageContext, provenance
from selftaught.stages.judge import ORDERS, both_orders, judge_items

STAGE = "eval"


def _majority(verdicts: list[Optional[str]]) -> Optional[str]:
    c = Counter(v for v in verdicts if v)
    if not c or c["A"] == c["B"]:
        return None  # no votes or a tie: no winner, counted as wrong
    return c.most_common(1)[0][0]


def process(pairs: list[dict], engine: Engine, ctx: StageContext, cfg: EvalConfig) -> list[dict]:
    """One row per (pair, order): the greedy judgment, its verdict, and (k > 1) the vote."""
    tpl = load_template(cfg.template)
    greedy = Sampling(n=1, temperature=0.0, top_p=1.0, max_tokens=cfg.max_tokens)
    items, rows = [], []
    for p in pairs:
        for order, gold, item in both_orders(p["eval_id"], p["instruction"], p["chosen"], p["rejected"]):
            items.append(item)
            rows.append({"eval_id": p["eval_id"], "set": p["set"], "subset": p["subset"], "source": p.get("source"),
                         "order": order, "gold": gold, "instruction": p["instruction"],
                         "answer_a": item.answer_a, "answer_b": item.answer_b})
    judged = judge_items(items, engine, ctx, tpl, greedy)
    voted = {}
    vote_s = Sampling(n=cfg.majority_k, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens)
    if cfg.majority_k > 1:
        voted = judge_items(items, engine, ctx, tpl, vote_s)
    for item, row in zip(items, rows):
        res = judged.get(item.id)
        if res is None:
            row.update(status=TOO_LONG, judgment=None, verdict=None, error=None, correct=None, votes=None,
                       majority=None, majority_correct=None, eval_meta=None)
            continue
        s = res["samples"][0]
        votes = [v["verdict"] for v in voted[item.id]["samples"]] if item.id in voted else None
        majority = _majority(votes) if votes is not None else None
        tokens = s["tokens"] + (sum(v["tokens"] for v in voted[item.id]["samples"]) if votes is not None else 0)
        row.update(
            status=OK, judgment=s["judgment"], verdict=s["verdict"], error=s["error"],
            correct=s["verdict"] == row["gold"],
            votes=votes, majority=majority, majority_correct=(majority == row["gold"]) if votes is not None else None,
            eval_meta=provenance(STAGE, ctx, tpl.id, greedy, res["prompt_tokens"] * (2 if votes is not None else 1),
                                 tokens, engine),
        )
    return rows


def _rate(num: int, den: int) -> Optional[float]:
    return round(num / den, 4) if den else None


def _group_metrics(rows: list[dict]) -> dict:
    """Metrics over the judged rows of one group (a set or a subset)."""
    ok = [r for r in rows if r["status"] == OK]
    by_order = {o: [r for r in ok if r["order"] == o] for o in ORDERS}
    by_pair: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in ok:
        by_pair[r["eval_id"]][r["order"]] = r
    both = [p for p in by_pair.values() if len(p) == 2]
    # Consistent: the same underlying answer wins in both orders (A in AB and B in BA, or B then A).
    consistent = sum(p["AB"]["verdict"] is not None and p["BA"]["verdict"] is not None
                     and p["AB"]["verdict"] != p["BA"]["verdict"] for p in both)
    m = {
        "pairs": len(by_pair),
        "skipped_too_long": len({r["eval_id"] for r in rows if r["status"] == TOO_LONG}),
        "accuracy": _rate(sum(r["correct"] for r in ok), len(ok)),
        "acc_AB": _rate(sum(r["correct"] for r in by_order["AB"]), len(by_order["AB"])),
        "acc_BA": _rate(sum(r["correct"] for r in by_order["BA"]), len(by_order["BA"])),
        "consistency": _rate(consistent, len(both)),
        "both_orders_correct": _rate(sum(p["AB"]["correct"] and p["BA"]["correct"] for p in both), len(both)),
        "parse_failure_rate": _rate(sum(r["verdict"] is None for r in ok), len(ok)),
        "verdict_A_rate": _rate(sum(r["verdict"] == "A" for r in ok), sum(r["verdict"] is not None for r in ok)),
    }
    voted = [r for r in ok if r.get("votes") is not None]
    if voted:
        m["majority_accuracy"] = _rate(sum(bool(r["majority_correct"]) for r in voted), len(voted))
    return m


def metrics(rows: list[dict]) -> dict[str, dict]:
    """``{set: metrics, "set/subset": metrics}`` for every set and each of its subsets."""
    out: dict[str, dict] = {}
    by_set: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_set[r["set"]].append(r)
    for name, set_rows in sorted(by_set.items()):
        out[name] = _group_metrics(set_rows)
        subsets: dict[str, list[dict]] = defaultdict(list)
        for r in set_rows:
            subsets[r["subset"]].append(r)
        if len(subsets) > 1:
            for sub, sub_rows in sorted(subsets.items()):
                out[f"{name}/{sub}"] = _group_metrics(sub_rows)
    return out


def flat(m: dict[str, dict], prefix: str = "eval") -> dict[str, float]:
    """``{"eval/<set>[/<subset>]/<metric>": value}`` for trackers and the run summary."""
    return {f"{prefix}/{group}/{k}": v for group, vals in m.items() for k, v in vals.items() if v is not None}


def format_metrics(m: dict[str, dict]) -> str:
    cols = ("pairs", "accuracy", "acc_AB", "acc_BA", "consistency", "parse_failure_rate", "verdict_A_rate",
            "majority_accuracy")
    cols = tuple(c for c in cols if any(c in v for v in m.values()))
    names = list(m)
    w0 = max([len("set")] + [len(n) for n in names])
    lines = ["set".ljust(w0) + "  " + "  ".join(c.rjust(max(len(c), 6)) for c in cols)]
    for n in names:
        cells = []
        for c in cols:
            v = m[n].get(c)
            cells.append(("-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)).rjust(max(len(c), 6)))
        lines.append(n.ljust(w0) + "  " + "  ".join(cells))
    return "\n".join(lines)
