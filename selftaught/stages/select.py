"""Stage 2: pick a subset of categorized instructions by category quotas (pure, seeded).

Three modes, in order of precedence:
- ``quotas``: at most quota[c] rows of each named category (others dropped);
- ``categories`` + ``balance``: round-robin over the kept categories, so each gets an equal share
  of ``limit`` while it has rows left;
- neither: every parsed row (shuffled), up to ``limit``.
Rows whose label did not parse are never selected: their "Other" is a placeholder, not a label.
"""
from __future__ import annotations

import random
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Optional

from selftaught import io
from selftaught.config import HoldoutConfig, RunConfig, SelectConfig
from selftaught.rows import Categorized
from selftaught.stages import holdout
from selftaught.stages.base import StageSpec, Upstream

STAGE = "select"
# The columns ``select`` decides on: the driver reads only these from every categorize shard,
# then streams the shards again to write the chosen rows.
COLUMNS = ["id", "status", "category", "category_parsed", "complexity"]


def select(records: list[dict], cfg: SelectConfig) -> list[dict]:
    rng = random.Random(cfg.seed)
    eligible = [
        r for r in records
        if r.get("status") == "ok" and r.get("category_parsed") and (r.get("complexity") or 0) >= cfg.min_complexity
    ]
    by_cat: dict[str, list[dict]] = defaultdict(list)
    for r in sorted(eligible, key=lambda r: r["id"]):  # sort first: selection must not depend on row order
        by_cat[r["category"]].append(r)
    for rows in by_cat.values():
        rng.shuffle(rows)

    if cfg.quotas:
        chosen = [r for cat, q in sorted(cfg.quotas.items()) for r in by_cat.get(cat, [])[:q]]
    elif cfg.balance:
        cats = sorted(cfg.categories or by_cat.keys())
        queues = [deque(by_cat.get(c, [])) for c in cats]
        chosen = []
        while any(queues):  # round-robin: equal share per category while it lasts
            for q in queues:
                if q:
                    chosen.append(q.popleft())
    else:
        keep = set(cfg.categories) if cfg.categories else None
        chosen = [r for c in sorted(by_cat) if keep is None or c in keep for r in by_cat[c]]
        rng.shuffle(chosen)
    if cfg.limit is not None:
        chosen = chosen[: cfg.limit]
    return chosen


def category_counts(records: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for r in records:
        counts[r.get("category") or "Other"] += 1
    return dict(sorted(counts.items()))


@dataclass(frozen=True)
class Selection:
    select: SelectConfig
    exclude: tuple[str, ...] = ()  # ids earlier rounds used (generator.fresh_instructions), sorted
    holdout: Optional[HoldoutConfig] = None  # eval.holdout: its instructions are never selected


def selection(cfg: RunConfig, up: Upstream) -> Selection:
    held = cfg.eval.holdout if holdout.enabled(cfg) else None
    if not cfg.generator.fresh_instructions:
        return Selection(cfg.select, holdout=held)
    used = {r["id"] for sd in up.earlier(STAGE) for r in sd.rows(["id"])}
    return Selection(cfg.select, tuple(sorted(used)), held)


def excluded(c: Selection, up: Upstream) -> set[str]:
    """The ids ``select`` may not pick: earlier rounds' (fresh instructions) and the held-out ones."""
    return set(c.exclude) | (holdout.held_out(holdout.pool_ids(up.dir), c.holdout) if c.holdout else set())


def items(c: Selection, up: Upstream) -> Iterator[dict]:
    """Decide on the few columns ``select`` needs, then stream the upstream shards for the chosen rows."""
    exclude = excluded(c, up)
    chosen = {r["id"] for r in select([r for r in up.dir.rows(COLUMNS) if r["id"] not in exclude], c.select)}
    for f in up.dir.data_files():
        yield from (r for r in io.read_records(f) if r["id"] in chosen)


# select reads categorize, not the holdout stages declared between them.
SPEC = StageSpec(name=STAGE, row_type=Categorized, process=None, rows_per_input=None, scope="fresh",
                 sources=("categorize",), config=selection, items=items,
                 count_in=lambda c, up: up.summary["out"] - len(excluded(c, up)),
                 shard_stats=lambda rows, c: {"categories": category_counts(rows)},
                 summarize=lambda st, c: {"categories": dict(sorted((st.get("categories") or {}).items()))})
