"""The run driver: rounds of the Self-Taught Evaluator loop, resume from markers, summaries.

    round 0   eval (the seed judge)
    round k   judge (with the model of round k-1) → sft_data → train → eval (the new model)

The pairs (load → categorize → select → pairs) are made once by the generator model under
``<run>/data/`` and reused by every round, or per round with ``generator.fresh_instructions``.
Each stage is skipped when its marker matches the config hash (see ``store.py``); hashes chain
through upstream stages and through the model that judges, so a killed run resumes at its first
incomplete stage and a changed knob redoes only what depends on it.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

from selftaught import eval_data, io
from selftaught.degeneracy import is_degenerate
from selftaught.config import (ALL_STAGES, RunConfig, abspath, config_hash, constrained, eval_config,
                               generator_constrained, validate)
from selftaught.distributed.generation import LocalRunner, StageFn, run_with_ray
from selftaught.models import resolve_model
from selftaught.prompts import load_template
from selftaught.stages import categorize, evaluate, judge, pairs, select, sft_data
from selftaught.stages.base import OK, StageContext
from selftaught.store import RoundStore

log = logging.getLogger("selftaught")

# The provenance fields each stage adds: its own token counts, not the ones rows carry from upstream.
STAGE_META = {"categorize": ("categorize_meta",), "pairs": ("chosen_meta", "rejected_meta"),
              "judge": ("judge_meta",), "eval": ("eval_meta",)}
MAX_LOGGED_FAILURES = 20
SHARED = "data"  # folder of the pairs shared by all rounds


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


def _data_fingerprint(paths: list[str]) -> list[dict]:
    out = []
    for path in paths:
        if path.startswith("builtin:"):
            out.append({"builtin": path, "size": os.path.getsize(io.resolve_data_path(path))})
        else:
            st = os.stat(path)
            out.append({"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def _tokens(stage: str, rows: list[dict]) -> tuple[int, int]:
    p = c = 0
    for r in rows:
        for f in STAGE_META.get(stage, ()):
            m = r.get(f)
            if m:
                p += m.get("prompt_tokens") or 0
                c += m.get("completion_tokens") or 0
    return p, c


def _split(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    ok = [r for r in rows if r.get("status", OK) == OK]
    bad = [r for r in rows if r.get("status", OK) != OK]
    return ok, bad


def _report_failures(stage: str, bad: list[dict]) -> None:
    for r in bad[:MAX_LOGGED_FAILURES]:
        log.warning("%s: %s: %s", stage, r.get("source") or r.get("example_id") or r.get("eval_id") or r.get("id"),
                    r["status"])
    if len(bad) > MAX_LOGGED_FAILURES:
        log.warning("%s: ... and %d more failures (see failures.jsonl)", stage, len(bad) - MAX_LOGGED_FAILURES)


class Run:
    """Runs (or resumes) every round of a validated config."""

    def __init__(self, cfg: RunConfig):
        self.cfg = validate(cfg)
        self.run_dir = run_dir(cfg)
        self.stages = ALL_STAGES[: ALL_STAGES.index(cfg.until) + 1]
        # Fail fast, before Ray or any engine starts: data, models, templates, eval files.
        self.data_paths = [io.resolve_data_path(cfg.data.path)] + [
            io.resolve_data_path(s.path, f"data.also.{i}.path") for i, s in enumerate(cfg.data.also)]
        self.seed = _local_model(resolve_model(cfg.model), cfg.model.path)
        self.gen_engine = cfg.generator.engine or cfg.engine
        self.generator = self._generator_model()
        self.constrained = constrained(cfg)
        self.gen_constrained = generator_constrained(cfg)
        self.eval_cfg = eval_config(cfg)
        for name in (cfg.categorize.template, cfg.pairs.answer_template, cfg.pairs.modify_template,
                     cfg.pairs.instruction_template, cfg.judge.template, self.eval_cfg.template):
            load_template(name)
        self.eval_on = "eval" in self.stages and cfg.eval.enabled
        if self.eval_on:
            eval_data.fingerprint(cfg.eval)
        # In-process engines (ray.enabled=false): one runner per engine config.
        self.local = None if cfg.ray.enabled else LocalRunner(cfg.engine, cfg.ray.batch_size)
        self.local_gen = (None if cfg.ray.enabled or cfg.generator.engine is None
                          else LocalRunner(cfg.generator.engine, cfg.ray.batch_size))
        self.summaries: list[dict] = []
        self.tracker = None
        self.evaluated: dict[str, RoundStore] = {}  # eval hash -> the store that holds it (reuse)

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
        engine starts; on a cluster, output_dir must be absolute (shared storage)."""
        from selftaught.distributed.generation import check_generation_resources, check_shared_storage, ensure_ray

        cfg = self.cfg
        check_shared_storage(cfg.output_dir, cfg.ray)
        if cfg.ray.enabled or train:
            ensure_ray(cfg.ray)
        if cfg.ray.enabled:
            check_generation_resources(cfg.engine, cfg.ray)
            if cfg.generator.engine is not None:
                check_generation_resources(cfg.generator.engine, cfg.ray, key="generator.engine")
        if train:
            from selftaught.distributed.training import check_train_resources

            check_train_resources(cfg.train, cfg.ray)

    def ctx(self, k: int, model: Model, generator: bool = False) -> StageContext:
        return StageContext(round=k, model_path=model.path,
                            constrained=self.gen_constrained if generator else self.constrained,
                            max_model_len=self.cfg.model.max_model_len, seed=self.cfg.seed)

    def generate(self, fn: StageFn, records: list[dict], stage_cfg: object, desc: str, ctx: StageContext,
                 generator: bool = False) -> list[dict]:
        engine_cfg = self.gen_engine if generator else self.cfg.engine
        local = (self.local_gen or self.local) if generator else self.local
        if local is not None:
            return local.run(fn, records, stage_cfg, ctx, desc)
        return run_with_ray(fn, records, stage_cfg, engine_cfg, self.cfg.ray, ctx, desc)

    def close_engines(self) -> None:
        """No engine outlives its stage's model: Ray Data's actor pools end with their stage; the
        in-process engines are closed here, before training needs the memory."""
        for local in (self.local, self.local_gen):
            if local is not None:
                local.close()

    def _stage(self, store: RoundStore, k: int, stage: str, h: str, n_in: int,
               compute: Callable[[], tuple[list[dict], list[dict], dict]]) -> tuple[list[dict], dict]:
        """Run ``compute() -> (kept, failures, extra)`` unless complete; persist and summarize."""
        if store.is_complete(stage, h):
            summary = {**store.summary(stage), "resumed": True}
            log.info("%s: complete (hash %s), reusing %s", stage, h, store.dir(stage))
            self.summaries.append(summary)
            return store.rows(stage), summary
        t0 = time.perf_counter()
        kept, failures, extra = compute()
        seconds = time.perf_counter() - t0
        p, c = _tokens(stage, kept + failures)
        summary = {
            "stage": stage, "round": k, "hash": h, "in": n_in, "out": len(kept),
            "failed": len(failures), "failures": dict(Counter(f.get("status") or f.get("reason") for f in failures)),
            "prompt_tokens": p, "completion_tokens": c, "seconds": round(seconds, 2),
            "tok_per_s": round(c / seconds, 1) if seconds > 0 and c else None, **extra, "resumed": False,
        }
        _report_failures(stage, [{"status": f.get("status") or f.get("reason"), **f} for f in failures])
        store.save(stage, h, kept, failures, summary)
        self.summaries.append(summary)
        log.info("round %d %s: %d in → %d out, %d failed, %.1fs", k, stage, n_in, len(kept), len(failures), seconds)
        return kept, summary

    # -- stages --------------------------------------------------------------------------------
    def make_pairs(self, k: int) -> tuple[list[dict], str]:
        """load → categorize → select → pairs with the generator model; shared unless fresh per round."""
        cfg = self.cfg
        shared = RoundStore(self.run_dir, SHARED)
        gen = (self.generator.id, self.gen_constrained, cfg.model.max_model_len)
        ctx = self.ctx(k, self.generator, generator=True)
        h = config_hash("load", cfg.data, _data_fingerprint(self.data_paths))

        def do_load():
            rows, rejects = io.load_instructions(cfg.data)
            return rows, [{"source": f"{r.file}:{r.line}", "reason": r.reason, "snippet": r.snippet} for r in rejects], {}

        records, _ = self._stage(shared, k, "load", h, 0, do_load)
        if "categorize" not in self.stages:
            return records, h
        h = config_hash(h, "categorize", cfg.categorize, gen, load_template(cfg.categorize.template).id)

        def do_categorize():
            rows = self.generate(categorize.process, records, cfg.categorize, "categorize", ctx, generator=True)
            ok, bad = _split(rows)
            return ok, bad, {"unparsed": sum(not r["category_parsed"] for r in ok),
                             "categories": select.category_counts(ok), **categorize.accuracy(ok)}

        records, _ = self._stage(shared, k, "categorize", h, len(records), do_categorize)
        if "select" not in self.stages:
            return records, h

        store, pool = shared, records
        if cfg.generator.fresh_instructions:  # each round: instructions no earlier round used
            store = RoundStore(self.run_dir, k)
            used = {r["id"] for j in range(1, k) for r in RoundStore(self.run_dir, j).rows("select")}
            pool = [r for r in records if r["id"] not in used]
            h = config_hash(h, "fresh", k, sorted(used))
        h = config_hash(h, "select", cfg.select)

        def do_select():
            chosen = select.select(pool, cfg.select)
            return chosen, [], {"categories": select.category_counts(chosen)}

        records, _ = self._stage(store, k, "select", h, len(pool), do_select)
        if "pairs" not in self.stages:
            return records, h
        tids = [load_template(t).id for t in (cfg.pairs.answer_template, cfg.pairs.modify_template,
                                              cfg.pairs.instruction_template)]
        h = config_hash(h, "pairs", cfg.pairs, gen, tids)

        def do_pairs():
            ok, bad = _split(self.generate(pairs.process, records, cfg.pairs, "pairs", ctx, generator=True))
            answers = [r[k] for r in ok for k in ("chosen", "rejected")]
            return ok, bad, {"x_closed_at_token_bound": sum(bool((r["rejected_meta"] or {}).get("x_truncated")) for r in ok),
                             "retried": sum((r.get("attempts") or 1) > 1 for r in ok + bad),
                             # answers with more than half of their 4-grams repeated (degeneracy.py)
                             "degenerate_answers": round(sum(map(is_degenerate, answers)) / len(answers), 4) if answers else None}

        records, _ = self._stage(store, k, "pairs", h, len(records), do_pairs)
        return records, h

    def judge_and_build(self, k: int, records: list[dict], h: str, judge_model: Model) -> tuple[list[dict], str]:
        cfg, store = self.cfg, RoundStore(self.run_dir, k)
        h = config_hash(h, "judge", cfg.judge, judge_model.id, self.constrained, cfg.model.max_model_len, cfg.seed,
                        load_template(cfg.judge.template).id)

        def do_judge():
            rows = self.generate(judge.process, records, cfg.judge, f"judge round {k} (n={cfg.judge.n}, 2 orders)",
                                 self.ctx(k, judge_model))
            stats = judge.sample_stats(rows, cfg.judge.degenerate_threshold)
            if cfg.judge.balance:
                rows = judge.balance(rows, cfg.seed)
            ok, bad = _split(rows)
            return ok, bad, {**stats, **judge.kept_stats(ok)}

        records, _ = self._stage(store, k, "judge", h, 2 * len(records), do_judge)
        if "sft_data" not in self.stages:
            return records, h
        h = config_hash(h, "sft_data", cfg.judge.template)
        rows = records
        records, _ = self._stage(store, k, "sft_data", h, len(rows), lambda: (sft_data.build(rows, cfg.judge), [], {}))
        return records, h

    def train(self, k: int, sft_rows: list[dict], h: str, previous: Model) -> tuple[Model, dict]:
        """SFT on the kept judgments (Ray Train); the result judges round k+1."""
        cfg, store = self.cfg, RoundStore(self.run_dir, k)
        base = self.seed if cfg.train.init_from == "seed" else previous
        # init_from only picks ``base`` (whose id is hashed): in round 1 both choices train the same
        # model, so it is left out. The carried-over judge (too few examples) depends on the previous model.
        h = config_hash(h, "train", replace(cfg.train, init_from=""), base.id, previous.id)
        model_dir = store.root / "model"
        marker_ok = store.is_complete("train", h)
        if marker_ok and not store.summary("train").get("skipped") and not (model_dir / "config.json").is_file():
            log.warning("round %d train: marker present but %s is missing; training again", k, model_dir)
            shutil.rmtree(store.dir("train"))

        def do_train():
            if len(sft_rows) < cfg.train.min_examples:
                log.warning("round %d train: %d examples < train.min_examples=%d; the round-%d judge carries over",
                            k, len(sft_rows), cfg.train.min_examples, k - 1)
                return [], [], {"skipped": True, "examples": len(sft_rows), "model_path": previous.path,
                                "reason": f"{len(sft_rows)} examples < train.min_examples"}
            from selftaught.distributed.training import train_with_ray

            self.close_engines()
            res = train_with_ray(str(store.dir("sft_data") / "data.parquet"), base.path, str(model_dir), cfg.train, cfg.ray)
            if self.tracker is not None:
                self.tracker.log_train_history(k, res.log_history)
            return [], [], {"skipped": False, "examples": len(sft_rows), "base_model": base.path,
                            "model_path": res.model_path,
                            # the trainer's own clock; the stage's "seconds" is the whole wall time
                            **{("train_seconds" if m == "seconds" else m): v for m, v in res.metrics.items()}}

        _, summary = self._stage(store, k, "train", h, len(sft_rows), do_train)
        if summary.get("skipped"):
            return Model(previous.path, previous.id), summary
        # The weights' own fingerprint too: a model trained again at the same path is a new judge.
        return _local_model(summary["model_path"], f"round_{k}/train@{h}"), summary

    def evaluate(self, store: RoundStore, k: int, model: Model) -> tuple[list[dict], dict]:
        cfg, ev = self.cfg, self.eval_cfg
        h = config_hash("eval", ev, eval_data.fingerprint(cfg.eval), model.id, cfg.model.max_model_len,
                        load_template(ev.template).id)
        earlier = self.evaluated.get(h)
        if earlier is not None and earlier.root != store.root and not store.is_complete("eval", h):
            # The same judge, evaluated already (a round whose training was skipped): reuse, not re-run.
            log.info("round %d eval: judge unchanged since %s; reusing its eval", k, earlier.root.name)
            summary = {**earlier.summary("eval"), "round": k, "seconds": 0.0, "reused_from": earlier.root.name,
                       "resumed": False}
            rows = earlier.rows("eval")
            store.save("eval", h, rows, earlier.failures("eval"), summary)
            self.summaries.append(summary)
            self.evaluated[h] = store
            return rows, summary

        pairs_, rejects = eval_data.load_eval_sets(cfg.eval)

        def do_eval():
            rows = self.generate(evaluate.process, pairs_, ev,
                                 f"eval round {k} ({len(pairs_)} pairs, 2 orders, {'+'.join(ev.modes)})", self.ctx(k, model))
            ok, bad = _split(rows)
            m = evaluate.metrics(rows)
            print(f"\neval, round {k} ({model.path}):\n{evaluate.format_metrics(m)}", flush=True)
            return ok, rejects + bad, {"model": model.path, "metrics": m}

        out = self._stage(store, k, "eval", h, 2 * len(pairs_) * len(ev.modes), do_eval)
        self.evaluated[h] = store
        return out

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> RunResult:
        from selftaught import report
        from selftaught.tracking import make_tracker

        cfg = self.cfg
        rounds = cfg.rounds if "train" in self.stages else min(cfg.rounds, 1)
        self.check_cluster(train=rounds >= 1 and "train" in self.stages)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.tracker = make_tracker(cfg.tracking, self.run_dir, cfg.name, _config_dict(cfg))
        result = RunResult(self.run_dir)
        if rounds < cfg.rounds:
            log.warning("until=%s: stopping after round 1's %s (later rounds need a trained judge)", cfg.until, cfg.until)
        try:
            current = self.seed
            result.models[0] = current.path
            if self.eval_on:
                self._finish_round(result, 0, current, [])
            for k in range(1, rounds + 1):
                n_before = len(self.summaries)
                records, h = self.make_pairs(k)
                if "judge" in self.stages:
                    records, h = self.judge_and_build(k, records, h, current)
                if "train" in self.stages:
                    current, _ = self.train(k, records, h, current)
                    result.models[k] = current.path
                self._finish_round(result, k, current, self.summaries[n_before:])
        finally:
            self.close_engines()
            result.summaries = self.summaries
            paths = report.write_summary(self.run_dir, result.rounds) if result.rounds else {}
            self.tracker.log_summary({"rounds_completed": len(result.rounds)})
            self.tracker.finish()
        print(f"\nrun summary ({self.run_dir}):\n{report.format_rounds(result.rounds)}", flush=True)
        for kind, p in paths.items():
            print(f"  {kind}: {p}")
        return result

    def _finish_round(self, result: RunResult, k: int, model: Model, round_summaries: list[dict]) -> None:
        store = RoundStore(self.run_dir, k)
        eval_rows: list[dict] = []
        if self.eval_on:
            eval_rows, s = self.evaluate(store, k, model)
            round_summaries = round_summaries + [s]
        print_summary(round_summaries)
        store.root.mkdir(parents=True, exist_ok=True)
        io.write_jsonl(store.root / "summary.jsonl", round_summaries)
        row = round_row(k, model, round_summaries)
        result.rounds.append(row)
        if any(not s.get("resumed") for s in round_summaries):  # log each round once, even across resumes
            self.tracker.log({m: v for m, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
                             round=k)
            if eval_rows:
                self.tracker.log_table("eval/judgments", sample_judgments(eval_rows, self.cfg.eval.log_samples), round=k)


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
        elif st == "sft_data":
            row["judge/sft_examples"] = s.get("out")
        elif st == "train":
            row["train/skipped"] = s.get("skipped")
            for key in ("train_loss", "tokens_per_s", "steps"):
                if s.get(key) is not None:
                    row[f"train/{key}"] = s[key]
    return row


def sample_judgments(rows: list[dict], n: int) -> list[dict]:
    keep = ("mode", "set", "subset", "order", "instruction", "answer_a", "answer_b", "judgment", "verdict", "gold",
            "correct", "margin")
    return [{k: r.get(k) for k in keep} for r in rows[:n]]


def _config_dict(cfg: RunConfig) -> dict:
    return asdict(cfg)


def print_summary(summaries: list[dict]) -> None:
    cols = ("round", "stage", "in", "out", "failed", "prompt_tokens", "completion_tokens", "seconds", "tok_per_s", "resumed")
    table = [[str(s.get(c, "")) if s.get(c) is not None else "-" for c in cols] for s in summaries]
    widths = [max(len(c), *(len(r[i]) for r in table)) if table else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in table]
    for s in summaries:
        extra = {k: v for k, v in s.items() if k not in cols and k not in ("hash", "metrics", "log_history")}
        if extra:
            lines.append(f"{s['stage']}: {extra}")
    print("\n".join(lines), flush=True)


def run(cfg: RunConfig) -> RunResult:
    return Run(cfg).run()


def evaluate_model(cfg: RunConfig) -> dict:
    """``selftaught eval``: the eval stage alone on ``model.path``, under ``<run>/standalone/eval/``."""
    cfg = replace(cfg, until="eval", eval=replace(cfg.eval, enabled=True))
    r = Run(cfg)
    r.check_cluster(train=False)
    try:
        _, summary = r.evaluate(RoundStore(r.run_dir, "standalone"), 0, r.seed)
    finally:
        r.close_engines()
    if summary.get("resumed"):
        print(f"eval ({r.seed.path}):\n{evaluate.format_metrics(summary['metrics'])}")
    return summary
