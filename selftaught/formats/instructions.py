"""Instruction files (``data.path`` and ``data.also``): the rows the load stage writes, each with its id,
its text and where it came from; ``check_instructions`` reads them once before anything starts."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Optional, Union

from selftaught.config import DataConfig
from selftaught.formats.reading import MISSING, Reject, get_field, rows_or_stop, snippet, text_field


def check_instructions(cfg: DataConfig) -> tuple[int, int]:
    """(rows, rejected) of the instruction files, read as the load stage reads them (up to
    ``data.limit``, streamed: nothing kept); ``DataError`` if a file gives no row. For the driver,
    before Ray or any engine starts: an input that cannot work stops the run in one line."""
    rows = rejects = 0
    for x in iter_instructions(cfg):
        rows += isinstance(x, dict)
        rejects += isinstance(x, Reject)
    return rows, rejects


def load_instructions(cfg: DataConfig) -> tuple[list[dict], list[Reject]]:
    """Rows ``{"id", "instruction", "source": "<file name>:<line>"}`` plus the rejected lines, from
    ``data.path`` and then every ``data.also`` file (ids prefixed with the file stem there).
    ``DataError`` (naming the key to fix) if a file gives no row."""
    items = list(iter_instructions(cfg))
    return [x for x in items if isinstance(x, dict)], [x for x in items if isinstance(x, Reject)]


def iter_instructions(cfg: DataConfig) -> Iterator[Union[dict, Reject]]:
    """``load_instructions``, streamed in file order: the load stage writes its shards from this."""
    seen: set[str] = set()
    n = 0
    sources = [(cfg, "data.path")] + [(src, f"data.also.{i}.path") for i, src in enumerate(cfg.also)]
    for i, (src, what) in enumerate(sources):
        if cfg.limit is not None and n >= cfg.limit:
            break
        for x in _iter_source(src, None if cfg.limit is None else cfg.limit - n, what):
            if isinstance(x, dict) and i > 0:  # data.also: ids get the file stem, unique across files
                rid = f"{Path(x['source'].rsplit(':', 1)[0]).stem}:{x['id']}"
                if rid in seen:
                    x = Reject(src.path, int(x["source"].rsplit(":", 1)[1]), f"duplicate id {rid!r} across files",
                               snippet(x["instruction"]))
                else:
                    x = {**x, "id": rid}
            if isinstance(x, dict):
                seen.add(x["id"])
                n += 1
            yield x


def _iter_source(cfg, limit: Optional[int], what: str = "data.path") -> Iterator[Union[dict, Reject]]:
    """One file of ``iter_instructions`` (a ``DataConfig`` or ``DataSourceConfig``)."""
    row_keys: list[str] = []  # the first object's keys: the hint when no row maps

    def convert(row: dict) -> Union[dict, str]:
        if not row_keys:
            row_keys.extend(str(k) for k in list(row)[:12])
        text, err = text_field(row, cfg.instruction_field)
        if err:
            return err
        if cfg.input_field:  # self-instruct: optional input appended; absent/empty is fine
            extra = get_field(row, cfg.input_field)
            if extra is not MISSING and extra is not None and not isinstance(extra, str):
                return f"field {cfg.input_field!r} is not a string (got {type(extra).__name__})"
            if isinstance(extra, str) and extra.strip():
                text = f"{text}\n\n{extra.strip()}"
        rid = None
        if cfg.id_field:
            rid = get_field(row, cfg.id_field)
            if rid is MISSING:
                rid = None  # forgiving: <file stem>-<line>, so plain {"instruction"} rows load under data=demo's id_field
            if isinstance(rid, (dict, list)):
                return f"field {cfg.id_field!r} is not a scalar id"
        out = {"id": rid, "instruction": text}
        if cfg.category_field:  # an optional reference label: absent or not a string = unlabelled
            ref = get_field(row, cfg.category_field)
            out["reference_category"] = ref.strip() if isinstance(ref, str) and ref.strip() else None
        return out

    yield from rows_or_stop(cfg, convert, limit, what, row_keys)

