"""Stage ``verify_pairs`` (``judge.mode=verify``): the current judge asks of each answer alone "does it answer this
instruction?"; a correct yes/no verdict is kept per answer.

The pair is the label: its chosen answer should get ``Verdict: Yes`` and its rejected answer (an answer to x' or to
a neighbor instruction) ``Verdict: No``. As in ``judge``, ``judge.n`` verdicts are sampled per answer (waves up to
``judge.n_max``, stopping at the first usable correct one), one correct verdict is kept at random, and the kept
Yes and No rows are balanced to equal counts (``sft_data`` applies the thresholds). There is no answer order, so
nothing to swap and no position to learn; a pair is decided later by comparing its answers' P(yes). With
``judge.explanation=none`` the kept judgment is the verdict line alone; ``short`` adds the one line the judge
writes after it.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from typing import Optional

import numpy as np

from selftaught import io
from selftaught.config import JudgeConfig
from selftaught.engines import Engine
from selftaught.parsing import VERIFY_LABELS
from selftaught.prompts import load_template
from selftaught.rows import Verified
from selftaught.stages import pairs as pairs_stage
from selftaught.stages.base import OK, TOO_LONG, StageContext, StageSpec, Upstream, provenance
from selftaught.stages.judge import (NO_CORRECT, VERIFY, JudgeItem, _usable, balance_key, balance_thresholds, budget,
                                     decoding, sample, target, wave_size)

STAGE = "verify_pairs"
SIDES = {"chosen": "Yes", "rejected": "No"}  # side -> the verdict it should get
BALANCED_OUT = "dropped by yes/no balance"


def process(pairs: list[dict], engine: Engine, ctx: StageContext, cfg: JudgeConfig) -> list[dict]:
    """Two rows per pair (its chosen and its rejected answer), each with every verdict sampled and the kept one."""
    tpl = load_template(cfg.verify_template)
    dec = replace(decoding(cfg, ctx.constrained), format="verdict_first")
    items, rows = [], {}
    for p in pairs:
        for side, gold in SIDES.items():
            it = JudgeItem(id=f"{p['pair_id']}/{side}", instruction=p["instruction"], answer_a=p[side],
                           pair_id=p["pair_id"], gold=gold)
            items.append(it)
            rows[it.id] = {"example_id": it.id, "pair_id": p["pair_id"], "side": side, "gold": gold,
                           "instruction": p["instruction"], "response": p[side], "category": p.get("category"),
                           "rejected_source": p.get("rejected_source"), "samples": [], "waves": 0, "prompt_tokens": None}
    n_max = cfg.n_max or cfg.n
    pending, wave = list(items), 0
    while pending:
        k = min(wave_size(cfg, ctx.constrained), n_max - len(rows[pending[0].id]["samples"]))  # all drew as many
        got = sample(pending, k, engine, ctx, tpl, dec, explain="correct",
                     degenerate_above=cfg.degenerate_threshold if cfg.drop_degenerate else None,
                     seed=f"{ctx.seed}:{wave}", form=VERIFY)
        wave += 1
        for it in pending:
            if it.id in got:
                r = rows[it.id]
                r["samples"] += got[it.id]["samples"]
                r["waves"], r["prompt_tokens"] = wave, got[it.id]["prompt_tokens"]
        if cfg.n_max is None:
            break
        pending = [it for it in pending if it.id in got and len(rows[it.id]["samples"]) < n_max
                   and not any(_usable(s, it.gold, cfg) for s in rows[it.id]["samples"])]
    for it in items:
        row = rows[it.id]
        if row["prompt_tokens"] is None:
            row.update(status=TOO_LONG, n_samples=0, n_correct=0, kept_judgment=None, kept_verdict=None, verify_meta=None)
            continue
        samples = row["samples"]
        usable = [s for s in samples if _usable(s, it.gold, cfg)]
        kept = random.Random(f"{ctx.seed}:{it.id}").choice(usable) if usable else None
        row.update(status=OK if kept else NO_CORRECT, n_samples=len(samples),
                   n_correct=sum(s["verdict"] == it.gold for s in samples),
                   kept_judgment=target(kept, VERIFY, cfg) if kept else None, kept_verdict=kept["verdict"] if kept else None,
                   verify_meta=provenance(STAGE, ctx, tpl.id, dec.text_sampling(cfg.n, budget(dec)), row["prompt_tokens"],
                                          sum(s["tokens"] for s in samples), engine))
    return [rows[it.id] for it in items]


def shard_stats(rows: list[dict], cfg: JudgeConfig) -> dict:
    samples = [(s, r["gold"]) for r in rows for s in (r.get("samples") or [])]
    return {"samples": len(samples), "judged": sum(bool(r.get("samples")) for r in rows),
            "max_waves": max((r.get("waves") or 0 for r in rows), default=0),
            "parsed": sum(s["verdict"] is not None for s, _ in samples),
            "verdict_yes": sum(s["verdict"] == "Yes" for s, _ in samples),
            "correct": sum(s["verdict"] == g for s, g in samples),
            "correct_chosen": sum(s["verdict"] == g for s, g in samples if g == "Yes"),
            "samples_chosen": sum(g == "Yes" for _, g in samples),
            "parse_errors": dict(Counter(s["error"] for s, _ in samples if s["error"]))}


def summarize(st: dict, cfg: Optional[JudgeConfig] = None) -> dict:
    def rate(a: int, b: int) -> Optional[float]:
        return round(a / b, 4) if b else None

    n, nc = st.get("samples", 0), st.get("samples_chosen", 0)
    return {"samples": n, "samples_per_item": rate(n, st.get("judged", 0)), "waves": st.get("max_waves", 0),
            "parse_rate": rate(st.get("parsed", 0), n), "yes_rate": rate(st.get("verdict_yes", 0), n),
            "sample_accuracy": rate(st.get("correct", 0), n),
            # how often the judge already says Yes to the chosen answer and No to the rejected one
            "sample_accuracy_chosen": rate(st.get("correct_chosen", 0), nc),
            "sample_accuracy_rejected": rate(st.get("correct", 0) - st.get("correct_chosen", 0), n - nc),
            "parse_errors": dict(st.get("parse_errors") or {})}


def balanced_in(row: dict, seed: int, thresholds: dict[str, Optional[int]]) -> bool:
    t = thresholds.get(row["gold"])
    return t is not None and balance_key(seed, row["example_id"]) <= t


def finalize(sd, cfg: JudgeConfig, ctx: StageContext) -> dict:
    """The yes/no balance of the kept rows (``sft_data`` applies it), from two columns of every shard."""
    keys: dict[str, list[int]] = {label: [] for label in VERIFY_LABELS}
    for f in sd.data_files():
        for r in io.read_records(f, ["example_id", "gold"]):
            keys[r["gold"]].append(balance_key(ctx.seed, r["example_id"]))
    t = balance_thresholds(keys, VERIFY_LABELS) if cfg.balance else \
        {v: (max(keys[v]) if keys[v] else None) for v in VERIFY_LABELS}
    kept = {v: int((np.asarray(keys[v], dtype=np.uint64) <= np.uint64(t[v])).sum()) if t[v] is not None else 0
            for v in VERIFY_LABELS}
    return {"balance": t, "correct_yes": len(keys["Yes"]), "correct_no": len(keys["No"]),
            "kept_yes": kept["Yes"], "kept_no": kept["No"]}


PAIRWISE_ONLY = ("template", "format", "swap", "calibrate", "absolute_template", "score_balance")


def stage_config(cfg, up: Upstream) -> JudgeConfig:
    """``cfg.judge`` less the knobs of the other modes (defaults): changing them redoes nothing here."""
    return replace(cfg.judge, **{f: getattr(JudgeConfig, f) for f in PAIRWISE_ONLY})


SPEC = StageSpec(name=STAGE, row_type=Verified, process=process, engine="judge", rows_per_input=len(SIDES),
                 meta_fields=("verify_meta",), shard_stats=shard_stats, summarize=summarize, finalize=finalize,
                 config=stage_config, sources=(pairs_stage.STAGE,),
                 enabled=lambda cfg: cfg.judge.mode == "verify", templates=lambda c: (c.verify_template,),
                 describe=lambda c: f"n={c.n}, chosen and rejected asked yes/no")
