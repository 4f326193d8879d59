"""The eval stage: ``eval`` (its sets, modes and the held-out pairs of ``eval.holdout``)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import ClassVar, Optional

from omegaconf import MISSING

from selftaught.config.base import BaseConfig, DATA_FORMATS, EVAL_MODES, JUDGE_FORMATS, VERDICT_MODES


@dataclass
class EvalSetConfig(BaseConfig):
    KEY: ClassVar[str] = "eval.sets"
    # A file or folder (every *.json/*.jsonl/*.parquet in it), or a hub dataset id (owner/name, loaded
    # with datasets.load_dataset where the hub is reachable, cached once as parquet). Row formats are
    # detected: LLMBar, RewardBench, RewardBench 2, MT-Bench human votes (see eval_data.SOURCES).
    path: str = "builtin:demo_eval.jsonl"
    format: str = "auto"  # auto | jsonl | json | parquet (row schema is detected)
    name: Optional[str] = None  # default: the file or folder stem
    split: Optional[str] = None  # a hub dataset's split; null: its only one (or "test", then "train")

    def __post_init__(self) -> None:
        self._check(bool(self.path) and self.path != MISSING, "path", "is required (a file or folder of pairs)")
        self._check(self.format in DATA_FORMATS, "format", f"must be {'|'.join(DATA_FORMATS)}, got {self.format!r}")


@dataclass
class HoldoutConfig(BaseConfig):
    """A label-free progress signal in the run's own domain: before ``select``, a fixed share of the run's
    instructions (the smallest hashes of their ids) is held out; the generator makes their pairs once, with
    ``pairs``' method, and every round's judge, the seed included, is evaluated on them (eval set
    ``holdout``). They never reach a round's pairs, judge, SFT rows or training (``stages.holdout``)."""

    KEY: ClassVar[str] = "eval.holdout"
    enabled: bool = True
    share: float = 0.1  # of the instructions the run loads
    min_size: int = 40  # at least this many, where the pool keeps as many for training
    max_size: int = 400  # at most (each round evaluates every one)
    seed: int = 0  # the id hash's salt: another seed holds out other instructions
    name: str = "holdout"  # its eval set's name

    def __post_init__(self) -> None:
        self._check(0 < self.share < 1, "share", f"must be in (0, 1), got {self.share}")
        self._check(self.min_size >= 1, "min_size", f"must be >= 1, got {self.min_size}")
        self._check(self.max_size >= self.min_size, "max_size", f"must be >= eval.holdout.min_size ({self.min_size}), got {self.max_size}")
        self._check(bool(self.name) and "/" not in self.name, "name", f"must be a name without '/', got {self.name!r}")


@dataclass
class EvalConfig(BaseConfig):
    KEY: ClassVar[str] = "eval"
    enabled: bool = True
    sets: list[EvalSetConfig] = field(default_factory=lambda: [EvalSetConfig()])
    holdout: HoldoutConfig = field(default_factory=HoldoutConfig)
    # The judge is evaluated in the format it is trained on: null = judge.template / judge.format.
    template: Optional[str] = None
    format: Optional[str] = None
    # Decodings to evaluate (each reported on its own): constrained (forced one-token verdict) and
    # free (no constraint, strict parse). Constrained also reports calibrated_accuracy: each pair's
    # verdict log-odds averaged over both orders, i.e. with the position bias removed.
    # absolute (opt-in): each answer of a pair graded 1-5 alone (absolute_template, the general rubric);
    # the pair is right when the better answer scores strictly higher (score_accuracy).
    modes: list[str] = field(default_factory=lambda: ["constrained", "free"])
    absolute_template: Optional[str] = None  # null: judge.absolute_template
    # verify (added when judge.mode=verify): each answer of a pair asked "does it answer the instruction?"
    # alone; the answer with the higher P(yes) wins, in both orders alike (no position).
    verify_template: Optional[str] = None  # null: judge.verify_template
    # RewardBench 2's generative mode, beside its round robin: each best-of-4 item (one correct candidate) is also
    # judged once per pairwise decoding mode with all four answers in one prompt, the correct one at a position
    # drawn from the item's id; four_way_accuracy scores it as the leaderboard does (right 1, another letter 0,
    # no verdict 0.25). four_way_template null: judge_4way, or judge_4way_verdict_first for verdict_first judges.
    four_way: bool = False
    four_way_template: Optional[str] = None
    limit: Optional[int] = None  # pairs per file
    max_tokens: int = 256  # reasoning budget; greedy decoding
    frequency_penalty: float = 0.0
    # > 1: also majority vote over this many samples at temperature/top_p (the paper: 32, 0.7/0.9).
    majority_k: int = 0
    temperature: float = 0.7
    top_p: float = 0.9
    log_samples: int = 32  # judgments per round shown in the tracker's table

    @property
    def four_way_prompt(self) -> str:
        """``four_way_template`` resolved by the judge's format (``format``)."""
        if self.four_way_template:
            return self.four_way_template
        return "judge_4way_verdict_first" if self.format == "verdict_first" else "judge_4way"

    def __post_init__(self) -> None:
        self._check(not self.enabled or len(self.sets) > 0, "sets", "needs at least one set when eval.enabled")
        names = [eval_set_name(x) for x in self.sets]
        self._check(len(set(names)) == len(names), "sets", f"names must be unique, got {names}")
        self._check(self.format is None or self.format in JUDGE_FORMATS, "format", f"must be one of {'|'.join(JUDGE_FORMATS)} or null")
        m = self.modes
        self._check(len(m) > 0 and all(x in EVAL_MODES for x in m) and len(set(m)) == len(m), "modes",
                    f"must be a non-empty list of distinct {'|'.join(EVAL_MODES)}, got {list(m)}")
        self._check(not self.four_way or any(x in VERDICT_MODES for x in m), "four_way",
                    "judges four answers in one prompt in mode constrained or free: add one to eval.modes")
        self._check(self.limit is None or self.limit > 0, "limit", f"must be > 0, got {self.limit}")
        self._check(self.max_tokens >= 1, "max_tokens", "must be >= 1")
        self._check(0 <= self.frequency_penalty <= 2, "frequency_penalty", "must be in [0, 2] (0 = off)")
        self._check(self.majority_k == 0 or self.majority_k > 1, "majority_k", f"must be 0 (off) or > 1, got {self.majority_k}")
        self._check(self.temperature >= 0, "temperature", "must be >= 0")
        self._check(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        self._check(self.log_samples >= 0, "log_samples", "must be >= 0")


def eval_set_name(s: EvalSetConfig) -> str:
    if s.name:
        return s.name
    base = s.path.split(":", 1)[1] if s.path.startswith("builtin:") else s.path
    return os.path.splitext(os.path.basename(os.path.normpath(base)))[0]
