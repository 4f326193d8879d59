"""What every generative stage shares: its context, provenance, and the prompt-length guard.

A generative stage is ``process(records, engine, ctx) -> records``: one output row per input row,
``status == "ok"`` or the failure reason. It runs the same in a test (engine in hand) and in a Ray
actor (see ``selftaught.distributed``), which is why it holds no Ray code.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from selftaught.engines import Engine, GenRequest, Sampling

if TYPE_CHECKING:
    from selftaught.config import RunConfig
    from selftaught.store import StageDir

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
class Upstream:
    """What a stage's hooks see of the run besides the run config."""

    round: int
    dir: Optional["StageDir"] = None  # its (first) source: the stage before it, unless ``StageSpec.sources``
    summary: dict = field(default_factory=dict)  # that stage's summary
    # Every source that ran, by name: (its folder, its summary); their shards are this stage's input.
    sources: dict[str, tuple["StageDir", dict]] = field(default_factory=dict)
    # A stage's folders in rounds 1 .. round-1 (``select`` with generator.fresh_instructions).
    earlier: Callable[[str], list["StageDir"]] = lambda name: []

    def summary_of(self, name: str) -> dict:
        """The summary of source ``name``; empty when it did not run (disabled, or before the run)."""
        return self.sources.get(name, (None, {}))[1]


def _none(*_: Any) -> Any:
    return None


def _no_templates(_: Any) -> tuple[str, ...]:
    return ()


def _whole(stage_cfg: Any) -> Any:
    return stage_cfg


@dataclass(frozen=True)
class StageSpec:
    """A stage, declared once in its own module (``SPEC``); the driver and the shard runner read it.

    Lifecycle (``driver.Run._stage``): ``config`` gives the object the stage runs with. The stage's
    hash chains the upstream hash, its name, that object (its ``hash_view``), its templates' ids,
    ``hash_extra`` and, for an engine stage, the model's id, decoding constraints, context and seed.
    Unless the stage's marker holds that hash, each uncommitted input shard (the upstream's, or
    ``inputs``) goes to ``process`` on an engine of kind ``engine``; a stage without ``process`` is
    written by the driver from ``items``. Each output shard is committed with ``shard_stats`` of its
    rows; after the last, ``finalize`` adds whole-stage fields and the summary is the merged stats
    through ``summarize``, plus counts and tokens. A stage reads the one before it, or the ``sources``
    it names (a stage that is not ``enabled`` is skipped). Adding a stage is one module with its
    ``SPEC``, listed in ``stages.PIPELINE``, plus its prompt templates.
    """

    name: str
    process: Optional[Process]  # None: the driver writes the stage from ``items`` (whole-input decisions)
    row_type: Optional[type] = None  # the ``rows`` TypedDict of its output rows
    engine: Optional[str] = None  # "judge" (the round's judge model) | "generator" | None
    # Output rows per input row (the judge: one per order), or a function of the stage's config; None: a filter.
    rows_per_input: Union[int, Callable[[Any], int], None] = 1
    # (input record, config) -> its output rows, where that varies by record (eval: a pair makes one
    # per order and mode, a graded response one); overrides ``rows_per_input`` in the summary's "in".
    rows_for: Optional[Callable[[dict, Any], int]] = None
    meta_fields: tuple[str, ...] = ()  # provenance fields with this stage's own token counts
    # Additive counters over one shard's rows (kept and failed); ``shards.merge_stats`` adds them up.
    shard_stats: Optional[Callable[[list[dict], Any], dict]] = None
    # The merged counters -> the summary's extra fields (rates, intervals).
    summarize: Optional[Callable[[dict, Any], dict]] = None
    row_id: Callable[[dict], str] = _row_id
    # Where its folder is: "run" (once, under data/), "fresh" (once, or per round with
    # generator.fresh_instructions) or "round" (round_<k>/).
    scope: str = "round"
    # (run config, upstream) -> what ``process`` / ``items`` get as their config; hashed. Also called
    # once before the run with an empty ``Upstream`` (to load its templates), so it must allow one.
    config: Callable[["RunConfig", Upstream], Any] = _none
    # Its config -> the prompt templates it renders: their ids are hashed; all load before any engine starts.
    templates: Callable[[Any], tuple[str, ...]] = _no_templates
    # Run config -> more of the hash: fingerprints of the files it reads.
    hash_extra: Callable[["RunConfig"], Any] = _none
    # Its config -> what of it is hashed (default: all). Leave out a path into the run's own folder: the
    # upstream hash already identifies what is there, and a run copied or moved elsewhere keeps the stage.
    hash_view: Callable[[Any], Any] = _whole
    # A driver-written stage: (config, upstream) -> its rows, and failures by ``status``, in a fixed order.
    items: Optional[Callable[[Any, Upstream], Iterable[dict]]] = None
    # Its summary's "in" when not (rows per input x input rows): a filter's candidates.
    count_in: Optional[Callable[[Any, Upstream], int]] = None
    # (config, its folder, shard size) -> its own input shards, instead of the upstream's (eval sets).
    inputs: Optional[Callable[[Any, "StageDir", int], list[Path]]] = None
    # (its folder, config, context) -> whole-stage summary fields, once every shard is committed.
    finalize: Optional[Callable[["StageDir", Any, StageContext], dict]] = None
    # Its config -> the progress bar's detail.
    describe: Optional[Callable[[Any], str]] = None
    # The round's earlier stages whose output shards are its input, concatenated in this order (those
    # that ran); empty: the stage before it. Its hash chains through all of theirs.
    sources: tuple[str, ...] = ()
    # Run config -> whether the stage runs at all (a stage that does not is no one's input).
    enabled: Callable[["RunConfig"], bool] = lambda cfg: True

    def per_input(self, stage_cfg: Any) -> Optional[int]:
        return self.rows_per_input(stage_cfg) if callable(self.rows_per_input) else self.rows_per_input


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
