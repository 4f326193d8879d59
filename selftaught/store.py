"""Stage artifacts on disk: the contract between stages and the basis of resume.

``<run>/round_<k>/<stage>/`` holds ``data.parquet`` (kept rows), ``failures.jsonl`` (every dropped
row with its reason and source), ``summary.json`` and, written last, ``_COMPLETE.json`` with the
stage's config hash. A stage is done iff its marker exists with the hash the current config
gives; hashes chain through upstream stages, so a change redoes only what it invalidates.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from selftaught.io import read_jsonl, read_records, write_jsonl, write_records

MARKER = "_COMPLETE.json"


def _atomic_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


class RoundStore:
    def __init__(self, run_dir: str | Path, round_index: int | str):
        # An int is a round (``round_<k>/``); a string names a shared folder (``data/``: the pairs).
        self.root = Path(run_dir) / (f"round_{round_index}" if isinstance(round_index, int) else round_index)

    def dir(self, stage: str) -> Path:
        return self.root / stage

    def is_complete(self, stage: str, config_hash: str) -> bool:
        marker = self.dir(stage) / MARKER
        if not marker.is_file():
            return False
        try:
            return json.loads(marker.read_text()).get("hash") == config_hash
        except json.JSONDecodeError:
            return False

    def save(self, stage: str, config_hash: str, rows: list[dict], failures: list[dict], summary: dict) -> None:
        d = self.dir(stage)
        if d.exists():  # stale or partial output of an older config: never mix the two
            shutil.rmtree(d)
        d.mkdir(parents=True)
        write_records(d / "data.parquet", rows)
        write_jsonl(d / "failures.jsonl", failures)
        _atomic_json(d / "summary.json", summary)
        _atomic_json(d / MARKER, {"hash": config_hash, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    def rows(self, stage: str) -> list[dict]:
        return read_records(self.dir(stage) / "data.parquet")

    def failures(self, stage: str) -> list[dict]:
        return read_jsonl(self.dir(stage) / "failures.jsonl")

    def summary(self, stage: str) -> dict:
        return json.loads((self.dir(stage) / "summary.json").read_text())
