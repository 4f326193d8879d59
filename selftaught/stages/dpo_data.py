"""Stage 6 (``train.objective=dpo|sft_then_dpo``): kept judgments → preference rows for DPO.

Meta's released recipe adds a DPO stage after SFT: the chosen side is a correct judgment, the
rejected side an incorrect sampled judgment of the same (pair, order). Here the chosen one is the
judge stage's kept judgment (what SFT trains on; a mirror under ``judge.swap``) and the rejected one
is drawn at random (seeded per example) among that row's parsed samples with the wrong verdict; a
row without one is a failure ("no incorrect judgment"), never silently lost. The judge's A/B
balance applies as in ``sft_data``, so the two sets hold the same (pair, order)s where both exist.
With verdict-first judging only kept judgments are explained, so a rejected one is its verdict line:
the preference is then on the verdict, the NLL term on the whole chosen judgment.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

from selftaught.config import JudgeConfig, RunConfig
from selftaught.prompts import load_template
from selftaught.rows import PreferenceRow
from selftaught.stages import judge
from selftaught.stages.base import OK, StageSpec, Upstream
from selftaught.stages.judge import BALANCED_OUT, JudgeItem, balanced_in, judge_messages

STAGE = "dpo_data"
NO_INCORRECT = "no incorrect judgment"


@dataclass(frozen=True)
class DpoBuild:
    judge: JudgeConfig
    seed: int = 0
    thresholds: Optional[dict] = field(default=None)  # the judge's A/B balance (None: judge.balance=false)


def process(judged: list[dict], engine, ctx, cfg: DpoBuild) -> list[dict]:
    tpl = load_template(cfg.judge.template)
    out = []
    for r in judged:
        if r["status"] != OK:
            continue
        head = {"example_id": r["example_id"], "pair_id": r["pair_id"], "order": r["order"], "verdict": r["kept_verdict"]}
        if cfg.thresholds is not None and not balanced_in(r, cfg.seed, cfg.thresholds):
            out.append({**head, "status": BALANCED_OUT})
            continue
        wrong = [s for s in r.get("samples") or [] if s["verdict"] is not None and s["verdict"] != r["gold"]]
        if not wrong:
            out.append({**head, "status": NO_INCORRECT})
            continue
        rejected = random.Random(f"{cfg.seed}:dpo:{r['example_id']}").choice(wrong)
        item = JudgeItem(r["example_id"], r["instruction"], r["answer_a"], r["answer_b"])
        out.append({
            **head,
            "prompt": judge_messages(tpl, item),
            "chosen": [{"role": "assistant", "content": r["kept_judgment"]}],
            "rejected": [{"role": "assistant", "content": rejected["judgment"]}],
            "rejected_verdict": rejected["verdict"],
            "kept_source": r.get("kept_source"),
            "category": r.get("category"),
            "template": tpl.id,
            "judge_meta": r["judge_meta"],
            "status": OK,
        })
    return out


def shard_stats(rows: list[dict], cfg: DpoBuild) -> dict:
    ok = [r for r in rows if r["status"] == OK]
    return {"chosen_A": sum(r["verdict"] == "A" for r in ok), "chosen_B": sum(r["verdict"] == "B" for r in ok),
            "rejected_explained": sum("\n" in r["rejected"][0]["content"].strip() for r in ok),
            "kept_mirror": sum(r["kept_source"] == judge.MIRROR for r in ok),
            "by_order": dict(Counter(r["order"] for r in ok))}


def dpo_build(cfg: RunConfig, up: Upstream) -> DpoBuild:
    return DpoBuild(judge.stage_config(cfg, up), cfg.seed,
                    up.summary_of(judge.STAGE).get("balance") if cfg.judge.balance else None)


SPEC = StageSpec(name=STAGE, row_type=PreferenceRow, process=process, engine=None, shard_stats=shard_stats,
                 summarize=lambda st, c: dict(st), config=dpo_build, sources=(judge.STAGE,),
                 enabled=lambda cfg: cfg.train.objective in ("dpo", "sft_then_dpo"), templates=lambda c: (c.judge.template,))
