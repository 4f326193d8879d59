"""Per-run summary: text table, summary.json / summary.csv round trip, accuracy.png."""
from __future__ import annotations

import csv
import json
import math

from selftaught.report import _figure, _panels, _subset_keys, default_columns, format_table, write_summary

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
    assert set(paths) == {"json", "csv", "png", "png_detail"}
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


# ---------------------------------------------------------------------------- intervals and modes

def _ci_rows() -> list[dict]:
    """Two rounds with decoding-mode keys, 95% bounds (``_lo``/``_hi``) and LLMBar subsets."""
    def row(rnd: int, acc: float) -> dict:
        r = {"round": rnd}
        for mode in ("constrained", "free"):
            for path in ("demo_eval", "llmbar", "llmbar/Natural"):
                for metric, v in (("accuracy", acc), ("acc_AB", acc + 0.05), ("verdict_A_rate", 0.5)):
                    k = f"eval/{mode}/{path}/{metric}"
                    r[k] = v
                    if metric != "verdict_A_rate":
                        r[k + "_lo"], r[k + "_hi"] = v - 0.1, v + 0.1
        return r

    return [row(0, 0.5213), row(1, 0.6)]


def test_subset_keys():
    keys = ["eval/free/llmbar/accuracy", "eval/free/llmbar/Natural/accuracy", "eval/llmbar/accuracy",
            "eval/llmbar/Natural/accuracy", "eval/constrained/llmbar/Natural/accuracy",
            "eval/free/llmbar/Natural/acc_AB", "train/loss"]
    # constrained/llmbar/Natural has no constrained/llmbar parent and free/.../acc_AB no same-metric
    # parent: neither is a subset by this rule (nothing per-set to show instead of them)
    assert _subset_keys(keys) == {"eval/free/llmbar/Natural/accuracy", "eval/llmbar/Natural/accuracy"}


def test_default_columns_modes_and_subsets():
    cols = default_columns(_ci_rows())
    sets = [f"eval/{m}/{s}" for m in ("constrained", "free") for s in ("demo_eval", "llmbar")]
    assert cols[0] == "round"
    assert cols[1:5] == [f"{s}/accuracy" for s in sets]
    assert set(cols[5:]) == {f"{s}/{m}" for s in sets for m in ("acc_AB", "verdict_A_rate")}
    assert not [c for c in cols if "Natural" in c or c.endswith(("_lo", "_hi"))]


def test_format_table_intervals():
    rows = _ci_rows()
    lines = format_table(rows).splitlines()
    assert "_lo" not in lines[0] and "_hi" not in lines[0] and "Natural" not in lines[0]
    assert "constrained/demo_eval/accuracy" in lines[0] and "free/llmbar/acc_AB" in lines[0]
    assert "0.521 [0.42,0.62]" in lines[2] and "0.650 [0.55,0.75]" in lines[3]
    assert "0.500" in lines[2] and "0.500 [" not in lines[2]  # verdict_A_rate: no bounds, plain value
    # bounds on an explicitly chosen column; a row without them shows the value alone
    rows[1] = {k: v for k, v in rows[1].items() if not k.endswith(("_lo", "_hi"))}
    text = format_table(rows, columns=["round", "eval/free/llmbar/Natural/accuracy"])
    assert "0.521 [0.42,0.62]" in text and text.splitlines()[3].split() == ["1", "0.600"]


def test_write_summary_keeps_bounds_and_draws_error_bars(tmp_path):
    from matplotlib.container import ErrorbarContainer

    rows = _ci_rows()
    paths = write_summary(tmp_path, rows)
    with open(paths["csv"], newline="") as f:
        reader = csv.DictReader(f)
        header, got = reader.fieldnames, list(reader)
    assert "eval/free/demo_eval/accuracy_lo" in header and "eval/free/demo_eval/accuracy_hi" in header
    assert set(header) == set(rows[0])
    assert math.isclose(float(got[0]["eval/free/demo_eval/accuracy_lo"]), 0.4213)
    assert json.loads(paths["json"].read_text())[1]["eval/constrained/llmbar/acc_AB_hi"] == rows[1][
        "eval/constrained/llmbar/acc_AB_hi"]
    assert paths["png"].read_bytes()[:8] == PNG_MAGIC

    ax = _figure(rows).axes[0]
    # per (mode, set): accuracy, AB (BA not logged); per (mode, subset): accuracy only -> 2*(2*2 + 1)
    assert sum(isinstance(c, ErrorbarContainer) for c in ax.containers) == 10
    labels = ax.get_legend_handles_labels()[1]
    assert "demo_eval free" in labels and "demo_eval constrained (AB)" in labels
    assert "llmbar/Natural free" in labels and len(labels) == 10
    markers = {ln.get_label(): ln.get_marker() for ln in ax.get_lines()}
    assert markers["demo_eval free"] != markers["demo_eval constrained"]
    # no bounds: lines only
    assert not _figure(_rows()).axes[0].containers


def test_format_rounds_puts_rounds_side_by_side():
    from selftaught.report import format_rounds

    rows = [
        {"round": 1, "eval/free/demo_eval/accuracy": 0.6, "eval/free/demo_eval/accuracy_lo": 0.5,
         "eval/free/demo_eval/accuracy_hi": 0.7, "eval/free/demo_eval/Natural/accuracy": 0.1,
         "judge/sft_examples": 30, "train/train_loss": 1.5},
        {"round": 0, "eval/free/demo_eval/accuracy": 0.0, "eval/free/demo_eval/accuracy_lo": 0.0,
         "eval/free/demo_eval/accuracy_hi": 0.0},
    ]
    lines = format_rounds(rows).splitlines()
    assert lines[0].split() == ["metric", "round", "0", "(seed)", "round", "1"]
    acc = next(ln for ln in lines if ln.startswith("free/demo_eval/accuracy"))
    assert acc.split()[1:] == ["0.000", "[0.00,0.00]", "0.600", "[0.50,0.70]"]
    sft = next(ln for ln in lines if ln.startswith("judge/sft_examples"))
    assert sft.split()[1:] == ["-", "30"]
    assert not any("Natural" in ln for ln in lines)  # subsets stay in the CSV
    assert format_rounds([]) == "(no metrics)"


def test_panels_one_per_question_with_interval_bands():
    from matplotlib.collections import PolyCollection

    rows = _ci_rows()
    for r in rows:  # a parse-failure rate per set as well; no consistency logged
        for mode in ("constrained", "free"):
            r[f"eval/{mode}/demo_eval/parse_failure_rate"] = 0.25
    axes = _panels(rows).axes
    titles = [ax.get_title() for ax in axes]
    assert titles == ["is the judge getting better?", "position bias: [[A]] rate (pairwise)", "does every verdict parse?"]
    acc = axes[0]
    # one line and one 95% band per set and mode, subsets (llmbar/Natural) left to the detail figure
    assert sorted(ln.get_label() for ln in acc.get_lines() if not ln.get_label().startswith("_")) == [
        "demo_eval constrained", "demo_eval free", "llmbar constrained", "llmbar free"]
    assert sum(isinstance(c, PolyCollection) for c in acc.collections) == 4
    # the same set has the same colour in every panel
    color = {ln.get_label(): ln.get_color() for ln in acc.get_lines()}
    assert {ln.get_label(): ln.get_color() for ln in axes[2].get_lines() if ln.get_label() in color} == {
        k: v for k, v in color.items() if "demo_eval" in k}


def test_panels_verify_mode_leaves_out_its_constants():
    rows = [{"round": k, "eval/verify/holdout/accuracy": a, "eval/verify/holdout/consistency": 1.0,
             "eval/verify/holdout/verdict_A_rate": 0.5, "eval/verify/holdout/yes_rate": y}
            for k, a, y in ((0, 0.6, 0.5), (1, 0.7, 0.4))]
    assert [ax.get_title() for ax in _panels(rows).axes] == ["is the judge getting better?", "prior: yes rate (verify)"]
    assert default_columns(rows) == ["round", "eval/verify/holdout/accuracy"]  # nor in the printed table
