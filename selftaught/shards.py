"""One shard of a stage: read its input, run the stage's pure ``process``, write its files, report.

The same function runs in a Ray actor (``distributed/generation.py``) and in-process, so both
paths follow one contract: input shard ``i`` of a stage becomes its output shard ``i`` (data +
failures files, written durably), and the returned manifest entry carries every count the stage
summary needs (rows in/out/failed, failures by reason, tokens, the stage's own additive stats), so
summaries never load the rows into the driver.
"""
from __future__ import annotations

import hashlib
import time
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

from selftaught.io import read_records
from selftaught.stages.base import OK, StageContext, StageSpec
from selftaught.store import StageDir

EXAMPLES_PER_SHARD = 3  # failures a manifest entry quotes, for the driver's log


def shard_seed(ctx: StageContext, stage: str, shard: int) -> int:
    """The engine seed of one shard in deterministic mode: the same wherever and whenever it runs."""
    digest = hashlib.blake2b(f"{ctx.seed}:{ctx.round}:{stage}:{shard}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def _reason(r: dict) -> str:
    return str(r.get("status") or r.get("reason"))


def _tokens(spec: StageSpec, rows: list[dict]) -> tuple[int, int]:
    p = c = 0
    for r in rows:
        for f in spec.meta_fields:
            m = r.get(f)
            if m:
                p += m.get("prompt_tokens") or 0
                c += m.get("completion_tokens") or 0
    return p, c


def entry_for(spec: StageSpec, stage_cfg: Any, i: int, n_in: int, rows: list[dict], seconds: float) -> tuple[dict, list, list]:
    """(manifest entry, kept rows, failures) of a processed shard."""
    ok = [r for r in rows if r.get("status", OK) == OK]
    bad = [r for r in rows if r.get("status", OK) != OK]
    p, c = _tokens(spec, rows)
    entry = {
        "shard": i, "in": n_in, "out": len(ok), "failed": len(bad), "failures": dict(Counter(map(_reason, bad))),
        "prompt_tokens": p, "completion_tokens": c, "seconds": round(seconds, 3),
        "stats": spec.shard_stats(rows, stage_cfg) if spec.shard_stats else {},
        "examples": [[spec.row_id(r), _reason(r)] for r in bad[:EXAMPLES_PER_SHARD]],
        "commit": uuid.uuid4().hex,  # tells a redone shard from the one committed before (chaos check)
    }
    return entry, ok, bad


def process_shard(spec: StageSpec, stage_dir: str, i: int, input_path: str, engine, ctx: StageContext, stage_cfg: Any,
                  batch_size: int, on_batch: Optional[Callable[[int], None]] = None) -> dict:
    """Run input shard ``i`` through ``spec.process``; write output shard ``i``; return its manifest entry
    (the caller commits it). ``on_batch(n_inputs)`` reports progress within the shard."""
    t0 = time.perf_counter()
    records = read_records(input_path)
    if ctx.deterministic and engine is not None and hasattr(engine, "reseed"):
        engine.reseed(shard_seed(ctx, spec.name, i))
    ctx = replace(ctx, shard=i)
    out: list[dict] = []
    for j in range(0, len(records), batch_size):
        chunk = records[j: j + batch_size]
        out.extend(spec.process(chunk, engine, ctx, stage_cfg))
        if on_batch is not None:
            on_batch(len(chunk))
    entry, ok, bad = entry_for(spec, stage_cfg, i, len(records), out, time.perf_counter() - t0)
    if spec.rows_for is not None:
        entry["rows_in"] = sum(spec.rows_for(r, stage_cfg) for r in records)
    StageDir(Path(stage_dir)).write_shard(i, ok, bad, spec.row_type)
    return entry


def merge_stats(total: dict, part: dict) -> dict:
    """Add a shard's stats into ``total``: numbers add, dicts merge key by key, ``max_*`` keys take the max."""
    for k, v in part.items():
        if isinstance(v, dict):
            merge_stats(total.setdefault(k, {}), v)
        elif k.startswith("max_"):
            total[k] = max(total.get(k, v), v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            total[k] = total.get(k, 0) + v
    return total


def merged(entries: list[dict]) -> dict:
    """The stage totals of its committed shards."""
    tot: dict = {}
    for e in entries:
        merge_stats(tot, {k: e[k] for k in ("in", "rows_in", "out", "failed", "failures", "prompt_tokens",
                                            "completion_tokens") if k in e})
        merge_stats(tot.setdefault("stats", {}), e.get("stats") or {})
    return tot
