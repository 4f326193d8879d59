"""Progress for long steps: count, rate and ETA on stderr (tqdm), also readable in job logs."""
from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress(total: int, desc: str, unit: str = "it", initial: int = 0) -> tqdm:
    """``initial``: work already done (a resumed stage's committed shards): the rate and ETA count
    only what this process does."""
    # mininterval keeps log files (ray job logs, CI) short when stderr is not a terminal.
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, initial=initial,
                mininterval=0.5 if sys.stderr.isatty() else 10.0, smoothing=0.1)
