"""The on-disk layout of a run: the contract between stages and the basis of resume.

    <run>/data/<stage>/            the pairs (load, categorize, select, pairs), shared by every round
    <run>/round_<k>/<stage>/       the round's stages; round_<k>/model/ the judge it trained
        manifest.jsonl             line 1: {"hash", "shard_size"}; then one line per committed shard
        data/part-00000.parquet    a shard's kept rows
        failures/part-00000.jsonl  a shard's dropped rows, each with its reason and source
        summary.json               the stage summary, merged from the manifest's shard stats
        _COMPLETE.json             written last: the stage's config hash

A shard is committed when its manifest line is (the files are written first, each durably, see
``atomic.py``), so a killed stage resumes at its first uncommitted shard; files of shards that were
in flight are deleted on reopen. A stage is done iff its marker holds the hash the current config
gives; hashes chain through upstream stages, so a change redoes only what it invalidates, and a
manifest of another hash or shard size is discarded whole (never mixed).
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional

from selftaught import atomic
from selftaught.io import Reject, read_jsonl, read_records, write_jsonl, write_records
from selftaught.rows import arrow_schema

log = logging.getLogger("selftaught.store")

MARKER = "_COMPLETE.json"
MANIFEST = "manifest.jsonl"
DATA, FAILURES = "data", "failures"
INPUT, REJECTED = "input", "rejected.jsonl"  # a stage that reads a user file: its input shards, unusable rows


def shard_name(i: int) -> str:
    return f"part-{i:05d}"


def _index(p: Path) -> int:
    return int(p.name.split(".")[0].split("-")[1])


class StageDir:
    """One stage's folder: its shards, manifest, summary and marker."""

    def __init__(self, root: Path):
        self.root = root

    @property
    def data_dir(self) -> Path:
        return self.root / DATA

    def shard_files(self, i: int) -> tuple[Path, Path]:
        return self.data_dir / f"{shard_name(i)}.parquet", self.root / FAILURES / f"{shard_name(i)}.jsonl"

    # -- state --------------------------------------------------------------------------------
    def is_complete(self, config_hash: str) -> bool:
        marker = self.root / MARKER
        if not marker.is_file():
            return False
        try:
            return json.loads(marker.read_text()).get("hash") == config_hash
        except json.JSONDecodeError:
            return False

    def entries(self) -> list[dict]:
        """Committed shards, in shard order (the header line excluded)."""
        lines = atomic.read_log(self.root / MANIFEST)
        return sorted((e for e in lines[1:] if "shard" in e), key=lambda e: e["shard"])

    def open(self, config_hash: str, shard_size: int) -> dict[int, dict]:
        """Prepare to (re)run the stage; returns its committed shards by index.

        A manifest of another hash or shard size (an older config), or a stage without a manifest
        (an older layout), is discarded whole; files of uncommitted shards and tmp files are deleted."""
        header = {"hash": config_hash, "shard_size": shard_size}
        lines = atomic.read_log(self.root / MANIFEST)
        if self.root.exists() and (not lines or {k: lines[0].get(k) for k in header} != header):
            shutil.rmtree(self.root)
        if not self.root.exists() or not lines:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic.write_text(self.root / MANIFEST, json.dumps(header) + "\n")
            return {}
        (self.root / MARKER).unlink(missing_ok=True)
        committed = {e["shard"]: e for e in self.entries()}
        atomic.remove_tmp_files(self.root)
        for sub in (DATA, FAILURES):
            for p in (self.root / sub).glob("part-*"):
                if _index(p) not in committed:
                    p.unlink()  # written by a shard that was in flight when the run died
        return committed

    def write_shard(self, i: int, rows: list[dict], failures: list[dict], row_type: Optional[type] = None) -> None:
        """Both files of shard ``i``, each durably (safe to call from a worker on another node); the data
        in the schema of ``row_type`` (``rows.arrow_schema``) when given."""
        data, fails = self.shard_files(i)
        write_records(data, rows, arrow_schema(row_type) if row_type is not None else None)
        write_jsonl(fails, failures)

    def write_inputs(self, items: Iterable[Any], shard_size: int, rejects: Optional[list[dict]] = None) -> list[Path]:
        """A user file's rows as this stage's input shards (``input/part-NNNNN.parquet``, rewritten on
        each run: the same rows, cut the same way) and its rejects (``io.Reject`` items, plus ``rejects``
        already as ``{source, reason, snippet}``) in ``rejected.jsonl``."""
        paths: list[Path] = []
        buf: list[dict] = []
        rejects = list(rejects or [])

        def flush() -> None:
            paths.append(self.root / INPUT / f"{shard_name(len(paths))}.parquet")
            write_records(paths[-1], buf)
            buf.clear()

        for x in items:
            if isinstance(x, Reject):
                rejects.append({"source": f"{x.file}:{x.line}", "reason": x.reason, "snippet": x.snippet})
                continue
            buf.append(x)
            if len(buf) == shard_size:
                flush()
        if buf:
            flush()
        write_jsonl(self.root / REJECTED, rejects)
        return paths

    def rejected(self) -> dict:
        """What ``write_inputs`` set aside: ``{rejected_lines, rejected_by_reason}`` for the summary."""
        reasons = Counter(r["reason"] for r in read_jsonl(self.root / REJECTED))
        return {"rejected_lines": sum(reasons.values()), "rejected_by_reason": dict(reasons.most_common())}

    def commit(self, entry: dict) -> None:
        atomic.append_line(self.root / MANIFEST, json.dumps(entry, default=str))

    def finish(self, config_hash: str, summary: dict) -> None:
        atomic.write_json(self.root / "summary.json", summary)
        atomic.write_json(self.root / MARKER, {"hash": config_hash, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    # -- reading -------------------------------------------------------------------------------
    def data_files(self) -> list[Path]:
        return [self.shard_files(e["shard"])[0] for e in self.entries()]

    def failure_files(self) -> list[Path]:
        return [self.shard_files(e["shard"])[1] for e in self.entries()]

    def rows(self, columns: Optional[list[str]] = None) -> list[dict]:
        """Every kept row, in shard order. For small stages and tests: large ones stream ``data_files``."""
        return [r for p in self.data_files() for r in read_records(p, columns)]

    def failures(self) -> list[dict]:
        return [r for p in self.failure_files() for r in read_jsonl(p)]

    def summary(self) -> dict:
        return json.loads((self.root / "summary.json").read_text())


class RoundStore:
    def __init__(self, run_dir: str | Path, round_index: int | str):
        # An int is a round (``round_<k>/``); a string names a shared folder (``data/``: the pairs).
        self.root = Path(run_dir) / (f"round_{round_index}" if isinstance(round_index, int) else round_index)

    def dir(self, stage: str) -> Path:
        return self.root / stage

    def stage(self, stage: str) -> StageDir:
        return StageDir(self.dir(stage))

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    def is_complete(self, stage: str, config_hash: str) -> bool:
        return self.stage(stage).is_complete(config_hash)

    def save(self, stage: str, config_hash: str, rows: list[dict], failures: list[dict], summary: dict[str, Any]) -> None:
        """A whole stage at once, as one shard (a stage that makes no rows, or copies another's)."""
        sd = self.stage(stage)
        if sd.root.exists():  # stale or partial output of an older config: never mix the two
            shutil.rmtree(sd.root)
        sd.open(config_hash, 0)
        sd.write_shard(0, rows, failures)
        sd.commit({"shard": 0, "in": summary.get("in", len(rows) + len(failures)), "out": len(rows),
                   "failed": len(failures)})
        sd.finish(config_hash, summary)

    def rows(self, stage: str) -> list[dict]:
        return self.stage(stage).rows()

    def failures(self, stage: str) -> list[dict]:
        return self.stage(stage).failures()

    def summary(self, stage: str) -> dict:
        return self.stage(stage).summary()
