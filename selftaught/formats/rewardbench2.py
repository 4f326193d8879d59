"""RewardBench 2 (``allenai/reward-bench-2``): best-of-4 items, and the Ties subset rated one answer at a time."""
from __future__ import annotations

from typing import Union

from selftaught.formats.reading import SAME_ANSWERS, scalar_id, subset_of, text_field

NAME = "rewardbench2"
SHAPE = "RewardBench 2 {prompt, chosen: [..], rejected: [..], subset}"
TIES = "Ties"  # RewardBench 2's subset scored by ratings (``ties``), not pairwise


def matches(row: dict) -> bool:
    return isinstance(row.get("chosen"), list)


def convert(row: dict, stem: str) -> Union[dict, str]:
    """A RewardBench 2 item (``allenai/reward-bench-2``): ``{id, prompt, chosen: [one], rejected:
    [three], subset}`` -> its candidates, the correct one first (``eval_data`` expands them into a
    round robin); in the Ties subset, ``chosen`` holds every correct answer (``num_correct``) and
    each candidate is rated alone."""
    prompt, err = text_field(row, "prompt", strip=False)
    if err:
        return err
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if not isinstance(rejected, list) or not rejected:
        return "field 'rejected' must be a non-empty list of answers (RewardBench 2)"
    cands = list(chosen) + list(rejected)
    if not all(isinstance(c, str) and c.strip() for c in cands):
        return "fields 'chosen'/'rejected': every answer must be a non-empty string"
    if not chosen:
        return "field 'chosen' is empty"
    rid, subset = scalar_id(row), subset_of(row, stem)
    if subset == TIES:  # several correct answers (or one, its reference item): each candidate rated alone
        return {"id": rid, "instruction": prompt, "candidates": cands, "num_correct": len(chosen), "subset": subset}
    if len(chosen) != 1:
        return f"{len(chosen)} correct answers outside the Ties subset (best-of-n needs one)"
    if len({c.strip() for c in cands}) < len(cands):
        return SAME_ANSWERS
    return {"id": rid, "instruction": prompt, "candidates": cands, "subset": subset}

