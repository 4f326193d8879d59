"""Stage 6 (``train.objective=dpo|sft_then_dpo``): kept judgments → preference rows for DPO.

Meta's released recipe adds a DPO stage after SFT: the chosen side is a correct judgment, the
rejected side an incorrect sampled judgment of the same (pair, order). Here the chosen one is the
judge stage's kept judgment (what SFT trains on; a mirror under ``judge.swap``) and the rejected one
is drawn at random (seeded per example) among that row's parsed samples with the wrong verdict; a
row without one is a failure ("no incorrect judgment"), never silently lost. The judge's A/B
balance applies as in ``sft_data``, so the two sets hold the same (pair, order)s where both exist.
With verdict-first judging only kept judgments are explained, so a rejected one is its verdict line:
the preference is then on the verdict, the NLL term on the whole chosen judgment.

Under ``judge.mode=verify`` the rows come from ``verify_pairs``: one per answer, in the verify prompt, the kept
(correct) yes/no judgment against an incorrect one sampled for the same answer. With ``judge.explanation=none``
both are verdict lines, and the incorrect one is the other verdict's line whether or not the judge sampled it (it
is the only incorrect target there is), so no row lacks one; the yes/no balance applies as in ``sft_data``.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

from selftaught.config import JudgeConfig, RunConfig
from selftaught.parsing import VERIFY_LABELS
from selftaught.prompts import load_template
from selftaught.rows import PreferenceRow
from selftaught.stages import judge, verify_pairs
from selftaught.stages.base import OK, StageSpec, Upstream
from selftaught.stages.judge import BALANCED_OUT, VERIFY, JudgeItem, balanced_in, judge_messages, target

STAGE = "dpo_data"
NO_INCORRECT = "no incorrect judgment"


@dataclass(frozen=True)
class DpoBuild:
    judge: JudgeConfig
    seed: int = 0
    thresholds: Optional[dict] = field(default=None)  # the judge's A/B balance (None: judge.balance=false)
    verify_thresholds: Optional[dict] = field(default=None)  # verify_pairs' yes/no balance (None: keep every row)


def _rejected(r: dict, cfg: DpoBuild, verify: bool) -> Optional[dict]:
    """An incorrect judgment of this row (its ``judgment`` as the rejected target, its ``verdict``), or None."""
    if verify and cfg.judge.explained == "none":
        other = next(v for v in VERIFY_LABELS if v != r["gold"])
        return {"judgment": VERIFY.line(other), "verdict": other}
    wrong = [s for s in r.get("samples") or [] if s["verdict"] is not None and s["verdict"] != r["gold"]]
    if not wrong:
        return None
    s = random.Random(f"{cfg.seed}:dpo:{r['example_id']}").choice(wrong)
    return {"judgment": target(s, VERIFY, cfg.judge) if verify else s["judgment"], "verdict": s["verdict"]}


@dataclass(frozen=True)
class _Kind:
    """What differs between a judge row (pairwise, per (pair, order)) and a verify_pairs row (per answer)."""
    verify: bool
    order: str  # "AB" | "BA", or the answer judged: "chosen" | "rejected"
    dropped: Optional[str]  # the balance's failure reason when the row is balanced out, else None
    template: str  # the prompt's template id
    prompt: list[dict]
    meta: dict


def _kind(r: dict, cfg: DpoBuild, pairwise_tpl, verify_tpl) -> _Kind:
    if r["gold"] in VERIFY_LABELS:
        t = cfg.verify_thresholds
        out = t is not None and not verify_pairs.balanced_in(r, cfg.seed, t)
        item = JudgeItem(r["example_id"], r["instruction"], r["response"])
        return _Kind(True, r["side"], verify_pairs.BALANCED_OUT if out else None, verify_tpl.id,
                     judge_messages(verify_tpl, item, VERIFY), r["verify_meta"])
    out = cfg.thresholds is not None and not balanced_in(r, cfg.seed, cfg.thresholds)
    item = JudgeItem(r["example_id"], r["instruction"], r["answer_a"], r["answer_b"])
    return _Kind(False, r["order"], BALANCED_OUT if out else None, pairwise_tpl.id, judge_messages(pairwise_tpl, item),
                 r["judge_meta"])


def process(judged: list[dict], engine, ctx, cfg: DpoBuild) -> list[dict]:
    """Kept judge rows (pairwise: per (pair, order)) and kept verify_pairs rows (per answer) -> preference rows."""
    pairwise_tpl, verify_tpl = load_template(cfg.judge.template), load_template(cfg.judge.verify_template)
    out = []
    for r in judged:
        if r["status"] != OK:
            continue
        k = _kind(r, cfg, pairwise_tpl, verify_tpl)
        head = {"example_id": r["example_id"], "pair_id": r["pair_id"], "order": k.order, "verdict": r["kept_verdict"]}
        if k.dropped:
            out.append({**head, "status": k.dropped})
            continue
        rejected = _rejected(r, cfg, k.verify)
        if rejected is None:
            out.append({**head, "status": NO_INCORRECT})
            continue
        out.append({
            **head,
            "prompt": k.prompt,
            "chosen": [{"role": "assistant", "content": r["kept_judgment"]}],
            "rejected": [{"role": "assistant", "content": rejected["judgment"]}],
            "rejected_verdict": rejected["verdict"],
            "kept_source": r.get("kept_source", "sampled"),
            "category": r.get("category"),
            "template": k.template,
            "judge_meta": k.meta,
            "status": OK,
        })
    return out


def shard_stats(rows: list[dict], cfg: DpoBuild) -> dict:
    ok = [r for r in rows if r["status"] == OK]
    return {"chosen_A": sum(r["verdict"] == "A" for r in ok), "chosen_B": sum(r["verdict"] == "B" for r in ok),
            "chosen_yes": sum(r["verdict"] == "Yes" for r in ok), "chosen_no": sum(r["verdict"] == "No" for r in ok),
            "rejected_explained": sum("\n" in r["rejected"][0]["content"].strip() for r in ok),
            "kept_mirror": sum(r["kept_source"] == judge.MIRROR for r in ok),
            "by_order": dict(Counter(r["order"] for r in ok))}


def dpo_build(cfg: RunConfig, up: Upstream) -> DpoBuild:
    balance = cfg.judge.balance
    # Each mode's knobs alone (as its stage sees them): a knob of the other mode redoes nothing here.
    stage = verify_pairs if cfg.judge.mode == "verify" else judge
    return DpoBuild(stage.stage_config(cfg, up), cfg.seed,
                    up.summary_of(judge.STAGE).get("balance") if balance else None,
                    up.summary_of(verify_pairs.STAGE).get("balance") if balance else None)


SPEC = StageSpec(name=STAGE, row_type=PreferenceRow, process=process, engine=None, shard_stats=shard_stats,
                 summarize=lambda st, c: dict(st), config=dpo_build, sources=(judge.STAGE, verify_pairs.STAGE),
                 enabled=lambda cfg: cfg.train.objective in ("dpo", "sft_then_dpo"),
                 templates=lambda c: (c.judge.verify_template if c.judge.mode == "verify" else c.judge.template,))
