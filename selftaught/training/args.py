"""A ``TrainConfig`` -> the trainers' arguments: ``trl.SFTConfig`` and ``trl.DPOConfig`` keywords, precision, LoRA."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from selftaught.config import DpoConfig, GrpoConfig, LoraConfig, TrainConfig


def on_gpu(cfg: TrainConfig) -> bool:
    import torch

    if not cfg.use_gpu:
        return False
    if not torch.cuda.is_available():
        raise RuntimeError("train.use_gpu=true but CUDA is not available in this worker process")
    return True


def use_packing(cfg: TrainConfig, gpu: bool) -> bool:
    """Token-budget packing on GPU unless ``train.packing=false``; off on CPU unless asked for."""
    return gpu if cfg.packing is None else bool(cfg.packing)


def attention_implementation(cfg: TrainConfig, gpu: bool, packed: bool) -> Optional[str]:
    """``train.attention`` resolved for this worker: auto is FlashAttention-2 on GPU where ``flash_attn`` is
    installed, else SDPA row by row for packed micro-batches (``training.attention``; masked SDPA under
    ``train.torch_compile``) and transformers' default (None: SDPA where the model has it) otherwise.
    sdpa_rows on unpacked batches is plain SDPA."""
    import importlib.util

    choice = cfg.attention
    if choice == "auto":
        if gpu and importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
        if not packed:
            return None
        # torch.compile traces one masked SDPA over a pack; row by row it would break the graph in every layer
        # and recompile for new row lengths (CPU: 0.63x eager, against 1.25x traced masked; README)
        choice = "sdpa" if cfg.torch_compile else "sdpa_rows"
    if choice == "sdpa_rows":
        if not packed:
            return "sdpa"
        from selftaught.training import attention

        return attention.register()
    return choice


def masks_packs(attn: Optional[str]) -> bool:
    """Whether this attention runs a pack as one sequence under a block-diagonal mask (transformers' sdpa and
    eager): its compute and the mask it saves grow with the square of the pack's length."""
    return attn in (None, "sdpa", "eager")


def use_bf16(cfg: TrainConfig, gpu: bool) -> bool:
    """bf16 compute: on GPU unless ``train.bf16=false``; on CPU only with ``train.bf16=true`` (``bf16_weights``)."""
    return gpu if cfg.bf16 is None else bool(cfg.bf16)


def bf16_weights(cfg: TrainConfig, gpu: bool) -> bool:
    """Whether the model is loaded in bf16: on GPU, as the GPU path always has (DeepSpeed's bf16 keeps float32
    master weights in its optimizer). On CPU bf16 is autocast over float32 weights and optimizer: the matmuls run
    in bf16 (1.5x a 135M step on a CPU with AVX-512 bf16, README), while an update of lr 3e-5 would round away in
    bf16 weights."""
    return gpu and use_bf16(cfg, gpu)


def cpu_has_native_bf16() -> Optional[bool]:
    """Whether this CPU computes bf16 natively (AVX-512 bf16 or AMX), from /proc/cpuinfo; None where unknown.
    Without it, bf16 autocast is emulated and slower than float32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), None)
    except OSError:
        return None
    return None if flags is None else bool({"avx512_bf16", "amx_bf16"} & set(flags))


def dtype_name(cfg: TrainConfig, gpu: bool) -> str:
    if not use_bf16(cfg, gpu):
        return "float32"
    return "bfloat16" if bf16_weights(cfg, gpu) else "bfloat16 autocast"


def sft_config_kwargs(cfg: TrainConfig, out_dir: str, gpu: bool, deepspeed: Optional[dict] = None) -> dict:
    """Keyword arguments of ``trl.SFTConfig`` for this TrainConfig."""
    bf16 = use_bf16(cfg, gpu)
    kw: dict[str, Any] = dict(
        output_dir=out_dir,
        learning_rate=cfg.lr,
        warmup_steps=cfg.warmup_steps,
        num_train_epochs=cfg.epochs if cfg.epochs > 0 else 1.0,
        max_steps=cfg.max_steps if cfg.max_steps > 0 else -1,
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        lr_scheduler_type=cfg.lr_scheduler,
        weight_decay=cfg.weight_decay,
        gradient_checkpointing=cfg.gradient_checkpointing,
        torch_compile=cfg.torch_compile,
        logging_steps=cfg.logging_steps,
        seed=cfg.seed,
        data_seed=cfg.seed,
        max_length=cfg.max_seq_length,
        # Loss on the completion (the judgment) only; the prompt's labels are -100.
        completion_only_loss=True,
        assistant_only_loss=False,
        packing=False,
        bf16=bf16,
        fp16=False,
        optim="adamw_torch_fused" if gpu else "adamw_torch",
        # Unpacked micro-batches of several rows: rows of similar length together, so padding stays small.
        train_sampling_strategy="group_by_length" if cfg.per_device_batch_size > 1 else "random",
        # Without use_cpu, transformers on a GPU-less worker sees world_size=1 and DeepSpeed's
        # batch-size assertion (train_batch = micro x accum x world) fails.
        use_cpu=not gpu,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        include_num_input_tokens_seen="non_padding",  # gathered over all processes
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    if cfg.gradient_checkpointing:
        kw["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    if deepspeed is not None:
        kw["deepspeed"] = deepspeed
    return kw


def packed_kwargs(pack) -> dict:
    """``SFTConfig`` keywords for a ``packing.PackPlan``: one padding-free pack of ``budget`` tokens per
    micro-batch, the derived accumulation."""
    return dict(packing=True, packing_strategy="bfd", max_length=pack.budget, per_device_train_batch_size=1,
                gradient_accumulation_steps=pack.gradient_accumulation_steps, train_sampling_strategy="random")


def dpo_config_kwargs(cfg: TrainConfig, out_dir: str, gpu: bool, deepspeed: Optional[dict] = None) -> dict:
    """Keyword arguments of ``trl.DPOConfig``: the SFT ones less the SFT-only keys, ``train.dpo``'s beta,
    lr and epochs, and the NLL term on the chosen judgment as TRL's "sft" loss weighted ``nll_weight``."""
    kw = sft_config_kwargs(cfg, out_dir, gpu, deepspeed)
    for k in ("completion_only_loss", "assistant_only_loss", "packing"):
        kw.pop(k)
    kw["train_sampling_strategy"] = "random"  # preference rows have no single length column
    d = cfg.dpo
    kw.update(learning_rate=d.lr or cfg.lr, beta=d.beta,
              loss_type=["sigmoid", "sft"] if d.nll_weight > 0 else ["sigmoid"],
              loss_weights=[1.0, d.nll_weight] if d.nll_weight > 0 else None)
    if d.epochs is not None:
        kw["num_train_epochs"] = d.epochs
    return kw


def grpo_config_kwargs(cfg: TrainConfig, out_dir: str, gpu: bool, deepspeed: Optional[dict] = None) -> dict:
    """Keyword arguments of ``trl.GRPOConfig``: the SFT ones less the SFT-only keys, ``train.grpo``'s sampling,
    reward weights (in ``training.rewards.NAMES`` order), clip, KL, lr and epochs, and who samples
    (``grpo_uses_vllm``)."""
    from selftaught.training.rewards import Weights

    kw = sft_config_kwargs(cfg, out_dir, gpu, deepspeed)
    for k in ("completion_only_loss", "assistant_only_loss", "packing", "max_length", "train_sampling_strategy"):
        kw.pop(k)
    g = cfg.grpo
    kw.update(learning_rate=g.lr or cfg.lr, num_generations=g.num_generations,
              max_completion_length=g.max_completion_length, temperature=g.temperature, top_p=g.top_p,
              beta=g.beta, epsilon=g.epsilon,
              reward_weights=Weights(g.correctness, g.consistency, g.format, g.degeneracy).as_list(),
              use_vllm=grpo_uses_vllm(g.generation, gpu), vllm_mode="colocate",
              log_completions=False,
              # Trainer's counter finds no input name in GRPO's batches (it warns every step); TRL logs num_tokens.
              include_num_input_tokens_seen="no")
    if g.epochs is not None:
        kw["num_train_epochs"] = g.epochs
    return kw


def grpo_uses_vllm(generation: str, gpu: bool) -> bool:
    """``train.grpo.generation``: vllm (TRL's vLLM colocated with training; it must be installed), transformers
    (``generate``), auto (vLLM on a GPU where it is installed, else transformers)."""
    import importlib.util

    installed = importlib.util.find_spec("vllm") is not None
    if generation == "vllm":
        if not (gpu and installed):
            raise RuntimeError("train.grpo.generation=vllm needs a GPU worker with vllm installed "
                               f"(GPU: {gpu}, vllm: {installed}); use auto or transformers")
        return True
    return generation == "auto" and gpu and installed


def peft_config(lora: LoraConfig):
    """A ``peft.LoraConfig`` for causal-LM LoRA, or ``None`` when disabled."""
    if not lora.enabled:
        return None
    from peft import LoraConfig as PeftLoraConfig

    target = lora.target_modules
    if not isinstance(target, str):
        target = [str(x) for x in target]
    return PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                          target_modules=target, bias="none", task_type="CAUSAL_LM")


def train_config(obj: Any) -> TrainConfig:
    """A TrainConfig, or the plain dict of one that crossed to a Ray worker."""
    if isinstance(obj, TrainConfig):
        return obj
    d = dict(obj)
    lora = d.pop("lora", None) or {}
    dpo = d.pop("dpo", None) or {}
    grpo = d.pop("grpo", None) or {}
    return TrainConfig(**d, lora=lora if isinstance(lora, LoraConfig) else LoraConfig(**lora),
                       dpo=dpo if isinstance(dpo, DpoConfig) else DpoConfig(**dpo),
                       grpo=grpo if isinstance(grpo, GrpoConfig) else GrpoConfig(**grpo))


def train_config_dict(cfg: TrainConfig) -> dict:
    """A plain dict of a TrainConfig (what crosses to Ray workers)."""
    return dataclasses.asdict(cfg)
