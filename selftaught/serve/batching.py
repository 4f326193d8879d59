"""Dynamic batching: the rows of concurrent requests judged in one engine call.

One asyncio task takes requests off a queue; the first waits up to ``max_wait_ms`` for others until
``max_batch`` rows are gathered; the batch's rows go to the judge in one call per kind, on one engine
thread (the engine is not thread-safe and batches better than it interleaves). Bounded: a request that
would push the waiting rows past ``max_queue`` is refused at once (``Overloaded``, the caller's 429 with a
Retry-After from the measured rows/s), and each request waits at most ``timeout_s`` (``asyncio.TimeoutError``,
the caller's 504): a request that times out before its batch starts is dropped from it, one that times out
during it is answered by nobody, and no request waits on another's failure.
"""
from __future__ import annotations

import asyncio
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional

Run = Callable[[str], Callable[[list[dict]], list[dict]]]  # kind -> (rows -> results, same ids)


class EngineError(RuntimeError):
    """The engine call of a batch failed (the message: the original exception's type and text)."""


class Overloaded(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"queue full: retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass
class _Request:
    kind: str
    rows: list[dict]
    future: asyncio.Future
    queued_at: float = field(default_factory=time.monotonic)


@dataclass
class BatchStats:
    """What /metrics and Retry-After read."""

    queued_rows: int = 0
    batches: int = 0
    rows: int = 0
    engine_seconds: float = 0.0
    last_batch_rows: int = 0
    on_batch: Optional[Callable[[str, int, float], None]] = None  # (kind, rows, seconds) after each engine call

    def rows_per_s(self) -> float:
        return self.rows / self.engine_seconds if self.engine_seconds > 0 else 0.0


class Batcher:
    def __init__(self, run: Run, max_batch: int, max_wait_ms: float, max_queue: int,
                 stats: Optional[BatchStats] = None):
        self._run, self.max_batch, self.max_wait, self.max_queue = run, max_batch, max_wait_ms / 1000, max_queue
        self.stats = stats or BatchStats()
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._engine = ThreadPoolExecutor(max_workers=1, thread_name_prefix="judge-engine")
        self._task: Optional[asyncio.Task] = None
        self._seq = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self._engine.shutdown(wait=True)

    def retry_after(self, extra_rows: int = 0) -> int:
        rate = self.stats.rows_per_s()
        waiting = self.stats.queued_rows + extra_rows
        return max(1, min(60, math.ceil(waiting / rate))) if rate > 0 else 1

    async def submit(self, kind: str, rows: list[dict], timeout_s: float) -> list[dict]:
        """The rows' results in their order; raises ``Overloaded`` or ``asyncio.TimeoutError``."""
        if self.stats.queued_rows + len(rows) > self.max_queue:
            raise Overloaded(self.retry_after(len(rows)))
        self._seq += 1
        # Ids unique across the batch: the request's number, then the row's place in it.
        keyed = [{**r, "id": f"{self._seq}/{i}"} for i, r in enumerate(rows)]
        req = _Request(kind, keyed, asyncio.get_running_loop().create_future())
        self.stats.queued_rows += len(rows)
        self._queue.put_nowait(req)
        try:
            # wait_for cancels the future on timeout: the loop then skips the request if its batch has not started.
            results = await asyncio.wait_for(req.future, timeout_s)
        finally:
            if not req.future.done():
                req.future.cancel()
        return [{k: v for k, v in r.items() if k != "id"} for r in results]

    async def _gather(self) -> list[_Request]:
        first = await self._queue.get()
        batch, n = [first], len(first.rows)
        deadline = time.monotonic() + self.max_wait
        while n < self.max_batch:
            left = deadline - time.monotonic()
            try:
                req = self._queue.get_nowait() if left <= 0 else await asyncio.wait_for(self._queue.get(), left)
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
            batch.append(req)
            n += len(req.rows)
        for req in batch:
            self.stats.queued_rows -= len(req.rows)
        return [r for r in batch if not r.future.done()]  # timed out while waiting: dropped

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            for kind in dict.fromkeys(r.kind for r in batch):
                reqs = [r for r in batch if r.kind == kind and not r.future.done()]
                rows = [row for r in reqs for row in r.rows]
                if not rows:
                    continue
                t0 = time.monotonic()
                try:
                    results = await loop.run_in_executor(self._engine, self._run(kind), rows)
                    by_id = {r["id"]: r for r in results}
                    answers = [[by_id[row["id"]] for row in r.rows] for r in reqs]
                    dt = time.monotonic() - t0
                    self.stats.batches += 1
                    self.stats.rows += len(rows)
                    self.stats.engine_seconds += dt
                    self.stats.last_batch_rows = len(rows)
                    if self.stats.on_batch:
                        self.stats.on_batch(kind, len(rows), dt)
                except Exception as e:  # the engine failed: these requests fail (500), the service goes on
                    err = EngineError(f"{type(e).__name__}: {e}")  # never mistaken for the request's own timeout
                    for r in reqs:
                        if not r.future.done():
                            r.future.set_exception(err)
                    continue
                for r, answer in zip(reqs, answers):
                    if not r.future.done():
                        r.future.set_result(answer)
