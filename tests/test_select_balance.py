"""Selection quotas and A/B balance: pure functions, seeded, order-independent."""
from collections import Counter

from selftaught.config import SelectConfig
from selftaught.stages.judge import BALANCED_OUT, NO_CORRECT, balance
from selftaught.stages.select import select


def _cat_rows():
    rows = []
    for cat, n in (("Coding", 10), ("Mathematical reasoning", 4), ("Open QA", 7)):
        rows += [{"id": f"{cat[:4]}-{i}", "status": "ok", "category": cat, "category_parsed": True, "complexity": 1 + i % 10}
                 for i in range(n)]
    rows.append({"id": "x-1", "status": "ok", "category": "Other", "category_parsed": False, "complexity": None})
    return rows


def test_quotas_take_at_most_quota_and_skip_unparsed():
    out = select(_cat_rows(), SelectConfig(quotas={"Coding": 3, "Mathematical reasoning": 9, "Other": 5}))
    assert Counter(r["category"] for r in out) == {"Coding": 3, "Mathematical reasoning": 4}


def test_balanced_round_robin_with_limit():
    out = select(_cat_rows(), SelectConfig(categories=["Coding", "Open QA", "Mathematical reasoning"], balance=True, limit=9))
    assert Counter(r["category"] for r in out) == {"Coding": 3, "Open QA": 3, "Mathematical reasoning": 3}
    out = select(_cat_rows(), SelectConfig(balance=True, limit=15))  # math runs out at 4
    assert Counter(r["category"] for r in out) == {"Coding": 6, "Open QA": 5, "Mathematical reasoning": 4}


def test_selection_is_seeded_and_order_independent():
    rows = _cat_rows()
    a = select(rows, SelectConfig(quotas={"Coding": 4}, seed=1))
    b = select(list(reversed(rows)), SelectConfig(quotas={"Coding": 4}, seed=1))
    c = select(rows, SelectConfig(quotas={"Coding": 4}, seed=2))
    assert [r["id"] for r in a] == [r["id"] for r in b]
    assert [r["id"] for r in a] != [r["id"] for r in c]


def test_min_complexity_and_unbalanced():
    out = select(_cat_rows(), SelectConfig(balance=False, min_complexity=5, categories=["Coding"]))
    assert out and all(r["category"] == "Coding" and r["complexity"] >= 5 for r in out)


def _judged(n_a, n_b, n_none=0):
    rows = [{"example_id": f"a{i}/AB", "gold": "A", "status": "ok"} for i in range(n_a)]
    rows += [{"example_id": f"b{i}/BA", "gold": "B", "status": "ok"} for i in range(n_b)]
    rows += [{"example_id": f"n{i}/AB", "gold": "A", "status": NO_CORRECT} for i in range(n_none)]
    return rows


def test_balance_equalizes_and_loses_nothing():
    rows = _judged(7, 3, n_none=2)
    out = balance(rows, seed=0)
    assert len(out) == len(rows)  # relabelled, not dropped
    kept = [r for r in out if r["status"] == "ok"]
    assert Counter(r["gold"] for r in kept) == {"A": 3, "B": 3}
    assert sum(r["status"] == BALANCED_OUT for r in out) == 4
    assert sum(r["status"] == NO_CORRECT for r in out) == 2
    assert balance(rows, seed=0) == out  # seeded


def test_balance_with_one_side_empty_keeps_nothing():
    assert not [r for r in balance(_judged(5, 0), seed=0) if r["status"] == "ok"]
