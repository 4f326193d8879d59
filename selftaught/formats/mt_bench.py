"""MT-Bench human votes (``lmsys/mt_bench_human_judgments``) as pairs: turn 1 or the whole two-turn conversation."""
from __future__ import annotations

from typing import Union

from selftaught.formats.reading import SAME_ANSWERS

NAME = "mt_bench_human"
SHAPE = "MT-Bench human {conversation_a, conversation_b, winner, turn}"
MT_BENCH_TIE = "tie vote (excluded from accuracy)"


def matches(row: dict) -> bool:
    return "conversation_a" in row and "winner" in row


def convert(row: dict, stem: str) -> Union[dict, str]:
    """One human vote of MT-Bench (``lmsys/mt_bench_human_judgments``): ``{question_id, model_a,
    model_b, winner: model_a|model_b|tie, judge, conversation_a/b: [{role, content}], turn: 1|2}``.
    Turn 1: the first question and the two first answers. Turn 2: the judge sees the whole
    conversation, the first question with the follow-up, and each model's two answers."""
    winner, turn = row.get("winner"), row.get("turn")
    if winner not in ("model_a", "model_b"):
        if isinstance(winner, str) and winner.startswith("tie"):  # "tie", "tie (bothbad)"
            return MT_BENCH_TIE
        return f"field 'winner' must be model_a, model_b or tie, got {winner!r}"
    if turn not in (1, 2):
        return f"field 'turn' must be 1 or 2, got {turn!r}"
    turns = {}
    for side in ("a", "b"):
        conv = row.get(f"conversation_{side}")
        if not isinstance(conv, list) or len(conv) < 2 * turn:
            return f"field 'conversation_{side}' must hold {2 * turn} messages for turn {turn}"
        msgs = [m.get("content") if isinstance(m, dict) else None for m in conv[: 2 * turn]]
        if not all(isinstance(m, str) and m.strip() for m in msgs):
            return f"field 'conversation_{side}': a message without text"
        turns[side] = msgs
    if turn == 1:
        instruction = turns["a"][0]
        answers = {s: turns[s][1] for s in "ab"}
    else:
        instruction = f"{turns['a'][0]}\n\n[Follow-up question]\n{turns['a'][2]}"
        answers = {s: f"[First answer]\n{turns[s][1]}\n\n[Answer to the follow-up]\n{turns[s][3]}" for s in "ab"}
    win, lose = ("a", "b") if winner == "model_a" else ("b", "a")
    if answers[win].strip() == answers[lose].strip():
        return SAME_ANSWERS
    rid = "-".join(str(row.get(k)) for k in ("question_id", "model_a", "model_b", "judge")) + f"-t{turn}"
    return {"id": rid, "instruction": instruction, "chosen": answers[win], "rejected": answers[lose],
            "subset": f"turn{turn}"}

