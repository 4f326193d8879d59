"""The service's Prometheus metrics, on a registry of its own (two services in one process do not
collide)."""
from __future__ import annotations

from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self._requests = Counter("selftaught_requests", "HTTP requests by endpoint and status code", ["endpoint", "code"],
                                 registry=r)
        self._latency = Histogram("selftaught_request_seconds", "request latency", ["endpoint"], buckets=LATENCY_BUCKETS,
                                  registry=r)
        self._rows = Counter("selftaught_rows", "rows judged, by kind", ["kind"], registry=r)
        self._tokens = Counter("selftaught_tokens", "engine tokens, by kind and side", ["kind", "side"], registry=r)
        self._failures = Counter("selftaught_failures", "failed requests and rows, by reason", ["reason"], registry=r)
        self._batch = Histogram("selftaught_batch_rows", "rows per engine call", buckets=BATCH_BUCKETS, registry=r)
        self._engine = Counter("selftaught_engine_seconds", "seconds in engine calls", registry=r)
        self._queue = Gauge("selftaught_queue_rows", "rows waiting for the engine", registry=r)

    def queue_depth(self, read: Callable[[], float]) -> None:
        self._queue.set_function(read)

    def request(self, endpoint: str, code: int, seconds: float) -> None:
        self._requests.labels(endpoint, str(code)).inc()
        self._latency.labels(endpoint).observe(seconds)

    def rows(self, kind: str, out: dict) -> None:
        self._rows.labels(kind).inc()
        if "error" in out:
            self._failures.labels(out["error"].replace(" ", "_")).inc()
        for side in ("prompt", "completion"):
            self._tokens.labels(kind, side).inc(out.get(f"{side}_tokens") or 0)

    def failure(self, reason: str) -> None:
        self._failures.labels(reason).inc()

    def batch(self, kind: str, rows: int, seconds: float) -> None:
        self._batch.observe(rows)
        self._engine.inc(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
