"""Pair labels a user can trust: the held-out instructions, the label checks, neighbor pairs, yes/no verdicts and the
verdict-weighted loss's token positions. Pure functions on hand-made rows."""
import pytest

from selftaught.config import HoldoutConfig, NeighborConfig, PairChecksConfig
from selftaught.parsing import parse_yes_no
from selftaught.similarity import nearest, text_similarity
from selftaught.stages import holdout, neighbors
from selftaught.stages.base import OK
from selftaught.stages.pairs import ANSWERS_X, RESTATES_X, RESTATES_XP, SAME_ANSWERS, label_checks


@pytest.mark.parametrize("n, expected", [(4, 2), (60, 30), (100, 40), (735, 74), (100_000, 400)])
def test_holdout_size(n, expected):
    # 10%, at least 40 where as many stay for training (else half), at most 400
    assert holdout.size(n, HoldoutConfig()) == expected


def test_held_out_depends_on_the_ids_alone():
    ids = [f"i{k}" for k in range(500)]
    a = holdout.held_out(ids, HoldoutConfig())
    assert len(a) == 50 and a == holdout.held_out(list(reversed(ids)) + ids[:7], HoldoutConfig())  # order, duplicates
    assert a != holdout.held_out(ids, HoldoutConfig(seed=1))
    # a bigger pool keeps what it shares held out where its share allows: the smallest hashes stay smallest
    more = holdout.held_out(ids + [f"j{k}" for k in range(500)], HoldoutConfig())
    assert len(more) == 100 and len(a & more) >= 30


def _row(x, xp, chosen, rejected):
    return {"instruction": x, "modified_instruction": xp, "chosen": chosen, "rejected": rejected, "status": OK}


def test_label_checks_each_reason():
    rows = [
        _row("A rectangle has a perimeter of 36 cm, and its length is twice its width. What is its area?",
             "A rectangle has a perimeter of 36 cm and its length is twice its width. What is its area?", "72 cm2.", "Area 72."),
        _row("Who wrote Hamlet?", "The answer is: William Shakespeare wrote Hamlet.", "William Shakespeare wrote Hamlet.",
             "Hamlet is a play."),
        _row("Write a haiku about the sea.", "Write a haiku about mountains.", "Waves fold into foam, the tide hums low.",
             "Waves fold into foam, the tide hums low!"),
        _row("Give a tip for learning French.", "Give a tip for learning to cook rice.", "Read French books daily.",
             "A tip for learning to cook rice."),
        _row("What is 15% of 80?", "What is 20% of 50?", "15% of 80 is 12.", "20% of 50 is 10."),
    ]
    label_checks(rows, PairChecksConfig())
    assert [r["status"] for r in rows] == [RESTATES_X, ANSWERS_X, SAME_ANSWERS, RESTATES_XP, OK]
    assert set(rows[4]["similarity"]) == {"instruction", "instruction_answer", "answers", "rejected_instruction"}
    off = [dict(r, status=OK) for r in rows]
    label_checks(off, PairChecksConfig(1.0, 1.0, 1.0, 1.0))  # 1.0 turns every check off
    assert all(r["status"] == OK for r in off)
    off = [dict(r, status=OK) for r in rows]
    label_checks(off, PairChecksConfig(enabled=False))  # so does enabled=false; the similarities are kept
    assert all(r["status"] == OK and r["similarity"] == rows[i]["similarity"] for i, r in enumerate(off))


def test_text_similarity_is_rowwise_and_bounded():
    s = text_similarity(["the cat sat", "abc", ""], ["the cat sat", "xyz", "anything"])
    assert s[0] == pytest.approx(1.0) and s[1] == 0.0 and s[2] == 0.0


def test_nearest_excludes_itself_and_ranks():
    texts = ["python function to sort a list", "python function to reverse a list", "bake a chocolate cake",
             "recipe for a chocolate cake", "the", ""]
    sims, idx = nearest(texts, texts, 3, exclude=list(range(6)))
    assert sims.shape == idx.shape == (6, 3)
    assert idx[0, 0] == 1 and idx[2, 0] == 3 and all(idx[r, c] != r for r in range(6) for c in range(3))
    assert sims[4].max() == 0.0 and sims[5].max() == 0.0  # stop words only, empty: similar to nothing
    assert (sims[:, :-1] >= sims[:, 1:]).all()
    q_sims, q_idx = nearest(["a python function to sort"], texts, 2)  # a query outside the pool
    assert q_idx[0, 0] == 0 and q_sims[0, 0] > q_sims[0, 1]


def test_neighbor_choice_band_and_k():
    pool = [{"id": f"p{i}", "instruction": x} for i, x in enumerate([
        "python function to sort a list of numbers", "python function to reverse a list of numbers",
        "python function to sum a list of numbers", "bake a chocolate cake at home", "tell me about the moon landing",
        "python function to sort a list of numbers"])]  # p5: p0's text again, never its neighbor
    picks = neighbors.choose(pool[:5], pool, NeighborConfig(k=2, min_similarity=0.1, max_similarity=0.9))
    assert [n["id"] for n in picks[0]] in (["p1", "p2"], ["p2", "p1"])
    assert all(0.1 <= n["similarity"] <= 0.9 for p in picks for n in p)
    assert picks[3] == [] and picks[4] == []  # nothing on their topic
    one = neighbors.choose(pool[:3], pool, NeighborConfig(k=1, min_similarity=0.1, max_similarity=0.9))
    assert all(len(p) == 1 for p in one)
    assert neighbors.choose(pool[:3], pool, NeighborConfig(k=2, min_similarity=0.95, max_similarity=0.99)) == [[], [], []]


@pytest.mark.parametrize("text, label, error", [
    ("Verdict: Yes", "Yes", None), ("Verdict: No\n\nIt answers another question.", "No", None),
    ("**Verdict:** no.", "No", None), ("Yes", None, "no verdict"), ("Verdict: Maybe", None, "invalid verdict"),
    ("I think so.\nVerdict: Yes", None, "verdict not on the first line"),
    ("Verdict: Yes\nVerdict: No", None, "multiple verdicts"), ("Verdict: Yes, it does", None, "invalid verdict"),
])
def test_yes_no_parser(text, label, error):
    v = parse_yes_no(text)
    assert (v.winner, v.error) == (label, error)


def test_verdict_mask_finds_each_forms_verdict(smollm2_path):
    import torch
    from transformers import AutoTokenizer

    from selftaught.training.weighted import verdict_mask, verdict_patterns

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    pats = verdict_patterns(tok)
    for text, want in (("Verdict: [[B]]\n\nB is right.", ["B"]), ("Reasons.\n\nFinal verdict: [[A]]", ["A"]),
                       ("Verdict: No\n\nOff topic.", ["ĠNo"]), ("No verdict here, Yes.", [])):
        ids = torch.tensor([tok.encode(text)])
        assert tok.convert_ids_to_tokens(ids[0][verdict_mask(ids, pats)[0]].tolist()) == want, text
