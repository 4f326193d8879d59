#!/usr/bin/env python
"""Attention over one packed micro-batch, forward + backward: the project's row-by-row SDPA
(``train.attention=sdpa_rows``, ``selftaught/training/attention.py``) against transformers' SDPA over the
whole pack under its block-diagonal mask (``train.attention=sdpa``), on the same tensors, for packs of a
growing number of rows. On CUDA, torch's own variable-length flash attention (``torch.nn.attention.varlen``)
is timed too where this torch has it.

    python scripts/bench_attention.py                      # Llama-3.2-1B heads, rows of 580 tokens
    python scripts/bench_attention.py --rows 1,4,8 --row-tokens 440 --iters 3

Prints one line per pack: its tokens, milliseconds per forward + backward of each, the ratio masked /
row by row, and the largest difference between their outputs (they must agree: no row sees another). The
masked path also builds its mask once per forward (all layers share it; held until backward under gradient
checkpointing): that build's milliseconds and size are printed apart; row by row builds none.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def block_mask(config, pack_tokens: int, row_tokens: int, device):
    """The mask transformers builds for a packed sequence (position ids restarting per row), as its SDPA path
    gets it."""
    import torch
    from transformers.masking_utils import create_causal_mask

    position_ids = (torch.arange(pack_tokens, device=device) % row_tokens)[None]
    embeds = torch.empty(1, pack_tokens, 8, device=device)
    return create_causal_mask(config=config, inputs_embeds=embeds, attention_mask=None, past_key_values=None,
                              position_ids=position_ids)


def timed(fn, iters: int, cuda: bool, backward: bool = True) -> float:
    """Milliseconds per call of ``fn`` (forward + backward unless ``backward`` is false), after one untimed
    call."""
    import torch

    def once():
        out = fn()
        if backward:
            out.float().square().mean().backward()

    once()
    if cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        once()
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / iters * 1e3


def torch_varlen(q, k, v, cu, row_tokens: int):
    """torch.nn.attention.varlen on (tokens, heads, dim) layouts; None where this torch lacks it. Its keyword
    arguments changed across releases (is_causal, later window_size and enable_gqa)."""
    import inspect

    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    params = inspect.signature(varlen_attn).parameters
    kw = {"is_causal": True} if "is_causal" in params else {"window_size": (-1, 0)}
    qt, kt, vt = (x[0].transpose(0, 1) for x in (q, k, v))
    if "enable_gqa" in params:
        kw["enable_gqa"] = True
    else:
        groups = qt.shape[1] // kt.shape[1]
        kt, vt = kt.repeat_interleave(groups, dim=1), vt.repeat_interleave(groups, dim=1)
    return lambda: varlen_attn(qt, kt, vt, cu, cu, row_tokens, row_tokens, **kw)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="1,2,4,8", help="comma list: rows per pack")
    ap.add_argument("--row-tokens", type=int, default=580, help="tokens per row")
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--iters", type=int, default=None, help="timed calls (default 20 on CUDA, 3 on CPU)")
    ap.add_argument("--cpu", action="store_true", help="on CPU even if a GPU is present")
    args = ap.parse_args(argv)

    import torch
    from transformers import LlamaConfig
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from selftaught.training import attention

    cuda = torch.cuda.is_available() and not args.cpu
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    iters = args.iters or (20 if cuda else 3)
    config = LlamaConfig(hidden_size=8, num_attention_heads=1, num_hidden_layers=1)
    config._attn_implementation = "sdpa"
    module = SimpleNamespace(num_key_value_groups=args.heads // args.kv_heads, is_causal=True, training=True)
    out = []
    for n in [int(x) for x in args.rows.split(",") if x.strip()]:
        tokens = n * args.row_tokens
        torch.manual_seed(0)
        q = torch.randn(1, args.heads, tokens, args.head_dim, device=device, dtype=dtype, requires_grad=True)
        k, v = (torch.randn(1, args.kv_heads, tokens, args.head_dim, device=device, dtype=dtype, requires_grad=True)
                for _ in range(2))
        cu = torch.arange(0, tokens + 1, args.row_tokens, device=device, dtype=torch.int32)
        mask = block_mask(config, tokens, args.row_tokens, device)
        build_ms = timed(lambda: block_mask(config, tokens, args.row_tokens, device), iters, cuda, backward=False)

        def masked():
            return sdpa_attention_forward(module, q, k, v, mask, is_causal=True)[0]

        def rows():
            return attention.packed_sdpa_forward(module, q, k, v, None, cu_seq_lens_q=cu, max_length_q=args.row_tokens)[0]

        with torch.no_grad():
            diff = float((rows().float() - masked().float()).abs().max())
        r = {"rows": n, "tokens": tokens, "masked_ms": timed(masked, iters, cuda), "rows_ms": timed(rows, iters, cuda),
             "max_diff": diff, "varlen_ms": None, "mask_build_ms": build_ms,
             "mask_mib": 0.0 if mask is None else mask.numel() * mask.element_size() / 2**20}
        varlen = torch_varlen(q, k, v, cu, args.row_tokens) if cuda else None
        if varlen is not None:
            try:
                r["varlen_ms"] = timed(varlen, iters, cuda)
            except Exception as e:  # noqa: BLE001 - reported, not fatal: an optional kernel of this torch build
                print(f"torch varlen_attn failed: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
        out.append(r)
        print(f"done {n} rows: masked {r['masked_ms']:.1f} ms, row by row {r['rows_ms']:.1f} ms", file=sys.stderr, flush=True)

    print(f"\nattention forward + backward, {device} {str(dtype).replace('torch.', '')}, heads {args.heads}/{args.kv_heads} "
          f"x {args.head_dim}, rows of {args.row_tokens} tokens, {iters} timed calls each (torch {torch.__version__})")
    head = (f"{'rows':>5}{'pack tokens':>12}{'masked ms':>11}{'row by row ms':>15}{'masked / rows':>15}{'torch varlen ms':>17}"
            f"{'max |diff|':>12}{'mask build ms':>15}{'mask MiB':>10}")
    print(head)
    print("-" * len(head))
    for r in out:
        varlen = f"{r['varlen_ms']:.2f}" if r["varlen_ms"] is not None else "-"
        print(f"{r['rows']:>5}{r['tokens']:>12}{r['masked_ms']:>11.2f}{r['rows_ms']:>15.2f}{r['masked_ms'] / r['rows_ms']:>14.2f}x"
              f"{varlen:>17}{r['max_diff']:>12.1e}{r['mask_build_ms']:>15.2f}{r['mask_mib']:>10.1f}")
    return out


if __name__ == "__main__":
    main()
