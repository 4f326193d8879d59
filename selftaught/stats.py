"""95% intervals for accuracy-like metrics (standard library only).

``wilson`` is for k successes out of n independent trials; ``bootstrap_mean`` is for a mean over
independent units whose values are not plain 0/1 (e.g. a pair's accuracy over its two orders is
0, 0.5 or 1: the two orders of one pair are not independent, so the pair is the unit).
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Optional

Z95 = 1.959963984540054  # two-sided 95% standard normal quantile

Interval = tuple[float, float]


def wilson(k: int, n: int, z: float = Z95) -> Optional[Interval]:
    """Wilson score interval for ``k`` successes in ``n`` trials (None when ``n == 0``).

    Unlike the normal (Wald) interval it stays inside [0, 1] and is not zero-width at k = 0 or n."""
    if n <= 0:
        return None
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n)) / denom
    # At k = 0 (k = n) the lower (upper) bound is exactly 0 (1); rounding would leave ~1e-17.
    lo = 0.0 if k == 0 else max(0.0, center - half)
    hi = 1.0 if k == n else min(1.0, center + half)
    return lo, hi


def _quantile(sorted_xs: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default ``linear`` method)."""
    pos = q * (len(sorted_xs) - 1)
    i = math.floor(pos)
    j = min(i + 1, len(sorted_xs) - 1)
    return sorted_xs[i] + (sorted_xs[j] - sorted_xs[i]) * (pos - i)


def bootstrap_mean(values: Sequence[float], n_boot: int = 2000, seed: int = 0,
                   level: float = 0.95) -> Optional[Interval]:
    """Percentile bootstrap interval of the mean of ``values`` (one value per independent unit).

    Deterministic for a given ``seed`` (own ``random.Random``, global state untouched).
    None when ``values`` is empty; ``(v, v)`` when all values equal ``v``."""
    return bootstrap_ratio(values, [1.0] * len(values), n_boot, seed, level)


def bootstrap_ratio(nums: Sequence[float], dens: Sequence[float], n_boot: int = 2000, seed: int = 0,
                    level: float = 0.95) -> Optional[Interval]:
    """Percentile bootstrap interval of ``sum(nums) / sum(dens)`` resampling units (clusters).

    A unit is e.g. a pair with ``nums`` = its correct judgments and ``dens`` = its judged orders:
    the estimate is the plain rate over judgments, the uncertainty the one of the pairs. Resamples
    whose denominator is 0 are skipped. None when there is no unit with a denominator."""
    units = [(float(a), float(b)) for a, b in zip(nums, dens)]
    if not any(b for _, b in units):
        return None
    if not 0.0 < level < 1.0 or n_boot < 1:
        raise ValueError(f"need 0 < level < 1 and n_boot >= 1, got level={level}, n_boot={n_boot}")
    rates = {a / b for a, b in units if b}
    if len(rates) == 1 and all(b for _, b in units):  # every unit at the same rate: exact, zero width
        r = rates.pop()
        return r, r
    rng = random.Random(seed)
    stats = []
    for _ in range(n_boot):
        sample = rng.choices(units, k=len(units))
        den = math.fsum(b for _, b in sample)
        if den:
            stats.append(math.fsum(a for a, _ in sample) / den)
    stats.sort()
    alpha = (1.0 - level) / 2.0
    return _quantile(stats, alpha), _quantile(stats, 1.0 - alpha)


def pearson(xs: Sequence[float], ys: Sequence[float]) -> Optional[float]:
    """Pearson correlation; None with fewer than 3 points or a constant side (undefined)."""
    n = len(xs)
    if n < 3 or n != len(ys):
        return None
    mx, my = math.fsum(xs) / n, math.fsum(ys) / n
    sxy = math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = math.fsum((x - mx) ** 2 for x in xs)
    syy = math.fsum((y - my) ** 2 for y in ys)
    if sxx <= 0 or syy <= 0:
        return None
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def ranks(xs: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank (as Spearman's rho needs)."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    out = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(xs: Sequence[float], ys: Sequence[float]) -> Optional[float]:
    return pearson(ranks(xs), ranks(ys)) if len(xs) == len(ys) else None


def correlation_interval(r: Optional[float], n: int, rank: bool = False, z: float = Z95) -> Optional[Interval]:
    """95% interval of a correlation by Fisher's z: ``tanh(atanh(r) +- z * se)``, se = 1/sqrt(n-3)
    (Pearson) or sqrt(1.06/(n-3)) (Spearman, Fieller et al. 1957). None below 4 items, where it is
    undefined (a bootstrap there resamples 3 points and reports nonsense)."""
    if r is None or n < 4:
        return None
    se = math.sqrt((1.06 if rank else 1.0) / (n - 3))
    zr = math.atanh(max(-1 + 1e-12, min(1 - 1e-12, r)))
    return math.tanh(zr - z * se), math.tanh(zr + z * se)


def fmt_ci(value: Optional[float], lo: Optional[float] = None, hi: Optional[float] = None,
           sep: str = ", ") -> str:
    """``0.521 [0.42, 0.62]``: value at 3 decimals, bounds at 2 (``sep=","`` for narrow tables).

    ``-`` when ``value`` is missing (None/NaN); the value alone when either bound is missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = f"{value:.3f}"
    if lo is None or hi is None or any(isinstance(b, float) and math.isnan(b) for b in (lo, hi)):
        return text
    return f"{text} [{lo:.2f}{sep}{hi:.2f}]"
