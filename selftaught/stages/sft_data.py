"""Stage 5: kept judgments → chat-format SFT rows (judge prompt + judgment as the assistant turn).

The A/B balance is applied here, row by row: the judge stage's summary holds the per-verdict
thresholds (``judge.balance_thresholds``, decided from all its shards), so this stage is a pure
map from judge shard i to SFT shard i. Rows the balance drops are failures ("dropped by A/B
balance"), never silently lost.

The ``messages`` column is what TRL's ``SFTTrainer`` reads for conversational data; loss on the
assistant turn only is set in the trainer (``assistant_only_loss``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from selftaught.config import JudgeConfig, RunConfig
from selftaught.prompts import load_template
from selftaught.rows import SftRow
from selftaught.stages.base import OK, StageSpec, Upstream
from selftaught.stages.judge import BALANCED_OUT, JudgeItem, balanced_in, judge_messages, kept_stats

STAGE = "sft_data"


@dataclass(frozen=True)
class SftBuild:
    judge: JudgeConfig
    seed: int = 0
    # judge.balance_thresholds of the judge stage; None: keep every row (judge.balance=false)
    thresholds: Optional[dict] = field(default=None)


def build(judged: list[dict], cfg: JudgeConfig) -> list[dict]:
    """SFT rows of the OK rows (no balance: the caller applied it)."""
    return [r for r in process(judged, None, None, SftBuild(cfg)) if r["status"] == OK]


def process(judged: list[dict], engine, ctx, cfg: SftBuild) -> list[dict]:
    tpl = load_template(cfg.judge.template)
    out = []
    for r in judged:
        if r["status"] != OK:
            continue
        if cfg.thresholds is not None and not balanced_in(r, cfg.seed, cfg.thresholds):
            out.append({"example_id": r["example_id"], "pair_id": r["pair_id"], "order": r["order"],
                        "verdict": r["kept_verdict"], "status": BALANCED_OUT})
            continue
        item = JudgeItem(r["example_id"], r["instruction"], r["answer_a"], r["answer_b"])
        out.append({
            "messages": judge_messages(tpl, item) + [{"role": "assistant", "content": r["kept_judgment"]}],
            "example_id": r["example_id"],
            "pair_id": r["pair_id"],
            "order": r["order"],
            "verdict": r["kept_verdict"],
            "kept_source": r.get("kept_source"),  # sampled | mirror (swap augmentation)
            "category": r.get("category"),
            "template": tpl.id,
            "judge_meta": r["judge_meta"],
            "status": OK,
        })
    return out


def shard_stats(rows: list[dict], cfg: SftBuild) -> dict:
    """What the SFT rows are made of (after the balance): A-wins, B-wins, sampled and mirrored."""
    return kept_stats([r for r in rows if r["status"] == OK], verdict_key="verdict")


def sft_build(cfg: RunConfig, up: Upstream) -> SftBuild:
    """The judge stage's A/B thresholds (its summary), unless judge.balance=false."""
    return SftBuild(cfg.judge, cfg.seed, up.summary.get("balance") if cfg.judge.balance else None)


SPEC = StageSpec(name=STAGE, row_type=SftRow, process=process, engine=None, shard_stats=shard_stats,
                 summarize=lambda st, c: dict(st), config=sft_build, templates=lambda c: (c.judge.template,))
