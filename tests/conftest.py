"""Shared fixtures: the embedded SmolLM2 (converted once into the default cache) and a tiny random Llama."""
from __future__ import annotations

import pytest

from selftaught.config import ModelConfig
from selftaught.models import build_tiny_model, resolve_model


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: starts extra engines (deselect with -m 'not slow')")


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    # Default cache dir (~/.cache/selftaught or $SELFTAUGHT_CACHE): the ~25 s conversion happens once.
    return resolve_model(ModelConfig())


@pytest.fixture(scope="session")
def tiny_model_path(smollm2_path: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_llama"), smollm2_path)
