"""Eval metrics (both orders, consistency, parse failures never a win, majority vote) and the eval
set loader on the real shared LLMBar files and the shipped demo set."""
from pathlib import Path

import pytest

from selftaught.config import ConfigError, EvalConfig, EvalSetConfig
from selftaught.eval_data import load_eval_sets
from selftaught.stages.evaluate import _majority, flat, format_metrics, metrics

LLMBAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval" / "llmbar"


def _row(pid, order, verdict, subset="s1", votes=None):
    gold = "A" if order == "AB" else "B"
    maj = _majority(votes) if votes is not None else None
    return {"eval_id": pid, "set": "gold", "subset": subset, "order": order, "gold": gold, "status": "ok",
            "verdict": verdict, "correct": verdict == gold, "votes": votes, "majority": maj,
            "majority_correct": (maj == gold) if votes is not None else None}


def test_metrics_orders_consistency_and_parse_failures():
    rows = [
        _row("p1", "AB", "A"), _row("p1", "BA", "B"),  # right both ways: consistent
        _row("p2", "AB", "A"), _row("p2", "BA", "A"),  # always "A": position-biased, inconsistent
        _row("p3", "AB", None), _row("p3", "BA", "B"),  # a parse failure is wrong, not a win
        _row("p4", "AB", "B", subset="s2"), _row("p4", "BA", "A", subset="s2"),  # wrong both ways: consistent
        {**_row("p5", "AB", None), "status": "prompt too long for model context", "correct": None},
        {**_row("p5", "BA", None), "status": "prompt too long for model context", "correct": None},
    ]
    m = metrics(rows)["constrained"]
    g = m["gold"]
    assert g["pairs"] == 4 and g["skipped_too_long"] == 1
    assert g["acc_AB"] == 0.5 and g["acc_BA"] == 0.5 and g["accuracy"] == 0.5
    assert g["consistency"] == 0.5  # p1, p4 consistent; p2 inconsistent; p3 unparsed
    assert g["both_orders_correct"] == 0.25
    assert g["parse_failure_rate"] == 0.125
    assert g["verdict_A_rate"] == round(4 / 7, 4)
    assert m["gold/s2"]["accuracy"] == 0.0 and m["gold/s1"]["pairs"] == 3
    # 95% intervals: Wilson over pairs (consistency: 2 of 4) and orders; bootstrap over pairs for rates.
    assert (g["consistency_lo"], g["consistency_hi"]) == (0.1500, 0.8500)
    assert (g["acc_AB_lo"], g["acc_AB_hi"]) == (0.1500, 0.8500)
    assert g["accuracy_lo"] < 0.5 < g["accuracy_hi"] and 0 <= g["accuracy_lo"] and g["accuracy_hi"] <= 1
    assert flat(metrics(rows))["eval/constrained/gold/accuracy"] == 0.5
    assert "gold/s2" in format_metrics(metrics(rows)) and "0.500 [0.15,0.85]" in format_metrics(metrics(rows))


def test_calibrated_accuracy_removes_position_bias():
    """Always "A" (accuracy 0.5), but the log-odds still rank the better answer: calibration reads it."""
    rows = []
    for pid, (m_ab, m_ba) in {"p1": (2.0, 1.0), "p2": (1.5, 0.5), "p3": (0.8, 1.2)}.items():
        rows += [{**_row(pid, "AB", "A"), "margin": m_ab}, {**_row(pid, "BA", "A"), "margin": m_ba}]
    g = metrics(rows)["constrained"]["gold"]
    assert g["accuracy"] == 0.5 and g["verdict_A_rate"] == 1.0
    assert g["calibrated_accuracy"] == round(2 / 3, 4)  # p1, p2: chosen favoured beyond the bias; p3 not
    free = metrics([{**r, "mode": "free", "margin": None} for r in rows])["free"]["gold"]
    assert "calibrated_accuracy" not in free  # free decoding has no verdict log-odds


def test_majority_vote_ties_and_no_votes_lose():
    assert _majority(["A", "A", "B"]) == "A"
    assert _majority(["A", "B"]) is None and _majority([None, None]) is None
    rows = [_row("p1", "AB", "B", votes=["A", "A", "B"]), _row("p1", "BA", "A", votes=["A", "B"])]
    g = metrics(rows)["constrained"]["gold"]
    assert g["accuracy"] == 0.0 and g["majority_accuracy"] == 0.5


def test_demo_eval_set_ships_and_loads():
    pairs, failures = load_eval_sets(EvalConfig())
    assert len(pairs) == 48 and not failures
    assert {p["subset"] for p in pairs} == {"factual", "math", "instruction-following", "adversarial"}
    assert len({p["eval_id"] for p in pairs}) == 48


@pytest.mark.skipif(not LLMBAR.is_dir(), reason="shared LLMBar files not present")
def test_llmbar_folder_is_one_set_with_a_subset_per_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a", "rejected": "b", "subset": "x"}\n{"prompt": "p"}\nnot json\n')
    cfg = EvalConfig(sets=[EvalSetConfig(path=str(LLMBAR), name="llmbar"), EvalSetConfig(path=str(bad), name="mine")])
    pairs, failures = load_eval_sets(cfg)
    llmbar = [p for p in pairs if p["set"] == "llmbar"]
    assert len(llmbar) == 100 + 134 + 92 + 47 + 46
    assert {p["subset"] for p in llmbar} == {"Natural", "Adversarial_Neighbor", "Adversarial_GPTInst",
                                             "Adversarial_GPTOut", "Adversarial_Manual"}
    # Malformed rows: reported with file and line, counted, the rest kept.
    assert [p["subset"] for p in pairs if p["set"] == "mine"] == ["x"]
    assert sorted(f["source"].rsplit(":", 1)[1] for f in failures) == ["2", "3"]


def test_cli_eval_alone_with_majority_vote(tmp_path, tiny_model_path):
    """``selftaught eval``: the eval stage alone on a real (tiny, random) model, in-process engine."""
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "selftaught.cli", "eval", f"model.path={tiny_model_path}", f"output_dir={tmp_path}",
         "name=ev", "engine=hf", "engine.constrained=true", "engine.threads=1", "ray.enabled=false",
         "eval.limit=3", "eval.max_tokens=4", "eval.majority_k=3"],
        capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((tmp_path / "ev" / "standalone" / "eval" / "summary.json").read_text())
    m = summary["metrics"]["constrained"]["demo_eval"]
    # 3 pairs x 2 orders x 2 modes (constrained, free)
    assert summary["model"] == tiny_model_path and summary["in"] == 12 and summary["out"] == 12
    assert m["pairs"] == 3 and m["parse_failure_rate"] == 0.0  # constrained: every verdict parses
    assert 0 <= m["majority_accuracy"] <= 1 and m["acc_AB"] is not None and "calibrated_accuracy" in m
    assert summary["metrics"]["free"]["demo_eval"]["pairs"] == 3
    assert "demo_eval" in out.stdout and "majority_accuracy" in out.stdout


def _rb2_rows(tmp_path, **eval_kw):
    import json

    items = [
        {"id": "f1", "prompt": "Who wrote Hamlet?", "chosen": ["Shakespeare."], "rejected": ["Marlowe.", "Dickens.", "Austen."],
         "subset": "Factuality"},
        {"id": "m1", "prompt": "2+2?", "chosen": ["4"], "rejected": ["5", "3", "22"], "subset": "Math"},
        {"id": "tied:1", "prompt": "Name a prime.", "chosen": ["2", "3"], "rejected": ["4", "6"], "subset": "Ties"},
        {"id": "ref:1", "prompt": "Name a prime.", "chosen": ["2"], "rejected": ["4", "6"], "subset": "Ties"},
        {"id": "s1", "prompt": "p", "chosen": ["same"], "rejected": ["same", "x", "y"], "subset": "Safety"},
    ]
    f = tmp_path / "rb2.jsonl"
    f.write_text("\n".join(json.dumps(i) for i in items))
    pairs, rejects = load_eval_sets(EvalConfig(sets=[EvalSetConfig(path=str(f), name="rb2")], **eval_kw))
    return pairs, rejects


def test_rewardbench2_items_become_round_robins(tmp_path):
    pairs, rejects = _rb2_rows(tmp_path)
    assert [r["reason"] for r in rejects] == ["the two responses are identical"]
    rated = [p for p in pairs if "ties_group" in p]  # Ties: each candidate rated alone, no pairs
    assert [(p["response"], p["correct"]) for p in rated] == [("2", True), ("3", True), ("4", False), ("6", False),
                                                              ("2", True), ("4", False), ("6", False)]
    pairs = [p for p in pairs if "ties_group" not in p]
    assert len(pairs) == 2 * 6  # two items, every pair of 4 candidates
    f1 = [p for p in pairs if p["group"] == "rb2/rb2/f1"]
    assert [(p["cand_a"], p["cand_b"]) for p in f1] == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert [p["scored"] for p in f1] == [True] * 3 + [False] * 3
    assert f1[0]["chosen"] == "Shakespeare." and f1[0]["rejected"] == "Marlowe." and f1[0]["subset"] == "Factuality"
    assert len({p["eval_id"] for p in pairs}) == 12


def _votes(pairs, group, picks, set_="rb2"):
    """Rows where each (cand_a, cand_b) pair is decided by ``picks[(a, b)]`` (the preferred candidate) in
    both orders, or None (unparsed)."""
    rows = []
    for p in pairs:
        if p["group"] != group:
            continue
        want = picks[(p["cand_a"], p["cand_b"])]
        for order in ("AB", "BA"):
            first = p["cand_a"] if order == "AB" else p["cand_b"]
            verdict = None if want is None else ("A" if want == first else "B")
            gold = "A" if order == "AB" else "B"
            rows.append({**p, "set": set_, "order": order, "gold": gold, "status": "ok", "verdict": verdict,
                         "correct": verdict == gold, "votes": None, "majority": None, "majority_correct": None})
    return rows


def test_best_of_n_accuracy_counts_votes_and_splits_ties(tmp_path):
    pairs, _ = _rb2_rows(tmp_path)
    pairs = [p for p in pairs if "ties_group" not in p]
    # f1: the correct candidate wins all its pairs: 6 votes, picked -> credit 1.
    f1 = _votes(pairs, "rb2/rb2/f1", {(0, 1): 0, (0, 2): 0, (0, 3): 0, (1, 2): 1, (1, 3): 1, (2, 3): 2})
    # m1: 0 beats 1 and 2, loses to 3; 2 beats 1 and 3; 3 beats 1. Votes (2 per pair won): 0, 2 and 3
    # have 4, 1 has 0: a three-way tie at the top that includes the correct one -> credit 1/3.
    picks = {(0, 1): 0, (0, 2): 0, (0, 3): 3, (1, 2): 2, (1, 3): 3, (2, 3): 2}
    m1 = _votes(pairs, "rb2/rb2/m1", picks)
    g = metrics(f1 + m1)["constrained"]
    whole = g["rb2"]
    assert whole["best_of_n_items"] == 2 and whole["best_of_n_chance"] == 0.25
    assert whole["best_of_n_accuracy"] == round((1 + 1 / 3) / 2, 4)
    assert g["rb2/Factuality"]["best_of_n_accuracy"] == 1.0 and g["rb2/Math"]["best_of_n_accuracy"] == round(1 / 3, 4)
    # The pairwise metrics see only the pairs with a gold answer (the correct candidate's three).
    assert whole["pairs"] == 6 and whole["accuracy"] == round(5 / 6, 4)
    # A judge that always says "A" votes for whoever is shown first: every candidate gets 3 votes; 1/4 credit.
    biased = [{**r, "verdict": "A", "correct": r["gold"] == "A"} for r in f1]
    assert metrics(biased)["constrained"]["rb2"]["best_of_n_accuracy"] == 0.25
    # An item with a prompt too long is not scored.
    too_long = [{**r, "status": "prompt too long for model context", "verdict": None} if i == 0 else r
                for i, r in enumerate(f1)]
    m = metrics(too_long + m1)["constrained"]["rb2"]
    assert m["best_of_n_items"] == 1 and m["best_of_n_skipped_too_long"] == 1


def test_four_way_items_put_the_correct_answer_where_their_id_says(tmp_path):
    """eval.four_way: one more input per best-of-4 item (none for Ties), its four answers in one prompt, the correct
    one swapped with the answer at a position drawn from the item's id, the same on every load."""
    plain, _ = _rb2_rows(tmp_path)
    pairs, _ = _rb2_rows(tmp_path, four_way=True)
    four = [p for p in pairs if p.get("four_way")]
    assert len(pairs) == len(plain) + 2 and [p["eval_id"] for p in four] == ["rb2/rb2/f1/4way", "rb2/rb2/m1/4way"]
    for p, cands in zip(four, (["Shakespeare.", "Marlowe.", "Dickens.", "Austen."], ["4", "5", "3", "22"])):
        pos = "ABCD".index(p["gold"])
        assert p["four_way"][pos] == cands[0] and sorted(p["four_way"]) == sorted(cands)
        assert p["four_way"][0] == cands[pos] and p["group"] == p["eval_id"][: -len("/4way")]
    assert [p["gold"] for p in four] == [p["gold"] for p in _rb2_rows(tmp_path, four_way=True)[0] if p.get("four_way")]


def test_four_way_accuracy_scores_as_the_leaderboard():
    """Right letter 1, another letter 0, no verdict 0.25; the round robin's metrics never see these rows."""
    def row(i, verdict, gold="C", subset="Math"):
        return {"eval_id": f"rb2/x/{i}/4way", "set": "rb2", "subset": subset, "order": "ABCD", "gold": gold,
                "status": "ok", "verdict": verdict, "correct": verdict == gold, "group": f"rb2/x/{i}", "n_candidates": 4}

    rows = [row(0, "C"), row(1, "A"), row(2, None), row(3, "D", gold="D", subset="Factuality"),
            {**row(4, None), "status": "prompt too long for model context"}]
    m = metrics(rows)["constrained"]
    assert m["rb2"]["four_way_items"] == 4 and m["rb2"]["four_way_skipped_too_long"] == 1
    assert m["rb2"]["four_way_accuracy"] == round((1 + 0 + 0.25 + 1) / 4, 4)
    assert m["rb2"]["four_way_accuracy_lo"] <= m["rb2"]["four_way_accuracy"] <= m["rb2"]["four_way_accuracy_hi"]
    assert m["rb2"]["four_way_parse_failure_rate"] == 0.25 and m["rb2"]["four_way_A_rate"] == round(1 / 3, 4)
    assert m["rb2/Math"]["four_way_accuracy"] == round(1.25 / 3, 4) and m["rb2/Factuality"]["four_way_accuracy"] == 1.0
    assert m["rb2"]["pairs"] == 0 and "best_of_n_accuracy" not in m["rb2"]
    with pytest.raises(ConfigError, match="eval.four_way"):
        EvalConfig(four_way=True, modes=["verify"])


def test_rewardbench2_through_the_eval_stage_on_a_real_engine(tmp_path, tiny_model_path):
    """The round robin survives the stage's shards (its fields are in the row type's schema) and the
    summary reports best-of-n per subset, with the identical answers counted apart; the Ties items are
    graded one candidate at a time and scored by ratings."""
    from selftaught import compose, evaluate

    _rb2_rows(tmp_path)
    cfg = compose([f"model.path={tiny_model_path}", f"output_dir={tmp_path}", "name=rb2", "engine=hf",
                   "engine.constrained=true", "ray.enabled=false", "eval.max_tokens=4", "eval.modes=[constrained]",
                   "shard_size=5", f"eval.sets=[{{path: {tmp_path / 'rb2.jsonl'}, name: rb2}}]", "tracking.mode=disabled",
                   "eval.four_way=true"])
    s = evaluate(cfg)
    m = s["metrics"]["constrained"]
    # 12 pairs x 2 orders; 7 candidates rated; 2 best-of-4 items judged in one prompt each
    assert s["in"] == 24 + 7 + 2 and s["out"] == 24 + 7 + 2 and s["shards"] == 5  # 21 inputs, 5 a shard
    assert m["rb2"]["four_way_items"] == 2 and m["rb2"]["four_way_parse_failure_rate"] == 0.0  # forced: it parses
    assert m["rb2"]["four_way_accuracy"] in (0.0, 0.5, 1.0) and m["rb2/Math"]["four_way_items"] == 1
    from selftaught.io import read_records

    four = [r for f in sorted((tmp_path / "rb2" / "standalone" / "eval" / "data").glob("*.parquet"))
            for r in read_records(str(f)) if r["order"] == "ABCD"]
    assert len(four) == 2 and all(r["verdict"] in "ABCD" and len(r["answers_cd"]) == 2 for r in four)
    assert all(r["eval_meta"]["template"].startswith("judge_4way@") for r in four)  # the recipe's format: reasoning first
    assert m["rb2"]["best_of_n_items"] == 2 and m["rb2"]["best_of_n_chance"] == 0.25
    assert m["rb2/Math"]["best_of_n_items"] == 1 and m["rb2"]["pairs"] == 6
    assert 0 <= m["rb2"]["best_of_n_accuracy"] <= 1 and "best_of_n_accuracy_lo" in m["rb2"]
    assert s["rejected_by_reason"] == {"the two responses are identical": 1}
    ties_ = s["metrics"]["absolute"]["rb2"]  # graded whatever eval.modes says (Ties: its only subset there)
    assert ties_["graded"] == 7 and ties_["ties_items"] == 2 and 0 <= ties_["ties_score"] <= 1


def test_a_set_that_cannot_be_found_names_both_ways_and_the_sources(tmp_path, monkeypatch):
    from selftaught.eval_data import eval_files

    monkeypatch.setenv("SELFTAUGHT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no hub here either way; offline mode fails at once
    with pytest.raises(FileNotFoundError, match=r"eval.sets.0.path: .*/nope.jsonl does not exist; give a local file or "
                                                r"folder, or a hub dataset id .*allenai/reward-bench-2 \(split test\)"):
        eval_files(EvalSetConfig(path=str(tmp_path / "nope.jsonl")))
    with pytest.raises(FileNotFoundError, match=r"eval.sets.0.path: allenai/reward-bench-2 is not a local file or folder, "
                                                r"and the hub dataset could not be loaded .*lmsys/mt_bench_human_judgments"):
        eval_files(EvalSetConfig(path="allenai/reward-bench-2"))


def test_a_hub_set_is_cached_once_as_parquet_and_read_like_a_file(tmp_path, monkeypatch):
    """The hub's side is replaced by a local DatasetDict (no hub here): what is tested is our use of it,
    the split choice, the parquet cache and reading it in the detected format."""
    import datasets

    from selftaught.eval_data import eval_files

    monkeypatch.setenv("SELFTAUGHT_CACHE", str(tmp_path / "cache"))
    calls = []
    rb2 = {"id": ["f1"], "prompt": ["Who wrote Hamlet?"], "chosen": [["Shakespeare."]],
           "rejected": [["Marlowe.", "Dickens.", "Austen."]], "subset": ["Factuality"]}

    def load_dataset(path, *a, **kw):
        calls.append(path)
        return datasets.DatasetDict({"test": datasets.Dataset.from_dict(rb2)})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    s = EvalSetConfig(path="allenai/reward-bench-2", name="rb2")
    (f,) = eval_files(s)
    assert f.endswith("allenai__reward-bench-2__default.parquet") and calls == ["allenai/reward-bench-2"]
    assert eval_files(s) == [f] and calls == ["allenai/reward-bench-2"]  # the cache, not the hub, the second time
    pairs, rejects = load_eval_sets(EvalConfig(sets=[s]))
    assert len(pairs) == 6 and rejects == [] and pairs[0]["subset"] == "Factuality"
    with pytest.raises(FileNotFoundError, match=r"split 'dev' not in \['test'\]; set eval.sets.0.split"):
        eval_files(EvalSetConfig(path="allenai/reward-bench-2", split="dev"))


def test_absolute_mode_grades_each_answer_alone(tmp_path, tiny_model_path):
    """eval.modes with "absolute": one row per pair, both answers graded 1-5 on the real (tiny) engine;
    score_accuracy counts a pair right only when the better answer scores strictly higher."""
    from selftaught import compose, evaluate
    from selftaught.io import read_records

    cfg = compose([f"model.path={tiny_model_path}", f"output_dir={tmp_path}", "name=abs", "engine=hf",
                   "engine.constrained=true", "ray.enabled=false", "eval.max_tokens=4", "eval.limit=4",
                   "eval.modes=[constrained,absolute]", "tracking.mode=disabled"])
    s = evaluate(cfg)
    assert s["in"] == 4 * (2 + 1) and s["out"] == 12
    a = s["metrics"]["absolute"]["demo_eval"]
    rows = [r for r in read_records(tmp_path / "abs" / "standalone" / "eval" / "data") if r["mode"] == "absolute"]
    assert len(rows) == 4 and a["pairs"] == 4 and a["parse_failure_rate"] == 0.0  # constrained: scores always parse
    for r in rows:
        assert r["score_chosen"] in range(1, 6) and r["score_rejected"] in range(1, 6)
        assert r["correct"] == (r["score_chosen"] > r["score_rejected"])
    assert a["score_accuracy"] == sum(r["correct"] for r in rows) / 4
    assert a["score_tie_rate"] == sum(r["score_chosen"] == r["score_rejected"] for r in rows) / 4
    assert "expected_score_accuracy" in a and "score_accuracy_lo" in a
    assert s["metrics"]["constrained"]["demo_eval"]["pairs"] == 4  # the pairwise modes are unchanged


def test_absolute_mode_accounts_for_best_of_n_pairs_without_gold(tmp_path, tiny_model_path):
    """Absolute mode grades only the pairs with the correct candidate; the others are failures by
    reason, so out + failed = in for the stage."""
    from selftaught import compose, evaluate
    from selftaught.stages.evaluate import NO_GOLD

    _rb2_rows(tmp_path)
    cfg = compose([f"model.path={tiny_model_path}", f"output_dir={tmp_path}", "name=rb2abs", "engine=hf",
                   "engine.constrained=true", "ray.enabled=false", "eval.max_tokens=4", "eval.modes=[absolute]",
                   f"eval.sets=[{{path: {tmp_path / 'rb2.jsonl'}, name: rb2}}]", "tracking.mode=disabled"])
    s = evaluate(cfg)
    assert s["in"] == 12 + 7 and s["out"] + s["failed"] == 12 + 7  # 12 round-robin pairs, 7 Ties candidates rated
    assert s["failures"] == {NO_GOLD: 6} and s["metrics"]["absolute"]["rb2"]["pairs"] == 6
    assert s["metrics"]["absolute"]["rb2/Ties"]["graded"] == 7 and "pairs" not in s["metrics"]["absolute"]["rb2/Ties"]


def _graded_file(tmp_path):
    import json

    rows = [
        {"instruction": "What is 2+2?", "response": "4", "score": 5},
        {"instruction": "What is 2+2?", "response": "5", "score": 1},
        {"instruction": "Name a primary color.", "response": "Red.", "human_score": 5, "rubric": "Is it a primary color?"},
        {"instruction": "x", "response": "y", "score": 7},  # line 4: out of range
        {"orig_instruction": "Translate 'chat' from French.", "orig_response": "cat", "orig_score": 4,
         "orig_criteria": "Is the translation right?", "orig_reference_answer": "cat",
         **{f"orig_score{i}_description": f"level {i}" for i in range(1, 6)}},
        {"instruction": "Say hi.", "response": "Hello!", "score": "3"},
    ]
    f = tmp_path / "feedback.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    return f


def test_responses_with_human_scores_are_read_with_their_rubrics(tmp_path):
    f = _graded_file(tmp_path)
    rows, rejects = load_eval_sets(EvalConfig(sets=[EvalSetConfig(path=str(f), name="fb")]))
    assert [(r["response"], r["human_score"]) for r in rows] == [("4", 5.0), ("5", 1.0), ("Red.", 5.0), ("cat", 4.0),
                                                                 ("Hello!", 3.0)]
    assert rows[2]["rubric"] == "Is it a primary color?" and rows[0]["rubric"] is None  # None: the shipped rubric
    assert rows[3]["rubric"].splitlines() == ["[Is the translation right?]"] + [f"Score {i}: level {i}" for i in range(1, 6)]
    assert rows[3]["reference"] == "cat"
    assert [(r["source"].rsplit(":", 1)[1], r["reason"]) for r in rejects] == [
        ("4", "field 'score' must be a score from 1 to 5, got 7")]


def test_human_score_correlations_in_the_metrics():
    rows = [{"eval_id": f"fb/{i}", "set": "fb", "subset": "fb", "order": "graded", "mode": "absolute", "status": "ok",
             "score": s, "human_score": h, "expected_score": None}
            for i, (s, h) in enumerate([(1, 1), (2, 2), (3, 3), (4, 5), (5, 4), (None, 2)])]
    m = metrics(rows)["absolute"]["fb"]
    assert m["graded"] == 6 and m["graded_parse_failure_rate"] == round(1 / 6, 4) and "pairs" not in m
    assert m["n_score"] == 5 and m["pearson"] == 0.9 and m["spearman"] == 0.9  # unparsed: left out
    assert m["pearson_lo"] < 0.9 < m["pearson_hi"]


def test_a_human_scored_set_through_the_eval_stage(tmp_path, tiny_model_path):
    from selftaught import compose, evaluate

    f = _graded_file(tmp_path)
    cfg = compose([f"model.path={tiny_model_path}", f"output_dir={tmp_path}", "name=fb", "engine=hf",
                   "engine.constrained=true", "ray.enabled=false", "eval.max_tokens=4", "eval.modes=[constrained]",
                   f"eval.sets=[{{path: {f}, name: fb}}]", "tracking.mode=disabled"])
    s = evaluate(cfg)
    m = s["metrics"]["absolute"]["fb"]  # graded whatever eval.modes says
    assert s["in"] == s["out"] == 5 and m["graded"] == 5 and m["graded_parse_failure_rate"] == 0.0
    assert m["n_expected_score"] == 5 and "pearson_expected" in m  # constrained: the expected score correlates too
    assert s["rejected_by_reason"] == {"field 'score' must be a score from 1 to 5, got 7": 1}


def test_judgebench_rows_and_its_both_order_score(tmp_path):
    """JudgeBench's file shape and protocol: +1 / -1 / 0 per order, a pair right only when the sum is > 0,
    per source category (hand-computed below)."""
    import json

    rows = [
        {"pair_id": "k1", "source": "mmlu-pro-physics", "question": "q1", "response_A": "good", "response_B": "bad",
         "label": "A>B"},
        {"pair_id": "r1", "source": "livebench-reasoning", "question": "q2", "response_A": "bad", "response_B": "good",
         "label": "B>A"},
        {"pair_id": "m1", "source": "livebench-math", "question": "q3", "response_A": "x", "response_B": "y", "label": "A=B"},
        {"pair_id": "c1", "source": "livecodebench", "question": "q4", "response_A": "same", "response_B": "same",
         "label": "A>B"},
    ]
    f = tmp_path / "judgebench.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    pairs, rejects = load_eval_sets(EvalConfig(sets=[EvalSetConfig(path=str(f), name="judgebench")]))
    assert [(p["eval_id"].rsplit("/", 1)[-1], p["subset"], p["chosen"]) for p in pairs] == [
        ("k1", "knowledge", "good"), ("r1", "reasoning", "good")]  # B>A: response_B is the chosen one
    assert len(rejects) == 2 and "A>B or B>A" in rejects[0]["reason"]
    # Votes per order (+1 right, -1 wrong, 0 unparsed) -> the pair counts when the sum is > 0:
    #   p1: +1 +1 = 2 -> right; p2: +1 -1 = 0 -> wrong (a position-biased judge); p3: +1 + 0 = 1 -> right;
    #   p4: 0 + 0 = 0 -> wrong; p5 (subset "math"): -1 -1 -> wrong.  3 sets of 5: 2 right.
    judged = [_row("p1", "AB", "A"), _row("p1", "BA", "B"), _row("p2", "AB", "A"), _row("p2", "BA", "A"),
              _row("p3", "AB", "A"), _row("p3", "BA", None), _row("p4", "AB", None), _row("p4", "BA", None),
              _row("p5", "AB", "B", subset="math"), _row("p5", "BA", "A", subset="math")]
    m = metrics(judged)["constrained"]
    assert m["gold"]["judgebench_accuracy"] == 0.4 and m["gold"]["both_orders_correct"] == 0.2
    assert m["gold/s1"]["judgebench_accuracy"] == 0.5 and m["gold/math"]["judgebench_accuracy"] == 0.0
    assert (m["gold"]["judgebench_accuracy_lo"], m["gold"]["judgebench_accuracy_hi"]) == (0.1176, 0.7693)
