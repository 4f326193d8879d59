"""The HTTP service over a judge (FastAPI): endpoints, bearer auth, limits, one-line errors, metrics.

    POST /v1/compare   a pair {instruction, response_a, response_b, reference?} or a list -> winner, decided_by, ...
    POST /v1/grade     a response {instruction, response, rubric?, reference?} or a list -> score, expected_score
    POST /get_reward   OpenRLHF's remote reward model: {query, prompts, labels} -> {rewards} (unscored: the
                       scale's middle, listed in "errors")
    GET  /health       200 while the batcher runs (no token needed: load balancers probe it)
    GET  /metrics      Prometheus text: requests, latency, rows, tokens, queue depth, batch size, failures

Every error is JSON ``{"error": "<one line>"}``: 400 bad JSON or a bad field (named), 401 no or wrong token,
413 body or row count over the limit, 429 queue full (``Retry-After``), 504 past ``serve.timeout_s``, 500 the
engine failed (the service keeps serving). The token is compared in constant time and never logged.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from contextlib import asynccontextmanager
from typing import Any, Awaitable, Callable, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from selftaught.config import ServeConfig
from selftaught.serve.batching import Batcher, BatchStats, Overloaded
from selftaught.serve.metrics import Metrics
from selftaught.serve.requests import BadRequest, CompareRow, GradeRow, reward_request, rows_of

log = logging.getLogger("selftaught.serve")


class HTTPError(Exception):
    def __init__(self, status: int, message: str, reason: str, headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.message, self.reason, self.headers = status, message, reason, headers or {}


def _error(status: int, message: str, headers: Optional[dict] = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status, headers=headers)


def build_app(judge, cfg: ServeConfig, token: Optional[str], close_judge: bool = True) -> FastAPI:
    """``judge``: a ``ServedJudge`` (or anything with ``run(kind)``, ``model``, ``reward``, ``judging``, ``close()``)."""
    metrics = Metrics()
    stats = BatchStats(on_batch=metrics.batch)
    state: dict[str, Batcher] = {}
    expected = token.encode() if token else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = Batcher(judge.run, cfg.max_batch, cfg.max_wait_ms, cfg.max_queue, stats)
        batcher.start()
        state["batcher"] = batcher
        metrics.queue_depth(lambda: stats.queued_rows)
        try:
            yield
        finally:
            await batcher.close()
            if close_judge:
                judge.close()

    app = FastAPI(title="selftaught judge", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.healthy = lambda: "batcher" in state and state["batcher"].alive  # Ray Serve's replica health check

    def authorize(request: Request) -> None:
        if expected is None:
            return
        scheme, _, got = request.headers.get("authorization", "").partition(" ")
        # The scheme is case-insensitive (RFC 7235); the token is compared in constant time.
        if scheme.lower() != "bearer" or not hmac.compare_digest(got.strip().encode(), expected):
            raise HTTPError(401, "missing or wrong bearer token (Authorization: Bearer <token>)", "unauthorized",
                            {"WWW-Authenticate": "Bearer"})

    async def body_json(request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > cfg.max_body_bytes:
            raise HTTPError(413, f"body of {declared} bytes is over serve.max_body_bytes={cfg.max_body_bytes}", "too_large")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > cfg.max_body_bytes:
                raise HTTPError(413, f"body is over serve.max_body_bytes={cfg.max_body_bytes}", "too_large")
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise HTTPError(400, f"body: not JSON ({e})", "bad_request") from None

    async def judged(kind: str, rows: list[dict]) -> list[dict]:
        if len(rows) > cfg.max_rows:
            raise HTTPError(413, f"{len(rows)} rows in one request, over serve.max_rows={cfg.max_rows}", "too_large")
        try:
            out = await state["batcher"].submit(kind, rows, cfg.timeout_s)
        except Overloaded as e:
            raise HTTPError(429, str(e), "overloaded", {"Retry-After": str(e.retry_after)}) from None
        except asyncio.TimeoutError:
            raise HTTPError(504, f"not judged within serve.timeout_s={cfg.timeout_s} s", "timeout") from None
        for r in out:
            metrics.rows(kind, r)
        return out

    async def handle(endpoint: str, request: Request, fn: Callable[[Any], Awaitable[Any]]) -> Response:
        t0 = time.monotonic()
        try:
            authorize(request)
            resp = JSONResponse(await fn(await body_json(request)))
        except HTTPError as e:
            metrics.failure(e.reason)
            resp = _error(e.status, e.message, e.headers)
        except BadRequest as e:
            metrics.failure("bad_request")
            resp = _error(400, str(e))
        except Exception as e:  # the engine or a bug: one line to the caller, the traceback to the log
            log.exception("%s failed", endpoint)
            metrics.failure("engine_error")
            resp = _error(500, f"{type(e).__name__}: {e}")
        metrics.request(endpoint, resp.status_code, time.monotonic() - t0)
        return resp

    def rows_endpoint(model, kind: str) -> Callable[[Any], Awaitable[Any]]:
        """/v1/compare and /v1/grade: a row or a list of rows in, the same shape out, the caller's ids echoed."""
        async def call(body: Any) -> Any:
            rows, many = rows_of(model, body)
            out = await judged(kind, [r.model_dump() for r in rows])
            out = [_echo(r, o) for r, o in zip(rows, out)]
            return out if many else out[0]
        return call

    compare, grade = rows_endpoint(CompareRow, "compare"), rows_endpoint(GradeRow, "grade")

    async def get_reward(body: Any) -> Any:
        req = reward_request(body)
        kind = judge.reward
        items = req.items()
        if kind == "reference":
            missing = [i for i, (_, _, label) in enumerate(items) if not (label or "").strip()]
            if missing:
                raise BadRequest(f"labels[{missing[0]}]: serve.reward=reference needs a reference answer per item")
        errors: dict[str, str] = {}
        todo = []
        for i, (p, r, label) in enumerate(items):
            if r is None:
                errors[str(i)] = "query does not start with its prompt"
            elif not r.strip() or not p.strip():
                errors[str(i)] = "empty prompt or response"
            else:
                todo.append((i, {"instruction": p, "response": r, "reference": label if kind != "verify" else None,
                                 "rubric": None}))
        out = await judged(kind, [row for _, row in todo]) if todo else []
        values: dict[int, float] = {}
        for (i, _), o in zip(todo, out):
            value = _reward_of(kind, o)
            if value is None:
                errors[str(i)] = o.get("error") or o.get("score_error") or "no score"
            else:
                values[i] = value
        # An item the judge could not score gets the scale's middle, neither a reward nor a penalty (RL stacks
        # that read only "rewards" would otherwise train on a made-up score); "errors" says which and why.
        rewards = [values.get(i, NEUTRAL[kind]) for i in range(len(items))]
        # OpenRLHF reads "rewards" (newer versions also "scores" and "extra_logs")
        return {"rewards": rewards, "scores": rewards, "extra_logs": {}, "reward": kind, "errors": errors}

    @app.post("/v1/compare")
    async def _compare(request: Request) -> Response:
        return await handle("compare", request, compare)

    @app.post("/v1/grade")
    async def _grade(request: Request) -> Response:
        return await handle("grade", request, grade)

    @app.post("/get_reward")
    async def _get_reward(request: Request) -> Response:
        return await handle("get_reward", request, get_reward)

    @app.get("/health")
    async def _health() -> Response:
        b = state.get("batcher")
        ok = b is not None and b.alive
        return JSONResponse({"status": "ok" if ok else "down", "model": judge.model, "decide": judge.judging.file.decide,
                             "reward": judge.reward, "queued_rows": stats.queued_rows, "batches": stats.batches,
                             "rows": stats.rows}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def _metrics(request: Request) -> Response:
        try:
            authorize(request)
        except HTTPError as e:
            return _error(e.status, e.message, e.headers)
        return Response(metrics.render(), media_type=metrics.content_type)

    return app


def _echo(row, out: dict) -> dict:
    return {"id": row.id, **out} if row.id is not None else out


NEUTRAL = {"verify": 0.5, "reference": 0.5, "grade": 3.0}  # the middle of each reward's scale


def _reward_of(kind: str, out: dict) -> Optional[float]:
    if "error" in out:
        return None
    if kind == "verify":
        return out["p_yes"]
    if kind == "reference":
        return out["reward"]
    return out["expected_score"] if out.get("expected_score") is not None else out.get("score")
