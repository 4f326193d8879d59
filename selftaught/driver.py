"""The round driver: which stages run, resume from markers, summaries.

Round data flow: load → categorize → select → pairs → judge (+ A/B balance) → sft_data.
Each stage is skipped when its marker matches the config hash (see ``store.py``).
"""
from __future__ import annotations

import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from selftaught import io
from selftaught.config import ALL_STAGES, RunConfig, abspath, config_hash, constrained, validate
from selftaught.distributed.generation import LocalRunner, StageFn, run_with_ray
from selftaught.models import resolve_model
from selftaught.prompts import load_template
from selftaught.stages import categorize, judge, pairs, select, sft_data
from selftaught.stages.base import OK, StageContext
from selftaught.store import RoundStore

log = logging.getLogger("selftaught")

# The provenance fields each stage adds: its own token counts, not the ones rows carry from upstream.
STAGE_META = {"categorize": ("categorize_meta",), "pairs": ("chosen_meta", "rejected_meta"), "judge": ("judge_meta",)}
MAX_LOGGED_FAILURES = 20


@dataclass
class RoundResult:
    run_dir: Path
    round_dir: Path
    summaries: list[dict] = field(default_factory=list)

    @property
    def sft_path(self) -> Path:
        return self.round_dir / "sft_data" / "data.parquet"


def run_dir(cfg: RunConfig) -> Path:
    return Path(abspath(cfg.output_dir)) / cfg.name


def _data_fingerprint(path: str) -> dict:
    if path.startswith("builtin:"):
        return {"builtin": path, "size": os.path.getsize(io.resolve_data_path(path))}
    st = os.stat(path)
    return {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


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
        log.warning("%s: %s: %s", stage, r.get("source") or r.get("example_id") or r.get("id"), r["status"])
    if len(bad) > MAX_LOGGED_FAILURES:
        log.warning("%s: ... and %d more failures (see failures.jsonl)", stage, len(bad) - MAX_LOGGED_FAILURES)


class Round:
    """Runs one round of the data loop for a validated config."""

    def __init__(self, cfg: RunConfig):
        self.cfg = validate(cfg)
        self.run_dir = run_dir(cfg)
        self.store = RoundStore(self.run_dir, cfg.round)
        # Fail fast, before Ray or any engine starts.
        self.data_path = io.resolve_data_path(cfg.data.path)
        self.model_path = resolve_model(cfg.model)
        self.constrained = constrained(cfg)
        for name in (cfg.categorize.template, cfg.pairs.answer_template, cfg.pairs.modify_template, cfg.judge.template):
            load_template(name)
        self.local = None if cfg.ray.enabled else LocalRunner(cfg.engine, cfg.ray.batch_size)
        self.summaries: list[dict] = []

    # -- helpers -------------------------------------------------------------------------------
    def ctx(self) -> StageContext:
        return StageContext(round=self.cfg.round, model_path=self.model_path, constrained=self.constrained,
                            max_model_len=self.cfg.model.max_model_len, seed=self.cfg.seed)

    def generate(self, fn: StageFn, records: list[dict], stage_cfg: object, desc: str) -> list[dict]:
        if self.local is not None:
            return self.local.run(fn, records, stage_cfg, self.ctx(), desc)
        return run_with_ray(fn, records, stage_cfg, self.cfg.engine, self.cfg.ray, self.ctx(), desc)

    def _stage(self, stage: str, h: str, n_in: int, compute) -> list[dict]:
        """Run ``compute() -> (kept, failures, extra)`` unless complete; persist and summarize."""
        if self.store.is_complete(stage, h):
            summary = {**self.store.summary(stage), "resumed": True}
            log.info("%s: complete (hash %s), reusing %s", stage, h, self.store.dir(stage))
            self.summaries.append(summary)
            return self.store.rows(stage)
        t0 = time.perf_counter()
        kept, failures, extra = compute()
        seconds = time.perf_counter() - t0
        p, c = _tokens(stage, kept + failures)
        summary = {
            "stage": stage, "round": self.cfg.round, "hash": h, "in": n_in, "out": len(kept),
            "failed": len(failures), "failures": dict(Counter(f.get("status") or f.get("reason") for f in failures)),
            "prompt_tokens": p, "completion_tokens": c, "seconds": round(seconds, 2),
            "tok_per_s": round(c / seconds, 1) if seconds > 0 and c else None, **extra, "resumed": False,
        }
        _report_failures(stage, [{"status": f.get("status") or f.get("reason"), **f} for f in failures])
        self.store.save(stage, h, kept, failures, summary)
        self.summaries.append(summary)
        log.info("%s: %d in → %d out, %d failed, %.1fs", stage, n_in, len(kept), len(failures), seconds)
        return kept

    # -- the round -----------------------------------------------------------------------------
    def run(self) -> RoundResult:
        cfg, model_id = self.cfg, cfg_model_id(self.cfg)
        stages = ALL_STAGES[: ALL_STAGES.index(cfg.until) + 1]
        gen = (model_id, self.constrained, cfg.model.max_model_len)
        try:
            h = config_hash("load", cfg.data, _data_fingerprint(self.data_path))

            def do_load():
                rows, rejects = io.load_instructions(cfg.data)
                return rows, [{"source": f"{r.file}:{r.line}", "reason": r.reason, "snippet": r.snippet} for r in rejects], {}

            records = self._stage("load", h, 0, do_load)

            if "categorize" in stages:
                h = config_hash(h, "categorize", cfg.categorize, gen, load_template(cfg.categorize.template).id)

                def do_categorize():
                    rows = self.generate(categorize.process, records, cfg.categorize, "categorize")
                    ok, bad = _split(rows)
                    return ok, bad, {"unparsed": sum(not r["category_parsed"] for r in ok),
                                     "categories": select.category_counts(ok)}

                records = self._stage("categorize", h, len(records), do_categorize)

            if "select" in stages:
                h = config_hash(h, "select", cfg.select)

                def do_select():
                    chosen = select.select(records, cfg.select)
                    return chosen, [], {"categories": select.category_counts(chosen)}

                records = self._stage("select", h, len(records), do_select)

            if "pairs" in stages:
                tids = [load_template(t).id for t in (cfg.pairs.answer_template, cfg.pairs.modify_template)]
                h = config_hash(h, "pairs", cfg.pairs, gen, tids)

                def do_pairs():
                    ok, bad = _split(self.generate(pairs.process, records, cfg.pairs, "pairs"))
                    return ok, bad, {"x_closed_at_token_bound": sum(bool((r["rejected_meta"] or {}).get("x_truncated")) for r in ok)}

                records = self._stage("pairs", h, len(records), do_pairs)

            if "judge" in stages:
                h = config_hash(h, "judge", cfg.judge, gen, cfg.seed, load_template(cfg.judge.template).id)

                def do_judge():
                    rows = self.generate(judge.process, records, cfg.judge, f"judge (n={cfg.judge.n}, 2 orders)")
                    stats = judge.sample_stats(rows)
                    if cfg.judge.balance:
                        rows = judge.balance(rows, cfg.seed)
                    ok, bad = _split(rows)
                    stats["kept_A"] = sum(r["gold"] == "A" for r in ok)
                    stats["kept_B"] = sum(r["gold"] == "B" for r in ok)
                    return ok, bad, stats

                records = self._stage("judge", h, 2 * len(records), do_judge)

            if "sft_data" in stages:
                h = config_hash(h, "sft_data", cfg.judge.template)
                rows = records
                records = self._stage("sft_data", h, len(rows), lambda: (sft_data.build(rows, cfg.judge), [], {}))
        finally:
            if self.local is not None:
                self.local.close()
        print_summary(self.summaries)
        io.write_jsonl(self.store.root / "summary.jsonl", self.summaries)
        return RoundResult(self.run_dir, self.store.root, self.summaries)


def cfg_model_id(cfg: RunConfig) -> str:
    """What identifies the model in stage hashes: the configured path, not the cache location."""
    return cfg.model.path


def print_summary(summaries: list[dict]) -> None:
    cols = ("stage", "in", "out", "failed", "prompt_tokens", "completion_tokens", "seconds", "tok_per_s", "resumed")
    table = [[str(s.get(c, "")) if s.get(c) is not None else "-" for c in cols] for s in summaries]
    widths = [max(len(c), *(len(r[i]) for r in table)) if table else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in table]
    for s in summaries:
        extra = {k: v for k, v in s.items() if k not in cols and k not in ("round", "hash")}
        if extra:
            lines.append(f"{s['stage']}: {extra}")
    print("\n".join(lines), flush=True)


def run_round(cfg: RunConfig) -> RoundResult:
    return Round(cfg).run()
