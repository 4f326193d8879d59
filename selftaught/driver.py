"""The run driver: rounds of the Self-Taught Evaluator loop, resume from markers, summaries.

    round 0   eval (the seed judge)
    round k   judge and/or grade_pairs (with the model of round k-1; judge.mode) → sft_data
              [→ dpo_data] → train (train.objective) → eval (the new model)

The pairs (load → categorize → select → pairs) are made once by the generator model under
``<run>/data/`` and reused by every round, or per round with ``generator.fresh_instructions``.
Each stage is skipped when its marker matches the config hash (see ``store.py``); hashes chain
through upstream stages and through the model that judges, so a killed run resumes at its first
incomplete stage and a changed knob redoes only what depends on it.
"""
from __future__ import annotations

import logging
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from collections.abc import Iterator
from typing import Any, Optional

from selftaught import console, eval_data, io, model_card
from selftaught.config import ConfigError, RunConfig, abspath, config_hash, constrained, generator_constrained, validate
from selftaught.distributed.generation import LocalRunner, RayRunner
from selftaught.models import resolve_model
from selftaught.prompts import load_template
from selftaught.shards import entry_for, merged
from selftaught.stages import EVAL, GRADES, PIPELINE, VERDICTS, evaluate, grades, load, pairs, select, verdicts
from selftaught.stages.base import StageContext, StageSpec, Upstream
from selftaught.store import RoundStore, StageDir

log = logging.getLogger("selftaught")

MAX_LOGGED_FAILURES = 20
# The stages whose rows each train.objective trains on (the first one's count is the summary's "examples").
TRAIN_INPUTS = {"sft": ("sft_data",), "dpo": ("dpo_data",), "sft_then_dpo": ("sft_data", "dpo_data"),
                "grpo": ("grpo_data",), "sft_then_grpo": ("sft_data", "grpo_data")}
SHARED = "data"  # folder of the pairs shared by all rounds
HELD_OUT_PAIRS = pairs.HOLDOUT.name  # eval.holdout: the held-out instructions' pairs, one more eval set


@dataclass(frozen=True)
class Model:
    path: str  # what engines and the trainer load
    id: str  # what stage hashes see: the configured path, or the train stage that made it


@dataclass
class RunResult:
    run_dir: Path
    rounds: list[dict] = field(default_factory=list)  # one summary row per round (the report)
    summaries: list[dict] = field(default_factory=list)  # every stage summary, in order
    models: dict[int, str] = field(default_factory=dict)  # round -> the judge it produced (0: seed)

    def round_dir(self, k: int) -> Path:
        return self.run_dir / f"round_{k}"

    @property
    def data_dir(self) -> Path:
        return self.run_dir / SHARED


def _local_model(path: str, name: str) -> Model:
    """A model whose id is its name plus its weights' sizes and mtimes: results cached for old
    weights at the same path (a retrained round, a re-evaluated folder) are never reused."""
    fp = []
    p = Path(path)
    if p.is_dir():
        for f in sorted(p.glob("*.safetensors")) + sorted(p.glob("config.json")):
            st = f.stat()
            fp.append([f.name, st.st_size, st.st_mtime_ns])
    return Model(path, f"{name}#{config_hash(fp)}" if fp else name)


def run_dir(cfg: RunConfig) -> Path:
    return Path(abspath(cfg.output_dir)) / cfg.name


def _stages_until(until: str) -> list[str]:
    """The stages a run goes through: the declared pipeline up to ``until``, then train and eval
    (``config.stage_names`` checked ``until``)."""
    names, after = [s.name for s in PIPELINE], ["train", EVAL.name]
    if until in names:
        return names[: names.index(until) + 1]
    return names + after[: after.index(until) + 1] if until in after else names


def _num_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(str(path)).metadata.num_rows


class Run:
    """Runs (or resumes) every round of a validated config."""

    def __init__(self, cfg: RunConfig):
        self.cfg = validate(cfg)
        self.run_dir = run_dir(cfg)
        self.stages = _stages_until(cfg.until)
        # Fail fast, before Ray or any engine starts: data, models, templates, eval files.
        load.data_paths(cfg.data)
        if cfg.rounds > 0:  # an empty or unusable data file stops here, in one line (io.DataError)
            io.check_instructions(cfg.data)
        self.seed = _local_model(resolve_model(cfg.model), cfg.model.path)
        self.gen_engine = cfg.generator.engine or cfg.engine
        self.generator = self._generator_model()
        self.constrained = constrained(cfg)
        self.gen_constrained = generator_constrained(cfg)
        for spec in PIPELINE + (EVAL,):
            for name in spec.templates(spec.config(cfg, Upstream(0))):
                load_template(name)
        self.eval_on = "eval" in self.stages and cfg.eval.enabled
        if self.eval_on:
            eval_data.fingerprint(cfg.eval)
        # One runner per engine config (the judge's; the generator's when it has its own): engine pools on
        # Ray, or in-process engines (ray.enabled=false); each keeps its engine across stages on one model.
        keep = cfg.ray.keep_engines
        self.runner = (RayRunner(cfg.engine, cfg.ray, keep) if cfg.ray.enabled
                       else LocalRunner(cfg.engine, cfg.ray.batch_size, keep))
        self.gen_runner = (None if cfg.generator.engine is None
                           else RayRunner(cfg.generator.engine, cfg.ray, keep) if cfg.ray.enabled
                           else LocalRunner(cfg.generator.engine, cfg.ray.batch_size, keep))
        self.summaries: list[dict] = []
        self.tracker = None
        self.evaluated: dict[str, RoundStore] = {}  # eval hash -> the store that holds it (reuse)
        self.holdout: Optional[tuple[StageDir, str]] = None  # the held-out pairs' stage (eval.holdout): (folder, hash)
        self.logged_failures: dict[str, int] = {}  # stage folder -> row failures logged
        self.announced: set[str] = set()  # stage folders whose reuse the console has shown

    def _generator_model(self) -> Model:
        cfg, e = self.cfg, self.gen_engine
        if e.backend == "openai":  # a served model: the server is the model; a local path only tokenizes
            path = resolve_model(replace(cfg.model, path=cfg.generator.path)) if cfg.generator.path else self.seed.path
            return Model(path, f"openai:{e.api_model}@{e.base_url}")
        if cfg.generator.path:
            return _local_model(resolve_model(replace(cfg.model, path=cfg.generator.path)), cfg.generator.path)
        return self.seed

    # -- helpers -------------------------------------------------------------------------------
    def check_cluster(self, train: bool) -> None:
        """Engine replicas (x tensor parallel) and trainer workers vs the Ray cluster, before any
        engine starts (shared storage and the DeepSpeed JSON are checked by ``config.validate``)."""
        from selftaught.distributed.generation import check_generation_resources, ensure_ray

        cfg = self.cfg
        if cfg.ray.enabled or train:
            ensure_ray(cfg.ray)
        if cfg.ray.enabled:
            check_generation_resources(cfg.engine, cfg.ray)
            if cfg.generator.engine is not None:
                check_generation_resources(cfg.generator.engine, cfg.ray, key="generator.engine")
        if train:
            from selftaught.training.launch import check_train_resources

            check_train_resources(cfg.train, cfg.ray)

    def ctx(self, k: int, model: Model, generator: bool = False) -> StageContext:
        return StageContext(round=k, model_path=model.path,
                            constrained=self.gen_constrained if generator else self.constrained,
                            max_model_len=self.cfg.model.max_model_len, seed=self.cfg.seed,
                            deterministic=self.cfg.deterministic)

    def close_engines(self) -> None:
        """Ends every engine (pools on Ray, in-process engines): before training needs the memory, and
        at the end of the run."""
        for runner in (self.runner, self.gen_runner):
            if runner is not None:
                runner.close()

    def _resumed(self, sd: StageDir, stage: str, h: str) -> Optional[dict]:
        if not sd.is_complete(h):
            return None
        summary = {**sd.summary(), "resumed": True}
        # The shared stages are found complete every round: the console says so once.
        log.info("%s: complete (hash %s), reusing %s", stage, h, sd.root,
                 extra={"console": str(sd.root) not in self.announced})
        self.announced.add(str(sd.root))
        self.summaries.append(summary)
        return summary

    def _open(self, store: RoundStore, spec: StageSpec, h: str) -> tuple[StageDir, Optional[dict], dict[int, dict]]:
        """(the stage's folder, its summary if complete, else its committed shards by index)."""
        sd = store.stage(spec.name)
        done = self._resumed(sd, spec.name, h)
        return sd, done, ({} if done is not None else sd.open(h, self.cfg.shard_size))

    def _commit(self, sd: StageDir, entry: dict) -> None:
        sd.commit(entry)
        key = str(sd.root)
        for rid, reason in entry.get("examples") or []:
            n = self.logged_failures.get(key, 0)
            # The first few on the console, up to MAX_LOGGED_FAILURES in the stage's log; every one in failures/.
            if n < MAX_LOGGED_FAILURES:
                log.warning("%s: %s: %s", sd.root.name, rid, reason, extra={"console": n < console.CONSOLE_ROW_FAILURES})
            elif n == MAX_LOGGED_FAILURES:
                log.warning("%s: more failures not shown (see %s)", sd.root.name, sd.root / "failures",
                            extra={"console": False})
            self.logged_failures[key] = n + 1

    def _finish(self, sd: StageDir, spec: StageSpec, k: int, h: str, stage_cfg: Any, seconds: float,
                n_in: Optional[int] = None, extra: Optional[dict] = None) -> dict:
        """The stage summary, from its manifest's shard entries alone (no row is read), then the marker."""
        entries = sd.entries()
        tot = merged(entries)
        c = tot.get("completion_tokens", 0)
        summary = {
            "stage": spec.name, "round": k, "hash": h,
            "in": n_in if n_in is not None else tot["rows_in"] if "rows_in" in tot
            else tot.get("in", 0) * (spec.per_input(stage_cfg) or 1),
            "out": tot.get("out", 0), "failed": tot.get("failed", 0), "failures": tot.get("failures", {}),
            "prompt_tokens": tot.get("prompt_tokens", 0), "completion_tokens": c, "seconds": round(seconds, 2),
            "tok_per_s": round(c / seconds, 1) if seconds > 0 and c else None, "shards": len(entries),
            **(spec.summarize(tot.get("stats", {}), stage_cfg) if spec.summarize else {}), **(extra or {}),
            "resumed": False,
        }
        sd.finish(h, summary)
        self.summaries.append(summary)
        log.info("round %d %s: %d in → %d out, %d failed%s, %.1fs%s", k, spec.name, summary["in"], summary["out"],
                 summary["failed"], _reasons(summary["failures"]), seconds, _log_note())
        return summary

    # -- one declared stage ---------------------------------------------------------------------
    def _model(self, spec: StageSpec, judge_model: Model) -> Model:
        return self.generator if spec.engine == "generator" else judge_model

    def _hash(self, spec: StageSpec, upstream_hash: str, stage_cfg: Any, model: Model) -> str:
        """What the stage's output depends on (see ``StageSpec``); it chains through every upstream stage."""
        parts = [upstream_hash, spec.name, spec.hash_view(stage_cfg),
                 [load_template(t).id for t in spec.templates(stage_cfg)],
                 spec.hash_extra(self.cfg)]
        if spec.engine is not None:
            generator = spec.engine == "generator"
            parts.append([model.id, self.gen_constrained if generator else self.constrained,
                          self.cfg.model.max_model_len, self.cfg.seed])
        return config_hash(*parts)

    def _store(self, spec: StageSpec, k: int) -> RoundStore:
        shared = spec.scope == "run" or (spec.scope == "fresh" and not self.cfg.generator.fresh_instructions)
        return RoundStore(self.run_dir, SHARED if shared else k)

    def _upstream(self, k: int, sources: dict[str, StageDir]) -> Upstream:
        named = {n: (sd, sd.summary()) for n, sd in sources.items()}
        first = next(iter(named.values()), (None, {}))
        return Upstream(k, first[0], first[1], sources=named,
                        earlier=lambda name: [RoundStore(self.run_dir, j).stage(name) for j in range(1, k)])

    def _stage(self, spec: StageSpec, k: int, up: Upstream, upstream_hash: str, judge_model: Model,
               store: Optional[RoundStore] = None) -> tuple[StageDir, str, dict]:
        """Run (or resume, or reuse) one declared stage; (its folder, its hash, its summary)."""
        stage_cfg = spec.config(self.cfg, up)
        model = self._model(spec, judge_model)
        h = self._hash(spec, upstream_hash, stage_cfg, model)
        store = store or self._store(spec, k)
        ctx = self.ctx(k, model, generator=spec.engine == "generator")
        with _stage_log(f"{store.root.name}.{spec.name}"):
            if spec.process is None:
                summary = self._rechunked(store, k, spec, h, stage_cfg, up)
            else:
                summary = self._sharded(store, k, spec, h, stage_cfg, up, ctx)
        return store.stage(spec.name), h, summary

    def _sharded(self, store: RoundStore, k: int, spec: StageSpec, h: str, stage_cfg: Any, up: Upstream,
                 ctx: StageContext) -> dict:
        """Run ``spec`` over input shard files (shard i → output shard i) unless complete; each shard is
        committed as it finishes, so a resumed stage starts at its first uncommitted shard."""
        sd, done, committed = self._open(store, spec, h)
        if done is not None:
            return done
        t0 = time.perf_counter()
        inputs = (spec.inputs(stage_cfg, sd, self.cfg.shard_size) if spec.inputs
                  else [f for src, _ in up.sources.values() for f in src.data_files()])
        if committed:
            log.info("%s: resuming, %d of %d shards committed", spec.name, len(committed), len(inputs))
        tasks = [(i, str(p)) for i, p in enumerate(inputs) if i not in committed]
        desc = f"{spec.name} round {k}" + (f" ({spec.describe(stage_cfg)})" if spec.describe else "")
        kw = dict(desc=desc, commit=lambda e: self._commit(sd, e), total=sum(map(_num_rows, inputs)),
                  done=sum(e["in"] for e in committed.values()))
        if tasks:
            if spec.engine is None:
                runner = LocalRunner(None, self.cfg.ray.batch_size)
            else:
                runner = (self.gen_runner or self.runner) if spec.engine == "generator" else self.runner
                for other in (self.runner, self.gen_runner):  # one engine pool alive in the run: it fits
                    if other is not None and other is not runner:
                        other.close()
            runner.run(spec, str(sd.root), tasks, stage_cfg, ctx, **kw)
        extra = spec.finalize(sd, stage_cfg, ctx) if spec.finalize else None
        n_in = spec.count_in(stage_cfg, up) if spec.count_in else None
        return self._finish(sd, spec, k, h, stage_cfg, time.perf_counter() - t0, n_in, extra)

    def _rechunked(self, store: RoundStore, k: int, spec: StageSpec, h: str, stage_cfg: Any, up: Upstream) -> dict:
        """A stage the driver writes from the stream of its ``items`` (rows, and failures by status), cut
        into shards of ``shard_size``; a resumed run skips the items of committed shards (the stream is
        deterministic)."""
        sd, done, committed = self._open(store, spec, h)
        if done is not None:
            return done
        t0 = time.perf_counter()
        skip, i, buf = sum(e["in"] for e in committed.values()), len(committed), []

        def flush() -> None:
            nonlocal i, buf
            entry, ok, bad = entry_for(spec, stage_cfg, i, len(buf), buf, 0.0)
            sd.write_shard(i, ok, bad, spec.row_type)
            self._commit(sd, entry)
            i, buf = i + 1, []

        for pos, item in enumerate(spec.items(stage_cfg, up)):
            if pos < skip:
                continue
            buf.append(item)
            if len(buf) == self.cfg.shard_size:
                flush()
        if buf or i == 0:
            flush()  # the last, partial shard (or one empty shard: a stage always has one)
        n_in = spec.count_in(stage_cfg, up) if spec.count_in else None
        return self._finish(sd, spec, k, h, stage_cfg, time.perf_counter() - t0, n_in)

    # -- a round -------------------------------------------------------------------------------
    def pipeline(self, k: int, judge_model: Model, before: Optional[str] = None) -> dict[str, tuple[StageDir, str]]:
        """The declared stages in order (``stages.PIPELINE``) up to ``until``, each reading the one before
        it or its ``sources``: the pairs (once per run, or per round with ``generator.fresh_instructions``),
        then the round's judge (pairwise, absolute or both), its SFT rows and (DPO) its preference rows.
        ``before``: stop at that stage. Returns every stage that ran, by name: (its folder, its hash); training
        reads its own."""
        done: dict[str, tuple[StageDir, str]] = {}
        last: Optional[str] = None
        for spec in PIPELINE:
            if spec.name not in self.stages or spec.name == before:
                break
            if not spec.enabled(self.cfg):
                continue
            names = [n for n in spec.sources if n in done] if spec.sources else [last] if last else []
            hashes = [done[n][1] for n in names]
            # One source: its hash (the chain of a stage that reads the one before it); more: all of theirs.
            up_hash = hashes[0] if len(hashes) == 1 else config_hash(*hashes) if hashes else ""
            sd, h, _ = self._stage(spec, k, self._upstream(k, {n: done[n][0] for n in names}), up_hash, judge_model)
            done[spec.name], last = (sd, h), spec.name
        return done

    def train(self, k: int, data: dict[str, tuple[StageDir, str]], previous: Model) -> tuple[Model, dict]:
        """Train on the round's rows (Ray Train): SFT on the kept judgments, DPO on the preference rows, GRPO on
        the pairs' prompts, or SFT then DPO/GRPO (``train.objective``); the result judges round k+1."""
        cfg, store = self.cfg, RoundStore(self.run_dir, k)
        base = self.seed if cfg.train.init_from == "seed" else previous
        needed = TRAIN_INPUTS[cfg.train.objective]
        # init_from only picks ``base`` (whose id is hashed): in round 1 both choices train the same
        # model, so it is left out (as is train.dpo under plain SFT). The carried-over judge (too few
        # examples) depends on the previous model.
        # train.dpo and train.grpo count only under their objectives (dpo as before: left out under sft alone).
        objective = cfg.train.objective
        knobs = {f: v for f, v in asdict(cfg.train).items()
                 if f != "init_from" and not (f == "dpo" and objective in ("sft", "grpo", "sft_then_grpo"))
                 and not (f == "grpo" and not objective.endswith("grpo"))}
        h = config_hash(*(data[n][1] for n in needed), "train", knobs, base.id, previous.id)
        model_dir = store.model_dir
        sd = store.stage("train")
        if sd.is_complete(h) and not sd.summary().get("skipped") and not (model_dir / "config.json").is_file():
            log.warning("round %d train: marker present but %s is missing; training again", k, model_dir)
            shutil.rmtree(sd.root)
        summary = self._resumed(sd, "train", h)
        if summary is None:
            t0 = time.perf_counter()
            counts = {n: sum(e["out"] for e in data[n][0].entries()) for n in needed}
            n = counts[needed[0]]
            short = {s: c for s, c in counts.items() if c < cfg.train.min_examples}
            examples = {"examples": n, **({"dpo_examples": counts["dpo_data"]} if "dpo_data" in counts else {}),
                        **({"grpo_prompts": counts["grpo_data"]} if "grpo_data" in counts else {})}
            if short:
                too_few = ", ".join(f"{c} {s} rows" for s, c in short.items())
                log.warning("round %d train: %s < train.min_examples=%d; the round-%d judge carries over",
                            k, too_few, cfg.train.min_examples, k - 1)
                extra = {"skipped": True, **examples, "model_path": previous.path,
                         "reason": f"{too_few} < train.min_examples"}
            else:
                from selftaught.training.launch import train_with_ray

                self.close_engines()
                paths = {name: str(data[name][0].data_dir) for name in needed}
                with _stage_log(f"round_{k}.train"):
                    res = train_with_ray(paths.get("sft_data"), base.path, str(model_dir), cfg.train, cfg.ray,
                                         dpo_path=paths.get("dpo_data"), grpo_path=paths.get("grpo_data"))
                if self.tracker is not None:
                    self.tracker.log_train_history(k, res.log_history)
                extra = {"skipped": False, "objective": cfg.train.objective, "base_model": base.path,
                         "model_path": res.model_path,
                         # the trainer's own clock; the stage's "seconds" is the whole wall time
                         **{("train_seconds" if m == "seconds" else m): v for m, v in res.metrics.items()},
                         **examples}  # the rows of each set (the trainer's own "examples": its last phase's)
            seconds = time.perf_counter() - t0
            summary = {"stage": "train", "round": k, "hash": h, "in": n, "out": 0, "failed": 0, "failures": {},
                       "seconds": round(seconds, 2), **extra, "resumed": False}
            store.save("train", h, [], [], summary)
            self.summaries.append(summary)
            log.info("round %d train: %d examples, %.1fs%s", k, n, seconds, _log_note(f"round_{k}.train"))
        if summary.get("skipped"):
            return Model(previous.path, previous.id), summary
        # The weights' own fingerprint too: a model trained again at the same path is a new judge.
        return _local_model(summary["model_path"], f"round_{k}/train@{h}"), summary

    def _holdout_from(self, done: dict[str, tuple[StageDir, str]]) -> None:
        """Remember the held-out pairs' stage (eval.holdout), which eval reads, when it ran."""
        if HELD_OUT_PAIRS in done:
            self.holdout = done[HELD_OUT_PAIRS]

    def evaluate(self, store: RoundStore, k: int, model: Model) -> tuple[list[dict], dict]:
        """The eval stage on ``model``; a judge evaluated already (a round that kept the previous judge) is
        reused, not run again."""
        # The held-out pairs (eval.holdout) are one more eval set: their stage's hash chains into the eval's.
        up, up_hash = Upstream(k), ""
        if self.holdout is not None:
            sd, up_hash = self.holdout
            up = Upstream(k, sd, sd.summary(), sources={HELD_OUT_PAIRS: (sd, sd.summary())})
        h = self._hash(EVAL, up_hash, EVAL.config(self.cfg, up), model)
        earlier = self.evaluated.get(h)
        if earlier is not None and earlier.root != store.root and not store.is_complete(EVAL.name, h):
            log.info("round %d eval: judge unchanged since %s; reusing its eval", k, earlier.root.name)
            summary = {**earlier.summary(EVAL.name), "round": k, "seconds": 0.0, "reused_from": earlier.root.name,
                       "resumed": False}
            rows = earlier.rows(EVAL.name)
            store.save(EVAL.name, h, rows, earlier.failures(EVAL.name), summary)
            self.summaries.append(summary)
        else:
            _, _, summary = self._stage(EVAL, k, up, up_hash, model, store=store)
            rows = store.rows(EVAL.name)
        self.evaluated[h] = store
        return rows, summary

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> RunResult:
        cfg = self.cfg
        rounds = cfg.rounds if "train" in self.stages else min(cfg.rounds, 1)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with console.installed(self.run_dir, cfg.verbose):
            log.info("%s", _config_line(cfg, self.run_dir, rounds))
            return self._run(rounds)

    def _run(self, rounds: int) -> RunResult:
        from selftaught import report
        from selftaught.tracking import make_tracker

        cfg = self.cfg
        with _stage_log("setup"):  # Ray's start, W&B's
            self.check_cluster(train=rounds >= 1 and "train" in self.stages)
            self.tracker = make_tracker(cfg.tracking, self.run_dir, cfg.name, _config_dict(cfg))
        result = RunResult(self.run_dir)
        if rounds < cfg.rounds:
            log.warning("until=%s: stopping after round 1's %s (later rounds need a trained judge)", cfg.until, cfg.until)
        try:
            current = self.seed
            result.models[0] = current.path
            if self.eval_on:
                # The held-out instructions' pairs come first: the seed is evaluated on them too.
                n_before = len(self.summaries)
                if rounds >= 1:
                    self._holdout_from(self.pipeline(0, current, before=select.STAGE))
                self._finish_round(result, 0, current, self.summaries[n_before:])
            for k in range(1, rounds + 1):
                n_before = len(self.summaries)
                data = self.pipeline(k, current)
                self._holdout_from(data)
                if "train" in self.stages:
                    current, _ = self.train(k, data, current)
                    result.models[k] = current.path
                self._finish_round(result, k, current, self.summaries[n_before:])
        finally:
            self.close_engines()
            result.summaries = self.summaries
            paths = report.write_summary(self.run_dir, result.rounds) if result.rounds else {}
            self.tracker.log_summary({"rounds_completed": len(result.rounds)})
            self.tracker.finish()
        console.echo(f"\nrun summary ({self.run_dir}):\n{report.format_rounds(result.rounds)}")
        for kind, p in paths.items():
            console.echo(f"  {kind}: {p}")
        if console.current_log() is not None:
            console.echo(f"  logs: {console.current_log().parent}  (verbose=true prints them here)")
        return result

    def _finish_round(self, result: RunResult, k: int, model: Model, round_summaries: list[dict]) -> None:
        store = RoundStore(self.run_dir, k)
        eval_rows: list[dict] = []
        if self.eval_on:
            eval_rows, s = self.evaluate(store, k, model)
            round_summaries = round_summaries + [s]
        print_summary(round_summaries, k)
        store.root.mkdir(parents=True, exist_ok=True)
        io.write_jsonl(store.root / "summary.jsonl", round_summaries)
        row = round_row(k, model, round_summaries)
        result.rounds.append(row)
        if k >= 1 and Path(model.path) == store.root / "model":  # this round trained it: its model card
            model_card.write(Path(model.path), model_card.judge_spec(self.cfg, k, self.seed.path), result.rounds)
        if any(not s.get("resumed") for s in round_summaries):  # log each round once, even across resumes
            self.tracker.log({m: v for m, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
                             round=k)
            if eval_rows:
                self.tracker.log_table("eval/judgments", sample_judgments(eval_rows, self.cfg.eval.log_samples), round=k)


@contextmanager
def _stage_log(name: str) -> Iterator[None]:
    """Worker and library output of one stage to its log file (``console``); a stage that raises says
    on the console where that log is, before its traceback."""
    with console.stage_log(name) as path:
        try:
            yield
        except BaseException as e:
            if path is not None and not isinstance(e, (KeyboardInterrupt, SystemExit, ConfigError)):
                kind = type(e).__qualname__ if type(e).__module__ == "builtins" else f"{type(e).__module__}.{type(e).__qualname__}"
                log.error("%s failed: %s: %s (its full log: %s)", name, kind, str(e).splitlines()[0] if str(e) else "", path)
            raise


def _reasons(failures: dict[str, int]) -> str:
    """`` (reason 3, other 1)`` for a stage's failure counts, largest first."""
    if not failures:
        return ""
    return " (" + ", ".join(f"{r} {n}" for r, n in sorted(failures.items(), key=lambda x: -x[1])) + ")"


def _log_note(name: Optional[str] = None) -> str:
    """Where the stage's worker output went, relative to the run (empty under verbose=true)."""
    path = console.current_log()
    if path is None:
        return ""
    return f"  [{path.parent.name}/{name + '.log' if name else path.name}]"


def round_row(k: int, model: Model, summaries: list[dict]) -> dict:
    """One row of the run summary: eval metrics, judge yield, training and per-stage wall time."""
    row: dict = {"round": k, "model": model.path}
    for s in summaries:
        if s.get("round") != k:  # the shared pairs belong to the round that made them
            continue
        st = s["stage"]
        row[f"seconds/{st}"] = s.get("seconds")
        if st == "eval":
            row.update(evaluate.flat(s.get("metrics") or {}))
        elif st == "judge":
            for key in ("sample_accuracy", "parse_rate", "samples", "samples_per_item", "degenerate_rate", "kept_A",
                        "kept_B", "kept_mirror"):
                row[f"judge/{key}"] = s.get(key)
        elif st == "grade_pairs":
            for key in ("parse_rate", "mean_score_chosen", "mean_score_rejected", "pairs_kept", "kept_gradings"):
                row[f"grade/{key}"] = s.get(key)
        elif st == "verify_pairs":
            for key in ("sample_accuracy", "parse_rate", "yes_rate", "samples_per_item", "kept_yes", "kept_no"):
                row[f"verify/{key}"] = s.get(key)
        elif st in ("pairs", "neighbors"):
            row[f"{st}/out"] = s.get("out")
        elif st == "sft_data":
            row["judge/sft_examples"] = s.get("out")
        elif st == "dpo_data":
            row["judge/dpo_examples"] = s.get("out")
        elif st == "grpo_data":
            row["judge/grpo_prompts"] = s.get("out")
        elif st == "train":
            row["train/skipped"] = s.get("skipped")
            for key in ("train_loss", "tokens_per_s", "steady_tokens_per_s", "startup_seconds", "engine_seconds", "steps",
                        "dpo_margin_first", "dpo_margin_last", "grpo_reward_first", "grpo_reward_last_quarter",
                        "grpo_correctness_first", "grpo_correctness_last_quarter"):
                if s.get(key) is not None:
                    row[f"train/{key}"] = s[key]
    return row


def sample_judgments(rows: list[dict], n: int) -> list[dict]:
    keep = ("mode", "set", "subset", "order", "instruction", "answer_a", "answer_b", "judgment", "verdict", "gold",
            "correct", "margin")
    return [{k: r.get(k) for k in keep} for r in rows[:n]]


def _config_dict(cfg: RunConfig) -> dict:
    return asdict(cfg)


def print_summary(summaries: list[dict], k: Optional[int] = None) -> None:
    """Round ``k``'s stage table on the console: the shared stages an earlier round made (resumed, another
    round's number) are left out; the per-stage counters go to the log."""
    cols = ("round", "stage", "in", "out", "failed", "prompt_tokens", "completion_tokens", "seconds", "tok_per_s", "resumed")
    shown = [s for s in summaries if k is None or not (s.get("resumed") and s.get("round") != k)]
    table = [[str(s.get(c, "")) if s.get(c) is not None else "-" for c in cols] for s in shown]
    widths = [max(len(c), *(len(r[i]) for r in table)) if table else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in table]
    console.echo("\n".join(lines))
    # Each stage's own counters: in the round's summary.jsonl; here, in the log, not on the console.
    for s in summaries:
        extra = {k: v for k, v in s.items() if k not in cols and k not in ("hash", "metrics", "log_history")}
        if extra:
            log.info("%s: %s", s["stage"], extra, extra={"console": False})


def run(cfg: RunConfig) -> RunResult:
    with console.installed(run_dir(cfg), cfg.verbose):  # the data checks of ``Run`` on the console too
        return Run(cfg).run()


def _config_line(cfg: RunConfig, where: Path, rounds: int) -> str:
    """The resolved run in one line: what it trains, on what, how; the whole config is in hydra/."""
    data = cfg.data.path.rsplit("/", 1)[-1] + (f" +{len(cfg.data.also)} files" if cfg.data.also else "")
    return (f"selftaught run {cfg.name}: {rounds} round(s), model {cfg.model.path}, data {data}, "
            f"pairs.rejected={cfg.pairs.rejected}, judge.mode={cfg.judge.mode}, train.objective={cfg.train.objective} "
            f"({cfg.train.strategy}, {cfg.train.num_workers} worker(s)), engine {cfg.engine.backend}"
            f"{'' if cfg.ray.enabled else ' in-process'} -> {where}")


def evaluate_model(cfg: RunConfig) -> dict:
    """``selftaught eval``: the eval stage alone on ``model.path``, under ``<run>/standalone/eval/``. A run's held-out
    pairs are a set like any other here: ``eval.sets=[{path: <run>/data/holdout_pairs/data, name: holdout}]``."""
    cfg = replace(cfg, until="eval", eval=replace(cfg.eval, enabled=True, holdout=replace(cfg.eval.holdout, enabled=False)))
    r = Run(cfg)
    with console.installed(r.run_dir / "standalone", cfg.verbose):
        with _stage_log("setup"):
            r.check_cluster(train=False)
        try:
            _, summary = r.evaluate(RoundStore(r.run_dir, "standalone"), 0, r.seed)
        finally:
            r.close_engines()
    if summary.get("resumed"):
        console.echo(f"eval ({r.seed.path}):\n{evaluate.format_metrics(summary['metrics'])}")
    return summary


def judge_file_dir(cfg: RunConfig) -> Path:
    f = cfg.judge_file
    if f.out_dir:
        return Path(abspath(f.out_dir))
    return run_dir(cfg) / "judged" / Path(f.path or "pairs").stem


def judge_pairs(cfg: RunConfig) -> dict:
    """``selftaught judge``: the judge at ``model.path`` decides the pairs of ``judge_file.path``, or with
    ``judge_file.mode=absolute`` grades its responses 1-5.

    Writes under ``judge_file_dir``: the stage folder (``verdicts/`` or ``grades/``: parquet shards,
    manifest, failures, rejected rows; a rerun resumes), ``<stage>.jsonl`` (every row in file order,
    failures with their reason), ``summary.json``, and ``judge_file.dpo_out`` when set. Returns the summary."""
    f = cfg.judge_file
    if not f.path:
        raise ConfigError("judge_file.path: must be set to the file to judge (pairs: instruction, response_a, "
                          "response_b; judge_file.mode=absolute: instruction, response; see judge_file.*_field)")
    path = io.input_path(f.path)
    if not path.startswith(io.BUILTIN) and not Path(path).is_file():
        raise ConfigError(f"judge_file.path: {path} does not exist (a jsonl, json or parquet file)")
    spec, module = (GRADES, grades) if f.mode == "absolute" else (VERDICTS, verdicts)
    cfg = replace(cfg, rounds=0, until="eval", eval=replace(cfg.eval, enabled=False))
    r = Run(cfg)  # config.validate: also judge_file.decide against the decoding
    out = judge_file_dir(cfg)
    with console.installed(out, cfg.verbose):
        with _stage_log("setup"):
            r.check_cluster(train=False)
        try:
            sd, _, summary = r._stage(spec, 0, Upstream(0), "", r.seed, store=RoundStore(out.parent, out.name))
        finally:
            r.close_engines()
    paths = {spec.name: out / f"{spec.name}.jsonl", "shards": sd.data_dir, "summary": out / "summary.json"}
    io.write_jsonl(paths[spec.name], _in_file_order(sd))
    if f.dpo_out:
        paths["dpo"] = Path(abspath(f.dpo_out))
        dpo = verdicts.dpo_rows(_in_file_order(sd))
        (io.write_records if f.dpo_out.endswith(".parquet") else io.write_jsonl)(paths["dpo"], dpo)
        summary = {**summary, "dpo_rows": len(dpo)}
    summary = {**summary, "outputs": {k: str(v) for k, v in paths.items()}}
    from selftaught import atomic

    atomic.write_json(paths["summary"], summary)
    print(module.format_summary(summary), flush=True)
    return summary


def _in_file_order(sd: StageDir) -> Iterator[dict]:
    """The stage's rows and failures, each shard's merged back into the input file's order; streamed,
    one shard in memory (the stage itself never holds the file)."""
    for data, fails in zip(sd.data_files(), sd.failure_files()):
        shard = io.read_records(data) + io.read_jsonl(fails)
        yield from sorted(shard, key=lambda r: int(str(r.get("source") or "0").rsplit(":", 1)[-1] or 0))
