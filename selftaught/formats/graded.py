"""Responses with a human 1-5 score (Prometheus / Feedback-Collection style), and the rubric and score
fields that ``selftaught judge judge_file.mode=absolute`` reads too."""
from __future__ import annotations

from typing import Optional, Union

from selftaught.formats.reading import MISSING, get_field, scalar_id, subset_of, text_field

NAME = "graded"
SHAPE = "a graded response {instruction, response, score}"


def matches(row: dict) -> bool:
    return "orig_response" in row or ("response" in row and ("score" in row or "human_score" in row))


def rubric_text(row: dict, dotted: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    """(the row's rubric as the judge reads it, error). A string as is; ``{criteria,
    score1_description..score5_description}`` (or Feedback-Collection's top-level ``orig_criteria``,
    ``orig_score1_description``..) rendered one score per line; None when the row has none (the
    shipped general rubric applies)."""
    v = get_field(row, dotted) if dotted else MISSING
    if isinstance(v, str) and v.strip():
        return v.strip(), None
    if isinstance(v, dict):
        parts = (v.get("criteria"), [v.get(f"score{i}_description") for i in range(1, 6)])
    elif (v is MISSING or v is None) and isinstance(row.get("orig_criteria"), str):
        parts = (row["orig_criteria"], [row.get(f"orig_score{i}_description") for i in range(1, 6)])
    elif v is MISSING or v is None:
        return None, None
    else:
        parts = (None, [])
    if not isinstance(parts[0], str) or not all(isinstance(d, str) and d.strip() for d in parts[1]):
        return None, f"field {dotted!r}: a rubric is a string or {{criteria, score1_description..score5_description}}"
    criteria = parts[0].strip()
    return "\n".join([criteria if criteria.startswith("[") else f"[{criteria}]"]
                      + [f"Score {i}: {d.strip()}" for i, d in enumerate(parts[1], 1)]), None


def human_score(row: dict, dotted: Optional[str]) -> tuple[Optional[float], Optional[str]]:
    """(the row's 1-5 human score or None when it has none, error)."""
    raw = get_field(row, dotted) if dotted else None
    if raw is MISSING or raw is None:
        return None, None
    try:
        v = None if isinstance(raw, bool) else float(raw)
    except (TypeError, ValueError):
        v = None
    if v is None or not 1 <= v <= 5:
        return None, f"field {dotted!r} must be a score from 1 to 5, got {raw!r}"
    return v, None



def convert(row: dict, stem: str) -> Union[dict, str]:
    """A response with a human 1-5 score, Prometheus style: ``{instruction, response, score (or
    human_score), rubric?, reference?}`` or Feedback-Collection's ``orig_*`` fields -> ``{id,
    instruction, response, rubric, reference, human_score, subset}`` (per-round eval: correlations)."""
    orig = "orig_response" in row
    keys = ("orig_instruction", "orig_response") if orig else ("instruction", "response")
    (instruction, err1), (response, err2) = text_field(row, keys[0], strip=False), text_field(row, keys[1], strip=False)
    if err1 or err2:
        return "; ".join(e for e in (err1, err2) if e)
    score_key = "orig_score" if orig else "human_score" if "human_score" in row else "score"
    human, err = human_score(row, score_key)
    if err or human is None:
        return err or f"missing field {score_key!r}"
    rubric, err = rubric_text(row, None if orig else "rubric")
    if err:
        return err
    ref = row.get("orig_reference_answer" if orig else "reference")
    return {"id": scalar_id(row), "instruction": instruction, "response": response, "rubric": rubric,
            "reference": ref.strip() if isinstance(ref, str) and ref.strip() else None, "human_score": human,
            "subset": subset_of(row, stem)}

