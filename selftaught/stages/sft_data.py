"""Stage 5: kept judgments → chat-format SFT rows (judge prompt + judgment as the assistant turn).

Its input is the judge's shards, then grade_pairs', then verify_pairs' (``judge.mode``: pairwise, absolute,
both or verify): kept verdicts become rows of the pairwise prompt, kept gradings rows of the grading prompt,
kept yes/no verdicts rows of the verify prompt, in one set. The A/B balance and the score balance are applied here, row by row: the two stages' summaries
hold the thresholds (decided from all their shards), so this stage is a pure map from input shard
i to SFT shard i. Rows a balance drops are failures ("dropped by A/B balance", "dropped by score
balance"), never silently lost.

The ``messages`` column is what TRL's ``SFTTrainer`` reads for conversational data; loss on the
assistant turn only is set in the trainer (``assistant_only_loss``).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

from selftaught.config import JudgeConfig, RunConfig
from selftaught.parsing import VERIFY_LABELS
from selftaught.prompts import load_template
from selftaught.rows import SftRow
from selftaught.stages import grade_pairs, judge, verify_pairs
from selftaught.stages.base import OK, StageSpec, Upstream
from selftaught.stages.grades import grade_messages
from selftaught.stages.judge import VERIFY, BALANCED_OUT, JudgeItem, balanced_in, judge_messages, kept_stats

STAGE = "sft_data"
PAIRWISE, ABSOLUTE, VERIFIED = "pairwise", "absolute", "verify"  # SftRow.kind


@dataclass(frozen=True)
class SftBuild:
    judge: JudgeConfig
    seed: int = 0
    # judge.balance_thresholds of the judge stage; None: keep every row (judge.balance=false)
    thresholds: Optional[dict] = field(default=None)
    # grade_pairs.balance_thresholds of the grade_pairs stage (per score); None: keep every grading
    score_thresholds: Optional[dict] = field(default=None)
    # verify_pairs' yes/no thresholds; None: keep every verdict (judge.balance=false)
    verify_thresholds: Optional[dict] = field(default=None)


def build(judged: list[dict], cfg: JudgeConfig) -> list[dict]:
    """SFT rows of the OK rows (no balance: the caller applied it)."""
    return [r for r in process(judged, None, None, SftBuild(cfg)) if r["status"] == OK]


def _pairwise(r: dict, tpl, cfg: SftBuild) -> dict:
    if cfg.thresholds is not None and not balanced_in(r, cfg.seed, cfg.thresholds):
        return {"example_id": r["example_id"], "pair_id": r["pair_id"], "order": r["order"],
                "verdict": r["kept_verdict"], "kind": PAIRWISE, "status": BALANCED_OUT}
    item = JudgeItem(r["example_id"], r["instruction"], r["answer_a"], r["answer_b"])
    return {
        "messages": judge_messages(tpl, item) + [{"role": "assistant", "content": r["kept_judgment"]}],
        "kind": PAIRWISE,
        "example_id": r["example_id"],
        "pair_id": r["pair_id"],
        "order": r["order"],
        "verdict": r["kept_verdict"],
        "kept_source": r.get("kept_source"),  # sampled | mirror (swap augmentation)
        "category": r.get("category"),
        "template": tpl.id,
        "judge_meta": r["judge_meta"],
        "status": OK,
    }


def _absolute(r: dict, tpl, cfg: SftBuild) -> dict:
    """A kept grading (general rubric, no reference: as it was sampled) as an SFT row."""
    if cfg.score_thresholds is not None and not grade_pairs.balanced_in(r, cfg.seed, cfg.score_thresholds):
        return {"example_id": r["example_id"], "pair_id": r["pair_id"], "side": r["side"], "score": r["kept_score"],
                "kind": ABSOLUTE, "status": grade_pairs.BALANCED_OUT}
    return {
        "messages": grade_messages(tpl, r) + [{"role": "assistant", "content": r["kept_grading"]}],
        "kind": ABSOLUTE,
        "example_id": r["example_id"],
        "pair_id": r["pair_id"],
        "side": r["side"],
        "score": r["kept_score"],
        "kept_source": "sampled",
        "category": r.get("category"),
        "template": tpl.id,
        "judge_meta": r["grade_meta"],
        "status": OK,
    }


def _verify(r: dict, tpl, cfg: SftBuild) -> dict:
    """A kept yes/no verdict on one answer (verify_pairs) as an SFT row."""
    if cfg.verify_thresholds is not None and not verify_pairs.balanced_in(r, cfg.seed, cfg.verify_thresholds):
        return {"example_id": r["example_id"], "pair_id": r["pair_id"], "side": r["side"], "verdict": r["kept_verdict"],
                "kind": VERIFIED, "status": verify_pairs.BALANCED_OUT}
    item = JudgeItem(r["example_id"], r["instruction"], r["response"])
    return {
        "messages": judge_messages(tpl, item, VERIFY) + [{"role": "assistant", "content": r["kept_judgment"]}],
        "kind": VERIFIED,
        "example_id": r["example_id"],
        "pair_id": r["pair_id"],
        "side": r["side"],
        "verdict": r["kept_verdict"],
        "kept_source": "sampled",
        "category": r.get("category"),
        "template": tpl.id,
        "judge_meta": r["verify_meta"],
        "status": OK,
    }


def process(rows: list[dict], engine, ctx, cfg: SftBuild) -> list[dict]:
    """Kept judge rows (pairwise), kept grade_pairs rows (absolute: a ``kept_grading``) and kept verify_pairs rows
    (verify: a yes/no ``gold``) -> SFT rows."""
    j = cfg.judge
    pairwise_tpl, absolute_tpl, verify_tpl = (load_template(j.template), load_template(j.absolute_template),
                                              load_template(j.verify_template))

    def one(r: dict) -> dict:
        if "kept_grading" in r:
            return _absolute(r, absolute_tpl, cfg)
        if r.get("gold") in VERIFY_LABELS:
            return _verify(r, verify_tpl, cfg)
        return _pairwise(r, pairwise_tpl, cfg)

    return [one(r) for r in rows if r["status"] == OK]


def shard_stats(rows: list[dict], cfg: SftBuild) -> dict:
    """What the SFT rows are made of (after the balances): A-wins, B-wins, sampled and mirrored verdicts;
    gradings by score."""
    ok = [r for r in rows if r["status"] == OK]
    pairwise = [r for r in ok if r["kind"] == PAIRWISE]
    absolute = [r for r in ok if r["kind"] == ABSOLUTE]
    verify = [r for r in ok if r["kind"] == VERIFIED]
    return {**kept_stats(pairwise, verdict_key="verdict"), "pairwise": len(pairwise), "absolute": len(absolute),
            "scores": dict(Counter(str(r["score"]) for r in absolute)), "verify": len(verify),
            "kept_yes": sum(r["verdict"] == "Yes" for r in verify), "kept_no": sum(r["verdict"] == "No" for r in verify)}


def templates(c: SftBuild) -> tuple[str, ...]:
    """The prompts its rows are written in: the judge's of each mode the loop trains."""
    j = c.judge
    if j.mode == "verify":
        return (j.verify_template,)
    return (j.template,) + ((j.absolute_template,) if j.mode != "pairwise" else ())


def sft_build(cfg: RunConfig, up: Upstream) -> SftBuild:
    """The judge stage's A/B thresholds and grade_pairs' score thresholds (their summaries), unless
    judge.balance / judge.score_balance is off."""
    return SftBuild(cfg.judge, cfg.seed, up.summary_of(judge.STAGE).get("balance") if cfg.judge.balance else None,
                    up.summary_of(grade_pairs.STAGE).get("score_balance") if cfg.judge.score_balance else None,
                    up.summary_of(verify_pairs.STAGE).get("balance") if cfg.judge.balance else None)


SPEC = StageSpec(name=STAGE, row_type=SftRow, process=process, engine=None, shard_stats=shard_stats,
                 summarize=lambda st, c: dict(st), config=sft_build,
                 sources=(judge.STAGE, grade_pairs.STAGE, verify_pairs.STAGE), templates=templates)
