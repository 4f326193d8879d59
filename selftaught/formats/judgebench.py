"""JudgeBench (``ScalerLab/JudgeBench``): ``{pair_id, source, question, response_A, response_B, label: A>B|B>A}``.

The subset is the source's category, as the benchmark reports it: ``mmlu-pro-*`` knowledge,
``livebench-reasoning`` reasoning, ``livebench-math`` math, ``livecodebench`` coding (another source: itself).
Every pair is judged in both orders anyway, so the file's A/B placement is not kept; the benchmark's
both-order score is ``judgebench_accuracy`` (``stages/evaluate``).
"""
from __future__ import annotations

from typing import Union

from selftaught.formats.pairwise import pair_row
from selftaught.formats.reading import scalar_id

NAME = "judgebench"
SHAPE = "JudgeBench {question, response_A, response_B, label: A>B|B>A}"
CATEGORIES = (("mmlu-pro", "knowledge"), ("livebench-reasoning", "reasoning"), ("livebench-math", "math"),
              ("livecodebench", "coding"))


def matches(row: dict) -> bool:
    return "response_A" in row and "question" in row


def category(source: object, stem: str) -> str:
    if not isinstance(source, str) or not source:
        return stem
    return next((name for prefix, name in CATEGORIES if source.startswith(prefix)), source)


def convert(row: dict, stem: str) -> Union[dict, str]:
    label = row.get("label")
    if label not in ("A>B", "B>A"):
        return f"field 'label' must be A>B or B>A, got {label!r}"
    keys = ("question", "response_A", "response_B") if label == "A>B" else ("question", "response_B", "response_A")
    rid = row.get("pair_id") if isinstance(row.get("pair_id"), str) and row["pair_id"] else scalar_id(row)
    return pair_row(row, keys, category(row.get("source"), stem), rid)
