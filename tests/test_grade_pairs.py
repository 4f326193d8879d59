"""judge.mode=absolute|both: the loop samples 1-5 gradings of each answer of a pair and keeps a chosen
and a rejected one only when the chosen scores strictly higher; the score balance caps each score at
an even share; sft_data turns the kept gradings into rows of the grading prompt. Real engines on the
tiny model; the whole round through the driver with pairs written by SmolLM2."""
from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from selftaught import compose
from selftaught.config import EngineConfig, JudgeConfig, eval_config
from selftaught.driver import Run
from selftaught.engines import make_engine
from selftaught.io import read_records
from selftaught.parsing import RESULT_MARKER, parse_score
from selftaught.stages import grade_pairs
from selftaught.stages.base import OK, StageContext
from selftaught.stages.grade_pairs import NOT_HIGHER, balance_key, balance_thresholds, keep

PAIRS = [{"pair_id": f"p{i}", "instruction": f"What is {i} + {i}?", "chosen": f"{i} + {i} = {2 * i}.",
          "rejected": f"{i} + {i} = {2 * i + 1}.", "category": "Math"} for i in range(6)]


def _s(score):
    return {"score": score}


def test_keep_needs_the_chosen_strictly_higher():
    rng = random.Random(0)
    assert keep([_s(3), _s(3)], [_s(3), _s(4)], rng) is None  # equal or lower: nothing kept
    assert keep([_s(None), _s(2)], [_s(None), _s(2)], rng) is None  # an unparsed score never counts
    assert keep([_s(2), _s(4)], [_s(3), _s(5)], rng) == (1, 0)  # the only couple: 4 > 3
    picks = Counter(keep([_s(5), _s(4)], [_s(1), _s(3)], random.Random(i)) for i in range(200))
    assert set(picks) == {(0, 0), (0, 1), (1, 0), (1, 1)}  # drawn among every valid couple
    assert keep([_s(5)], [_s(1)], rng, usable=lambda s: False) is None  # e.g. degenerate feedback dropped


def test_score_balance_caps_each_score_at_an_even_share():
    keys = {s: [balance_key(0, f"{s}/{i}") for i in range(n)] for s, n in {5: 10, 4: 6, 1: 2}.items()}
    t = balance_thresholds(keys)
    kept = {s: sum(k <= t[str(s)] for k in keys[s]) for s in keys}
    assert kept == {5: 6, 4: 6, 1: 2}  # cap = ceil(18 / 3 scores present) = 6
    assert t["2"] is None and t["3"] is None
    assert all(v is None for v in balance_thresholds({s: [] for s in range(1, 6)}).values())


@pytest.fixture(scope="module")
def engine(tiny_model_path):
    eng = make_engine(EngineConfig(backend="hf", threads=1, hf_batch_size=16), tiny_model_path, max_model_len=1024)
    yield eng
    eng.close()


@pytest.mark.parametrize("constrained", [True, False])
def test_process_grades_both_answers_and_keeps_a_higher_chosen(engine, tiny_model_path, constrained):
    ctx = StageContext(round=1, model_path=tiny_model_path, constrained=constrained, max_model_len=1024, seed=0)
    cfg = JudgeConfig(mode="absolute", n=4, temperature=1.0, top_p=1.0, max_tokens=6)
    rows = grade_pairs.process(PAIRS, engine, ctx, cfg)
    assert [(r["pair_id"], r["side"]) for r in rows] == [(p["pair_id"], s) for p in PAIRS for s in ("chosen", "rejected")]
    for c, r in zip(rows[::2], rows[1::2]):
        assert c["n_samples"] == r["n_samples"] == 4 and c["status"] == r["status"]
        assert c["grade_meta"]["template"].startswith("absolute@") and c["grade_meta"]["sampling"]["n"] == 4
        if c["status"] == OK:
            assert c["kept_score"] > r["kept_score"]
            for row in (c, r):  # the kept grading is one of the samples, and parses to its score
                assert row["kept_grading"] in [s["text"] for s in row["samples"]]
                assert parse_score(row["kept_grading"]).value == row["kept_score"]
        else:  # no couple had chosen > rejected
            assert c["status"] == NOT_HIGHER
            parsed_c = [s["score"] for s in c["samples"] if s["score"] is not None]
            parsed_r = [s["score"] for s in r["samples"] if s["score"] is not None]
            assert not parsed_c or not parsed_r or max(parsed_c) <= min(parsed_r)
    if constrained:  # the score is forced: every grading parses, and ends in the marker and a digit
        assert all(s["score"] is not None and RESULT_MARKER in s["text"] for r in rows for s in r["samples"])
        assert any(r["status"] == OK for r in rows)  # sampled 1-5 at temperature 1: some couple is higher


def test_eval_measures_what_is_trained():
    assert "absolute" not in eval_config(compose([])).modes
    assert eval_config(compose(["judge.mode=both"])).modes == ["constrained", "free", "absolute"]
    assert eval_config(compose(["judge.mode=absolute", "judge.absolute_template=x"])).absolute_template == "x"


@pytest.mark.slow
def test_round_in_both_modes_then_switching_modes_reuses_stages(tmp_path: Path, tiny_model_path: str):
    data = tmp_path / "x.jsonl"
    data.write_text("".join(json.dumps({"id": f"i{i}", "instruction": t}) + "\n" for i, t in enumerate(
        ["What is 15% of 80?", "Write a haiku about the sea.", "Explain why the sky is blue.", "Name three primes."])))

    def cfg(mode: str):
        return compose([f"output_dir={tmp_path}", "name=modes", f"model.path={tiny_model_path}", f"data.path={data}",
                        "generator.path=embedded:smollm2", "engine=hf", "engine.constrained=true", "ray.enabled=false",
                        "judge.n=3", "judge.max_tokens=8", "pairs.max_tokens=24", "pairs.checks.enabled=false", "pairs.modify_max_tokens=32",
                        "pairs.max_instruction_tokens=32", "categorize.max_tokens=24", "eval.enabled=false",
                        "until=sft_data", "shard_size=2", "tracking.mode=disabled", f"judge.mode={mode}"])

    run = Run(cfg("both"))
    run.run()
    s = {x["stage"]: x for x in run.summaries}
    assert list(s)[-3:] == ["judge", "grade_pairs", "sft_data"]
    g, sft = s["grade_pairs"], s["sft_data"]
    assert g["in"] == 2 * s["pairs"]["out"] == g["out"] + g["failed"] and g["gradings"] == 3 * g["in"]
    assert g["out"] == 2 * g["pairs_kept"] and sum(g["kept_scores_before_balance"].values()) == g["out"]
    # sft_data reads the judge's shards, then grade_pairs': every kept verdict and grading, less the balances
    assert sft["in"] == s["judge"]["out"] + g["out"]
    assert sft["pairwise"] == s["judge"]["kept_A"] + s["judge"]["kept_B"] and sft["absolute"] == g["kept_gradings"]
    rows = read_records(run.run_dir / "round_1" / "sft_data" / "data")
    absolute = [r for r in rows if r["kind"] == "absolute"]
    assert len(absolute) == sft["absolute"] > 0
    for r in absolute:
        assert r["messages"][1]["content"].startswith("###Task Description") and r["template"].startswith("absolute@")
        assert parse_score(r["messages"][-1]["content"]).value == r["score"]
    # No score holds more than an even share of the kept gradings (over the scores that occur).
    before = {k: v for k, v in g["kept_scores_before_balance"].items() if v}
    cap = -(-sum(before.values()) // len(before))
    assert all(v <= cap for v in g["kept_scores"].values()) and sum(g["kept_scores"].values()) == sft["absolute"]

    # absolute: the pairs and grade_pairs are reused, judge does not run; pairwise: judge is reused.
    for mode, ran in (("absolute", ["sft_data"]), ("pairwise", ["sft_data"])):
        again = Run(cfg(mode))
        again.run()
        names = [x["stage"] for x in again.summaries]
        assert ("judge" in names) == (mode == "pairwise") and ("grade_pairs" in names) == (mode == "absolute")
        assert [x["stage"] for x in again.summaries if not x["resumed"]] == ran
        kinds = Counter(r["kind"] for r in read_records(again.run_dir / "round_1" / "sft_data" / "data"))
        assert set(kinds) == ({"absolute"} if mode == "absolute" else {"pairwise"})
