"""Stage 4: the current judge samples N judgments per pair in both orders; keep one correct at random.

Constrained mode (small judges) decodes in two phases: free reasoning (bounded by ``max_tokens``,
cut at any verdict attempt), then the forced suffix ``Final verdict: `` and a choice between
``[[A]]`` and ``[[B]]``. The kept judgment is the concatenation, so the SFT target is exactly what
the judge wrote. Unconstrained mode is one free generation parsed strictly.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from selftaught.config import JudgeConfig
from selftaught.engines import Constraint, Engine, GenRequest, Sampling
from selftaught.parsing import VERDICT_PREFIX, VERDICTS, parse_verdict, strip_reasoning
from selftaught.prompts import Template, load_template
from selftaught.stages.base import OK, TOO_LONG, StageContext, fits, provenance

STAGE = "judge"
ORDERS = ("AB", "BA")  # AB: chosen shown as A (gold A); BA: chosen shown as B (gold B)
NO_CORRECT = "no correct judgment"
BALANCED_OUT = "dropped by A/B balance"
_VERDICT_TOKENS = 8


@dataclass
class JudgeItem:
    id: str
    instruction: str
    answer_a: str
    answer_b: str


def both_orders(pid: str, instruction: str, chosen: str, rejected: str) -> list[tuple[str, str, JudgeItem]]:
    """The two presentations of a pair, ``(order, gold, item)``: chosen shown as A, then as B."""
    return [(order, "A" if order == "AB" else "B",
             JudgeItem(id=f"{pid}/{order}", instruction=instruction,
                       answer_a=chosen if order == "AB" else rejected, answer_b=rejected if order == "AB" else chosen))
            for order in ORDERS]


def judge_messages(tpl: Template, item: JudgeItem) -> list[dict]:
    return tpl.messages(instruction=item.instruction, answer_a=item.answer_a, answer_b=item.answer_b)


def judge_items(items: list[JudgeItem], engine: Engine, ctx: StageContext, tpl: Template, sampling: Sampling
                ) -> dict[str, dict]:
    """Sample ``sampling.n`` judgments per item. Returns per item id: samples (judgment, verdict,
    error, tokens) and prompt tokens; items whose prompt does not fit the context are absent."""
    phase1 = []
    for it in items:
        s = sampling if not ctx.constrained else Sampling(
            n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
            max_tokens=sampling.max_tokens, stop=("[[",))
        req = GenRequest(id=it.id, messages=judge_messages(tpl, it), sampling=s)
        if fits(engine, req, ctx, extra_tokens=_VERDICT_TOKENS + 8 if ctx.constrained else 0):
            phase1.append(req)
    first = engine.generate(phase1)

    out: dict[str, dict] = {}
    if not ctx.constrained:
        for res in first:
            samples = []
            for text, tok in zip(res.texts, res.completion_tokens):
                v = parse_verdict(text)
                samples.append({"judgment": text.strip(), "verdict": v.winner, "error": v.error, "tokens": tok})
            out[res.id] = {"samples": samples, "prompt_tokens": res.prompt_tokens}
        return out

    # Phase 2: force the verdict after each sampled reasoning.
    verdict_s = Sampling(n=1, temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=_VERDICT_TOKENS)
    choice = Constraint(choice=VERDICTS)
    phase2, prefixes = [], {}
    for req, res in zip(phase1, first):
        for i, text in enumerate(res.texts):
            prefix = (strip_reasoning(text) + VERDICT_PREFIX).lstrip()
            rid = f"{req.id}#{i}"
            prefixes[rid] = prefix
            phase2.append(GenRequest(id=rid, messages=req.messages, sampling=verdict_s, constraint=choice,
                                     assistant_prefix=prefix))
    second = {r.id: r for r in engine.generate(phase2)}
    for res in first:
        samples = []
        for i, tok in enumerate(res.completion_tokens):
            rid = f"{res.id}#{i}"
            judgment = prefixes[rid] + second[rid].texts[0]
            v = parse_verdict(judgment)
            samples.append({"judgment": judgment, "verdict": v.winner, "error": v.error,
                            "tokens": tok + second[rid].completion_tokens[0]})
        out[res.id] = {"samples": samples, "prompt_tokens": res.prompt_tokens}
    return out


def process(pairs: list[dict], engine: Engine, ctx: StageContext, cfg: JudgeConfig) -> list[dict]:
    """One row per (pair, order) with every sample, and one correct judgment kept at random."""
    tpl = load_template(cfg.template)
    sampling = Sampling(n=cfg.n, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens)
    items, rows = [], []
    for p in pairs:
        for order, gold, item in both_orders(p["pair_id"], p["instruction"], p["chosen"], p["rejected"]):
            items.append(item)
            rows.append({
                "example_id": item.id, "pair_id": p["pair_id"], "order": order, "gold": gold,
                "instruction": p["instruction"], "answer_a": item.answer_a, "answer_b": item.answer_b,
                "category": p.get("category"),
            })
    judged = judge_items(items, engine, ctx, tpl, sampling)
    for row in rows:
        res = judged.get(row["example_id"])
        if res is None:
            row.update(status=TOO_LONG, samples=[], n_parsed=0, n_correct=0, kept_judgment=None, kept_verdict=None,
                       judge_meta=None)
            continue
        samples = res["samples"]
        correct = [s for s in samples if s["verdict"] == row["gold"]]
        rng = random.Random(f"{ctx.seed}:{row['example_id']}")  # per example: independent of batching
        kept = rng.choice(correct) if correct else None
        row.update(
            status=OK if kept else NO_CORRECT,
            samples=samples,
            n_parsed=sum(s["verdict"] is not None for s in samples),
            n_correct=len(correct),
            kept_judgment=kept["judgment"] if kept else None,
            kept_verdict=kept["verdict"] if kept else None,
            judge_meta=provenance(STAGE, ctx, tpl.id, sampling, res["prompt_tokens"],
                                  sum(s["tokens"] for s in samples), engine),
        )
    return rows


def balance(rows: list[dict], seed: int) -> list[dict]:
    """Downsample the majority verdict so A-wins == B-wins; dropped rows are re-labelled, not lost."""
    kept = [r for r in rows if r["status"] == OK]
    by = {v: sorted((r for r in kept if r["gold"] == v), key=lambda r: r["example_id"]) for v in ("A", "B")}
    k = min(len(by["A"]), len(by["B"]))
    rng = random.Random(seed)
    keep_ids = {r["example_id"] for v in ("A", "B") for r in rng.sample(by[v], k)}
    return [
        {**r, "status": BALANCED_OUT} if r["status"] == OK and r["example_id"] not in keep_ids else r
        for r in rows
    ]


def sample_stats(rows: list[dict]) -> dict:
    """Parse rate, verdict balance and sample accuracy over every sampled judgment."""
    samples = [(s, r["gold"]) for r in rows for s in r["samples"]]
    verdicts = Counter(s["verdict"] for s, _ in samples if s["verdict"])
    errors = Counter(s["error"] for s, _ in samples if s["error"])
    n = len(samples)
    parsed = sum(verdicts.values())
    return {
        "samples": n,
        "parse_rate": round(parsed / n, 4) if n else None,
        "verdict_A": verdicts.get("A", 0),
        "verdict_B": verdicts.get("B", 0),
        "sample_accuracy": round(sum(s["verdict"] == g for s, g in samples) / n, 4) if n else None,
        "parse_errors": dict(errors),
    }
