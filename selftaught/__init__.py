"""selftaught: train your own LLM-as-a-judge with the Self-Taught Evaluator recipe."""
from __future__ import annotations

__version__ = "0.1.0"


def compose(overrides: list[str] | None = None, *, local_files: bool = True):
    """The typed, checked ``RunConfig`` that ``selftaught run <overrides>`` would use; any config
    error is a ``selftaught.config.ConfigError`` whose message starts with the key."""
    from selftaught.overrides import compose as _compose

    return _compose(overrides, local_files=local_files)


def run(cfg):
    """Run (or resume) every round of ``cfg``; returns a ``RunResult``."""
    from selftaught.driver import run as _run

    return _run(cfg)


def evaluate(cfg):
    """Evaluate ``cfg.model.path`` on ``cfg.eval.sets``; returns the eval stage summary (metrics)."""
    from selftaught.driver import evaluate_model

    return evaluate_model(cfg)


def judge(cfg):
    """Decide ``cfg.judge_file.path``'s response pairs with the judge at ``cfg.model.path`` (both
    orders, debiased), or grade its responses 1-5 (``judge_file.mode=absolute``); writes the rows, a
    summary and optional DPO rows; returns the summary."""
    from selftaught.driver import judge_pairs

    return judge_pairs(cfg)
