"""Run a generative stage over records: on a pool of engine actors on Ray, or in-process.

The only Ray-aware code of the data loop. What travels to the actors is the list of shards, not
their rows: each actor reads an input shard file, runs the stage, writes the output shard
(``shards.process_shard``) and returns its manifest entry, which the driver commits at once, with
a progress bar (count, rate, ETA). Driver memory does not grow with the data.

Engines outlive their stage: a runner (``RayRunner`` on the cluster, ``LocalRunner`` in-process)
keeps its engines while consecutive stages use the same model, and the driver closes them before
training (``ray.keep_engines``).
"""
from __future__ import annotations

import json
import logging
import uuid
from typing import Callable, Optional

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


class _EngineActor:
    """One engine replica, built once; then given shards of any stage on its model. It writes each
    output shard itself (to the run's shared storage) and returns only the shard's manifest entry."""

    def __init__(self, engine_cfg: EngineConfig, model_path: str, max_model_len: int):
        self.engine = make_engine(engine_cfg, model_path, max_model_len)

    def shard(self, spec: StageSpec, stage_dir: str, index: int, path: str, ctx: StageContext, stage_cfg: object,
              batch_size: int) -> str:
        return json.dumps(process_shard(spec, stage_dir, index, path, self.engine, ctx, stage_cfg, batch_size))

    def close(self) -> None:
        self.engine.close()


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
    = 8 GPUs, but the Ray cluster has 4". Without this, the engine actors wait forever for resources.
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


class EnginePool:
    """``ray.concurrency`` engine actors on one model: started by the first stage that needs them and
    given every later stage on the same model until ``close`` (``RayRunner``).

    Ray Data's actor pools end with their dataset, so each stage would pay a process start, imports, a
    weight load and (GPU) graph capture per replica; these actors are plain Ray actors, and
    ``ray.util.ActorPool`` hands them one shard at a time in finish order. What travels is the list of
    shards, not their rows: each actor reads an input shard file, runs the stage, writes the output
    shard (``shards.process_shard``) and returns its manifest entry, which the driver commits at once."""

    def __init__(self, engine_cfg: EngineConfig, ray_cfg: RayConfig, model_path: str, max_model_len: int):
        import ray

        ensure_ray(ray_cfg)
        self.model_path, self.ray_cfg = model_path, ray_cfg
        self.tp = _TensorParallelPlacement(engine_cfg, ray_cfg) if _uses_tp(engine_cfg) else None
        gpus, _ = replica_resources(engine_cfg, ray_cfg)
        actor = ray.remote(_EngineActor)
        self.actors = []
        for _ in range(ray_cfg.concurrency):
            # TP: the actor reserves no GPU itself; its placement group's bundles hold the TP workers'.
            opts = ({"num_gpus": 0, "num_cpus": ray_cfg.num_cpus_per_actor, **self.tp()} if self.tp
                    else {"num_gpus": gpus, "num_cpus": ray_cfg.num_cpus_per_actor})
            self.actors.append(actor.options(**opts).remote(engine_cfg, model_path, max_model_len))

    def run(self, spec: StageSpec, stage_dir: str, tasks: list[Task], stage_cfg: object, ctx: StageContext, desc: str,
            commit: Commit, total: int, done: int = 0) -> None:
        """Run ``tasks`` (uncommitted shards); commit each as it finishes. ``total``/``done``: input rows
        of the stage and of its already committed shards (the progress bar)."""
        from ray.util import ActorPool

        pool = ActorPool(self.actors)
        bs = self.ray_cfg.batch_size
        with progress(total=total, desc=desc, unit="rec", initial=done) as bar:
            for s in pool.map_unordered(lambda a, t: a.shard.remote(spec, stage_dir, t[0], t[1], ctx, stage_cfg, bs),
                                        tasks):
                entry = json.loads(s)
                commit(entry)
                bar.update(entry["in"])

    def close(self) -> None:
        import ray

        for a in self.actors:
            try:
                ray.get(a.close.remote(), timeout=60)  # the engine's own shutdown (vLLM's child processes)
            except Exception as e:  # noqa: BLE001 - a dead actor has nothing left to close
                log.info("engine actor close: %s", e)
            ray.kill(a)
        self.actors = []
        if self.tp is not None:
            self.tp.release()  # placement groups outlive their actors: free the GPUs for the next pool


class RayRunner:
    """Engine pools on the Ray cluster, one alive at a time: consecutive stages on the same model share
    it (categorize → pairs on the generator; round k-1's eval → round k's judge), a stage on another
    model closes it first, and ``close`` ends it before training needs the GPUs. ``keep=False``: a
    pool per stage (``ray.keep_engines``, the benchmark's baseline)."""

    def __init__(self, engine_cfg: EngineConfig, ray_cfg: RayConfig, keep: bool = True):
        self.engine_cfg, self.ray_cfg, self.keep = engine_cfg, ray_cfg, keep
        self.pool: Optional[EnginePool] = None
        self.starts = 0  # pools started (tests/test_engine_pool.py reads it)

    def run(self, spec: StageSpec, stage_dir: str, tasks: list[Task], stage_cfg: object, ctx: StageContext, desc: str,
            commit: Commit, total: int, done: int = 0) -> None:
        if self.pool is not None and self.pool.model_path != ctx.model_path:
            self.close()
        if self.pool is None:
            log.info("starting %d engine actor(s) on %s", self.ray_cfg.concurrency, ctx.model_path)
            self.pool = EnginePool(self.engine_cfg, self.ray_cfg, ctx.model_path, ctx.max_model_len)
            self.starts += 1
        try:
            self.pool.run(spec, stage_dir, tasks, stage_cfg, ctx, desc, commit, total, done)
        finally:
            if not self.keep:
                self.close()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None


# -- GPU only: vLLM tensor parallelism (cannot run on CPU machines) ------------------------------
#
# An engine replica with tensor_parallel_size=TP runs TP GPU workers that must sit together: the
# pattern of Ray's own vLLM batch stage (ray.llm._internal.batch.stages.vllm_engine_stage): each
# actor is created inside its own placement group of TP {"GPU": 1, "CPU": 1} bundles (PACK, with
# child-task capture) and reserves no GPU itself; vLLM's Ray executor
# (distributed_executor_backend="ray", set by VLLMEngine) finds the current placement group and
# puts one worker on each bundle. ``EnginePool`` asks for one group per actor it starts.

def _uses_tp(engine_cfg: EngineConfig) -> bool:
    return engine_cfg.backend == "vllm" and engine_cfg.tensor_parallel_size > 1


class _TensorParallelPlacement:
    """One placement group of TP GPU bundles per replica: calling it makes a group and returns the actor's
    scheduling options.

    Groups are named ``<prefix>-<uuid>`` so ``release`` finds every one this object made.
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
    The same shard contract as ``EnginePool``: one shard in flight, committed when written."""

    def __init__(self, engine_cfg: Optional[EngineConfig], batch_size: int, keep: bool = True):
        self.engine_cfg, self.batch_size, self.keep = engine_cfg, batch_size, keep
        self.engines: dict[str, Engine] = {}

    def engine(self, ctx: StageContext) -> Engine:
        if ctx.model_path not in self.engines:
            self.close()  # one engine alive at a time: no leaked memory between models
            self.engines[ctx.model_path] = make_engine(self.engine_cfg, ctx.model_path, ctx.max_model_len)
        return self.engines[ctx.model_path]

    def run(self, spec: StageSpec, stage_dir: str, tasks: list[Task], stage_cfg: object, ctx: StageContext, desc: str,
            commit: Commit, total: int, done: int = 0) -> None:
        engine = self.engine(ctx) if spec.engine is not None and tasks else None
        try:
            with progress(total=total, desc=desc, unit="rec", initial=done) as bar:
                for i, path in tasks:
                    commit(process_shard(spec, stage_dir, i, path, engine, ctx, stage_cfg, self.batch_size, bar.update))
        finally:
            if not self.keep:
                self.close()

    def close(self) -> None:
        for e in self.engines.values():
            e.close()
        self.engines.clear()
