"""Stage 3: synthetic preference pairs (chosen = answer to x; rejected = good answer to a modified x').

Two requests per instruction: the plain answer, and the modify prompt that writes x' and its
answer in marked blocks. Constrained decoding forces the opening marker (as an assistant prefix)
and the block structure with bounded field lengths (regex); unconstrained outputs are parsed the same strict way.
"""
from __future__ import annotations

from selftaught.config import PairsConfig
from selftaught.engines import Constraint, Engine, GenRequest, Sampling
from selftaught.parsing import MOD_START, modify_regex, parse_modified, same_text
from selftaught.prompts import load_template
from selftaught.stages.base import OK, TOO_LONG, StageContext, fits, provenance

STAGE = "pairs"


def process(records: list[dict], engine: Engine, ctx: StageContext, cfg: PairsConfig) -> list[dict]:
    answer_tpl, modify_tpl = load_template(cfg.answer_template), load_template(cfg.modify_template)
    answer_s = Sampling(n=1, temperature=cfg.temperature, top_p=1.0, max_tokens=cfg.max_tokens)
    modify_s = Sampling(n=1, temperature=cfg.temperature, top_p=1.0, max_tokens=cfg.modify_max_tokens)
    prefix = MOD_START + "\n" if ctx.constrained else ""
    constraint = (Constraint(regex=modify_regex(cfg.max_instruction_chars, cfg.max_response_chars))
                  if ctx.constrained else None)

    requests, pending = [], []
    for r in records:
        ans = GenRequest(id=f"{r['id']}/answer", messages=answer_tpl.messages(instruction=r["instruction"]),
                         sampling=answer_s)
        mod = GenRequest(id=f"{r['id']}/modify", messages=modify_tpl.messages(instruction=r["instruction"]),
                         sampling=modify_s, constraint=constraint, assistant_prefix=prefix)
        ok = fits(engine, ans, ctx) and fits(engine, mod, ctx)
        pending.append((r, ans, mod, ok))
        if ok:
            requests += [ans, mod]
    results = {res.id: res for res in engine.generate(requests)}

    out = []
    for r, ans, mod, ok in pending:
        row = {
            "pair_id": r["id"], "instruction_id": r["id"], "instruction": r["instruction"],
            "source": r.get("source"), "category": r.get("category"), "complexity": r.get("complexity"),
            "modified_instruction": None, "chosen": None, "rejected": None,
            "modify_output": None, "chosen_meta": None, "rejected_meta": None,
        }
        if not ok:
            out.append({**row, "status": TOO_LONG})
            continue
        a, m = results[ans.id], results[mod.id]
        chosen = a.texts[0].strip()
        modify_text = prefix + m.texts[0]
        parsed = parse_modified(modify_text, r["instruction"])
        row.update(
            modify_output=modify_text,
            chosen=chosen or None,
            chosen_meta={**provenance(STAGE, ctx, answer_tpl.id, answer_s, a.prompt_tokens, a.completion_tokens[0], engine),
                         "finish_reason": a.finish_reasons[0]},
            rejected_meta={**provenance(STAGE, ctx, modify_tpl.id, modify_s, m.prompt_tokens, m.completion_tokens[0], engine),
                           "finish_reason": m.finish_reasons[0]},
        )
        if not chosen:
            status = "empty chosen answer"
        elif parsed.error:
            status = ("truncated: " if m.finish_reasons[0] == "length" else "") + parsed.error
        elif same_text(chosen, parsed.response):
            status = "chosen and rejected identical"
        else:
            status = OK
            row.update(modified_instruction=parsed.instruction, rejected=parsed.response)
        out.append({**row, "status": status})
    return out
