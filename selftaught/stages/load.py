"""Stage 0: read the instruction files (``data.path`` + ``data.also``) into rows.

Runs in the driver: ``items`` yields every row and every rejected line (as a failure with its
file:line and reason) in file order, which the driver cuts into shards of ``shard_size``. A file
that gives no row raises ``io.DataError`` (the driver checks this before any engine starts).
"""
from __future__ import annotations

from collections.abc import Iterator

from selftaught import io
from selftaught.fingerprint import content_digest
from selftaught.config import DataConfig
from selftaught.rows import Instruction
from selftaught.stages.base import StageSpec

STAGE = "load"


def items(cfg: DataConfig) -> Iterator[dict]:
    """Streamed: memory does not grow with the file (only the ids seen are kept, for duplicates)."""
    for x in io.iter_instructions(cfg):
        if isinstance(x, io.Reject):
            yield {"source": f"{x.file}:{x.line}", "reason": x.reason, "snippet": x.snippet, "status": x.reason}
        else:
            yield x


def data_paths(cfg: DataConfig) -> list[str]:
    """Every instruction file, resolved (a missing one raises, naming its key)."""
    return [io.resolve_data_path(cfg.path)] + [io.resolve_data_path(s.path, f"data.also.{i}.path")
                                               for i, s in enumerate(cfg.also)]


def fingerprint(cfg: DataConfig) -> list[dict]:
    """What identifies the data in the stage hash: each file's content (and its path, unless shipped)."""
    out = []
    for spec, path in zip([cfg.path] + [s.path for s in cfg.also], data_paths(cfg)):
        key = {"builtin": spec} if spec.startswith("builtin:") else {"path": path}
        out.append({**key, "blake2b": content_digest(path)})
    return out


SPEC = StageSpec(name=STAGE, row_type=Instruction, process=None, rows_per_input=1, scope="run",
                 config=lambda cfg, up: cfg.data, hash_extra=lambda cfg: fingerprint(cfg.data),
                 items=lambda c, up: items(c))
