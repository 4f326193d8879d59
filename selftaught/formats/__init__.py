"""Input and eval formats, one module each, behind one registry.

An eval format is a module with ``NAME``, ``SHAPE`` (the row it reads, for the message when no format
matches), ``matches(row) -> bool`` and ``convert(row, file_stem) -> row | reason``; ``EVAL_FORMATS`` tries
them in order and the first that matches converts the row. Adding a format is one module here, a line
in ``EVAL_FORMATS``, and its test. The shared machinery (file reading, rejects with file:line, the
one-line ``DataError``) is ``reading``; instruction files are ``instructions``, the files ``selftaught
judge`` decides are ``judge_file``.

The pairwise rows are ``{id, instruction, chosen, rejected, subset}``; RewardBench 2 gives ``{id,
instruction, candidates, subset}`` (``eval_data`` expands it into a round robin) and a graded response
``{id, instruction, response, rubric, reference, human_score, subset}``.
"""
from __future__ import annotations

from typing import Optional, Union

from selftaught.formats import graded, judgebench, llmbar, mt_bench, pairs_rows, rewardbench, rewardbench2
from selftaught.formats.reading import Reject, load_all

# Most specific first: a RewardBench 2 row also has "chosen", an MT-Bench vote has neither.
EVAL_FORMATS = (mt_bench, graded, rewardbench2, pairs_rows, judgebench, llmbar, rewardbench)


def unrecognized() -> str:
    """The reason for a row no format reads: the user-facing shapes (a pairs stage's rows are the run's own)."""
    shapes = [f.SHAPE for f in (llmbar, rewardbench, rewardbench2, judgebench, mt_bench, graded)]
    return f"unrecognized row: expected {', '.join(shapes[:-1])} or {shapes[-1]}"


def eval_row(row: dict, stem: str) -> Union[dict, str]:
    """One eval file's row, by the first format that recognizes it."""
    for fmt in EVAL_FORMATS:
        if fmt.matches(row):
            return fmt.convert(row, stem)
    return unrecognized()


def load_eval(path: str, format: str = "auto", limit: Optional[int] = None,
              what: str = "eval path") -> tuple[list[dict], list[Reject]]:
    """An eval file of any registered format -> (rows with their ``source``, rejects with file:line)."""
    from pathlib import Path

    stem = Path(path).stem
    return load_all(path, format, lambda row: eval_row(row, stem), limit, what)
