"""Attention for packed micro-batches without FlashAttention-2: SDPA row by row.

transformers' own SDPA path runs a packed sequence as one attention over the whole pack, masked
block-diagonally from the position ids: its compute grows with the square of the pack's length (the
masked blocks are computed, then dropped), and a mask with an arbitrary pattern keeps SDPA off its flash
kernel. Here each packed row is its own causal SDPA call (``is_causal``, no mask: the flash kernel where
the device has one), at the row boundaries TRL's padding-free collator passes (``cu_seq_lens_q``): the
same result, compute linear in the pack's length, no mask saved for backward.

Registered with transformers' ``AttentionInterface`` under ``PACKED_SDPA``; its mask function is SDPA's,
so a batch this cannot split (padded rows, a pack without ``cu_seq_lens_q``, a row longer than a sliding
window, a position bias) runs plain SDPA with the mask transformers builds (for a pack that is split, that
mask is built once per forward and left unused). The name lives in the loaded model only: a saved config
does not carry it.
"""
from __future__ import annotations

from typing import Optional

PACKED_SDPA = "sdpa_rows"  # train.attention=sdpa_rows

_bounds: tuple = (None, [])  # (the last cu_seq_lens tensor seen, its values): one device-to-host copy per forward


def _row_bounds(cu_seq_lens) -> list[int]:
    """Row starts and the end, as Python ints. Every layer of one forward gets the same tensor: it is read
    from the device once, not once per layer."""
    global _bounds
    if _bounds[0] is not cu_seq_lens:
        _bounds = (cu_seq_lens, [int(x) for x in cu_seq_lens.tolist()])
    return _bounds[1]


def packed_sdpa_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                        scaling: Optional[float] = None, is_causal: Optional[bool] = None, **kwargs):
    """transformers' attention-function signature; query/key/value are (batch, heads, tokens, head_dim)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cu = kwargs.get("cu_seq_lens_q")
    window = kwargs.get("sliding_window", getattr(module, "sliding_window", None))  # Mistral passes it, Qwen2 sets it
    splits = (cu is not None and query.shape[0] == 1 and key.shape[2] == query.shape[2]  # one pack, no cache
              and getattr(module, "is_causal", True) and kwargs.get("position_bias") is None
              and (window is None or int(kwargs.get("max_length_q") or window + 1) <= window))  # unknown: masked
    if not splits:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    bounds = _row_bounds(cu)
    outs = [sdpa_attention_forward(module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], None, dropout=dropout,
                                   scaling=scaling, is_causal=True, **kwargs)[0]
            for a, b in zip(bounds, bounds[1:]) if b > a]
    return (outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)), None  # (batch, tokens, heads, head_dim)


def register() -> str:
    """Make ``PACKED_SDPA`` a valid ``attn_implementation`` in this process (idempotent); its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(PACKED_SDPA, packed_sdpa_forward)
    AttentionMaskInterface.register(PACKED_SDPA, sdpa_mask)
    return PACKED_SDPA
