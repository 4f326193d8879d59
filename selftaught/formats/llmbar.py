"""LLMBar (``princeton-nlp/LLMBar``): ``{input, output_1, output_2, label: 1|2}``; the subset is the file's stem
(``Natural``, ``Adversarial_Neighbor``, ...)."""
from __future__ import annotations

from typing import Union

from selftaught.formats.pairwise import pair_row
from selftaught.formats.reading import scalar_id

NAME = "llmbar"
SHAPE = "LLMBar {input, output_1, output_2, label}"


def matches(row: dict) -> bool:
    return "output_1" in row


def convert(row: dict, stem: str) -> Union[dict, str]:
    label = row.get("label")
    if str(label) not in ("1", "2") or isinstance(label, bool):
        return f"field 'label' must be 1 or 2, got {label!r}"
    keys = ("input", "output_1", "output_2") if str(label) == "1" else ("input", "output_2", "output_1")
    return pair_row(row, keys, stem, scalar_id(row))
