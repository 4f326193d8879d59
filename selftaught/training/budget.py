"""The token budget of a packed micro-batch when ``train.max_tokens_per_batch`` is unset: one optimizer
step's rows in one pack (gradient accumulation 1) where the device's memory holds it, else as many tokens
as fit. By default packed rows attend row by row (FlashAttention-2's variable-length kernel, else
``training.attention``'s SDPA per row), so a pack's cost is linear in its length and it may be longer than
``max_seq_length``. ``train.attention=sdpa|eager`` (and ``auto`` under ``train.torch_compile``) masks a pack
as one sequence: its mask is counted, and its attention compute grows with the square of its length, so
there a pack is at most ``max_seq_length``, the length one row may have anyway.

Memory is estimated, not probed, so every worker agrees before the trainer (and DeepSpeed's batch
config) is built. ``tests/test_budget.py`` counts what autograd saves in the project's SFT step (TRL's
``compute_loss`` on a packed micro-batch, ``torch.autograd.graph.saved_tensors_hooks``) for two shapes,
two dtypes, two pack lengths and with checkpointing, and checks the estimate against it:

- per token and decoder layer, ``d·(4·intermediate + 2·kv + 6·hidden + a) + 8·hidden`` bytes (``d``: the
  model dtype's bytes; the 8 is RMSNorm's float32 copies). ``a`` is the attention's own: row by row,
  ``hidden`` (each row's output is kept as well as their concatenation); a pack masked as one sequence
  (``train.attention=sdpa|eager``), ``T`` for a pack of ``T`` tokens (its block-diagonal mask);
- outside the layers, ``(3d + 4)·hidden`` and a few hundred bytes. TRL's SFT loss projects onto the
  vocabulary in tiles (``trl.kernels.ChunkedLogProbFunction``) and never holds the logits: a constant
  tile (counted as 1 GiB), whatever the vocabulary or the pack;
- backward's working set, one layer's worth more; with gradient checkpointing a layer keeps only its input,
  and one layer at a time is recomputed;
- model states: ZeRO-2 keeps the weights and a gradient buffer whole on every worker and shards the
  float32 master weights and Adam moments (16 bytes/param); ZeRO-3 shards all of them and holds up to
  ``stage3_max_live_parameters`` gathered; plain DDP keeps everything whole; LoRA trains ~nothing;
- a reserve for the CUDA context, NCCL and allocator fragmentation: 10% of the memory and 2 GiB.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from selftaught.config import TrainConfig

GIB = 1024 ** 3
RESERVE_SHARE = 0.10
RESERVE_BYTES = 2 * GIB
HEAD_TILE_BYTES = GIB  # TRL's LM-head tile (4096 tokens x 32768 vocabulary, float32) and its gradient
OUTSIDE_CONSTANT = 600  # bytes per token outside the layers that do not scale with the width (ids, labels, log-normalisers)
ZERO3_LIVE_PARAMS = 1_000_000_000  # selftaught/conf/deepspeed/zero3.json stage3_max_live_parameters
ALIGN = 64  # budgets are rounded to a multiple of this many tokens


@dataclass(frozen=True)
class ModelShape:
    params: int
    layers: int
    hidden: int
    intermediate: int
    kv_dim: int  # key (= value) width: num_key_value_heads x head_dim

    @classmethod
    def of(cls, model_dir: str) -> "ModelShape":
        """Read from a model folder's config; the parameter count from the model built on the meta device."""
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(model_dir)
        text = config.get_text_config()
        with torch.device("meta"):
            params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
        heads = text.num_attention_heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        kv_heads = getattr(text, "num_key_value_heads", None) or heads
        return cls(params=int(params), layers=text.num_hidden_layers, hidden=text.hidden_size,
                   intermediate=getattr(text, "intermediate_size", None) or 4 * text.hidden_size,
                   kv_dim=kv_heads * head_dim)


def layer_bytes_per_token(shape: ModelShape, dtype_bytes: int, mask_tokens: int = 0) -> int:
    """What one decoder layer saves for its backward, per token; ``mask_tokens``: the length of a pack masked
    as one sequence (0: rows attend on their own, no mask)."""
    d, h = dtype_bytes, shape.hidden
    return d * (4 * shape.intermediate + 2 * shape.kv_dim + 6 * h + (mask_tokens or h)) + 8 * h


def saved_bytes_per_token(shape: ModelShape, dtype_bytes: int, gradient_checkpointing: bool = False,
                          mask_tokens: int = 0) -> int:
    """Bytes autograd saves in the forward pass for the backward, per token."""
    outside = (3 * dtype_bytes + 4) * shape.hidden + OUTSIDE_CONSTANT
    if gradient_checkpointing:  # each layer keeps only its input
        return shape.layers * dtype_bytes * shape.hidden + outside
    return shape.layers * layer_bytes_per_token(shape, dtype_bytes, mask_tokens) + outside


def activation_bytes(shape: ModelShape, dtype_bytes: int, pack_tokens: int, gradient_checkpointing: bool = False,
                     masked: bool = False) -> int:
    """Peak activation memory of one pack: what is saved, backward's working set (a layer's worth), the layer
    being recomputed under checkpointing, and TRL's LM-head tile."""
    mask = pack_tokens if masked else 0
    per_token = (saved_bytes_per_token(shape, dtype_bytes, gradient_checkpointing, mask)
                 + layer_bytes_per_token(shape, dtype_bytes, mask) * (2 if gradient_checkpointing else 1))
    return pack_tokens * per_token + HEAD_TILE_BYTES


def state_bytes(shape: ModelShape, dtype_bytes: int, strategy: str, world_size: int, lora: bool) -> int:
    """Weights, gradients and optimizer state on one worker (mixed precision, Adam)."""
    n, d, w = shape.params, dtype_bytes, max(1, world_size)
    if lora:  # frozen weights only (the adapter is ~1% and its optimizer state is negligible)
        return d * n // w if strategy == "zero3" else d * n
    if strategy == "zero3":
        return (16 + 2 * d) * n // w + d * min(n, ZERO3_LIVE_PARAMS)
    if strategy == "zero2":
        return 2 * d * n + 16 * n // w
    return 5 * d * n  # plain DDP: weights, gradients, their all-reduce buckets, Adam's two moments


def memory_tokens(free_bytes: int, shape: ModelShape, dtype_bytes: int, strategy: str, world_size: int, lora: bool,
                  gradient_checkpointing: bool, masked: bool = False) -> int:
    """The longest pack whose activations fit in ``free_bytes`` after the model states and the reserve (0: none)."""
    room = free_bytes * (1 - RESERVE_SHARE) - RESERVE_BYTES - state_bytes(shape, dtype_bytes, strategy, world_size, lora)

    def fits(tokens: int) -> bool:
        return activation_bytes(shape, dtype_bytes, tokens, gradient_checkpointing, masked) <= room

    if not fits(ALIGN):
        return 0
    hi = ALIGN  # activation_bytes grows with the pack (quadratically when masked): double, then bisect
    while fits(hi * 2) and hi < 1 << 24:
        hi *= 2
    lo, hi = hi, hi * 2
    while hi - lo > ALIGN:
        mid = (lo + hi) // 2 // ALIGN * ALIGN
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


@dataclass(frozen=True)
class Budget:
    tokens: int
    source: str  # what decided it: "one step's rows" | "memory" | "max_seq_length" (masked packs) | "longest row"
    step_tokens: int  # one optimizer step's rows per worker, in tokens (mean row x rows per step)
    memory_tokens: Optional[int]  # what fits in memory (None: not sized from memory)
    estimated_peak_gib: Optional[float] = None  # model states + one micro-batch's activations, as estimated

    def as_dict(self) -> dict:
        return {"budget_source": self.source, "step_tokens": self.step_tokens, "memory_tokens": self.memory_tokens,
                "estimated_peak_gib": self.estimated_peak_gib}


def size(lengths: list[int], rows_per_step: int, max_seq_length: int, fits: Optional[int], masked: bool = False) -> Budget:
    """The smaller of one optimizer step's tokens (a step is then one pack: no accumulation) and ``fits``
    (tokens that fit in memory; None: unbounded), and for a pack masked as one sequence (``masked``: its
    attention compute grows with the square of its length) at most ``max_seq_length``; never below the
    longest row (itself cut at ``max_seq_length``), so a row is never cut shorter than the unpacked trainer
    cuts it."""
    longest = min(max(lengths, default=1), max_seq_length)
    mean = sum(lengths) / len(lengths) if lengths else 1.0
    step = _align(math.ceil(mean * max(1, rows_per_step)))
    tokens, source = step, "one step's rows"
    if fits is not None and fits < tokens:
        tokens, source = fits, "memory"
    if masked and max_seq_length < tokens:
        tokens, source = max_seq_length, "max_seq_length"
    if tokens < longest:
        tokens, source = longest, "longest row"
    return Budget(tokens=tokens, source=source, step_tokens=step, memory_tokens=fits)


def free_bytes(gpu: bool) -> int:
    """Memory this worker may use: its GPU's free memory, or on CPU the host's available memory shared by
    the node's workers."""
    if gpu:
        import torch

        return int(torch.cuda.mem_get_info(int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())[0])
    import psutil  # ray[default] depends on it

    return int(psutil.virtual_memory().available // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1))))


def agree(tokens: int, gpu: bool) -> int:
    """The smallest value over the workers (they must pack alike: DeepSpeed's batch config and the number
    of packs per worker depend on it); itself when there is no process group yet or one worker."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tokens
    import torch

    on_cuda = gpu and dist.get_backend() == "nccl"
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}" if on_cuda else "cpu"
    t = torch.tensor([tokens], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def _align(n: int) -> int:
    return max(ALIGN, -(-n // ALIGN) * ALIGN)


def for_worker(cfg: "TrainConfig", base_model: str, lengths: list[int], rows_per_step: int, gpu: bool,
               masked: bool) -> Budget:
    """``size`` for this TrainConfig (``train.max_tokens_per_batch`` unset) on this worker's device, the same
    on every worker."""
    from selftaught.training.args import bf16_weights

    shape = ModelShape.of(base_model)
    dtype_bytes = 2 if bf16_weights(cfg, gpu) else 4  # CPU autocast keeps float32 weights
    world = int(os.environ.get("WORLD_SIZE", 1))
    ckpt, lora = cfg.gradient_checkpointing, cfg.lora.enabled
    fits = memory_tokens(free_bytes(gpu), shape, dtype_bytes, cfg.strategy, world, lora, ckpt, masked)
    sized = size(lengths, rows_per_step, cfg.max_seq_length, agree(fits, gpu), masked)
    peak = (state_bytes(shape, dtype_bytes, cfg.strategy, world, lora)
            + activation_bytes(shape, dtype_bytes, sized.tokens, ckpt, masked))
    return dataclasses.replace(sized, estimated_peak_gib=round(peak / GIB, 2))
