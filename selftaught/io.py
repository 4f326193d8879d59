"""Reading user data and reading/writing stage records.

User files are untrusted: every bad row becomes a ``Reject`` (file, 1-based line, reason) and
loading goes on, so one broken line never costs a run. Stage outputs are ours: they are written
atomically (tmp file + ``os.replace``) so a killed stage never leaves a half file that a resumed
run would take as done.
"""
from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Union

from selftaught.config import DataConfig

log = logging.getLogger("selftaught.io")

BUILTIN = "builtin:"
FORMATS = ("jsonl", "json", "parquet")
MAX_LOGGED_REJECTS = 20
SNIPPET_LEN = 120
_MISSING = object()  # distinguishes an absent field from an explicit null

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class Reject:
    file: str  # absolute path of the input file
    line: int  # 1-based line (jsonl), element index (json) or row index (parquet)
    reason: str
    snippet: str  # <= 120 chars, escaped so it prints on one line


def _snippet(raw: Any) -> str:
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return repr(raw.strip())[2:-1][:SNIPPET_LEN]  # bytes repr: b'\xff' -> \xff
    elif isinstance(raw, str):
        text = raw
    else:
        text = json.dumps(raw, ensure_ascii=False, default=str)
    return repr(text.strip())[1:-1][:SNIPPET_LEN]  # repr escapes newlines/control chars


def get_field(row: Any, dotted: str) -> Any:
    """``turns.0.content`` -> row["turns"][0]["content"]; ``_MISSING`` if any step is absent."""
    cur = row
    for part in dotted.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return _MISSING
    return cur


@contextmanager
def _source_path(spec: str, what: str) -> Iterator[str]:
    """Yield a real filesystem path for ``builtin:<name>`` or a user path; fail fast if absent."""
    if spec.startswith(BUILTIN):
        name = spec[len(BUILTIN):]
        pkg = resources.files("selftaught.data")
        res = pkg.joinpath(name)
        if not name or "/" in name or "\\" in name or not res.is_file():
            shipped = sorted(p.name for p in pkg.iterdir() if p.name.endswith((".jsonl", ".json", ".parquet")))
            raise FileNotFoundError(f"{what}: {spec} does not exist; shipped: {shipped}")
        with resources.as_file(res) as p:  # a real file even if the package is zipped
            yield str(p)
        return
    p = os.path.abspath(os.path.expanduser(str(spec)))
    if not os.path.isfile(p):
        raise FileNotFoundError(f"{what}: {p} does not exist")
    yield p


def resolve_data_path(spec: str, what: str = "data.path") -> str:
    """Absolute path of a data file (or a shipped ``builtin:`` one); ``FileNotFoundError`` if absent."""
    with _source_path(spec, what) as p:
        return p


def _format(path: str, fmt: str) -> str:
    if fmt != "auto":
        if fmt not in FORMATS:
            raise ValueError(f"format must be auto|{'|'.join(FORMATS)}, got {fmt!r}")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix.lstrip(".") in FORMATS:
        return suffix.lstrip(".")
    raise ValueError(f"{path}: cannot infer the format from suffix {suffix!r}; set format to jsonl|json|parquet")


def _iter_rows(path: str, fmt: str) -> Iterator[tuple[int, Any, Any, Optional[str]]]:
    """Yield (line, row, raw for the snippet, error). Streams so ``limit`` stops early."""
    if fmt == "jsonl":
        with open(path, "rb") as f:  # bytes: a non-UTF-8 line is one reject, not a crash
            for i, raw in enumerate(f, 1):
                if not raw.strip():
                    continue  # blank lines (e.g. a trailing newline) are not rows
                try:
                    text = raw.decode("utf-8-sig" if i == 1 else "utf-8")  # tolerate a BOM
                except UnicodeDecodeError:
                    yield i, None, raw, "not valid UTF-8"
                    continue
                try:
                    yield i, json.loads(text), raw, None
                except json.JSONDecodeError as e:
                    yield i, None, raw, f"invalid JSON: {e.msg} at column {e.colno}"
    elif fmt == "json":
        with open(path, "rb") as f:
            data = f.read()
        try:
            obj = json.loads(data)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not valid UTF-8 at byte {e.start}") from e
        if not isinstance(obj, list):
            raise ValueError(f"{path}: expected a top-level JSON list of objects, got {type(obj).__name__}")
        for i, row in enumerate(obj, 1):
            yield i, row, row, None
    else:
        import pyarrow.parquet as pq

        i = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                i += 1
                yield i, row, row, None


def _text(row: dict, dotted: str) -> tuple[str, Optional[str]]:
    """(stripped text, error) for a required non-empty string field."""
    v = get_field(row, dotted)
    if v is _MISSING or v is None:
        return "", f"missing field {dotted!r}"
    if not isinstance(v, str):
        return "", f"field {dotted!r} is not a string (got {type(v).__name__})"
    if not v.strip():
        return "", f"field {dotted!r} is empty"
    return v.strip(), None


# A converter turns one JSON object into a partial record (without "source"; "id" may be None
# for the default) or returns an error string.
Converter = Callable[[dict], Union[dict, str]]


def _load(spec: str, fmt: str, convert: Converter, limit: Optional[int], what: str) -> tuple[list[dict], list[Reject]]:
    rows: list[dict] = []
    rejects: list[Reject] = []
    first_line: dict[str, int] = {}
    with _source_path(spec, what) as path:
        name, stem = Path(path).name, Path(path).stem
        for line, row, raw, err in _iter_rows(path, _format(path, fmt)):
            if limit is not None and len(rows) >= limit:
                break
            out: Union[dict, str] = err if err is not None else (
                convert(row) if isinstance(row, dict) else f"row is not a JSON object (got {type(row).__name__})"
            )
            if isinstance(out, dict):
                rid = str(out["id"]) if out.get("id") is not None else f"{stem}-{line}"
                if rid in first_line:
                    out = f"duplicate id {rid!r} (first at line {first_line[rid]})"
                else:
                    first_line[rid] = line
                    rows.append({"id": rid, **{k: v for k, v in out.items() if k != "id"}, "source": f"{name}:{line}"})
                    continue
            rejects.append(Reject(path, line, out, _snippet(raw)))
        for r in rejects[:MAX_LOGGED_REJECTS]:
            log.warning("%s:%d: %s", r.file, r.line, r.reason)
        if len(rejects) > MAX_LOGGED_REJECTS:
            log.warning("%s: %d more rejected rows not shown (%d in all)", path, len(rejects) - MAX_LOGGED_REJECTS, len(rejects))
        log.info("%s: %d rows loaded, %d rejected", path, len(rows), len(rejects))
    return rows, rejects


def load_instructions(cfg: DataConfig) -> tuple[list[dict], list[Reject]]:
    """Rows ``{"id", "instruction", "source": "<file name>:<line>"}`` plus the rejected lines, from
    ``data.path`` and then every ``data.also`` file (ids prefixed with the file stem there)."""
    rows, rejects = _load_source(cfg, cfg.limit)
    seen = {r["id"] for r in rows}
    for i, src in enumerate(cfg.also):
        if cfg.limit is not None and len(rows) >= cfg.limit:
            break
        more, bad = _load_source(src, None if cfg.limit is None else cfg.limit - len(rows), f"data.also.{i}.path")
        rejects += bad
        for r in more:
            rid = f"{Path(r['source'].rsplit(':', 1)[0]).stem}:{r['id']}"
            if rid in seen:
                rejects.append(Reject(src.path, int(r["source"].rsplit(":", 1)[1]), f"duplicate id {rid!r} across files",
                                      _snippet(r["instruction"])))
                continue
            seen.add(rid)
            rows.append({**r, "id": rid})
    return rows, rejects


def _load_source(cfg, limit: Optional[int], what: str = "data.path") -> tuple[list[dict], list[Reject]]:
    """One file of ``load_instructions`` (a ``DataConfig`` or ``DataSourceConfig``)."""

    def convert(row: dict) -> Union[dict, str]:
        text, err = _text(row, cfg.instruction_field)
        if err:
            return err
        if cfg.input_field:  # self-instruct: optional input appended; absent/empty is fine
            extra = get_field(row, cfg.input_field)
            if extra is not _MISSING and extra is not None and not isinstance(extra, str):
                return f"field {cfg.input_field!r} is not a string (got {type(extra).__name__})"
            if isinstance(extra, str) and extra.strip():
                text = f"{text}\n\n{extra.strip()}"
        rid = None
        if cfg.id_field:
            rid = get_field(row, cfg.id_field)
            if rid is _MISSING or rid is None:
                return f"missing field {cfg.id_field!r}"
            if isinstance(rid, (dict, list)):
                return f"field {cfg.id_field!r} is not a scalar id"
        out = {"id": rid, "instruction": text}
        if cfg.category_field:  # an optional reference label: absent or not a string = unlabelled
            ref = get_field(row, cfg.category_field)
            out["reference_category"] = ref.strip() if isinstance(ref, str) and ref.strip() else None
        return out

    return _load(cfg.path, cfg.format, convert, limit, what)


def load_pairwise_eval(path: str, format: str = "auto", limit: Optional[int] = None) -> tuple[list[dict], list[Reject]]:
    """LLMBar ``{input, output_1, output_2, label}`` or RewardBench ``{prompt, chosen, rejected,
    subset}`` -> ``{id, instruction, chosen, rejected, subset, source}``. LLMBar's subset is the
    file stem (e.g. "Natural")."""
    stem = Path(path).stem

    def convert(row: dict) -> Union[dict, str]:
        if "output_1" in row:  # LLMBar
            label = row.get("label")
            if str(label) not in ("1", "2") or isinstance(label, bool):
                return f"field 'label' must be 1 or 2, got {label!r}"
            keys = ("input", "output_1", "output_2") if str(label) == "1" else ("input", "output_2", "output_1")
            subset = stem
        elif "chosen" in row:  # RewardBench
            keys = ("prompt", "chosen", "rejected")
            subset = row["subset"] if isinstance(row.get("subset"), str) and row["subset"] else stem
        else:
            return "unrecognized row: expected LLMBar {input, output_1, output_2, label} or RewardBench {prompt, chosen, rejected}"
        vals = []
        for k in keys:
            v = get_field(row, k)
            # Answers are kept verbatim (whitespace can be what a judge must notice); only checked.
            if v is _MISSING or v is None:
                return f"missing field {k!r}"
            if not isinstance(v, str):
                return f"field {k!r} is not a string (got {type(v).__name__})"
            if not v.strip():
                return f"field {k!r} is empty"
            vals.append(v)
        rid = row.get("id")
        return {"id": rid if isinstance(rid, (str, int)) and not isinstance(rid, bool) else None,
                "instruction": vals[0], "chosen": vals[1], "rejected": vals[2], "subset": subset}

    return _load(path, format, convert, limit, "pairwise eval path")


# ---------------------------------------------------------------------------- stage records

@contextmanager
def _atomic(path: PathLike) -> Iterator[str]:
    """Yield a tmp path next to ``path``; moved into place only if the block succeeds."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Unique name, not mkstemp: the writer creates it, so it gets normal (umask) permissions.
    tmp = str(dest.parent / f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, dest)  # atomic on POSIX within one filesystem
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_records(path: PathLike, records: list[dict]) -> None:
    """Write dicts as parquet. Columns are the union of all records' keys (first-seen order):
    a key missing from a record reads back as None (``from_pylist`` would use row 0's only).
    Nested dicts become structs whose keys are unioned the same way."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names: dict[str, None] = {}
    for r in records:
        names.update(dict.fromkeys(r))
    cols = {}
    for n in names:
        try:
            cols[n] = pa.array([r.get(n) for r in records])
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise ValueError(f"write_records({path}): column {n!r} has values of incompatible types: {e}") from e
    with _atomic(path) as tmp:
        pq.write_table(pa.table(cols) if cols else pa.table({}), tmp)


def read_records(path: PathLike) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(str(path)).to_pylist()


def write_jsonl(path: PathLike, rows: Iterable[dict]) -> None:
    with _atomic(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_jsonl(path: PathLike) -> list[dict]:
    """Strict reader for our own files: a bad line is a bug, so it raises (with file:line)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{i}: invalid JSON: {e.msg}") from e
    return out
