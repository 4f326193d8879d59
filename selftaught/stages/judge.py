"""Stage 4: the current judge samples judgments of each pair in both orders; one correct is kept.

Decoding (``JudgeDecoding``, shared with eval):
- free: one generation per judgment, parsed strictly in the judgment format (``parsing.FORMATS``);
- constrained (small judges): the verdict is one token, A or B, after the forced opening of the
  verdict line. ``reasoning_first`` samples the reasoning (bounded, cut at any verdict attempt),
  then forces the verdict; ``verdict_first`` forces the verdict, then writes the explanation after
  it. Either way the verdict's log-odds come back (``margin`` = log p(A) - log p(B), raw), which
  is what calibration reads.

Sampling (``process``): ``n`` judgments per (pair, order); with ``n_max``, waves of ``n`` until the
first usable correct judgment, at most ``n_max`` per (pair, order) (adaptive). A kept judgment is
one usable correct judgment at random (usable: not degenerate when ``drop_degenerate``); with
``swap``, an order without one takes the exact mirror of the other order's (answers swapped, every
A/B reference swapped, verdict flipped, JudgeLM-style), so a position-biased judge's correct work
survives the A/B balance. ``calibrate`` decides each verdict from its margin minus the pair's mean
margin over both orders (the position bias; contextual calibration), not from the raw choice.
"""
from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from dataclasses import dataclass, replace
from typing import Callable, Optional

import numpy as np

from selftaught import io, swap
from selftaught.config import JudgeConfig
from selftaught.degeneracy import repeat_ratio
from selftaught.engines import Constraint, Engine, GenRequest, Sampling
from selftaught.parsing import (REASONING_FIRST, VERDICT_OPTIONS, VERIFY_LABELS, VERIFY_OPEN, VERIFY_OPTIONS, Verdict,
                                parse_verdict, parse_yes_no, strip_reasoning, verdict_line, verdict_open, verify_line)
from selftaught.prompts import Template, load_template
from selftaught.rows import Judged
from selftaught.stages.base import OK, TOO_LONG, StageContext, StageSpec, Upstream, fits, provenance

STAGE = "judge"
ORDERS = ("AB", "BA")  # AB: chosen shown as A (gold A); BA: chosen shown as B (gold B)
NO_CORRECT = "no correct judgment"
BALANCED_OUT = "dropped by A/B balance"
VERDICT_ROOM = 12  # tokens a verdict line takes, beyond the reasoning budget
SAMPLED, MIRROR = "sampled", "mirror"


@dataclass
class JudgeItem:
    id: str
    instruction: str
    answer_a: str
    answer_b: str = ""  # verify: unused (answer_a is the one response)
    pair_id: str = ""
    answer_c: str = ""  # best of four (``pairwise_form`` over ``FOUR_WAY_OPTIONS``) only
    answer_d: str = ""
    gold: Optional[str] = None  # "A" | "B" when known (judge stage, eval); verify: "Yes" | "No"


@dataclass(frozen=True)
class VerdictForm:
    """How a verdict is forced, written and read: the pairwise ``[[A]]``/``[[B]]`` line of a judgment format, or
    verify's yes/no on one answer. Constrained decoding forces ``open`` and picks one token of ``options`` (the
    verdict ``labels[i]``); its margin is log p(options[0]) - log p(options[1])."""

    open: str
    options: tuple[str, ...]
    labels: tuple[str, ...]
    line: Callable[[str], str]  # label -> the verdict line
    parse: Callable[[str], Verdict]  # a whole judgment -> its verdict
    fields: Callable[[JudgeItem], dict]  # an item -> its template's values
    stop: tuple[str, ...] = ("[[",)  # an explanation ends where another verdict would begin

    def label(self, option: str) -> str:
        return self.labels[self.options.index(option)] if option in self.options else option


def pairwise_form(fmt: str, options: tuple[str, ...] = VERDICT_OPTIONS) -> VerdictForm:
    """The ``[[X]]`` line of a judgment format over ``options``: two answers, or (``FOUR_WAY_OPTIONS``, RewardBench
    2's generative mode) the best of four; the template gets ``answer_a`` ... one per option."""
    answers = tuple(f"answer_{o.lower()}" for o in options)
    return VerdictForm(verdict_open(fmt), options, options, lambda v: verdict_line(v, fmt),
                       lambda text: parse_verdict(text, fmt, options),
                       lambda it: {"instruction": it.instruction, **{a: getattr(it, a) for a in answers}})


# judge.mode=verify: "does this response answer this instruction?" on one answer (template values instruction, response).
VERIFY = VerdictForm(VERIFY_OPEN, VERIFY_OPTIONS, VERIFY_LABELS, verify_line, parse_yes_no,
                     lambda it: {"instruction": it.instruction, "response": it.answer_a}, stop=("Verdict", "verdict:"))


@dataclass(frozen=True)
class JudgeDecoding:
    format: str = REASONING_FIRST
    constrained: bool = False
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256  # reasoning (reasoning_first) or explanation (verdict_first) budget
    frequency_penalty: float = 0.0
    # judge.explanation=none: constrained decoding forces the verdict line first in any format and writes nothing
    # else (no reasoning, no explanation).
    verdict_only: bool = False

    def text_sampling(self, n: int, budget: int, stop: tuple[str, ...] = ()) -> Sampling:
        return Sampling(n=n, temperature=self.temperature, top_p=self.top_p, max_tokens=budget, stop=stop,
                        frequency_penalty=self.frequency_penalty)

    def verdict_sampling(self, n: int) -> Sampling:
        # No frequency penalty on the verdict token (it never repeats an output token anyway).
        return Sampling(n=n, temperature=self.temperature, top_p=self.top_p, max_tokens=1)


def budget(dec: JudgeDecoding) -> int:
    """Tokens one generation may take: the reasoning/explanation budget, plus the verdict line in
    free decoding (constrained decoding writes the verdict in a step of its own)."""
    if dec.verdict_only and dec.constrained:
        return 1
    return dec.max_tokens + (0 if dec.constrained else VERDICT_ROOM)


def both_orders(pid: str, instruction: str, chosen: str, rejected: str) -> list[tuple[str, str, JudgeItem]]:
    """The two presentations of a pair, ``(order, gold, item)``: chosen shown as A, then as B."""
    out = []
    for order in ORDERS:
        gold = "A" if order == "AB" else "B"
        a, b = (chosen, rejected) if order == "AB" else (rejected, chosen)
        out.append((order, gold, JudgeItem(id=f"{pid}/{order}", instruction=instruction, answer_a=a, answer_b=b,
                                           pair_id=pid, gold=gold)))
    return out


def preferred(verdict: Optional[str], order: str) -> Optional[int]:
    """Which answer of a ``both_orders`` pair a verdict picks: 0 (the one shown as A in order AB) or 1;
    None when the verdict did not parse."""
    if verdict not in VERDICT_OPTIONS:
        return None
    return 0 if (verdict == "A") == (order == "AB") else 1


def judge_messages(tpl: Template, item: JudgeItem, form: Optional[VerdictForm] = None) -> list[dict]:
    if form is not None:
        return tpl.messages(**form.fields(item))
    return tpl.messages(instruction=item.instruction, answer_a=item.answer_a, answer_b=item.answer_b)


def _sample(judgment: str, form: VerdictForm, tokens: int, margin: Optional[float] = None, text: Optional[str] = None,
            explained: bool = True) -> dict:
    v = form.parse(judgment)
    return {"judgment": judgment, "verdict": v.winner, "error": v.error, "tokens": tokens, "margin": margin,
            "repeat": round(repeat_ratio(text if text is not None else judgment), 4), "explained": explained}


def _first_line(text: str) -> str:
    """A verdict_first explanation: the first line the judge writes (cut at any verdict attempt).
    One line ends in EOS in the SFT target, so the trained judge learns to stop there."""
    lines = [ln.strip() for ln in strip_reasoning(text).splitlines() if ln.strip()]
    return lines[0] if lines else ""


def _margin(res, form: VerdictForm) -> Optional[float]:
    lp = res.option_logprobs
    return None if lp is None else lp[form.options[0]] - lp[form.options[1]]


class _Calibrator:
    """``judge.calibrate``: each verdict from its margin minus its pair's offset, the mean margin over
    both orders (the position bias; contextual calibration), sampled at the judging temperature.
    Offsets live in ``offsets`` across calls: a pair's is fixed by its first call (both orders)."""

    def __init__(self, offsets: Optional[dict[str, float]], temperature: float, seed: str):
        self.offsets, self.temperature, self.seed = offsets, temperature, seed

    def fit(self, items: list[JudgeItem], margins: dict[str, list[float]]) -> None:
        if self.offsets is None:
            return
        by_pair: dict[str, list[float]] = {}
        for it in items:
            by_pair.setdefault(it.pair_id, []).extend(margins[it.id])
        for pid, ms in by_pair.items():
            self.offsets.setdefault(pid, sum(ms) / len(ms))

    def decide(self, it: JudgeItem, i: int, engine_verdict: str, margin: float) -> str:
        if self.offsets is None:
            return engine_verdict
        d = margin - self.offsets[it.pair_id]
        if self.temperature <= 0:
            return "A" if d > 0 else "B"
        rng = random.Random(f"{self.seed}:{it.id}:{i}")  # per sample: independent of batching
        z = max(-50.0, min(50.0, d / self.temperature))  # exp() overflows past ~709
        return "A" if rng.random() < 1.0 / (1.0 + math.exp(-z)) else "B"


def sample(items: list[JudgeItem], n: int, engine: Engine, ctx: StageContext, tpl: Template, dec: JudgeDecoding,
           offsets: Optional[dict[str, float]] = None, explain: str = "all",
           degenerate_above: Optional[float] = None, seed: str = "", form: Optional[VerdictForm] = None) -> dict[str, dict]:
    """``n`` judgments of each item: ``{item id: {"samples": [...], "prompt_tokens": int}}``.

    Items whose prompt does not fit the context are absent. ``offsets`` (constrained only): calibrate
    verdicts by pair (``_Calibrator``). ``explain`` (verdict_first, constrained): ``all`` judgments
    get their explanation; ``correct``: only the one a caller keeps, the first correct one per item
    (or the next, while the explanation is degenerate above ``degenerate_above``); ``none``:
    verdicts only (majority votes, ``judge.explanation=none``). Unexplained judgments are just their verdict
    line. ``form``: the verdict's form (default: the pairwise one of ``dec.format``; ``VERIFY`` for yes/no
    verdicts on one answer, which are written first, as verdict_first's).
    """
    form = form or pairwise_form(dec.format)
    base = {it.id: GenRequest(id=it.id, messages=judge_messages(tpl, it, form), sampling=dec.text_sampling(n, budget(dec)))
            for it in items}
    fitting = [it for it in items if fits(engine, base[it.id], ctx, extra_tokens=VERDICT_ROOM if dec.constrained else 0)]
    if not dec.constrained:  # free: one generation, parsed in the format
        return {res.id: {"samples": [_sample(t.strip(), form, tok) for t, tok in zip(res.texts, res.completion_tokens)],
                         "prompt_tokens": res.prompt_tokens}
                for res in engine.generate([base[it.id] for it in fitting])}
    cal = _Calibrator(offsets, dec.temperature, seed)
    if dec.verdict_only:
        explain = "none"
    elif dec.format == REASONING_FIRST and form.open == verdict_open(REASONING_FIRST):
        return _reasoning_first(fitting, base, n, engine, dec, cal, form)
    return _verdict_first(fitting, base, n, engine, dec, cal, explain, degenerate_above, form, seed)


def _reasoning_first(items: list[JudgeItem], base: dict[str, GenRequest], n: int, engine: Engine, dec: JudgeDecoding,
                     cal: _Calibrator, form: VerdictForm) -> dict[str, dict]:
    """Phase 1: n reasonings, cut at any verdict attempt. Phase 2: the verdict token after each."""
    first = {r.id: r for r in engine.generate([
        GenRequest(it.id, base[it.id].messages, dec.text_sampling(n, dec.max_tokens, stop=("[[",))) for it in items])}
    prefixes = {f"{it.id}#{i}": (strip_reasoning(t).strip() + "\n\n" + form.open).lstrip()
                for it in items for i, t in enumerate(first[it.id].texts)}
    second = {r.id: r for r in engine.generate([
        GenRequest(rid, base[rid.rsplit("#", 1)[0]].messages, dec.verdict_sampling(1), Constraint(tokens=form.options),
                   assistant_prefix=p)
        for rid, p in prefixes.items()])}
    cal.fit(items, {it.id: [_margin(second[f"{it.id}#{i}"], form) for i in range(n)] for it in items})
    out = {}
    for it in items:
        samples = []
        for i, (text, tok) in enumerate(zip(first[it.id].texts, first[it.id].completion_tokens)):
            res = second[f"{it.id}#{i}"]
            m = _margin(res, form)
            v = cal.decide(it, i, res.texts[0], m)
            samples.append(_sample(prefixes[res.id] + v + "]]", form, tok + res.completion_tokens[0], m,
                                   text=strip_reasoning(text)))
        out[it.id] = {"samples": samples, "prompt_tokens": first[it.id].prompt_tokens}
    return out


def draw(logprobs: dict[str, float], n: int, temperature: float, top_p: float, rng: random.Random) -> list[str]:
    """``n`` tokens drawn from a one-token choice's raw log-probabilities as an engine samples under the mask:
    softmax over the options at ``temperature`` (0: the most likely, every time), then the nucleus ``top_p``."""
    options = sorted(logprobs, key=logprobs.get, reverse=True)
    if temperature <= 0:
        return [options[0]] * n
    top = logprobs[options[0]]
    weights = [math.exp((logprobs[o] - top) / temperature) for o in options]
    total, kept, mass = sum(weights), [], 0.0
    for o, w in zip(options, weights):  # the smallest set of most likely options holding top_p of the mass
        kept.append((o, w))
        mass += w / total
        if mass >= top_p:
            break
    return rng.choices([o for o, _ in kept], weights=[w for _, w in kept], k=n)


def _verdict_first(items: list[JudgeItem], base: dict[str, GenRequest], n: int, engine: Engine, dec: JudgeDecoding,
                   cal: _Calibrator, explain: str, degenerate_above: Optional[float], form: VerdictForm,
                   seed: str) -> dict[str, dict]:
    """n verdict tokens per item, drawn here from one prefill's option log-probabilities (``draw``; the engines
    would prefill the prompt once per sample), then one-line explanations after the verdict line."""
    first = {r.id: r for r in engine.generate([
        GenRequest(it.id, base[it.id].messages, dec.verdict_sampling(1), Constraint(tokens=form.options),
                   assistant_prefix=form.open)
        for it in items])}
    cal.fit(items, {it.id: [_margin(first[it.id], form)] * n for it in items})
    drawn = {it.id: draw(first[it.id].option_logprobs, n, dec.temperature, dec.top_p, random.Random(f"{seed}:{it.id}"))
             for it in items}
    verdicts = {it.id: [form.label(cal.decide(it, i, t, _margin(first[it.id], form))) for i, t in enumerate(drawn[it.id])]
                for it in items}
    texts: dict[tuple[str, int], tuple[str, int]] = {}  # (item, sample) -> (explanation, tokens)
    queue = {it.id: [i for i, v in enumerate(verdicts[it.id]) if explain == "all" or (explain == "correct" and v == it.gold)]
             for it in items}
    while any(queue.values()):
        # "correct": one explanation per item per round, until one is kept; "all": every one at once.
        if explain == "correct":
            batch = [(iid, q.pop(0)) for iid, q in queue.items() if q]
        else:
            batch, queue = [(iid, i) for iid, q in queue.items() for i in q], {}
        reqs = [GenRequest(f"{iid}#{i}", base[iid].messages, dec.text_sampling(1, dec.max_tokens, stop=form.stop),
                           assistant_prefix=form.line(verdicts[iid][i]) + "\n\n") for iid, i in batch]
        for (iid, i), res in zip(batch, engine.generate(reqs)):
            text = _first_line(res.texts[0])
            texts[(iid, i)] = (text, res.completion_tokens[0])
            if explain == "correct" and not (degenerate_above is not None and repeat_ratio(text) > degenerate_above):
                queue[iid] = []  # this one is kept: no more explanations for the item
    out = {}
    for it in items:
        res, samples = first[it.id], []
        for i, v in enumerate(verdicts[it.id]):
            text, tok = texts.get((it.id, i), ("", 0))
            judgment = form.line(v) + (f"\n\n{text}" if text else "")
            samples.append(_sample(judgment, form, 1 + tok, _margin(res, form), text=text, explained=(it.id, i) in texts))
        out[it.id] = {"samples": samples, "prompt_tokens": res.prompt_tokens}
    return out


def _usable(s: dict, gold: str, cfg: JudgeConfig) -> bool:
    """A correct judgment that may be kept: explained (unless the target is the verdict alone), not degenerate."""
    if s["verdict"] != gold or not (s["explained"] or cfg.explained == "none"):
        return False
    return not (cfg.drop_degenerate and s["repeat"] > cfg.degenerate_threshold)


def wave_size(cfg: JudgeConfig, constrained: bool) -> int:
    """Judgments drawn per (item, wave): ``judge.n``; with constrained verdicts alone (``judge.explanation=none``)
    every draw is a token of one next-token distribution, so all ``n_max`` come from the one prefill that another
    wave would only repeat."""
    return (cfg.n_max or cfg.n) if constrained and cfg.explained == "none" else cfg.n


def decoding(cfg: JudgeConfig, constrained: bool) -> JudgeDecoding:
    return JudgeDecoding(format=cfg.format, constrained=constrained, temperature=cfg.temperature, top_p=cfg.top_p,
                         max_tokens=cfg.max_tokens, frequency_penalty=cfg.frequency_penalty,
                         verdict_only=cfg.explained == "none")


def target(s: dict, form: VerdictForm, cfg: JudgeConfig) -> str:
    """A kept judgment as the SFT target: the verdict line alone with ``judge.explanation=none``, else as judged."""
    return form.line(s["verdict"]) if cfg.explained == "none" else s["judgment"]


def mirror(judgment: str, row: dict, fmt: str) -> Optional[str]:
    """The judgment of ``row``'s pair in the other order, mirrored exactly; None where the swap is
    ambiguous (its round trip differs) or the mirrored verdict does not read as the other order's gold."""
    sources = (row["instruction"], row["answer_a"], row["answer_b"])
    text = swap.mirror_text(judgment, sources)
    if swap.mirror_text(text, sources) != judgment:
        return None
    want = "B" if row["gold"] == "A" else "A"
    return text if parse_verdict(text, fmt).winner == want else None


def _mirrorable(row: dict, cfg: JudgeConfig) -> list[tuple[dict, str]]:
    """(usable sample, its mirror) for every usable judgment of ``row`` whose mirror is exact."""
    out = []
    for s in row["samples"]:
        if _usable(s, row["gold"], cfg):
            text = mirror(s["judgment"], row, cfg.format)
            if text is not None:
                out.append((s, text))
    return out


def process(pairs: list[dict], engine: Engine, ctx: StageContext, cfg: JudgeConfig) -> list[dict]:
    """One row per (pair, order) with every sample and the kept judgment (or the reason there is none).

    The kept judgment is drawn at random from the usable correct ones (verdict_first explains only
    the first correct judgment of a wave, so that is the one); with ``swap``, an order with none
    takes the mirror of one of the other order's usable judgments that mirrors exactly."""
    tpl = load_template(cfg.template)
    dec = decoding(cfg, ctx.constrained)
    form = pairwise_form(cfg.format)
    items, rows = [], {}
    for p in pairs:
        for order, gold, item in both_orders(p["pair_id"], p["instruction"], p["chosen"], p["rejected"]):
            items.append(item)
            rows[item.id] = {
                "example_id": item.id, "pair_id": p["pair_id"], "order": order, "gold": gold,
                "instruction": p["instruction"], "answer_a": item.answer_a, "answer_b": item.answer_b,
                "category": p.get("category"), "samples": [], "waves": 0, "prompt_tokens": None,
            }
    partner = {it.id: f"{it.pair_id}/{'BA' if it.id.endswith('/AB') else 'AB'}" for it in items}
    n_max = cfg.n_max or cfg.n
    offsets: Optional[dict[str, float]] = {} if cfg.calibrate and ctx.constrained else None
    pending, wave = list(items), 0
    while pending:
        k = min(wave_size(cfg, ctx.constrained), n_max - len(rows[pending[0].id]["samples"]))  # all drew as many
        got = sample(pending, k, engine, ctx, tpl, dec, offsets, explain="correct",
                     degenerate_above=cfg.degenerate_threshold if cfg.drop_degenerate else None,
                     seed=f"{ctx.seed}:{wave}")
        wave += 1
        for it in pending:
            if it.id in got:
                rows[it.id]["samples"] += got[it.id]["samples"]
                rows[it.id]["waves"] = wave
                rows[it.id]["prompt_tokens"] = got[it.id]["prompt_tokens"]
        if cfg.n_max is None:
            break
        done = {it.id for it in pending if any(_usable(s, it.gold, cfg) for s in rows[it.id]["samples"])}
        if cfg.swap:  # the other order is served by an exact mirror, when one exists
            done |= {partner[i] for i in done if _mirrorable(rows[i], cfg)}
        pending = [it for it in pending if it.id in got and it.id not in done and len(rows[it.id]["samples"]) < n_max]

    for it in items:
        row = rows[it.id]
        if row["prompt_tokens"] is None:
            row.update(status=TOO_LONG, n_samples=0, n_parsed=0, n_correct=0, kept_judgment=None, kept_verdict=None,
                       kept_source=None, judge_meta=None)
            continue
        samples = row["samples"]
        usable = [s for s in samples if _usable(s, it.gold, cfg)]
        rng = random.Random(f"{ctx.seed}:{it.id}")  # per example: independent of batching
        kept = rng.choice(usable) if usable else None
        row.update(
            status=OK if kept else NO_CORRECT, n_samples=len(samples),
            n_parsed=sum(s["verdict"] is not None for s in samples),
            n_correct=sum(s["verdict"] == it.gold for s in samples),
            kept_judgment=target(kept, form, cfg) if kept else None, kept_verdict=kept["verdict"] if kept else None,
            kept_source=SAMPLED if kept else None,
            judge_meta=provenance(STAGE, ctx, tpl.id, dec.text_sampling(cfg.n, budget(dec)), row["prompt_tokens"],
                                  sum(s["tokens"] for s in samples), engine),
        )
    if cfg.swap:
        for it in items:
            row, other = rows[it.id], rows[partner[it.id]]
            if row["status"] != NO_CORRECT or other["kept_source"] != SAMPLED:
                continue
            candidates = _mirrorable(other, cfg)
            if not candidates:
                row["mirror_failed"] = True
                continue
            # The other order's kept judgment when it mirrors exactly, else another of its usable ones (a verdict
            # line alone, judge.explanation=none, mirrors to the other verdict's line).
            text = form.line(it.gold) if cfg.explained == "none" else \
                next((t for s, t in candidates if s["judgment"] == other["kept_judgment"]), candidates[0][1])
            row.update(status=OK, kept_judgment=text, kept_verdict=it.gold, kept_source=MIRROR,
                       mirrored_from=other["example_id"])
    return [rows[it.id] for it in items]


def balance_key(seed: int, example_id: str) -> int:
    """A row's rank in the A/B balance: a seeded hash, so the balance needs no row order and can be
    decided shard by shard from two small arrays (``balance_thresholds``)."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{example_id}".encode(), digest_size=8).digest(), "little")


def balance_thresholds(keys: dict[str, list[int]], labels: tuple[str, ...] = VERDICT_OPTIONS) -> dict[str, Optional[int]]:
    """Per verdict, the largest key kept: the k smallest keys of each label, k = the smallest label's count."""
    k = min(len(keys.get(v, [])) for v in labels)
    return {v: (int(np.partition(np.asarray(keys[v], dtype=np.uint64), k - 1)[k - 1]) if k else None)
            for v in labels}


def balanced_in(row: dict, seed: int, thresholds: dict[str, Optional[int]]) -> bool:
    t = thresholds.get(row["gold"])
    return t is not None and balance_key(seed, row["example_id"]) <= t


def balance(rows: list[dict], seed: int) -> list[dict]:
    """Downsample the majority verdict so A-wins == B-wins; dropped rows are re-labelled, not lost."""
    keys: dict[str, list[int]] = {"A": [], "B": []}
    for r in rows:
        if r["status"] == OK:
            keys[r["gold"]].append(balance_key(seed, r["example_id"]))
    t = balance_thresholds(keys)
    return [{**r, "status": BALANCED_OUT} if r["status"] == OK and not balanced_in(r, seed, t) else r for r in rows]


def shard_stats(rows: list[dict], cfg: JudgeConfig) -> dict:
    """Additive counts over one shard's rows: parse, verdicts, sample accuracy, degeneracy, mirrors."""
    samples = [(s, r["gold"]) for r in rows for s in (r.get("samples") or [])]
    explained = [s for s, _ in samples if s["explained"]]
    return {
        "samples": len(samples),
        "judged": sum(bool(r.get("samples")) for r in rows),
        "max_waves": max((r.get("waves") or 0 for r in rows), default=0),
        "parsed": sum(s["verdict"] is not None for s, _ in samples),
        "verdict_A": sum(s["verdict"] == "A" for s, _ in samples),
        "verdict_B": sum(s["verdict"] == "B" for s, _ in samples),
        "correct": sum(s["verdict"] == g for s, g in samples),
        "parse_errors": dict(Counter(s["error"] for s, _ in samples if s["error"])),
        "explained": len(explained),
        "degenerate": sum(s["repeat"] > cfg.degenerate_threshold for s in explained),
        "mirror_failed": sum(bool(r.get("mirror_failed")) for r in rows),
    }


def summarize(st: dict, cfg: Optional[JudgeConfig] = None) -> dict:
    def rate(a: int, b: int) -> Optional[float]:
        return round(a / b, 4) if b else None

    n = st.get("samples", 0)
    return {
        "samples": n,
        "samples_per_item": rate(n, st.get("judged", 0)),
        "waves": st.get("max_waves", 0),
        "parse_rate": rate(st.get("parsed", 0), n),
        "verdict_A": st.get("verdict_A", 0),
        "verdict_B": st.get("verdict_B", 0),
        "sample_accuracy": rate(st.get("correct", 0), n),
        "parse_errors": dict(st.get("parse_errors") or {}),
        # Judgments with more than ``degenerate_threshold`` of their 4-grams repeated (see degeneracy.py);
        # verdict_first explains only the judgments that may be kept: the rate is over those.
        "degenerate_rate": rate(st.get("degenerate", 0), st.get("explained", 0)),
        "mirror_failed": st.get("mirror_failed", 0),
    }


def sample_stats(rows: list[dict], degenerate_threshold: float) -> dict:
    """Parse rate, verdict balance, sample accuracy and degeneracy over all samples; mirror failures."""
    return summarize(shard_stats(rows, JudgeConfig(degenerate_threshold=degenerate_threshold)))


def kept_stats(kept: list[dict], verdict_key: str = "gold") -> dict:
    """What the SFT rows are made of (after the balance): A-wins, B-wins, sampled and mirrored. Judge
    rows carry the verdict as ``gold``, SFT rows (``sft_data.shard_stats``) as ``verdict``."""
    return {"kept_A": sum(r[verdict_key] == "A" for r in kept), "kept_B": sum(r[verdict_key] == "B" for r in kept),
            "kept_sampled": sum(r["kept_source"] == SAMPLED for r in kept),
            "kept_mirror": sum(r["kept_source"] == MIRROR for r in kept)}


def finalize(sd, cfg: JudgeConfig, ctx: StageContext) -> dict:
    """The A/B balance of the kept rows, decided from three columns of every shard: the per-verdict
    thresholds (``sft_data`` applies them row by row) and what the SFT set will hold."""
    keys: dict[str, list[int]] = {"A": [], "B": []}
    mirror: dict[str, list[bool]] = {"A": [], "B": []}
    for f in sd.data_files():
        for r in io.read_records(f, ["example_id", "gold", "kept_source"]):
            keys[r["gold"]].append(balance_key(ctx.seed, r["example_id"]))
            mirror[r["gold"]].append(r["kept_source"] == MIRROR)
    t = (balance_thresholds(keys) if cfg.balance
         else {v: (max(keys[v]) if keys[v] else None) for v in ("A", "B")})
    kept = {v: np.asarray(keys[v], dtype=np.uint64) <= np.uint64(t[v]) if t[v] is not None
            else np.zeros(len(keys[v]), dtype=bool) for v in ("A", "B")}
    n_mirror = sum(int((kept[v] & np.asarray(mirror[v], dtype=bool)).sum()) for v in ("A", "B"))
    n_kept = int(kept["A"].sum() + kept["B"].sum())
    return {"balance": t, "correct_A": len(keys["A"]), "correct_B": len(keys["B"]),
            "kept_A": int(kept["A"].sum()), "kept_B": int(kept["B"].sum()),
            "kept_sampled": n_kept - n_mirror, "kept_mirror": n_mirror}


OTHER_MODES_ONLY = ("mode", "absolute_template", "score_balance", "verify_template")  # knobs of grade_pairs, verify_pairs


def stage_config(cfg, up: Upstream) -> JudgeConfig:
    """``cfg.judge`` less the knobs of grade_pairs and verify_pairs alone (defaults), so switching ``judge.mode``
    between pairwise and both reuses the verdicts."""
    return replace(cfg.judge, **{f: getattr(JudgeConfig, f) for f in OTHER_MODES_ONLY})


SPEC = StageSpec(name=STAGE, row_type=Judged, process=process,
                 engine="judge", rows_per_input=len(ORDERS), meta_fields=("judge_meta",),
                 shard_stats=shard_stats, summarize=summarize, finalize=finalize, config=stage_config,
                 enabled=lambda cfg: cfg.judge.mode in ("pairwise", "both"), templates=lambda c: (c.template,),
                 describe=lambda c: f"n={c.n}, {len(ORDERS)} orders")
