"""What identifies an input file in a stage hash: its content, not where or when it was copied.

A remounted data folder, a fresh clone or a copy of the same files onto another node keeps every
finished stage; an edited file redoes the stages that read it (even one edited within the same
mtime tick, which is why nothing is memoised on mtime: hashing runs at ~1 GB/s)."""
from __future__ import annotations

import hashlib

_CHUNK = 1 << 20


def content_digest(path: str) -> str:
    """blake2b of the file's bytes (hex, 16 bytes)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()
