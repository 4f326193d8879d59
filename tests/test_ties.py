"""RewardBench 2's Ties score on hand-computed ratings."""
import math

from selftaught.ties import item_stats, ties_metrics


def _rows(group: str, rated: list[tuple[bool, object]]) -> list[dict]:
    n_correct = sum(c for c, _ in rated)
    return [{"ties_group": group, "correct": c, "score": s, "num_correct": n_correct} for c, s in rated]


def test_item_stats_gap_and_spread():
    assert item_stats([(True, 5), (True, 4), (False, 2), (False, 3)]) == (True, 1, 1)  # worst right 4 > best wrong 3
    assert item_stats([(True, 5), (False, 5)]) == (False, None, 0)  # a tie is not accurate
    assert item_stats([(True, 5), (False, None)]) is None  # an unparsed rating: not rated


def test_ties_score_by_hand():
    rows = (
        # prompt 1: ref accurate (gap 5-2=3); tied accurate, spread 1, gap 4-2=2 > 1 (preferred, hard: min(3,2)=2 > 1)
        _rows("rb2/x/ref:1", [(True, 5), (False, 2), (False, 1)])
        + _rows("rb2/x/tied:1", [(True, 5), (True, 4), (False, 2)])
        # prompt 2: ref not accurate (gap 3-4=-1); tied accurate, spread 2, gap 3-1=2: not > 2
        + _rows("rb2/x/ref:2", [(True, 3), (False, 4)])
        + _rows("rb2/x/tied:2", [(True, 5), (True, 3), (False, 1)])
    )
    m = ties_metrics(rows)
    assert m["ties_items"] == 4 and m["ties_unrated"] == 0
    assert m["ref_accuracy"] == 0.5 and m["tied_accuracy"] == 1.0
    assert m["correct_gap_preferred"] == 0.5  # prompt 1 only
    assert m["correct_gap_preferred_hard"] == 0.5  # prompt 1: min(3, 2) > 1; prompt 2: min(-1, 2) < 2
    margin = (math.tanh(2 / 1 - 1) + math.tanh(-1 / 2 - 1)) / 2
    assert m["margin_score"] == round(margin, 4)
    expected = 0.3 * 1.0 + 0.3 * 0.5 + 0.2 * 0.5 + 0.2 * 0.5 + 0.01 * round(margin, 4)
    assert m["ties_score"] == round(expected, 4)
    assert m["ref_accuracy_lo"] < 0.5 < m["ref_accuracy_hi"]


def test_a_perfect_and_a_constant_rater():
    perfect = _rows("ref:1", [(True, 5), (False, 1)]) + _rows("tied:1", [(True, 5), (True, 4), (False, 1)])
    m = ties_metrics(perfect)
    assert m["margin_score"] == round(math.tanh(3 / 1 - 1), 4)  # the smaller gap, min(5-1, 4-1), over the spread 1
    assert m["ties_score"] == 1.0  # the weights add to 1.01: a perfect rater is clipped to 1
    # Everything rated 3 (what a collapsed 1-5 grader does): no item is accurate; the spread is 0, so
    # "gap > spread" fails (0 > 0) and the margin term is 0.
    constant = [{**r, "score": 3} for r in perfect]
    m = ties_metrics(constant)
    assert (m["ties_score"], m["ref_accuracy"], m["tied_accuracy"], m["margin_score"]) == (0.0, 0.0, 0.0, 0.0)


def test_unparsed_ratings_and_missing_forms():
    rows = _rows("tied:7", [(True, 5), (True, None), (False, 1)])
    m = ties_metrics(rows)
    assert m["ties_unrated"] == 1 and m["tied_accuracy"] == 0.0
    assert m["ref_accuracy"] is None and m["ties_score"] is None  # no ref item: the score is not defined
    # Ids without "ref:"/"tied:": one correct answer makes a ref item, more a tied one.
    m = ties_metrics(_rows("a", [(True, 4), (False, 2)]) + _rows("b", [(True, 4), (True, 4), (False, 5)]))
    assert m["ref_accuracy"] == 1.0 and m["tied_accuracy"] == 0.0
