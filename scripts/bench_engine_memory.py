"""What ``engine.onednn_cache`` costs and saves: the served judge's engine under batches of varying size, one
engine per cache size, side by side in one run.

    python scripts/bench_engine_memory.py                         # caches 1024 (oneDNN's default) and 0, 5 min each
    python scripts/bench_engine_memory.py --caches 1024,64,0 --seconds 600 -- model.path=runs/demo/round_2/model

Each engine runs the serve path without HTTP (``ServedJudge.compare``, as ``selftaught serve`` calls it):
1 to ``--max-pairs`` pairs per call, the size drawn at random (seeded), for ``--seconds``; the engine worker's
resident memory is read every 10 s. Then three generation calls (16 answers of up to 128 tokens each,
sampled) for the loop's other workload: their mean tok/s and range. Pairs: the shipped demo eval set, cycled.
A fixed batch size would show no growth: the cache fills with kernels for each new matmul shape, and a fixed
batch repeats its few shapes.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench_serve import DEFAULTS, pairs, rss_mb  # noqa: E402

GEN_CALLS = 3


def worker_mb(pid: int) -> float:
    """vLLM's CPU worker process (where the model runs) or, failing that, all of the engine's processes."""
    m = rss_mb(pid)
    return sum(v for k, v in m.items() if k.startswith("Worker")) or m["total"]


def run(cache: int, overrides: list[str], seconds: float, max_pairs: int) -> dict:
    from selftaught.engines import GenRequest, Sampling
    from selftaught.models import resolve_model
    from selftaught.overrides import compose
    from selftaught.serve.judge import ServedJudge

    cfg = compose(overrides + [f"engine.onednn_cache={cache}"])
    judge = ServedJudge.load(cfg, resolve_model(cfg.model))
    try:
        rows, rng, me = pairs(48), random.Random(0), os.getpid()
        mem, n, seq = [], 0, 0
        t0 = last = time.time()
        mem.append(worker_mb(me))
        while time.time() - t0 < seconds:
            k = rng.randint(1, max_pairs)
            judge.compare([{**rows[(seq + i) % len(rows)], "id": f"{seq + i}"} for i in range(k)])
            n, seq = n + k, seq + k
            if time.time() - last >= 10:
                last = time.time()
                mem.append(worker_mb(me))
                print(f"  onednn_cache={cache}: {n} pairs, {n / (last - t0):.1f} pairs/s, "
                      f"worker {mem[-1]:.0f} MB, {seconds - (last - t0):.0f} s left", flush=True)
        rate = n / (time.time() - t0)
        mem.append(worker_mb(me))
        reqs = [GenRequest(f"g{i}", [{"role": "user", "content": r["instruction"]}], Sampling(temperature=0.7, max_tokens=128))
                for i, r in enumerate(rows[:16])]
        gen = []
        for _ in range(GEN_CALLS):
            t1 = time.perf_counter()
            out = judge.engine.generate(reqs)
            gen.append(sum(sum(r.completion_tokens) for r in out) / (time.perf_counter() - t1))
    finally:
        judge.close()
    after1 = mem[min(6, len(mem) - 1)]
    minutes = max((len(mem) - 1 - 6) * 10 / 60, 1e-9)
    return {"cache": cache, "pairs": n, "rate": rate, "start": mem[0], "1min": after1, "end": mem[-1],
            "per_min": (mem[-1] - after1) / minutes if len(mem) > 7 else float("nan"), "gen": gen}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--caches", default="1024,0", help="engine.onednn_cache values, one engine each, in this order")
    ap.add_argument("--seconds", type=float, default=300, help="seconds of judging per engine")
    ap.add_argument("--max-pairs", type=int, default=16, help="pairs per engine call: 1 to this, at random")
    ap.add_argument("overrides", nargs="*", help="selftaught overrides (after --)")
    a = ap.parse_args()
    overrides = DEFAULTS + a.overrides
    rows = []
    for c in (int(x) for x in a.caches.split(",")):
        print(f"engine.onednn_cache={c}: {a.seconds:.0f} s of 1-{a.max_pairs} pairs per call ...", flush=True)
        rows.append(run(c, overrides, a.seconds, a.max_pairs))
    print(f"\nthe served judge's engine, 1-{a.max_pairs} pairs per call for {a.seconds:.0f} s "
          f"(overrides: {' '.join(overrides)}); worker = vLLM's CPU worker process")
    print(f"{'onednn_cache':>12} | {'pairs':>6} | {'pairs/s':>7} | {'vs first':>8} | {'worker MB start':>15} | "
          f"{'after 1 min':>11} | {'end':>6} | {'MB/min after 1 min':>18} | generate tok/s, {GEN_CALLS} calls")
    for r in rows:
        print(f"{r['cache']:>12} | {r['pairs']:>6} | {r['rate']:>7.2f} | {r['rate'] / rows[0]['rate']:>8.2f} | "
              f"{r['start']:>15.0f} | {r['1min']:>11.0f} | {r['end']:>6.0f} | {r['per_min']:>18.1f} | "
              f"{statistics.mean(r['gen']):.1f} ({min(r['gen']):.1f}-{max(r['gen']):.1f})")


if __name__ == "__main__":
    main()
