"""Progress for long steps: count, rate and ETA on the console (tqdm), also readable in job logs."""
from __future__ import annotations

from tqdm.auto import tqdm

from selftaught import console


def progress(total: int, desc: str, unit: str = "it", initial: int = 0) -> tqdm:
    """``initial``: work already done (a resumed stage's committed shards): the rate and ETA count
    only what this process does."""
    # On the console (the terminal, not the stage's log file); mininterval keeps job logs (ray job
    # logs, CI) short when it is not a terminal.
    out = console.bars()
    return tqdm(total=total, desc=desc, unit=unit, file=out, dynamic_ncols=True, initial=initial,
                mininterval=0.5 if out.isatty() else 10.0, smoothing=0.1)
