"""Stage 5: kept judgments → chat-format SFT rows (judge prompt + judgment as the assistant turn).

The ``messages`` column is what TRL's ``SFTTrainer`` reads for conversational data; loss on the
assistant turn only is set in the trainer (``assistant_only_loss``).
"""
from __future__ import annotations

from selftaught.config import JudgeConfig
from selftaught.prompts import load_template
from selftaught.stages.base import OK
from selftaught.stages.judge import JudgeItem, judge_messages


def build(judged: list[dict], cfg: JudgeConfig) -> list[dict]:
    tpl = load_template(cfg.template)
    out = []
    for r in judged:
        if r["status"] != OK:
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
        })
    return out
