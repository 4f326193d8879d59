"""Strict parsers: a parse failure is never a win, and constrained formats always parse."""
import re

import pytest

from selftaught.config import RECIPE_CATEGORIES
from selftaught.parsing import (
    MOD_END, MOD_START, RESP_END, RESP_START, REASONING_FIRST, VERDICT_FIRST, category_regex,
    parse_category, parse_modified, parse_verdict, strip_reasoning, verdict_line, verdict_open,
)
from selftaught.prompts import load_template


@pytest.mark.parametrize("text,winner", [
    ("Assistant A is accurate, B is off-topic.\n\nFinal verdict: [[A]]", "A"),
    ("B answers the question.\n[[B]]", "B"),
    ("Reasoning...\n**Final Verdict:** [[B]]", "B"),
    ("[[A]]", "A"),
    ("Both fine but A is clearer.\n\n[[A]].", "A"),
])
def test_verdict_accepts_exact_final_verdict(text, winner):
    v = parse_verdict(text)
    assert v.winner == winner and v.error is None


@pytest.mark.parametrize("text,error", [
    # The template's instruction echoed back: both tokens present.
    ('output your final verdict by strictly following this format: "[[A]]" if assistant A is better, "[[B]]" if assistant B is better.',
     "multiple verdicts"),
    ("[[A]] [[B]]", "multiple verdicts"),
    ("A is better.\n[[A]]\nActually no.\n[[B]]", "multiple verdicts"),
    # A verdict-like string quoted from an answer, then a real verdict: ambiguous, rejected.
    ('Assistant B wrote "use [[A]] as the marker" which is wrong.\n\nFinal verdict: [[A]]', "multiple verdicts"),
    # Quoted token only, mid-text: not a verdict.
    ('Assistant A printed "[[B]]" in its code and then explained it.', "verdict not on the final line"),
    ("I think [[A]] is better because it is longer and more detailed.", "verdict not on the final line"),
    ("Both are good.", "no verdict"),
    ("", "no verdict"),
    ("Final verdict: [[C]]", "invalid verdict"),
    ("Final verdict: [[a]]", "invalid verdict"),
    ("Final verdict: A", "no verdict"),
    ("Final verdict: [A]", "no verdict"),
    ("Final verdict: [[tie]]", "no verdict"),
])
def test_verdict_rejects_adversarial(text, error):
    v = parse_verdict(text)
    assert v.winner is None
    assert v.error == error


def test_verdict_never_reads_the_prompt():
    """The judge template itself mentions both verdicts: it must never parse as one."""
    tpl = load_template("judge")
    msgs = tpl.messages(instruction="q", answer_a="x", answer_b="y")
    assert parse_verdict(msgs[0]["content"]).winner is None


def test_constrained_judgment_shape_parses():
    reasoning = strip_reasoning("A is correct; B computes 7*6=48. So the answer is [[A")
    assert "[[" not in reasoning
    for v in ("A", "B"):
        # What constrained decoding writes: the forced opening, one token, "]]".
        assert parse_verdict(reasoning + "\n\n" + verdict_open(REASONING_FIRST) + v + "]]").winner == v
        assert parse_verdict(verdict_open(VERDICT_FIRST) + v + "]]\n\nBecause it is right.", VERDICT_FIRST).winner == v
    assert verdict_line("B", VERDICT_FIRST) == "Verdict: [[B]]" and verdict_line("A") == "Final verdict: [[A]]"


@pytest.mark.parametrize("text,winner,error", [
    ("Verdict: [[A]]\n\nA answers the question; B does not.", "A", None),
    ("**Verdict:** [[B]]\nB is right.", "B", None),
    ("[[B]]", "B", None),
    ("Verdict: [[A]]\n\nBut then again [[B]] is better.", None, "multiple verdicts"),
    ("A is better.\nVerdict: [[A]]", None, "verdict not on the first line"),
    ("Verdict: [[C]]\nwhatever", None, "invalid verdict"),
    ("A answers it.", None, "no verdict"),
])
def test_verdict_first_format(text, winner, error):
    v = parse_verdict(text, VERDICT_FIRST)
    assert (v.winner, v.error) == (winner, error)


def test_verdict_first_template_never_parses():
    tpl = load_template("judge_verdict_first")
    msgs = tpl.messages(instruction="q", answer_a="x", answer_b="y")
    assert parse_verdict(msgs[0]["content"], VERDICT_FIRST).winner is None


def test_category_parse_and_regex_agree():
    cats = RECIPE_CATEGORIES
    good = "Category: Humanity/History/Social Studies\nComplexity: 10\nLength: 250 words"
    assert re.fullmatch(category_regex(cats), good)
    c = parse_category("  " + good + "\n", cats)
    assert (c.category, c.complexity, c.expected_length, c.error) == ("Humanity/History/Social Studies", 10, 250, None)
    for bad in ("Category: Cooking\nComplexity: 3\nLength: 20", "Category: Coding\nComplexity: 11\nLength: 20",
                "Category: Coding\nComplexity: 0\nLength: 20", "Coding, 3, 20",
                "Category: Coding\nComplexity: 3\nLength: 20\nCategory: Other", ""):
        assert parse_category(bad, cats).error == "unparseable"


def _modify(inst: str, resp: str) -> str:
    return f"{MOD_START}\n{inst}\n{MOD_END}\n{RESP_START}\n{resp}\n{RESP_END}"


def test_modified_blocks():
    text = _modify("What is 2+3?", "2+3 = 5. Lists like [1, 2] are fine.")
    m = parse_modified(text, "What is 2+2?")
    assert (m.instruction, m.response, m.error) == ("What is 2+3?", "2+3 = 5. Lists like [1, 2] are fine.", None)
    # The constraint regex (after the forced opening marker) accepts exactly this shape.


@pytest.mark.parametrize("text,error", [
    ("Here is a modified instruction: what is 2+3?", "missing marked blocks"),
    (_modify("What is 2+3?", "5")[: -len(RESP_END)], "missing marked blocks"),  # truncated
    (_modify("   ", "5"), "empty modified instruction"),
    (_modify("What is 2+3?", " "), "empty response"),
    (_modify("what   is 2+2?", "4"), "modified instruction identical to original"),
    (_modify("a?", "1") + "\n" + _modify("b?", "2"), "repeated marked blocks"),
])
def test_modified_failures(text, error):
    assert parse_modified(text, "What is 2+2?").error == error


def test_four_way_verdicts_read_only_with_four_options():
    """RewardBench 2's generative mode: [[C]] and [[D]] are verdicts of a best-of-four judgment, nowhere else."""
    from selftaught.parsing import FOUR_WAY_OPTIONS, Verdict

    text = "C answers the question; A, B and D do not.\nFinal verdict: [[C]]"
    assert parse_verdict(text, options=FOUR_WAY_OPTIONS) == Verdict("C")
    assert parse_verdict(text) == Verdict(None, "invalid verdict")  # a pair has no answer C
    assert parse_verdict("Verdict: [[D]]\nD is right.", VERDICT_FIRST, FOUR_WAY_OPTIONS) == Verdict("D")
    assert parse_verdict("[[A]] or [[D]]", options=FOUR_WAY_OPTIONS).error == "multiple verdicts"
    assert parse_verdict("Final verdict: [[E]]", options=FOUR_WAY_OPTIONS).error == "invalid verdict"
