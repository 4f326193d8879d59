"""The rows that flow between stages, one ``TypedDict`` each (the parquet columns of a stage's shards).

Every row a stage emits has ``status``: ``"ok"`` rows go to the stage's ``data/`` shards, any other
value is the failure reason and the row goes to ``failures/`` with everything it had. ``*_meta``
fields are provenance (``stages.base.provenance``): the stage, round, model, engine, template id,
sampling, constrained flag and the stage's own prompt/completion token counts.
"""
from __future__ import annotations

from typing import Any, Optional, TypedDict, Union, get_args, get_origin, get_type_hints, is_typeddict


class SamplingParams(TypedDict):
    """``engines.Sampling`` as stored (``stages.base.sampling_dict``)."""
    n: int
    temperature: float
    top_p: float
    max_tokens: int
    stop: list[str]
    frequency_penalty: float


class Provenance(TypedDict):
    stage: str
    round: int
    model: str
    engine: str
    template: str  # "<name>@<hash>"
    constrained: bool
    sampling: SamplingParams
    prompt_tokens: int
    completion_tokens: int


class Message(TypedDict):
    role: str  # system | user | assistant
    content: str


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


class Neighbor(TypedDict):
    """A similar but different instruction of the pool (``neighbors``), whose answer is a rejected answer."""
    id: str
    instruction: str
    similarity: float  # TF-IDF cosine with the instruction (``similarity.nearest``)


class WithNeighbors(Categorized):
    """``neighbors`` (and ``holdout_neighbors``): an instruction and its neighbors, most similar first."""
    neighbors: list[Neighbor]


class PairSimilarity(TypedDict):
    """``pairs.checks``: character n-gram cosines of a pair whose x' the model wrote (``similarity.text_similarity``)."""
    instruction: float  # x vs x'
    instruction_answer: float  # x' vs chosen
    answers: float  # chosen vs rejected
    rejected_instruction: float  # rejected vs x'


class Pair(TypedDict, total=False):
    """``pairs``: chosen = an answer to x; rejected = an answer to the modified x' (``joint``, ``separate``) or to a
    similar instruction of the pool (``neighbors``: ``rejected_source`` neighbor, x' = that instruction)."""
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
    similarity: Optional[PairSimilarity]
    rejected_source: Optional[str]  # "modified" (x' written by the model) | "neighbor"
    neighbor_id: Optional[str]  # neighbor pairs: the instruction whose answer is rejected
    neighbor_similarity: Optional[float]  # its TF-IDF cosine with x (similarity.nearest)
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


class GradeSample(TypedDict):
    text: str  # feedback, then "[RESULT] n"
    score: Optional[int]  # 1..5, None when it did not parse (``error``)
    error: Optional[str]
    expected_score: Optional[float]  # constrained: the probability-weighted mean of 1..5
    tokens: int
    repeat: float  # share of repeated word 4-grams of the feedback


class GradedAnswer(TypedDict, total=False):
    """``grade_pairs``: one row per (pair, side), every grading sampled, and the kept one."""
    example_id: str  # "<pair_id>/<side>"
    pair_id: str
    side: str  # "chosen" | "rejected"
    instruction: str
    response: str
    category: Optional[str]
    samples: list[GradeSample]
    n_samples: int
    n_parsed: int
    kept_grading: Optional[str]
    kept_score: Optional[int]  # kept couples: the chosen one's score > the rejected one's
    status: str  # ok | "chosen never scored higher" | "prompt too long for model context"
    grade_meta: Optional[Provenance]


class Verified(TypedDict, total=False):
    """``verify_pairs``: one row per (pair, side), every yes/no verdict sampled on that answer alone, and the kept one."""
    example_id: str  # "<pair_id>/<side>"
    pair_id: str
    side: str  # "chosen" | "rejected"
    gold: str  # "Yes" (chosen) | "No" (rejected)
    instruction: str
    response: str
    category: Optional[str]
    rejected_source: Optional[str]  # the pair's: "modified" | "neighbor"
    samples: list[Sample]  # margin: log p(Yes) - log p(No)
    waves: int
    prompt_tokens: Optional[int]
    n_samples: int
    n_correct: int
    kept_judgment: Optional[str]
    kept_verdict: Optional[str]
    status: str  # ok | "no correct judgment" | "prompt too long for model context"
    verify_meta: Optional[Provenance]


class SftRow(TypedDict):
    """``sft_data``: the conversational rows TRL's SFTTrainer reads (loss on the assistant turn)."""
    messages: list[Message]  # system, user (the judge or grading prompt), assistant (the kept judgment)
    kind: str  # "pairwise" (a verdict of judge) | "absolute" (a 1-5 grading of grade_pairs) | "verify" (verify_pairs)
    example_id: str
    pair_id: str
    order: Optional[str]  # pairwise
    verdict: Optional[str]  # pairwise: "A" | "B"; verify: "Yes" | "No"
    side: Optional[str]  # absolute, verify: "chosen" | "rejected"
    score: Optional[int]  # absolute
    kept_source: Optional[str]
    category: Optional[str]
    template: str
    judge_meta: Provenance
    status: str


class PreferenceRow(TypedDict, total=False):
    """``dpo_data``: TRL's conversational preference format (``DPOTrainer``), with provenance."""
    prompt: list[Message]  # system, user (the judge prompt)
    chosen: list[Message]  # the kept (correct) judgment
    rejected: list[Message]  # an incorrect judgment of the same (pair, order), or of the same answer (verify)
    example_id: str
    pair_id: str
    order: str  # "AB" | "BA" (pairwise), "chosen" | "rejected" (verify: the answer judged)
    verdict: str  # the chosen judgment's (the gold answer): "A" | "B" | "Yes" | "No"
    rejected_verdict: str
    kept_source: Optional[str]  # the chosen one: "sampled" | "mirror"
    category: Optional[str]
    template: str
    judge_meta: Provenance
    status: str


class GrpoPrompt(TypedDict, total=False):
    """``grpo_data``: one presentation of a pair for online RL (``train.objective=grpo|sft_then_grpo``)."""
    prompt: list[Message]  # system, user (the judge's pairwise or verify prompt)
    label: str  # the verdict a right judgment gives: "A" | "B" (pairwise), "Yes" | "No" (verify)
    form: str  # how its judgments are read: reasoning_first | verdict_first | verify (training.rewards)
    example_id: str
    pair_id: str
    order: str  # "AB" | "BA" (pairwise), "chosen" | "rejected" (verify): the pair's two presentations
    category: Optional[str]
    rejected_source: Optional[str]
    template: str
    status: str


class EvalPair(TypedDict, total=False):
    """An input of ``eval`` (``eval_data.load_eval_sets``)."""
    eval_id: str
    id: str
    set: str
    subset: str
    instruction: str
    chosen: str
    rejected: str
    source: str
    # A pair of a best-of-n item's round robin (``eval_data.best_of_n_pairs``):
    group: Optional[str]  # the item
    cand_a: Optional[int]  # "chosen" here is candidate cand_a, "rejected" candidate cand_b
    cand_b: Optional[int]
    n_candidates: Optional[int]
    scored: Optional[bool]  # has the correct candidate (0): a gold answer
    # A best-of-4 item judged in one prompt (``eval_data.four_way_item``, ``eval.four_way``):
    four_way: Optional[list[str]]  # its four answers as shown, A to D
    gold: Optional[str]  # the correct answer's letter


class Evaluated(TypedDict, total=False):
    """``eval``: one row per (pair, order, mode), or per (best-of-4 item, mode) in order "ABCD"."""
    eval_id: str
    set: str
    subset: str
    source: Optional[str]
    order: str
    gold: str
    mode: str  # "constrained" | "free" | "absolute" | "verify"
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
    score_chosen: Optional[int]  # mode "absolute": each answer graded 1-5 alone (``stages.grades``)
    score_rejected: Optional[int]
    expected_chosen: Optional[float]
    expected_rejected: Optional[float]
    group: Optional[str]  # best-of-n items: see ``EvalPair``
    cand_a: Optional[int]
    cand_b: Optional[int]
    n_candidates: Optional[int]
    scored: Optional[bool]
    label_a: Optional[str]  # mode "verify": answer A's own yes/no verdict
    label_b: Optional[str]
    answers_cd: Optional[list[str]]  # order "ABCD" (``eval.four_way``): answers C and D as shown


class ResponsePair(TypedDict):
    """``selftaught judge`` input: a pair of responses to one instruction (``io.iter_response_pairs``)."""
    id: str
    instruction: str
    response_a: str
    response_b: str
    reference: Optional[str]
    source: str


class Verdict(ResponsePair, total=False):
    """``verdicts``: the judge's decision on one pair, from both orders (``stages.verdicts``)."""
    winner: str  # "response_a" | "response_b" | "tie"
    decided_by: str  # "agreement" | "logprob" | "majority" | "tie"
    agree: bool  # both orders parsed and preferred the same response
    verdict_AB: Optional[str]  # "A" | "B" | None (unparsed); response_a is A in AB, B in BA
    verdict_BA: Optional[str]
    judgment_AB: str
    judgment_BA: str
    margin_AB: Optional[float]  # log p(A) - log p(B) of the verdict token (constrained decoding)
    margin_BA: Optional[float]
    votes_a: Optional[int]  # judge_file.majority_k > 1: votes over both orders
    votes_b: Optional[int]
    verdict_meta: Provenance
    status: str


class Grade(TypedDict, total=False):
    """``grades``: one response scored 1-5 against a rubric (``stages.grades``, absolute mode)."""
    id: str
    source: str
    instruction: str
    response: str
    rubric: Optional[str]  # None: the shipped general rubric
    reference: Optional[str]
    human_score: Optional[float]
    feedback: str
    grading: str  # the whole generated text
    score: Optional[int]  # 1..5, None when the grading did not parse (``score_error``)
    score_error: Optional[str]
    expected_score: Optional[float]  # constrained: the probability-weighted mean of 1..5
    grade_meta: Provenance
    status: str


# A line of a stage's ``manifest.jsonl``: one committed shard (``shards.process_shard``). "in" counts
# input rows (the judge makes 2 rows per input, eval 2 per mode), "out" kept rows, "failed" dropped
# ones (by reason in "failures"); "stats": the stage's additive counters (``StageSpec.shard_stats``);
# "rows_in" (stages with ``rows_for``): the output rows its inputs make, which vary by input;
# "examples": [row id, reason] of up to 3 failures, for the driver's log; "commit": unique per
# commit, so a redone shard is told from the one committed before. Functional syntax: "in" is a keyword.
ShardEntry = TypedDict("ShardEntry", {
    "shard": int, "in": int, "out": int, "failed": int, "failures": dict[str, int], "prompt_tokens": int,
    "completion_tokens": int, "seconds": float, "stats": dict[str, Any], "examples": list[list[str]], "commit": str,
})


def arrow_type(t: Any):
    """The Arrow type of a row field's annotation; None where it does not fix one (``Any``, a free dict)."""
    import pyarrow as pa

    scalars = {str: pa.string(), bool: pa.bool_(), int: pa.int64(), float: pa.float64()}
    if t in scalars:
        return scalars[t]
    if get_origin(t) is Union:
        inner = [a for a in get_args(t) if a is not type(None)]
        return arrow_type(inner[0]) if len(inner) == 1 else None
    if get_origin(t) is list:
        item = arrow_type(get_args(t)[0])
        return pa.list_(item) if item is not None else None
    if is_typeddict(t):
        fields = [(k, arrow_type(v)) for k, v in get_type_hints(t).items()]
        return pa.struct([(k, v) for k, v in fields if v is not None])
    return None


def arrow_schema(row_type: type):
    """The parquet schema of a row type: every shard of a stage is written in it, so the shards of a stage
    agree (an all-null column in one shard keeps its type) and a shard with no rows keeps its columns."""
    import pyarrow as pa

    return pa.schema([(k, t) for k, t in ((k, arrow_type(v)) for k, v in get_type_hints(row_type).items())
                      if t is not None])
