"""The package installs as a plain (non-editable) wheel and runs from outside the checkout: the
Hydra config, the DeepSpeed JSONs, prompts and demo data ship inside it (importlib.resources).

Offline: the wheel is built from a copy of the project without build isolation (setuptools from
this environment) and installed with --no-deps into a fresh folder put first on PYTHONPATH, so the
installed copy, not the checkout (nor the editable install), is what gets imported.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["selftaught/conf/__init__.py", "selftaught/conf/config.yaml", "selftaught/conf/data/demo.yaml",
           "selftaught/conf/preset/cpu_demo.yaml", "selftaught/conf/cluster/multi_node.yaml",
           "selftaught/conf/generator_engine/openai.yaml", "selftaught/conf/deepspeed/zero2.json",
           "selftaught/conf/deepspeed/zero3.json", "selftaught/prompts/judge.user.txt",
           "selftaught/data/demo_instructions.jsonl", "selftaught/data/demo_eval.jsonl"]


def _pip(*args: str, cwd: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "pip", *args, "--no-deps", "--no-index", "--disable-pip-version-check"],
                         cwd=cwd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the built wheel, the folder it is installed into)."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"  # a copy: the build leaves build/ and *.egg-info behind, never in the checkout
    shutil.copytree(ROOT / "selftaught", src / "selftaught", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    _pip("wheel", "--no-build-isolation", "-w", str(tmp / "dist"), str(src), cwd=tmp)
    (wheel,) = (tmp / "dist").glob("selftaught-*.whl")
    _pip("install", "--target", str(tmp / "target"), str(wheel), cwd=tmp)
    return wheel, tmp / "target"


def test_wheel_ships_config_and_data(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(SHIPPED) <= names, sorted(set(SHIPPED) - names)
    assert not [n for n in names if n.startswith(("conf/", "tests/", "scripts/"))]


def _run(target: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "SELFTAUGHT_RUNS": str(cwd / "runs")}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_installed_cli_runs_outside_the_checkout(installed, tmp_path):
    _, target = installed
    where = _run(target, tmp_path, "-c", "import selftaught, selftaught.cli as c; print(selftaught.__file__); print(c.CONF_DIR)")
    assert where.returncode == 0, where.stderr
    module, conf = where.stdout.split()
    assert Path(module).is_relative_to(target) and Path(conf) == target / "selftaught" / "conf"
    assert not Path(module).is_relative_to(ROOT)

    script = [str(target / "bin" / "selftaught")] if (target / "bin" / "selftaught").is_file() else ["-m", "selftaught.cli"]
    job = _run(target, tmp_path, *script, "run", "--cfg", "job", "preset=cpu_demo", "trainer=zero3")
    assert job.returncode == 0, job.stderr
    assert "n_max: 8" in job.stdout and "deepspeed: zero3.json" in job.stdout  # a preset and a group from the wheel

    # a config error: the DeepSpeed JSON is read from the installed package
    bad = _run(target, tmp_path, *script, "run", "trainer=zero3", "train.deepspeed=zero2.json")
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == ["selftaught: config error: train.deepspeed: zero2.json has zero_optimization.stage=2, "
                                       "but train.strategy=zero3 needs 3"]
    assert list(tmp_path.iterdir()) == []  # nothing written next to the user


def test_pip_installs_from_a_git_url(tmp_path):
    """``pip install git+<url>``: the committed tree, cloned and built by pip, runs from elsewhere."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    run_dir = tmp_path / "cwd"
    run_dir.mkdir()
    _pip("install", "--no-build-isolation", "--target", str(tmp_path / "target"), f"git+file://{ROOT}", cwd=tmp_path)
    where = _run(tmp_path / "target", run_dir, "-c", "import selftaught.cli as c; print(c.CONF_DIR)")
    assert where.returncode == 0 and Path(where.stdout.strip()) == tmp_path / "target" / "selftaught" / "conf", where.stderr
    job = _run(tmp_path / "target", run_dir, "-m", "selftaught.cli", "run", "--cfg", "job", "preset=cpu_demo")
    assert job.returncode == 0 and "n_max: 8" in job.stdout, job.stderr
    assert list(run_dir.iterdir()) == []
