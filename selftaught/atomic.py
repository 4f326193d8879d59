"""The one durable writer: tmp file → fsync → rename → fsync the directory.

``os.replace`` alone is atomic but not durable: after a power loss or a kill of the node, the rename
may be on disk while the file's blocks are not, or the rename itself may be lost. Every file the
project writes (stage shards, manifests, markers, summaries, reports, tracker state) goes through
here, so a resumed run never reads a half or empty file as done.
"""
from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Union

PathLike = Union[str, "os.PathLike[str]"]
TMP_SUFFIX = ".tmp"


def fsync_dir(path: PathLike) -> None:
    """Make a rename or a new file in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: PathLike) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_name(dest: Path) -> Path:
    """A hidden, unique tmp name next to ``dest``. Not mkstemp: the writer creates the file, so it
    gets the usual (umask) permissions."""
    return dest.parent / f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}"


@contextmanager
def atomic_path(path: PathLike) -> Iterator[str]:
    """Yield a tmp path; the caller writes it; it replaces ``path`` durably only if the block succeeds."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(dest)
    try:
        yield str(tmp)
        fsync_file(tmp)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: PathLike, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path: PathLike, obj: Any, indent: int = 2) -> None:
    write_text(path, json.dumps(obj, indent=indent, default=str))


def append_line(path: PathLike, line: str) -> None:
    """Append one line and fsync: the commit of an append-only log (a shard manifest).

    A kill mid-append leaves at most a partial last line, which readers drop (``read_log``)."""
    p = Path(path)
    new = not p.exists()
    with open(p, "a", encoding="utf-8") as f:
        f.write(line.rstrip("\n") + "\n")
        f.flush()
        os.fsync(f.fileno())
    if new:
        fsync_dir(p.parent)


def read_log(path: PathLike) -> list[dict]:
    """The complete JSON lines of an append-only log; a torn last line (a kill mid-append) is cut off
    the file, so the next append starts on a fresh line."""
    p = Path(path)
    if not p.exists():
        return []
    data = p.read_bytes()
    out, good = [], 0
    for raw in data.split(b"\n")[:-1]:  # the last piece is "" or a line the kill cut short
        try:
            out.append(json.loads(raw))
        except ValueError:
            break
        good += len(raw) + 1
    if good < len(data):
        with open(p, "r+b") as f:
            f.truncate(good)
            f.flush()
            os.fsync(f.fileno())
    return out


def remove_tmp_files(root: PathLike) -> int:
    """Delete the tmp files a killed writer left under ``root``; returns how many."""
    n = 0
    for p in Path(root).rglob(f".*{TMP_SUFFIX}"):
        if p.is_file():
            p.unlink()
            n += 1
    return n
