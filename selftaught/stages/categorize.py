"""Stage 1: label each instruction with category, complexity (1-10) and expected answer length.

Unparseable labels become category "Other" with ``category_parsed=False`` (counted, and never
selected by category quotas); the row is kept so nothing is lost.
"""
from __future__ import annotations

from selftaught.config import CategorizeConfig
from selftaught.engines import Constraint, Engine, GenRequest, Sampling
from selftaught.parsing import category_regex, parse_category
from selftaught.prompts import load_template
from selftaught.stages.base import OK, TOO_LONG, StageContext, fits, provenance

STAGE = "categorize"


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
    results = {res.id: res for res in engine.generate(fitting)}
    out = []
    for rec, req in zip(records, reqs):
        res = results.get(req.id)
        row = dict(rec)
        if res is None:
            row.update(status=TOO_LONG, category="Other", category_parsed=False, complexity=None,
                       expected_length=None, categorize_output=None, categorize_meta=None)
            out.append(row)
            continue
        text = res.texts[0]
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
