"""Ray job submission (selftaught/distributed/submit.py).

Fast: storage paths must be absolute, the job's command line, the runtime_env's excludes (checked
by zipping with Ray's own packaging code, .gitignore ignored). Slow: a real Ray head on loopback
(token auth on, as Ray 2.60 turns it on wherever ~/.ray/auth_token exists), a two-round run of the
tiny test config submitted as a job, polled to SUCCEEDED, its logs and artifacts checked; the head
is torn down in the fixture even when the test fails.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

from selftaught.config import ConfigError
from selftaught.distributed import submit
from selftaught.distributed.submit import (EXCLUDES, PROJECT_ROOT, build_entrypoint, build_runtime_env, job_logs,
                                           job_status, resolve_storage, storage_root, submit_run, wait_for)
from selftaught.models import TINY_TWO_ROUNDS


# -- fast ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["runs", "./runs", "../shared/runs", "~/runs", "runs/abs"])
def test_relative_storage_rejected(bad):
    with pytest.raises(ConfigError, match="absolute path"):
        storage_root(bad)
    # before any network: the address does not even exist
    with pytest.raises(ConfigError, match="storage: must be an absolute path"):
        submit_run("http://127.0.0.1:9", ["rounds=1"], bad)
    assert submit.main(["--address", "http://127.0.0.1:9", "--storage", bad, "--", "rounds=1"]) == 2


def test_storage_resolution():
    assert storage_root("/mnt/shared//runs/") == "/mnt/shared/runs"
    assert resolve_storage(["rounds=1"], "/s") == "/s"
    assert resolve_storage(["output_dir=/abs/x"], None) == "/abs/x"
    with pytest.raises(ConfigError, match="required"):
        resolve_storage(["rounds=1"], None)
    with pytest.raises(ConfigError, match="absolute"):
        resolve_storage(["output_dir=runs"], None)
    with pytest.raises(ConfigError, match="conflicts"):
        resolve_storage(["output_dir=/a"], "/b")


def test_entrypoint():
    cmd = build_entrypoint(["rounds=2", "name=my run"], "/s")
    assert cmd == "python -m selftaught.cli run rounds=2 'name=my run' output_dir=/s ray.address=auto"
    # the user's own address and output_dir win (no duplicate keys for Hydra)
    cmd = build_entrypoint(["ray.address=10.0.0.1:6379", "output_dir=/s"], "/s", python="/opt/py/bin/python")
    assert cmd == "/opt/py/bin/python -m selftaught.cli run ray.address=10.0.0.1:6379 output_dir=/s"


def _zip_names(root: Path, excludes: list[str], tmp: Path) -> list[str]:
    from ray._private.runtime_env.packaging import create_package

    target = tmp / f"pkg_{len(list(tmp.iterdir()))}.zip"
    create_package(str(root), target, include_gitignore=False, excludes=excludes)  # our list alone
    with zipfile.ZipFile(target) as z:
        return [n for n in z.namelist() if not n.endswith("/")]


def test_runtime_env_excludes(tmp_path):
    env = build_runtime_env("/mnt/shared/runs", env={"WANDB_MODE": "offline"}, extra={"env_vars": {"A": "1"}, "excludes": ["/big"], "pip": ["x"]})
    assert env["working_dir"] == str(PROJECT_ROOT)
    for must in (".git", ".venv", "/runs", "/outputs", "/multirun", "wandb", "__pycache__", "*.parquet", "*.safetensors", "/big"):
        assert must in env["excludes"], must
    assert env["env_vars"]["SELFTAUGHT_RUNS"] == env["env_vars"]["SELFTAUGHT_STORAGE"] == "/mnt/shared/runs"
    assert env["env_vars"]["WANDB_MODE"] == "offline" and env["env_vars"]["A"] == "1" and env["pip"] == ["x"]
    with pytest.raises(ConfigError):
        build_runtime_env("rel/path")
    img = build_runtime_env("/s", extra={"image_uri": "reg/selftaught:0.1.0-gpu", "env_vars": {"A": "1"}})
    assert set(img) == {"image_uri", "env_vars"} and img["env_vars"]["A"] == "1"
    from ray.runtime_env import RuntimeEnv
    RuntimeEnv(**img)  # Ray accepts it (image_uri admits only env_vars/config beside it)

    # A fake project: what must travel does, what must not doesn't.
    proj = tmp_path / "proj"
    keep = ["selftaught/__init__.py", "selftaught/data/demo_eval.jsonl", "selftaught/prompts/judge.txt",
            "selftaught/conf/config.yaml", "selftaught/conf/deepspeed/zero2.json", "pyproject.toml", "scripts/install.sh"]
    drop = [".git/objects/ab/cd", ".venv/bin/python", ".venv/lib/python3.11/site-packages/torch/x.so", "runs/demo/summary.json",
            "outputs/2026/x.log", "multirun/a/b", "wandb/offline-run-1/x", "selftaught/__pycache__/a.cpython-311.pyc",
            "data/big.parquet", "models/m/model.safetensors", "x.egg-info/PKG-INFO", ".pytest_cache/v/x", "storage/demo/x.txt"]
    for f in keep + drop:
        (proj / f).parent.mkdir(parents=True, exist_ok=True)
        (proj / f).write_text("x")
    names = set(_zip_names(proj, build_runtime_env(str(proj / "storage"), working_dir=proj)["excludes"], tmp_path))
    assert set(keep) <= names, set(keep) - names
    assert not names & set(drop), names & set(drop)

    # The real project: small (the dashboard refuses uploads over 100 MiB), code and conf inside.
    names = _zip_names(PROJECT_ROOT, env["excludes"], tmp_path)
    assert "selftaught/cli.py" in names and "selftaught/conf/config.yaml" in names and "selftaught/prompts/judge.user.txt" in names and "selftaught/data/demo_eval.jsonl" in names
    assert not [n for n in names if n.startswith((".venv/", ".git/", "runs/"))]
    size = max(tmp_path.glob("pkg_*.zip"), key=lambda p: p.stat().st_mtime).stat().st_size
    assert size < 20 * 2**20, size


@pytest.mark.parametrize("overrides,line", [
    (["judge.nn=3"], "judge.nn: not a config key; did you mean judge.n?"),
    (["+judge.nn=3"], "judge.nn: not a config key; did you mean judge.n?"),
    (["++foo=1"], "foo: not a config key"),
    (["judge.n=0"], "judge.n: must be >= 1, got 0"),
    (["trainer=zero3", "train.deepspeed=zero2.json"], "train.deepspeed: zero2.json has zero_optimization.stage=2"),
])
def test_overrides_composed_and_checked_before_the_cluster(overrides, line, monkeypatch, capsys):
    def no_network(*a, **k):
        raise AssertionError("the cluster was contacted")

    monkeypatch.setattr(submit, "client", no_network)
    with pytest.raises(ConfigError, match=f"^{line}"):
        submit_run("http://127.0.0.1:9", overrides, "/mnt/shared/runs")
    capsys.readouterr()
    assert submit.main(["--address", "http://127.0.0.1:9", "--storage", "/mnt/shared/runs", "--", *overrides]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"selftaught submit: config error: {line}"), err
    # what passes here is what the job runs: the storage root and ray.address=auto added
    submit.check_overrides(["rounds=1", "trainer=zero3", "train.deepspeed=/cluster/only.json"], "/mnt/shared/runs")


def test_installed_package_ships_alone(monkeypatch):
    """From a wheel install (no checkout around the package) only the package travels, never the
    site-packages folder it sits in."""
    monkeypatch.setattr(submit, "IN_CHECKOUT", False)
    env = build_runtime_env("/s")
    assert env["py_modules"] == [str(submit.PACKAGE_DIR)] and "working_dir" not in env
    assert env["env_vars"]["SELFTAUGHT_STORAGE"] == "/s" and "__pycache__" in env["excludes"]
    assert build_runtime_env("/s", working_dir=PROJECT_ROOT)["working_dir"] == str(PROJECT_ROOT)


def test_auth_token_discovery(monkeypatch, tmp_path):
    for v in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert submit.find_auth_token() is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("filetok\n")
    assert submit.find_auth_token() == "filetok"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "envtok")
    assert submit.find_auth_token() == "envtok"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert submit.find_auth_token() is None


# -- slow: a real Ray head on loopback -----------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_tree_of(temp_dir: str, head: subprocess.Popen) -> None:
    """Stop only this cluster: SIGTERM `ray start --block` (it shuts its node down), then SIGKILL
    whatever still names our temp dir. Never `ray stop`: it kills every Ray on the machine."""
    import psutil

    if head.poll() is None:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while True:
        left = []
        for p in psutil.process_iter(["pid", "cmdline", "cwd"]):
            try:  # Ray's processes name the temp dir; a job's driver runs in a working dir under it
                if p.pid != os.getpid() and (any(temp_dir in a for a in (p.info["cmdline"] or []))
                                             or str(p.info["cwd"] or "").startswith(temp_dir)):
                    left.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        if not left or time.monotonic() > deadline:
            break
        for p in left:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        time.sleep(1)


@pytest.fixture
def ray_head():
    """A Ray head on loopback, token auth on with a test token (not ~/.ray/auth_token); yields
    (dashboard URL, token); always torn down."""
    ray_bin = Path(sys.executable).parent / "ray"
    temp_dir = tempfile.mkdtemp(prefix="strh", dir="/tmp")  # short: Ray's unix socket paths are length-limited
    token = secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_USAGE_STATS_ENABLED="0",
               # an activated venv: the job's `python` is this interpreter
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    dash = _free_port()
    ports = ["--port", _free_port(), "--dashboard-port", dash, "--ray-client-server-port", _free_port(),
             "--node-manager-port", _free_port(), "--object-manager-port", _free_port(),
             "--metrics-export-port", _free_port(), "--dashboard-agent-listen-port", _free_port(),
             "--dashboard-agent-grpc-port", _free_port(), "--runtime-env-agent-port", _free_port()]
    cmd = [str(ray_bin), "start", "--head", "--block", "--num-cpus=2", "--num-gpus=0", "--include-dashboard=true",
           "--dashboard-host=127.0.0.1", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
           f"--temp-dir={temp_dir}", *map(str, ports)]
    log = open(Path(temp_dir) / "ray_start.log", "w")
    head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        import requests

        deadline = time.monotonic() + 120
        while True:  # the dashboard's job API answers (401 without a token: auth is on)
            if head.poll() is not None:
                raise RuntimeError(f"ray start exited {head.returncode}:\n{(Path(temp_dir) / 'ray_start.log').read_text()}")
            try:
                r = requests.get(f"{address}/api/version", headers={"Authorization": f"Bearer {token}"}, timeout=2)
                if r.ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the Ray dashboard did not come up in 120 s")
            time.sleep(1)
        yield address, token
    finally:
        _kill_tree_of(temp_dir, head)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


INSTRUCTIONS = ["What is 15% of 80?", "Write a haiku about the sea.", "Explain why the sky is blue.",
                "Name three prime numbers.", "Give one tip for learning a language.", "What is the capital of France?"]


@pytest.mark.slow
def test_submit_a_round_as_ray_job(ray_head, smollm2_path, monkeypatch, capsys):
    from selftaught.models import build_tiny_model

    address, token = ray_head
    # What a user would do: storage on a shared path (here a temp dir), the model and data in it.
    storage = Path(tempfile.mkdtemp(prefix="selftaught_storage_"))
    try:
        tiny = build_tiny_model(storage / "tiny_llama", smollm2_path)
        data = storage / "instructions.jsonl"
        data.write_text("".join(json.dumps({"id": f"i{i}", "instruction": t}) + "\n" for i, t in enumerate(INSTRUCTIONS)))
        # One round (judge, train, eval on the job's cluster): the second round of the same config is the rounds
        # test's, in process (CI's time).
        overrides = ["name=job", f"model.path={tiny}", f"data.path={data}", *TINY_TWO_ROUNDS, "rounds=1"]
        wb = storage / "wandb_home"
        env = {"WANDB_DATA_DIR": str(wb / "data"), "WANDB_CACHE_DIR": str(wb / "cache"), "WANDB_CONFIG_DIR": str(wb / "cfg")}
        if os.environ.get("SELFTAUGHT_CACHE"):
            env["SELFTAUGHT_CACHE"] = os.environ["SELFTAUGHT_CACHE"]

        # Token auth is on: a request without the token is refused with Ray's auth message.
        with pytest.raises(Exception, match="(?i)auth|401"):
            submit_run(address, overrides, str(storage), auth_token="")

        t0 = time.monotonic()
        job_id = submit_run(address, overrides, str(storage), env=env, auth_token=token)
        assert job_id
        status = "UNKNOWN"
        try:
            status = wait_for(address, job_id, timeout_s=1800, poll_s=5, auth_token=token)
        finally:
            if status not in submit.TERMINAL:
                submit.stop_job(address, job_id, auth_token=token)
            logs = job_logs(address, job_id, auth_token=token)
            print(f"job {job_id} took {time.monotonic() - t0:.0f} s; log tail:\n" + "\n".join(logs.splitlines()[-30:]))
        assert status == "SUCCEEDED", logs[-5000:]
        assert "run summary" in logs and "run artifacts:" in logs

        root = storage / "job"
        assert (root / "round_1" / "model" / "config.json").is_file()
        summary = json.loads((root / "summary.json").read_text())
        assert [r["round"] for r in summary] == [0, 1]
        assert list((root / "wandb").glob("offline-run-*"))
        # nothing landed in the job's temporary working dir instead of the storage
        assert str(root) in logs

        # The CLI on the same job (token from the environment, as a user's shell would have it).
        monkeypatch.setenv("RAY_AUTH_TOKEN", token)
        monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
        capsys.readouterr()
        assert submit.main(["--address", address, "--status", job_id]) == 0
        assert capsys.readouterr().out.strip() == "SUCCEEDED"
        assert job_status(address, job_id, auth_token=token) == "SUCCEEDED"
    finally:
        shutil.rmtree(storage, ignore_errors=True)


def test_excludes_list_is_gitignore_superset():
    # Everything .gitignore keeps out of git stays out of the upload even without .gitignore.
    gi = [ln.strip().rstrip("/") for ln in (PROJECT_ROOT / ".gitignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    covered = {e.lstrip("/") for e in EXCLUDES}
    assert [g for g in gi if g not in covered] == []
