"""What engines that outlive their stage save: the same run twice, a pool per stage (``ray.keep_engines=false``)
against pools kept across stages on one model (the default), stage seconds side by side with their ratio.

    python scripts/bench_engine_reuse.py                       # Ray engine actors (the cluster path), 2 rounds
    python scripts/bench_engine_reuse.py --in-process          # ray.enabled=false (the CPU demo's path)
    python scripts/bench_engine_reuse.py --rounds 2 --limit 8 -- judge.n=4   # more overrides after --

Both runs are real: SmolLM2-135M-Instruct generates the pairs and is the seed judge, Ray Train trains it
(plain, 1 worker), vLLM serves every stage, and each run starts from an empty folder. The engine stages
(categorize, holdout_pairs, pairs, verify_pairs/judge, eval) are the ones that can gain; the others are
listed for the whole. An engine start (process, imports, weights; on a GPU also graph capture) is paid
once per pool, so the saving per round is (pools per stage - pools kept) x start time.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SMALL = [
    "preset=cpu_demo", "tracking.mode=disabled", "select.limit={limit}", "rounds={rounds}",
    "data.limit=80", "eval.limit=8", "eval.holdout.min_size=12", "eval.holdout.max_size=12", "pairs.max_tokens=48",
    "judge.n_max=4",
    "train.gradient_accumulation_steps=2",
]


def _run(out: Path, name: str, keep: bool, in_process: bool, rounds: int, limit: int, extra: list[str]) -> dict:
    args = [a.format(limit=limit, rounds=rounds) for a in SMALL] + [
        f"output_dir={out}", f"name={name}", f"ray.keep_engines={str(keep).lower()}",
        f"ray.enabled={str(not in_process).lower()}", *extra]
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "selftaught.cli", "run", *args], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"run {name} failed (rc {p.returncode}):\n{(p.stdout + p.stderr)[-3000:]}")
    stages: dict[tuple, float] = {}
    for f in sorted((out / name).glob("round_*/summary.jsonl")):
        for line in f.read_text().splitlines():
            s = json.loads(line)
            if not s.get("resumed"):
                stages[(s["round"], s["stage"])] = float(s.get("seconds") or 0.0)
    # an engine start: in-process, the engine's own line; on Ray, the driver's line for each pool it starts
    starts = sum(f.read_text().count(mark) for f in (out / name / "logs").glob("*.log")
                 for mark in (("starting vLLM on",) if in_process else ("engine actor(s) on",)))
    return {"wall": wall, "stages": stages, "starts": starts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--in-process", action="store_true", help="ray.enabled=false: in-process engines")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--limit", type=int, default=12, help="select.limit: instructions per round")
    ap.add_argument("--out", default=None, help="folder for both runs (default: a temporary one)")
    ap.add_argument("extra", nargs="*", help="more run overrides (after --)")
    a = ap.parse_args()
    out = Path(a.out or tempfile.mkdtemp(prefix="bench_reuse_"))
    per_stage = _run(out, "per_stage", False, a.in_process, a.rounds, a.limit, a.extra)
    kept = _run(out, "kept", True, a.in_process, a.rounds, a.limit, a.extra)

    where = "in-process engines" if a.in_process else "Ray engine actors"
    print(f"\nengine reuse ({where}; SmolLM2-135M-Instruct on vLLM CPU; {a.rounds} rounds, select.limit={a.limit})\n")
    print("| round | stage | pool per stage (s) | pools kept (s) | kept / per stage |")
    print("|---|---|---:|---:|---:|")
    order = list(per_stage["stages"]) + [k for k in kept["stages"] if k not in per_stage["stages"]]  # pipeline order
    for key in order:
        b, k = per_stage["stages"].get(key), kept["stages"].get(key)
        ratio = f"{k / b:.2f}" if b and k is not None and b >= 1.0 else "-"
        fb, fk = (f"{v:.1f}" if v is not None else "-" for v in (b, k))
        print(f"| {key[0]} | {key[1]} | {fb} | {fk} | {ratio} |")
    tb, tk = sum(per_stage["stages"].values()), sum(kept["stages"].values())
    print(f"| all | stages | {tb:.1f} | {tk:.1f} | {tk / tb:.2f} |")
    print(f"| all | wall (process) | {per_stage['wall']:.1f} | {kept['wall']:.1f} | {kept['wall'] / per_stage['wall']:.2f} |")
    print(f"\nengine starts: {per_stage['starts']} per stage, {kept['starts']} kept; saved "
          f"{tb - tk:.1f} s over {a.rounds} rounds ({(tb - tk) / max(1, per_stage['starts'] - kept['starts']):.1f} s "
          f"per start avoided). Runs in {out}")


if __name__ == "__main__":
    main()
