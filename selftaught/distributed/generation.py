"""Run a generative stage over records: through Ray Data on a pool of engine actors, or in-process.

The only Ray-aware code of the data loop. Records travel as JSON strings (one column), so nested,
ragged stage outputs never hit Arrow schema inference; the driver consumes the stream with a
progress bar (count, rate, ETA) and gets rows back in input order.
"""
from __future__ import annotations

import json
import logging
import uuid
from typing import Any, Callable

import numpy as np

from selftaught.config import ConfigError, EngineConfig, RayConfig
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


def check_shared_storage(output_dir: str, ray_cfg: RayConfig) -> None:
    """On a Ray cluster (``ray.address`` set) ``output_dir`` must be absolute: workers on other nodes
    write models there, and inside a Ray job a relative path lands in the job's temporary working dir.
    Needs no running Ray (a candidate for ``config.validate``)."""
    import os

    if ray_cfg.enabled and ray_cfg.address is not None and not os.path.isabs(os.path.expanduser(str(output_dir))):
        raise ConfigError(f"output_dir: must be an absolute path on storage every Ray node mounts when ray.address is set "
                          f"(got {output_dir!r}, ray.address={ray_cfg.address!r}); e.g. output_dir=/mnt/shared/selftaught "
                          "or SELFTAUGHT_STORAGE with cluster=multi_node")


def run_with_ray(fn: StageFn, records: list[dict], stage_cfg: object, engine_cfg: EngineConfig, ray_cfg: RayConfig,
                 ctx: StageContext, desc: str) -> list[dict]:
    import ray
    import ray.data

    ensure_ray(ray_cfg)
    ray.data.DataContext.get_current().enable_progress_bars = False  # ours shows count, rate, ETA
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    indexed = [{"json": json.dumps(r), "idx": i} for i, r in enumerate(records)]
    n_blocks = max(1, -(-len(indexed) // ray_cfg.batch_size))
    tp = _TensorParallelPlacement(engine_cfg, ray_cfg) if _uses_tp(engine_cfg) else None
    resources: dict[str, Any] = ({"num_gpus": None, "num_cpus": ray_cfg.num_cpus_per_actor, "ray_remote_args_fn": tp}
                                 if tp else {"num_gpus": replica_resources(engine_cfg, ray_cfg)[0] or None,
                                             "num_cpus": ray_cfg.num_cpus_per_actor})  # openai: no GPU
    ds = ray.data.from_items(indexed, override_num_blocks=n_blocks).map_batches(
        _StageActor,
        fn_constructor_kwargs={"fn": fn, "stage_cfg": stage_cfg, "engine_cfg": engine_cfg, "ctx": ctx},
        compute=ray.data.ActorPoolStrategy(size=ray_cfg.concurrency),
        batch_size=ray_cfg.batch_size,
        batch_format="numpy",
        **resources,
    )
    keyed: list[tuple[int, int, str]] = []
    try:
        with progress(total=len(records), desc=desc, unit="rec") as bar:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                keyed.extend(zip(batch["first"].tolist(), batch["pos"].tolist(), batch["json"]))
                bar.update(int(batch["inputs"].sum()))
    finally:
        if tp is not None:
            tp.release()  # placement groups outlive their actors: free the GPUs for the next stage
    keyed.sort(key=lambda k: (k[0], k[1]))  # input order, whatever order the actors finished in
    return [json.loads(s) for _, _, s in keyed]


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
