"""Stage ``holdout`` (``eval.holdout``): the instructions held out of every round, for a label-free progress signal.

Before ``select``, a fixed share of the run's instructions (those the generator categorized) is set aside: the
ones whose ids hash smallest (``held_out``), so the choice depends on the ids alone, never on row order, the
data's other rows, or the round. ``select`` never picks them; ``holdout_neighbors`` and ``holdout_pairs`` (the
``HOLDOUT`` declarations of ``neighbors`` and ``pairs``) make their pairs once, with the method of the training
pairs, and every round's judge, the seed's included, is evaluated on those pairs as the eval set
``eval.holdout.name``. Written by the driver, like ``select``: it reads the id
column of every categorize shard, then streams the shards for the held-out rows.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator

from selftaught import io
from selftaught.config import HoldoutConfig, RunConfig
from selftaught.rows import Categorized
from selftaught.stages.base import OK, StageSpec, Upstream

STAGE = "holdout"


def enabled(cfg: RunConfig) -> bool:
    return cfg.eval.enabled and cfg.eval.holdout.enabled


def size(n: int, cfg: HoldoutConfig) -> int:
    """How many of ``n`` instructions are held out: ``share`` of them, at least ``min_size`` where that leaves as
    many for training (else half), at most ``max_size``."""
    return min(max(math.ceil(cfg.share * n), min(cfg.min_size, n // 2)), cfg.max_size)


def _key(seed: int, rid: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"holdout:{seed}:{rid}".encode(), digest_size=8).digest(), "little")


def held_out(ids: list[str], cfg: HoldoutConfig) -> set[str]:
    """The ids held out of ``ids`` (the run's categorized instructions): the ``size`` smallest id hashes."""
    unique = sorted(set(ids))
    return set(sorted(unique, key=lambda rid: _key(cfg.seed, rid))[: size(len(unique), cfg)])


def pool_ids(up_dir) -> list[str]:
    """The ids the holdout is drawn from: every categorized instruction (``categorize``'s kept rows)."""
    return [r["id"] for r in up_dir.rows(["id", "status"]) if r.get("status", OK) == OK]


def items(cfg: HoldoutConfig, up: Upstream) -> Iterator[dict]:
    chosen = held_out(pool_ids(up.dir), cfg)
    for f in up.dir.data_files():
        yield from (r for r in io.read_records(f) if r["id"] in chosen)


SPEC = StageSpec(name=STAGE, row_type=Categorized, process=None, rows_per_input=None, scope="run",
                 config=lambda cfg, up: cfg.eval.holdout, items=items, enabled=enabled,
                 count_in=lambda c, up: up.summary["out"])
