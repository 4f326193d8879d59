"""Exact A/B mirroring of a pairwise judgment (JudgeLM-style swap augmentation).

A judgment for (answer_a=X, answer_b=Y) becomes the judgment for (answer_a=Y, answer_b=X): every
reference to a position is swapped A<->B and the verdict flips; text copied from the question or the
answers (`sources`) stays as is. Swaps are collected in one pass, so A->B and B->A never collide.

Swapped, outside protected spans:
1. Verdict tokens `[[A]]` <-> `[[B]]`, inner spacing kept (`[[ A ]]`).
2. A capital `A`/`B` that is a whole token: never touching a word character, `+`, `/`, a hyphenated
   word or a dotted name (`Apple`, `AB`, `NASA`, `A1`, `B-tree`, `A+`, `A/B`, `B12`, `x.A`, `plan_A`).
   `B` is always a reference; `A` is one mid-sentence. At a sentence start (start of text; after
   `.!?:`, a newline, an opening bracket or quote; markdown `#*_>-` skipped, so `- A: wrong` starts
   one) `A` is the article unless followed by `'s`, punctuation, end of line, a word of `_REF_WORDS`
   ("A is", "A also"), or "clearly"/"correctly" plus a verb ("A clearly explains" but "A clearly
   written answer"). `better`/`worse` are left out: "A better answer would ..." is the common case.
   Position nouns need no rule: in `Assistant A`, `responses A and B`, `**Model B's**` the letter is
   mid-sentence, so it is a reference whatever the noun, its case or number.
3. Lowercase `a`/`b` only right after `assistant(s)` ("assistant b"); elsewhere it is an article or
   a variable.

Protected (never modified): fenced and inline code; quotes ("...", “...”, '...', ‘...’) whose inner
text occurs in a source; a letter (not a verdict) whose window -- its word plus 1-2 words each side,
at least 12 characters -- occurs in a source (an answer's "Option A is the capital", unquoted).

Involution: source matching treats candidate letters as wildcards ([AB] / [ab]), so a text and its
mirror get the same protection decisions and `mirror_text(mirror_text(t, s), s) == t`. The one
exception is inherent to English: a sentence-initial `B` before an unlisted word ("B sticks to ...")
must become "A sticks to ...", which reads as the article on the way back. Callers who need strict
pairs can drop samples whose round trip differs.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

_SWAP = {"A": "B", "B": "A", "a": "b", "b": "a"}
_END = r"(?![\w+/])(?!-\w)(?!\.\w)"  # not glued to a word, `+`, `/`, `-word` or `.name`
# Group 1: the letter of a verdict token; 2: a capital letter token; 3: a lowercase one after "assistant(s) ".
_CANDIDATE = re.compile(
    r"\[\[[ \t]*([AB])[ \t]*\]\]"
    rf"|(?<![\w+/\-])(?<!\w\.)([AB]){_END}"
    rf"|(?:(?<=(?i:\bassistant) )|(?<=(?i:\bassistants) ))([ab]){_END}"
)
_CODE = re.compile(r"```.*?(?:```|\Z)|`[^`\n]+`", re.S)
# Single quotes only open/close away from words, and may contain apostrophes (don't, A's).
_QUOTE = re.compile(
    r"\"([^\"]+)\"|“([^”]+)”"
    r"|(?<!\w)'((?:[^'\n]|(?<=\w)'(?=\w))+)'(?!\w)|(?<!\w)‘((?:[^’\n]|(?<=\w)’(?=\w))+)’(?!\w)"
)
_REF_WORDS = frozenset(
    "is was has had does did provides gives offers answers fails contains includes seems appears uses"
    " states mentions explains lists also only and or wins loses should would could can cannot doesn't"
    " isn't wasn't will may might must lacks misses makes tries attempts follows addresses vs versus".split()
)
_ADVERBS = frozenset({"clearly", "correctly"})  # a reference only when a verb follows
_SKIP_BACK = " \t*_#>-"  # markdown between a sentence boundary and the letter
_SENTENCE_START = ".!?:\n\"“‘'(["
_AFTER = re.compile(
    r"[*_]*(?:(?P<punct>['’]s\b|[,.;:!?)\]\"”'’]|[ \t]*(?:\r?\n|\Z))"
    r"|[ \t]+(?P<w1>[\w'’]+)(?:[ \t]+(?P<w2>\w+))?)"
)
_LEFT = [re.compile(r"(?:\S+\s+){%d}\Z" % n) for n in (1, 2)]
_RIGHT = [re.compile(r"(?:\s+\S+){%d}" % n) for n in (1, 2)]
_MIN_WINDOW = 12


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _occurs(text: str, lo: int, hi: int, letters: set[int], sources: Sequence[str]) -> bool:
    """Whether text[lo:hi] occurs in a source as whole words, candidate letters matching either letter."""
    if lo >= hi:
        return False
    wild = {True: "[AB]", False: "[ab]"}
    body = "".join(wild[text[i].isupper()] if i in letters else re.escape(text[i]) for i in range(lo, hi))
    head, tail = (r"(?<!\w)" if _is_word(text[lo]) else ""), (r"(?!\w)" if _is_word(text[hi - 1]) else "")
    pattern = re.compile(head + body + tail)
    return any(pattern.search(source) for source in sources)


def _copied(text: str, i: int, letters: set[int], sources: Sequence[str]) -> bool:
    """Whether the letter at i sits in a window (1-2 words each side) copied from a source."""
    start, end = i, i + 1
    while start and not text[start - 1].isspace():
        start -= 1
    while end < len(text) and not text[end].isspace():
        end += 1
    before, after = text[max(0, start - 120):start], text[end:end + 120]
    # At least one word on each side where the text has one: a bare "A is the" is too common to count.
    los = [start - len(m.group()) for r in _LEFT if (m := r.search(before))] or [start]
    his = [end + len(m.group()) for r in _RIGHT if (m := r.match(after))] or [end]
    for lo in los:
        for hi in his:
            while lo < i and not _is_word(text[lo]):  # trim punctuation/markdown at the edges
                lo += 1
            while hi > i + 1 and not _is_word(text[hi - 1]):
                hi -= 1
            if hi - lo >= _MIN_WINDOW and _occurs(text, lo, hi, letters, sources):
                return True
    return False


def _a_is_reference(text: str, i: int) -> bool:
    """Capital A at i: a position reference, or the English article?"""
    p = i
    while p and text[p - 1] in _SKIP_BACK:
        p -= 1
    if p and text[p - 1] not in _SENTENCE_START:
        return True  # mid-sentence: the article would be lowercase
    m = _AFTER.match(text, i + 1)
    if not m:
        return False
    if m["punct"] is not None:
        return True
    w1, w2 = m["w1"].lower().replace("’", "'"), (m["w2"] or "").lower()
    if w1 in _ADVERBS:
        return w2 in _REF_WORDS or (w2.endswith("s") and not w2.endswith("ss"))
    return w1 in _REF_WORDS


def _protected(text: str, letters: set[int], sources: Sequence[str]) -> bytearray:
    """1 at every index inside code or inside a quote copied from a source."""
    mask = bytearray(len(text))
    for m in _CODE.finditer(text):
        mask[m.start():m.end()] = b"\1" * (m.end() - m.start())
    if sources:
        blanked = _CODE.sub(lambda m: " " * len(m.group()), text)  # quote marks in code pair nothing
        for m in _QUOTE.finditer(blanked):
            if _occurs(text, *m.span(m.lastindex), letters, sources):
                mask[m.start():m.end()] = b"\1" * (m.end() - m.start())
    return mask


def swap_positions(text: str, sources: Sequence[str] = ()) -> list[int]:
    """Indices of the letters `mirror_text` swaps (for tests and debugging)."""
    candidates = list(_CANDIDATE.finditer(text))
    letters = {m.start(m.lastindex) for m in candidates}
    mask = _protected(text, letters, sources)
    positions = []
    for m in candidates:
        i = m.start(m.lastindex)
        if mask[i]:
            continue
        if m.lastindex != 1:  # letters, not verdict tokens: article and copied-context rules
            if text[i] == "A" and not _a_is_reference(text, i):
                continue
            if sources and _copied(text, i, letters, sources):
                continue
        positions.append(i)
    return positions


def mirror_text(text: str, sources: Sequence[str] = ()) -> str:
    """Swap every reference to position A with B and vice versa; `sources` = the question and both
    answers (text copied from them is left as is). See the module docstring for the exact rules."""
    chars = list(text)
    for i in swap_positions(text, sources):
        chars[i] = _SWAP[chars[i]]
    return "".join(chars)
