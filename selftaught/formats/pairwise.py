"""The row shape the pairwise formats share: an instruction and a better and a worse answer, kept verbatim."""
from __future__ import annotations

from typing import Optional, Union

from selftaught.formats.reading import SAME_ANSWERS, text_field


def pair_row(row: dict, keys: tuple[str, str, str], subset: str, rid: Optional[object]) -> Union[dict, str]:
    """``keys``: the row's (instruction, chosen, rejected) fields -> ``{id, instruction, chosen, rejected,
    subset}``, or why the row cannot be one (a missing or empty field, identical answers)."""
    vals = []
    for k in keys:
        v, err = text_field(row, k, strip=False)  # kept verbatim, only checked
        if err:
            return err
        vals.append(v)
    if vals[1].strip() == vals[2].strip():
        return SAME_ANSWERS
    return {"id": rid, "instruction": vals[0], "chosen": vals[1], "rejected": vals[2], "subset": subset}
