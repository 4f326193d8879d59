"""Launch the training step (SFT, DPO, GRPO, or SFT then one of them) on Ray Train (``TorchTrainer``): N workers, DDP or
DeepSpeed ZeRO-2/3.

The training loop itself is ``selftaught.training.worker.train_worker``. Workers write the model
straight to ``out_dir``: this assumes a filesystem shared by the driver and every worker node
(one machine, or NFS/Lustre on a cluster), as the rest of the pipeline does for stage outputs.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from selftaught.config import ConfigError, RayConfig, TrainConfig

log = logging.getLogger("selftaught.training")


@dataclass
class TrainResult:
    model_path: str  # absolute HF folder (full weights; LoRA merged)
    metrics: dict[str, Any]  # train_metrics.json without log_history and step_seconds (per step: the file has them)
    log_history: list[dict] = field(default_factory=list)


def check_train_resources(cfg: TrainConfig, ray_cfg: RayConfig | None = None) -> None:
    """Checks against the running Ray cluster (call after ``ray.init``); ``ConfigError`` names the key.

    ``ray_cfg`` is accepted for symmetry with ``train_with_ray``; the cluster is read from Ray.
    """
    import ray

    if cfg.strategy != "plain" and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(f"train.strategy: {cfg.strategy} needs DeepSpeed, which is not installed "
                          "(pip install deepspeed, or use trainer=plain)")
    res = ray.cluster_resources() if ray.is_initialized() else {}
    n = cfg.num_workers
    if cfg.use_gpu:
        need, have = n * cfg.gpus_per_worker, float(res.get("GPU", 0))
        if need > have:
            raise ConfigError(f"train.num_workers: {n} workers x train.gpus_per_worker {cfg.gpus_per_worker} = {need:g} GPUs, "
                              f"but the Ray cluster has {have:g} (train.use_gpu=true; set train.use_gpu=false to train on CPU)")
    need_cpu, have_cpu = n * cfg.cpus_per_worker, float(res.get("CPU", 0))
    if need_cpu > have_cpu:
        raise ConfigError(f"train.num_workers: {n} workers x train.cpus_per_worker {cfg.cpus_per_worker:g} = {need_cpu:g} CPUs, "
                          f"but the Ray cluster has {have_cpu:g}")


def _worker_env(cfg: TrainConfig) -> dict[str, str]:
    env = {"TOKENIZERS_PARALLELISM": "false"}
    if not cfg.use_gpu:
        env["DS_ACCELERATOR"] = "cpu"  # DeepSpeed must not probe for CUDA on CPU workers
    return env


def train_with_ray(data_path: str, base_model: str, out_dir: str, cfg: TrainConfig, ray_cfg: RayConfig,
                   dpo_path: str | None = None, grpo_path: str | None = None) -> TrainResult:
    """Train ``base_model`` on the SFT parquet ``data_path`` and/or (``train.objective``) the preference
    rows ``dpo_path`` or the GRPO prompts ``grpo_path``; the full model ends in ``out_dir``.

    A partial ``out_dir`` from an earlier attempt is removed first. Raises ``RuntimeError`` with
    the workers' error if training fails, ``ConfigError`` if the cluster cannot host the workers.
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from selftaught.distributed.generation import ensure_ray
    from selftaught.training.args import train_config_dict
    from selftaught.training.worker import METRICS_FILE, train_worker

    ensure_ray(ray_cfg)  # the config itself was checked once, before Ray started (config.validate)
    check_train_resources(cfg, ray_cfg)

    out = os.path.abspath(os.path.expanduser(out_dir))
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    # Ray Train's run folder (worker logs, no checkpoints): beside out_dir, absolute.
    storage = os.path.join(os.path.dirname(out), "_ray_train")
    name = f"{os.path.basename(out)}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"

    resources = {"CPU": float(cfg.cpus_per_worker)}
    if cfg.use_gpu:
        resources["GPU"] = float(cfg.gpus_per_worker)
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={
            "data_path": os.path.abspath(data_path) if data_path else None,
            "dpo_path": os.path.abspath(dpo_path) if dpo_path else None,
            "grpo_path": os.path.abspath(grpo_path) if grpo_path else None,
            "base_model": base_model if not os.path.exists(base_model) else os.path.abspath(base_model),
            "out_dir": out,
            "train": train_config_dict(cfg),
        },
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(name=name, storage_path=storage,
                                       failure_config=ray.train.FailureConfig(max_failures=0),
                                       worker_runtime_env={"env_vars": _worker_env(cfg)}),
    )
    log.info("training %s (%s) on %s: %s x %d workers -> %s", base_model, cfg.objective,
             " + ".join(p for p in (data_path, dpo_path, grpo_path) if p), cfg.strategy, cfg.num_workers, out)
    try:
        trainer.fit()
    except Exception as e:  # ray.train.TrainingFailedError (WorkerGroupError / ControllerError)
        raise RuntimeError(f"training failed ({cfg.strategy}, {cfg.num_workers} workers): {_error_text(e)}") from None

    metrics_path = os.path.join(out, METRICS_FILE)
    if not os.path.isfile(metrics_path):
        raise RuntimeError(f"training finished but {metrics_path} is missing: is out_dir on a filesystem "
                           "shared by the driver and the workers?")
    with open(metrics_path) as f:
        metrics = json.load(f)
    history = metrics.pop("log_history", [])
    metrics.pop("step_seconds", None)
    return TrainResult(model_path=out, metrics=metrics, log_history=history)


def _error_text(e: BaseException) -> str:
    failures = getattr(e, "worker_failures", None)
    if failures:
        parts = []
        for rank, err in sorted(failures.items()):
            parts.append(f"[rank {rank}] {type(err).__name__}: {_last_line(err)}")
        return "\n".join(parts) + f"\n{e}"
    return f"{type(e).__name__}: {e}"


def _last_line(err: BaseException) -> str:
    """The worker's own exception (Ray wraps it; its str holds the remote traceback)."""
    cause = getattr(err, "cause", None) or err.__cause__
    if cause is not None and not isinstance(cause, type(err)):
        return f"{type(cause).__name__}: {cause}"
    text = str(err).strip().splitlines()
    return text[-1] if text else repr(err)


__all__ = ["TrainResult", "check_train_resources", "train_with_ray"]
