"""Absolute grading (Prometheus direct assessment): a response scored 1-5 against a rubric.

``selftaught judge judge_file.mode=absolute`` runs this stage on a file of single responses. The
judge writes a feedback, then ``[RESULT] n``; the parser (``parsing.parse_score``) is strict, and an
unparsed grading is a score of None with its reason, never a guess. With constrained decoding the
feedback is generated up to ``[RESULT]`` and the score is a forced one-token choice among 1..5 whose
log-probabilities also give ``expected_score`` (the probability-weighted mean, a finer signal than
the argmax). Rows with a human score get Pearson and Spearman correlations, each with its 95%
Fisher-z interval (none below 4 items).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Optional

from selftaught import io
from selftaught.engines import Constraint, Engine, GenRequest, Sampling
from selftaught.parsing import RESULT_MARKER, SCORES, parse_score
from selftaught.prompts import PROMPTS_DIR, Template, load_template
from selftaught.rows import Grade
from selftaught.stages.base import OK, TOO_LONG, StageContext, StageSpec, fits, provenance
from selftaught.stages.verdicts import Judging, judging  # the same file knobs, eval budget and decoding
from selftaught.stats import correlation_interval, pearson, spearman

STAGE = "grades"
DEFAULT_RUBRIC = (PROMPTS_DIR / "default_rubric.txt").read_text(encoding="utf-8").strip()
_SCORE_CHOICE = Constraint(tokens=tuple(str(s) for s in SCORES))
SCORE_ROOM = 8  # tokens the forced "[RESULT] n" takes after the feedback


def grade_messages(tpl: Template, row: dict) -> list[dict]:
    return tpl.messages(instruction=row["instruction"], response=row["response"],
                        rubric=row.get("rubric") or DEFAULT_RUBRIC, reference=row.get("reference"))


def _expected(option_logprobs: Optional[dict[str, float]]) -> Optional[float]:
    if not option_logprobs:
        return None
    ps = {int(k): math.exp(v) for k, v in option_logprobs.items()}
    z = sum(ps.values())
    return round(sum(k * p for k, p in ps.items()) / z, 4) if z > 0 else None


def grade_sampling(max_tokens: int, constrained: bool, frequency_penalty: float = 0.0, n: int = 1,
                   temperature: float = 0.0, top_p: float = 1.0) -> Sampling:
    """The feedback's decoding (greedy by default; constrained: it stops at the marker, the score is
    chosen after)."""
    return Sampling(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                    frequency_penalty=frequency_penalty, stop=(RESULT_MARKER,) if constrained else ())


def sample_grades(rows: list[dict], engine: Engine, ctx: StageContext, tpl: Template, sampling: Sampling,
                  constrained: bool) -> dict[str, dict]:
    """``sampling.n`` gradings of each row: ``{row id: {"samples": [{feedback, text, score, error,
    expected_score, tokens}], "prompt_tokens": int}}``; rows whose prompt does not fit are absent.
    Constrained: the score after each feedback is a one-token choice among 1..5, drawn at the
    feedback's temperature (greedy: the most likely)."""
    reqs = {r["id"]: GenRequest(r["id"], grade_messages(tpl, r), sampling) for r in rows}
    fitting = [q for q in reqs.values() if fits(engine, q, ctx, extra_tokens=SCORE_ROOM if constrained else 0)]
    first = {res.id: res for res in engine.generate(fitting)}
    out: dict[str, dict] = {}
    if not constrained:
        for rid, res in first.items():
            samples = []
            for text, tok in zip(res.texts, res.completion_tokens):
                s = parse_score(text.strip())
                samples.append({"feedback": s.feedback, "text": text.strip(), "score": s.value, "error": s.error,
                                "expected_score": None, "tokens": tok})
            out[rid] = {"samples": samples, "prompt_tokens": res.prompt_tokens}
        return out
    prefixes = {f"{rid}#{i}": f"{t.split(RESULT_MARKER)[0].strip()} {RESULT_MARKER} ".lstrip()
                for rid, res in first.items() for i, t in enumerate(res.texts)}
    choice = Sampling(n=1, temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=1)
    second = {res.id: res for res in engine.generate([
        GenRequest(key, reqs[key.rsplit("#", 1)[0]].messages, choice, _SCORE_CHOICE, assistant_prefix=p)
        for key, p in prefixes.items()])}
    for rid, res in first.items():
        samples = []
        for i, tok in enumerate(res.completion_tokens):
            key = f"{rid}#{i}"
            text = prefixes[key] + second[key].texts[0]
            s = parse_score(text)
            samples.append({"feedback": s.feedback, "text": text, "score": s.value, "error": s.error,
                            "expected_score": _expected(second[key].option_logprobs),
                            "tokens": tok + second[key].completion_tokens[0]})
        out[rid] = {"samples": samples, "prompt_tokens": res.prompt_tokens}
    return out


def grade(rows: list[dict], engine: Engine, ctx: StageContext, tpl: Template, sampling: Sampling,
          constrained: bool) -> dict[str, dict]:
    """One grading of each row with ``sampling`` (greedy: ``grade_sampling``, which the caller's
    provenance records too): ``{row id: {feedback, text, score, error, expected_score, tokens,
    prompt_tokens}}``; rows whose prompt does not fit the context are absent."""
    got = sample_grades(rows, engine, ctx, tpl, sampling, constrained)
    return {rid: {**g["samples"][0], "prompt_tokens": g["prompt_tokens"]} for rid, g in got.items()}


def process(rows: list[dict], engine: Engine, ctx: StageContext, c: Judging) -> list[dict]:
    tpl = load_template(c.file.absolute_template)
    ctx = replace(ctx, constrained=c.constrained)
    sampling = grade_sampling(c.eval.max_tokens, c.constrained, c.eval.frequency_penalty)
    graded = grade(rows, engine, ctx, tpl, sampling, c.constrained)
    out = []
    for r in rows:
        row = {k: r.get(k) for k in ("id", "source", "instruction", "response", "rubric", "reference", "human_score")}
        g = graded.get(r["id"])
        if g is None:
            out.append({**row, "status": TOO_LONG})
            continue
        out.append({**row, "feedback": g["feedback"], "grading": g["text"], "score": g["score"], "score_error": g["error"],
                    "expected_score": g["expected_score"], "status": OK,
                    "grade_meta": provenance(STAGE, ctx, tpl.id, sampling, g["prompt_tokens"], g["tokens"], engine)})
    return out


def shard_stats(rows: list[dict], c: Judging) -> dict:
    ok = [r for r in rows if r["status"] == OK]
    return {"graded": len(ok), "parsed": sum(r["score"] is not None for r in ok),
            "scores": dict(Counter(str(r["score"]) for r in ok if r["score"] is not None)),
            "score_errors": dict(Counter(r["score_error"] for r in ok if r["score_error"])),
            "with_human": sum(r.get("human_score") is not None for r in ok)}


def summarize(st: dict, c: Judging) -> dict:
    n, parsed = st.get("graded", 0), st.get("parsed", 0)
    scores = {s: (st.get("scores") or {}).get(str(s), 0) for s in SCORES}
    return {"parse_rate": round(parsed / n, 4) if n else None, "scores": scores,
            "mean_score": round(sum(k * v for k, v in scores.items()) / parsed, 4) if parsed else None,
            "score_errors": dict(sorted((st.get("score_errors") or {}).items())), "with_human_score": st.get("with_human", 0),
            "constrained": c.constrained}


def correlations(rows: list[dict]) -> dict:
    """Pearson and Spearman of the judge's scores with the human ones (parsed gradings only), each
    with its Fisher-z interval; with constrained decoding also of ``expected_score``."""
    out: dict = {}
    for name, key in (("score", "score"), ("expected_score", "expected_score")):
        pts = [(r[key], r["human_score"]) for r in rows if r.get(key) is not None and r.get("human_score") is not None]
        if not pts:
            continue
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        for fn in (pearson, spearman):
            v = fn(xs, ys)
            ci = correlation_interval(v, len(pts), rank=fn is spearman)
            m = f"{fn.__name__}" if name == "score" else f"{fn.__name__}_expected"
            out[m] = None if v is None else round(v, 4)
            if ci is not None:
                out[f"{m}_lo"], out[f"{m}_hi"] = round(ci[0], 4), round(ci[1], 4)
        out[f"n_{name}"] = len(pts)
    return out


def inputs(c: Judging, sd, shard_size: int) -> list[Path]:
    return sd.write_inputs(io.iter_graded_responses(c.file), shard_size)


def finalize(sd, c: Judging, ctx: StageContext) -> dict:
    rows = [r for f in sd.data_files() for r in io.read_records(f, ["score", "expected_score", "human_score"])]
    return {"model": ctx.model_path, "file": c.file.path, **sd.rejected(), "correlation": correlations(rows)}


def format_summary(s: dict) -> str:
    cor = s.get("correlation") or {}

    def ci(m: str) -> str:
        return f"{cor[m]} [{cor.get(f'{m}_lo')}, {cor.get(f'{m}_hi')}]" if cor.get(m) is not None else "-"

    lines = [f"graded {s['in']} responses of {s.get('file')} with {s.get('model')} ({s['seconds']} s, "
             f"{s['prompt_tokens']} prompt + {s['completion_tokens']} completion tokens)",
             f"  scores {s.get('scores')}  mean {s.get('mean_score')}  parse rate {s.get('parse_rate')} "
             f"{s.get('score_errors') or ''}  failed {s['failed']}  rejected lines {s.get('rejected_lines', 0)}"]
    if cor:
        lines.append(f"  vs human scores (n={cor.get('n_score')}): pearson {ci('pearson')}  spearman {ci('spearman')}"
                     + (f"  expected-score pearson {ci('pearson_expected')}" if "pearson_expected" in cor else ""))
    for k, p in (s.get("outputs") or {}).items():
        lines.append(f"  {k}: {p}")
    return "\n".join(lines)


SPEC = StageSpec(name=STAGE, row_type=Grade, process=process, engine="judge", meta_fields=("grade_meta",),
                 config=judging, templates=lambda c: (c.file.absolute_template,), inputs=inputs, finalize=finalize,
                 hash_extra=lambda cfg: io.file_fingerprint(cfg.judge_file.path), shard_stats=shard_stats,
                 summarize=summarize, describe=lambda c: "absolute, 1-5")
