"""``selftaught judge``: a file of response pairs decided by a real judge (transformers engine on the
tiny random model), both orders; bad rows with file:line; resume after a kill; DPO rows."""
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from selftaught import compose, judge
from selftaught.config import ConfigError
from selftaught.io import DataError, iter_response_pairs, read_jsonl, read_records
from selftaught.stages.verdicts import A, B, TIE, decide, dpo_rows, prompt_instruction
from selftaught.store import MANIFEST, MARKER

ROWS = [
    {"id": "p1", "instruction": "What is 2+2?", "response_a": "4", "response_b": "5"},
    {"id": "p2", "instruction": "Name a color.", "response_a": "Blue.", "response_b": "A banana."},
    {"id": "p3", "instruction": "Say hi", "response_a": "hi", "response_b": " hi "},  # identical: rejected
    "not json",
    {"id": "p4", "instruction": "Capital of France?", "response_a": "Berlin", "response_b": "Paris", "reference": "Paris"},
    {"id": "p5", "instruction": "Spell cat.", "response_b": "c-a-t"},  # no response_a
    {"id": "p6", "instruction": "2*3?", "response_a": "6", "response_b": "8"},
    {"id": "p7", "instruction": "Opposite of hot?", "response_a": "cold", "response_b": "warm"},
]


def _write(path: Path, rows=ROWS) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_decision_rule():
    assert decide(A, A, None, None, None, "tie") == (A, "agreement")
    assert decide(B, B, 0.1, -3.0, None, "logprob") == (B, "agreement")  # agreement first, margins unused
    assert decide(A, B, 2.0, 1.0, None, "tie") == (TIE, "tie")
    # response_a is A in AB and B in BA: it wins when margin_AB - margin_BA > 0
    assert decide(A, B, 2.0, 1.0, None, "logprob") == (A, "logprob")
    assert decide(A, None, 1.0, 3.0, None, "logprob") == (B, "logprob")
    assert decide(A, None, None, 3.0, None, "logprob") == (TIE, "tie")  # no margin: nothing to decide on
    assert decide(A, A, 1.0, 1.0, Counter({A: 2, B: 4}), "tie") == (B, "majority")
    assert decide(A, A, 1.0, 1.0, Counter({A: 3, B: 3}), "tie") == (TIE, "majority")


def test_a_reference_follows_the_instruction_labelled():
    assert prompt_instruction("Capital of France?", None) == "Capital of France?"
    assert prompt_instruction("Capital of France?", "Paris") == "Capital of France?\n\n[Reference answer]\nParis"


def test_dpo_rows_keep_decided_pairs_in_trl_format():
    rows = [{"id": "x", "instruction": "q", "response_a": "good", "response_b": "bad", "winner": A, "status": "ok"},
            {"id": "y", "instruction": "q", "response_a": "bad", "response_b": "good", "winner": B, "status": "ok"},
            {"id": "z", "instruction": "q", "response_a": "s", "response_b": "t", "winner": TIE, "status": "ok"},
            {"id": "w", "instruction": "q", "response_a": "s", "response_b": "t", "status": "prompt too long"}]
    out = dpo_rows(rows)
    assert [r["id"] for r in out] == ["x", "y"]
    assert out[0]["prompt"] == [{"role": "user", "content": "q"}]
    assert [r["chosen"][0]["content"] for r in out] == ["good", "good"]
    assert [r["rejected"][0]["content"] for r in out] == ["bad", "bad"]


def test_reader_reports_bad_rows_with_file_and_line(tmp_path):
    cfg = compose([f"judge_file.path={_write(tmp_path / 'p.jsonl')}"]).judge_file
    items = list(iter_response_pairs(cfg))
    ok = [x for x in items if isinstance(x, dict)]
    bad = {x.line: x.reason for x in items if not isinstance(x, dict)}
    assert [r["id"] for r in ok] == ["p1", "p2", "p4", "p6", "p7"]
    assert bad[3] == "the two responses are identical"
    assert bad[4].startswith("invalid JSON")
    assert bad[6] == "missing field 'response_a'"
    assert ok[2]["reference"] == "Paris" and ok[0]["reference"] is None
    assert ok[0]["source"] == "p.jsonl:1"


def test_unmapped_fields_stop_in_one_line_naming_the_mapping(tmp_path):
    p = tmp_path / "q.jsonl"
    p.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
    cfg = compose([f"judge_file.path={p}"]).judge_file
    with pytest.raises(DataError, match=r"the rows have prompt, chosen, rejected\): now judge_file.instruction_field=instruction, "
                       r"judge_file.a_field=response_a, judge_file.b_field=response_b$"):
        list(iter_response_pairs(cfg))
    # mapped, the same file loads
    cfg = compose([f"judge_file.path={p}", "judge_file.instruction_field=prompt", "judge_file.a_field=chosen",
                   "judge_file.b_field=rejected"]).judge_file
    assert [r["response_a"] for r in iter_response_pairs(cfg) if isinstance(r, dict)] == ["a"]


def _cfg(tmp_path, tiny_model_path, **kw):
    o = {"output_dir": tmp_path, "name": "use", "model.path": tiny_model_path, "engine": "hf", "ray.enabled": "false",
         "tracking.mode": "disabled", "eval.max_tokens": 8, "shard_size": 2, "judge_file.path": tmp_path / "pairs.jsonl",
         "judge_file.constrained": "true", "judge_file.decide": "logprob", "judge_file.dpo_out": tmp_path / "dpo.jsonl"}
    o.update(kw)
    return compose([f"{k}={v}" for k, v in o.items()])


def test_judge_a_file_on_a_real_engine_and_resume_after_a_kill(tmp_path, tiny_model_path):
    _write(tmp_path / "pairs.jsonl")
    cfg = _cfg(tmp_path, tiny_model_path)
    s = judge(cfg)
    out = tmp_path / "use" / "judged" / "pairs"
    assert (s["in"], s["out"], s["failed"], s["rejected_lines"]) == (5, 5, 0, 3)
    assert s["rejected_by_reason"]["the two responses are identical"] == 1
    assert s["shards"] == 3 and s["completion_tokens"] > 0
    rows = read_jsonl(out / "verdicts.jsonl")
    assert [r["id"] for r in rows] == ["p1", "p2", "p4", "p6", "p7"]  # the file's order
    for r in rows:
        assert r["verdict_AB"] in ("A", "B") and r["verdict_BA"] in ("A", "B")  # constrained: always a verdict
        assert r["margin_AB"] is not None and r["margin_BA"] is not None
        if (r["verdict_AB"] == "A") == (r["verdict_BA"] == "B"):  # the same response in both orders
            assert r["agree"] and r["decided_by"] == "agreement" and r["winner"] == (A if r["verdict_AB"] == "A" else B)
        else:
            score = r["margin_AB"] - r["margin_BA"]
            assert r["decided_by"] == "logprob" and r["winner"] == (A if score > 0 else B)
        assert r["verdict_meta"]["completion_tokens"] > 0 and r["verdict_meta"]["stage"] == "verdicts"
    assert rows[2]["reference"] == "Paris"
    assert sum(s["winners"].values()) == 5 and s["agreement_rate"] == sum(r["agree"] for r in rows) / 5
    dpo = read_jsonl(tmp_path / "dpo.jsonl")
    assert len(dpo) == sum(r["winner"] != TIE for r in rows) == s["dpo_rows"]
    assert len(read_records(out / "verdicts" / "data")) == 5  # parquet shards load as one table

    # A rerun reuses the complete stage.
    again = judge(cfg)
    assert again["resumed"] and again["winners"] == s["winners"]

    # A kill after shard 1: marker gone, the last shard uncommitted. The rerun redoes that shard only.
    sd = out / "verdicts"
    lines = (sd / MANIFEST).read_text().splitlines()
    commits = {json.loads(x)["shard"]: json.loads(x)["commit"] for x in lines[1:]}
    (sd / MANIFEST).write_text("\n".join(lines[:-1]) + "\n")
    (sd / MARKER).unlink()
    resumed = judge(cfg)
    assert not resumed["resumed"] and resumed["winners"] == s["winners"]
    after = {json.loads(x)["shard"]: json.loads(x)["commit"] for x in (sd / MANIFEST).read_text().splitlines()[1:]}
    assert after[0] == commits[0] and after[1] == commits[1] and after[2] != commits[2]
    assert [r["winner"] for r in read_jsonl(out / "verdicts.jsonl")] == [r["winner"] for r in rows]


def test_judge_cli_errors_are_one_line(tmp_path):
    exe = [sys.executable, "-m", "selftaught.cli", "judge", "tracking.mode=disabled"]
    r = subprocess.run(exe, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("selftaught: config error: judge_file.path:")
    r = subprocess.run(exe + [f"judge_file.path={tmp_path / 'none.jsonl'}"], capture_output=True, text=True)
    assert r.returncode == 2 and "does not exist" in r.stderr
    with pytest.raises(ConfigError, match="judge_file.decide"):
        compose(["judge_file.decide=logprob", "judge_file.constrained=false"])
    # null decoding resolves to the judge's default: free for any model but the embedded one
    with pytest.raises(ConfigError, match="judge_file.decide: logprob needs constrained decoding"):
        compose(["judge_file.decide=logprob", f"model.path={tmp_path}"])
    assert compose(["judge_file.decide=logprob"]).judge_file.decide == "logprob"  # the embedded model: constrained


def test_majority_of_both_orders_decides(tmp_path, tiny_model_path):
    _write(tmp_path / "pairs.jsonl", ROWS[:2])
    s = judge(_cfg(tmp_path, tiny_model_path, name="maj", **{"judge_file.decide": "tie", "judge_file.majority_k": 3}))
    rows = read_jsonl(tmp_path / "maj" / "judged" / "pairs" / "verdicts.jsonl")
    assert s["majority_k"] == 3 and s["decided_by"] == {"majority": 2}
    for r in rows:
        assert r["votes_a"] + r["votes_b"] == 6  # constrained: every vote parses; 3 per order
        expected = A if r["votes_a"] > r["votes_b"] else B if r["votes_b"] > r["votes_a"] else TIE
        assert r["decided_by"] == "majority" and r["winner"] == expected
    assert rows[0]["verdict_meta"]["completion_tokens"] > 0


@pytest.mark.slow
def test_judge_and_grade_on_the_ray_engine_pool(tmp_path, tiny_model_path):
    """The default path (ray.enabled=true): the stages run on Ray Data engine actors like the loop's."""
    _write(tmp_path / "pairs.jsonl", ROWS[:2])
    s = judge(_cfg(tmp_path, tiny_model_path, name="ray", **{"ray.enabled": "true", "ray.concurrency": 1}))
    assert (s["in"], s["out"], s["failed"]) == (2, 2, 0) and sum(s["winners"].values()) == 2
    (tmp_path / "resp.jsonl").write_text("".join(json.dumps({"instruction": r["instruction"], "response": r["response_a"],
                                                             "score": 3}) + "\n" for r in ROWS[:2]))
    g = judge(_cfg(tmp_path, tiny_model_path, name="rayg", **{
        "ray.enabled": "true", "ray.concurrency": 1, "judge_file.mode": "absolute", "judge_file.decide": "tie",
        "judge_file.dpo_out": "null", "judge_file.path": tmp_path / "resp.jsonl"}))
    assert (g["in"], g["out"], g["parse_rate"]) == (2, 2, 1.0)
