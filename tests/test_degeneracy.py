"""The degeneracy metric: the share of a text's word 4-grams that repeat an earlier one."""
import pytest

from selftaught.degeneracy import is_degenerate, repeat_ratio


def test_repeat_ratio_known_values():
    assert repeat_ratio("") == 0.0 and repeat_ratio("one two three") == 0.0
    assert repeat_ratio("Assistant A answers the question; B does not.") == 0.0
    # "a b c d a b c d": 5 four-grams, (a b c d) twice -> 1 repeat of 5.
    assert repeat_ratio("a b c d a b c d") == pytest.approx(1 / 5)
    # The same word 20 times: 17 four-grams, all equal -> 16 repeats of 17.
    assert repeat_ratio("cat " * 20) == pytest.approx(16 / 17)
    # Case and punctuation: words and punctuation marks are tokens, case is ignored.
    assert repeat_ratio("The answer is right. the answer is right.") == repeat_ratio("the answer is right. the answer is right.")


def test_degenerate_threshold_separates_loops_from_prose():
    loop = "Assistant A is better. " * 12
    prose = ("Assistant A gives the correct boiling point and explains the effect of altitude, while "
             "assistant B states 90 degrees, which is wrong at sea level.")
    assert is_degenerate(loop) and not is_degenerate(prose)
    assert repeat_ratio(loop) > 0.5 > repeat_ratio(prose)
    assert not is_degenerate(loop, threshold=0.99)
