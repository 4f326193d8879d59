"""Scale bench of the orchestrator: driver peak RSS and wall time at 1K / 10K / 100K pairs through
load → categorize → holdout → select → [neighbors →] pairs → judge → sft_data, in one run, side by side.

    python scripts/bench_scale.py                       # 1K, 10K, 100K (~10 min on 2 cores)
    python scripts/bench_scale.py --sizes 1000 10000 --judge-n 4 --shard-size 256
    python scripts/bench_scale.py --rejected neighbor   # neighbor pairs: the whole-pool nearest-neighbor search

It measures the project's own code (the driver, the shard store, the stage logic, parsing), not a
model: every generation comes from ``ScriptedBenchEngine``, a benchmark engine that returns
well-formed text at once. It is defined here, used only here, and never the default nor in a test
that claims to test an engine. Each size runs in a fresh process (``--one``), in-process engines
(``ray.enabled=false``, so the "driver" also runs the stages), and reports its own peak RSS.

Targets (issue: streaming stages): RSS(100K) <= 1.5 x RSS(10K), and wall time linear in n.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selftaught.engines.base import GenRequest, GenResult, make_result  # noqa: E402
from selftaught.parsing import MOD_END, MOD_START, RESP_END, RESP_START  # noqa: E402

CATEGORIES = ["Coding", "Open QA", "Brainstorming", "Closed QA", "Rewriting"]


def _h(*parts) -> int:
    return int.from_bytes(hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=4).digest(), "little")


class ScriptedBenchEngine:
    """A benchmark engine: answers each stage's free-text request at once with parseable text, chosen
    by the request id's suffix; verdicts are a seeded coin (about half correct). No model runs."""

    name = "scripted-bench"

    def __init__(self, model_path: str):
        self.model_path = model_path

    def count_prompt_tokens(self, request: GenRequest) -> int:
        return sum(len(m["content"]) for m in request.messages) // 4

    def _text(self, rid: str, i: int, prompt: str = "") -> str:
        if rid.endswith("/answer"):  # its instruction's words, so answers differ as instructions do
            return f"An answer to {rid} about {prompt[-80:]}, written plainly and without a verdict."
        if rid.endswith("/modify"):
            return (f"{MOD_START}\nA close but different instruction derived from {rid}.\n{MOD_END}\n"
                    f"{RESP_START}\nA good answer to that different instruction.\n{RESP_END}")
        if rid.endswith(("/AB", "/BA")):
            v = "AB"[_h(rid, i) % 2]
            return f"Assistant {v} follows the instruction more closely and is accurate.\n\nFinal verdict: [[{v}]]"
        return f"Category: {CATEGORIES[_h(rid) % len(CATEGORIES)]}\nComplexity: {1 + _h(rid, 'c') % 10}\nLength: 120"

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        out = []
        for r in requests:
            n = r.sampling.n if r.sampling.temperature > 0 else 1
            samples = [(t, "stop", len(t) // 4) for t in (self._text(r.id, i, r.messages[-1]["content"]) for i in range(n))]
            out.append(make_result(r, self.count_prompt_tokens(r), samples))
        return out

    def close(self) -> None:
        pass


def _instruction(i: int) -> str:
    """Six words of a 3,000-word vocabulary, seeded by i: instructions share a few words with many others, as a real
    pool does, so the neighbor search has a band to look in."""
    words = [f"w{_h(i, j) % 3000}" for j in range(6)]
    return f"Explain {' '.join(words)} in a short paragraph."


def one(n: int, judge_n: int, shard_size: int, work: Path, rejected: str) -> dict:
    """One size, in this process: returns wall seconds, peak RSS and the stage summaries."""
    from selftaught import compose
    from selftaught.config import ModelConfig
    from selftaught.driver import Run
    from selftaught.models import resolve_model

    data = work / "instructions.jsonl"
    with open(data, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"x{i}", "instruction": _instruction(i)}) + "\n")
    model = resolve_model(ModelConfig())
    cfg = compose([f"output_dir={work}", "name=scale", f"model.path={model}", f"data.path={data}", "ray.enabled=false",
                   "engine=hf", "engine.constrained=false", "until=sft_data", "rounds=1", f"shard_size={shard_size}",
                   "ray.batch_size=64", f"judge.n={judge_n}", "judge.temperature=0.7", f"pairs.rejected={rejected}",
                   "select.balance=false", "tracking.backend=none"])
    run = Run(cfg)
    engine = ScriptedBenchEngine(model)
    run.local.engines[model] = engine  # the in-process runner reuses an engine it already holds
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    run.run()
    wall = time.perf_counter() - t0
    stages = {s["stage"]: {"out": s["out"], "seconds": s["seconds"]} for s in run.summaries}
    return {"n": n, "wall_s": round(wall, 2), "rss_before_mb": round(rss0, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "stages": stages}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--judge-n", type=int, default=4)
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--rejected", default="joint", choices=["joint", "neighbor"],
                    help="pairs.rejected: the model's x' (joint) or a similar instruction's answer (neighbor)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one(args.one, args.judge_n, args.shard_size, Path(args.work), args.rejected)), flush=True)
        return 0

    results = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix=f"bench_scale_{n}_") as work:
            p = subprocess.run([sys.executable, __file__, "--one", str(n), "--work", work, "--judge-n", str(args.judge_n),
                                "--shard-size", str(args.shard_size), "--rejected", args.rejected], capture_output=True, text=True)
            line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
            if p.returncode != 0 or line is None:
                print(p.stdout[-3000:], p.stderr[-3000:], file=sys.stderr)
                return 1
            results.append(json.loads(line[len("RESULT "):]))
            r = results[-1]
            print(f"n={n}: {r['wall_s']} s, peak RSS {r['peak_rss_mb']} MB", file=sys.stderr, flush=True)

    base = results[0]
    pairs = "neighbors → pairs" if args.rejected == "neighbor" else "pairs"
    print(f"\nload → categorize → holdout → select → {pairs} → judge (n={args.judge_n}, 2 orders) → sft_data; "
          f"pairs.rejected={args.rejected}; shard_size={args.shard_size}; scripted benchmark engine; one run\n")
    print("| pairs | wall s | s per 1K pairs | time ratio vs n ratio | driver peak RSS MB | RSS before run MB | RSS ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        made = r["stages"].get("pairs", {}).get("out", 0)
        print(f"| {r['n']:,} ({made:,} made) | {r['wall_s']} | {1000 * r['wall_s'] / r['n']:.2f} | "
              f"{r['wall_s'] / base['wall_s']:.1f}× / {r['n'] / base['n']:.0f}× | {r['peak_rss_mb']} | {r['rss_before_mb']} | "
              f"{r['peak_rss_mb'] / base['peak_rss_mb']:.2f}× |")
    by_n = {r["n"]: r for r in results}
    if 10000 in by_n and 100000 in by_n:
        ratio = by_n[100000]["peak_rss_mb"] / by_n[10000]["peak_rss_mb"]
        print(f"\nRSS(100K) / RSS(10K) = {ratio:.2f} (target <= 1.5): {'met' if ratio <= 1.5 else 'NOT met'}")
    print("\nper-stage seconds:")
    stages = list(results[-1]["stages"])
    print("| pairs | " + " | ".join(stages) + " |")
    print("|---|" + "---|" * len(stages))
    for r in results:
        print(f"| {r['n']:,} | " + " | ".join(str(r["stages"].get(s, {}).get("seconds", "-")) for s in stages) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
