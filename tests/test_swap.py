"""Exact A/B mirroring of pairwise judgments (selftaught.swap): hand-written expected strings."""
from __future__ import annotations

import pytest

from selftaught.swap import mirror_text, swap_positions

# (judgment, sources, expected mirror). Every case is also checked for involution below.
CASES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "letters_inside_words": (
        "Apple, NASA, ABBA, AB testing, A1, B-tree, vitamin B12, plan_A, x.A, A+ and A/B stay; but A beats B.",
        (),
        "Apple, NASA, ABBA, AB testing, A1, B-tree, vitamin B12, plan_A, x.A, A+ and A/B stay; but B beats A.",
    ),
    "sentence_start": (
        "A is correct. A good response would cite a source. A's answer is short, while B rambles.",
        (),
        "B is correct. A good response would cite a source. B's answer is short, while A rambles.",
    ),
    "article_vs_reference_words": (
        "A better answer would cite. A clearly written answer helps. A clearly explains it. A, however, "
        "errs. Both A and B try. A also fails. The winner is A.",
        (),
        "A better answer would cite. A clearly written answer helps. B clearly explains it. B, however, "
        "errs. Both B and A try. B also fails. The winner is B.",
    ),
    "position_nouns": (
        "Response A is short. Assistant A's code runs. Assistants A and B agree; assistant b and "
        "assistant B differ. Answer B, Output A, Model B, Option A, Candidate B, Completion A, Chatbot A, "
        "AI A, Bot B, Agent A, RESPONSES A and B.",
        (),
        "Response B is short. Assistant B's code runs. Assistants B and A agree; assistant a and "
        "assistant A differ. Answer A, Output B, Model A, Option B, Candidate A, Completion B, Chatbot B, "
        "AI B, Bot A, Agent B, RESPONSES B and A.",
    ),
    "final_verdict": (
        "Assistant A is more accurate than Assistant B.\n\nFinal verdict: [[A]]",
        (),
        "Assistant B is more accurate than Assistant A.\n\nFinal verdict: [[B]]",
    ),
    "verdict_first": (
        "Verdict: [[B]]\n\nAssistant B answers the question; Assistant A does not.",
        (),
        "Verdict: [[A]]\n\nAssistant A answers the question; Assistant B does not.",
    ),
    "verdict_inner_spaces": ("Final verdict: [[ A ]]", (), "Final verdict: [[ B ]]"),
    "quoted_verdict_in_answer": (
        'Assistant B writes "Output [[A]] if unsure", which ignores the format.\n\nFinal verdict: [[A]]',
        ("Write a prompt for a judge.", "Output [[A]] if unsure, else [[B]].", "Pick the better one."),
        'Assistant A writes "Output [[A]] if unsure", which ignores the format.\n\nFinal verdict: [[B]]',
    ),
    "unquoted_copy_from_answer": (
        "Assistant A claims that Option A is the capital, which is wrong; Assistant B is right.",
        ("Which option names the capital?", "I think Option A is the capital of Australia.", "Option B."),
        "Assistant B claims that Option A is the capital, which is wrong; Assistant A is right.",
    ),
    "copy_up_to_the_letter": (  # letters compare as wildcards, so a text and its mirror agree
        "Assistant A thinks Option B is the capital.",
        ("Which option names the capital?", "Option A is the capital of Australia."),
        "Assistant B thinks Option B is the capital.",
    ),
    "unquoted_copy_not_in_sources": (  # same text, no sources: every reference swaps
        "Assistant A claims that Option A is the capital, which is wrong; Assistant B is right.",
        (),
        "Assistant B claims that Option B is the capital, which is wrong; Assistant A is right.",
    ),
    "quote_not_from_sources": (
        'Assistant A says "B is wrong" but "Assistant A is best" is not in any answer.',
        ("Q", "B is wrong, I think.", "Hello."),
        'Assistant B says "B is wrong" but "Assistant B is best" is not in any answer.',
    ),
    "markdown": (
        "**Assistant A** is better.\n\n### Response B\n\n- A: wrong\n- B: right\n\n"
        "```python\nA = 1\nif B:\n    print('A')\n```\n\n"
        "The variable `A` is fine, and I prefer *A*.\n- A short item.",
        (),
        "**Assistant B** is better.\n\n### Response A\n\n- B: wrong\n- A: right\n\n"
        "```python\nA = 1\nif B:\n    print('A')\n```\n\n"
        "The variable `A` is fine, and I prefer *B*.\n- A short item.",
    ),
    "no_references": (
        "The answer explains photosynthesis. A brief summary would help, and NASA data is cited.",
        (),
        "The answer explains photosynthesis. A brief summary would help, and NASA data is cited.",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_mirror_exact(name: str) -> None:
    text, sources, expected = CASES[name]
    assert mirror_text(text, sources) == expected
    assert mirror_text(expected, sources) == text


def test_identity_without_references() -> None:
    text, sources, _ = CASES["no_references"]
    assert swap_positions(text, sources) == []


def test_swap_positions_are_the_letters() -> None:
    assert swap_positions("Assistant A vs B: [[B]]") == [10, 15, 20]


@pytest.mark.parametrize("name", list(CASES))
def test_properties(name: str) -> None:
    text, sources, _ = CASES[name]
    mirrored = mirror_text(text, sources)
    assert mirror_text(mirrored, sources) == text
    assert len(mirrored) == len(text)  # only letters change
    tokens = ("[[A]]", "[[B]]", "[[ A ]]", "[[ B ]]")
    assert sum(mirrored.count(t) for t in tokens) == sum(text.count(t) for t in tokens)
    # Verdict tokens outside protected quotes flip one for one.
    if "[[" in text and not sources:
        assert (mirrored.count("[[A]]"), mirrored.count("[[B]]")) == (text.count("[[B]]"), text.count("[[A]]"))


def test_sentence_initial_b_with_unlisted_verb_is_the_known_ambiguity() -> None:
    # "B sticks" must become "A sticks", which reads as the article on the way back: the round trip
    # differs, which is how callers detect (and drop) such samples.
    assert mirror_text("B sticks to the facts.") == "A sticks to the facts."
    assert mirror_text("A sticks to the facts.") == "A sticks to the facts."
