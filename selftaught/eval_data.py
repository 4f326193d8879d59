"""Gold preference sets for evaluation: files or folders in LLMBar / RewardBench format, by config."""
from __future__ import annotations

import os
from pathlib import Path

from selftaught import io
from selftaught.config import EvalConfig, EvalSetConfig, eval_set_name

EXTENSIONS = (".json", ".jsonl", ".parquet")


def eval_files(s: EvalSetConfig, i: int = 0) -> list[str]:
    """The files of one set: a shipped ``builtin:`` file, a file, or every data file in a folder."""
    if s.path.startswith("builtin:"):
        return [io.resolve_data_path(s.path, f"eval.sets.{i}.path")]
    p = os.path.abspath(os.path.expanduser(s.path))
    if os.path.isdir(p):
        files = sorted(str(f) for f in Path(p).iterdir() if f.suffix in EXTENSIONS and f.is_file())
        if not files:
            raise FileNotFoundError(f"eval.sets.{i}.path: no {'/'.join(EXTENSIONS)} files in {p}")
        return files
    if not os.path.isfile(p):
        raise FileNotFoundError(f"eval.sets.{i}.path: {p} does not exist")
    return [p]


def fingerprint(cfg: EvalConfig) -> list:
    """What identifies the eval data in stage hashes: file names, sizes and mtimes."""
    out = []
    for i, s in enumerate(cfg.sets):
        for f in eval_files(s, i):
            st = os.stat(f)
            out.append([eval_set_name(s), f, st.st_size, st.st_mtime_ns])
    return out


def best_of_n_pairs(item: dict, group: str) -> list[dict]:
    """A best-of-n item (RewardBench 2: candidate 0 correct, the rest not) as a round robin: every
    pair of candidates, each judged in both orders like any pair. The candidate with the most votes
    is the judge's pick (``evaluate``: best_of_n_accuracy; a random judge scores 1/n). Only the pairs
    with the correct candidate have a gold answer (``scored``): they also count in the pairwise metrics."""
    cands = item["candidates"]
    base = {k: v for k, v in item.items() if k != "candidates"}
    return [{**base, "chosen": cands[i], "rejected": cands[j], "eval_id": f"{group}/{i}v{j}", "group": group,
             "cand_a": i, "cand_b": j, "n_candidates": len(cands), "scored": i == 0}
            for i in range(len(cands)) for j in range(i + 1, len(cands))]


def load_eval_sets(cfg: EvalConfig) -> tuple[list[dict], list[dict]]:
    """Pairs tagged with their set and a unique ``eval_id``; rejected rows (file:line, reason)."""
    pairs, failures = [], []
    for i, s in enumerate(cfg.sets):
        name = eval_set_name(s)
        for f in eval_files(s, i):
            rows, rejects = io.load_pairwise_eval(f, s.format, cfg.limit, f"eval.sets.{i}.path")
            for r in rows:
                eval_id = f"{name}/{Path(f).stem}/{r['id']}"  # ids: unique per file
                if "candidates" in r:
                    pairs += best_of_n_pairs({**r, "set": name}, eval_id)
                else:
                    pairs.append({**r, "set": name, "eval_id": eval_id})
            failures += [{"source": f"{x.file}:{x.line}", "reason": x.reason, "snippet": x.snippet} for x in rejects]
    return pairs, failures
