"""Absolute grading: the strict score parser (adversarial), rubrics, the reader, correlations, and
``selftaught judge judge_file.mode=absolute`` on a real engine (the tiny random model)."""
import json

import numpy as np
import pytest

from selftaught import compose, judge
from selftaught.io import iter_graded_responses, read_jsonl, rubric_text
from selftaught.parsing import parse_score
from selftaught.stages.grades import DEFAULT_RUBRIC, correlations
from selftaught.stats import correlation_interval, pearson, ranks, spearman


@pytest.mark.parametrize("text,score,error", [
    ("Feedback: The answer is right. [RESULT] 4", 4, None),
    ("The answer is right.\n[RESULT] 5", 5, None),
    ("Good. [RESULT]: 3.", 3, None),
    ("Good. [RESULT] (2)", 2, None),
    ("[RESULT] 1", 1, None),  # a score without feedback still is one
    ("No score here. Score: 4", None, "no score"),
    ("Good. [RESULT] 6", None, "score 6 not an integer from 1 to 5"),
    ("Good. [RESULT] 0", None, "score 0 not an integer from 1 to 5"),
    ("Good. [RESULT] 3.5", None, "score 3.5 not an integer from 1 to 5"),
    ("Good. [RESULT] 04", None, "score 04 not an integer from 1 to 5"),
    ("Good. [RESULT] 4/5", None, "score not at the end"),
    ("[RESULT] 4 because it is right", None, "score not at the end"),
    ("Good. [RESULT] four", None, "invalid score"),
    # the format line echoed from the prompt, then a score: two markers, no score
    ('"(a feedback) [RESULT] (an integer between 1 and 5)" Good. [RESULT] 5', None, "multiple scores"),
    ("Good. [RESULT] 2 [RESULT] 5", None, "multiple scores"),
    ("Good. [result] 2", None, "invalid score"),
])
def test_score_parser_never_invents_a_score(text, score, error):
    s = parse_score(text)
    assert (s.value, s.error) == (score, error)
    if score is not None:
        assert "[RESULT]" not in s.feedback and not s.feedback.lower().startswith("feedback:")


def test_rubrics_string_object_feedback_collection_and_default():
    assert rubric_text({"rubric": " Is it kind? "}, "rubric") == ("Is it kind?", None)
    obj = {"criteria": "Is it correct?", **{f"score{i}_description": f"d{i}" for i in range(1, 6)}}
    assert rubric_text({"rubric": obj}, "rubric")[0] == "[Is it correct?]\n" + "\n".join(f"Score {i}: d{i}" for i in range(1, 6))
    fc = {"orig_criteria": "[Is it correct?]", **{f"orig_score{i}_description": f"d{i}" for i in range(1, 6)}}
    assert rubric_text(fc, "rubric")[0].startswith("[Is it correct?]\nScore 1: d1")
    assert rubric_text({}, "rubric") == (None, None)  # the shipped general rubric applies
    for bad in ({"criteria": "x", "score1_description": "only one"}, 7):
        text, err = rubric_text({"rubric": bad}, "rubric")
        assert text is None and err.startswith("field 'rubric': a rubric is a string or")
    assert DEFAULT_RUBRIC.startswith("[") and "Score 5:" in DEFAULT_RUBRIC


def test_reader_maps_fields_and_reports_bad_rows(tmp_path):
    p = tmp_path / "r.jsonl"
    rows = [{"id": "a", "instruction": "q", "response": "r", "orig_score": "4"},
            {"id": "b", "instruction": "q", "response": "r", "orig_score": 7},
            {"id": "c", "instruction": "q"},
            {"id": "d", "instruction": "q", "response": "r"}]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = compose([f"judge_file.path={p}", "judge_file.mode=absolute", "judge_file.score_field=orig_score"]).judge_file
    items = list(iter_graded_responses(cfg))
    ok = [x for x in items if isinstance(x, dict)]
    assert [(r["id"], r["human_score"]) for r in ok] == [("a", 4.0), ("d", None)]
    assert {x.line: x.reason for x in items if not isinstance(x, dict)} == {
        2: "field 'orig_score' must be a score from 1 to 5, got 7", 3: "missing field 'response'"}


def test_correlations_match_numpy_and_carry_intervals():
    xs, ys = [1, 2, 3, 4, 5, 2, 3, 4], [1, 2, 2, 5, 4, 1, 3, 5]
    assert pearson(xs, ys) == pytest.approx(np.corrcoef(xs, ys)[0, 1])
    assert spearman(xs, ys) == pytest.approx(np.corrcoef(ranks(xs), ranks(ys))[0, 1])
    assert ranks([3, 1, 3, 2]) == [3.5, 1.0, 3.5, 2.0]
    assert pearson([1, 1, 1], [1, 2, 3]) is None  # a constant side: undefined, not 0
    c = correlations([{"score": x, "expected_score": x + 0.1, "human_score": y} for x, y in zip(xs, ys)])
    assert c["n_score"] == 8 and c["pearson_lo"] <= c["pearson"] <= c["pearson_hi"]
    assert c["spearman_lo"] <= c["spearman"] <= c["spearman_hi"] and "pearson_expected" in c
    assert correlations([{"score": None, "expected_score": None, "human_score": 3}]) == {}
    # Fisher z: r = 0.5 at n = 28 -> se 0.2, atanh(0.5) = 0.5493 -> tanh(0.5493 -+ 0.392) = [0.156, 0.736]
    lo, hi = correlation_interval(0.5, 28)
    assert (round(lo, 3), round(hi, 3)) == (0.156, 0.736)
    assert correlation_interval(0.5, 3) is None  # 3 items: no interval rather than a meaningless one
    wide = correlation_interval(0.5, 28, rank=True)
    assert wide[0] < lo and wide[1] > hi


def test_absolute_mode_on_a_real_engine(tmp_path, tiny_model_path):
    rows = [{"id": f"r{i}", "instruction": f"What is {i}+{i}?", "response": f"It is {2 * i + (i % 2)}.", "score": 1 + i % 5}
            for i in range(6)] + [{"id": "bad", "instruction": "q"}]
    (tmp_path / "resp.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = [f"output_dir={tmp_path}", f"model.path={tiny_model_path}", "engine=hf", "ray.enabled=false",
              "tracking.mode=disabled", "eval.max_tokens=8", "shard_size=4", "judge_file.mode=absolute",
              f"judge_file.path={tmp_path / 'resp.jsonl'}"]
    s = judge(compose(common + ["name=con", "judge_file.constrained=true"]))
    out = read_jsonl(tmp_path / "con" / "judged" / "resp" / "grades.jsonl")
    assert (s["in"], s["out"], s["rejected_lines"], s["shards"]) == (6, 6, 1, 2)
    assert s["parse_rate"] == 1.0 and sum(s["scores"].values()) == 6  # constrained: a score always parses
    for r in out:
        assert r["score"] in (1, 2, 3, 4, 5) and 1 <= r["expected_score"] <= 5 and r["grading"].endswith(f"[RESULT] {r['score']}")
        assert r["grade_meta"]["stage"] == "grades" and r["grade_meta"]["completion_tokens"] >= 1
    assert s["correlation"]["n_score"] == 6 and "spearman" in s["correlation"]
    again = judge(compose(common + ["name=con", "judge_file.constrained=true"]))
    assert again["resumed"]

    # Free decoding: a random model writes no "[RESULT] n"; every such grading is unscored, never guessed.
    s = judge(compose(common + ["name=free", "judge_file.constrained=false"]))
    free = read_jsonl(tmp_path / "free" / "judged" / "resp" / "grades.jsonl")
    for r in free:
        assert (r["score"] is None) == (r["score_error"] is not None)
        assert r["score"] is None or parse_score(r["grading"]).value == r["score"]
    assert s["parse_rate"] == sum(r["score"] is not None for r in free) / 6
