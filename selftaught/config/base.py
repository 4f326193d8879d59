"""What every config section shares: the frozen ``BaseConfig``, ``ConfigError`` (its message starts with the key), the
choice lists the sections check against, and the hash and path helpers."""
from __future__ import annotations

import functools
import hashlib
import json
import os
import typing
from dataclasses import FrozenInstanceError, fields, is_dataclass
from typing import Any, ClassVar

# The recipe's 15 instruction categories (Wang et al. 2024).
RECIPE_CATEGORIES = [
    "Coding",
    "Mathematical reasoning",
    "Asking for Advice",
    "Brainstorming",
    "Classification",
    "Closed QA",
    "Creative Writing",
    "Extraction",
    "Inhabiting a Character/Persona",
    "Open QA",
    "Rewriting",
    "Summarization",
    "Knowledge and Reasoning",
    "Humanity/History/Social Studies",
    "Other",
]

EMBEDDED_MODEL = "embedded:smollm2"

JUDGE_FORMATS = ("reasoning_first", "verdict_first")  # parsing.FORMATS (no import: config stays dependency-free)

EVAL_MODES = ("constrained", "free", "absolute", "verify")
VERDICT_MODES = ("constrained", "free")  # the eval modes that decode an [[X]] verdict line

# What the loop trains: pairwise verdicts, 1-5 gradings, both, or yes/no verdicts on one answer at a time (verify).
JUDGE_MODES = ("pairwise", "absolute", "both", "verify")

# The judged text kept as an SFT target: the verdict line alone, the verdict and one line, the whole judgment.
EXPLANATIONS = ("none", "short", "full")

PAIR_SOURCES = ("joint", "separate", "neighbor", "mixed")  # pairs.rejected

ENGINE_BACKENDS = ("vllm", "hf", "openai")

DATA_FORMATS = ("auto", "jsonl", "json", "parquet")

TRACKING_BACKENDS = ("wandb", "none")

TRACKING_MODES = ("offline", "online", "disabled")

ZERO_STAGES = {"zero2": 2, "zero3": 3}  # train.strategy -> the zero_optimization.stage its JSON must have

# transformers SchedulerType values usable without extra scheduler kwargs.
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay")

# The Hydra config and the DeepSpeed JSONs ship inside the package (a wheel install has no checkout).
CONF_PACKAGE = "selftaught.conf"

class ConfigError(ValueError):
    """A config value is invalid; the message starts with the key."""

def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")

def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)

class BaseConfig:
    """A config section, frozen once built as veRL's ``BaseConfig`` is: assigning a field raises
    ``FrozenInstanceError`` (``dataclasses.replace`` builds a checked copy). Not
    ``dataclass(frozen=True)``: OmegaConf makes those read-only nodes, onto which Hydra cannot
    compose the yaml and the overrides."""

    # Where the section sits in RunConfig, the prefix of its error keys; ``to_object`` rewrites it
    # where the same class sits elsewhere (generator.engine, data.also.0, eval.sets.1).
    KEY: ClassVar[str] = ""

    def __setattr__(self, name: str, value: Any) -> None:
        # __init__ sets each field once; anything later (or a name outside the schema) is refused.
        if name in self.__dict__ or name not in _fields(type(self)):
            raise FrozenInstanceError(f"cannot assign to {_join(self.KEY, name)}: configs are frozen (use dataclasses.replace)")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete {_join(self.KEY, name)}: configs are frozen")

    def _check(self, cond: bool, name: str, msg: str) -> None:
        _check(cond, _join(self.KEY, name), msg)

@functools.lru_cache(maxsize=None)
def _fields(cls: type) -> dict[str, Any]:
    """Field name -> resolved type of a dataclass (annotations are strings under __future__)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}

def config_hash(*parts: Any) -> str:
    """Stable short hash of dataclasses / plain values (used by stage completion markers)."""

    def plain(x: Any) -> Any:
        if is_dataclass(x) and not isinstance(x, type):
            return {f.name: plain(getattr(x, f.name)) for f in fields(x)}
        if isinstance(x, dict):
            return {str(k): plain(v) for k, v in sorted(x.items())}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x

    blob = json.dumps([plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]

def abspath(p: str) -> str:
    return os.path.abspath(os.path.expanduser(p))
