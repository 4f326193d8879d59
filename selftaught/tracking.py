"""Experiment tracking (Weights & Biases), offline by default.

One W&B run per ``selftaught run`` (per run directory). Its id is created once and kept, with the
last logged step, in ``<run_dir>/tracking.json``; a resumed run (a new process) re-opens the same
id (``resume="allow"``) and goes on from the persisted step, so steps are monotonic across rounds
and resumes. Offline mode cannot ask the server for the last step, hence the file. W&B writes under
``<run_dir>/wandb/`` (``wandb sync <run_dir>/wandb/offline-run-*`` uploads it later).

Tracking never costs a round: any W&B error is logged as a warning and the tracker turns into a
no-op for the rest of the process. Only the driver process should own a tracker (not Ray workers).

``tracking.backend=none`` or ``tracking.mode=disabled`` gives a no-op tracker with the same API.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import uuid
from pathlib import Path
from typing import Any, Optional, Union

from selftaught import atomic
from selftaught.config import TrackingConfig

log = logging.getLogger("selftaught.tracking")

STATE_FILE = "tracking.json"

# Config keys that look like credentials are dropped (recursively) before the config is logged.
# Whole-word match on key/token (so ``max_tokens``/``tokenizer`` stay), substring on the rest.
_SECRET_WORDS = {"key", "token", "secret", "password", "passwd", "pwd", "credential", "credentials", "apikey"}
_SECRET_SUBSTRINGS = ("secret", "password", "passwd", "credential", "apikey", "api_key", "auth_token")
_SECRET_SUFFIXES = ("key", "token")


def _is_secret_key(name: Any) -> bool:
    s = str(name)
    low = s.lower()
    if any(sub in low for sub in _SECRET_SUBSTRINGS) or low.endswith(_SECRET_SUFFIXES):
        return True
    # split snake/kebab/dotted and camelCase: "hfToken" -> hf, token; "api-key" -> api, key
    words = re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower())
    return any(w in _SECRET_WORDS for w in words)


def _plain(obj: Any) -> Any:
    """Dataclasses / OmegaConf containers -> plain dicts and lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    try:  # optional dependency (hydra's); only used if the object is one of its containers
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, (DictConfig, ListConfig)):
            return OmegaConf.to_container(obj, resolve=False)
    except ImportError:  # pragma: no cover
        pass
    return obj


def drop_secrets(obj: Any) -> Any:
    """Copy of ``obj`` without credential-like keys (api_key, hf_token, password, ...), recursively."""
    obj = _plain(obj)
    if isinstance(obj, dict):
        return {k: drop_secrets(v) for k, v in obj.items() if not _is_secret_key(k)}
    if isinstance(obj, (list, tuple)):
        return [drop_secrets(v) for v in obj]
    return obj


def _cell(v: Any) -> Any:
    """A table cell: scalars as they are, anything else as a string (json where possible)."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    try:
        return json.dumps(v, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(v)


def _scalar(v: Any) -> bool:
    return isinstance(v, (bool, int, float)) and not (isinstance(v, float) and math.isnan(v))


def tracking_enabled(cfg: TrackingConfig) -> bool:
    return cfg.backend == "wandb" and cfg.mode != "disabled"  # values checked by TrackingConfig itself


class Tracker:
    """A W&B run for one run directory. All methods are safe to call when disabled or degraded."""

    def __init__(self, cfg: TrackingConfig, run_dir: Union[str, Path], name: str, config: dict):
        self.cfg = cfg
        self.run_dir = Path(run_dir).absolute()
        self.name = name
        self._run: Any = None
        self._wandb: Any = None
        self._step = -1  # last step logged (persisted in tracking.json when enabled)
        self.run_id: Optional[str] = None
        if not tracking_enabled(cfg):
            return
        try:
            self._start(config)
        except Exception as e:  # noqa: BLE001 - tracking must never stop a run
            self._degrade("could not start the W&B run", e)

    # ------------------------------------------------------------------ state

    @property
    def enabled(self) -> bool:
        """True while a W&B run is open (False for the no-op tracker and after a W&B failure)."""
        return self._run is not None

    @property
    def step(self) -> int:
        """The last step logged (-1 before the first)."""
        return self._step

    @property
    def state_path(self) -> Path:
        return self.run_dir / STATE_FILE

    def _read_state(self) -> dict:
        try:
            with open(self.state_path, encoding="utf-8") as f:
                state = json.load(f)
            return state if isinstance(state, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            log.warning("tracking: ignoring unreadable %s (%s); starting a new W&B run", self.state_path, e)
            return {}

    def _write_state(self) -> None:
        state = {"backend": "wandb", "run_id": self.run_id, "project": self.cfg.project, "name": self.name,
                 "last_step": self._step}
        atomic.write_json(self.state_path, state, indent=1)

    def _degrade(self, what: str, e: BaseException) -> None:
        log.warning("tracking: %s (%s: %s); W&B tracking is off for the rest of this process",
                    what, type(e).__name__, e)
        run, self._run = self._run, None
        if run is not None:
            try:
                run.finish(exit_code=1)
            except Exception:  # noqa: BLE001
                pass

    # ------------------------------------------------------------------ start

    def _start(self, config: dict) -> None:
        import wandb

        self._wandb = wandb
        logging.getLogger("wandb").setLevel(logging.WARNING)
        state = self._read_state()
        self.run_id = str(state.get("run_id") or uuid.uuid4().hex[:12])
        self._step = int(state.get("last_step", -1))
        wandb_dir = self.run_dir / "wandb"  # wandb.init(dir=d) writes into d/wandb/
        wandb_dir.mkdir(parents=True, exist_ok=True)
        self._write_state()  # the id is fixed before W&B writes anything
        settings = wandb.Settings(silent=True, console="off", reinit="create_new", show_info=False,
                                  show_warnings=False)
        self._run = wandb.init(
            project=self.cfg.project,
            entity=self.cfg.entity,
            group=self.cfg.group,
            tags=list(self.cfg.tags or []) or None,
            name=self.name,
            id=self.run_id,
            resume="allow",
            mode=self.cfg.mode,
            dir=str(self.run_dir),
            config=drop_secrets(config or {}),
            settings=settings,
        )
        # Online resume of a run the server knows: never log below its step.
        server_step = int(getattr(self._run, "step", 0) or 0)
        self._step = max(self._step, server_step - 1)
        try:  # per-round metrics also get "round" as their x axis
            self._run.define_metric("round")
            for prefix in ("eval/*", "judge/*", "seconds/*"):
                self._run.define_metric(prefix, step_metric="round")
        except Exception as e:  # noqa: BLE001 - cosmetic
            log.debug("tracking: define_metric failed: %s", e)
        log.info("tracking: W&B %s run %s (%s) in %s, next step %d",
                 self.cfg.mode, self.run_id, self.name, wandb_dir, self._step + 1)

    # ------------------------------------------------------------------ logging

    def _next_step(self) -> int:
        self._step += 1
        return self._step

    def _commit(self, payload: dict, step: int) -> None:
        self._run.log(payload, step=step)
        self._write_state()

    def log(self, metrics: dict, round: Optional[int] = None) -> int:
        """Log ``metrics`` at the next step and return that step; adds ``round`` when given."""
        step = self._next_step()
        if self._run is None:
            return step
        payload = dict(metrics)
        if round is not None:
            payload["round"] = round
        try:
            self._commit(payload, step)
        except Exception as e:  # noqa: BLE001
            self._degrade("log failed", e)
        return step

    def log_train_history(self, round: int, history: list[dict]) -> None:
        """HF ``Trainer.state.log_history`` entries -> one step each, keys prefixed ``train/``."""
        for entry in history or []:
            payload = {}
            for k, v in (entry or {}).items():
                if _scalar(v):
                    payload[k if str(k).startswith("train/") else f"train/{k}"] = v
            if payload:
                self.log(payload, round=round)

    def log_table(self, key: str, rows: list[dict], round: Optional[int] = None) -> None:
        """Log ``rows`` as a W&B table under ``key`` (columns = union of keys, first-seen order)."""
        step = self._next_step()
        if self._run is None:
            return
        try:
            columns: dict[str, None] = {}
            for r in rows:
                columns.update(dict.fromkeys(str(k) for k in r))
            cols = list(columns)
            data = [[_cell(dict((str(k), v) for k, v in r.items()).get(c)) for c in cols] for r in rows]
            table = self._wandb.Table(columns=cols, data=data, allow_mixed_types=True)
            payload: dict[str, Any] = {key: table}
            if round is not None:
                payload["round"] = round
            self._commit(payload, step)
        except Exception as e:  # noqa: BLE001
            self._degrade(f"log_table({key!r}) failed", e)

    def log_summary(self, summary: dict) -> None:
        if self._run is None:
            return
        try:
            self._run.summary.update(dict(summary))
        except Exception as e:  # noqa: BLE001
            self._degrade("log_summary failed", e)

    def finish(self) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        try:
            self._write_state()
            run.finish()
        except Exception as e:  # noqa: BLE001
            log.warning("tracking: finishing the W&B run failed (%s: %s)", type(e).__name__, e)

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self._run is not None:
            run, self._run = self._run, None
            try:
                self._write_state()
                run.finish(exit_code=1)
            except Exception:  # noqa: BLE001
                pass
        else:
            self.finish()


class NoOpTracker(Tracker):
    """Same API, does nothing (no wandb import, no files); ``log`` still returns increasing steps."""

    def __init__(self, cfg: Optional[TrackingConfig] = None, run_dir: Union[str, Path] = ".", name: str = "",
                 config: Optional[dict] = None):
        self.cfg = cfg or TrackingConfig(backend="none")
        self.run_dir = Path(run_dir).absolute()
        self.name = name
        self._run = None
        self._wandb = None
        self._step = -1
        self.run_id = None


def make_tracker(cfg: TrackingConfig, run_dir: Union[str, Path], name: str, config: dict) -> Tracker:
    """A W&B tracker, or the no-op one for ``tracking.backend=none`` / ``tracking.mode=disabled``."""
    if not tracking_enabled(cfg):
        return NoOpTracker(cfg, run_dir, name, config)
    return Tracker(cfg, run_dir, name, config)
