"""Shared fixtures: the embedded SmolLM2 (converted once into the default cache) and a tiny random Llama."""
from __future__ import annotations

import os

import pytest

from selftaught.config import ModelConfig
from selftaught.models import build_tiny_model, resolve_model


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: starts extra engines (deselect with -m 'not slow')")


@pytest.fixture(autouse=True)
def _environment_restored():
    """Each test sees the environment the session started with. In-process training sets RANK, WORLD_SIZE
    and MASTER_* (a standalone world of one); left set, they reach the engines of later tests' subprocesses,
    and vLLM then starts its engine core differently (its log lines lose their process prefix)."""
    before = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(before)


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    # Default cache dir (~/.cache/selftaught or $SELFTAUGHT_CACHE): the ~25 s conversion happens once.
    return resolve_model(ModelConfig())


@pytest.fixture(scope="session")
def tiny_model_path(smollm2_path: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_llama"), smollm2_path)


@pytest.fixture(scope="module")
def tiny_engine(tiny_model_path):
    """The tiny random Llama on the transformers engine (one per test module)."""
    from selftaught.config import EngineConfig
    from selftaught.engines import make_engine

    eng = make_engine(EngineConfig(backend="hf", threads=1, hf_batch_size=16), tiny_model_path, max_model_len=1024)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def tiny_ctx(tiny_model_path):
    """A round-1 stage context on the tiny model, constrained decoding."""
    from selftaught.stages.base import StageContext

    return StageContext(round=1, model_path=tiny_model_path, constrained=True, max_model_len=1024, seed=0)


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray of 2 CPUs for the training tests (started once per module, stopped if this started it)."""
    import ray

    from selftaught.config import RayConfig
    from selftaught.distributed.generation import ensure_ray

    started = not ray.is_initialized()
    ensure_ray(RayConfig(num_cpus=2))
    yield
    if started:
        ray.shutdown()
