"""The rows that flow between stages, one ``TypedDict`` each (the parquet columns of a stage's shards).

Every row a stage emits has ``status``: ``"ok"`` rows go to the stage's ``data/`` shards, any other
value is the failure reason and the row goes to ``failures/`` with everything it had. ``*_meta``
fields are provenance (``stages.base.provenance``): the stage, round, model, engine, template id,
sampling, constrained flag and the stage's own prompt/completion token counts.
"""
from __future__ import annotations

from typing import Any, Optional, TypedDict


class Provenance(TypedDict):
    stage: str
    round: int
    model: str
    engine: str
    template: str  # "<name>@<hash>"
    constrained: bool
    sampling: dict[str, Any]
    prompt_tokens: int
    completion_tokens: int


class Instruction(TypedDict):
    """``load``: one instruction of a data file."""
    id: str  # the file's id field, or "<file stem>-<line>"
    instruction: str
    source: str  # "<file name>:<line>"
    reference_category: Optional[str]  # with data.category_field


class LoadFailure(TypedDict):
    source: str  # "<absolute path>:<line>"
    reason: str
    snippet: str
    status: str  # = reason


class Categorized(Instruction):
    """``categorize`` (and ``select``, which keeps a subset of them unchanged)."""
    status: str
    category: str  # "Other" when unparsed
    category_parsed: bool
    complexity: Optional[int]
    expected_length: Optional[int]
    categorize_output: Optional[str]
    categorize_meta: Optional[Provenance]


class Pair(TypedDict, total=False):
    """``pairs``: chosen = an answer to x; rejected = an answer to the modified x'."""
    pair_id: str
    instruction_id: str
    instruction: str
    source: Optional[str]
    category: Optional[str]
    complexity: Optional[int]
    modified_instruction: Optional[str]
    chosen: Optional[str]
    rejected: Optional[str]
    modify_output: Optional[str]
    attempts: int  # pairs.rejected=separate: x' written this many times
    chosen_meta: Optional[Provenance]
    rejected_meta: Optional[Provenance]
    status: str


class Sample(TypedDict):
    judgment: str
    verdict: Optional[str]  # "A" | "B" | None (unparsed)
    error: Optional[str]
    tokens: int
    margin: Optional[float]  # log p(A) - log p(B) of a constrained verdict
    explained: bool
    repeat: float  # share of repeated word 4-grams


class Judged(TypedDict, total=False):
    """``judge``: one row per (pair, order), every sample, and the kept judgment."""
    example_id: str  # "<pair_id>/<order>"
    pair_id: str
    order: str  # "AB" (chosen shown as A) | "BA"
    gold: str  # "A" | "B"
    instruction: str
    answer_a: str
    answer_b: str
    category: Optional[str]
    samples: list[Sample]
    waves: int
    prompt_tokens: Optional[int]
    status: str  # ok | "no correct judgment" | "prompt too long for model context"
    n_samples: int
    n_parsed: int
    n_correct: int
    kept_judgment: Optional[str]
    kept_verdict: Optional[str]
    kept_source: Optional[str]  # "sampled" | "mirror"
    mirrored_from: Optional[str]
    mirror_failed: bool
    judge_meta: Optional[Provenance]


class SftRow(TypedDict):
    """``sft_data``: the conversational rows TRL's SFTTrainer reads (loss on the assistant turn)."""
    messages: list[dict[str, str]]  # system, user (the judge prompt), assistant (the kept judgment)
    example_id: str
    pair_id: str
    order: str
    verdict: str
    kept_source: Optional[str]
    category: Optional[str]
    template: str
    judge_meta: Provenance
    status: str


class EvalPair(TypedDict):
    """An input of ``eval`` (``eval_data.load_eval_sets``)."""
    eval_id: str
    id: str
    set: str
    subset: str
    instruction: str
    chosen: str
    rejected: str
    source: str


class Evaluated(TypedDict, total=False):
    """``eval``: one row per (pair, order, mode)."""
    eval_id: str
    set: str
    subset: str
    source: Optional[str]
    order: str
    gold: str
    mode: str  # "constrained" | "free"
    instruction: str
    answer_a: str
    answer_b: str
    judgment: Optional[str]
    verdict: Optional[str]
    error: Optional[str]
    correct: Optional[bool]
    margin: Optional[float]
    repeat: Optional[float]
    votes: Optional[list[Optional[str]]]
    majority: Optional[str]
    majority_correct: Optional[bool]
    eval_meta: Optional[Provenance]
    status: str


# A line of a stage's ``manifest.jsonl``: one committed shard (``shards.process_shard``). "in" counts
# input rows (the judge makes 2 rows per input, eval 2 per mode), "out" kept rows, "failed" dropped
# ones (by reason in "failures"); "stats": the stage's additive counters (``StageSpec.shard_stats``);
# "examples": [row id, reason] of up to 3 failures, for the driver's log; "commit": unique per
# commit, so a redone shard is told from the one committed before. Functional syntax: "in" is a keyword.
ShardEntry = TypedDict("ShardEntry", {
    "shard": int, "in": int, "out": int, "failed": int, "failures": dict[str, int], "prompt_tokens": int,
    "completion_tokens": int, "seconds": float, "stats": dict[str, Any], "examples": list[list[str]], "commit": str,
})
