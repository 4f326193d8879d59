"""judge.mode=verify on a real engine (transformers, tiny random Llama): the verify_pairs stage keeps a correct
yes/no verdict per answer and balances them; eval mode verify decides each pair by the answers' P(yes), checked
against a plain transformers forward pass; its SFT rows end in the verdict line; selftaught judge decides by it;
and the verdict-weighted SFT loss is the weighted sum it claims to be."""
from __future__ import annotations

import json
import math

import pytest
import torch

from selftaught.config import EvalConfig, JudgeConfig
from selftaught.parsing import VERIFY_OPEN, parse_yes_no
from selftaught.prompts import load_template
from selftaught.stages import evaluate, sft_data, verify_pairs
from selftaught.stages.base import OK
from selftaught.stages.judge import VERIFY, JudgeItem, judge_messages

PAIRS = [{"pair_id": f"p{i}", "instruction": f"What is {i} + {i}?", "chosen": f"{i} + {i} = {2 * i}.",
          "rejected": f"The capital of country {i} is city {i}.", "category": "Math"} for i in range(6)]


def _yes_margin(model_path: str, instruction: str, response: str) -> float:
    """log p(" Yes") - log p(" No") after the verify prompt and "Verdict:", by a plain forward pass."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    msgs = judge_messages(load_template("verify"), JudgeItem("x", instruction, response), VERIFY)
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) + VERIFY_OPEN
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        lp = torch.log_softmax(model(ids).logits[0, -1].float(), -1)
    yes, no = (tok.encode(o, add_special_tokens=False)[0] for o in (" Yes", " No"))
    return float(lp[yes] - lp[no])


def test_verify_pairs_keeps_a_correct_verdict_per_answer_and_balances(tiny_engine, tiny_ctx):
    cfg = JudgeConfig(mode="verify", n=2, n_max=4, temperature=1.0, explanation="none", seed=0)
    rows = verify_pairs.process(PAIRS, tiny_engine, tiny_ctx, cfg)
    assert [(r["pair_id"], r["side"], r["gold"]) for r in rows[:2]] == [("p0", "chosen", "Yes"), ("p0", "rejected", "No")]
    assert len(rows) == 2 * len(PAIRS)
    for r in rows:
        # explanation none, constrained: all n_max verdicts from one prefill, one wave
        assert r["waves"] == 1 and len(r["samples"]) == 4
        assert all(s["verdict"] in ("Yes", "No") and s["margin"] is not None for s in r["samples"])
        if r["status"] == OK:
            assert r["kept_verdict"] == r["gold"] and r["kept_judgment"] == f"Verdict: {r['gold']}"
        else:
            assert all(s["verdict"] != r["gold"] for s in r["samples"])
    keys = {"Yes": [], "No": []}
    for r in rows:
        if r["status"] == OK:
            keys[r["gold"]].append(verify_pairs.balance_key(0, r["example_id"]))
    t = verify_pairs.balance_thresholds(keys, ("Yes", "No"))
    kept = [r for r in rows if r["status"] == OK and verify_pairs.balanced_in(r, 0, t)]
    assert sum(r["gold"] == "Yes" for r in kept) == sum(r["gold"] == "No" for r in kept) == min(map(len, keys.values()))

    sft = sft_data.process(rows, None, None, sft_data.SftBuild(cfg, 0, None, None, t))
    ok = [r for r in sft if r["status"] == OK]
    assert len(ok) == len(kept) and all(r["kind"] == "verify" for r in ok)
    for r in ok:
        assert r["messages"][-1] == {"role": "assistant", "content": f"Verdict: {r['verdict']}"}
        assert "[Response]" in r["messages"][-2]["content"]  # the verify prompt, one answer

    short_cfg = JudgeConfig(mode="verify", n=2, n_max=4, temperature=1.0, max_tokens=6, seed=0)
    short = verify_pairs.process(PAIRS[:2], tiny_engine, tiny_ctx, short_cfg)
    for r in short:  # explanation short: waves of n; a kept verdict carries the line written after it
        assert r["waves"] in (1, 2) and len(r["samples"]) in (2, 4)
        if r["status"] == OK:
            assert parse_yes_no(r["kept_judgment"]).winner == r["gold"]


def test_eval_verify_mode_decides_by_yes_log_odds(tiny_engine, tiny_ctx, tiny_model_path):
    pairs = [{**p, "eval_id": f"s/{p['pair_id']}", "set": "s", "subset": "s"} for p in PAIRS]
    cfg = EvalConfig(modes=["verify"], template="judge_verdict_first", format="verdict_first", verify_template="verify")
    rows = evaluate.process(pairs, tiny_engine, tiny_ctx, cfg)
    assert len(rows) == 2 * len(pairs) and {r["mode"] for r in rows} == {"verify"}
    for p in pairs:
        mc = _yes_margin(tiny_model_path, p["instruction"], p["chosen"])
        mr = _yes_margin(tiny_model_path, p["instruction"], p["rejected"])
        ab, ba = [r for r in rows if r["eval_id"] == p["eval_id"]]
        assert ab["order"] == "AB" and ab["margin"] == pytest.approx(mc - mr, abs=1e-3)
        assert ab["verdict"] == ("A" if mc > mr else "B") and ba["verdict"] == ("B" if mc > mr else "A")
        assert ab["correct"] == ba["correct"] == (mc > mr)
        assert ab["label_a"] == ("Yes" if mc > 0 else "No") and ab["label_b"] == ("Yes" if mr > 0 else "No")
    m = evaluate.metrics(rows)["verify"]["s"]
    assert m["consistency"] == 1.0 and m["verdict_A_rate"] == 0.5
    labels = [r for r in rows if r["order"] == "AB"]
    assert m["yes_rate"] == pytest.approx(sum((r["label_a"] == "Yes") + (r["label_b"] == "Yes") for r in labels) / 12, abs=1e-4)
    assert m["accuracy_lo"] <= m["accuracy"] <= m["accuracy_hi"]


def test_selftaught_judge_decides_by_verify(tmp_path, tiny_model_path):
    from selftaught import compose, judge

    f = tmp_path / "pairs.jsonl"
    f.write_text("".join(json.dumps({"id": p["pair_id"], "instruction": p["instruction"], "response_a": p["chosen"],
                                     "response_b": p["rejected"]}) + "\n" for p in PAIRS[:3]))
    s = judge(compose([f"model.path={tiny_model_path}", f"output_dir={tmp_path}", "name=j", "engine=hf",
                       "engine.constrained=true", "ray.enabled=false", f"judge_file.path={f}", "judge_file.decide=verify",
                       "tracking.mode=disabled"]))
    rows = [json.loads(x) for x in open(s["outputs"]["verdicts"])]
    for r, p in zip(rows, PAIRS[:3]):
        ma = _yes_margin(tiny_model_path, p["instruction"], p["chosen"])
        mb = _yes_margin(tiny_model_path, p["instruction"], p["rejected"])
        assert r["decided_by"] == "verify" and r["winner"] == ("response_a" if ma > mb else "response_b")
        assert r["margin_AB"] == pytest.approx(ma - mb, abs=1e-3) and r["margin_BA"] == -r["margin_AB"]


def test_verdict_weighted_loss_is_the_weighted_token_sum(tmp_path, tiny_model_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from selftaught.training.data import sft_dataset
    from selftaught.training.weighted import verdict_mask, verdict_patterns, weighted_sft_trainer

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    rows = [{"messages": [{"role": "user", "content": "Is 2 + 2 = 4 right?"},
                          {"role": "assistant", "content": f"Verdict: {v}\n\nIt is {v.lower()}."}]} for v in ("Yes", "No")]
    args = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, completion_only_loss=True, use_cpu=True,
                     report_to="none", max_length=128, disable_tqdm=True)
    losses = {}
    for w in (1.0, 7.0):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32)
        trainer = weighted_sft_trainer(SFTTrainer, w)(model=model, args=args, train_dataset=sft_dataset(rows),
                                                      processing_class=tok)
        batch = next(iter(trainer.get_train_dataloader()))
        with torch.no_grad():
            losses[w] = float(trainer.compute_loss(model, dict(batch)))
            logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        valid = labels != -100
        lp = torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
        weights = torch.where(verdict_mask(batch["labels"], verdict_patterns(tok))[:, 1:], w, 1.0)
        want = float(-(lp * weights * valid).sum() / valid.sum())
        assert losses[w] == pytest.approx(want, rel=1e-4)
    assert verdict_mask(batch["labels"], verdict_patterns(tok)).sum() == 2  # one verdict token per row
    assert losses[7.0] > losses[1.0] and not math.isclose(losses[7.0], losses[1.0])


def test_cpu_scores_target_positions_only_with_the_same_loss(tmp_path, tiny_model_path, monkeypatch):
    """training.worker.score_targets_only: TRL's fused LM head projects only the labelled positions on CPU; the
    loss and the gradients are those of projecting every position."""
    import trl.trainer.utils as trl_utils
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from selftaught.training.data import sft_dataset
    from selftaught.training.worker import score_targets_only

    monkeypatch.setattr(trl_utils, "_use_triton", trl_utils._use_triton)  # undone after the test
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    rows = [{"messages": [{"role": "user", "content": f"Question {i}: is {i} even?"},
                          {"role": "assistant", "content": f"Verdict: {'Yes' if i % 2 == 0 else 'No'}"}]} for i in range(3)]
    args = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=3, completion_only_loss=True, use_cpu=True,
                     report_to="none", max_length=128, disable_tqdm=True)
    out = {}
    for patched in (False, True):
        if patched:
            score_targets_only(gpu=False, compiled=False)
            assert trl_utils._use_triton(torch.device("cpu"))
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32)
        trainer = SFTTrainer(model=model, args=args, train_dataset=sft_dataset(rows), processing_class=tok)
        batch = next(iter(trainer.get_train_dataloader()))
        loss = trainer.compute_loss(model, dict(batch))
        loss.backward()
        out[patched] = (float(loss.detach()), model.model.layers[0].mlp.down_proj.weight.grad.clone())
    assert out[True][0] == pytest.approx(out[False][0], rel=1e-5)
    assert torch.allclose(out[True][1], out[False][1], rtol=1e-4, atol=1e-7)
