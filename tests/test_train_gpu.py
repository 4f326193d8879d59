"""ZeRO-2 / ZeRO-3 bf16 training of a Llama-3.2-1B-shaped model on GPU (skipped without CUDA).

Runs ``scripts/bench_train.py`` (fresh worker processes per strategy, random-init weights, no download).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(SCRIPTS))  # spawned workers inherit sys.path, so they can import it too
    import bench_train

    return bench_train


@pytest.mark.parametrize("strategy", ["zero2", "zero3"])
def test_1b_bf16(bench, strategy, tmp_path):
    rows = bench.main(["--model-config", "1b", "--strategy", strategy, "--workers", "1", "--bf16",
                       "--steps", "4", "--warmup", "1", "--seq-len", "1024", "--tmp", str(tmp_path)])
    (r,) = rows
    assert r["gpu"] and r["dtype"] == "bf16" and r["strategy"] == strategy
    assert math.isfinite(r["loss"]) and r["loss"] > 0
    assert r["tokens_per_s"] > 0 and r["mfu_pct"] is not None and r["mfu_pct"] > 0
    assert 1.1e9 < r["params"] < 1.4e9
