"""Reading untrusted user files, row by row: the machinery every format shares.

Every bad row becomes a ``Reject`` (file, 1-based line, reason) and loading goes on, so one broken
line never costs a run; a file that gives no row at all (empty, every row rejected, another format
than its suffix says) is a ``DataError``, one line naming the key to fix, raised before any engine
starts. A format (``selftaught.formats``) is a converter from one JSON object to a row, or to the
reason it cannot be one.
"""
from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Union

from selftaught.config import ConfigError
from selftaught.fingerprint import content_digest

log = logging.getLogger("selftaught.io")

BUILTIN = "builtin:"
FORMATS = ("jsonl", "json", "parquet")
MAX_LOGGED_REJECTS = 20
SNIPPET_LEN = 120
MISSING = object()  # distinguishes an absent field from an explicit null


class DataError(ConfigError):
    """An input file that cannot give a single row; the message starts with the key to fix (the
    CLI prints it as one line and exits 2, like any config error)."""


def _key(what: str, name: str) -> str:
    """The config key beside ``what``: ("data.also.0.path", "format") -> "data.also.0.format"."""
    return f"{what.rsplit('.', 1)[0]}.{name}" if what.endswith(".path") else name


@dataclass
class Reject:
    file: str  # absolute path of the input file
    line: int  # 1-based line (jsonl), element index (json) or row index (parquet)
    reason: str
    snippet: str  # <= 120 chars, escaped so it prints on one line


def snippet(raw: Any) -> str:
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
    """``turns.0.content`` -> row["turns"][0]["content"]; ``MISSING`` if any step is absent."""
    cur = row
    for part in dotted.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return MISSING
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


def _format(path: str, fmt: str, what: str = "path") -> str:
    key = _key(what, "format")
    if fmt != "auto":
        if fmt not in FORMATS:
            raise DataError(f"{key}: must be auto|{'|'.join(FORMATS)}, got {fmt!r}")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix.lstrip(".") in FORMATS:
        return suffix.lstrip(".")
    hint = "CSV is not read: convert it to JSON lines" if suffix == ".csv" else "jsonl = one JSON object per line"
    raise DataError(f"{what}: cannot infer the format of {path} from suffix {suffix!r}; set {key}=jsonl|json|parquet ({hint})")


def _iter_rows(path: str, fmt: str, what: str = "path") -> Iterator[tuple[int, Any, Any, Optional[str]]]:
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
            if e.msg == "Extra data" and _first_line_is_json(data):  # JSON lines under a .json name
                raise DataError(f"{what}: {path} holds JSON lines (one object per line), not one JSON document; "
                                f"set {_key(what, 'format')}=jsonl") from None
            raise DataError(f"{what}: {path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
        except UnicodeDecodeError as e:
            raise DataError(f"{what}: {path}: not valid UTF-8 at byte {e.start}") from None
        if not isinstance(obj, list):
            raise DataError(f"{what}: {path}: expected a top-level JSON list of objects, got {type(obj).__name__} "
                            f"(one object per line is {_key(what, 'format')}=jsonl)")
        for i, row in enumerate(obj, 1):
            yield i, row, row, None
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{what}: {path} is not a parquet file ({e}); set {_key(what, 'format')}=jsonl|json|parquet") from None
        i = 0
        for batch in pf.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                i += 1
                yield i, row, row, None


def _first_line_is_json(data: bytes) -> bool:
    line = next((x for x in data.splitlines() if x.strip()), b"")
    try:
        json.loads(line)
        return True
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return False


def text_field(row: dict, dotted: str, strip: bool = True) -> tuple[str, Optional[str]]:
    """(text, error) for a required non-empty string field; ``strip=False`` keeps an answer verbatim
    (its whitespace can be what a judge must notice)."""
    v = get_field(row, dotted)
    if v is MISSING or v is None:
        return "", f"missing field {dotted!r}"
    if not isinstance(v, str):
        return "", f"field {dotted!r} is not a string (got {type(v).__name__})"
    if not v.strip():
        return "", f"field {dotted!r} is empty"
    return (v.strip() if strip else v), None


# A converter turns one JSON object into a partial record (without "source"; "id" may be None
# for the default) or returns an error string.
Converter = Callable[[dict], Union[dict, str]]


def iter_load(spec: str, fmt: str, convert: Converter, limit: Optional[int], what: str) -> Iterator[Union[dict, Reject]]:
    """Rows and rejects of one file, in file order, streamed (only the ids seen are kept)."""
    n_rows = n_rejects = 0
    first_line: dict[str, int] = {}
    with _source_path(spec, what) as path:
        name, stem = Path(path).name, Path(path).stem
        for line, row, raw, err in _iter_rows(path, _format(path, fmt, what), what):
            if limit is not None and n_rows >= limit:
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
                    n_rows += 1
                    yield {"id": rid, **{k: v for k, v in out.items() if k != "id"}, "source": f"{name}:{line}"}
                    continue
            n_rejects += 1
            if n_rejects <= MAX_LOGGED_REJECTS:
                log.warning("%s:%d: %s", path, line, out)
            yield Reject(path, line, out, snippet(raw))
        if n_rejects > MAX_LOGGED_REJECTS:
            log.warning("%s: %d more rejected rows not shown (%d in all)", path, n_rejects - MAX_LOGGED_REJECTS, n_rejects)
        # On the console when rows were rejected (each rejected row was a warning); else the log file only.
        log.info("%s: %d rows loaded, %d rejected", path, n_rows, n_rejects, extra={"console": n_rejects > 0})


def load_all(spec: str, fmt: str, convert: Converter, limit: Optional[int], what: str) -> tuple[list[dict], list[Reject]]:
    items = list(iter_load(spec, fmt, convert, limit, what))
    return [x for x in items if isinstance(x, dict)], [x for x in items if isinstance(x, Reject)]



def rows_or_stop(src, convert: Converter, limit: Optional[int], what: str, row_keys: list[str]) -> Iterator[Union[dict, Reject]]:
    """``iter_load`` of ``src.path``; a file that gives no row is a ``DataError`` naming why (the counts
    by reason and the field mapping or format to fix)."""
    early: list[Reject] = []  # the rejects before the first row: the message when no row comes
    any_row = False
    for x in iter_load(src.path, src.format, convert, limit, what):
        if isinstance(x, dict):
            any_row = True
        elif not any_row:
            early.append(x)
        yield x
    if not any_row:
        raise DataError(_no_rows(src, what, early, row_keys))


def _no_rows(src, what: str, rejects: list[Reject], row_keys: list[str]) -> str:
    """Why a file gave no row, in one line: counts by reason and the mapping or format to fix."""
    path = rejects[0].file if rejects else resolve_data_path(src.path, what)
    if not rejects:
        return f"{what}: {path} has no rows (an empty file)"
    kinds = Counter(re.sub(r"^(invalid JSON|duplicate id).*", r"\1", r.reason) for r in rejects)
    counts = ", ".join(f"{n} {k}" for k, n in kinds.most_common())
    msg = f"{what}: none of the {len(rejects)} rows of {path} is usable ({counts})"
    if any(k in kinds for k in ("invalid JSON", "not valid UTF-8")):
        fmt = src.format if src.format != "auto" else Path(path).suffix.lstrip(".")
        msg += f"; read as {fmt}: set {_key(what, 'format')}=jsonl|json|parquet to the file's format"
    mapping = [(name, getattr(src, name, None)) for name in ("instruction_field", "input_field", "id_field", "a_field",
                                                            "b_field", "response_field", "reference_field")]
    named = [f"{_key(what, name)}={field}" for name, field in mapping if field and any(f"field {field!r}" in k for k in kinds)]
    if named:
        seen = f" (the rows have {', '.join(row_keys)})" if row_keys else ""
        msg += f"; map the rows' fields{seen}: now {', '.join(named)}"
    return msg


def input_path(path: Optional[str]) -> Optional[str]:
    """A user's input path made absolute (``builtin:`` names and None as they are)."""
    if not path or path.startswith(BUILTIN):
        return path
    return os.path.abspath(os.path.expanduser(path))


def file_fingerprint(path: Optional[str]) -> Optional[list]:
    """What identifies an input file in a stage hash: its absolute path and content."""
    if not path:
        return None
    p = input_path(path)
    if p.startswith(BUILTIN):
        p = resolve_data_path(p, "judge_file.path")
    return [p, content_digest(p)]


SAME_ANSWERS = "the two responses are identical"


def scalar_id(row: dict):
    """An eval row's own ``id`` when it is a string or an integer; else None (the reader numbers it)."""
    rid = row.get("id")
    return rid if isinstance(rid, (str, int)) and not isinstance(rid, bool) else None


def subset_of(row: dict, stem: str) -> str:
    """An eval row's ``subset`` when it names one; else its file's stem."""
    return row["subset"] if isinstance(row.get("subset"), str) and row["subset"] else stem
