"""selftaught: train your own LLM-as-a-judge with the Self-Taught Evaluator recipe."""
from __future__ import annotations

__version__ = "0.1.0"


def compose(overrides: list[str] | None = None):
    """The typed, validated ``RunConfig`` that ``selftaught run <overrides>`` would use."""
    from selftaught.cli import compose as _compose

    return _compose(overrides)


def run_round(cfg):
    """Run (or resume) one round of the data loop; returns a ``RoundResult``."""
    from selftaught.driver import run_round as _run_round

    return _run_round(cfg)
