"""Chaos test of resume: kill the whole run (its process group, SIGKILL) at K points spread over
stages and rounds, rerun until it completes, and check that nothing was lost, duplicated or redone.

    python scripts/chaos_resume.py                 # 10 kills, two rounds on a tiny judge (~15 min on 2 cores)
    python scripts/chaos_resume.py --kills 3 --seed 1
    python scripts/chaos_resume.py --kills 3 --nondeterministic   # shows the equality check can fail

First an uninterrupted run (deterministic mode) gives the reference rows and the timeline of shard
commits. Kill points are drawn evenly over that timeline (shard commits of every sharded stage of
every round, and the middle of each round's training). The chaos run is then started again and
again; each time the next kill point is reached it is killed with SIGKILL, and what was committed
at that moment is recorded. The final start runs to completion. Checks, printed as a table:

- the run completes (exit 0, every stage marker present);
- every input row is accounted for: per shard and per stage, out + failed = in x rows per input,
  each stage's input is its upstream's output, and no row id appears twice;
- deterministic mode: every stage's rows equal the uninterrupted run's, row for row by id;
- no temporary file is left;
- no committed shard is redone: every shard committed before a kill keeps its commit id.

The run is the CLI (``python -m selftaught.cli run``) in-process engines (``ray.enabled=false``:
transformers, SmolLM2 writes the pairs, a tiny random Llama judges) and Ray Train for the SFT.
Ray processes a kill orphans are stopped with ``ray stop --force`` (every local Ray on the machine).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selftaught.atomic import read_log  # noqa: E402
from selftaught.config import ModelConfig  # noqa: E402
from selftaught.io import read_jsonl, read_records  # noqa: E402
from selftaught.models import TINY_TWO_ROUNDS, build_tiny_model, resolve_model  # noqa: E402
from selftaught.stages import EVAL, PIPELINE  # noqa: E402
from selftaught.store import MARKER, MANIFEST  # noqa: E402

SPECS = {s.name: s for s in PIPELINE + (EVAL,)}
# 1:1 stages read exactly their upstream's kept rows (select is a filter; load and eval read files)
UPSTREAM = {b.name: a.name for a, b in zip(PIPELINE, PIPELINE[1:]) if b.name != "select"}
INSTRUCTIONS = [
    "What is 15% of 80?", "Write a haiku about the sea.", "Explain why the sky is blue.",
    "Name three prime numbers.", "Give one tip for learning a language.", "What is the capital of France?",
    "Summarize the plot of Romeo and Juliet in one sentence.", "Write a Python function that reverses a string.",
]
# The tests' two-round run on the tiny judge, in-process, with shards of 2 rows: many commit
# points per stage, seconds per shard.
OVERRIDES = [o for o in TINY_TWO_ROUNDS if not o.startswith(("data.limit=", "ray.batch_size=", "tracking."))] + [
    "ray.enabled=false", "ray.num_cpus=2", "ray.batch_size=2", "shard_size=2", "tracking.backend=none"]


def stage_dirs(run: Path) -> list[Path]:
    return sorted(p.parent for p in run.glob("*/*/" + MANIFEST))


def committed(run: Path) -> dict[tuple[str, int], str]:
    """(stage folder, shard) -> commit id of every committed shard."""
    out = {}
    for d in stage_dirs(run):
        for e in read_log(d / MANIFEST)[1:]:
            out[(str(d.relative_to(run)), e["shard"])] = e.get("commit", "")
    return out


def timeline(run: Path) -> list[tuple[float, tuple]]:
    """(time, kill point) of the reference run: each shard commit, and mid-training of each round."""
    events = []
    for d in stage_dirs(run):
        rel = str(d.relative_to(run))
        if d.name == "train":
            continue
        for p in sorted((d / "data").glob("part-*.parquet")):
            events.append((p.stat().st_mtime, ("shard", rel, int(p.stem.split("-")[1]) + 1)))
    for m in sorted(run.glob("round_*/sft_data/" + MARKER)):
        train_marker = m.parent.parent / "train" / MARKER
        if train_marker.exists():  # the middle of training: half way from sft_data's marker to train's
            t0, t1 = m.stat().st_mtime, train_marker.stat().st_mtime
            events.append(((t0 + t1) / 2, ("train", str(m.parent.parent.relative_to(run)), (t1 - t0) / 2)))
    return sorted(events)


def reached(run: Path, point: tuple) -> bool:
    kind, rel, n = point
    if kind == "shard":
        return len(read_log(run / rel / MANIFEST)[1:]) >= n if (run / rel / MANIFEST).exists() else False
    return (run / rel / "sft_data" / MARKER).exists()


def start(run_root: Path, name: str, model: str, data: Path, log_file, deterministic: bool = True) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "selftaught.cli", "run", f"output_dir={run_root}", f"name={name}",
           f"model.path={model}", f"data.path={data}", *OVERRIDES, f"deterministic={str(deterministic).lower()}"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    # Ray's daemons (raylet, GCS, train workers) run in their own sessions: stop what the kill orphaned.
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True)


def normalized_rows(run: Path, rel: str) -> dict[str, str]:
    spec = SPECS[Path(rel).name]
    rows = read_records(run / rel / "data") + read_jsonl_all(run / rel / "failures")
    return {spec.row_id(r): json.dumps(r, sort_keys=True, default=str).replace(str(run), "<run>")
            for r in rows}


def read_jsonl_all(d: Path) -> list[dict]:
    return [r for p in sorted(d.glob("part-*.jsonl")) for r in read_jsonl(p)]


def check_accounting(run: Path) -> list[str]:
    problems = []
    outs = {}
    for d in stage_dirs(run):
        rel, spec = str(d.relative_to(run)), SPECS.get(d.name)
        if spec is None:
            continue
        entries = read_log(d / MANIFEST)[1:]
        shards = [e["shard"] for e in entries]
        if len(set(shards)) != len(shards):
            problems.append(f"{rel}: a shard committed twice")
        n_in = sum(e["in"] for e in entries)
        n_out = sum(e["out"] for e in entries)
        n_bad = sum(e["failed"] for e in entries)
        per = 2 * 2 if d.name == "eval" else spec.per_input(None)  # eval: two orders x two modes
        if per is None:
            if n_out + n_bad > n_in:
                problems.append(f"{rel}: {n_out} out + {n_bad} failed > {n_in} in")
        elif n_out + n_bad != n_in * per:
            problems.append(f"{rel}: {n_out} out + {n_bad} failed != {n_in} in x {per}")
        rows = read_records(d / "data")
        fails = read_jsonl_all(d / "failures")
        if len(rows) != n_out or len(fails) != n_bad:
            problems.append(f"{rel}: files hold {len(rows)} rows and {len(fails)} failures, manifest {n_out} and {n_bad}")
        ids = [spec.row_id(r) for r in rows + fails]
        if len(set(ids)) != len(ids):
            problems.append(f"{rel}: {len(ids) - len(set(ids))} duplicated row ids")
        outs[rel] = (n_in, n_out)
    for rel, (n_in, _) in outs.items():
        up = UPSTREAM.get(Path(rel).name)
        if up:  # a 1:1 stage reads exactly its upstream's kept rows
            src = f"data/{up}" if up == "pairs" else str(Path(rel).parent / up)
            if src in outs and outs[src][1] != n_in:
                problems.append(f"{rel}: {n_in} in, but {src} has {outs[src][1]} out")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/selftaught-chaos")
    ap.add_argument("--nondeterministic", action="store_true",
                    help="deterministic=false: a redone shard draws new samples, so outputs may differ")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    out = Path(args.out).resolve()
    if out.exists():
        subprocess.run(["rm", "-rf", str(out)], check=True)
    out.mkdir(parents=True)
    model = build_tiny_model(out / "tiny", resolve_model(ModelConfig()))
    data = out / "instructions.jsonl"
    data.write_text("".join(json.dumps({"instruction": t}) + "\n" for t in INSTRUCTIONS))
    log_path = out / "runs.log"

    with open(log_path, "ab") as log_file:
        t0 = time.time()
        det = not args.nondeterministic
        ref = start(out / "runs", "reference", model, data, log_file, det)
        if ref.wait() != 0:
            print(f"the uninterrupted run failed; see {log_path}")
            return 1
        ref_seconds = time.time() - t0
        ref_run = out / "runs" / "reference"
        events = timeline(ref_run)
        # Each round's training once (when K allows), the rest evenly spread over the shard commits
        # (each jittered within its slot); in timeline order.
        trains = [e for e in events if e[1][0] == "train"][: max(0, args.kills // 2)]
        shards = [e for e in events if e[1][0] == "shard"]
        k = args.kills - len(trains)
        picks = {min(len(shards) - 1, int((i + rng.random()) * len(shards) / k)) for i in range(k)}
        points = [p for _, p in sorted(trains + [shards[i] for i in picks])]

        run = out / "runs" / "chaos"
        kills, seen_commits, starts = [], {}, 0
        for point in points:
            proc = start(out / "runs", "chaos", model, data, log_file, det)
            starts += 1
            while proc.poll() is None and not reached(run, point):
                time.sleep(0.05)
            if proc.poll() is not None:  # finished (or failed) before the point: go on to the next one
                kills.append((point, "not reached", proc.returncode))
                continue
            # Just after a commit, kill within the next shard; in training, mid-way through it.
            time.sleep(rng.uniform(0, 0.5) if point[0] == "shard" else point[2])
            kill_group(proc)
            snap = committed(run)
            seen_commits.update(snap)
            kills.append((point, "killed", len(snap)))
        proc = start(out / "runs", "chaos", model, data, log_file, det)
        starts += 1
        rc = proc.wait()

    checks = []
    complete = rc == 0 and all((d / MARKER).exists() for d in stage_dirs(run))
    checks.append(("the run completes", complete, f"exit {rc} after {starts} starts"))
    problems = check_accounting(run)
    checks.append(("every row accounted for, none duplicated", not problems, "; ".join(problems[:3]) or "per shard and per stage"))
    diffs = []
    for d in stage_dirs(ref_run):
        rel = str(d.relative_to(ref_run))
        if d.name == "train" or not (run / rel).exists():
            continue
        a, b = normalized_rows(ref_run, rel), normalized_rows(run, rel)
        if a != b:
            diffs.append(f"{rel}: {sum(a.get(k) != b.get(k) for k in set(a) | set(b))} rows differ")
    checks.append((f"outputs equal the uninterrupted run's{'' if det else ' (deterministic=false)'}", not diffs, "; ".join(diffs[:3]) or "row for row by id"))
    tmps = [str(p) for p in run.rglob("*.tmp")]
    checks.append(("no temporary files left", not tmps, ", ".join(tmps[:3]) or "none"))
    final = committed(run)
    redone = [k for k, c in seen_commits.items() if final.get(k) != c]
    checks.append(("no committed shard redone", not redone, f"{len(seen_commits)} shards committed before kills; "
                                                             f"{len(redone)} redone {redone[:3]}"))

    n_killed = sum(k[1] == "killed" for k in kills)
    print(f"\nreference run: {ref_seconds:.0f} s, {len(events)} kill points; chaos run: {n_killed} kills, {starts} starts")
    print("| # | kill point | outcome |")
    print("|---|---|---|")
    for i, (point, what, n) in enumerate(kills, 1):
        where = f"{point[1]} after shard {point[2]}" if point[0] == "shard" else f"{point[1]} training, +{point[2]:.0f} s"
        print(f"| {i} | {where} | {what}{f' ({n} shards committed)' if what == 'killed' else ''} |")
    print("\n| check | result | detail |")
    print("|---|---|---|")
    for name, ok, detail in checks:
        print(f"| {name} | {'PASS' if ok else 'FAIL'} | {detail} |")
    survived = n_killed if all(ok for _, ok, _ in checks) else 0
    print(f"\n{survived}/{n_killed} kills survived (log: {log_path})")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
