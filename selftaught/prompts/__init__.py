"""Prompt templates as files: ``<name>.system.txt`` (optional), ``<name>.user.txt`` (Jinja2) and
``<name>.examples.jsonl`` (optional few-shot turns, ``{"user": ..., "assistant": ...}`` per line,
sent as earlier chat turns: small models follow a task from examples far better than from a
description).

A template's id is ``<name>@<sha256[:8]>`` of its text, recorded in every record's provenance, so
an edited prompt is visible in the artifacts and invalidates the stages that used it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2

PROMPTS_DIR = Path(__file__).parent
_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)


@dataclass(frozen=True)
class Template:
    name: str
    system: str | None
    user: str
    examples: tuple[tuple[str, str], ...] = ()  # (user, assistant) turns before the real one

    @property
    def id(self) -> str:
        shots = f"\x00{self.examples}" if self.examples else ""  # ids of example-free templates unchanged
        digest = hashlib.sha256(f"{self.system}\x00{self.user}{shots}".encode()).hexdigest()[:8]
        return f"{self.name}@{digest}"

    def messages(self, **values) -> list[dict]:
        msgs = []
        if self.system is not None:
            msgs.append({"role": "system", "content": _ENV.from_string(self.system).render(**values).strip()})
        for user, assistant in self.examples:
            msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        msgs.append({"role": "user", "content": _ENV.from_string(self.user).render(**values).strip()})
        return msgs


@lru_cache(maxsize=None)
def load_template(name: str) -> Template:
    """``name`` is a template in this package or a path prefix ``/dir/name`` of user files."""
    base = Path(name) if ("/" in name) else PROMPTS_DIR / name
    user = base.with_name(base.name + ".user.txt")
    if not user.is_file():
        raise FileNotFoundError(f"prompt template {name!r}: {user} does not exist")
    system = base.with_name(base.name + ".system.txt")
    examples = base.with_name(base.name + ".examples.jsonl")
    shots = []
    if examples.is_file():
        for i, line in enumerate(examples.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                row = json.loads(line)
                if not (isinstance(row, dict) and isinstance(row.get("user"), str) and isinstance(row.get("assistant"), str)):
                    raise ValueError(f"{examples}:{i}: each line must be {{\"user\": str, \"assistant\": str}}")
                shots.append((row["user"], row["assistant"]))
    return Template(
        name=base.name,
        system=system.read_text(encoding="utf-8") if system.is_file() else None,
        user=user.read_text(encoding="utf-8"),
        examples=tuple(shots),
    )
