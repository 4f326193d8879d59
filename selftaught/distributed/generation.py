"""Run a generative stage over records: through Ray Data on a pool of engine actors, or in-process.

The only Ray-aware code of the data loop. Records travel as JSON strings (one column), so nested,
ragged stage outputs never hit Arrow schema inference; the driver consumes the stream with a
progress bar (count, rate, ETA) and gets rows back in input order.
"""
from __future__ import annotations

import json
import logging
from typing import Callable

import numpy as np

from selftaught.config import EngineConfig, RayConfig
from selftaught.engines import Engine, make_engine
from selftaught.progress import progress
from selftaught.stages.base import StageContext

log = logging.getLogger("selftaught.generation")

# A stage function: (records, engine, ctx, stage_cfg) -> records (one output row per input row,
# except the judge, which yields one per order).
StageFn = Callable[[list[dict], Engine, StageContext, object], list[dict]]


class _StageActor:
    """One engine replica: built once per actor, then called on batches of records."""

    def __init__(self, fn: StageFn, stage_cfg: object, engine_cfg: EngineConfig, ctx: StageContext):
        self.fn, self.stage_cfg, self.ctx = fn, stage_cfg, ctx
        self.engine = make_engine(engine_cfg, ctx.model_path, ctx.max_model_len)

    def __call__(self, batch: dict) -> dict:
        records = [json.loads(s) for s in batch["json"]]
        out = self.fn(records, self.engine, self.ctx, self.stage_cfg)
        # Order key (first input index, output position) and input count: stages may emit
        # new rows, or several per input (the judge: one per order), so tag here, not per row.
        n = len(out)
        inputs = np.zeros(n, dtype=np.int64)
        inputs[:1] = len(records)  # counted once per batch, on its first output row
        return {
            "json": np.array([json.dumps(r) for r in out], dtype=object),
            "first": np.full(n, int(batch["idx"].min()), dtype=np.int64),
            "pos": np.arange(n, dtype=np.int64),
            "inputs": inputs,
        }


def ensure_ray(cfg: RayConfig) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(address=cfg.address, num_cpus=cfg.num_cpus if cfg.address is None else None,
                 ignore_reinit_error=True, log_to_driver=True, include_dashboard=False)


def run_with_ray(fn: StageFn, records: list[dict], stage_cfg: object, engine_cfg: EngineConfig, ray_cfg: RayConfig,
                 ctx: StageContext, desc: str) -> list[dict]:
    import ray
    import ray.data

    ensure_ray(ray_cfg)
    ray.data.DataContext.get_current().enable_progress_bars = False  # ours shows count, rate, ETA
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    indexed = [{"json": json.dumps(r), "idx": i} for i, r in enumerate(records)]
    n_blocks = max(1, -(-len(indexed) // ray_cfg.batch_size))
    ds = ray.data.from_items(indexed, override_num_blocks=n_blocks).map_batches(
        _StageActor,
        fn_constructor_kwargs={"fn": fn, "stage_cfg": stage_cfg, "engine_cfg": engine_cfg, "ctx": ctx},
        compute=ray.data.ActorPoolStrategy(size=ray_cfg.concurrency),
        batch_size=ray_cfg.batch_size,
        batch_format="numpy",
        num_gpus=ray_cfg.num_gpus_per_actor or None,
        num_cpus=ray_cfg.num_cpus_per_actor,
    )
    keyed: list[tuple[int, int, str]] = []
    with progress(total=len(records), desc=desc, unit="rec") as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            keyed.extend(zip(batch["first"].tolist(), batch["pos"].tolist(), batch["json"]))
            bar.update(int(batch["inputs"].sum()))
    keyed.sort(key=lambda k: (k[0], k[1]))  # input order, whatever order the actors finished in
    return [json.loads(s) for _, _, s in keyed]


class LocalRunner:
    """In-process engines (no Ray), one per model, reused across stages and closed at the end."""

    def __init__(self, engine_cfg: EngineConfig, batch_size: int):
        self.engine_cfg, self.batch_size = engine_cfg, batch_size
        self.engines: dict[str, Engine] = {}

    def run(self, fn: StageFn, records: list[dict], stage_cfg: object, ctx: StageContext, desc: str) -> list[dict]:
        if ctx.model_path not in self.engines:
            self.close()  # one engine alive at a time: no leaked memory between models
            self.engines[ctx.model_path] = make_engine(self.engine_cfg, ctx.model_path, ctx.max_model_len)
        engine = self.engines[ctx.model_path]
        out: list[dict] = []
        with progress(total=len(records), desc=desc, unit="rec") as bar:
            for i in range(0, len(records), self.batch_size):
                chunk = records[i : i + self.batch_size]
                out.extend(fn(chunk, engine, ctx, stage_cfg))
                bar.update(len(chunk))
        return out

    def close(self) -> None:
        for e in self.engines.values():
            e.close()
        self.engines.clear()
