"""SFT rows: chat format for TRL, only kept judgments, verdict consistent with the judgment."""
from selftaught.config import JudgeConfig
from selftaught.stages.judge import BALANCED_OUT, NO_CORRECT
from selftaught.stages.sft_data import build


def test_build_chat_rows_from_kept_judgments():
    base = {"instruction": "What is 2+2?", "category": "Closed QA", "judge_meta": {"prompt_tokens": 9}}
    judged = [
        {**base, "example_id": "p1/AB", "pair_id": "p1", "order": "AB", "answer_a": "4", "answer_b": "5",
         "status": "ok", "kept_judgment": "A is right.\n\nFinal verdict: [[A]]", "kept_verdict": "A"},
        {**base, "example_id": "p1/BA", "pair_id": "p1", "order": "BA", "answer_a": "5", "answer_b": "4",
         "status": BALANCED_OUT, "kept_judgment": "x\n\nFinal verdict: [[B]]", "kept_verdict": "B"},
        {**base, "example_id": "p2/AB", "pair_id": "p2", "order": "AB", "answer_a": "a", "answer_b": "b",
         "status": NO_CORRECT, "kept_judgment": None, "kept_verdict": None},
    ]
    rows = build(judged, JudgeConfig())
    assert [r["example_id"] for r in rows] == ["p1/AB"]
    msgs = rows[0]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
    assert "[The Start of Assistant A's Answer]\n4\n" in msgs[1]["content"]
    assert "What is 2+2?" in msgs[1]["content"]
    assert msgs[2]["content"] == "A is right.\n\nFinal verdict: [[A]]"
    assert rows[0]["verdict"] == "A" and rows[0]["template"].startswith("judge@")
