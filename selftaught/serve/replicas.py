"""``serve.replicas=n``: the same service as n Ray Serve replicas behind Ray Serve's HTTP proxy and router.

Each replica is one engine (``engine.tensor_parallel_size`` GPUs in one placement group when > 1) with the
app of ``app.py`` in front of it, batching its own requests; Ray Serve spreads requests over the replicas
and restarts one that dies. Auth, limits and errors are the app's, so a replica answers exactly as the
single process does. The cluster is ``ray.address`` (null: a local Ray, as ``selftaught run`` starts one).
"""
from __future__ import annotations

from typing import Optional

from ray import serve

from selftaught.config import RunConfig

APP_NAME = "selftaught-judge"


@serve.ingress()
class JudgeReplica:
    """One replica: its engine is built when Ray Serve starts it, then the app over it."""

    def __init__(self, cfg: RunConfig, model_path: str, token: Optional[str]):
        self.cfg, self.model_path, self.token = cfg, model_path, token

    def __serve_build_asgi_app__(self):
        from selftaught.serve.app import build_app
        from selftaught.serve.judge import ServedJudge

        # Not self.app: Ray Serve's ASGI wrapper owns that name.
        self.judge_app = build_app(ServedJudge.load(self.cfg, self.model_path), self.cfg.serve, self.token)
        return self.judge_app

    def check_health(self) -> None:
        """Ray Serve restarts a replica whose check raises: one whose batcher stopped answers nothing."""
        app = getattr(self, "judge_app", None)
        if app is None or not app.state.healthy():
            raise RuntimeError("the replica's batcher stopped")


def deployment(cfg: RunConfig, model_path: str, token: Optional[str]):
    """The bound Ray Serve application: ``serve.replicas`` replicas, each holding what one engine needs."""
    from selftaught.distributed.generation import _TensorParallelPlacement, _uses_tp, replica_resources

    gpus, cpus = replica_resources(cfg.engine, cfg.ray)
    options: dict = {"num_replicas": cfg.serve.replicas, "ray_actor_options": {"num_cpus": cpus, "num_gpus": gpus},
                     # more in flight than the app's queue holds would only wait in Ray's queue instead
                     "max_ongoing_requests": cfg.serve.max_queue, "health_check_period_s": 10}
    if _uses_tp(cfg.engine):  # the engine pools' placement: the replica in bundle 0, vLLM's other workers beside it
        bundles = _TensorParallelPlacement(cfg.engine, cfg.ray).bundles
        options = {**options, "ray_actor_options": {"num_cpus": bundles[0]["CPU"], "num_gpus": bundles[0]["GPU"]},
                   "placement_group_bundles": bundles, "placement_group_strategy": "PACK"}
    return serve.deployment(JudgeReplica, name="judge", **options).bind(cfg, model_path, token)


def serve_on_ray(cfg: RunConfig, model_path: str, token: Optional[str], blocking: bool = True) -> None:
    from selftaught.distributed.generation import ensure_ray

    s = cfg.serve
    ensure_ray(cfg.ray)
    serve.start(http_options={"host": s.host, "port": s.port})
    print(f"selftaught serve: {cfg.model.path} as {s.replicas} Ray Serve replica(s) on http://{s.host}:{s.port}  "
          f"decide={cfg.judge_file.decide} token {'required' if token else 'not required (local only)'}"
          + ("; Ctrl-C stops" if blocking else ""), flush=True)
    serve.run(deployment(cfg, model_path, token), name=APP_NAME, route_prefix="/", blocking=blocking)
