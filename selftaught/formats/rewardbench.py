"""RewardBench (``allenai/reward-bench``): ``{prompt, chosen, rejected, subset}``, one better answer per row."""
from __future__ import annotations

from typing import Union

from selftaught.formats.pairwise import pair_row
from selftaught.formats.reading import scalar_id, subset_of

NAME = "rewardbench"
SHAPE = "RewardBench {prompt, chosen, rejected}"


def matches(row: dict) -> bool:
    return "chosen" in row


def convert(row: dict, stem: str) -> Union[dict, str]:
    return pair_row(row, ("prompt", "chosen", "rejected"), subset_of(row, stem), scalar_id(row))
