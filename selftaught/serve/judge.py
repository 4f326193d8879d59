"""The judge a service calls: one engine and the ``selftaught judge`` stages' own functions.

Rows in, results out, synchronous; no HTTP and no asyncio here (``batching.py`` gathers the rows of
concurrent requests into one call, ``app.py`` speaks HTTP). A pair is decided exactly as
``selftaught judge`` decides it (``stages/verdicts.process``: both orders, ``judge_file.decide``), a
response graded as ``judge_file.mode=absolute`` grades it (``stages/grades.process``).

Every row carries an ``id`` unique within the call; a row whose prompt does not fit the context comes
back with ``error: "prompt too long"``, never a guess.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

from selftaught.config import EngineConfig, RunConfig
from selftaught.engines import Engine
from selftaught.prompts import load_template
from selftaught.stages import grades, verdicts
from selftaught.stages.base import OK, StageContext, Upstream
from selftaught.stages.judge import VERIFY, JudgeDecoding, JudgeItem, sample
from selftaught.stages.verdicts import A, B, TIE, Judging, prompt_instruction

KINDS = ("compare", "grade", "verify", "reference")  # what a batch of rows asks of the engine
# What a compared pair returns: the same keys as a row of `selftaught judge`'s verdicts.jsonl.
COMPARE_KEYS = ("winner", "decided_by", "agree", "verdict_AB", "verdict_BA", "margin_AB", "margin_BA",
                "judgment_AB", "judgment_BA", "votes_a", "votes_b")
GRADE_KEYS = ("score", "expected_score", "feedback", "score_error")
WIN_REWARD = {A: 1.0, TIE: 0.5, B: 0.0}  # reward=reference: the response is response_a, the label response_b


def reward_kind(cfg: RunConfig) -> str:
    r = cfg.serve.reward
    if r == "auto":
        return "verify" if cfg.judge_file.decide == "verify" else "grade"
    return r


def _view(stage_rows: list[dict], keys: tuple[str, ...], spec) -> list[dict]:
    """A ``selftaught judge`` stage's rows as the service answers them: ``keys``, the tokens its provenance
    (``spec.meta_fields``) counted; a failed row is its reason."""
    out = []
    for r in stage_rows:
        if r["status"] != OK:
            out.append({"id": r["id"], "error": r["status"]})
            continue
        meta = r.get(spec.meta_fields[0]) or {}
        out.append({"id": r["id"], **{k: r.get(k) for k in keys}, "prompt_tokens": int(meta.get("prompt_tokens", 0)),
                    "completion_tokens": int(meta.get("completion_tokens", 0))})
    return out


def served_engine(engine: EngineConfig) -> EngineConfig:
    """The engine config a service runs: ``engine.onednn_cache`` unset means 0 here, so the engine's memory
    stays flat under batches of every size (the config field says what it costs)."""
    return engine if engine.onednn_cache is not None else replace(engine, onednn_cache=0)


@dataclass
class ServedJudge:
    engine: Engine
    judging: Judging
    ctx: StageContext
    reward: str  # verify | grade | reference (resolved)
    model: str  # what /health names

    @classmethod
    def load(cls, cfg: RunConfig, model_path: str) -> "ServedJudge":
        """Build the engine on a local model folder (the one slow step: minutes for a large model)."""
        from selftaught.engines import make_engine

        return cls.on(make_engine(served_engine(cfg.engine), model_path, cfg.model.max_model_len), cfg, model_path)

    @classmethod
    def on(cls, engine: Engine, cfg: RunConfig, model_path: str) -> "ServedJudge":
        """The judge of ``cfg`` on an engine already built on ``model_path``."""
        judging = verdicts.judging(cfg, Upstream(0))  # the knobs `selftaught judge` runs with, resolved as it does
        ctx = StageContext(round=0, model_path=model_path, constrained=judging.constrained,
                           max_model_len=cfg.model.max_model_len, seed=cfg.seed)
        return cls(engine, judging, ctx, reward_kind(cfg), cfg.model.path)

    def run(self, kind: str) -> Callable[[list[dict]], list[dict]]:
        return {"compare": self.compare, "grade": self.grade, "verify": self.verify,
                "reference": self.reference}[kind]

    def compare(self, rows: list[dict]) -> list[dict]:
        """``{id, instruction, response_a, response_b, reference?}`` -> ``{id, winner, decided_by, ...}``."""
        return _view(verdicts.process(rows, self.engine, self.ctx, self.judging), COMPARE_KEYS, verdicts.SPEC)

    def grade(self, rows: list[dict]) -> list[dict]:
        """``{id, instruction, response, rubric?, reference?}`` -> ``{id, score, expected_score, feedback}``."""
        return _view(grades.process(rows, self.engine, self.ctx, self.judging), GRADE_KEYS, grades.SPEC)

    def verify(self, rows: list[dict]) -> list[dict]:
        """``{id, instruction, response, reference?}`` -> ``{id, p_yes, margin}``: "does this response answer
        the instruction?" asked of the response alone (the verify template, the verdict token forced);
        ``p_yes`` = P(Yes) / (P(Yes) + P(No))."""
        tpl = load_template(self.judging.eval.verify_template)
        dec = JudgeDecoding(format="verdict_first", constrained=True, verdict_only=True)
        items = [JudgeItem(id=r["id"], instruction=prompt_instruction(r["instruction"], r.get("reference")),
                           answer_a=r["response"]) for r in rows]
        got = sample(items, 1, self.engine, self.ctx, tpl, dec, form=VERIFY)
        out = []
        for r in rows:
            g = got.get(r["id"])
            if g is None:
                out.append({"id": r["id"], "error": "prompt too long"})
                continue
            s = g["samples"][0]
            out.append({"id": r["id"], "p_yes": round(1 / (1 + math.exp(-s["margin"])), 6), "margin": round(s["margin"], 6),
                        "verdict": s["verdict"], "prompt_tokens": g["prompt_tokens"], "completion_tokens": s["tokens"]})
        return out

    def reference(self, rows: list[dict]) -> list[dict]:
        """``{id, instruction, response, reference}`` -> ``{id, reward, winner}``: the response against the
        reference answer, decided as ``compare`` decides (1 the response wins, 0.5 tie, 0 it loses)."""
        same = {r["id"] for r in rows if r["response"].strip() == r["reference"].strip()}
        pairs = [{"id": r["id"], "instruction": r["instruction"], "response_a": r["response"], "response_b": r["reference"]}
                 for r in rows if r["id"] not in same]
        got = {r["id"]: r for r in self.compare(pairs)} if pairs else {}
        out = []
        for r in rows:
            if r["id"] in same:  # the reference itself: a tie by definition, no engine call
                out.append({"id": r["id"], "winner": TIE, "decided_by": "identical", "reward": WIN_REWARD[TIE]})
                continue
            g = got[r["id"]]
            out.append(g if "error" in g else {**g, "reward": WIN_REWARD[g["winner"]]})
        return out

    def close(self) -> None:
        self.engine.close()
