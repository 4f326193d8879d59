"""The per-run summary: one row per round (``round``, ``model``, ``eval/<set>/accuracy``, ...).

``format_table`` renders rows as a fixed-width text table; ``write_summary`` writes
``summary.json``, ``summary.csv`` and ``accuracy.png`` into the run directory (each atomically).
Pure functions of the rows: no W&B, no global matplotlib state (the Agg canvas is used directly).
"""
from __future__ import annotations

import csv
import json
import math
import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional, Union

MISSING = "-"
MAX_CELL = 48  # longer text cells (model paths) are shortened in the text table only
EVAL_PREFIX = "eval/"
AB_BA = ("acc_AB", "acc_BA")

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


SET_COLUMNS = ("acc_AB", "acc_BA", "consistency", "parse_failure_rate", "majority_accuracy")


def default_columns(rows: Sequence[dict]) -> list[str]:
    """``round``, every ``*/accuracy`` key, the other ``eval/`` keys, then train loss."""
    keys = [k for k in _keys(rows) if k != "round"]
    acc = [k for k in keys if k.endswith("/accuracy")]
    # Per set (not per subset): both orders, consistency, parse failures; the rest is in the CSV.
    other_eval = [k for k in keys if k.startswith(EVAL_PREFIX) and k not in acc and k.count("/") == 2
                  and k.rsplit("/", 1)[1] in SET_COLUMNS]
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


def _header(k: str) -> str:
    return k[len(EVAL_PREFIX):] if k.startswith(EVAL_PREFIX) else k


# ---------------------------------------------------------------------------- text table

def format_table(rows: Sequence[dict], columns: Optional[Sequence[str]] = None) -> str:
    """Round x metric as a fixed-width text table (floats at 3 decimals, missing values as ``-``).

    Headers drop the ``eval/`` prefix (``demo_eval/accuracy``). Numbers are right-aligned."""
    rows = _sorted(rows)
    cols = list(columns) if columns is not None else default_columns(rows)
    if not cols:
        return "(no metrics)"
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    heads = [_header(c) for c in cols]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(heads)]
    numeric = [all(_is_num(r.get(c)) or _missing(r.get(c)) for r in rows) for c in cols]

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    out = [line(heads), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    return "\n".join(out)


# ---------------------------------------------------------------------------- files

@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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


def plot_accuracy(rows: Sequence[dict], path: PathLike) -> Path:
    """Accuracy by round: one solid line per eval set, dashed/dotted for acc_AB/acc_BA when logged."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows = _sorted(rows)
    fig = Figure(figsize=(9, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    rounds_seen: set[int] = set()
    sets = _eval_sets(rows)
    colors = [f"C{i % 10}" for i in range(len(sets))]
    for prefix, color in zip(sets, colors):
        label = _header(prefix)
        subset = prefix.count("/") > 1  # eval/<set>/<subset>: overall line only, thinner
        styles = (("accuracy", "-", 1.2 if subset else 2.0, ""),) if subset else (
            ("accuracy", "-", 2.0, ""), ("acc_AB", "--", 1.2, " (AB)"), ("acc_BA", ":", 1.2, " (BA)"))
        for metric, style, width, suffix in styles:
            pts = [(r["round"], r[f"{prefix}/{metric}"]) for r in rows
                   if _is_num(r.get("round")) and _is_num(r.get(f"{prefix}/{metric}"))
                   and not _missing(r.get(f"{prefix}/{metric}"))]
            if not pts:
                continue
            xs, ys = zip(*pts)
            rounds_seen.update(int(x) for x in xs)
            ax.plot(xs, ys, linestyle=style, linewidth=width, marker="o" if metric == "accuracy" else ".",
                    markersize=6 if metric == "accuracy" else 4, color=color, label=label + suffix)
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
    ax.set_ylabel("accuracy")
    ax.set_title("judge accuracy by round")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    with _atomic(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def write_summary(run_dir: PathLike, rows: Sequence[dict]) -> dict[str, Path]:
    """Write ``summary.json`` (list of rows), ``summary.csv`` (union of keys, round first) and
    ``accuracy.png`` under ``run_dir``. Returns ``{"json": ..., "csv": ..., "png": ...}``."""
    run_dir = Path(run_dir)
    rows = _sorted(rows)
    paths = {"json": run_dir / "summary.json", "csv": run_dir / "summary.csv", "png": run_dir / "accuracy.png"}

    with _atomic(paths["json"]) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump([_json_value(dict(r)) for r in rows], f, indent=1, ensure_ascii=False, allow_nan=False)
            f.write("\n")

    cols = _keys(rows)
    with _atomic(paths["csv"]) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols, restval="")
            w.writeheader()
            for r in rows:
                w.writerow({str(k): _csv_value(v) for k, v in r.items()})

    plot_accuracy(rows, paths["png"])
    return paths
