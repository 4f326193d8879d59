"""Gold preference sets for evaluation: files or folders in LLMBar / RewardBench format, by config."""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from selftaught import io
from selftaught.fingerprint import content_digest
from selftaught.atomic import atomic_path
from selftaught.config import EvalConfig, EvalSetConfig, eval_set_name
from selftaught.parsing import FOUR_WAY_OPTIONS

EXTENSIONS = (".json", ".jsonl", ".parquet")


# Where each format's public data lives: named in the error for a set that cannot be found.
SOURCES = ("LLMBar: github.com/princeton-nlp/LLMBar (Dataset/LLMBar/*/dataset.json), or allenai/reward-bench; "
           "RewardBench: allenai/reward-bench (split filtered); RewardBench 2: allenai/reward-bench-2 (split test); "
           "MT-Bench human votes: lmsys/mt_bench_human_judgments (split human)")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def eval_files(s: EvalSetConfig, i: int = 0) -> list[str]:
    """The files of one set: a shipped ``builtin:`` file, a file, every data file in a folder, or a hub
    dataset (cached once as parquet)."""
    key = f"eval.sets.{i}.path"
    if s.path.startswith("builtin:"):
        return [io.resolve_data_path(s.path, key)]
    p = os.path.abspath(os.path.expanduser(s.path))
    if os.path.isdir(p):
        files = sorted(str(f) for f in Path(p).iterdir() if f.suffix in EXTENSIONS and f.is_file())
        if not files:
            raise FileNotFoundError(f"{key}: no {'/'.join(EXTENSIONS)} files in {p}")
        return files
    if os.path.isfile(p):
        return [p]
    if HUB_ID.match(s.path):
        return [hub_file(s, key)]
    raise FileNotFoundError(f"{key}: {p} does not exist; give a local file or folder, or a hub dataset id "
                            f"(owner/name) where the hub is reachable. {SOURCES}")


def _cache_dir() -> Path:
    return Path(os.path.expanduser(os.environ.get("SELFTAUGHT_CACHE", "~/.cache/selftaught"))) / "eval_sets"


def hub_file(s: EvalSetConfig, key: str) -> str:
    """A hub dataset's split as a local parquet file: loaded with ``datasets.load_dataset`` the first time,
    read from the cache afterwards (so an offline machine can use a set fetched once)."""
    cached = _cache_dir() / f"{s.path.replace('/', '__')}__{s.split or 'default'}.parquet"
    if cached.is_file():
        return str(cached)
    try:
        import datasets

        loaded = datasets.load_dataset(s.path)
        split = s.split or (next(iter(loaded)) if len(loaded) == 1 else
                            next((x for x in ("test", "train") if x in loaded), None))
        if split not in loaded:
            raise ValueError(f"split {split!r} not in {sorted(loaded)}; set {key.rsplit('.', 1)[0]}.split")
        ds = loaded[split]
    except Exception as e:  # noqa: BLE001 - offline, unknown id, gated: all the same to the user
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise FileNotFoundError(f"{key}: {s.path} is not a local file or folder, and the hub dataset could not be "
                                f"loaded ({first}). {SOURCES}") from None
    with atomic_path(cached) as tmp:
        ds.to_parquet(tmp)
    return str(cached)


def fingerprint(cfg: EvalConfig) -> list:
    """What identifies the eval data in stage hashes: file names and contents."""
    out = []
    for i, s in enumerate(cfg.sets):
        for f in eval_files(s, i):
            out.append([eval_set_name(s), f, content_digest(f)])
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


def four_way_item(item: dict, group: str) -> dict:
    """A best-of-4 item (candidate 0 correct) as one judgment of all four answers (``eval.four_way``). As in
    RewardBench 2's generative script, the correct answer swaps places with the one at a position drawn at
    random, here from the item's id (the same position every run and round); ``gold`` is that position's letter."""
    pos = int(hashlib.sha256(group.encode()).hexdigest(), 16) % len(FOUR_WAY_OPTIONS)
    order = list(range(len(FOUR_WAY_OPTIONS)))
    order[0], order[pos] = order[pos], order[0]
    base = {k: v for k, v in item.items() if k != "candidates"}
    return {**base, "four_way": [item["candidates"][i] for i in order], "gold": FOUR_WAY_OPTIONS[pos],
            "eval_id": f"{group}/4way", "group": group}


def rated_candidates(item: dict, group: str) -> list[dict]:
    """A RewardBench 2 Ties item as one graded response per candidate (``ties.ties_metrics`` scores the
    group: every correct answer rated above every wrong one, and by how much)."""
    base = {k: v for k, v in item.items() if k not in ("candidates", "num_correct")}
    return [{**base, "response": c, "eval_id": f"{group}/{i}", "ties_group": group, "correct": i < item["num_correct"],
             "num_correct": item["num_correct"]} for i, c in enumerate(item["candidates"])]


def load_eval_sets(cfg: EvalConfig) -> tuple[list[dict], list[dict]]:
    """Pairs tagged with their set and a unique ``eval_id``; rejected rows (file:line, reason)."""
    pairs, failures = [], []
    for i, s in enumerate(cfg.sets):
        name = eval_set_name(s)
        for f in eval_files(s, i):
            rows, rejects = io.load_pairwise_eval(f, s.format, cfg.limit, f"eval.sets.{i}.path")
            for r in rows:
                eval_id = f"{name}/{Path(f).stem}/{r['id']}"  # ids: unique per file
                if "num_correct" in r:
                    pairs += rated_candidates({**r, "set": name}, eval_id)
                elif "candidates" in r:
                    pairs += best_of_n_pairs({**r, "set": name}, eval_id)
                    if cfg.four_way and len(r["candidates"]) == len(FOUR_WAY_OPTIONS):
                        pairs.append(four_way_item({**r, "set": name}, eval_id))
                else:
                    pairs.append({**r, "set": name, "eval_id": eval_id})
            failures += [{"source": f"{x.file}:{x.line}", "reason": x.reason, "snippet": x.snippet} for x in rejects]
    return pairs, failures
