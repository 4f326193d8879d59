"""Strict parsers for model outputs, and the regexes that constrain decoding to the same formats.

Parsers never guess: anything outside the exact format is a failure with a reason, and a failure
is never counted as a win. The same regex that constrains decoding is the one the parser matches,
so constrained outputs always parse unless truncated.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from selftaught.engines.base import regex_escape


# ---------------------------------------------------------------------------------------------
# Verdicts
# Two judgment formats. reasoning_first (the recipe): reasoning, then the verdict on the last line.
# verdict_first (small judges): the verdict on the first line, then a short explanation; the verdict
# is decided before any (possibly degenerate) reasoning and free decoding reaches it at once.
REASONING_FIRST, VERDICT_FIRST = "reasoning_first", "verdict_first"
FORMATS = (REASONING_FIRST, VERDICT_FIRST)
# Constrained decoding forces the verdict line up to "[[" and picks one token, A or B, then "]]".
# "verdict: [[A]]" tokenizes as ":", " [[", "A", "]]" (SmolLM2, Llama-3 alike), so ending the
# forced text at " [[" keeps the natural split; a prefix ending in a space would force the
# unnatural ": " + "[[" split, which measurably skews a small judge's A/B choice.
VERDICT_LINE = {REASONING_FIRST: "Final verdict: [[{}]]", VERDICT_FIRST: "Verdict: [[{}]]"}
VERDICT_OPTIONS = ("A", "B")
FOUR_WAY_OPTIONS = ("A", "B", "C", "D")  # RewardBench 2's generative mode: the best of four answers
_VERDICT_TOKEN = re.compile(r"\[\[\s*([A-Za-z])\s*\]\]")


def _verdict_only_line(options: tuple[str, ...]) -> re.Pattern:
    """The verdict line: the verdict alone, optionally "(Final) verdict:" and markdown bold."""
    return re.compile(r"^(?:\**\s*(?i:(?:final\s+)?verdict)\s*:?\s*\**\s*)?\**\[\[([" + "".join(options)
                      + r"])\]\]\**\.?$")


_VERDICT_ONLY_LINE = {o: _verdict_only_line(o) for o in (VERDICT_OPTIONS, FOUR_WAY_OPTIONS)}


def verdict_line(winner: str, fmt: str = REASONING_FIRST) -> str:
    return VERDICT_LINE[fmt].format(winner)


def verdict_open(fmt: str = REASONING_FIRST) -> str:
    """The verdict line up to its one free token: what constrained decoding forces."""
    return VERDICT_LINE[fmt].split("{}")[0]


@dataclass(frozen=True)
class Verdict:
    winner: str | None  # "A" | "B" | None
    error: str | None = None  # reason when winner is None


def parse_verdict(text: str, fmt: str = REASONING_FIRST, options: tuple[str, ...] = VERDICT_OPTIONS) -> Verdict:
    """Read the verdict of a generated judgment (the generated text only, never the prompt).

    Exactly one ``[[X]]`` token may appear in the whole judgment and it must be on the verdict
    line: the last non-empty line (reasoning_first) or the first (verdict_first), and be one of ``options``
    (``FOUR_WAY_OPTIONS`` for a best-of-four judgment). An echoed
    template (``"[[A]]" if ... "[[B]]" if ...``), both verdicts, a ``[[A]]`` quoted from an answer
    besides the real verdict, or a verdict elsewhere are all failures, never wins.
    """
    tokens = _VERDICT_TOKEN.findall(text)
    if not tokens:
        return Verdict(None, "no verdict")
    if len(tokens) > 1:
        return Verdict(None, "multiple verdicts")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    m = _VERDICT_ONLY_LINE[options].match(lines[0] if fmt == VERDICT_FIRST else lines[-1])
    if not m:
        where = "first" if fmt == VERDICT_FIRST else "final"
        return Verdict(None, f"verdict not on the {where} line" if tokens[0] in options else "invalid verdict")
    return Verdict(m.group(1))


def strip_reasoning(text: str) -> str:
    """Reasoning from phase 1 of a constrained judgment: cut at any verdict attempt."""
    for marker in ("[[", "Final verdict", "final verdict"):
        i = text.find(marker)
        if i >= 0:
            text = text[:i]
    return text.rstrip()


# ---------------------------------------------------------------------------------------------
# Yes/no verdicts on one answer (judge.mode=verify): "Verdict: Yes" or "Verdict: No" on the first line,
# optionally one line of explanation after it. Constrained decoding forces "Verdict:" and picks one token,
# " Yes" or " No" (SmolLM2 and Llama-3 tokenize both as one token after the colon).
VERIFY_FORMAT = "verify"  # how a yes/no judgment is read, beside the two pairwise formats (GRPO rows' form)
VERIFY_OPEN = "Verdict:"
VERIFY_OPTIONS = (" Yes", " No")
VERIFY_LABELS = ("Yes", "No")
_VERIFY_ANY = re.compile(r"(?i)\bverdict\s*:")
_VERIFY_LINE = re.compile(r"^\**\s*(?i:verdict)\s*:\s*\**\s*(Yes|No|yes|no|YES|NO)\**\.?$")


def verify_line(label: str) -> str:
    return f"{VERIFY_OPEN} {label}"


def parse_yes_no(text: str) -> Verdict:
    """Read a yes/no verdict: exactly one ``Verdict:`` in the judgment, on its first non-empty line, followed by
    Yes or No alone. A second verdict, a verdict below the first line, or another word are failures."""
    found = _VERIFY_ANY.findall(text)
    if not found:
        return Verdict(None, "no verdict")
    if len(found) > 1:
        return Verdict(None, "multiple verdicts")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    m = _VERIFY_LINE.match(lines[0])
    if not m:
        return Verdict(None, "verdict not on the first line" if not _VERIFY_ANY.match(lines[0]) else "invalid verdict")
    return Verdict(m.group(1).capitalize())


# ---------------------------------------------------------------------------------------------
# Absolute scores (Prometheus direct assessment): feedback, then "[RESULT] n" with n in 1..5.
SCORES = (1, 2, 3, 4, 5)
RESULT_MARKER = "[RESULT]"
_RESULT_ANY = re.compile(r"\[\s*RESULT\s*\]", re.IGNORECASE)
# The score line: "[RESULT] 4", optionally "[RESULT]: 4", "(4)", a closing period; nothing else after it.
_RESULT_END = re.compile(r"\[RESULT\]\s*:?\s*\(?\s*([0-9]+(?:\.[0-9]+)?)\s*\)?\s*\.?\s*$")


@dataclass(frozen=True)
class Score:
    value: int | None  # 1..5, or None with the reason
    error: str | None = None
    feedback: str = ""  # the text before the score


def parse_score(text: str) -> Score:
    """Read the score of a generated grading. Exactly one ``[RESULT]`` marker, at the end, followed by
    one integer from 1 to 5 and nothing else: a score elsewhere, two markers (an echoed format line),
    a score out of range, a fraction ("4/5"), a decimal or words after it are failures, never scores."""
    markers = _RESULT_ANY.findall(text)
    if not markers:
        return Score(None, "no score")
    if len(markers) > 1:
        return Score(None, "multiple scores")
    m = _RESULT_END.search(text.rstrip())
    if not m:
        return Score(None, "score not at the end" if re.search(r"\[RESULT\]\s*:?\s*[1-5]\b", text) else "invalid score")
    raw = m.group(1)
    if "." in raw or raw.startswith("0") or int(raw) not in SCORES:
        return Score(None, f"score {raw} not an integer from 1 to 5")
    feedback = text[: m.start()].strip()
    if feedback.lower().startswith("feedback:"):
        feedback = feedback[len("feedback:"):].strip()
    return Score(int(raw), None, feedback)


# ---------------------------------------------------------------------------------------------
# Categorization
@dataclass(frozen=True)
class Category:
    category: str | None
    complexity: int | None
    expected_length: int | None
    error: str | None = None


CATEGORY_TAIL = r"Complexity: ([1-9]|10)\nLength: ([1-9][0-9]{0,3})( words)?"  # after "Category: X\n"


def category_regex(categories: list[str]) -> str:
    cats = "|".join(regex_escape(c) for c in categories)
    return rf"Category: ({cats})\n{CATEGORY_TAIL}"


def parse_category(text: str, categories: list[str]) -> Category:
    m = re.fullmatch(category_regex(categories), text.strip())
    if not m:
        return Category(None, None, None, "unparseable")
    return Category(m.group(1), int(m.group(2)), int(m.group(3)))


# ---------------------------------------------------------------------------------------------
# Modified instruction + its answer, in marked blocks
MOD_START, MOD_END = "[The Start of Modified Instruction]", "[The End of Modified Instruction]"
RESP_START, RESP_END = "[The Start of Response]", "[The End of Response]"
_BLOCKS = re.compile(
    rf"{re.escape(MOD_START)}(.*?){re.escape(MOD_END)}\s*{re.escape(RESP_START)}(.*?){re.escape(RESP_END)}",
    re.DOTALL,
)


@dataclass(frozen=True)
class Modified:
    instruction: str | None
    response: str | None
    error: str | None = None


def _norm(s: str) -> str:
    return " ".join(s.lower().split())


def parse_modified(text: str, original: str) -> Modified:
    """Both marked blocks exactly once, non-empty, and x' must differ from x."""
    found = _BLOCKS.findall(text)
    if not found:
        return Modified(None, None, "missing marked blocks")
    if len(found) > 1:
        return Modified(None, None, "repeated marked blocks")
    inst, resp = found[0][0].strip(), found[0][1].strip()
    if not inst:
        return Modified(None, None, "empty modified instruction")
    if not resp:
        return Modified(None, None, "empty response")
    if _norm(inst) == _norm(original):
        return Modified(None, None, "modified instruction identical to original")
    return Modified(inst, resp)


def same_text(a: str, b: str) -> bool:
    return _norm(a) == _norm(b)
