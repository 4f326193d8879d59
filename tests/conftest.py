"""Shared fixtures: the embedded SmolLM2 (converted once into the default cache) and a tiny random Llama."""
from __future__ import annotations

import pytest

from selftaught.config import ModelConfig
from selftaught.models import build_tiny_model, resolve_model


# A two-round run on the tiny judge, seconds per stage: pairs by SmolLM2, Ray Train ZeRO-2 with 2
# workers. Used in-process (test_rounds_e2e) and as a Ray job (test_submit); add name, model.path
# (the tiny model), data.path and, in-process, output_dir.
TINY_TWO_ROUNDS = [
    "generator.path=embedded:smollm2", "data.limit=4",
    "engine=hf", "engine.constrained=true", "engine.threads=1", "rounds=2", "ray.batch_size=8",
    "judge.n=2", "judge.n_max=4", "judge.swap=true", "judge.max_tokens=16",
    "pairs.max_tokens=24", "pairs.modify_max_tokens=32", "pairs.max_instruction_tokens=32",
    "categorize.max_tokens=24", "eval.limit=4", "eval.max_tokens=8",
    "trainer=zero2", "train.num_workers=2", "train.lr=1e-3", "train.warmup_steps=0", "train.epochs=1",
    "train.per_device_batch_size=1", "train.gradient_accumulation_steps=1", "train.max_seq_length=512",
    "tracking.mode=offline",
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: starts extra engines (deselect with -m 'not slow')")


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    # Default cache dir (~/.cache/selftaught or $SELFTAUGHT_CACHE): the ~25 s conversion happens once.
    return resolve_model(ModelConfig())


@pytest.fixture(scope="session")
def tiny_model_path(smollm2_path: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_llama"), smollm2_path)
