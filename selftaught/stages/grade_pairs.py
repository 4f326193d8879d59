"""Stage 4b (``judge.mode=absolute|both``): the current judge grades each answer of a pair 1-5.

The absolute counterpart of ``judge``, on the same contrastive pairs: ``judge.n`` gradings of the
chosen answer and ``judge.n`` of the rejected one (Prometheus's prompt, the general rubric, the
judge's temperature). The pair is the label: a chosen grading and a rejected grading are kept only
as a couple whose chosen score is strictly higher, drawn at random among such couples; a pair with
none keeps nothing ("chosen never scored higher"). The score balance (``finalize``) then caps each
score at an even share of the kept gradings, so the trained grader does not learn one score; it is
decided from two columns of every shard and applied row by row in ``sft_data``, like the A/B balance.
"""
from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from dataclasses import replace
from typing import Optional

import numpy as np

from selftaught import io
from selftaught.config import JudgeConfig
from selftaught.degeneracy import repeat_ratio
from selftaught.engines import Engine
from selftaught.parsing import SCORES
from selftaught.prompts import load_template
from selftaught.rows import GradedAnswer
from selftaught.stages import pairs as pairs_stage
from selftaught.stages.base import OK, TOO_LONG, StageContext, StageSpec, provenance
from selftaught.stages.grades import grade_sampling, sample_grades

STAGE = "grade_pairs"
SIDES = ("chosen", "rejected")
NOT_HIGHER = "chosen never scored higher"
BALANCED_OUT = "dropped by score balance"


def sampling(cfg: JudgeConfig, constrained: bool):
    return grade_sampling(cfg.max_tokens, constrained, cfg.frequency_penalty, n=cfg.n, temperature=cfg.temperature,
                          top_p=cfg.top_p)


def _usable(s: dict, cfg: JudgeConfig) -> bool:
    return s["score"] is not None and not (cfg.drop_degenerate and s["repeat"] > cfg.degenerate_threshold)


def keep(chosen: list[dict], rejected: list[dict], rng: random.Random,
         usable=lambda s: s["score"] is not None) -> Optional[tuple[int, int]]:
    """(chosen sample, rejected sample) of one pair: a couple drawn at random among the usable ones whose
    chosen score is strictly higher; None when no couple is (an unparsed score never counts)."""
    couples = [(i, j) for i, c in enumerate(chosen) if usable(c) for j, r in enumerate(rejected)
               if usable(r) and c["score"] > r["score"]]
    return rng.choice(couples) if couples else None


def process(pairs: list[dict], engine: Engine, ctx: StageContext, cfg: JudgeConfig) -> list[dict]:
    """Two rows per pair (its chosen and its rejected answer), each with every grading sampled and the
    kept one, or the reason there is none."""
    tpl = load_template(cfg.absolute_template)
    samp = sampling(cfg, ctx.constrained)
    items = [{"id": f"{p['pair_id']}/{side}", "instruction": p["instruction"], "response": p[side]}
             for p in pairs for side in SIDES]
    got = sample_grades(items, engine, ctx, tpl, samp, ctx.constrained)
    rows = []
    for p in pairs:
        pid = p["pair_id"]
        base = {"pair_id": pid, "instruction": p["instruction"], "category": p.get("category")}
        graded = {side: got.get(f"{pid}/{side}") for side in SIDES}
        if any(g is None for g in graded.values()):
            rows += [{**base, "example_id": f"{pid}/{side}", "side": side, "response": p[side], "status": TOO_LONG,
                      "samples": []} for side in SIDES]
            continue
        samples = {side: [{**s, "repeat": round(repeat_ratio(s["feedback"] or s["text"]), 4)} for s in g["samples"]]
                   for side, g in graded.items()}
        pick = keep(samples["chosen"], samples["rejected"], random.Random(f"{ctx.seed}:{pid}"),
                    usable=lambda s: _usable(s, cfg))
        for side, k in zip(SIDES, pick or (None, None)):
            ss, g = samples[side], graded[side]
            kept = ss[k] if k is not None else None
            rows.append({
                **base, "example_id": f"{pid}/{side}", "side": side, "response": p[side],
                "samples": [{k_: s[k_] for k_ in ("text", "score", "error", "expected_score", "tokens", "repeat")}
                            for s in ss],
                "n_samples": len(ss), "n_parsed": sum(s["score"] is not None for s in ss),
                "kept_grading": kept["text"] if kept else None, "kept_score": kept["score"] if kept else None,
                "status": OK if kept else NOT_HIGHER,
                "grade_meta": provenance(STAGE, ctx, tpl.id, samp, g["prompt_tokens"], sum(s["tokens"] for s in ss),
                                         engine),
            })
    return rows


def balance_key(seed: int, example_id: str) -> int:
    """A kept grading's rank in the score balance: a seeded hash, so it needs no row order."""
    return int.from_bytes(hashlib.blake2b(f"score:{seed}:{example_id}".encode(), digest_size=8).digest(), "little")


def balance_thresholds(keys: dict[int, list[int]]) -> dict[str, Optional[int]]:
    """Per score, the largest key kept: each score keeps at most ``ceil(kept / scores that occur)`` of its
    gradings (the smallest keys), so none holds more than an even share. Keys are strings (JSON)."""
    present = [s for s in SCORES if keys.get(s)]
    if not present:
        return {str(s): None for s in SCORES}
    cap = math.ceil(sum(len(keys[s]) for s in present) / len(present))
    out: dict[str, Optional[int]] = {}
    for s in SCORES:
        ks = np.asarray(keys.get(s, []), dtype=np.uint64)
        out[str(s)] = int(np.partition(ks, min(cap, len(ks)) - 1)[min(cap, len(ks)) - 1]) if len(ks) else None
    return out


def balanced_in(row: dict, seed: int, thresholds: dict[str, Optional[int]]) -> bool:
    t = thresholds.get(str(row["kept_score"]))
    return t is not None and balance_key(seed, row["example_id"]) <= t


def shard_stats(rows: list[dict], cfg: JudgeConfig) -> dict:
    """Additive counts: gradings, parsed, the sampled scores of each side, pairs kept, degenerate feedback."""
    st: dict = {"gradings": 0, "parsed": 0, "degenerate": 0, "pairs_kept": 0,
                "scores_chosen": {}, "scores_rejected": {}, "parse_errors": {}}
    for r in rows:
        ss = r.get("samples") or []
        st["gradings"] += len(ss)
        st["parsed"] += sum(s["score"] is not None for s in ss)
        st["degenerate"] += sum(s["repeat"] > cfg.degenerate_threshold for s in ss)
        c = Counter(str(s["score"]) for s in ss if s["score"] is not None)
        side = st[f"scores_{r['side']}"]
        for k, v in c.items():
            side[k] = side.get(k, 0) + v
        for k, v in Counter(s["error"] for s in ss if s["error"]).items():
            st["parse_errors"][k] = st["parse_errors"].get(k, 0) + v
        st["pairs_kept"] += r["status"] == OK and r["side"] == "chosen"
    return st


def summarize(st: dict, cfg: JudgeConfig) -> dict:
    n = st.get("gradings", 0)

    def mean(hist: dict) -> Optional[float]:
        k = sum(hist.values())
        return round(sum(int(s) * v for s, v in hist.items()) / k, 4) if k else None

    return {"gradings": n, "parse_rate": round(st.get("parsed", 0) / n, 4) if n else None,
            "mean_score_chosen": mean(st.get("scores_chosen") or {}),
            "mean_score_rejected": mean(st.get("scores_rejected") or {}),
            "scores_chosen": {str(s): (st.get("scores_chosen") or {}).get(str(s), 0) for s in SCORES},
            "scores_rejected": {str(s): (st.get("scores_rejected") or {}).get(str(s), 0) for s in SCORES},
            "pairs_kept": st.get("pairs_kept", 0), "parse_errors": dict(st.get("parse_errors") or {}),
            "degenerate_rate": round(st.get("degenerate", 0) / n, 4) if n else None}


def finalize(sd, cfg: JudgeConfig, ctx: StageContext) -> dict:
    """The score balance of the kept gradings, from two columns of every shard (``sft_data`` applies it)."""
    keys: dict[int, list[int]] = {s: [] for s in SCORES}
    for f in sd.data_files():
        for r in io.read_records(f, ["example_id", "kept_score"]):
            keys[int(r["kept_score"])].append(balance_key(ctx.seed, r["example_id"]))
    t = (balance_thresholds(keys) if cfg.score_balance
         else {str(s): (max(keys[s]) if keys[s] else None) for s in SCORES})
    kept = {str(s): int((np.asarray(keys[s], dtype=np.uint64) <= np.uint64(t[str(s)])).sum()) if t[str(s)] is not None
            else 0 for s in SCORES}
    return {"score_balance": t, "kept_scores_before_balance": {str(s): len(keys[s]) for s in SCORES},
            "kept_scores": kept, "kept_gradings": sum(kept.values())}


PAIRWISE_ONLY = ("mode", "template", "format", "n_max", "balance", "swap", "calibrate")  # knobs of judge alone


def stage_config(cfg, up) -> JudgeConfig:
    """``cfg.judge`` less the pairwise-only knobs (defaults): absolute and both grade alike."""
    return replace(cfg.judge, **{f: getattr(JudgeConfig, f) for f in PAIRWISE_ONLY})


SPEC = StageSpec(name=STAGE, row_type=GradedAnswer, process=process, engine="judge", rows_per_input=len(SIDES),
                 meta_fields=("grade_meta",), shard_stats=shard_stats, summarize=summarize, finalize=finalize,
                 config=stage_config, templates=lambda c: (c.absolute_template,),
                 sources=(pairs_stage.STAGE,), enabled=lambda cfg: cfg.judge.mode in ("absolute", "both"),
                 describe=lambda c: f"n={c.n}, chosen and rejected graded 1-5")
