"""Stage 0: read the instruction files (``data.path`` + ``data.also``) into rows.

Runs in the driver: ``items`` yields every row and every rejected line (as a failure with its
file:line and reason) in file order, which the driver cuts into shards of ``shard_size``. A file
that gives no row raises ``io.DataError`` (the driver checks this before any engine starts).
"""
from __future__ import annotations

from collections.abc import Iterator

from selftaught import io
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


SPEC = StageSpec(name=STAGE, row_type=Instruction, process=None, rows_per_input=1)
