"""eval.holdout through the driver: held-out instructions get their pairs once, the seed and every round's judge are
evaluated on them, and no held-out instruction, nor its answer, reaches a round's pairs, judge, SFT rows or
training, with generator.fresh_instructions too. Pairs by SmolLM2 (neighbor pairs), judge a tiny random Llama."""
import json
import shutil
from dataclasses import replace

import pytest

from selftaught import compose, run
from selftaught.io import read_records
from selftaught.stages import holdout

pytestmark = pytest.mark.slow

# One topic, many tasks: every instruction has TF-IDF neighbors.
TASKS = ["sorts", "reverses", "sums", "returns the largest number in", "returns the smallest number in",
         "averages", "counts the even numbers in", "removes duplicates from", "shuffles", "returns the median of",
         "squares every number in", "returns the product of", "returns the second largest number in",
         "filters out negative numbers from", "counts the odd numbers in", "returns the range of"]


def _texts(rows: list[dict]) -> str:
    return json.dumps(rows, default=str)


def test_held_out_instructions_never_reach_training_with_fresh_instructions(tmp_path, tiny_model_path):
    data = tmp_path / "instructions.jsonl"
    data.write_text("".join(json.dumps({"id": f"t{i:02d}", "instruction": f"Write a Python function that {t} a list of numbers."})
                            + "\n" for i, t in enumerate(TASKS)))
    cfg = compose([f"output_dir={tmp_path}", "name=held", f"model.path={tiny_model_path}", f"data.path={data}",
                   "generator.path=embedded:smollm2", "generator.fresh_instructions=true", "select.limit=4",
                   "engine=hf", "engine.constrained=true", "engine.threads=1", "ray.enabled=false", "ray.num_cpus=2",
                   "categorize.max_tokens=24", "pairs.rejected=neighbor", "pairs.max_tokens=16",
                   "pairs.neighbor.max_similarity=0.95", "pairs.checks.enabled=false", "judge.n=2", "judge.n_max=4", "judge.swap=true",
                   "judge.max_tokens=8", "eval.limit=2", "eval.max_tokens=4", "eval.modes=[constrained]", "rounds=2",
                   "trainer=plain", "train.num_workers=1", "train.lr=1e-3", "train.warmup_steps=0", "train.epochs=1",
                   "train.per_device_batch_size=1", "train.gradient_accumulation_steps=1", "train.max_seq_length=512",
                   "tracking.mode=disabled"])
    result = run(cfg)
    root = result.run_dir

    held = {r["id"] for r in read_records(root / "data" / "holdout" / "data")}
    assert len(held) == holdout.size(len(TASKS), cfg.eval.holdout) == 8
    held_pairs = read_records(root / "data" / "holdout_pairs" / "data")
    assert held_pairs, "the held-out instructions made no pair"
    assert {p["instruction_id"] for p in held_pairs} <= held  # (their neighbors may come from the whole pool)
    held_text = [p["instruction"] for p in held_pairs] + [p["chosen"] for p in held_pairs]
    held_text += [r["instruction"] for r in read_records(root / "data" / "holdout" / "data")]

    chosen = []
    for k in (1, 2):
        rd = root / f"round_{k}"
        sel = {r["id"] for r in read_records(rd / "select" / "data")}
        assert sel and not sel & held
        chosen.append(sel)
        pairs = read_records(rd / "pairs" / "data")
        assert pairs and not ({p["instruction_id"] for p in pairs} | {p["neighbor_id"] for p in pairs}) & held
        judged = read_records(rd / "judge" / "data") + [json.loads(x) for x in (rd / "judge" / "failures").glob("*.jsonl")
                                                         for x in x.read_text().splitlines()]
        sft = read_records(rd / "sft_data" / "data")
        assert sft, f"round {k} kept no SFT row"
        # Not an id, not an instruction's text, not an answer: nothing held out is judged or trained on.
        for rows in (judged, sft):
            blob = _texts(rows)
            assert not any(t in blob for t in held_text if len(t) > 20)
        train = json.loads((rd / "train" / "summary.json").read_text())
        assert not train["skipped"] and train["examples"] == len(sft)
    assert not chosen[0] & chosen[1]  # fresh instructions: each round its own

    # The seed and each round's judge are evaluated on the held-out pairs, each pair in both orders.
    for k in (0, 1, 2):
        ev = json.loads((root / f"round_{k}" / "eval" / "summary.json").read_text())
        assert ev["metrics"]["constrained"]["holdout"]["pairs"] == min(len(held_pairs), 2)  # eval.limit per file
    summary = json.loads((root / "summary.json").read_text())
    assert all("eval/constrained/holdout/accuracy" in r for r in summary)

    # A copy of the run under another name is the same run: every stage resumes, the evals on the held-out
    # pairs too (the held-out set's folder is this run's, identified by its stage's hash, not by its path).
    shutil.copytree(root, tmp_path / "held_copy")
    again = run(replace(cfg, name="held_copy"))
    assert again.run_dir == tmp_path / "held_copy"
    assert [s["stage"] for s in again.summaries if not s.get("resumed")] == []
