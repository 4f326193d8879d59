"""Attention for packed micro-batches without FlashAttention-2: SDPA row by row.

transformers' own SDPA path runs a packed sequence as one attention over the whole pack, masked
block-diagonally from the position ids: it builds a (pack × pack) mask every forward (held until backward
under gradient checkpointing), its compute grows with the square of the pack's length (the masked blocks
are computed, then dropped), and a mask with an arbitrary pattern keeps SDPA off its flash kernel. Here
each packed row is its own causal SDPA call (``is_causal``, no mask: the flash kernel where the device has
one), at the row boundaries TRL's padding-free collator passes (``cu_seq_lens_q``; else where the position
ids restart): the same result, compute linear in the pack's length, and no pack mask at all.

Registered with transformers' ``AttentionInterface`` under ``PACKED_SDPA``, with ``rows_mask`` as its mask
function: no mask for a lone unpadded pack, SDPA's mask otherwise. So a batch this cannot split (padded
rows, a cache, a sliding window shorter than a row) runs plain SDPA with the mask transformers builds. The
name lives in the loaded model only: a saved config does not carry it.
"""
from __future__ import annotations

from typing import Optional

PACKED_SDPA = "sdpa_rows"  # train.attention=sdpa_rows

_bounds: tuple = (None, [])  # (the last boundary tensor seen, its values): one device-to-host copy per forward


def _row_bounds(cu_seq_lens, position_ids) -> list[int]:
    """Row starts and the end, as Python ints: from the collator's ``cu_seq_lens_q``, else where the
    position ids (one pack) do not step by one. Every layer of one forward gets the same tensor: it is read
    from the device once, not once per layer."""
    global _bounds
    source = cu_seq_lens if cu_seq_lens is not None else position_ids
    if _bounds[0] is not source:
        if cu_seq_lens is not None:
            values = cu_seq_lens.tolist()  # int32: Python ints
        else:
            pos = position_ids[0]
            values = [0, *((pos.diff() != 1).nonzero().flatten() + 1).tolist(), pos.numel()]
        _bounds = (source, values)
    return _bounds[1]


def rows_mask(batch_size: int, q_length: int, kv_length: int, q_offset: int = 0, kv_offset: int = 0,
              attention_mask=None, local_size: Optional[int] = None, **kwargs):
    """The mask function registered with ``PACKED_SDPA``: a lone unpadded pack with no cache and no sliding
    window gets no mask (``packed_sdpa_forward`` splits it at its rows); anything else SDPA's own mask."""
    from transformers.masking_utils import sdpa_mask

    if (batch_size == 1 and attention_mask is None and local_size is None and q_offset == 0 and kv_offset == 0
            and q_length == kv_length):
        return None
    return sdpa_mask(batch_size, q_length, kv_length, q_offset=q_offset, kv_offset=kv_offset,
                     attention_mask=attention_mask, local_size=local_size, **kwargs)


def packed_sdpa_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                        scaling: Optional[float] = None, is_causal: Optional[bool] = None, **kwargs):
    """transformers' attention-function signature; query/key/value are (batch, heads, tokens, head_dim)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cu, position_ids = kwargs.get("cu_seq_lens_q"), kwargs.get("position_ids")
    bounds = None
    if query.shape[0] == 1 and key.shape[2] == query.shape[2]:  # one pack, no cache
        if cu is not None or (attention_mask is None and position_ids is not None):  # a padding mask: not a pack
            bounds = _row_bounds(cu, position_ids)
    window = kwargs.get("sliding_window", getattr(module, "sliding_window", None))  # Mistral passes it, Qwen2 sets it
    splits = (bounds is not None and getattr(module, "is_causal", True) and kwargs.get("position_bias") is None
              and (window is None or max(b - a for a, b in zip(bounds, bounds[1:])) <= window))
    if not splits:
        if attention_mask is None and bounds is not None and len(bounds) > 2:  # rows_mask left it to the split
            raise ValueError(f"{PACKED_SDPA}: a pack of {len(bounds) - 1} rows came without a mask and cannot be split "
                             f"row by row (a non-causal module, a position bias, or a row longer than the sliding "
                             f"window {window}); use train.attention=sdpa")
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    outs = [sdpa_attention_forward(module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], None, dropout=dropout,
                                   scaling=scaling, is_causal=True, **kwargs)[0]
            for a, b in zip(bounds, bounds[1:]) if b > a]
    return (outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)), None  # (batch, tokens, heads, head_dim)


def register() -> str:
    """Make ``PACKED_SDPA`` a valid ``attn_implementation`` in this process (idempotent); its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(PACKED_SDPA, packed_sdpa_forward)
    AttentionMaskInterface.register(PACKED_SDPA, rows_mask)
    return PACKED_SDPA
