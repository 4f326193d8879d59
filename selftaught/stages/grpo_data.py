"""Stage ``grpo_data`` (``train.objective=grpo|sft_then_grpo``): the round's pairs → the prompts GRPO samples.

No judge runs here: online RL samples its own judgments while it trains (``training.grpo``). Each pair gives two
prompts in the judge's own template, its two presentations: the pair in order AB (label ``A``) and BA (label
``B``) under ``judge.mode=pairwise|both``, or its chosen answer (label ``Yes``) and its rejected answer (label
``No``) alone under ``judge.mode=verify``. The two rows of a pair are written next to each other; the trainer's
sampler keeps them in one generation batch, so the consistency reward sees both.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from selftaught.config import JudgeConfig
from selftaught.parsing import VERIFY_FORMAT
from selftaught.prompts import load_template
from selftaught.rows import GrpoPrompt
from selftaught.stages import pairs as pairs_stage
from selftaught.stages.base import OK, StageSpec, Upstream
from selftaught.stages.judge import VERIFY, JudgeItem, both_orders, judge_messages
from selftaught.stages.verify_pairs import SIDES

STAGE = "grpo_data"
GRPO_OBJECTIVES = ("grpo", "sft_then_grpo")


@dataclass(frozen=True)
class GrpoBuild:
    verify: bool  # judge.mode=verify: each answer alone, yes/no
    template: str  # the judge's pairwise template, or its verify template
    format: str  # judge.format (pairwise)


def process(pairs: list[dict], engine, ctx, cfg: GrpoBuild) -> list[dict]:
    tpl = load_template(cfg.template)
    out = []
    for p in pairs:
        head = {"pair_id": p["pair_id"], "category": p.get("category"), "rejected_source": p.get("rejected_source"),
                "template": tpl.id, "status": OK}
        if cfg.verify:
            for side, label in SIDES.items():
                item = JudgeItem(id=f"{p['pair_id']}/{side}", instruction=p["instruction"], answer_a=p[side])
                out.append({**head, "example_id": item.id, "order": side, "label": label, "form": VERIFY_FORMAT,
                            "prompt": judge_messages(tpl, item, VERIFY)})
        else:
            for order, gold, item in both_orders(p["pair_id"], p["instruction"], p["chosen"], p["rejected"]):
                out.append({**head, "example_id": item.id, "order": order, "label": gold, "form": cfg.format,
                            "prompt": judge_messages(tpl, item)})
    return out


def shard_stats(rows: list[dict], cfg: GrpoBuild) -> dict:
    return {"by_label": dict(Counter(r["label"] for r in rows if r["status"] == OK))}


def stage_config(cfg, up: Upstream) -> GrpoBuild:
    j: JudgeConfig = cfg.judge
    verify = j.mode == "verify"
    return GrpoBuild(verify=verify, template=j.verify_template if verify else j.template, format=j.format)


SPEC = StageSpec(name=STAGE, row_type=GrpoPrompt, process=process, engine=None, rows_per_input=2,
                 shard_stats=shard_stats, summarize=lambda st, c: dict(st), config=stage_config,
                 sources=(pairs_stage.STAGE,), enabled=lambda cfg: cfg.train.objective in GRPO_OBJECTIVES,
                 templates=lambda c: (c.template,),
                 describe=lambda c: "each answer alone" if c.verify else "both orders")
