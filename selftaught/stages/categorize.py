"""Stage 1: label each instruction with category, complexity (1-10) and expected answer length.

With ``categorize.calibrate`` (constrained), the category is chosen by its first token's
log-probability minus its log-probability for content-free instructions (contextual calibration,
Zhao et al. 2021), then complexity and length are generated after it.

Unparseable labels become category "Other" with ``category_parsed=False`` (counted, and never
selected by category quotas); the row is kept so nothing is lost.
"""
from __future__ import annotations

import logging
from typing import Optional

from selftaught.config import CategorizeConfig
from selftaught.engines import Constraint, Engine, GenRequest, Sampling
from selftaught.engines.base import option_token_ids
from selftaught.parsing import CATEGORY_TAIL, category_regex, parse_category
from selftaught.prompts import load_template
from selftaught.rows import Categorized
from selftaught.stages.base import OK, TOO_LONG, StageContext, StageSpec, fits, provenance
from selftaught.stages.select import category_counts
from selftaught.stats import wilson

STAGE = "categorize"
log = logging.getLogger("selftaught.categorize")


# Content-free stand-ins for an instruction: their scores are the model's prior over categories.
CONTENT_FREE = ("N/A", "", "[MASK]")


def _first_tokens(engine: Engine, categories: list[str]) -> Optional[tuple[str, ...]]:
    """Each category's first token (as the model writes it after "Category:"), or None (with a
    warning) when the engine returns no option log-probabilities (a served model) or two categories
    share a first token (calibrated choice then cannot tell them apart)."""
    tok = getattr(engine, "tokenizer", None)
    if tok is None or engine.name == "openai":
        log.warning("categorize.calibrate: engine %s returns no option log-probabilities; generating labels", engine.name)
        return None
    firsts = tuple(tok.decode(tok.encode(" " + c, add_special_tokens=False)[:1]) for c in categories)
    try:
        option_token_ids(tok, firsts)
    except ValueError:
        firsts = ()
    if len(set(firsts)) < len(categories):
        log.warning("categorize.calibrate: categories share a first token; generating labels")
        return None
    return firsts


def _calibrated_labels(reqs: list[GenRequest], engine: Engine, tpl, cfg: CategorizeConfig,
                       firsts: tuple[str, ...]) -> dict[str, str]:
    """Request id -> "Category: <argmax of logprob - content-free logprob>"."""
    score = Sampling(n=1, temperature=0.0, max_tokens=1)
    choice = Constraint(tokens=firsts)
    free = [GenRequest(f"cf{i}", tpl.messages(instruction=x, categories=cfg.categories), score, choice,
                       assistant_prefix="Category:") for i, x in enumerate(CONTENT_FREE)]
    scored = engine.generate([GenRequest(q.id, q.messages, score, choice, assistant_prefix="Category:") for q in reqs] + free)
    prior = {f: sum(r.option_logprobs[f] for r in scored[len(reqs):]) / len(CONTENT_FREE) for f in firsts}
    out = {}
    for q, r in zip(reqs, scored):
        best = max(range(len(firsts)), key=lambda i: r.option_logprobs[firsts[i]] - prior[firsts[i]])
        out[q.id] = f"Category: {cfg.categories[best]}\n"
    return out


def process(records: list[dict], engine: Engine, ctx: StageContext, cfg: CategorizeConfig) -> list[dict]:
    tpl = load_template(cfg.template)
    sampling = Sampling(n=1, temperature=0.0, max_tokens=cfg.max_tokens)
    constraint = Constraint(regex=category_regex(cfg.categories)) if ctx.constrained else None
    reqs = [
        GenRequest(id=r["id"], messages=tpl.messages(instruction=r["instruction"], categories=cfg.categories),
                   sampling=sampling, constraint=constraint)
        for r in records
    ]
    fitting = [q for q in reqs if fits(engine, q, ctx)]
    firsts = _first_tokens(engine, cfg.categories) if ctx.constrained and cfg.calibrate else None
    if firsts is not None:  # the category by calibrated choice, then complexity and length after it
        labels = _calibrated_labels(fitting, engine, tpl, cfg, firsts)
        tail = Constraint(regex=CATEGORY_TAIL)
        fitting = [GenRequest(q.id, q.messages, sampling, tail, assistant_prefix=labels[q.id]) for q in fitting]
    results = {res.id: res for res in engine.generate(fitting)}
    prefixes = {q.id: q.assistant_prefix for q in fitting}
    out = []
    for rec, req in zip(records, reqs):
        res = results.get(req.id)
        row = dict(rec)
        if res is None:
            row.update(status=TOO_LONG, category="Other", category_parsed=False, complexity=None,
                       expected_length=None, categorize_output=None, categorize_meta=None)
            out.append(row)
            continue
        text = prefixes[req.id] + res.texts[0]
        parsed = parse_category(text, cfg.categories)
        row.update(
            status=OK,
            category=parsed.category or "Other",
            category_parsed=parsed.error is None,
            complexity=parsed.complexity,
            expected_length=parsed.expected_length,
            categorize_output=text,
            categorize_meta=provenance(STAGE, ctx, tpl.id, sampling, res.prompt_tokens, res.completion_tokens[0], engine),
        )
        out.append(row)
    return out


def accuracy(rows: list[dict]) -> dict:
    """Agreement with the rows' reference labels (``data.category_field``), with its Wilson interval;
    empty when no row has one."""
    labelled = [r for r in rows if r.get("reference_category")]
    return _accuracy(sum(r["category"] == r["reference_category"] for r in labelled), len(labelled))


def _accuracy(hits: int, n: int) -> dict:
    if not n:
        return {}
    lo, hi = wilson(hits, n)
    return {"reference_labelled": n, "category_accuracy": round(hits / n, 4),
            "category_accuracy_lo": round(lo, 4), "category_accuracy_hi": round(hi, 4)}


def shard_stats(rows: list[dict], cfg: CategorizeConfig) -> dict:
    ok = [r for r in rows if r.get("status") == OK]
    labelled = [r for r in ok if r.get("reference_category")]
    return {"unparsed": sum(not r["category_parsed"] for r in ok), "categories": category_counts(ok),
            "reference_labelled": len(labelled), "reference_hits": sum(r["category"] == r["reference_category"] for r in labelled)}


def summarize(st: dict, cfg: CategorizeConfig) -> dict:
    return {"unparsed": st.get("unparsed", 0), "categories": dict(sorted((st.get("categories") or {}).items())),
            **_accuracy(st.get("reference_hits", 0), st.get("reference_labelled", 0))}


SPEC = StageSpec(name=STAGE, row_type=Categorized, process=process, engine="generator", meta_fields=("categorize_meta",),
                 shard_stats=shard_stats, summarize=summarize, scope="run",
                 config=lambda cfg, up: cfg.categorize, templates=lambda c: (c.template,))
