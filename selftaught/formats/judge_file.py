"""Files a user's judge decides (``selftaught judge``, ``config.JudgeFileConfig``): response pairs, or single
responses to grade 1-5, with the field mapping the config names."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Union

from selftaught.formats.graded import human_score, rubric_text
from selftaught.formats.reading import MISSING, SAME_ANSWERS, Reject, get_field, rows_or_stop, text_field


def _judge_file_row(row: dict, cfg, answers: dict[str, str]) -> Union[dict, str]:
    """What both judge-file readers take from a row: the instruction, the answers (``{key: field}``,
    kept verbatim), an optional reference and the id; or the reason it cannot be used. Every missing
    field is named at once, so the message for an unmapped file names every field to map."""
    instruction, err = text_field(row, cfg.instruction_field)
    errors, texts = [err] if err else [], {}
    for key, field in answers.items():
        texts[key], err = text_field(row, field, strip=False)
        errors += [err] if err else []
    if errors:
        return "; ".join(errors)
    ref = get_field(row, cfg.reference_field) if cfg.reference_field else None
    if ref is not MISSING and ref is not None and not isinstance(ref, str):
        return f"field {cfg.reference_field!r} is not a string (got {type(ref).__name__})"
    rid = get_field(row, cfg.id_field) if cfg.id_field else None
    if isinstance(rid, (dict, list)):
        return f"field {cfg.id_field!r} is not a scalar id"
    return {"id": None if rid is MISSING else rid, "instruction": instruction, **texts,
            "reference": ref.strip() if isinstance(ref, str) and ref.strip() else None}


def iter_response_pairs(cfg, what: str = "judge_file.path") -> Iterator[Union[dict, Reject]]:
    """A file of response pairs (``config.JudgeFileConfig``: field mapping, format, limit) ->
    ``{id, instruction, response_a, response_b, reference, source}`` rows and file:line rejects,
    streamed. A file that gives no row raises ``DataError``."""
    row_keys: list[str] = []

    def convert(row: dict) -> Union[dict, str]:
        if not row_keys:
            row_keys.extend(str(k) for k in list(row)[:12])
        out = _judge_file_row(row, cfg, {"response_a": cfg.a_field, "response_b": cfg.b_field})
        if isinstance(out, dict) and out["response_a"].strip() == out["response_b"].strip():
            return SAME_ANSWERS
        return out

    yield from rows_or_stop(cfg, convert, cfg.limit, what, row_keys)


def iter_graded_responses(cfg, what: str = "judge_file.path") -> Iterator[Union[dict, Reject]]:
    """A file of single responses (``config.JudgeFileConfig``, absolute mode) -> ``{id, instruction,
    response, rubric, reference, human_score, source}`` rows and file:line rejects, streamed."""
    row_keys: list[str] = []

    def convert(row: dict) -> Union[dict, str]:
        if not row_keys:
            row_keys.extend(str(k) for k in list(row)[:12])
        out = _judge_file_row(row, cfg, {"response": cfg.response_field})
        if not isinstance(out, dict):
            return out
        rubric, err = rubric_text(row, cfg.rubric_field)
        if err:
            return err
        human, err = human_score(row, cfg.score_field)
        if err:
            return err
        return {**out, "rubric": rubric, "human_score": human}

    yield from rows_or_stop(cfg, convert, cfg.limit, what, row_keys)

