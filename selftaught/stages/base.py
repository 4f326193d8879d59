"""What every generative stage shares: its context, provenance, and the prompt-length guard.

A generative stage is ``process(records, engine, ctx) -> records``: one output row per input row,
``status == "ok"`` or the failure reason. It runs the same in a test (engine in hand) and in a Ray
actor (see ``selftaught.distributed``), which is why it holds no Ray code.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

from selftaught.engines import Engine, GenRequest, Sampling

OK = "ok"
TOO_LONG = "prompt too long for model context"


@dataclass(frozen=True)
class StageContext:
    round: int
    model_path: str
    constrained: bool
    max_model_len: int
    seed: int = 0
    deterministic: bool = False  # reseed the engine per shard (``shards.shard_seed``)
    shard: int = 0  # the shard being processed


# process(records, engine, ctx, stage_cfg) -> rows, with status == OK or the failure reason.
Process = Callable[[list[dict], Any, StageContext, Any], list[dict]]


def _row_id(r: dict) -> str:
    return str(r.get("example_id") or r.get("eval_id") or r.get("pair_id") or r.get("id") or r.get("source"))


@dataclass(frozen=True)
class StageSpec:
    """A stage, declared once in its own module (``SPEC``); the driver and the shard runner read it.

    Lifecycle: the driver hashes the stage's inputs (see ``driver``) and, unless its marker holds that
    hash, hands each uncommitted input shard to ``process`` on an engine of kind ``engine`` (or none:
    it then runs in the driver), commits each output shard with ``shard_stats`` of its rows, and
    writes the summary: the merged stats through ``summarize``, plus counts and tokens.
    """

    name: str
    process: Optional[Process]  # None: the driver writes the stage (load, select: whole-input decisions)
    row_type: Optional[type] = None  # the ``rows`` TypedDict of its output rows
    engine: Optional[str] = None  # "judge" (the round's judge model) | "generator" | None
    rows_per_input: Optional[int] = 1  # output rows per input row (the judge: one per order); None: a filter
    meta_fields: tuple[str, ...] = ()  # provenance fields with this stage's own token counts
    # Additive counters over one shard's rows (kept and failed); ``shards.merge_stats`` adds them up.
    shard_stats: Optional[Callable[[list[dict], Any], dict]] = None
    # The merged counters -> the summary's extra fields (rates, intervals).
    summarize: Optional[Callable[[dict, Any], dict]] = None
    row_id: Callable[[dict], str] = _row_id


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
