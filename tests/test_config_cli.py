"""Typed config: Hydra composition, validation naming the key, CLI behaviour before any model loads."""
import subprocess
import sys
import time

import pytest

from selftaught import compose
from selftaught.config import ConfigError, RunConfig, validate

CLI = [sys.executable, "-m", "selftaught.cli"]


def test_compose_defaults_and_overrides():
    cfg = compose(["data.limit=40", "judge.n=8", "engine=hf", "+select.quotas.Coding=5"])
    assert isinstance(cfg, RunConfig)
    assert (cfg.data.limit, cfg.judge.n, cfg.engine.backend, cfg.select.quotas) == (40, 8, "hf", {"Coding": 5})
    assert compose(["data=arena_hard"]).data.instruction_field == "turns.0.content"


@pytest.mark.parametrize("override,key", [
    ("judge.n=0", "judge.n"),
    ("judge.top_p=1.5", "judge.top_p"),
    ("engine.dtype=int4", "engine.dtype"),
    ("ray.concurrency=0", "ray.concurrency"),
    ("until=bogus", "until"),
    ("train.global_batch_size=3", "train.global_batch_size"),
    ("train.lr=0", "train.lr"),
    ("train.strategy=zero4", "train.strategy"),
    ("eval.majority_k=-1", "eval.majority_k"),
    ("tracking.mode=sometimes", "tracking.mode"),
    ("pairs.max_tokens=4096", "pairs.max_tokens"),
    ("select.categories=[Cooking]", "select.categories"),
    ("+select.quotas.Cooking=3", "select.quotas.Cooking"),
    ("judge.format=essay", "judge.format"),
    ("judge.n_max=1", "judge.n_max"),  # below the default wave judge.n
    ("judge.frequency_penalty=-1", "judge.frequency_penalty"),
    ("judge.degenerate_threshold=1.5", "judge.degenerate_threshold"),
    ("pairs.rejected=worse", "pairs.rejected"),
    ("eval.modes=[sampled]", "eval.modes"),
    ("eval.modes=[]", "eval.modes"),
    ("eval.format=essay", "eval.format"),
])
def test_validation_names_the_key(override, key):
    with pytest.raises(ConfigError, match=f"^{key}:"):
        compose([override])


def test_presets_compose_and_validate():
    demo = compose(["preset=cpu_demo"])
    assert (demo.judge.format, demo.judge.swap, demo.pairs.rejected) == ("verdict_first", True, "separate")
    study = compose(["preset=cpu_study"])
    assert study.data.also and study.eval.sets[0].name == "llmbar" and study.select.limit


def test_validate_plain_dataclass():
    cfg = RunConfig()
    cfg.categorize.categories = ["A", "A"]
    with pytest.raises(ConfigError, match="categorize.categories"):
        validate(cfg)


def test_cli_cfg_job_prints_composed_config():
    out = subprocess.run([*CLI, "run", "judge.n=3", "--cfg", "job"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "judge:" in out.stdout and "'n': 3" in out.stdout and "backend: vllm" in out.stdout


@pytest.mark.parametrize("args,msg", [
    (["judge.n=0"], "config error: judge.n: must be >= 1, got 0"),
    (["data.path=/nonexistent/instructions.jsonl"], "data.path: /nonexistent/instructions.jsonl does not exist"),
    (["model.path=/nonexistent/model"], "model.path"),
    (["eval.sets=[{path:/nonexistent/gold.json}]"], "eval.sets.0.path: /nonexistent/gold.json does not exist"),
])
def test_cli_fails_fast_with_clear_message(args, msg, tmp_path):
    t0 = time.perf_counter()
    out = subprocess.run([*CLI, "run", f"output_dir={tmp_path}", *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert msg in out.stderr
    assert "Traceback" not in out.stderr
    assert time.perf_counter() - t0 < 60  # before Ray or any engine starts
    assert not (tmp_path / "demo" / "round_0" / "categorize").exists()


def test_hydra_sweep_one_run_dir_and_wandb_run_per_point(tmp_path, tiny_model_path):
    """``selftaught run -m``: a 2-point sweep (seed eval only, tiny model, in-process engine)."""
    import json

    out = subprocess.run(
        [*CLI, "run", "-m", "eval.max_tokens=2,4", f"output_dir={tmp_path}", "name=sweep", "rounds=0",
         f"model.path={tiny_model_path}", "engine=hf", "engine.constrained=true", "engine.threads=1",
         "ray.enabled=false", "eval.limit=2", "tracking.mode=offline"],
        capture_output=True, text=True, timeout=600,
        env={**__import__("os").environ, "WANDB_DATA_DIR": str(tmp_path / "wd"), "WANDB_CACHE_DIR": str(tmp_path / "wc")})
    assert out.returncode == 0, out.stderr[-3000:]
    points = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("sweep-"))
    assert points == ["sweep-eval.max_tokens=2", "sweep-eval.max_tokens=4"]
    ids = set()
    for p in points:
        ev = json.loads((tmp_path / p / "round_0" / "eval" / "summary.json").read_text())
        assert ev["metrics"]["constrained"]["demo_eval"]["pairs"] == 2
        assert list((tmp_path / p / "wandb").glob("offline-run-*"))
        ids.add(json.loads((tmp_path / p / "tracking.json").read_text())["run_id"])
    assert len(ids) == 2  # one W&B run per point
