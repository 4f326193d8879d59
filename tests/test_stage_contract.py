"""The stage contract: every stage is one ``StageSpec`` in its own module, and the driver runs whatever
``stages.PIPELINE`` declares (a stage added here, in the test file alone, runs, commits, resumes)."""
import json
import typing
from pathlib import Path

import pytest

from selftaught import compose, rows
from selftaught.config import stage_names
from selftaught.driver import Run
from selftaught.prompts import load_template
from selftaught.stages import EVAL, GRADES, PIPELINE, VERDICTS, load
from selftaught.stages.base import OK, StageSpec, Upstream
from selftaught.store import RoundStore


HELD = ["load", "categorize", "holdout", "holdout_neighbors", "holdout_pairs"]


def test_until_names_the_declared_stages():
    assert stage_names() == ["load", "categorize", "holdout", "holdout_neighbors", "holdout_pairs", "select", "neighbors",
                             "pairs", "judge", "grade_pairs", "verify_pairs", "sft_data", "dpo_data", "grpo_data", "train", "eval"]
    with pytest.raises(Exception, match="until: unknown stage 'shout'"):
        compose(["until=shout"])


def test_every_stage_declares_a_row_type_config_and_loadable_templates():
    cfg = compose(["tracking.mode=disabled"])
    for spec in PIPELINE + (EVAL, VERDICTS, GRADES):
        assert spec.row_type is not None and getattr(rows, spec.row_type.__name__) is spec.row_type, spec.name
        assert typing.is_typeddict(spec.row_type), spec.name
        assert (spec.process is None) == (spec.items is not None), f"{spec.name}: process xor items"
        for name in spec.templates(spec.config(cfg, Upstream(1))):
            assert load_template(name).id
    engines = {s.name: s.engine for s in PIPELINE + (EVAL, VERDICTS, GRADES)}
    assert engines == {"load": None, "categorize": "generator", "holdout": None, "holdout_neighbors": None,
                       "holdout_pairs": "generator", "select": None, "neighbors": None, "pairs": "generator",
                       "judge": "judge", "grade_pairs": "judge", "verify_pairs": "judge", "sft_data": None, "dpo_data": None,
                       "grpo_data": None, "eval": "judge", "verdicts": "judge", "grades": "judge"}


def _shout(records: list[dict], engine, ctx, c) -> list[dict]:
    return [{**r, "instruction": r["instruction"].upper(), "status": OK if r["id"] != "b" else "no shouting"}
            for r in records]


SHOUT = StageSpec(name="shout", process=_shout, row_type=rows.Instruction,
                  config=lambda cfg, up: {"upstream_out": up.summary.get("out")},
                  shard_stats=lambda rs, c: {"letters": sum(len(r["instruction"]) for r in rs if r["status"] == OK)},
                  summarize=lambda st, c: {"letters": st.get("letters", 0), **c})


def test_a_stage_declared_once_runs_commits_and_resumes(tmp_path: Path, tiny_model_path: str, monkeypatch):
    data = tmp_path / "x.jsonl"
    data.write_text("".join(json.dumps({"id": i, "instruction": f"say {i}"}) + "\n" for i in "abcde"))
    monkeypatch.setattr("selftaught.driver.PIPELINE", (load.SPEC, SHOUT))
    cfg = compose([f"output_dir={tmp_path}", "name=contract", f"data.path={data}", f"model.path={tiny_model_path}",
                   "engine=hf", "ray.enabled=false", "eval.enabled=false", "until=sft_data", "shard_size=2",
                   "tracking.mode=disabled"])
    Run(cfg).run()
    sd = RoundStore(tmp_path / "contract", 1).stage("shout")  # scope "round" (the default)
    assert [r["instruction"] for r in sd.rows()] == ["SAY A", "SAY C", "SAY D", "SAY E"]
    assert [f["id"] for f in sd.failures()] == ["b"]
    s = sd.summary()
    assert (s["in"], s["out"], s["failed"], s["shards"]) == (5, 4, 1, 3)  # shard_size=2: load's 3 shards, 1:1
    assert s["failures"] == {"no shouting": 1}
    assert s["letters"] == 4 * 5 and s["upstream_out"] == 5  # its summarize, and its config from upstream

    again = Run(cfg)
    again.run()
    assert [x["stage"] for x in again.summaries] == ["load", "shout"]
    assert all(x["resumed"] for x in again.summaries)  # hashes matched: nothing redone

    # A change upstream (the data) redoes both; the stage's own hash chains through load's.
    data.write_text(data.read_text() + json.dumps({"id": "f", "instruction": "say f"}) + "\n")
    third = Run(cfg)
    third.run()
    assert [x["resumed"] for x in third.summaries] == [False, False]
    assert sd.summary()["out"] == 5


@pytest.mark.parametrize("until,expected", [
    ("select", HELD + ["select"]),
    ("sft_data", HELD + ["select", "neighbors", "pairs", "judge", "grade_pairs", "verify_pairs", "sft_data"]),
    ("eval", HELD + ["select", "neighbors", "pairs", "judge", "grade_pairs", "verify_pairs", "sft_data", "dpo_data", "grpo_data",
                     "train", "eval"]),
])
def test_until_cuts_the_declared_pipeline(until, expected):
    from selftaught.driver import _stages_until

    assert _stages_until(until) == expected
