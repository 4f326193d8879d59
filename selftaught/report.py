"""The per-run summary: one row per round (``round``, ``model``, ``eval/<set>/accuracy``, ...).

Eval keys are ``eval/[<mode>/]<set>[/<subset>]/<metric>`` (``<mode>``: ``constrained`` or ``free``);
an accuracy-like metric ``K`` may come with its 95% interval as ``K_lo`` / ``K_hi``.

``format_table`` renders rows as a fixed-width text table (``K`` with its interval as
``0.521 [0.42,0.62]``); ``write_summary`` writes ``summary.json``, ``summary.csv`` (every key, bounds
included, as is), ``accuracy.png`` (small multiples, interval bands) and ``accuracy_detail.png`` (every
subset and order, error bars) into the run directory (each atomically).
Pure functions of the rows: no W&B, no global matplotlib state (the Agg canvas is used directly).
"""
from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from selftaught.atomic import atomic_path
from selftaught.config import EVAL_MODES
from selftaught.stats import fmt_ci

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MISSING = "-"
MAX_CELL = 48  # longer text cells (model paths) are shortened in the text table only
EVAL_PREFIX = "eval/"
AB_BA = ("acc_AB", "acc_BA")
MODES = EVAL_MODES  # decoding mode segment: eval/<mode>/<set>/<metric>
LO, HI = "_lo", "_hi"  # K_lo / K_hi: the 95% interval of metric K

PathLike = Union[str, "os.PathLike[str]"]


# ---------------------------------------------------------------------------- helpers

def _keys(rows: Sequence[dict]) -> list[str]:
    """Union of the rows' keys in first-seen order, ``round`` first."""
    seen: dict[str, None] = {"round": None} if any("round" in r for r in rows) else {}
    for r in rows:
        seen.update(dict.fromkeys(r))
    return list(seen)


def _sorted(rows: Sequence[dict]) -> list[dict]:
    """Rows by round (stable; rows without a numeric round keep their order, last)."""
    def key(r: dict) -> tuple:
        v = r.get("round")
        return (0, v) if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0)

    return sorted(rows, key=key)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _is_loss(k: str) -> bool:
    return k.startswith("train/") and k.endswith("loss")


SET_COLUMNS = ("acc_AB", "acc_BA", "consistency", "parse_failure_rate", "verdict_A_rate",
               "majority_accuracy", "score_accuracy", "score_tie_rate", "pearson", "spearman")


# Verify mode judges each answer alone: its consistency and [[A]] rate are constants by construction.
NOT_IN_VERIFY = ("consistency", "verdict_A_rate")


def _is_bound(k: str, keys: set[str]) -> bool:
    """``K_lo`` / ``K_hi`` next to a key ``K``: part of K's cell in the text table, not a column."""
    return k.endswith((LO, HI)) and k[: -len(LO)] in keys


def _subset_keys(keys: Sequence[str]) -> set[str]:
    """Keys ``<path>/<metric>`` where another key with the same metric has a strict prefix path.

    ``eval/free/llmbar/Natural/accuracy`` is per-subset because ``eval/free/llmbar/accuracy`` exists.
    Counting segments cannot tell: ``eval/free/llmbar/accuracy`` and ``eval/llmbar/Natural/accuracy``
    are both four deep."""
    paths: dict[str, set[str]] = {}
    for k in keys:
        path, _, metric = k.rpartition("/")
        paths.setdefault(metric, set()).add(path)
    out = set()
    for k in keys:
        path, _, metric = k.rpartition("/")
        parts = path.split("/")
        if any("/".join(parts[:i]) in paths[metric] for i in range(1, len(parts))):
            out.add(k)
    return out


def _verify_constant(key: str) -> bool:
    """A verify-mode metric that is a constant by construction (consistency 1, ``[[A]]`` rate 0.5)."""
    prefix, _, metric = key.rpartition("/")
    return metric in NOT_IN_VERIFY and _split_mode(prefix)[1] == "verify"


def default_columns(rows: Sequence[dict]) -> list[str]:
    """``round``, every per-set ``*/accuracy`` key, the other per-set ``eval/`` keys, then train loss.

    Subsets, interval bounds and everything else stay in the CSV/JSON only (the table stays narrow)."""
    all_keys = _keys(rows)
    present = set(all_keys)
    keys = [k for k in all_keys if k != "round" and not _is_bound(k, present)]
    subsets = _subset_keys([k for k in keys if "/" in k])
    per_set = [k for k in keys if k not in subsets]
    acc = [k for k in per_set if k.endswith("/accuracy")]
    # Per set: both orders, consistency, parse failures, position bias, majority vote.
    other_eval = [k for k in per_set if k.startswith(EVAL_PREFIX) and k not in acc
                  and k.rsplit("/", 1)[1] in SET_COLUMNS and not _verify_constant(k)]
    loss = [k for k in keys if _is_loss(k)]
    # One loss column: the trainer's final train_loss when there, else whatever loss was logged.
    loss = [k for k in loss if k.endswith("train_loss")][:1] or loss[:1]
    return (["round"] if any("round" in r for r in rows) else []) + acc + other_eval + loss


def _fmt(v: Any) -> str:
    if _missing(v):
        return MISSING
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, int):
        return str(v)
    s = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
    return s if len(s) <= MAX_CELL else "…" + s[-(MAX_CELL - 1):]


def _cell(row: dict, col: str) -> str:
    """The formatted value, with its interval as ``0.521 [0.42,0.62]`` when the row has both bounds."""
    lo, hi = row.get(col + LO), row.get(col + HI)
    if _is_num(row.get(col)) and _is_num(lo) and _is_num(hi):
        return fmt_ci(row[col], lo, hi, sep=",")  # no space: one cell stays one token
    return _fmt(row.get(col))


def _header(k: str) -> str:
    return k[len(EVAL_PREFIX):] if k.startswith(EVAL_PREFIX) else k


def _split_mode(prefix: str) -> tuple[str, Optional[str]]:
    """``eval/free/demo_eval`` -> (``demo_eval``, ``free``); ``eval/demo_eval`` -> (``demo_eval``, None)."""
    name = _header(prefix)
    head, _, rest = name.partition("/")
    if prefix.startswith(EVAL_PREFIX) and head in MODES and rest:
        return rest, head
    return name, None


# ---------------------------------------------------------------------------- text table

def format_table(rows: Sequence[dict], columns: Optional[Sequence[str]] = None) -> str:
    """Round x metric as a fixed-width text table (floats at 3 decimals, missing values as ``-``).

    Headers drop the ``eval/`` prefix (``demo_eval/accuracy``). Numbers are right-aligned. A column
    ``K`` whose row also has ``K_lo`` and ``K_hi`` shows ``0.521 [0.42,0.62]``."""
    rows = _sorted(rows)
    cols = list(columns) if columns is not None else default_columns(rows)
    if not cols:
        return "(no metrics)"
    cells = [[_cell(r, c) for c in cols] for r in rows]
    heads = [_header(c) for c in cols]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(heads)]
    numeric = [all(_is_num(r.get(c)) or _missing(r.get(c)) for r in rows) for c in cols]

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    out = [line(heads), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    return "\n".join(out)


ROUND_METRICS = ("judge/sft_examples", "judge/kept_mirror", "judge/degenerate_rate", "grade/kept_gradings",
                 "judge/dpo_examples", "judge/grpo_prompts", "train/train_loss", "train/grpo_correctness_first",
                 "train/grpo_correctness_last_quarter")


def format_rounds(rows: Sequence[dict], columns: Optional[Sequence[str]] = None) -> str:
    """The seed and every round side by side: one line per metric, one column per round.

    Default lines: the per-set eval metrics of ``default_columns`` (each with its interval), then
    the SFT examples and mirrors the round's judge kept, their degenerate share, the train loss."""
    rows = _sorted(rows)
    keys = list(columns) if columns is not None else [
        k for k in default_columns(rows) if k != "round" and not _is_loss(k)] + [
        k for k in ROUND_METRICS if any(k in r for r in rows)]
    if not keys or not rows:
        return "(no metrics)"
    heads = ["metric"] + [f"round {r.get('round', '?')}" + (" (seed)" if r.get("round") == 0 else "") for r in rows]
    cells = [[_header(k)] + [_cell(r, k) for r in rows] for k in keys]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(heads, widths))),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
              for row in cells]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- files

def _json_value(v: Any) -> Any:
    """NaN/inf -> None (strict JSON), Paths and other objects -> str."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def _csv_value(v: Any) -> Any:
    if _missing(v):
        return ""
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(_json_value(v), ensure_ascii=False)
    return v if isinstance(v, (bool, int, float, str)) else str(v)


def _eval_sets(rows: Sequence[dict]) -> list[str]:
    """Prefixes ``P`` of every ``P/accuracy`` key (e.g. ``eval/demo_eval``), first-seen order."""
    return [k[: -len("/accuracy")] for k in _keys(rows) if k.endswith("/accuracy")]


# (metric, linestyle, linewidth, legend suffix) per series of a set; a subset draws its overall line only
SET_SERIES = (("accuracy", "-", 2.0, ""), ("acc_AB", "--", 1.2, " (AB)"), ("acc_BA", ":", 1.2, " (BA)"))
SUBSET_SERIES = (("accuracy", "-", 1.2, ""),)
# (accuracy marker, AB/BA marker): free decoding gets its own so modes differ beyond the label
MARKERS = {"free": ("s", "x")}
DEFAULT_MARKERS = ("o", ".")


def _points(rows: Sequence[dict], key: str) -> list[tuple[float, float, Optional[float], Optional[float]]]:
    """``(round, value, lo, hi)`` for rows with a numeric round and value; bounds None when absent."""
    def num(v: Any) -> Optional[float]:
        return float(v) if _is_num(v) and not _missing(v) else None

    out = []
    for r in rows:
        x, y = num(r.get("round")), num(r.get(key))
        if x is not None and y is not None:
            out.append((x, y, num(r.get(key + LO)), num(r.get(key + HI))))
    return out


def _draw_series(ax: Any, pts: list, color: str, style: str, width: float, marker: str, label: str) -> None:
    """The line, plus 95% error bars (with caps) at the rounds that have both bounds."""
    xs, ys, _, _ = zip(*pts)
    main = marker in ("o", "s")
    ax.plot(xs, ys, linestyle=style, linewidth=width, marker=marker, markersize=6 if main else 4,
            color=color, label=label)
    bars = [(x, y, lo, hi) for x, y, lo, hi in pts if lo is not None and hi is not None]
    if bars:
        bx, by, blo, bhi = zip(*bars)
        # errorbar wants non-negative extents; a bound on the wrong side of its value draws as zero
        yerr = [[max(0.0, y - lo) for y, lo in zip(by, blo)], [max(0.0, hi - y) for y, hi in zip(by, bhi)]]
        ax.errorbar(bx, by, yerr=yerr, fmt="none", ecolor=color, elinewidth=width * 0.6, capsize=3,
                    alpha=0.8 if main else 0.5, label="_nolegend_")


def _figure(rows: Sequence[dict]) -> "Figure":
    """The accuracy-by-round figure on its own Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows = _sorted(rows)
    fig = Figure(figsize=(9, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    rounds_seen: set[int] = set()
    sets = _eval_sets(rows)
    subsets = _subset_keys([f"{p}/accuracy" for p in sets])
    for i, prefix in enumerate(sets):
        color = f"C{i % 10}"
        name, mode = _split_mode(prefix)
        label = f"{name} {mode}" if mode else name
        acc_marker, order_marker = MARKERS.get(mode or "", DEFAULT_MARKERS)
        series = SUBSET_SERIES if f"{prefix}/accuracy" in subsets else SET_SERIES
        for metric, style, width, suffix in series:
            pts = _points(rows, f"{prefix}/{metric}")
            if not pts:
                continue
            rounds_seen.update(int(p[0]) for p in pts)
            marker = acc_marker if metric == "accuracy" else order_marker
            _draw_series(ax, pts, color, style, width, marker, label + suffix)
    if rounds_seen:
        if len(rounds_seen) <= 20:
            ax.set_xticks(sorted(rounds_seen))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        lo, hi = min(rounds_seen), max(rounds_seen)
        pad = 0.5 if lo == hi else 0.2
        ax.set_xlim(lo - pad, hi + pad)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    else:
        ax.text(0.5, 0.5, "no accuracy metrics yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("round")
    ax.set_ylabel("accuracy (bars: 95% interval)" if ax.containers else "accuracy")
    ax.set_title("judge accuracy by round")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


# One panel per question a person asks of a run: (metric, panel title, y label, reference line).
PANELS = (
    ("accuracy", "is the judge getting better?", "accuracy", 0.5),
    ("consistency", "does it decide the same in both orders?", "consistency", None),
    ("verdict_A_rate", "position bias: [[A]] rate (pairwise)", "[[A]] rate", 0.5),
    ("yes_rate", "prior: yes rate (verify)", "yes rate", 0.5),
    ("parse_failure_rate", "does every verdict parse?", "parse failures", None),
)


def _set_prefixes(rows: Sequence[dict], metric: str) -> list[str]:
    """Eval sets (with their mode) that logged ``metric``, subsets left out; first-seen order."""
    keys = [k for k in _keys(rows) if k.endswith("/" + metric)]
    sub = _subset_keys(keys)
    prefixes = [k[: -len(metric) - 1] for k in keys if k not in sub and k.startswith(EVAL_PREFIX)]
    return [p for p in prefixes if not _verify_constant(f"{p}/{metric}")]


def _panels(rows: Sequence[dict]) -> "Figure":
    """Small multiples: one panel per question (``PANELS``) that the rows can answer, one line per eval
    set (and decoding mode) with its 95% interval as a band; colours match across panels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows = _sorted(rows)
    colors = {p: f"C{i % 10}" for i, p in enumerate(_set_prefixes(rows, "accuracy"))}
    drawn = [(spec, prefixes) for spec in PANELS if (prefixes := _set_prefixes(rows, spec[0]))]
    if not drawn:
        drawn = [(PANELS[0], [])]
    cols = min(2, len(drawn))
    nrows = -(-len(drawn) // cols)
    fig = Figure(figsize=(5.2 * cols, 3.2 * nrows + 0.6), dpi=110)
    FigureCanvasAgg(fig)
    for i, ((metric, title, ylabel, ref), prefixes) in enumerate(drawn):
        ax = fig.add_subplot(nrows, cols, i + 1)
        for prefix in prefixes:
            color = colors.setdefault(prefix, f"C{len(colors) % 10}")
            pts = _points(rows, f"{prefix}/{metric}")
            if not pts:
                continue
            name, mode = _split_mode(prefix)
            xs, ys, los, his = zip(*pts)
            ax.plot(xs, ys, marker="o", markersize=5, linewidth=1.8, color=color, label=f"{name} {mode}" if mode else name)
            band = [(x, lo, hi) for x, _, lo, hi in pts if lo is not None and hi is not None]
            if band:
                bx, blo, bhi = zip(*band)
                ax.fill_between(bx, blo, bhi, color=color, alpha=0.15, linewidth=0)
        if ref is not None:
            ax.axhline(ref, color="0.5", linewidth=0.8, linestyle=":")
        if not prefixes:
            ax.text(0.5, 0.5, "no accuracy metrics yet", ha="center", va="center", transform=ax.transAxes)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("round", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        if prefixes and i == 0:
            ax.legend(fontsize=7, frameon=False, loc="best")
    fig.suptitle("the judge by round (bands: 95% intervals; dotted: chance or no bias)", fontsize=9)
    fig.tight_layout()
    return fig


def _save(fig: "Figure", path: PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def plot_accuracy(rows: Sequence[dict], path: PathLike) -> Path:
    """The run at a glance (``_panels``): accuracy, consistency, position or yes/no prior, parse failures."""
    return _save(_panels(rows), path)


def plot_accuracy_detail(rows: Sequence[dict], path: PathLike) -> Path:
    """Every series on one axis: a solid line per eval set (and mode), dashed/dotted for acc_AB/acc_BA
    when logged, thinner lines for subsets; 95% error bars where ``K_lo``/``K_hi`` are present."""
    return _save(_figure(rows), path)


def write_summary(run_dir: PathLike, rows: Sequence[dict]) -> dict[str, Path]:
    """Write ``summary.json`` (list of rows), ``summary.csv`` (union of keys, round first), ``accuracy.png``
    (one panel per question) and ``accuracy_detail.png`` (every subset and order) under ``run_dir``.
    Returns ``{"json": ..., "csv": ..., "png": ..., "png_detail": ...}``."""
    run_dir = Path(run_dir)
    rows = _sorted(rows)
    paths = {"json": run_dir / "summary.json", "csv": run_dir / "summary.csv", "png": run_dir / "accuracy.png",
             "png_detail": run_dir / "accuracy_detail.png"}

    with atomic_path(paths["json"]) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump([_json_value(dict(r)) for r in rows], f, indent=1, ensure_ascii=False, allow_nan=False)
            f.write("\n")

    cols = _keys(rows)
    with atomic_path(paths["csv"]) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols, restval="")
            w.writeheader()
            for r in rows:
                w.writerow({str(k): _csv_value(v) for k, v in r.items()})

    plot_accuracy(rows, paths["png"])
    plot_accuracy_detail(rows, paths["png_detail"])
    return paths
