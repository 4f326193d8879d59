"""What a person sees: a real run's console is short and clean, its workers' output is in logs/; a stage
that raises shows its traceback and where its full log is."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# The lines a clean run must not print: Python tracebacks, error-level log lines (ours, Ray's core
# worker "E 1234 ..." / "[... E ...]" lines, vLLM's "ERROR").
BAD = re.compile(r"Traceback \(most recent call last\)|\bERROR\b|\berror: |^E\d{4} |\d E \d+ \d+\]")

SMALL = [
    "generator.path=embedded:smollm2", "data.limit=4", "engine.constrained=true", "engine.kv_cache_gb=1",
    "ray.enabled=false", "ray.num_cpus=2", "judge.n=2", "judge.n_max=4", "judge.max_tokens=16",
    "pairs.max_tokens=24", "pairs.modify_max_tokens=32", "pairs.max_instruction_tokens=32",
    "pairs.checks.enabled=false", "categorize.max_tokens=24", "eval.limit=4", "eval.max_tokens=8",
    "eval.holdout.enabled=false", "trainer=plain", "train.num_workers=1", "train.lr=1e-3", "train.warmup_steps=0",
    "train.per_device_batch_size=1", "train.gradient_accumulation_steps=1", "train.max_seq_length=512",
    "tracking.mode=disabled",
]


def _selftaught(*args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selftaught.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def _data(tmp_path: Path) -> Path:
    p = tmp_path / "instructions.jsonl"
    rows = ["What is 15% of 80?", "Write a haiku about the sea.", "Explain why the sky is blue.", "Name three primes."]
    p.write_text("".join(json.dumps({"id": f"i{i}", "instruction": t}) + "\n" for i, t in enumerate(rows)))
    return p


def test_a_successful_run_is_short_and_clean(tmp_path, tiny_model_path):
    p = _selftaught("run", f"output_dir={tmp_path}", "name=quiet", f"model.path={tiny_model_path}",
                    f"data.path={_data(tmp_path)}", "rounds=1", *SMALL)
    console = p.stdout + p.stderr
    assert p.returncode == 0, console[-4000:]
    lines = console.splitlines()
    assert len(lines) <= 100, console  # the demo's target is 150 for 2 rounds and a larger table
    assert not [ln for ln in lines if BAD.search(ln)], console
    # What it does show: the config line, every stage's result with its log, the tables.
    assert "selftaught run quiet: 1 round(s)" in console
    for stage in ("data.categorize", "data.pairs", "round_1.judge", "round_1.train", "round_1.eval"):
        assert f"[logs/{stage}.log]" in console, stage
    assert "run summary" in console and "logs: " in console
    # What it does not: the engines', Ray's and the trainer's own lines, which are in the stage logs.
    logs = tmp_path / "quiet" / "logs"
    assert "EngineCore" not in console and "safetensors" not in console and "RayTrainWorker" not in console
    assert "EngineCore" in (logs / "data.categorize.log").read_text()
    train_log = (logs / "round_1.train.log").read_text()
    assert "RayTrainWorker" in train_log and "'loss'" in train_log
    # The run's own lines are in the logs too, in context.
    assert "round 1 judge:" in (logs / "round_1.judge.log").read_text()


def test_verbose_prints_the_workers(tmp_path, tiny_model_path):
    p = _selftaught("eval", f"output_dir={tmp_path}", "name=loud", f"model.path={tiny_model_path}", "verbose=true",
                    *[o for o in SMALL if o.startswith(("engine.", "ray.", "eval."))])
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    assert "EngineCore" in p.stdout + p.stderr
    assert not (tmp_path / "loud" / "standalone" / "logs").exists()


def test_a_failing_stage_shows_its_traceback_and_log(tmp_path, tiny_model_path):
    # Weights that cannot load: the engine fails inside the seed's eval stage, in vLLM's own process.
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_path, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    p = _selftaught("run", f"output_dir={tmp_path}", "name=fails", f"model.path={broken}", f"data.path={_data(tmp_path)}",
                    "rounds=0", *[o for o in SMALL if o != "generator.path=embedded:smollm2"], timeout=600)
    console = p.stdout + p.stderr
    assert p.returncode != 0
    assert "Traceback (most recent call last)" in console
    log = tmp_path / "fails" / "logs" / "round_0.eval.log"
    assert "round_0.eval failed:" in console and f"(its full log: {log})" in console
    assert log.is_file() and log.stat().st_size > 0
