"""The pairs stage: ``pairs`` (how the rejected answer is made), its label checks and the neighbor search."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import ClassVar

from selftaught.config.base import BaseConfig, PAIR_SOURCES


@dataclass
class NeighborConfig(BaseConfig):
    """``pairs.rejected=neighbor|mixed``: the rejected answer to x is the generator's answer to a *similar but
    different* instruction of the same pool (LLMBar's Adversarial-Neighbor construction): the k most similar
    instructions whose TF-IDF cosine with x lies in [min_similarity, max_similarity] (word unigrams, English
    stop words removed; ``selftaught/similarity.py``), each answered as x is. A pair whose two answers say the
    same is dropped by ``pairs.checks``."""

    KEY: ClassVar[str] = "pairs.neighbor"
    k: int = 1  # neighbor pairs per instruction (the k most similar in the band)
    min_similarity: float = 0.1  # below: a different topic, too easy to tell apart
    max_similarity: float = 0.6  # above: a paraphrase of x, whose answer may answer x too

    def __post_init__(self) -> None:
        self._check(self.k >= 1, "k", f"must be >= 1, got {self.k}")
        self._check(0 <= self.min_similarity < self.max_similarity <= 1, "min_similarity",
                    f"must satisfy 0 <= min_similarity < max_similarity <= 1, got {self.min_similarity}, {self.max_similarity}")


@dataclass
class PairChecksConfig(BaseConfig):
    """Label checks on each pair whose x' the model wrote (``joint``/``separate``), by character n-gram cosine
    (``similarity.text_similarity``); a pair that fails one is dropped (or, ``separate`` with ``pairs.retries``,
    written again), counted by reason in the pairs summary. 1.0 turns a check off; ``enabled=false`` all of them
    (the similarities are still recorded)."""

    KEY: ClassVar[str] = "pairs.checks"
    # x' that restates x: its answer is an answer to x too.
    max_instruction_similarity: float = 0.75
    # x' closer to x's answer than to x: the model answered x instead of rewriting it ("The answer is: ...").
    max_instruction_answer_similarity: float = 0.5
    # the two answers say the same thing.
    max_answer_similarity: float = 0.8
    # the rejected answer restates x' instead of answering it.
    max_rejected_instruction_similarity: float = 0.8
    enabled: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name != "enabled":
                self._check(0 < v <= 1, f.name, f"must be in (0, 1] (1 turns the check off), got {v}")


@dataclass
class PairsConfig(BaseConfig):
    KEY: ClassVar[str] = "pairs"
    # How the rejected answer is made. joint (the recipe): one generation from ``modify_template``
    # writes x' and its answer in marked blocks. separate (small models): x' alone from the few-shot
    # ``instruction_template``, then x' is answered with ``answer_template`` exactly as x is, so the
    # two answers differ in what they answer, not in style (SmolLM2-135M: see README, pairs yield).
    # neighbor: the answer to a similar but different instruction of the pool (``neighbor``), one
    # answer per instruction and a label that holds whatever the generator; mixed: separate's pairs
    # and neighbor pairs.
    rejected: str = "joint"
    answer_template: str = "answer"
    modify_template: str = "modify"
    instruction_template: str = "modify_instruction"
    max_tokens: int = 384
    modify_max_tokens: int = 640
    temperature: float = 0.0
    # Token budget of the modified instruction x' (constrained joint mode and separate mode).
    max_instruction_tokens: int = 160
    frequency_penalty: float = 0.0  # > 0 against looping answers (output tokens only, both engines)
    # separate mode: an x' that is empty or the same as x, or whose answer equals x's, is written
    # again at retry_temperature, up to this many times (greedy decoding would repeat it).
    retries: int = 0
    retry_temperature: float = 0.8
    checks: PairChecksConfig = field(default_factory=PairChecksConfig)
    neighbor: NeighborConfig = field(default_factory=NeighborConfig)

    def __post_init__(self) -> None:
        self._check(self.rejected in PAIR_SOURCES, "rejected", f"must be {'|'.join(PAIR_SOURCES)}, got {self.rejected!r}")
        self._check(self.max_tokens >= 8, "max_tokens", "must be >= 8")
        self._check(self.modify_max_tokens >= 16, "modify_max_tokens", "must be >= 16")
        self._check(self.temperature >= 0, "temperature", "must be >= 0")
        self._check(self.max_instruction_tokens >= 8, "max_instruction_tokens", "must be >= 8")
        self._check(0 <= self.frequency_penalty <= 2, "frequency_penalty", "must be in [0, 2] (0 = off)")
        self._check(self.retries >= 0, "retries", f"must be >= 0, got {self.retries}")
        self._check(self.retry_temperature > 0, "retry_temperature", "must be > 0")
