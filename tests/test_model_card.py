"""Model cards and ``selftaught export``: a trained round's folder becomes a hub-ready folder whose card
carries the eval results (``model-index``), the prompts and how to call the judge."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from selftaught import model_card
from selftaught.export import ExportError, export
from selftaught.models import ensure_architectures
from selftaught.overrides import compose

ROWS = [
    {"round": 0, "eval/verify/holdout/pairs": 65, "eval/verify/holdout/accuracy": 0.646,
     "eval/verify/holdout/accuracy_lo": 0.52, "eval/verify/holdout/accuracy_hi": 0.77, "eval/verify/holdout/yes_rate": 0.53},
    {"round": 1, "pairs/out": 270, "judge/sft_examples": 510, "train/steps": 64, "train/train_loss": 0.17210099,
     "eval/verify/holdout/pairs": 65, "eval/verify/holdout/accuracy": 0.692, "eval/verify/holdout/accuracy_lo": 0.585,
     "eval/verify/holdout/accuracy_hi": 0.80, "eval/verify/holdout/yes_rate": 0.977,
     "eval/verify/holdout/adversarial/accuracy": 0.5},  # a subset: not a model-index entry of its own
]


def _spec(k: int = 1) -> dict:
    cfg = compose(["preset=cpu_demo", "name=card"])
    return model_card.judge_spec(cfg, k, "/nonexistent/seed")


def test_card_header_carries_base_license_and_eval_results(tmp_path):
    (tmp_path / "README.md").write_text(model_card.render(_spec(), ROWS))
    card = ModelCard.load(str(tmp_path / "README.md"))
    data = card.data.to_dict()
    assert data["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and data["license"] == "apache-2.0"
    assert "judge-verify" in data["tags"]
    results = card.data.eval_results
    assert [(r.dataset_name, r.metric_value) for r in results] == [("holdout", 0.692)]
    assert "[0.585, 0.800]" in results[0].metric_name
    text = card.text
    assert "| 0 | holdout | verify | 65 | 0.646 [0.52, 0.77] |" in text
    assert "| 1 | holdout | verify | 65 | 0.692 [0.58, 0.80] |" in text  # the seed's row and this round's
    assert "judge_file.decide=verify" in text and 'Reply "Verdict: Yes"' in text  # how to call it, the prompt
    assert "| training rows | 510 |" in text and "| final train loss | 0.1721 |" in text


def test_a_set_without_an_accuracy_has_no_model_index_entry(tmp_path):
    """Every pair too long for the context: accuracy None; the card still parses (the hub rejects a result
    without a value)."""
    rows = [dict(ROWS[0]), {**ROWS[1], "eval/verify/holdout/accuracy": None, "eval/verify/holdout/accuracy_lo": None,
                            "eval/verify/holdout/accuracy_hi": None}]
    (tmp_path / "README.md").write_text(model_card.render(_spec(), rows))
    card = ModelCard.load(str(tmp_path / "README.md"))
    assert not card.data.eval_results and "| 1 | holdout | verify | 65 | – |" in card.text


def _round(tmp_path: Path, tiny_model_path: str, spec: bool = True) -> Path:
    run = tmp_path / "runs" / "card"
    model = run / "round_1" / "model"
    shutil.copytree(tiny_model_path, model)
    (model / "training_args.bin").write_bytes(b"x")
    cfg = json.loads((model / "config.json").read_text())
    cfg.pop("architectures", None)  # as the GGUF-converted seed's was
    (model / "config.json").write_text(json.dumps(cfg))
    (run / "summary.json").write_text(json.dumps(ROWS))
    if spec:
        model_card.write(model, _spec(), ROWS[:1])  # written after round 0's row only: export regenerates it
    return run / "round_1"


def test_export_writes_a_hub_ready_folder(tmp_path, tiny_model_path):
    src = _round(tmp_path, tiny_model_path)
    out = export(src, tmp_path / "out")
    names = {p.name for p in out.iterdir()}
    assert {"README.md", "selftaught_judge.json", "config.json", "model.safetensors", "tokenizer.json",
            "prompts"} <= names and "training_args.bin" not in names
    assert sorted(p.name for p in (out / "prompts").iterdir()) == ["verify.system.txt", "verify.user.txt"]
    assert json.loads((out / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    card = ModelCard.load(str(out / "README.md"))
    assert card.data.eval_results[0].metric_value == 0.692  # regenerated from the run's summary: round 1's row
    assert not list(tmp_path.glob(".out.tmp-*"))
    with pytest.raises(ExportError, match="exists and is not empty"):
        export(src, out)
    assert export(src, out, force=True) == out and (out / "model.safetensors").is_file()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no tmp or old folder left
    for inside in (src / "model", src, tmp_path / "runs"):  # never over its own source
        with pytest.raises(ExportError, match="holds or is inside"):
            export(src, inside, force=True)
    assert (src / "model" / "model.safetensors").is_file()


def test_export_refuses_a_folder_without_its_judge_spec(tmp_path, tiny_model_path):
    src = _round(tmp_path, tiny_model_path, spec=False)
    p = subprocess.run([sys.executable, "-m", "selftaught.cli", "export", str(src), str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "has no selftaught_judge.json" in p.stderr and not (tmp_path / "out").exists()


def test_architectures_named_once(tmp_path, tiny_model_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_path, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.pop("architectures", None)
    (folder / "config.json").write_text(json.dumps(cfg))
    assert ensure_architectures(folder) is True
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    assert ensure_architectures(folder) is False


def test_embedded_seed_names_its_architecture(tmp_path):
    """A fresh conversion of the embedded seed is a model folder like any other (TRL's trainers load it from its
    path); ~25 s."""
    from selftaught.models import ensure_smollm2

    out = ensure_smollm2(tmp_path / "SmolLM2-135M-Instruct")
    assert json.loads((out / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
