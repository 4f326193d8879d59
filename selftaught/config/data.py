"""The data stages: ``data`` (instruction files and their field mapping), ``categorize``, ``select``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

from omegaconf import MISSING

from selftaught.config.base import BaseConfig, DATA_FORMATS, RECIPE_CATEGORIES


@dataclass
class DataSourceConfig(BaseConfig):
    """One more instruction file for ``data.also``, with its own field mapping (see ``DataConfig``)."""

    KEY: ClassVar[str] = "data.also"
    path: str = MISSING
    format: str = "auto"
    instruction_field: str = "instruction"
    input_field: Optional[str] = None
    id_field: Optional[str] = None
    category_field: Optional[str] = None

    def __post_init__(self) -> None:
        self._check(bool(self.path) and self.path != MISSING, "path", "is required (an instruction file)")
        self._check(self.format in DATA_FORMATS, "format", f"must be {'|'.join(DATA_FORMATS)}, got {self.format!r}")
        self._check(bool(self.instruction_field), "instruction_field", "must be set")


@dataclass
class DataConfig(BaseConfig):
    KEY: ClassVar[str] = "data"
    # jsonl / json / parquet file of instructions; the demo set ships inside the package.
    path: str = "builtin:demo_instructions.jsonl"
    format: str = "auto"  # auto (by suffix) | jsonl | json | parquet
    # Dotted paths into each row (list indices allowed): Arena-Hard "turns.0.content",
    # self-instruct "instruction" + input_field "instances.0.input".
    instruction_field: str = "instruction"
    input_field: Optional[str] = None
    # A row without this field gets the id <file stem>-<line>, as with no id_field at all.
    id_field: Optional[str] = None
    # Optional reference label per row (one of categorize.categories): the categorize summary
    # then reports categorization accuracy against it. The demo instructions carry one.
    category_field: Optional[str] = None
    limit: Optional[int] = None  # read at most this many valid rows (all files together)
    # More files, read after ``path``, each with its own mapping; their ids get the file stem as a
    # prefix ("self_instruct_seed_tasks:seed_task_0") so ids stay unique across files.
    also: list[DataSourceConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._check(bool(self.path) and self.path != MISSING, "path", "is required (data.path=/abs/path/file.jsonl)")
        self._check(self.format in DATA_FORMATS, "format", f"must be {'|'.join(DATA_FORMATS)}, got {self.format!r}")
        self._check(bool(self.instruction_field), "instruction_field", "must be set")
        self._check(self.limit is None or self.limit > 0, "limit", f"must be > 0, got {self.limit}")


@dataclass
class CategorizeConfig(BaseConfig):
    KEY: ClassVar[str] = "categorize"
    categories: list[str] = field(default_factory=lambda: list(RECIPE_CATEGORIES))
    template: str = "categorize"
    max_tokens: int = 48
    # Constrained only: pick the category by its first token's log-probability minus the same
    # under content-free instructions (contextual calibration), not by free choice; a small model
    # otherwise answers its favourite category (SmolLM2: "Coding" for 44 of 60 demo instructions).
    calibrate: bool = False

    def __post_init__(self) -> None:
        c = self.categories
        self._check(len(c) >= 2, "categories", "needs at least 2 categories")
        self._check(len(set(c)) == len(c), "categories", "has duplicates")
        self._check(all(isinstance(x, str) and x and x.strip() == x and "\n" not in x for x in c), "categories",
                    "names must be non-empty single lines without surrounding spaces")
        self._check(self.max_tokens >= 1, "max_tokens", "must be >= 1")


@dataclass
class SelectConfig(BaseConfig):
    KEY: ClassVar[str] = "select"
    # Explicit per-category quotas, e.g. {Coding: 100}; empty = use ``categories`` + ``balance``.
    quotas: dict[str, int] = field(default_factory=dict)
    # Categories to keep (empty = all). "Other" rows flagged unparseable are never selected.
    categories: list[str] = field(default_factory=list)
    balance: bool = True  # equal share per kept category (round-robin) up to ``limit``
    limit: Optional[int] = None
    min_complexity: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        for k, v in self.quotas.items():
            self._check(v >= 0, f"quotas.{k}", f"must be >= 0, got {v}")
        self._check(self.limit is None or self.limit > 0, "limit", f"must be > 0, got {self.limit}")
        self._check(1 <= self.min_complexity <= 10, "min_complexity", "must be in 1..10")
