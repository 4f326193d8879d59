"""The judge stage's sampling on a real engine (transformers, tiny random Llama): adaptive waves
stop at the first usable correct judgment and never pass the budget; swap augmentation fills the
other order with an exact mirror; calibration balances a biased judge's verdicts; balance holds."""
from __future__ import annotations

import pytest

from selftaught.config import JudgeConfig
from selftaught.parsing import parse_verdict
from selftaught.stages import judge
from selftaught.stages.base import OK

N_MAX = 2  # small enough that some (pair, order) exhaust it, large enough that others stop early
PAIRS = [{"pair_id": f"p{i}", "instruction": f"What is {i} + {i}?", "chosen": f"{i} + {i} = {2 * i}.",
          "rejected": f"{i} + {i} = {2 * i + 1}.", "category": "Math"} for i in range(8)]


def _cfg(**kw) -> JudgeConfig:
    base = dict(template="judge_verdict_first", format="verdict_first", n=1, temperature=1.0, top_p=1.0,
                max_tokens=4, seed=0)
    return JudgeConfig(**{**base, **kw})


@pytest.mark.parametrize("fmt,template", [("verdict_first", "judge_verdict_first"), ("reasoning_first", "judge")])
def test_adaptive_stops_at_first_correct_within_budget(tiny_engine, tiny_ctx, fmt, template):
    rows = judge.process(PAIRS, tiny_engine, tiny_ctx, _cfg(format=fmt, template=template, n_max=N_MAX))
    assert len(rows) == 16
    for r in rows:
        verdicts = [s["verdict"] for s in r["samples"]]
        assert 1 <= len(verdicts) <= N_MAX and r["waves"] == len(verdicts)  # waves of 1, at most n_max
        if r["gold"] in verdicts:  # stopped at the first correct judgment, which is kept
            assert verdicts.index(r["gold"]) == len(verdicts) - 1 and r["status"] == OK
            assert r["kept_verdict"] == r["gold"] and parse_verdict(r["kept_judgment"], fmt).winner == r["gold"]
        else:  # the budget ran out
            assert len(verdicts) == N_MAX and r["status"] == judge.NO_CORRECT
    stats = judge.sample_stats(rows, 0.5)
    assert stats["samples"] == sum(len(r["samples"]) for r in rows) and stats["waves"] <= N_MAX
    assert any(r["status"] == OK for r in rows) and any(r["status"] == judge.NO_CORRECT for r in rows)
    if fmt == "reasoning_first":  # every wave draws anew (T=1): a repeated request is not the same sample
        for r in rows:
            texts = [s["judgment"] for s in r["samples"]]
            assert len(texts) < 2 or len(set(texts)) > 1, texts
    # A budget that is not a multiple of the wave: the last wave is cut to what is left.
    uneven = judge.process(PAIRS[:4], tiny_engine, tiny_ctx, _cfg(format=fmt, template=template, n=2, n_max=3))
    assert all(len(r["samples"]) in (2, 3) and r["waves"] in (1, 2) for r in uneven)
    # Fixed N (no n_max): exactly N per item, one wave.
    fixed = judge.process(PAIRS[:2], tiny_engine, tiny_ctx, _cfg(format=fmt, template=template, n=3))
    assert all(len(r["samples"]) == 3 and r["waves"] == 1 for r in fixed)


def test_swap_mirrors_the_other_order_and_balances(tiny_engine, tiny_ctx):
    rows = judge.process(PAIRS, tiny_engine, tiny_ctx, _cfg(n=1, n_max=3, swap=True))
    by = {r["example_id"]: r for r in rows}
    mirrors = [r for r in rows if r["kept_source"] == judge.MIRROR]
    assert mirrors  # the tiny judge misses some orders that the other order's mirror fills
    for r in rows:
        other = by[r["mirrored_from"]] if r["kept_source"] == judge.MIRROR else None
        if other is not None:  # the exact mirror: answers swapped, verdict flipped, references swapped
            assert (r["answer_a"], r["answer_b"]) == (other["answer_b"], other["answer_a"])
            assert r["kept_verdict"] == r["gold"] != other["kept_verdict"]
            assert parse_verdict(r["kept_judgment"], "verdict_first").winner == r["gold"]
            assert r["kept_judgment"].split("\n")[0] != other["kept_judgment"].split("\n")[0]
    # With swap a pair is done as soon as either order has a correct judgment that mirrors exactly.
    for pid in {r["pair_id"] for r in rows}:
        ab, ba = by[f"{pid}/AB"], by[f"{pid}/BA"]
        if ab["status"] == OK or ba["status"] == OK:
            assert ab["status"] == ba["status"] == OK or ab.get("mirror_failed") or ba.get("mirror_failed")
    balanced = judge.balance(rows, seed=0)
    kept = [r for r in balanced if r["status"] == OK]
    stats = judge.kept_stats(kept)
    assert stats["kept_A"] == stats["kept_B"] > 0 and stats["kept_mirror"] + stats["kept_sampled"] == len(kept)


def test_calibration_uses_the_pair_offset(tiny_engine, tiny_ctx):
    """Greedy + calibrate: in each pair the two orders' margins minus their mean have opposite
    signs, so the calibrated judge picks the same answer in both orders (one A, one B)."""
    rows = judge.process(PAIRS, tiny_engine, tiny_ctx, _cfg(n=1, temperature=0.0, calibrate=True))
    by = {r["example_id"]: r for r in rows}
    for p in PAIRS:
        ab, ba = by[f"{p['pair_id']}/AB"]["samples"][0], by[f"{p['pair_id']}/BA"]["samples"][0]
        assert ab["margin"] is not None and ba["margin"] is not None
        if ab["margin"] != ba["margin"]:
            assert {ab["verdict"], ba["verdict"]} == {"A", "B"}


def test_deterministic_mode_redoes_a_shard_with_the_same_draws(tiny_engine, tiny_ctx, tmp_path):
    """What resume after a kill relies on: a shard processed again (on an engine that has generated
    other things since, as a fresh process's engine differs from the first one's) gives the same rows
    in deterministic mode, and new draws without it."""
    from dataclasses import replace

    from selftaught.io import write_records
    from selftaught.shards import process_shard
    from selftaught.store import StageDir

    src = tmp_path / "in" / "part-00000.parquet"
    write_records(src, PAIRS[:4])
    cfg = _cfg(format="reasoning_first", template="judge", n=2, max_tokens=8)

    def judged(c, name):
        sd = StageDir(tmp_path / name)
        sd.open("h", 4)
        sd.commit(process_shard(judge.SPEC, str(sd.root), 0, str(src), tiny_engine, c, cfg, batch_size=4))
        tiny_engine.generate([])  # the engine moves on, as it would for the next shard
        return [(r["example_id"], [s["judgment"] for s in r["samples"]]) for r in sd.rows() + sd.failures()]

    det = replace(tiny_ctx, deterministic=True)
    first = judged(det, "a")
    assert len(first) == 8 and all(len(texts) == 2 for _, texts in first)
    assert judged(det, "b") == first
    assert judged(tiny_ctx, "c") != judged(tiny_ctx, "d")


def test_verdicts_are_drawn_from_one_prefills_log_probabilities():
    """judge.draw: the engine's one-token choice at the judging temperature and top_p, from the option log-probs
    one prefill returns (engines would prefill the prompt once per sample)."""
    import math
    import random

    lp = {"A": math.log(0.7), "B": math.log(0.3)}
    assert judge.draw(lp, 5, 0.0, 1.0, random.Random(0)) == ["A"] * 5  # greedy
    many = judge.draw(lp, 20000, 1.0, 1.0, random.Random(0))
    assert abs(many.count("A") / 20000 - 0.7) < 0.015
    hot = judge.draw(lp, 20000, 2.0, 1.0, random.Random(0))  # T=2: p(A) = sqrt(.7) / (sqrt(.7) + sqrt(.3))
    assert abs(hot.count("A") / 20000 - math.sqrt(0.7) / (math.sqrt(0.7) + math.sqrt(0.3))) < 0.015
    assert set(judge.draw(lp, 200, 1.0, 0.6, random.Random(0))) == {"A"}  # the nucleus holds A alone
    assert set(judge.draw(lp, 200, 1.0, 0.9, random.Random(0))) == {"A", "B"}
    assert judge.draw(lp, 50, 1.0, 1.0, random.Random("s:x")) == judge.draw(lp, 50, 1.0, 1.0, random.Random("s:x"))
