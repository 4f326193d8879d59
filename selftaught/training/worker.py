"""One training process: ``train_worker`` = ``load`` → ``fit`` → ``save``, the loop Ray Train runs on
every worker (``selftaught.training.launch``); ``train.objective`` picks SFT (``load``), DPO
(``load_dpo``), GRPO (``load_grpo``) or SFT then DPO/GRPO from the SFT model. No Ray code: it also runs
directly in one process with no distributed environment (it then sets up a world of size 1 itself).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from typing import Optional

from selftaught import atomic
from selftaught.config import TrainConfig, load_deepspeed
from selftaught.training import budget, packing
from selftaught.training.args import (attention_implementation, bf16_weights, cpu_has_native_bf16, dpo_config_kwargs,
                                      dtype_name, grpo_config_kwargs, masks_packs, on_gpu, packed_kwargs,
                                      peft_config, sft_config_kwargs, train_config, use_bf16, use_packing)
from selftaught.training.data import dpo_dataset, sft_dataset
from selftaught.training.export import retie_embeddings, share_permissions
from selftaught.training.throughput import Throughput
from selftaught.training.weighted import weighted_sft_trainer

log = logging.getLogger("selftaught.train")

METRICS_FILE = "train_metrics.json"
ADAPTER_DIR = "lora_adapter"  # LoRA runs: the adapter, next to the merged full model
SFT_DIR = "sft_stage"  # sft_then_dpo|grpo: the SFT model, where DPO or GRPO starts (removed once it saved)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ensure_process_env(gpu: bool) -> None:
    """Called standalone (no launcher): a world of size 1 for accelerate/DeepSpeed. Under Ray Train
    (or torchrun) RANK/WORLD_SIZE/MASTER_* are already set and nothing changes."""
    if not gpu:
        # DeepSpeed must not probe for CUDA on a CPU worker; set before deepspeed is imported.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if "RANK" not in os.environ and "WORLD_SIZE" not in os.environ:
        os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())})


def train_worker(config: dict) -> None:
    """Train on one process (a Ray Train worker, or standalone) and write the model to ``out_dir``.

    ``config``: ``data_path`` (an SFT parquet file, or a stage's ``data/`` folder of shards),
    ``base_model`` (HF folder), ``out_dir`` (absolute; every worker sees the same path: shared
    filesystem), ``train`` (TrainConfig or its dict). Rank 0 writes ``out_dir``: the full model (LoRA
    merged into the base), tokenizer, generation config and ``train_metrics.json`` (written last:
    its presence means the folder is complete).
    """
    cfg = train_config(config["train"])
    gpu = on_gpu(cfg)
    _ensure_process_env(gpu)
    base, out = str(config["base_model"]), str(config["out_dir"])
    if not gpu and use_bf16(cfg, gpu) and cpu_has_native_bf16() is False:
        log.warning("train.bf16=true on a CPU without AVX-512 bf16 or AMX: autocast is emulated, slower than "
                    "float32; set train.bf16=null")
    if cfg.objective == "sft":
        trainer, lora = load(cfg, str(config["data_path"]), base, out, gpu)
        save(trainer, cfg, lora, base, out, gpu, fit(trainer))
        return
    sft_metrics: dict = {}
    if cfg.objective.startswith("sft_then_"):  # SFT into a folder of its own, then DPO/GRPO from it
        sft_dir = os.path.join(out, SFT_DIR)
        trainer, lora = load(cfg, str(config["data_path"]), base, sft_dir, gpu)
        sft_metrics = fit(trainer)
        save(trainer, cfg, lora, base, sft_dir, gpu, sft_metrics)
        del trainer
        base = sft_dir
    if cfg.objective.endswith("grpo"):
        from selftaught.training import grpo

        trainer, lora = load_grpo(cfg, str(config["grpo_path"]), base, out, gpu)
        metrics = {**fit(trainer), **grpo.summary(trainer.state.log_history)}
    else:
        trainer, lora = load_dpo(cfg, str(config["dpo_path"]), base, out, gpu)
        metrics = {**fit(trainer), **dpo_margins(trainer.state.log_history)}
    if sft_metrics:
        metrics["sft"] = {k: v for k, v in sft_metrics.items() if k not in ("log_history", "step_seconds")}
    save(trainer, cfg, lora, base, out, gpu, metrics)
    if sft_metrics and trainer.is_world_process_zero():
        shutil.rmtree(os.path.join(out, SFT_DIR), ignore_errors=True)  # the DPO/GRPO model is the round's judge


def dpo_margins(history: list[dict]) -> dict:
    """The DPO reward margin (beta x the chosen-minus-rejected log-ratio to the reference) and accuracy at the
    first and last logged steps: the margin starts at 0 and rises as the policy moves toward chosen."""
    logged = [h for h in history if "rewards/margins" in h]
    if not logged:
        return {}
    return {"dpo_margin_first": float(logged[0]["rewards/margins"]), "dpo_margin_last": float(logged[-1]["rewards/margins"]),
            "dpo_accuracy_last": float(logged[-1].get("rewards/accuracies", float("nan")))}


def load_dpo(cfg: TrainConfig, data_path: str, base_model: str, out_dir: str, gpu: bool):
    """The preference rows and a ``DPOTrainer`` on ``base_model`` (its frozen copy is the reference;
    with LoRA, the model with the adapter disabled), and the LoRA config or None."""
    from trl import DPOConfig, DPOTrainer

    from selftaught.io import read_records

    score_targets_only(gpu, cfg.torch_compile)
    dataset = dpo_dataset(read_records(data_path))
    ds_cfg = load_deepspeed(cfg)
    tokenizer = _tokenizer(base_model)
    args = DPOConfig(**dpo_config_kwargs(cfg, out_dir, gpu, ds_cfg))
    model = _model(cfg, base_model, gpu, ds_cfg, tokenizer, attention_implementation(cfg, gpu, packed=False))
    lora = peft_config(cfg.lora)
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=lora)
    return trainer, lora


def load_grpo(cfg: TrainConfig, data_path: str, base_model: str, out_dir: str, gpu: bool):
    """The ``grpo_data`` prompts and a ``GRPOTrainer`` (``training.grpo``) on ``base_model`` that samples
    ``train.grpo.num_generations`` judgments per prompt and rewards them; and the LoRA config or None."""
    from trl import GRPOConfig, GRPOTrainer

    from selftaught.io import read_records
    from selftaught.training import grpo

    score_targets_only(gpu, cfg.torch_compile)
    ds_cfg = load_deepspeed(cfg)
    tokenizer = _tokenizer(base_model)  # TRL pads prompts on the left itself; the saved tokenizer stays as it was
    dataset = grpo.dataset(read_records(data_path), tokenizer, cfg.grpo.prefill)
    args = GRPOConfig(**grpo_config_kwargs(cfg, out_dir, gpu, ds_cfg))
    model = _model(cfg, base_model, gpu, ds_cfg, tokenizer, attention_implementation(cfg, gpu, packed=False))
    lora = peft_config(cfg.lora)
    with grpo.reference_as_causal_lm():
        trainer_cls = grpo.judge_grpo_trainer(GRPOTrainer, group_pairs=cfg.grpo.group == "pair")
        trainer = trainer_cls(model=model, reward_funcs=list(grpo.REWARD_FUNCS), args=args, train_dataset=dataset,
                              processing_class=tokenizer, peft_config=lora)
    return trainer, lora


def load(cfg: TrainConfig, data_path: str, base_model: str, out_dir: str, gpu: bool):
    """The SFT rows, the DeepSpeed config, tokenizer and model: an ``SFTTrainer`` ready to train (and
    the LoRA config, or None)."""
    from trl import SFTConfig, SFTTrainer

    from selftaught.io import read_records

    score_targets_only(gpu, cfg.torch_compile)
    dataset = sft_dataset(read_records(data_path))
    ds_cfg = load_deepspeed(cfg)  # checked before Ray started (config.validate); read again here, on the worker
    tokenizer = _tokenizer(base_model)
    kw = sft_config_kwargs(cfg, out_dir, gpu, ds_cfg)
    packed = use_packing(cfg, gpu)
    attn = attention_implementation(cfg, gpu, packed)  # resolved once: the budget counts what the model runs
    pack = None
    if packed:
        pack = _pack_plan(cfg, base_model, packing.row_lengths(dataset, tokenizer), gpu, masks_packs(attn))
        kw.update(packed_kwargs(pack))
    # SFTConfig before the model: with ZeRO-3 it registers the DeepSpeed config, so from_pretrained
    # partitions the weights at load (zero.Init) instead of materialising them on every rank.
    args = SFTConfig(**kw)
    model = _model(cfg, base_model, gpu, ds_cfg, tokenizer, attn)
    lora = peft_config(cfg.lora)
    trainer_cls = SFTTrainer if cfg.verdict_weight == 1.0 else weighted_sft_trainer(SFTTrainer, cfg.verdict_weight)
    trainer = trainer_cls(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=lora)
    trainer.pack_plan = pack  # reported in train_metrics.json
    return trainer, lora


def _pack_plan(cfg: TrainConfig, base_model: str, lengths: list[int], gpu: bool, masked: bool) -> packing.PackPlan:
    """Packs of ``train.max_tokens_per_batch`` tokens, or when unset of the budget ``training.budget`` sizes
    (``masked``: the model runs a pack as one sequence under a mask)."""
    rows_per_step = cfg.per_device_batch_size * cfg.gradient_accumulation_steps
    sized = None
    if cfg.max_tokens_per_batch is None:
        sized = budget.for_worker(cfg, base_model, lengths, rows_per_step, gpu, masked)
        if sized.source == "longest row" and sized.memory_tokens is not None and sized.memory_tokens < sized.tokens:
            log.warning("packed micro-batches of %d tokens (the longest row) exceed the %d tokens estimated to fit "
                        "in memory; set train.max_seq_length lower or train.gradient_checkpointing=true if this "
                        "runs out of memory", sized.tokens, sized.memory_tokens)
    pack = packing.plan(lengths, sized.tokens if sized else cfg.max_tokens_per_batch, rows_per_step,
                        int(os.environ.get("WORLD_SIZE", 1)), sized)
    log.info("packing: %s", pack.as_dict())
    if pack.rows_per_pack > 1.5 * rows_per_step:
        log.warning("a pack holds %.1f rows, more than the %d rows of an optimizer step: each step sees more rows "
                    "than per_device_batch_size x gradient_accumulation_steps; set train.max_tokens_per_batch lower "
                    "or train.packing=false to keep the recipe's batch", pack.rows_per_pack, rows_per_step)
    return pack


def score_targets_only(gpu: bool, compiled: bool) -> None:
    """On CPU, have TRL's fused LM head project only the positions with a target label, as it does on Triton
    devices. Elsewhere it projects every position so that its tile shapes stay fixed for compilers (Neuron);
    eager CPU recompiles nothing, and a judge's target is a few tokens of a long prompt: the vocabulary
    projection of the others is about a fifth of a 135M model's step. The loss is the same
    (``tests/test_verify.py``). Patched on ``trl.trainer.utils``, whose ``_fused_forward`` alone reads this
    name there; the kernels read their own. Off with ``train.torch_compile`` (shapes would vary per batch)."""
    if gpu or compiled:
        return
    import trl.trainer.utils as trl_utils

    if getattr(trl_utils._use_triton, "selftaught_cpu", False) or not hasattr(trl_utils, "_use_triton"):
        return
    triton = trl_utils._use_triton

    def compact(device) -> bool:
        return device.type == "cpu" or triton(device)

    compact.selftaught_cpu = True
    trl_utils._use_triton = compact


def _tokenizer(base_model: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _model(cfg: TrainConfig, base_model: str, gpu: bool, ds_cfg, tokenizer, attn: Optional[str]):
    """Call after the trainer's config is built (it registers the DeepSpeed config for ZeRO-3). ``attn``: the
    ``attn_implementation`` (``args.attention_implementation``; None: transformers' default)."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if bf16_weights(cfg, gpu) else torch.float32
    if ds_cfg is not None:
        # DeepSpeed's comm layer must know the real world before zero.Init reads the batch config
        # (else it assumes world_size=1 and its batch-size assertion fails). Reuses the process
        # group Ray Train already created; creates one (env://) when run standalone.
        import deepspeed

        deepspeed.init_distributed(dist_backend="nccl" if gpu else "gloo")
    # Packed rows attending to themselves alone (the unpacked loss and gradients) is tested in tests/test_packing.py.
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype, **({"attn_implementation": attn} if attn else {}))
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def fit(trainer) -> dict:
    """Train; the run's metrics (rank 0 writes them with the model)."""
    clock = Throughput()
    trainer.add_callback(clock)
    t0 = clock.called = time.perf_counter()
    out = trainer.train()
    wall = time.perf_counter() - t0
    # The trainer's own clock: the training loop only, not DeepSpeed's engine set-up (on a fresh
    # CPU machine that includes a one-off JIT build of its shm comm op).
    seconds = float(out.metrics.get("train_runtime") or wall)
    state = trainer.state
    # GRPO counts its own (prompt and completion tokens, every worker): its last logged num_tokens.
    tokens = int(state.num_input_tokens_seen or max([h.get("num_tokens", 0) for h in state.log_history] or [0]))
    return {
        "train_loss": float(out.training_loss),
        "steps": int(state.global_step),
        "examples": len(trainer.train_dataset),
        "epochs": float(state.epoch or 0.0),
        "tokens": tokens,  # non-padding input tokens, summed over all workers
        "seconds": round(seconds, 3),
        "wall_seconds": round(wall, 3),  # train() including engine set-up
        "tokens_per_s": round(tokens / seconds, 2) if seconds > 0 else 0.0,  # start-up included
        **clock.report(),  # startup_seconds (engine_seconds of it), first_step_seconds, steady_tokens_per_s
        "peak_memory_gib": round(_peak_memory_gib(), 3),
        "world_size": int(trainer.args.world_size),
        "log_history": list(state.log_history),
        **({"packing": trainer.pack_plan.as_dict()} if getattr(trainer, "pack_plan", None) else {}),
    }


def _peak_memory_gib() -> float:
    """This process's peak: allocated GPU memory, or on CPU its max resident set."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def save(trainer, cfg: TrainConfig, lora, base_model: str, out_dir: str, gpu: bool, metrics: dict) -> None:
    """Every rank saves (ZeRO-3 gathers the weights); rank 0 writes the folder, metrics last."""
    import torch

    save_dir = os.path.join(out_dir, ADAPTER_DIR) if lora is not None else out_dir
    trainer.save_model(save_dir)  # every rank calls it (ZeRO-3 gathers); rank 0 writes
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(out_dir)
        if lora is not None:
            _merge_lora(trainer, base_model, save_dir, out_dir, torch.bfloat16 if bf16_weights(cfg, gpu) else torch.float32)
        _ensure_generation_config(base_model, out_dir)
        metrics = {**metrics, "retied_bytes": retie_embeddings(out_dir)}
        share_permissions(out_dir)
        metrics = {**metrics, "strategy": cfg.strategy, "dtype": dtype_name(cfg, gpu),
                   "lora": bool(lora is not None)}
        atomic.write_text(os.path.join(out_dir, METRICS_FILE), json.dumps(metrics, indent=2, default=float))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # no worker returns before rank 0 has written the folder


def _merge_lora(trainer, base_model: str, adapter_dir: str, out_dir: str, dtype) -> None:
    """Rank 0: load the base again (plain, unsharded), apply the saved adapter, merge, save full weights."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    try:  # a live ZeRO-3 config would make from_pretrained partition the weights on rank 0 alone
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()
    except ImportError:
        pass
    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    with torch.no_grad():
        merged.save_pretrained(out_dir, safe_serialization=True)


def _ensure_generation_config(base_model: str, out_dir: str) -> None:
    if os.path.isfile(os.path.join(out_dir, "generation_config.json")):
        return
    src = os.path.join(base_model, "generation_config.json")
    if os.path.isfile(src):
        shutil.copy(src, out_dir)
        return
    from transformers import AutoConfig, GenerationConfig

    GenerationConfig.from_model_config(AutoConfig.from_pretrained(out_dir)).save_pretrained(out_dir)
