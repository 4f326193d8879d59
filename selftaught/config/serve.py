"""``selftaught serve``: the judge behind HTTP (``selftaught/serve/``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from selftaught.config.base import BaseConfig

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
# /get_reward's reward: verify = P(yes) that the response answers the prompt (a judge trained with
# judge.mode=verify); grade = the absolute 1-5 expected score; reference = the pairwise verdict of the
# response against the label as reference answer (1 win, 0.5 tie, 0 loss); auto = verify when
# judge_file.decide=verify, else grade.
REWARDS = ("auto", "verify", "grade", "reference")


@dataclass
class ServeConfig(BaseConfig):
    """The service's limits and where it listens. What it judges with (the model, the template, the
    decision rule, constrained decoding) is ``model.*`` / ``judge_file.*`` / ``eval.*``, as for
    ``selftaught judge``, so the service decides a pair exactly as the batch command does."""

    KEY: ClassVar[str] = "serve"
    host: str = "127.0.0.1"  # a non-local address needs a bearer token (it refuses to start without one)
    port: int = 8000
    token_env: str = "SELFTAUGHT_SERVE_TOKEN"  # the environment variable that holds the bearer token
    token_file: Optional[str] = None  # or a file whose first line is the token (the variable wins)
    max_batch: int = 64  # rows judged in one engine call, gathered across concurrent requests
    max_wait_ms: float = 5.0  # how long a lone request waits for others to batch with
    max_queue: int = 512  # rows waiting for the engine; a request that would exceed it gets 429 + Retry-After
    timeout_s: float = 120.0  # per request: past it, 504 (rows not yet started are dropped), never a hang
    max_body_bytes: int = 1_048_576  # larger bodies: 413
    max_rows: int = 256  # rows (pairs, responses, queries) in one request; more: 413
    reward: str = "auto"  # /get_reward: auto | verify | grade | reference (see REWARDS)
    # 0: one process (uvicorn, the engine in it). n >= 1: a Ray Serve application of n replicas, one
    # engine each (engine.tensor_parallel_size GPUs), behind Ray Serve's router on the cluster.
    replicas: int = 0

    def __post_init__(self) -> None:
        self._check(bool(self.host), "host", "must be set")
        self._check(0 <= self.port < 65536, "port", f"must be in 0..65535, got {self.port}")
        self._check(bool(self.token_env), "token_env", "must name an environment variable")
        for name in ("max_batch", "max_queue", "max_body_bytes", "max_rows"):
            self._check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        self._check(self.max_wait_ms >= 0, "max_wait_ms", f"must be >= 0, got {self.max_wait_ms}")
        self._check(self.timeout_s > 0, "timeout_s", f"must be > 0, got {self.timeout_s}")
        self._check(self.max_queue >= self.max_rows, "max_queue",
                    f"must hold one full request (max_rows={self.max_rows}), got {self.max_queue}")
        self._check(self.reward in REWARDS, "reward", f"must be one of {'|'.join(REWARDS)}, got {self.reward!r}")
        self._check(self.replicas >= 0, "replicas", f"must be >= 0, got {self.replicas}")

    @property
    def local(self) -> bool:
        return self.host in LOCAL_HOSTS
