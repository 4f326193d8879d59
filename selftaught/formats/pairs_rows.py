"""A pairs stage's own rows (``rows.Pair``), e.g. the run's held-out pairs (``eval.holdout``); the subset is how
the rejected answer was made (``rejected_source``)."""
from __future__ import annotations

from typing import Union

from selftaught.formats.pairwise import pair_row

NAME = "pairs"
SHAPE = "a pairs stage's rows {pair_id, instruction, chosen, rejected}"


def matches(row: dict) -> bool:
    return "pair_id" in row and "instruction" in row and "chosen" in row


def convert(row: dict, stem: str) -> Union[dict, str]:
    return pair_row(row, ("instruction", "chosen", "rejected"), row.get("rejected_source") or stem, row["pair_id"])
