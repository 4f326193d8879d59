"""The judging stages: ``judge`` (judge, grade_pairs, verify_pairs) and ``judge_file`` (``selftaught judge``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from selftaught.config.base import BaseConfig, EXPLANATIONS, JUDGE_FORMATS, JUDGE_MODES


@dataclass
class JudgeConfig(BaseConfig):
    KEY: ClassVar[str] = "judge"
    # What the loop trains: pairwise verdicts (the recipe; stage judge), absolute 1-5 gradings of each
    # answer against the general rubric (stage grade_pairs; kept when chosen scores strictly higher
    # than rejected), or both (one SFT set). absolute/both add eval mode absolute. verify: a yes/no
    # verdict on one answer at a time, "does it answer this instruction?" (stage verify_pairs; the
    # pair is decided by comparing its answers' P(yes), so there is no position to learn); adds eval
    # mode verify.
    mode: str = "pairwise"
    template: str = "judge"
    absolute_template: str = "absolute"  # mode absolute/both: the grading prompt (Prometheus)
    verify_template: str = "verify"  # mode verify: the yes/no prompt
    # The SFT target of a kept judgment: none (the verdict line alone), short (the verdict and the one line
    # after it; verdict_first and verify), full (the whole judgment; reasoning_first). null: full for
    # reasoning_first, short otherwise. With none, nothing but the verdict is generated or trained.
    explanation: Optional[str] = None
    # reasoning_first (the recipe: reasoning, then "Final verdict: [[X]]") | verdict_first
    # ("Verdict: [[X]]", then a short explanation: small judges; use template judge_verdict_first).
    format: str = "reasoning_first"
    n: int = 15  # judgments per (pair, order) (the paper: N=15); with n_max, the size of each wave
    # Adaptive sampling: waves of n judgments until the first correct one per (pair, order), at most
    # n_max each (null: one wave of n, the recipe). Kept judgments have the same distribution.
    n_max: Optional[int] = None
    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int = 256  # reasoning budget before the verdict (verdict_first: explanation budget)
    frequency_penalty: float = 0.0  # > 0 against degenerate loops (output tokens only; not on the verdict)
    seed: int = 0
    balance: bool = True  # equal A-wins and B-wins
    # mode absolute/both: no score holds more than an even share of the kept gradings (over the
    # scores that occur), so the trained grader does not learn one score.
    score_balance: bool = True
    # Swap augmentation (JudgeLM): an order with no correct judgment takes the exact mirror of the
    # other order's kept one (answers swapped, A/B references swapped, verdict flipped).
    swap: bool = False
    # Constrained judging only: decide each verdict from its log-odds minus the pair's mean over both
    # orders (the position bias), instead of the raw forced choice (contextual calibration).
    calibrate: bool = False
    # A judgment is degenerate when more than this share of its word 4-grams repeat (reported in the
    # judge summary); drop_degenerate: never keep one as an SFT target.
    degenerate_threshold: float = 0.5
    drop_degenerate: bool = False

    def __post_init__(self) -> None:
        self._check(self.mode in JUDGE_MODES, "mode", f"must be one of {'|'.join(JUDGE_MODES)}, got {self.mode!r}")
        self._check(self.format in JUDGE_FORMATS, "format", f"must be one of {'|'.join(JUDGE_FORMATS)}, got {self.format!r}")
        self._check(self.explanation is None or self.explanation in EXPLANATIONS, "explanation",
                    f"must be one of {'|'.join(EXPLANATIONS)} or null, got {self.explanation!r}")
        self._check(self.explanation != "short" or self.format == "verdict_first" or self.mode == "verify", "explanation",
                    "short keeps the line after the verdict: it needs judge.format=verdict_first (or judge.mode=verify)")
        self._check(self.explanation != "full" or (self.format == "reasoning_first" and self.mode != "verify"),
                    "explanation", "full keeps the reasoning before the verdict: it needs judge.format=reasoning_first "
                    "(verify verdicts come first: none or short)")
        self._check(self.n >= 1, "n", f"must be >= 1, got {self.n}")
        self._check(self.n_max is None or self.n_max >= self.n, "n_max", f"must be >= judge.n ({self.n}) or null, got {self.n_max}")
        self._check(0 <= self.frequency_penalty <= 2, "frequency_penalty", "must be in [0, 2] (0 = off)")
        self._check(0 < self.degenerate_threshold < 1, "degenerate_threshold", "must be in (0, 1)")
        self._check(self.temperature >= 0, "temperature", "must be >= 0")
        self._check(0 < self.top_p <= 1, "top_p", f"must be in (0, 1], got {self.top_p}")
        self._check(self.max_tokens >= 1, "max_tokens", "must be >= 1")

    @property
    def explained(self) -> str:
        """``explanation`` resolved: null is full for reasoning_first, short otherwise."""
        if self.explanation is not None:
            return self.explanation
        return "full" if self.format == "reasoning_first" and self.mode != "verify" else "short"


@dataclass
class JudgeFileConfig(BaseConfig):
    """``selftaught judge``: the judge (``model.path``) decides a file of response pairs in both orders,
    or (``mode=absolute``) grades a file of responses 1-5 against a rubric."""

    KEY: ClassVar[str] = "judge_file"
    path: Optional[str] = None  # jsonl | json | parquet of pairs (or of responses); required by `selftaught judge`
    # pairwise: decide pairs of responses (both orders). absolute: grade single responses 1-5 against a
    # rubric (Prometheus direct assessment: feedback, then "[RESULT] n").
    mode: str = "pairwise"
    format: str = "auto"  # auto (from the suffix) | jsonl | json | parquet
    id_field: Optional[str] = "id"  # absent: <file stem>-<line>
    instruction_field: str = "instruction"
    a_field: str = "response_a"
    b_field: str = "response_b"
    reference_field: Optional[str] = "reference"  # optional per row: shown to the judge after the instruction
    # absolute mode: the response, its rubric (a string, or {criteria, score1_description..score5_description};
    # absent: the shipped general rubric) and a human 1-5 score (when given: Pearson and Spearman with it)
    response_field: str = "response"
    rubric_field: Optional[str] = "rubric"
    score_field: Optional[str] = "score"
    absolute_template: str = "absolute"
    limit: Optional[int] = None
    out_dir: Optional[str] = None  # null: <output_dir>/<name>/judged/<file stem>
    # When the two orders disagree (or one does not parse): "tie", or "logprob": the verdict
    # log-odds averaged over both orders decide (constrained decoding only; position bias removed).
    # "verify" (a judge trained with judge.mode=verify): each response asked yes/no alone in the verify
    # template; the higher P(yes) wins (constrained decoding only).
    decide: str = "tie"
    majority_k: int = 0  # > 1: also k samples per order at eval.temperature/top_p; the 2k votes decide
    constrained: Optional[bool] = None  # null: the judge's default (engine.constrained / the embedded model)
    dpo_out: Optional[str] = None  # also write TRL DPO rows (prompt/chosen/rejected) here: .jsonl or .parquet

    def __post_init__(self) -> None:
        self._check(self.mode in ("pairwise", "absolute"), "mode", f"must be pairwise|absolute, got {self.mode!r}")
        self._check(self.format in ("auto", "jsonl", "json", "parquet"), "format", "must be auto|jsonl|json|parquet")
        for name in ("instruction_field", "a_field", "b_field"):
            self._check(bool(getattr(self, name)), name, "must be set")
        self._check(self.a_field != self.b_field, "b_field", f"must differ from a_field ({self.a_field!r})")
        self._check(self.limit is None or self.limit > 0, "limit", f"must be > 0, got {self.limit}")
        self._check(self.decide in ("tie", "logprob", "verify"), "decide", f"must be tie|logprob|verify, got {self.decide!r}")
        self._check(self.decide != "verify" or self.majority_k == 0, "majority_k", "is a pairwise knob; decide=verify "
                    "reads each response's P(yes) once")
        self._check(self.majority_k == 0 or self.majority_k > 1, "majority_k", f"must be 0 (off) or > 1, got {self.majority_k}")
        self._check(self.dpo_out is None or self.dpo_out.endswith((".jsonl", ".parquet")), "dpo_out",
                    f"must end in .jsonl or .parquet, got {self.dpo_out!r}")
        self._check(self.mode == "pairwise" or (self.dpo_out is None and self.majority_k == 0 and self.decide == "tie"),
                    "mode", "absolute grades single responses: dpo_out, majority_k and decide are pairwise knobs")
