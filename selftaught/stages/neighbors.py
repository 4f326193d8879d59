"""Stage ``neighbors`` (``pairs.rejected=neighbor|mixed``): for each instruction, similar but different ones of the pool.

The construction of LLMBar's Adversarial-Neighbor set on the run's own pool: the rejected answer to x will be the
generator's answer to another instruction of the pool, one whose TF-IDF cosine with x lies in ``pairs.neighbor``'s
band [min_similarity, max_similarity] (``similarity.nearest``: batched top-k, no queries x pool matrix): close
enough to be on x's topic, far enough not to be a paraphrase, whose answer does not answer x. This stage picks up to
``pairs.neighbor.k`` of them per instruction, the most similar in the band first; ``pairs`` answers them. The
label holds whatever the generator: an answer to another task does not answer x, even when the answer to x is
weak.

The pool is every categorized instruction (``categorize``), less the held-out ones for the round's instructions
(``eval.holdout``: a held-out instruction never becomes a training pair's x', so neither it nor its answer reaches
training); the held-out instructions' own neighbors (``holdout_neighbors``) come from the whole pool, so their
pairs are made as the training pairs are. An instruction with no neighbor in the band is a failure with that
reason (``mixed``: it keeps its x' pair). A whole-pool decision, written by the driver: it holds the pool's ids and
texts and their sparse TF-IDF vectors, and streams its rows out in shards.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Optional

from selftaught import io
from selftaught.config import HoldoutConfig, NeighborConfig, RunConfig
from selftaught.rows import WithNeighbors
from selftaught.similarity import nearest
from selftaught.stages import holdout
from selftaught.stages.base import OK, StageSpec, Upstream

STAGE = "neighbors"
NO_NEIGHBOR = "no neighbor in the similarity band"
CANDIDATES = 32  # nearest instructions looked at per instruction, before the band


@dataclass(frozen=True)
class NeighborSearch:
    neighbor: NeighborConfig
    rejected: str  # pairs.rejected: neighbor | mixed
    source: str  # the stage whose instructions get neighbors: select, or holdout
    holdout: Optional[HoldoutConfig] = None  # its instructions are no one's neighbor (the round's search)


def enabled(cfg: RunConfig) -> bool:
    return cfg.pairs.rejected in ("neighbor", "mixed")


def _pool(up: Upstream, held: Optional[HoldoutConfig]) -> list[dict]:
    """The candidates: every categorized instruction (id, text), less the held-out ones when ``held`` is set."""
    sd = up.sources["categorize"][0]
    rows = [r for r in sd.rows(["id", "instruction", "status"]) if r.get("status", OK) == OK]
    out = holdout.held_out([r["id"] for r in rows], held) if held is not None else set()
    return sorted((r for r in rows if r["id"] not in out), key=lambda r: r["id"])


def choose(queries: list[dict], pool: list[dict], cfg: NeighborConfig) -> list[list[dict]]:
    """For each query row, up to ``k`` neighbors of ``pool`` (``{id, instruction, similarity}``): the most similar
    other instructions whose similarity lies in the band."""
    where = {r["id"]: i for i, r in enumerate(pool)}
    sims, idx = nearest([q["instruction"] for q in queries], [r["instruction"] for r in pool], CANDIDATES,
                        exclude=[where.get(q["id"], -1) for q in queries])
    out = []
    for q, ss, ii in zip(queries, sims, idx):
        picks = [{"id": pool[j]["id"], "instruction": pool[j]["instruction"], "similarity": round(float(s), 4)}
                 for s, j in zip(ss, ii) if cfg.min_similarity <= s <= cfg.max_similarity
                 and pool[j]["instruction"].strip() != q["instruction"].strip()]
        out.append(picks[: cfg.k])
    return out


def items(c: NeighborSearch, up: Upstream) -> Iterator[dict]:
    pool = _pool(up, c.holdout)
    src = up.sources[c.source][0]
    for f in src.data_files():  # shard by shard: the pool is searched once per shard of queries
        queries = io.read_records(f)
        for q, picks in zip(queries, choose(queries, pool, c.neighbor) if queries else []):
            ok = picks or c.rejected == "mixed"  # mixed: the x' pair is made without neighbors
            yield {**q, "neighbors": picks, "status": OK if ok else NO_NEIGHBOR}


def search(cfg: RunConfig, up: Upstream, source: str, exclude_held: bool) -> NeighborSearch:
    return NeighborSearch(cfg.pairs.neighbor, cfg.pairs.rejected, source,
                          cfg.eval.holdout if exclude_held and holdout.enabled(cfg) else None)


def shard_stats(rows: list[dict], c: NeighborSearch) -> dict:
    found = [n for r in rows for n in (r.get("neighbors") or [])]
    return {"neighbors": len(found), "similarity_sum": sum(n["similarity"] for n in found),
            "without": sum(not r.get("neighbors") for r in rows)}


def summarize(st: dict, c: NeighborSearch) -> dict:
    n = st.get("neighbors", 0)
    return {"neighbors": n, "without_neighbor": st.get("without", 0), "k": c.neighbor.k,
            "band": [c.neighbor.min_similarity, c.neighbor.max_similarity],
            "mean_similarity": round(st.get("similarity_sum", 0.0) / n, 4) if n else None}


SPEC = StageSpec(name=STAGE, row_type=WithNeighbors, process=None, rows_per_input=1, scope="fresh", enabled=enabled,
                 sources=("select", "categorize"), config=lambda cfg, up: search(cfg, up, "select", exclude_held=True),
                 items=items, count_in=lambda c, up: up.sources[c.source][1]["out"], shard_stats=shard_stats,
                 summarize=summarize)
# The held-out instructions' neighbors, from the whole pool (eval.holdout), made once.
HOLDOUT = replace(SPEC, name="holdout_neighbors", scope="run", sources=(holdout.STAGE, "categorize"),
                  config=lambda cfg, up: search(cfg, up, holdout.STAGE, exclude_held=False),
                  enabled=lambda cfg: holdout.enabled(cfg) and enabled(cfg))
