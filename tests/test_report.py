"""Per-run summary: text table, summary.json / summary.csv round trip, accuracy.png."""
from __future__ import annotations

import csv
import json
import math

from selftaught.report import default_columns, format_table, write_summary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _rows() -> list[dict]:
    return [
        {"round": 1, "model": "/abs/runs/demo/round_1/model", "eval/demo_eval/accuracy": 0.6125,
         "eval/demo_eval/acc_AB": 0.65, "eval/demo_eval/acc_BA": 0.575, "eval/demo_eval/consistency": 0.8,
         "eval/demo_eval/parse_failure_rate": 0.0, "judge/sft_examples": 12, "train/train_loss": 1.23456,
         "seconds/judge": 12.3, "eval/other/accuracy": 0.4},
        {"round": 0, "model": "/abs/seed", "eval/demo_eval/accuracy": 0.55, "eval/demo_eval/acc_AB": 0.6,
         "eval/demo_eval/acc_BA": 0.5, "eval/demo_eval/consistency": 0.7,
         "eval/demo_eval/parse_failure_rate": 0.05},
    ]


def test_default_columns_order():
    cols = default_columns(_rows())
    assert cols[0] == "round"
    assert cols[1:3] == ["eval/demo_eval/accuracy", "eval/other/accuracy"]
    assert set(cols[3:7]) == {"eval/demo_eval/acc_AB", "eval/demo_eval/acc_BA", "eval/demo_eval/consistency",
                              "eval/demo_eval/parse_failure_rate"}
    assert cols[-1] == "train/train_loss"
    assert "model" not in cols and "seconds/judge" not in cols and "judge/sft_examples" not in cols


def test_format_table_values_and_missing():
    text = format_table(_rows())
    lines = text.splitlines()
    assert "round" in lines[0] and "demo_eval/accuracy" in lines[0] and "train/train_loss" in lines[0]
    assert set(lines[1]) <= {"-", " "}
    # sorted by round; floats at 3 decimals; missing values shown as "-"
    assert lines[2].split()[0] == "0" and lines[3].split()[0] == "1"
    assert "0.550" in lines[2] and "0.050" in lines[2]
    assert "0.613" in lines[3] and "1.235" in lines[3] and "0.400" in lines[3]
    assert lines[2].split()[2] == "-"  # round 0 has no eval/other/accuracy
    assert len({len(line) for line in lines[:2]}) == 1  # fixed width header/rule


def test_format_table_explicit_columns():
    text = format_table(_rows(), columns=["round", "model", "judge/sft_examples"])
    assert "/abs/seed" in text and "12" in text and "accuracy" not in text
    assert format_table([]) == "(no metrics)"


def test_write_summary_round_trip(tmp_path):
    rows = _rows()
    rows[0]["nan_metric"] = float("nan")
    paths = write_summary(tmp_path / "run", rows)
    assert set(paths) == {"json", "csv", "png"}
    assert all(p.exists() for p in paths.values())
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]

    data = json.loads(paths["json"].read_text())
    assert [r["round"] for r in data] == [0, 1]
    assert data[1]["eval/demo_eval/accuracy"] == 0.6125 and data[1]["judge/sft_examples"] == 12
    assert data[1]["nan_metric"] is None  # strict JSON
    assert "train/train_loss" not in data[0]

    with open(paths["csv"], newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames
        got = list(reader)
    assert header[0] == "round"
    assert set(header) == set().union(*rows)
    assert [r["round"] for r in got] == ["0", "1"]
    assert math.isclose(float(got[1]["eval/demo_eval/accuracy"]), 0.6125)
    assert got[1]["model"] == "/abs/runs/demo/round_1/model"
    assert got[0]["train/train_loss"] == "" and got[1]["nan_metric"] == ""

    assert paths["png"].read_bytes()[:8] == PNG_MAGIC
    assert rows[0]["round"] == 1  # input not reordered


def test_png_single_round_and_no_accuracy(tmp_path):
    paths = write_summary(tmp_path, [{"round": 0, "eval/demo_eval/accuracy": 0.5}])
    assert paths["png"].stat().st_size > 1000 and paths["png"].read_bytes()[:8] == PNG_MAGIC
    paths = write_summary(tmp_path / "empty", [{"round": 0, "judge/sft_examples": 3}])
    assert paths["png"].read_bytes()[:8] == PNG_MAGIC
