"""Stage records: parquet shards with a declared schema, and jsonl. Written durably and atomically
(``atomic.py``) so a killed stage never leaves a half file that a resumed run would take as done."""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Optional, Union

from selftaught.atomic import atomic_path

log = logging.getLogger("selftaught.io")

PathLike = Union[str, "os.PathLike[str]"]


def write_records(path: PathLike, records: list[dict], schema=None) -> None:
    """Write dicts as parquet. Columns are the union of all records' keys (first-seen order):
    a key missing from a record reads back as None (``from_pylist`` would use row 0's only).
    Nested dicts become structs whose keys are unioned the same way.

    ``schema`` (a stage's ``rows.arrow_schema``): its columns come first, in its types (absent ones
    as nulls), then any others as inferred. No rows: a file with the schema and no row group (a
    0-row row group makes ``datasets`` fail on "BatchSize must be greater than 0"); pyarrow reads it
    as an empty table with its columns, ``datasets`` streamed as an empty split with its features."""
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
    table = pa.table(cols) if cols else pa.table({})
    if schema is not None:
        table = _conform(table, schema, path)
    with atomic_path(path) as tmp:
        if table.num_rows == 0:
            pq.ParquetWriter(tmp, table.schema).close()  # schema only: a 0-row row group breaks readers
        else:
            pq.write_table(table, tmp)


def _widen(declared, inferred):
    """``declared`` plus the struct fields only ``inferred`` has (Arrow's struct cast drops fields the
    target lacks: a row's undeclared key would be lost)."""
    import pyarrow as pa

    if pa.types.is_struct(declared) and pa.types.is_struct(inferred):
        have = {f.name: f for f in inferred}
        fields = [pa.field(f.name, _widen(f.type, have[f.name].type) if f.name in have else f.type) for f in declared]
        fields += [f for f in inferred if f.name not in declared.names]
        return pa.struct(fields)
    if pa.types.is_list(declared) and pa.types.is_list(inferred):
        return pa.list_(_widen(declared.value_type, inferred.value_type))
    return declared


def _conform(table, schema, path: PathLike):
    """``table`` in ``schema``'s columns and types first; a value that does not fit its declared type
    keeps the inferred one (logged), never lost."""
    import pyarrow as pa

    cols, fields = [], []
    for f in schema:
        if f.name in table.column_names:
            col = table[f.name]
            try:
                col = col.cast(_widen(f.type, col.type))
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
                log.warning("%s: column %r is %s, not its declared %s (%s)", path, f.name, col.type, f.type, e)
        else:
            col = pa.nulls(table.num_rows, f.type)
        cols.append(col)
        fields.append(pa.field(f.name, col.type))
    for name in table.column_names:
        if name not in schema.names:
            cols.append(table[name])
            fields.append(pa.field(name, table[name].type))
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))


def read_records(path: PathLike, columns: Optional[list[str]] = None) -> list[dict]:
    """Rows of one parquet file, or of every ``part-*.parquet`` in a folder (a stage's shards, in order).
    ``columns``: only these (those a file lacks read as None)."""
    import pyarrow.parquet as pq

    p = Path(path)
    if p.is_dir():
        return [r for f in sorted(p.glob("part-*.parquet")) for r in read_records(f, columns)]
    if columns is None:
        return pq.read_table(str(p)).to_pylist()
    have = set(pq.read_schema(str(p)).names)
    t = pq.read_table(str(p), columns=[c for c in columns if c in have])
    missing = dict.fromkeys(c for c in columns if c not in have)
    if not missing:
        return t.to_pylist()
    if t.num_columns == 0:
        return [dict(missing) for _ in range(t.num_rows)]
    return [{**r, **missing} for r in t.to_pylist()]


def write_jsonl(path: PathLike, rows: Iterable[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
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
