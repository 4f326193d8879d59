#!/usr/bin/env python
"""Judge sampling cost: fixed N vs adaptive waves, with swap augmentation or calibration, in one run.

    python scripts/bench_judge_cost.py                         # SmolLM2 seed, 24 demo-eval pairs, both formats
    python scripts/bench_judge_cost.py --pairs runs/demo/data/pairs/data --formats verdict_first

Every case runs the judge stage (``selftaught.stages.judge.process``) on the same pairs with the same
in-process engine (one vLLM start), then the A/B balance, and prints per case: generated judge
tokens, kept SFT examples (after the balance), tokens per kept example, wall seconds, and the ratio
of tokens per kept example to fixed N=15 in the same format. Pairs default to the shipped demo eval
set's gold pairs (chosen = the better answer), so nothing has to be generated first.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selftaught.config import EngineConfig, JudgeConfig, ModelConfig  # noqa: E402
from selftaught.engines import make_engine  # noqa: E402
from selftaught.io import load_pairwise_eval, read_records, resolve_data_path  # noqa: E402
from selftaught.models import resolve_model  # noqa: E402
from selftaught.stages import judge  # noqa: E402
from selftaught.stages.base import OK, StageContext  # noqa: E402

TEMPLATES = {"reasoning_first": "judge", "verdict_first": "judge_verdict_first"}


def load_pairs(path: str | None, k: int) -> list[dict]:
    if path:  # a run's pairs stage output
        rows = [r for r in read_records(path) if r.get("status", OK) == OK]
        return [{"pair_id": r["pair_id"], "instruction": r["instruction"], "chosen": r["chosen"],
                 "rejected": r["rejected"]} for r in rows[:k]]
    rows, _ = load_pairwise_eval(resolve_data_path("builtin:demo_eval.jsonl"))
    return [{"pair_id": str(r["id"]), "instruction": r["instruction"], "chosen": r["chosen"], "rejected": r["rejected"]}
            for r in rows[:k]]


def cases(fmt: str, n_fixed: int, wave: int, max_tokens: int) -> list[tuple[str, JudgeConfig]]:
    base = JudgeConfig(template=TEMPLATES[fmt], format=fmt, n=n_fixed, max_tokens=max_tokens,
                       frequency_penalty=0.5, drop_degenerate=True)
    return [
        (f"fixed N={n_fixed}", base),
        (f"fixed N={n_fixed} + swap", replace(base, swap=True)),
        (f"adaptive {wave}..{n_fixed}", replace(base, n=wave, n_max=n_fixed)),
        (f"adaptive {wave}..{n_fixed} + swap", replace(base, n=wave, n_max=n_fixed, swap=True)),
        (f"adaptive {wave}..{n_fixed} + calibrate", replace(base, n=wave, n_max=n_fixed, calibrate=True)),
    ]


def run_case(engine, ctx, pairs, cfg: JudgeConfig) -> dict:
    t0 = time.perf_counter()
    rows = judge.process(pairs, engine, ctx, cfg)
    seconds = time.perf_counter() - t0
    kept = [r for r in judge.balance(rows, seed=0) if r["status"] == OK]
    stats = judge.sample_stats(rows, cfg.degenerate_threshold)
    tokens = sum(s["tokens"] for r in rows for s in r["samples"])
    return {"tokens": tokens, "kept": len(kept), "tokens_per_kept": tokens / len(kept) if kept else None,
            "samples": stats["samples"], "kept_mirror": sum(r["kept_source"] == judge.MIRROR for r in kept),
            "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:smollm2")
    ap.add_argument("--backend", default="vllm", choices=("vllm", "hf"))
    ap.add_argument("--pairs", default=None, help="a pairs stage data folder or parquet file (default: the demo eval set's gold pairs)")
    ap.add_argument("--limit", type=int, default=24, help="pairs to judge")
    ap.add_argument("--formats", default="verdict_first,reasoning_first")
    ap.add_argument("--n", type=int, default=15, help="fixed N, and the adaptive budget n_max")
    ap.add_argument("--wave", type=int, default=2, help="adaptive wave size")
    ap.add_argument("--max-tokens", type=int, default=48, help="reasoning / explanation budget")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    model = resolve_model(ModelConfig(path=args.model))
    pairs = load_pairs(args.pairs, args.limit)
    engine = make_engine(EngineConfig(backend=args.backend), model, 2048)
    ctx = StageContext(round=1, model_path=model, constrained=True, max_model_len=2048, seed=0)
    out = []
    try:
        for fmt in args.formats.split(","):
            ref = None
            for name, cfg in cases(fmt, args.n, args.wave, args.max_tokens):
                r = {"format": fmt, "case": name, **run_case(engine, ctx, pairs, cfg)}
                if ref is None:
                    ref = r["tokens_per_kept"]
                r["ratio"] = r["tokens_per_kept"] / ref if ref and r["tokens_per_kept"] else None
                out.append(r)
                print(f"  {fmt:15s} {name:26s} done in {r['seconds']:.0f}s", file=sys.stderr, flush=True)
    finally:
        engine.close()

    print(f"\njudge sampling cost: {len(pairs)} pairs x 2 orders, {args.model} on {args.backend}, "
          f"temperature 0.7, budget {args.max_tokens} tokens")
    head = ("format", "case", "samples", "gen tokens", "kept (balanced)", "of which mirror", "tokens/kept",
            "ratio vs fixed", "seconds")
    cells = [[r["format"], r["case"], str(r["samples"]), str(r["tokens"]), str(r["kept"]), str(r["kept_mirror"]),
              f"{r['tokens_per_kept']:.1f}" if r["tokens_per_kept"] else "-",
              f"{r['ratio']:.2f}x" if r["ratio"] else "-", f"{r['seconds']:.1f}"] for r in out]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    print(" | ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("-|-".join("-" * w for w in widths))
    for c in cells:
        print(" | ".join(v.ljust(w) for v, w in zip(c, widths)))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
