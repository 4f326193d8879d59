"""Run a generative stage over records: through Ray Data on a pool of engine actors, or in-process.

The only Ray-aware code of the data loop. What travels through Ray Data is the list of shards, not
their rows: each actor reads an input shard file, runs the stage, writes the output shard
(``shards.process_shard``) and returns its manifest entry, which the driver commits at once, with
a progress bar (count, rate, ETA). Driver memory does not grow with the data.
"""
from __future__ import annotations

import json
import logging
import uuid
from typing import Any, Callable, Optional

import numpy as np

from selftaught.config import ConfigError, EngineConfig, RayConfig
from selftaught.engines import Engine, make_engine
from selftaught.progress import progress
from selftaught.shards import process_shard
from selftaught.stages.base import StageContext, StageSpec

log = logging.getLogger("selftaught.generation")

# One shard to run: (shard index, input parquet path).
Task = tuple[int, str]
# Called in the driver with each finished shard's manifest entry: it commits the shard.
Commit = Callable[[dict], None]


class _ShardActor:
    """One engine replica: built once per actor, then given shards; it writes each output shard
    itself (to the run's shared storage) and returns only the shard's manifest entry."""

    def __init__(self, spec: StageSpec, stage_dir: str, stage_cfg: object, engine_cfg: EngineConfig, ctx: StageContext,
                 batch_size: int):
        self.spec, self.stage_dir, self.stage_cfg, self.ctx, self.batch_size = spec, stage_dir, stage_cfg, ctx, batch_size
        self.engine = make_engine(engine_cfg, ctx.model_path, ctx.max_model_len)

    def __call__(self, batch: dict) -> dict:
        entries = [process_shard(self.spec, self.stage_dir, int(i), str(p), self.engine, self.ctx, self.stage_cfg,
                                 self.batch_size) for i, p in zip(batch["shard"], batch["path"])]
        return {"entry": np.array([json.dumps(e) for e in entries], dtype=object)}


def ensure_ray(cfg: RayConfig) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(address=cfg.address, num_cpus=cfg.num_cpus if cfg.address is None else None,
                 ignore_reinit_error=True, log_to_driver=True)  # the dashboard serves the state API Ray Train polls


def replica_resources(engine_cfg: EngineConfig, ray_cfg: RayConfig) -> tuple[float, float]:
    """(GPUs, CPUs) one engine replica holds: TP GPUs (+ 1 CPU each) for vLLM with TP > 1."""
    tp = engine_cfg.tensor_parallel_size
    if engine_cfg.backend == "openai":  # remote server: the actor only holds HTTP clients
        return 0.0, ray_cfg.num_cpus_per_actor
    if tp > 1:
        return float(tp), max(1.0, ray_cfg.num_cpus_per_actor) + (tp - 1)
    return ray_cfg.num_gpus_per_actor, ray_cfg.num_cpus_per_actor


def check_generation_resources(engine_cfg: EngineConfig, ray_cfg: RayConfig, key: str = "engine") -> None:
    """Fail before anything starts if the engine replicas cannot fit the running Ray cluster.

    Call after ``ensure_ray`` (the driver: for ``engine`` and, if set, ``generator.engine``);
    ``ConfigError`` names the keys, e.g. "ray.concurrency: 4 replicas x engine.tensor_parallel_size 2
    = 8 GPUs, but the Ray cluster has 4". Without this, Ray Data waits forever for the actors.
    """
    import ray

    tp, n = engine_cfg.tensor_parallel_size, ray_cfg.concurrency
    if tp > 1 and engine_cfg.backend != "vllm":
        raise ConfigError(f"{key}.tensor_parallel_size: {tp} needs {key}.backend=vllm, got {engine_cfg.backend!r}")
    res = ray.cluster_resources() if ray.is_initialized() else {}
    gpus, cpus = replica_resources(engine_cfg, ray_cfg)
    have_gpu, have_cpu = float(res.get("GPU", 0)), float(res.get("CPU", 0))
    per = f"{key}.tensor_parallel_size {tp}" if tp > 1 else f"ray.num_gpus_per_actor {gpus:g}"
    if n * gpus > have_gpu:
        raise ConfigError(f"ray.concurrency: {n} replicas x {per} = {n * gpus:g} GPUs, but the Ray cluster has {have_gpu:g}")
    if n * cpus > have_cpu:
        raise ConfigError(f"ray.concurrency: {n} replicas x {cpus:g} CPUs (ray.num_cpus_per_actor"
                          f"{', + 1 per extra TP worker' if tp > 1 else ''}) = {n * cpus:g} CPUs, "
                          f"but the Ray cluster has {have_cpu:g}")


def run_with_ray(spec: StageSpec, stage_dir: str, tasks: list[Task], stage_cfg: object, engine_cfg: EngineConfig,
                 ray_cfg: RayConfig, ctx: StageContext, desc: str, commit: Commit, total: int, done: int = 0) -> None:
    """Run ``tasks`` (uncommitted shards) on a pool of engine actors; commit each as it finishes.

    The driver holds only the task list and one entry at a time: rows go from the input shard
    files through the actors to the output shard files. ``total``/``done``: input rows of the
    stage and of its already committed shards (the progress bar)."""
    import ray
    import ray.data

    ensure_ray(ray_cfg)
    ray.data.DataContext.get_current().enable_progress_bars = False  # ours shows count, rate, ETA
    ray.data.DataContext.get_current().execution_options.preserve_order = False  # commit in finish order
    tp = _TensorParallelPlacement(engine_cfg, ray_cfg) if _uses_tp(engine_cfg) else None
    resources: dict[str, Any] = ({"num_gpus": None, "num_cpus": ray_cfg.num_cpus_per_actor, "ray_remote_args_fn": tp}
                                 if tp else {"num_gpus": replica_resources(engine_cfg, ray_cfg)[0] or None,
                                             "num_cpus": ray_cfg.num_cpus_per_actor})  # openai: no GPU
    items = [{"shard": i, "path": p} for i, p in tasks]
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items))).map_batches(
        _ShardActor,
        fn_constructor_kwargs={"spec": spec, "stage_dir": stage_dir, "stage_cfg": stage_cfg, "engine_cfg": engine_cfg,
                               "ctx": ctx, "batch_size": ray_cfg.batch_size},
        compute=ray.data.ActorPoolStrategy(size=ray_cfg.concurrency),
        batch_size=1,  # one shard per call: it is committed as soon as it is written
        batch_format="numpy",
        **resources,
    )
    try:
        with progress(total=total, desc=desc, unit="rec", initial=done) as bar:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for s in batch["entry"]:
                    entry = json.loads(s)
                    commit(entry)
                    bar.update(entry["in"])
    finally:
        if tp is not None:
            tp.release()  # placement groups outlive their actors: free the GPUs for the next stage


# -- GPU only: vLLM tensor parallelism (cannot run on CPU machines) ------------------------------
#
# An engine replica with tensor_parallel_size=TP runs TP GPU workers that must sit together: the
# pattern of Ray's own vLLM batch stage (ray.llm._internal.batch.stages.vllm_engine_stage): each
# actor is created inside its own placement group of TP {"GPU": 1, "CPU": 1} bundles (PACK, with
# child-task capture) and reserves no GPU itself; vLLM's Ray executor
# (distributed_executor_backend="ray", set by VLLMEngine) finds the current placement group and
# puts one worker on each bundle. Ray Data calls ``ray_remote_args_fn`` before starting each actor.

def _uses_tp(engine_cfg: EngineConfig) -> bool:
    return engine_cfg.backend == "vllm" and engine_cfg.tensor_parallel_size > 1


class _TensorParallelPlacement:
    """``ray_remote_args_fn`` for Ray Data: one placement group of TP GPU bundles per replica.

    Groups are named ``<prefix>-<uuid>`` so ``release`` finds them even if Ray Data called a copy.
    """

    def __init__(self, engine_cfg: EngineConfig, ray_cfg: RayConfig):
        self.tp = engine_cfg.tensor_parallel_size
        # The actor's own CPUs go in bundle 0; vLLM's other workers take 1 CPU each.
        self.bundles = [{"GPU": 1.0, "CPU": max(1.0, ray_cfg.num_cpus_per_actor)}] + [{"GPU": 1.0, "CPU": 1.0}] * (self.tp - 1)
        self.prefix = f"selftaught-tp-{uuid.uuid4().hex[:8]}"

    def __call__(self) -> dict:
        from ray.util import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        pg = placement_group(self.bundles, strategy="PACK", name=f"{self.prefix}-{uuid.uuid4().hex[:8]}")
        return {"scheduling_strategy": PlacementGroupSchedulingStrategy(pg, placement_group_capture_child_tasks=True)}

    def release(self) -> None:
        from ray.util import placement_group_table, remove_placement_group
        from ray.util.placement_group import get_placement_group

        for info in placement_group_table().values():
            if str(info.get("name", "")).startswith(self.prefix) and info.get("state") != "REMOVED":
                try:
                    remove_placement_group(get_placement_group(info["name"]))
                except Exception as e:  # already gone
                    log.warning("placement group %s: %s", info["name"], e)


class LocalRunner:
    """In-process engines (no Ray), one per model, reused across stages and closed at the end.
    The same shard contract as ``run_with_ray``: one shard in flight, committed when written."""

    def __init__(self, engine_cfg: Optional[EngineConfig], batch_size: int):
        self.engine_cfg, self.batch_size = engine_cfg, batch_size
        self.engines: dict[str, Engine] = {}

    def engine(self, ctx: StageContext) -> Engine:
        if ctx.model_path not in self.engines:
            self.close()  # one engine alive at a time: no leaked memory between models
            self.engines[ctx.model_path] = make_engine(self.engine_cfg, ctx.model_path, ctx.max_model_len)
        return self.engines[ctx.model_path]

    def run(self, spec: StageSpec, stage_dir: str, tasks: list[Task], stage_cfg: object, ctx: StageContext, desc: str,
            commit: Commit, total: int, done: int = 0) -> None:
        engine = self.engine(ctx) if spec.engine is not None and tasks else None
        with progress(total=total, desc=desc, unit="rec", initial=done) as bar:
            for i, path in tasks:
                commit(process_shard(spec, stage_dir, i, path, engine, ctx, stage_cfg, self.batch_size, bar.update))

    def close(self) -> None:
        for e in self.engines.values():
            e.close()
        self.engines.clear()
