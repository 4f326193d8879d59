"""Evaluation: the judge's pairwise accuracy on gold preference pairs, in both orders, per decoding.

Each gold pair (``io.load_pairwise_eval`` rows: instruction, chosen, rejected, subset) is judged
twice, chosen shown first (order AB, gold A) and second (order BA, gold B), with greedy decoding,
once per mode of ``eval.modes``: ``constrained`` (the verdict is a forced one-token choice) and
``free`` (no constraint: does the judge write a parseable verdict by itself?); optionally also by
majority vote over ``majority_k`` samples. A parse failure is never a win: it counts as wrong.
``metrics`` turns the rows into per-mode, per-set and per-subset numbers, each accuracy-like one
with its 95% interval (``<metric>_lo`` / ``<metric>_hi``; the pair is the unit, see ``stats``):

- ``acc_AB`` / ``acc_BA``: accuracy with the better answer in position A / B
- ``accuracy``: over both orders
- ``consistency``: the same answer wins in both orders (position consistency)
- ``both_orders_correct``; ``judgebench_accuracy`` (JudgeBench's score: +1 / -1 / 0 per order, a pair right when
  the sum is > 0)
- ``parse_failure_rate``, ``verdict_A_rate`` (position bias), ``majority_accuracy`` (when k > 1)
- ``calibrated_accuracy`` (constrained): the pair's verdict log-odds averaged over its two orders
  decide, i.e. the position bias is removed (contextual calibration); needs no extra decoding
- ``degenerate_rate``: judgments with more than half of their 4-grams repeated
- mode ``absolute``: ``score_accuracy`` (each answer graded 1-5 alone; the better one scores strictly
  higher; a tie or an unparsed score is wrong), ``score_tie_rate``, ``expected_score_accuracy``
- sets of responses with a human 1-5 score (Prometheus style): each graded alone; ``pearson`` and
  ``spearman`` with the human scores (Fisher-z intervals), ``graded_parse_failure_rate``; in mode absolute
- RewardBench 2 Ties (ratings): each candidate graded alone; ``ties_score`` and its parts (``ties``)
- ``best_of_n_accuracy`` (RewardBench 2): the correct candidate gets the most votes of a round robin
  among the item's n candidates; chance 1/n (``best_of_n_chance``)
- ``four_way_accuracy`` (RewardBench 2's generative mode, ``eval.four_way``): a best-of-4 item judged once with its
  four answers in one prompt, the verdict ``[[A]]``-``[[D]]`` scored 1 / 0 / 0.25 (no verdict); chance 0.25
- mode ``verify`` (``judge.mode=verify``): each answer asked yes/no alone, the higher P(yes) wins (``accuracy``;
  both orders agree by construction); ``label_accuracy`` (Yes for the better answer, No for the other, per
  answer), ``yes_rate``, ``yes_chosen_no_rejected`` (both right)
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Optional

from selftaught import console, eval_data, ties
from selftaught.config import EvalConfig, EvalSetConfig, eval_config
from selftaught.config.base import VERDICT_MODES
from selftaught.degeneracy import DEFAULT_THRESHOLD
from selftaught.engines import Engine
from selftaught.parsing import FOUR_WAY_OPTIONS
from selftaught.prompts import load_template
from selftaught.rows import Evaluated
from selftaught.stages import grades
from selftaught.stages.base import OK, TOO_LONG, StageContext, StageSpec, Upstream, provenance
from selftaught.stages.judge import (ORDERS, VERIFY, JudgeDecoding, JudgeItem, both_orders, budget, pairwise_form,
                                     preferred, sample)
from selftaught.stats import bootstrap_ratio, fmt_ci, wilson
from selftaught.store import StageDir

STAGE = "eval"
ABSOLUTE = "absolute"  # the eval mode that grades each answer alone
VERIFY_MODE = "verify"  # the eval mode that asks yes/no of each answer alone
NO_GOLD = "no gold answer (best-of-n pair of two wrong candidates)"  # absolute mode: not graded
GRADED = "graded"  # the "order" of a response with a human score, graded alone
FOUR_WAY_ORDER = "".join(FOUR_WAY_OPTIONS)  # the "order" of a best-of-4 item judged in one prompt (eval.four_way)
BEST_OF_N_FIELDS = ("group", "cand_a", "cand_b", "n_candidates", "scored")


def _majority(verdicts: list[Optional[str]]) -> Optional[str]:
    c = Counter(v for v in verdicts if v)
    if not c or c["A"] == c["B"]:
        return None  # no votes or a tie: no winner, counted as wrong
    return c.most_common(1)[0][0]


def process(pairs: list[dict], engine: Engine, ctx: StageContext, cfg: EvalConfig) -> list[dict]:
    """One row per (pair, order, mode): the greedy judgment, its verdict and margin, (k > 1) the vote.

    ``cfg.template`` and ``cfg.format`` must be resolved (``config.eval_config``)."""
    tpl = load_template(cfg.template)
    graded = [p for p in pairs if is_graded(p)]
    four = [p for p in pairs if is_four_way(p)]
    pairs = [p for p in pairs if not is_graded(p) and not is_four_way(p)]
    items, base = [], []
    for p in pairs:
        for order, gold, item in both_orders(p["eval_id"], p["instruction"], p["chosen"], p["rejected"]):
            items.append(item)
            base.append({"eval_id": p["eval_id"], "set": p["set"], "subset": p["subset"], "source": p.get("source"),
                         "order": order, "gold": gold, "instruction": p["instruction"],
                         "answer_a": item.answer_a, "answer_b": item.answer_b,
                         **{k: p[k] for k in BEST_OF_N_FIELDS if p.get(k) is not None}})
    rows = _absolute(pairs, engine, ctx, cfg) if ABSOLUTE in cfg.modes else []
    rows += _human_scored(graded, engine, ctx, cfg)
    if VERIFY_MODE in cfg.modes:
        rows += _verify(pairs, items, base, engine, ctx, cfg)
    rows += _four_way(four, engine, ctx, cfg)
    for mode in pairwise_modes(cfg):
        if mode == VERIFY_MODE:
            continue
        greedy = JudgeDecoding(format=cfg.format, constrained=mode == "constrained", temperature=0.0, top_p=1.0,
                               max_tokens=cfg.max_tokens, frequency_penalty=cfg.frequency_penalty)
        mode_ctx = replace(ctx, constrained=greedy.constrained)  # provenance: this mode's decoding
        judged = sample(items, 1, engine, mode_ctx, tpl, greedy)
        voted = {}
        if cfg.majority_k > 1:
            vote = JudgeDecoding(format=cfg.format, constrained=greedy.constrained, temperature=cfg.temperature,
                                 top_p=cfg.top_p, max_tokens=cfg.max_tokens, frequency_penalty=cfg.frequency_penalty)
            voted = sample(items, cfg.majority_k, engine, mode_ctx, tpl, vote, explain="none")
        for item, b in zip(items, base):
            row = {**b, "mode": mode}
            res = judged.get(item.id)
            if res is None:
                row.update(status=TOO_LONG, judgment=None, verdict=None, error=None, correct=None, margin=None,
                           repeat=None, votes=None, majority=None, majority_correct=None, eval_meta=None)
                rows.append(row)
                continue
            s = res["samples"][0]
            votes = [v["verdict"] for v in voted[item.id]["samples"]] if item.id in voted else None
            majority = _majority(votes) if votes is not None else None
            tokens = s["tokens"] + (sum(v["tokens"] for v in voted[item.id]["samples"]) if votes is not None else 0)
            row.update(
                status=OK, judgment=s["judgment"], verdict=s["verdict"], error=s["error"],
                correct=s["verdict"] == row["gold"], margin=s["margin"], repeat=s["repeat"],
                votes=votes, majority=majority, majority_correct=(majority == row["gold"]) if votes is not None else None,
                eval_meta=provenance(STAGE, mode_ctx, tpl.id, greedy.text_sampling(1, budget(greedy)),
                                     res["prompt_tokens"] * (2 if votes is not None else 1), tokens, engine),
            )
            rows.append(row)
    return rows


def pairwise_modes(cfg: EvalConfig) -> list[str]:
    """The modes that judge a pair in both orders (verify too: its orders agree by construction)."""
    return [m for m in cfg.modes if m != ABSOLUTE]


def _verify(pairs: list[dict], items: list, base: list[dict], engine: Engine, ctx: StageContext,
            cfg: EvalConfig) -> list[dict]:
    """Mode "verify": each answer of a pair asked "does it answer the instruction?" alone (greedy, the verdict
    token forced, nothing else written); in each order the answer with the higher log p(Yes) - log p(No) is
    the pair's verdict, so both orders agree and no position can be preferred. The rows are the pairwise
    modes' (one per order), with each answer's own yes/no (``label_a``/``label_b``) for the yes/no metrics."""
    tpl = load_template(cfg.verify_template)
    dec = JudgeDecoding(format="verdict_first", constrained=True, verdict_only=True)
    mode_ctx = replace(ctx, constrained=True)
    answers = [JudgeItem(id=f"{p['eval_id']}/{side}", instruction=p["instruction"], answer_a=p[side])
               for p in pairs for side in ("chosen", "rejected")]
    got = sample(answers, 1, engine, mode_ctx, tpl, dec, form=VERIFY)
    rows = []
    for b in base:
        row = {**b, "mode": VERIFY_MODE}
        c, r = got.get(f"{b['eval_id']}/chosen"), got.get(f"{b['eval_id']}/rejected")
        if c is None or r is None:
            rows.append({**row, "status": TOO_LONG, "verdict": None, "correct": None, "margin": None})
            continue
        sa, sb = (c, r) if b["order"] == "AB" else (r, c)
        a, bb = sa["samples"][0], sb["samples"][0]
        diff = a["margin"] - bb["margin"]
        verdict = "A" if diff > 0 else "B" if diff < 0 else None  # equal P(yes): no winner, counted wrong
        rows.append({**row, "status": OK, "judgment": f"[A] {a['judgment']}\n[B] {bb['judgment']}", "verdict": verdict,
                     "error": None if verdict else "equal yes log-odds", "correct": verdict == row["gold"],
                     "margin": round(diff, 4), "label_a": a["verdict"], "label_b": bb["verdict"], "repeat": 0.0,
                     "eval_meta": provenance(STAGE, mode_ctx, tpl.id, dec.verdict_sampling(1),
                                             c["prompt_tokens"] + r["prompt_tokens"], 2, engine)})
    return rows


def _four_way(items: list[dict], engine: Engine, ctx: StageContext, cfg: EvalConfig) -> list[dict]:
    """``eval.four_way``: each best-of-4 item judged greedily once per decoding mode (constrained, free) with its
    four answers in one prompt (``eval_data.four_way_item``; order "ABCD"); the verdict is right when it names
    the correct answer's letter (``gold``)."""
    if not items:
        return []
    tpl = load_template(cfg.four_way_prompt)
    form = pairwise_form(cfg.format, FOUR_WAY_OPTIONS)
    judge_items = [JudgeItem(id=p["eval_id"], instruction=p["instruction"], answer_a=p["four_way"][0],
                             answer_b=p["four_way"][1], answer_c=p["four_way"][2], answer_d=p["four_way"][3],
                             pair_id=p["eval_id"], gold=p["gold"]) for p in items]
    rows = []
    for mode in four_way_modes(cfg):
        dec = JudgeDecoding(format=cfg.format, constrained=mode == "constrained", temperature=0.0, top_p=1.0,
                            max_tokens=cfg.max_tokens, frequency_penalty=cfg.frequency_penalty)
        mode_ctx = replace(ctx, constrained=dec.constrained)
        judged = sample(judge_items, 1, engine, mode_ctx, tpl, dec, form=form)
        for p in items:
            row = {"eval_id": p["eval_id"], "set": p["set"], "subset": p["subset"], "source": p.get("source"),
                   "order": FOUR_WAY_ORDER, "gold": p["gold"], "mode": mode, "instruction": p["instruction"],
                   "answer_a": p["four_way"][0], "answer_b": p["four_way"][1], "answers_cd": list(p["four_way"][2:]),
                   "group": p["group"], "n_candidates": len(p["four_way"]), "votes": None, "majority": None,
                   "majority_correct": None}
            res = judged.get(p["eval_id"])
            if res is None:
                rows.append({**row, "status": TOO_LONG, "judgment": None, "verdict": None, "error": None,
                             "correct": None, "margin": None, "repeat": None, "eval_meta": None})
                continue
            s = res["samples"][0]
            rows.append({**row, "status": OK, "judgment": s["judgment"], "verdict": s["verdict"], "error": s["error"],
                         "correct": s["verdict"] == p["gold"], "margin": None, "repeat": s["repeat"],
                         "eval_meta": provenance(STAGE, mode_ctx, tpl.id, dec.text_sampling(1, budget(dec)),
                                                 res["prompt_tokens"], s["tokens"], engine)})
    return rows


def four_way_modes(cfg: EvalConfig) -> list[str]:
    """The decodings a best-of-4 judgment is made in: those of ``eval.modes`` that write a pairwise verdict."""
    return [m for m in cfg.modes if m in VERDICT_MODES]


def is_four_way(p: dict) -> bool:
    """A best-of-4 item judged in one prompt (``eval_data.four_way_item``), not a pair."""
    return p.get("four_way") is not None


def is_graded(p: dict) -> bool:
    """A response with a human 1-5 score (``formats.graded``), not a pair."""
    return p.get("response") is not None


def rows_for(p: dict, cfg: EvalConfig) -> int:
    """Output rows of one input: a graded response is graded once; a pair is judged in each order per
    pairwise mode, plus once in mode absolute."""
    if is_four_way(p):
        return len(four_way_modes(cfg))
    return 1 if is_graded(p) else len(ORDERS) * len(pairwise_modes(cfg)) + (ABSOLUTE in cfg.modes)


def _human_scored(rows: list[dict], engine: Engine, ctx: StageContext, cfg: EvalConfig) -> list[dict]:
    """Responses with a human score, or RewardBench 2 Ties candidates, graded greedily 1-5 against their
    rubric (mode "absolute", order "graded"); ``_absolute_metrics`` correlates the two scores, or scores
    the Ties items (``ties``). Graded whatever ``eval.modes`` says: such a set measures nothing else."""
    if not rows:
        return []
    tpl = load_template(cfg.absolute_template)
    items = [{"id": p["eval_id"], **{k: p.get(k) for k in ("instruction", "response", "rubric", "reference")}}
             for p in rows]
    sampling = grades.grade_sampling(cfg.max_tokens, ctx.constrained, cfg.frequency_penalty)
    got = grades.grade(items, engine, ctx, tpl, sampling, ctx.constrained)
    out = []
    for p in rows:
        row = {"eval_id": p["eval_id"], "set": p["set"], "subset": p["subset"], "source": p.get("source"),
               "order": GRADED, "mode": ABSOLUTE, "instruction": p["instruction"], "answer_a": p["response"],
               "human_score": p.get("human_score"),
               **{k: p[k] for k in ("ties_group", "correct", "num_correct") if p.get(k) is not None}}
        g = got.get(p["eval_id"])
        if g is None:
            out.append({**row, "status": TOO_LONG, "score": None})
            continue
        out.append({**row, "status": OK, "judgment": g["text"], "score": g["score"], "error": g["error"],
                    "expected_score": g["expected_score"],
                    "eval_meta": provenance(STAGE, ctx, tpl.id, sampling, g["prompt_tokens"], g["tokens"], engine)})
    return out


def _absolute(pairs: list[dict], engine: Engine, ctx: StageContext, cfg: EvalConfig) -> list[dict]:
    """Mode "absolute": one row per pair (best-of-n round robins: the pairs with the correct candidate),
    each answer graded alone; right when the better one scores strictly higher."""
    tpl = load_template(cfg.absolute_template)
    unscored = [p for p in pairs if p.get("scored") is False]
    pairs = [p for p in pairs if p.get("scored") is not False]
    items = [{"id": f"{p['eval_id']}/{side}", "instruction": p["instruction"], "response": p[side]}
             for p in pairs for side in ("chosen", "rejected")]
    sampling = grades.grade_sampling(cfg.max_tokens, ctx.constrained, cfg.frequency_penalty)
    graded = grades.grade(items, engine, ctx, tpl, sampling, ctx.constrained)
    rows = [{"eval_id": p["eval_id"], "set": p["set"], "subset": p["subset"], "order": ABSOLUTE, "mode": ABSOLUTE,
             "status": NO_GOLD} for p in unscored]  # accounted for, not graded
    for p in pairs:
        row = {"eval_id": p["eval_id"], "set": p["set"], "subset": p["subset"], "source": p.get("source"),
               "order": ABSOLUTE, "gold": "A", "mode": ABSOLUTE, "instruction": p["instruction"],
               "answer_a": p["chosen"], "answer_b": p["rejected"]}
        c, r = graded.get(f"{p['eval_id']}/chosen"), graded.get(f"{p['eval_id']}/rejected")
        if c is None or r is None:
            rows.append({**row, "status": TOO_LONG, "verdict": None, "correct": None})
            continue
        sc, sr = c["score"], r["score"]
        verdict = None if sc is None or sr is None or sc == sr else ("A" if sc > sr else "B")
        ec, er = c["expected_score"], r["expected_score"]
        rows.append({**row, "status": OK, "judgment": f"[chosen] {c['text']}\n\n[rejected] {r['text']}",
                     "verdict": verdict, "correct": verdict == "A", "error": c["error"] or r["error"],
                     "score_chosen": sc, "score_rejected": sr, "expected_chosen": ec, "expected_rejected": er,
                     "margin": None if ec is None or er is None else round(ec - er, 4),
                     "eval_meta": provenance(STAGE, ctx, tpl.id, sampling, c["prompt_tokens"] + r["prompt_tokens"],
                                             c["tokens"] + r["tokens"], engine)})
    return rows


def _absolute_metrics(rows: list[dict]) -> dict:
    """Mode "absolute": pairs graded answer by answer (the pair is the unit; Wilson intervals), and
    responses graded alone: with a human score, Pearson and Spearman with it (Fisher-z intervals,
    ``grades.correlations``); RewardBench 2 Ties candidates, the Ties score (``ties``)."""
    human = [r for r in rows if r.get("order") == GRADED]
    rows = [r for r in rows if r.get("order") != GRADED]
    m: dict = {}
    if rows or not human:
        ok = [r for r in rows if r["status"] == OK]
        parsed = [r for r in ok if r["score_chosen"] is not None and r["score_rejected"] is not None]
        m.update(pairs=len(ok), skipped_too_long=sum(r["status"] == TOO_LONG for r in rows))
        _rate(m, "score_accuracy", sum(bool(r["correct"]) for r in ok), len(ok))  # a tie or an unparsed score is wrong
        _rate(m, "score_tie_rate", sum(r["score_chosen"] == r["score_rejected"] for r in parsed), len(ok))
        _rate(m, "parse_failure_rate", len(ok) - len(parsed), len(ok))
        expected = [r for r in ok if r.get("margin") is not None]
        if expected:
            _rate(m, "expected_score_accuracy", sum(r["margin"] > 0 for r in expected), len(expected))
    if human:
        scored = [r for r in human if r["status"] == OK]
        m.update(graded=len(scored), graded_skipped_too_long=len(human) - len(scored))
        _rate(m, "graded_parse_failure_rate", sum(r["score"] is None for r in scored), len(scored))
        m.update(grades.correlations(scored))
        ties_rows = [r for r in human if r.get("ties_group") is not None]
        if ties_rows:
            m.update(ties.ties_metrics(ties_rows))
    return m


def _with_ci(m: dict, name: str, value: Optional[float], ci: Optional[tuple[float, float]]) -> None:
    m[name] = None if value is None else round(value, 4)
    if ci is not None:
        m[f"{name}_lo"], m[f"{name}_hi"] = round(ci[0], 4), round(ci[1], 4)


def _rate_by_pair(m: dict, name: str, by_pair: dict[str, list[dict]], hit, counted=lambda r: True) -> None:
    """``name`` = hits / counted rows, with a bootstrap interval over pairs (the unit)."""
    nums = [sum(bool(hit(r)) for r in rs if counted(r)) for rs in by_pair.values()]
    dens = [sum(bool(counted(r)) for r in rs) for rs in by_pair.values()]
    den = sum(dens)
    _with_ci(m, name, sum(nums) / den if den else None, bootstrap_ratio(nums, dens))


def _rate(m: dict, name: str, k: int, n: int) -> None:
    """``name`` = k / n over independent units, with the Wilson interval."""
    _with_ci(m, name, k / n if n else None, wilson(k, n))


def _best_of_n(m: dict, rows: list[dict]) -> None:
    """Best-of-n items (round robins, ``eval_data.best_of_n_pairs``): each judged order is a vote for
    the candidate it prefers; the judge picks the candidate with the most votes (a tie at the top
    splits the credit), so a random judge scores 1/n. An item with a pair too long is not scored."""
    by_item: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("group") is not None:
            by_item[r["group"]].append(r)
    if not by_item:
        return
    credits, chance, skipped = [], [], 0
    for rs in by_item.values():
        if any(r["status"] != OK for r in rs):
            skipped += 1
            continue
        votes = Counter({c: 0 for c in range(rs[0]["n_candidates"])})
        for r in rs:
            i = preferred(r["verdict"], r["order"])
            if i is not None:
                votes[(r["cand_a"], r["cand_b"])[i]] += 1
        top = [c for c, v in votes.items() if v == max(votes.values())]
        credits.append(1 / len(top) if 0 in top else 0.0)
        chance.append(1 / rs[0]["n_candidates"])
    m["best_of_n_items"], m["best_of_n_skipped_too_long"] = len(credits), skipped
    m["best_of_n_chance"] = round(sum(chance) / len(chance), 4) if chance else None
    _with_ci(m, "best_of_n_accuracy", sum(credits) / len(credits) if credits else None,
             bootstrap_ratio(credits, [1.0] * len(credits)))


def _four_way_metrics(m: dict, rows: list[dict]) -> None:
    """Best-of-4 items judged in one prompt (``eval.four_way``), scored as RewardBench 2's generative mode is: the
    correct letter 1, another letter 0, no verdict 0.25 (a tie); chance 0.25. ``four_way_A_rate``: the share of
    parsed verdicts naming the first answer (position bias: 0.25 for a judge without one)."""
    if not rows:
        return
    ok = [r for r in rows if r["status"] == OK]
    m["four_way_items"], m["four_way_skipped_too_long"] = len(ok), len(rows) - len(ok)
    credit = [1.0 if r["correct"] else 0.25 if r["verdict"] is None else 0.0 for r in ok]
    _with_ci(m, "four_way_accuracy", sum(credit) / len(credit) if credit else None,
             bootstrap_ratio(credit, [1.0] * len(credit)))
    parsed = [r for r in ok if r["verdict"] is not None]
    _rate(m, "four_way_parse_failure_rate", len(ok) - len(parsed), len(ok))
    _rate(m, "four_way_A_rate", sum(r["verdict"] == "A" for r in parsed), len(parsed))


def _vote(r: dict) -> int:
    return 0 if r["verdict"] is None else 1 if r["correct"] else -1


def _group_metrics(rows: list[dict]) -> dict:
    """Metrics over the judged rows of one group (a set or a subset) in one mode. Pairs without a
    gold answer (a best-of-n item's pairs of two wrong candidates) count only in ``_best_of_n``; best-of-4 items
    judged in one prompt only in ``_four_way_metrics``."""
    four = [r for r in rows if r.get("order") == FOUR_WAY_ORDER]
    rows = [r for r in rows if r.get("order") != FOUR_WAY_ORDER]
    best_of_n = rows
    rows = [r for r in rows if r.get("scored") is not False]
    ok = [r for r in rows if r["status"] == OK]
    by_pair: dict[str, list[dict]] = defaultdict(list)
    for r in ok:
        by_pair[r["eval_id"]].append(r)
    both = [{r["order"]: r for r in rs} for rs in by_pair.values() if len(rs) == 2]
    m: dict = {"pairs": len(by_pair), "skipped_too_long": len({r["eval_id"] for r in rows if r["status"] == TOO_LONG})}
    _rate_by_pair(m, "accuracy", by_pair, lambda r: r["correct"])
    for o in ORDERS:
        in_order = [r for r in ok if r["order"] == o]
        _rate(m, f"acc_{o}", sum(r["correct"] for r in in_order), len(in_order))
    # Consistent: the same underlying answer wins in both orders (A in AB and B in BA, or B then A).
    _rate(m, "consistency", sum(p["AB"]["verdict"] is not None and p["BA"]["verdict"] is not None
                                 and p["AB"]["verdict"] != p["BA"]["verdict"] for p in both), len(both))
    _rate(m, "both_orders_correct", sum(p["AB"]["correct"] and p["BA"]["correct"] for p in both), len(both))
    # JudgeBench's both-order score: each order votes +1 (right), -1 (wrong) or 0 (no verdict); a pair counts
    # when its two votes sum > 0 (one right and one unparsed counts, one right and one wrong does not).
    _rate(m, "judgebench_accuracy", sum(_vote(p["AB"]) + _vote(p["BA"]) > 0 for p in both), len(both))
    _rate_by_pair(m, "parse_failure_rate", by_pair, lambda r: r["verdict"] is None)
    _rate_by_pair(m, "verdict_A_rate", by_pair, lambda r: r["verdict"] == "A", counted=lambda r: r["verdict"] is not None)
    calibrated = [p for p in both if p["AB"].get("margin") is not None and p["BA"].get("margin") is not None]
    if calibrated:  # chosen is A in AB and B in BA: it wins when margin_AB - margin_BA > 0
        _rate(m, "calibrated_accuracy", sum(p["AB"]["margin"] - p["BA"]["margin"] > 0 for p in calibrated), len(calibrated))
    if any(r.get("votes") is not None for r in ok):
        _rate_by_pair(m, "majority_accuracy", by_pair, lambda r: r["majority_correct"],
                      counted=lambda r: r.get("votes") is not None)
    _rate_by_pair(m, "degenerate_rate", by_pair, lambda r: (r.get("repeat") or 0) > DEFAULT_THRESHOLD)
    _best_of_n(m, best_of_n)
    _four_way_metrics(m, four)
    labelled = [p["AB"] for p in both if p["AB"].get("label_a") is not None]
    if labelled:  # mode verify, order AB: answer A is the chosen one, B the rejected one; bootstrap over pairs
        for name, hits in (("label_accuracy", lambda r: (r["label_a"] == "Yes") + (r["label_b"] == "No")),
                           ("yes_rate", lambda r: (r["label_a"] == "Yes") + (r["label_b"] == "Yes"))):
            nums = [hits(r) for r in labelled]
            _with_ci(m, name, sum(nums) / (2 * len(nums)), bootstrap_ratio(nums, [2] * len(nums)))
        _rate(m, "yes_chosen_no_rejected", sum(r["label_a"] == "Yes" and r["label_b"] == "No" for r in labelled), len(labelled))
    return m


def metrics(rows: list[dict]) -> dict[str, dict[str, dict]]:
    """``{mode: {set: metrics, "set/subset": metrics}}`` for every mode, set and each of its subsets."""
    out: dict[str, dict[str, dict]] = {}
    by_mode: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_mode[r.get("mode", "constrained")].append(r)
    for mode, mode_rows in by_mode.items():
        by_set: dict[str, list[dict]] = defaultdict(list)
        for r in mode_rows:
            by_set[r["set"]].append(r)
        groups: dict[str, dict] = {}
        group_metrics = _absolute_metrics if mode == ABSOLUTE else _group_metrics
        for name, set_rows in sorted(by_set.items()):
            groups[name] = group_metrics(set_rows)
            subsets: dict[str, list[dict]] = defaultdict(list)
            for r in set_rows:
                subsets[r["subset"]].append(r)
            if len(subsets) > 1:
                for sub, sub_rows in sorted(subsets.items()):
                    groups[f"{name}/{sub}"] = group_metrics(sub_rows)
        out[mode] = groups
    return out


def flat(m: dict[str, dict[str, dict]], prefix: str = "eval") -> dict[str, float]:
    """``{"eval/<mode>/<set>[/<subset>]/<metric>": value}`` for trackers and the run summary."""
    return {f"{prefix}/{mode}/{group}/{k}": v for mode, groups in m.items() for group, vals in groups.items()
            for k, v in vals.items() if v is not None}


COLUMNS = ("accuracy", "acc_AB", "acc_BA", "consistency", "verdict_A_rate", "parse_failure_rate", "yes_rate",
           "label_accuracy",
           "calibrated_accuracy", "majority_accuracy", "best_of_n_accuracy", "four_way_accuracy", "score_accuracy", "score_tie_rate",
           "expected_score_accuracy", "graded", "graded_parse_failure_rate", "pearson", "spearman", "pearson_expected",
           "ties_score", "tied_accuracy", "ref_accuracy")


def format_metrics(m: dict[str, dict[str, dict]]) -> str:
    """One line per (mode, group); accuracy-like cells as ``value [lo,hi]``."""
    lines = []
    for mode, groups in m.items():
        cols = ["pairs"] + [c for c in COLUMNS if any(c in v for v in groups.values())]
        cells = [[f"{mode} {g}"] + [str(v.get(c, "-")) if c in ("pairs", "graded") else
                                   fmt_ci(v.get(c), v.get(f"{c}_lo"), v.get(f"{c}_hi"), sep=",") for c in cols]
                 for g, v in groups.items()]
        head = ["mode set"] + cols
        widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(head)]
        lines.append("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths))))
        lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    return "\n".join(lines)


def stage_config(cfg, up: Upstream) -> EvalConfig:
    """``config.eval_config``, plus the run's held-out pairs (``eval.holdout``) as the set ``eval.holdout.name`` when
    the driver hands their stage in (``up.dir``; its hash chains into the eval's)."""
    c = eval_config(cfg)
    if up.dir is None:
        return c
    held = EvalSetConfig(path=str(up.dir.data_dir), name=cfg.eval.holdout.name, format="parquet")
    return replace(c, sets=[*c.sets, held])


def hashed(c: EvalConfig) -> EvalConfig:
    """The config less the held-out set's path, a folder of this run that the upstream hash identifies."""
    if not c.holdout.enabled:
        return c
    return replace(c, sets=[replace(s, path="<run>") if s.name == c.holdout.name else s for s in c.sets])


def inputs(cfg: EvalConfig, sd: StageDir, shard_size: int) -> list[Path]:
    """The eval pairs as the stage's input shards; unreadable rows in ``rejected.jsonl``."""
    pairs_, rejects = eval_data.load_eval_sets(cfg)
    return sd.write_inputs(pairs_, shard_size, rejects)


def finalize(sd: StageDir, cfg: EvalConfig, ctx: StageContext) -> dict:
    """The metrics need every (pair, order) of a set together (bootstrap over pairs), so they come from
    the stage's rows once its shards are committed; eval sets are bounded, unlike the data."""
    m = metrics(sd.rows() + sd.failures())
    skipped = sd.rejected()
    console.echo(f"\neval, round {ctx.round} ({ctx.model_path}):\n{format_metrics(m)}")
    if skipped["rejected_lines"]:  # MT-Bench tie votes land here, counted, never in an accuracy
        console.echo(f"not judged: {skipped['rejected_by_reason']}")
    return {"model": ctx.model_path, "metrics": m, **skipped}


SPEC = StageSpec(name=STAGE, row_type=Evaluated, process=process, engine="judge", meta_fields=("eval_meta",),
                 rows_for=rows_for,
                 row_id=lambda r: f"{r['eval_id']}/{r['order']}/{r.get('mode')}",
                 config=stage_config,
                 templates=lambda c: (c.template, c.absolute_template) + ((c.four_way_prompt,) if c.four_way else ()),
                 hash_extra=lambda cfg: eval_data.fingerprint(cfg.eval), hash_view=hashed, inputs=inputs, finalize=finalize,
                 describe=lambda c: f"{len(ORDERS)} orders, {'+'.join(c.modes)}")
