"""What a person sees of a run, and where everything else goes.

The console (the terminal the run was started from: its stdout, and its stderr for the bars) gets the
run's own lines: the resolved config,
one progress bar per stage, each stage's one-line result, warnings that need action, each round's
table and the final table. Everything else that processes print (engines, Ray and Ray Data, Ray
Train workers, TRL, DeepSpeed, W&B, the libraries' warnings) goes to a log file under
``<run>/logs/``: one per stage (``round_1.pairs.log``), and ``run.log`` between stages.

It works at the file-descriptor level because most of that output does not come through Python's
``sys.stderr``: vLLM's engine core is a child process, Ray's core worker logs from C++, and Ray
copies its workers' output to the driver's descriptors. ``install`` keeps duplicates of the
terminal's descriptors for the console and points fds 1 and 2 at the current log file; child processes
inherit them. The run's own loggers write to both the console and the current file, so a stage log
reads in context.

``verbose=true`` installs nothing: every line goes to the terminal, as the libraries print it.
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Optional

LOG_DIR = "logs"
# Rows a stage reports on the console before the rest go to its log file only.
CONSOLE_ROW_FAILURES = 3
_FORMAT = "%(asctime)s %(message)s"
_FILE_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


class _Console:
    """The installed console: the terminal stream, the current log file, the handlers."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        for s in (sys.stdout, sys.stderr):
            s.flush()
        self.saved = (os.dup(1), os.dup(2))  # restored by ``uninstall``
        # The run's lines on the terminal's stdout, its progress bars on its stderr (as before the run).
        self.terminal: IO[str] = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
        self.bars: IO[str] = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
        self.current: Optional[Path] = None
        self.file: Optional[IO[str]] = None
        self.handlers: tuple[logging.Handler, ...] = ()  # (console, to_file), set by ``install``
        self.replaced: list[logging.Handler] = []  # the root's handlers before (Hydra's), put back by ``uninstall``
        self.point_at(log_dir / "run.log")

    def point_at(self, path: Path) -> None:
        """fds 1 and 2 (and so every child process started from now on) write to ``path``."""
        for s in (sys.stdout, sys.stderr):
            s.flush()
        f = open(path, "a", buffering=1, encoding="utf-8")
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        if self.file is not None:
            self.file.close()
        self.file, self.current = f, path

    def close(self) -> None:
        for s in (sys.stdout, sys.stderr):
            s.flush()
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        for fd in self.saved:
            os.close(fd)
        if self.file is not None:
            self.file.close()
        self.terminal.close()
        self.bars.close()


_active: Optional[_Console] = None


class _ConsoleFilter(logging.Filter):
    """The console shows the run's own INFO lines and every warning; a row's failure only when
    its record says so (``extra={"console": True}``: the first few of a stage)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "console", True)


class _BarSafeHandler(logging.StreamHandler):
    """On a terminal, a line logged while a progress bar is drawn gets its own line: the bars (on
    stderr) are cleared, the line written (on stdout), the bars drawn again (``tqdm.write`` does this
    only when both are ``sys.stdout``/``sys.stderr``, which they are not while a run is installed)."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            text = self.format(record)
            live = [b for b in list(getattr(tqdm, "_instances", ())) if not b.disable and b.fp.isatty()]
            for b in live:
                b.clear()
            self.stream.write(text + "\n")
            self.flush()
            for b in live:
                b.refresh()
        except Exception:  # noqa: BLE001 - logging never raises
            self.handleError(record)


class _ConsoleFormatter(logging.Formatter):
    """``HH:MM:SS message``; a warning or an error says so."""

    def __init__(self) -> None:
        super().__init__(_FORMAT, datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            head, _, rest = text.partition(" ")
            text = f"{head} {record.levelname.lower()}: {rest}"
        return text


def _handlers(terminal: IO[str]) -> list[logging.Handler]:
    """(the console handler on the ``selftaught`` logger, the file handler on the root logger)."""
    console = _BarSafeHandler(terminal)
    console.setFormatter(_ConsoleFormatter())
    console.addFilter(_ConsoleFilter())
    # The root's handler writes to whatever fd 2 is now: the current log file.
    to_file = logging.StreamHandler(sys.stderr)
    to_file.setFormatter(logging.Formatter(_FILE_FORMAT))
    return [console, to_file]


def install(run_dir: Path, verbose: bool) -> None:
    """Route the process's output for a run in ``run_dir`` (idempotent; ``uninstall`` undoes it)."""
    global _active
    if verbose or _active is not None:
        return
    _active = _Console(Path(run_dir) / LOG_DIR)
    console, to_file = _handlers(_active.terminal)
    ours = logging.getLogger("selftaught")
    ours.setLevel(logging.INFO)
    ours.addHandler(console)
    root = logging.getLogger()
    # Hydra's handlers (its console one included) give way to ours while the run lasts.
    _active.replaced = root.handlers[:]
    root.handlers = [to_file]
    root.setLevel(logging.INFO)
    _active.handlers = (console, to_file)


def uninstall() -> None:
    global _active
    if _active is None:
        return
    console, _ = _active.handlers
    logging.getLogger("selftaught").removeHandler(console)
    logging.getLogger().handlers = _active.replaced
    _active.close()
    _active = None


@contextmanager
def installed(run_dir: Path, verbose: bool) -> Iterator[None]:
    """``install`` for the block; nested inside another ``installed``, nothing changes."""
    if _active is not None:
        yield
        return
    install(run_dir, verbose)
    try:
        yield
    finally:
        uninstall()


@contextmanager
def stage_log(name: str) -> Iterator[Optional[Path]]:
    """Within: fds 1 and 2 write to ``<run>/logs/<name>.log`` (None when nothing is installed)."""
    if _active is None:
        yield None
        return
    before = _active.current
    _active.point_at(_active.log_dir / f"{name}.log")
    try:
        yield _active.current
    finally:
        if _active is not None and before is not None:
            _active.point_at(before)


def current_log() -> Optional[Path]:
    """The file that worker and library output goes to now (None: the terminal)."""
    return _active.current if _active is not None else None


def terminal() -> IO[str]:
    """Where the run's own lines go: the terminal's stdout when installed, else stdout."""
    return _active.terminal if _active is not None else sys.stdout


def bars() -> IO[str]:
    """Where progress bars go: the terminal's stderr when installed, else stderr."""
    return _active.bars if _active is not None else sys.stderr


def echo(text: str) -> None:
    """A block of the run's own output (a table): on the console and in the current log file."""
    print(text, file=terminal(), flush=True)
    if _active is not None:
        print(text, file=sys.stdout, flush=True)
