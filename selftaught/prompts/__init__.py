"""Prompt templates as files: ``<name>.system.txt`` (optional) and ``<name>.user.txt`` (Jinja2).

A template's id is ``<name>@<sha256[:8]>`` of its text, recorded in every record's provenance, so
an edited prompt is visible in the artifacts and invalidates the stages that used it.
"""
from __future__ import annotations

import hashlib
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

    @property
    def id(self) -> str:
        digest = hashlib.sha256(f"{self.system}\x00{self.user}".encode()).hexdigest()[:8]
        return f"{self.name}@{digest}"

    def messages(self, **values) -> list[dict]:
        msgs = []
        if self.system is not None:
            msgs.append({"role": "system", "content": _ENV.from_string(self.system).render(**values).strip()})
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
    return Template(
        name=base.name,
        system=system.read_text(encoding="utf-8") if system.is_file() else None,
        user=user.read_text(encoding="utf-8"),
    )
