"""95% intervals: Wilson score against closed-form values, percentile bootstrap sanity checks."""
from __future__ import annotations

import math
import random

import pytest

from selftaught.stats import Z95, bootstrap_mean, fmt_ci, wilson

# Reference values from the closed form (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n),
# z = 1.959964, evaluated independently of selftaught.stats and rounded to 4 decimals
# (e.g. 5/10: centre 0.5, half-width 1.96·sqrt(0.025 + 0.0096)/1.3841 = 0.2634).
WILSON_REF = [
    (0, 10, 0.0, 0.2775),
    (5, 10, 0.2366, 0.7634),
    (10, 10, 0.7225, 1.0),
    (81, 263, 0.2553, 0.3662),
]


@pytest.mark.parametrize("k,n,lo,hi", WILSON_REF)
def test_wilson_known_values(k, n, lo, hi):
    got = wilson(k, n)
    assert got is not None
    assert got[0] == pytest.approx(lo, abs=1e-4) and got[1] == pytest.approx(hi, abs=1e-4)


def test_wilson_empty_and_bounds():
    assert wilson(0, 0) is None
    assert wilson(0, 7)[0] == 0.0 and wilson(7, 7)[1] == 1.0  # exact, not 1e-17 off
    for n in (1, 2, 7, 50, 263):
        for k in range(n + 1):
            lo, hi = wilson(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0
    narrow, wide = wilson(3, 10, z=1.0), wilson(3, 10, z=Z95)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]  # smaller z, narrower interval
    with pytest.raises(ValueError):
        wilson(11, 10)


def test_bootstrap_deterministic_and_empty():
    rng = random.Random(1)
    vals = [rng.choice([0.0, 0.5, 1.0]) for _ in range(50)]
    assert bootstrap_mean(vals, seed=3) == bootstrap_mean(vals, seed=3)
    assert bootstrap_mean(vals, seed=3) != bootstrap_mean(vals, seed=4)
    assert bootstrap_mean([]) is None


def test_bootstrap_all_equal_is_zero_width():
    assert bootstrap_mean([0.1] * 10) == (0.1, 0.1)
    assert bootstrap_mean([1.0]) == (1.0, 1.0)


def test_bootstrap_close_to_wilson_for_binary():
    vals = [1.0] * 100 + [0.0] * 100  # 0/1, mean 0.5, n = 200
    lo, hi = bootstrap_mean(vals)
    wlo, whi = wilson(100, 200)
    assert abs(lo - wlo) < 0.02 and abs(hi - whi) < 0.02
    assert lo < 0.5 < hi


def test_bootstrap_contains_mean():
    rng = random.Random(7)
    vals = [rng.choice([0.0, 0.5, 0.5, 1.0, 1.0]) for _ in range(120)]
    lo, hi = bootstrap_mean(vals, level=0.9)
    assert lo <= math.fsum(vals) / len(vals) <= hi
    assert 0.0 <= lo < hi <= 1.0


def test_fmt_ci():
    assert fmt_ci(0.5213, 0.4204, 0.6199) == "0.521 [0.42, 0.62]"
    assert fmt_ci(0.5213, 0.4204, 0.6199, sep=",") == "0.521 [0.42,0.62]"
    assert fmt_ci(0.5213) == "0.521"
    assert fmt_ci(None, 0.1, 0.2) == "-" and fmt_ci(float("nan")) == "-"


def test_bootstrap_ratio_is_the_rate_over_rows_with_pairs_as_units():
    from selftaught.stats import bootstrap_ratio

    # 40 pairs judged in both orders: the rate over the 80 rows is 0.5 either way, but when the two
    # orders of a pair always agree the pairs carry half the information: a wider interval.
    agree = ([2] * 20 + [0] * 20, [2] * 40)
    split = ([1] * 40, [2] * 40)
    lo_a, hi_a = bootstrap_ratio(*agree)
    assert lo_a < 0.5 < hi_a and hi_a - lo_a > wilson(40, 80)[1] - wilson(40, 80)[0]
    assert bootstrap_ratio(*split) == (0.5, 0.5)  # every pair at the same rate: no uncertainty left
    assert bootstrap_ratio([0, 0], [0, 0]) is None and bootstrap_ratio([], []) is None
    # Units without a denominator (no parsed verdict) are resampled but skipped in the ratio.
    assert bootstrap_ratio([1, 0, 0], [1, 1, 0], seed=1) == bootstrap_ratio([1, 0, 0], [1, 1, 0], seed=1)
