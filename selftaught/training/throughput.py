"""Steady-state training throughput, apart from the fixed start-up inside ``trainer.train()``.

``train_runtime / tokens`` mixes in 16-31 s of engine set-up (DeepSpeed, optimizer, first-step
compilation) that does not grow with the data, so a short run understates the rate a long one gets.
This callback stamps every optimizer step: start-up is the time from ``train()`` to the first step,
steady throughput the tokens over the time of the steps after the first ``skip`` ones. Start-up is split
where it goes: ``engine_seconds`` up to ``on_train_begin`` (the DeepSpeed engine, the optimizer and its
sharding), the rest the data loader's first batch; ``first_step_seconds`` is the first step itself
(kernels' first launch and autotuning, DeepSpeed's first reduce), outside start-up and the steady rate.
"""
from __future__ import annotations

import time
from typing import Optional

from transformers import TrainerCallback


class Throughput(TrainerCallback):
    def __init__(self, skip: int = 2):
        self.skip = skip
        self.called: Optional[float] = None  # set by the caller just before trainer.train()
        self.began: Optional[float] = None
        self.first_step: Optional[float] = None
        self.steps: list[tuple[float, int]] = []  # (end time, input tokens seen so far)

    def on_train_begin(self, args, state, control, **kwargs):
        self.began = time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        if self.first_step is None:
            self.first_step = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append((time.perf_counter(), int(state.num_input_tokens_seen or 0)))

    def report(self) -> dict:
        """``startup_seconds`` (``engine_seconds`` of it), ``first_step_seconds`` and, with more than
        ``skip + 1`` steps, ``steady_tokens_per_s`` (all workers: the token count is gathered) over
        ``steady_steps`` steps."""
        out: dict = {}
        if self.called is not None and self.first_step is not None:
            out["startup_seconds"] = round(self.first_step - self.called, 3)
            if self.began is not None:
                out["engine_seconds"] = round(self.began - self.called, 3)
        if self.first_step is not None and self.steps:
            out["first_step_seconds"] = round(self.steps[0][0] - self.first_step, 3)
            # each optimizer step's wall time, the first one's included (GRPO splits it: time/generate_s)
            ends = [self.first_step] + [t for t, _ in self.steps]
            out["step_seconds"] = [round(b - a, 3) for a, b in zip(ends, ends[1:])]
        # A short run (a handful of steps) has no steady part: measure from the first step's end instead.
        skip = self.skip if len(self.steps) > self.skip + 1 else 0
        if len(self.steps) > skip + 1:
            (t0, n0), (t1, n1) = self.steps[skip], self.steps[-1]
            if t1 > t0 and n1 > n0:
                out.update(steady_tokens_per_s=round((n1 - n0) / (t1 - t0), 2), steady_steps=len(self.steps) - 1 - skip)
        return out
