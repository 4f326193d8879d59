"""What every generative stage shares: its context, provenance, and the prompt-length guard.

A generative stage is ``process(records, engine, ctx) -> records``: one output row per input row,
``status == "ok"`` or the failure reason. It runs the same in a test (engine in hand) and in a Ray
actor (see ``selftaught.distributed``), which is why it holds no Ray code.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from selftaught.engines import Engine, GenRequest, Sampling

OK = "ok"
TOO_LONG = "prompt too long for model context"


@dataclass
class StageContext:
    round: int
    model_path: str
    constrained: bool
    max_model_len: int
    seed: int = 0


def sampling_dict(s: Sampling) -> dict:
    d = asdict(s)
    d["stop"] = list(s.stop)
    return d


def provenance(stage: str, ctx: StageContext, template_id: str, sampling: Sampling, prompt_tokens: int,
               completion_tokens: int, engine: Engine) -> dict[str, Any]:
    return {
        "stage": stage,
        "round": ctx.round,
        "model": ctx.model_path,
        "engine": engine.name,
        "template": template_id,
        "constrained": ctx.constrained,
        "sampling": sampling_dict(sampling),
        "prompt_tokens": int(prompt_tokens),
        "completion_tokens": int(completion_tokens),
    }


def fits(engine: Engine, req: GenRequest, ctx: StageContext, extra_tokens: int = 0) -> bool:
    """vLLM rejects (and transformers silently truncates) prompts beyond the context: check first."""
    return engine.count_prompt_tokens(req) + req.sampling.max_tokens + extra_tokens <= ctx.max_model_len
