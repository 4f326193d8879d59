"""Use the judge: decide a file of response pairs (``selftaught judge``), both orders, debiased.

Each pair is judged with response_a shown first (order AB) and second (order BA), greedy, in the
judge's own template and format. The decision:

- both orders prefer the same response: it wins (``decided_by: agreement``);
- they disagree, or one does not parse: ``tie``, or with ``judge_file.decide=logprob`` the verdict
  log-odds averaged over both orders decide (the position bias cancels; ``decided_by: logprob``);
- ``judge_file.majority_k = k > 1``: k more samples per order; the majority of the 2k votes
  decides instead (``decided_by: majority``; an even split is a tie).
- ``judge_file.decide=verify`` (a judge trained with ``judge.mode=verify``): each response is asked "does it
  answer the instruction?" alone, and the higher P(yes) wins (``decided_by: verify``): no order, no position.

A pair whose prompt does not fit the context in either order is a failure ("prompt too long"),
never a guess. The stage runs on the same shard runner as the loop's stages (an engine pool on Ray
or in-process), so a rerun resumes at its first uncommitted shard.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from selftaught import io
from selftaught.config import EvalConfig, JudgeFileConfig, RunConfig, eval_config
from selftaught.config import constrained as default_constrained
from selftaught.engines import Engine
from selftaught.prompts import load_template
from selftaught.rows import Verdict
from selftaught.stages.base import OK, TOO_LONG, StageContext, StageSpec, Upstream, provenance
from selftaught.stages.judge import VERIFY, JudgeDecoding, JudgeItem, budget, both_orders, preferred, sample

STAGE = "verdicts"
A, B, TIE = "response_a", "response_b", "tie"


@dataclass(frozen=True)
class Judging:
    """What ``selftaught judge`` runs with, in either mode (``grades`` uses it too)."""

    file: JudgeFileConfig
    eval: EvalConfig  # template, format, token budget, sampling of the votes (resolved: ``eval_config``)
    constrained: bool


def judging(cfg: RunConfig, up: Upstream) -> Judging:
    f, c = cfg.judge_file, cfg.judge_file.constrained
    # Where the outputs go is not what they depend on: left out of the hash.
    return Judging(replace(f, path=io.input_path(f.path), out_dir=None, dpo_out=None), eval_config(cfg),
                   default_constrained(cfg) if c is None else c)


def prompt_instruction(instruction: str, reference: Optional[str]) -> str:
    """The instruction the judge sees: a reference answer, when given, follows it, labelled."""
    return instruction if not reference else f"{instruction}\n\n[Reference answer]\n{reference}"


def _prefers(verdict: Optional[str], order: str) -> Optional[str]:
    """Which response a verdict picks: A in order AB is response_a; A in order BA is response_b."""
    i = preferred(verdict, order)
    return None if i is None else (A, B)[i]


def decide(ab: Optional[str], ba: Optional[str], margin_ab: Optional[float], margin_ba: Optional[float],
           votes: Optional[Counter], rule: str) -> tuple[str, str]:
    """(winner, decided_by) of one pair from its two greedy verdicts (as ``_prefers`` maps them)."""
    if votes is not None:
        if votes[A] == votes[B]:
            return TIE, "majority"
        return (A if votes[A] > votes[B] else B), "majority"
    if ab is not None and ab == ba:
        return ab, "agreement"
    if rule == "logprob" and margin_ab is not None and margin_ba is not None:
        score = margin_ab - margin_ba  # response_a is A in AB and B in BA
        if score != 0:
            return (A if score > 0 else B), "logprob"
    return TIE, "tie"


def _verified(pairs: list[dict], engine: Engine, ctx: StageContext, c: Judging) -> list[dict]:
    """``judge_file.decide=verify`` (a judge trained with ``judge.mode=verify``): each response asked "does it answer
    the instruction?" alone, greedy, the verdict token forced; the one with the higher log p(Yes) - log p(No)
    wins (equal: a tie). No order is shown, so the two orders agree by construction."""
    tpl = load_template(c.eval.verify_template)
    dec = JudgeDecoding(format="verdict_first", constrained=True, verdict_only=True)
    items = [JudgeItem(id=f"{p['id']}/{side}", instruction=prompt_instruction(p["instruction"], p.get("reference")),
                       answer_a=p[side]) for p in pairs for side in (A, B)]
    got = sample(items, 1, engine, ctx, tpl, dec, form=VERIFY)
    out = []
    for p in pairs:
        row = {"id": p["id"], "source": p.get("source"), "instruction": p["instruction"], "response_a": p["response_a"],
               "response_b": p["response_b"], "reference": p.get("reference")}
        ra, rb = got.get(f"{p['id']}/{A}"), got.get(f"{p['id']}/{B}")
        if ra is None or rb is None:
            out.append({**row, "status": TOO_LONG})
            continue
        a, b = ra["samples"][0], rb["samples"][0]
        diff = a["margin"] - b["margin"]
        winner = A if diff > 0 else B if diff < 0 else TIE
        judgment = f"[response_a] {a['judgment']}\n[response_b] {b['judgment']}"
        ab = {A: "A", B: "B"}.get(winner)
        out.append({**row, "winner": winner, "decided_by": "verify" if winner != TIE else "tie", "agree": winner != TIE,
                    "verdict_AB": ab, "verdict_BA": {"A": "B", "B": "A"}.get(ab), "judgment_AB": judgment,
                    "judgment_BA": judgment, "margin_AB": round(diff, 4), "margin_BA": round(-diff, 4),
                    "votes_a": None, "votes_b": None,
                    "verdict_meta": provenance(STAGE, ctx, tpl.id, dec.verdict_sampling(1),
                                               ra["prompt_tokens"] + rb["prompt_tokens"], 2, engine),
                    "status": OK})
    return out


def process(pairs: list[dict], engine: Engine, ctx: StageContext, c: Judging) -> list[dict]:
    ctx = replace(ctx, constrained=c.constrained)
    if c.file.decide == "verify":
        return _verified(pairs, engine, ctx, c)
    tpl = load_template(c.eval.template)
    greedy = JudgeDecoding(format=c.eval.format, constrained=c.constrained, temperature=0.0, top_p=1.0,
                           max_tokens=c.eval.max_tokens, frequency_penalty=c.eval.frequency_penalty)
    items = [it for p in pairs for it in both_orders(p["id"], prompt_instruction(p["instruction"], p.get("reference")),
                                                     p["response_a"], p["response_b"])]
    judged = sample([it for _, _, it in items], 1, engine, ctx, tpl, greedy)
    voted: dict = {}
    if c.file.majority_k > 1:
        vote = replace(greedy, temperature=c.eval.temperature, top_p=c.eval.top_p)
        voted = sample([it for _, _, it in items], c.file.majority_k, engine, ctx, tpl, vote, explain="none")
    out = []
    for p in pairs:
        row = {"id": p["id"], "source": p.get("source"), "instruction": p["instruction"], "response_a": p["response_a"],
               "response_b": p["response_b"], "reference": p.get("reference")}
        res = {o: judged.get(f"{p['id']}/{o}") for o in ("AB", "BA")}
        if any(r is None for r in res.values()):
            out.append({**row, "status": TOO_LONG})
            continue
        s = {o: res[o]["samples"][0] for o in res}
        votes = None
        if voted:
            votes = Counter(_prefers(v["verdict"], o) for o in res for v in voted[f"{p['id']}/{o}"]["samples"])
        winner, how = decide(_prefers(s["AB"]["verdict"], "AB"), _prefers(s["BA"]["verdict"], "BA"),
                             s["AB"]["margin"], s["BA"]["margin"], votes, c.file.decide)
        tokens = sum(x["tokens"] for x in s.values())
        prompt_tokens = sum(r["prompt_tokens"] for r in res.values())
        if voted:
            tokens += sum(v["tokens"] for o in res for v in voted[f"{p['id']}/{o}"]["samples"])
            prompt_tokens *= 2
        out.append({
            **row, "winner": winner, "decided_by": how,
            "agree": s["AB"]["verdict"] is not None and _prefers(s["AB"]["verdict"], "AB") == _prefers(s["BA"]["verdict"], "BA"),
            **{f"{k}_{o}": s[o][k] for o in ("AB", "BA") for k in ("verdict", "judgment", "margin")},
            "votes_a": votes[A] if votes is not None else None, "votes_b": votes[B] if votes is not None else None,
            "verdict_meta": provenance(STAGE, ctx, tpl.id, greedy.text_sampling(1, budget(greedy)), prompt_tokens,
                                       tokens, engine),
            "status": OK,
        })
    return out


def shard_stats(rows: list[dict], c: Judging) -> dict:
    ok = [r for r in rows if r["status"] == OK]
    return {"winners": dict(Counter(r["winner"] for r in ok)), "decided_by": dict(Counter(r["decided_by"] for r in ok)),
            "agree": sum(bool(r["agree"]) for r in ok), "parsed_both": sum(r["verdict_AB"] is not None and r["verdict_BA"]
                                                                       is not None for r in ok)}


def summarize(st: dict, c: Judging) -> dict:
    from selftaught.stats import wilson

    n = st.get("parsed_both", 0)
    ci = wilson(st.get("agree", 0), n)
    winners = st.get("winners") or {}
    return {"winners": {k: winners.get(k, 0) for k in (A, B, TIE)}, "decided_by": dict(sorted((st.get("decided_by") or {}).items())),
            # both orders parsed and preferred the same response: the judge's position consistency on this file
            "agreement_rate": round(st.get("agree", 0) / n, 4) if n else None,
            "agreement_rate_ci": [round(ci[0], 4), round(ci[1], 4)] if ci else None, "decide": c.file.decide,
            "majority_k": c.file.majority_k, "constrained": c.constrained}


def inputs(c: Judging, sd, shard_size: int) -> list[Path]:
    return sd.write_inputs(io.iter_response_pairs(c.file), shard_size)


def finalize(sd, c: Judging, ctx: StageContext) -> dict:
    return {"model": ctx.model_path, "file": c.file.path, **sd.rejected()}


def format_summary(s: dict) -> str:
    w = s.get("winners") or {}
    ci = s.get("agreement_rate_ci")
    lines = [f"judged {s['in']} pairs of {s.get('file')} with {s.get('model')} ({s['seconds']} s, "
             f"{s['prompt_tokens']} prompt + {s['completion_tokens']} completion tokens)",
             f"  response_a {w.get(A, 0)}  response_b {w.get(B, 0)}  tie {w.get(TIE, 0)}  failed {s['failed']} "
             f"{s.get('failures') or ''}  rejected lines {s.get('rejected_lines', 0)}",
             f"  both orders agree: {s.get('agreement_rate')}" + (f" [{ci[0]}, {ci[1]}]" if ci else "")
             + f"  decided by {s.get('decided_by')}"]
    for k, p in (s.get("outputs") or {}).items():
        lines.append(f"  {k}: {p}")
    return "\n".join(lines)


def dpo_rows(rows: Iterable[dict]) -> list[dict]:
    """TRL's conversational preference format: the decided pairs (ties and failures left out)."""
    out = []
    for r in rows:
        if r.get("status", OK) != OK or r["winner"] not in (A, B):
            continue
        loser = B if r["winner"] == A else A
        out.append({"prompt": [{"role": "user", "content": r["instruction"]}],
                    "chosen": [{"role": "assistant", "content": r[r["winner"]]}],
                    "rejected": [{"role": "assistant", "content": r[loser]}], "id": r["id"]})
    return out


SPEC = StageSpec(name=STAGE, row_type=Verdict, process=process, engine="judge", meta_fields=("verdict_meta",),
                 config=judging, inputs=inputs, finalize=finalize,
                 templates=lambda c: (c.eval.verify_template if c.file.decide == "verify" else c.eval.template,),
                 hash_extra=lambda cfg: io.file_fingerprint(cfg.judge_file.path), shard_stats=shard_stats,
                 summarize=summarize, describe=lambda c: f"2 orders, decide={c.file.decide}")
