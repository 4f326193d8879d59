"""Two rounds of the whole loop, pairs written by SmolLM2, judged and trained on a tiny random Llama: Ray Data engine actors (transformers), Ray
Train SFT with 2 workers and DeepSpeed ZeRO-2 on CPU, eval every round (seed included), W&B
offline, the run summary; then resume: a finished run redoes nothing, a killed round redoes only
its unfinished stages."""
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from selftaught import compose, run
from selftaught.io import read_records
from selftaught.models import TINY_TWO_ROUNDS
from selftaught.store import MARKER

pytestmark = pytest.mark.slow

INSTRUCTIONS = [
    "What is 15% of 80?",
    "Write a haiku about the sea.",
    "Explain why the sky is blue.",
    "Name three prime numbers.",
    "Give one tip for learning a language.",
    "What is the capital of France?",
]


def _weights(model_dir: str) -> dict[str, torch.Tensor]:
    return load_file(str(Path(model_dir) / "model.safetensors"))


def _changed(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a if k in b)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    # W&B offline, all of it under the test's folders.
    d = tmp_path_factory.mktemp("wandb_home")
    old = {k: os.environ.get(k) for k in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR")}
    os.environ.update(WANDB_DATA_DIR=str(d / "data"), WANDB_CACHE_DIR=str(d / "cache"), WANDB_CONFIG_DIR=str(d / "cfg"))
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _cfg(tmp_path: Path, tiny: str, data: Path):
    return compose([f"output_dir={tmp_path}", "name=rounds", f"model.path={tiny}", f"data.path={data}",
                    "ray.num_cpus=2", *TINY_TWO_ROUNDS])


def test_two_rounds_zero2_resume(tmp_path, tiny_model_path, env):
    data = tmp_path / "instructions.jsonl"
    data.write_text("".join(json.dumps({"id": f"i{i}", "instruction": t}) + "\n" for i, t in enumerate(INSTRUCTIONS)))
    cfg = _cfg(tmp_path, tiny_model_path, data)
    result = run(cfg)
    root = result.run_dir
    assert root.is_absolute()

    # Pairs once, shared; every round judged, trained and evaluated; round 0 evaluated the seed.
    for s in ("load", "categorize", "select", "pairs"):
        assert (root / "data" / s / MARKER).is_file()
    assert (root / "round_0" / "eval" / MARKER).is_file()
    for k in (1, 2):
        for s in ("judge", "sft_data", "train", "eval"):
            assert (root / f"round_{k}" / s / MARKER).is_file(), (k, s)
    m1, m2 = root / "round_1" / "model", root / "round_2" / "model"
    assert result.models == {0: tiny_model_path, 1: str(m1), 2: str(m2)}
    # Each trained round's folder carries its model card (the eval table up to that round) and how to call it.
    for k, m in ((1, m1), (2, m2)):
        assert json.loads((m / "selftaught_judge.json").read_text())["round"] == k
        card = (m / "README.md").read_text()
        assert card.startswith("---\n") and "model-index:" in card and f"| {k} | demo_eval |" in card

    # Round 1 keeps a non-zero, balanced set of examples (adaptive waves + swap augmentation).
    j1 = json.loads((root / "round_1" / "judge" / "summary.json").read_text())
    assert j1["kept_A"] == j1["kept_B"] > 0 and j1["samples"] <= 4 * j1["in"]
    # Round 2's judge is round 1's model, read from its absolute path; round 1 judged with the seed.
    for k, judge_model in ((1, tiny_model_path), (2, str(m1))):
        rows = read_records(root / f"round_{k}" / "judge" / "data")
        assert rows and {r["judge_meta"]["model"] for r in rows} == {judge_model}
    # Training changed the weights; each round re-trained from the seed (the recipe's default).
    seed_w = _weights(tiny_model_path)
    assert _changed(seed_w, _weights(str(m1))) and _changed(seed_w, _weights(str(m2)))
    t2 = json.loads((root / "round_2" / "train" / "summary.json").read_text())
    assert t2["base_model"] == tiny_model_path and t2["world_size"] == 2 and t2["strategy"] == "zero2"
    assert t2["examples"] > 0 and t2["train_loss"] > 0

    # Eval ran every round, each on the model of that round, both orders.
    for k, model in ((0, tiny_model_path), (1, str(m1)), (2, str(m2))):
        ev = json.loads((root / f"round_{k}" / "eval" / "summary.json").read_text())
        assert ev["model"] == model
        m = ev["metrics"]["constrained"]["demo_eval"]
        assert m["pairs"] > 0 and 0 <= m["accuracy"] <= 1 and m["acc_AB"] is not None and m["acc_BA"] is not None
        rows = read_records(root / f"round_{k}" / "eval" / "data")
        assert {r["order"] for r in rows} == {"AB", "BA"}
        assert {r["eval_meta"]["model"] for r in rows} == {model}

    # The run summary: a row per round, JSON + CSV + PNG, and W&B offline files.
    summary = json.loads((root / "summary.json").read_text())
    assert [r["round"] for r in summary] == [0, 1, 2]
    assert all("eval/constrained/demo_eval/accuracy" in r and "eval/free/demo_eval/accuracy" in r for r in summary)
    assert (root / "summary.csv").read_text().startswith("round")
    assert (root / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((root / "wandb").glob("offline-run-*"))
    state = json.loads((root / "tracking.json").read_text())
    first_last_step = state["last_step"]

    # Resume of a finished run: nothing recomputed.
    again = run(cfg)
    assert again.summaries and all(s["resumed"] for s in again.summaries)
    assert json.loads((root / "tracking.json").read_text())["run_id"] == state["run_id"]

    # A run killed during round 2's training: only train and eval of round 2 run again.
    for f in (root / "round_2" / "train" / MARKER, root / "round_2" / "eval" / MARKER):
        f.unlink()
    before = (m1 / "model.safetensors").stat().st_mtime_ns
    third = run(cfg)
    ran = [(s["round"], s["stage"]) for s in third.summaries if not s["resumed"]]
    assert ran == [(2, "train"), (2, "eval")]
    assert (m1 / "model.safetensors").stat().st_mtime_ns == before
    # One W&B run across resumes, steps still increasing.
    state3 = json.loads((root / "tracking.json").read_text())
    assert state3["run_id"] == state["run_id"] and state3["last_step"] > first_last_step

    # Too few examples for train.min_examples: no round trains, each judge carries over, and the
    # eval of an unchanged judge is reused from the round that ran it, not run again.
    skipped = run(compose([f"output_dir={tmp_path}", "name=rounds", f"model.path={tiny_model_path}",
                           f"data.path={data}", "ray.num_cpus=2", *TINY_TWO_ROUNDS, "train.min_examples=100000"]))
    evals = {s["round"]: s for s in skipped.summaries if s["stage"] == "eval"}
    trains = {s["round"]: s for s in skipped.summaries if s["stage"] == "train"}
    assert trains[1]["skipped"] and trains[2]["skipped"]
    assert skipped.models == {0: tiny_model_path, 1: tiny_model_path, 2: tiny_model_path}
    assert evals[0]["resumed"] and evals[1]["reused_from"] == "round_0" and evals[2]["reused_from"] == "round_1"
    assert evals[1]["seconds"] == 0.0 and evals[1]["metrics"] == evals[0]["metrics"]
    assert (root / "round_2" / "eval" / MARKER).is_file()
