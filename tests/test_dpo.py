"""train.objective=dpo|sft_then_dpo: preference rows from the judge's samples (correct kept vs an
incorrect one of the same (pair, order)), and TRL's DPOTrainer (+ NLL on chosen) under the same Ray
Train launcher on CPU, 2 workers, on a tiny Llama: the policy must move toward the chosen judgments."""
from __future__ import annotations

import json
import os

import pytest
import torch

from selftaught import compose
from selftaught.config import ConfigError, DpoConfig, RayConfig, TrainConfig
from selftaught.io import write_records
from selftaught.stages import dpo_data
from selftaught.stages.base import OK
from selftaught.stages.judge import BALANCED_OUT, balance_key
from selftaught.training.args import dpo_config_kwargs

RAY = RayConfig(num_cpus=2)


def _judged(i: int, gold: str, verdicts: list) -> dict:
    samples = [{"judgment": f"{'why' if v == gold else 'bad'} {j}\n\nVerdict: [[{v}]]" if v else "???", "verdict": v,
                "error": None, "tokens": 5, "margin": None, "explained": True, "repeat": 0.0} for j, v in enumerate(verdicts)]
    return {"example_id": f"p{i}/{'AB' if gold == 'A' else 'BA'}", "pair_id": f"p{i}", "order": "AB" if gold == "A" else "BA",
            "gold": gold, "instruction": f"What is {i} + {i}?", "answer_a": f"{2 * i}", "answer_b": f"{2 * i + 1}",
            "category": "Math", "samples": samples, "status": OK, "kept_judgment": f"why 0\n\nVerdict: [[{gold}]]",
            "kept_verdict": gold, "kept_source": "sampled", "judge_meta": {"stage": "judge"}}


def test_preference_rows_pair_the_kept_judgment_with_an_incorrect_one():
    from selftaught.config import JudgeConfig

    rows = [_judged(0, "A", ["A", "B", None, "B"]), _judged(1, "B", ["B", "B"]), _judged(2, "B", ["B", "A"])]
    out = dpo_data.process(rows, None, None, dpo_data.DpoBuild(JudgeConfig(template="judge_verdict_first",
                                                                            format="verdict_first")))
    ok = {r["example_id"]: r for r in out if r["status"] == OK}
    assert set(ok) == {"p0/AB", "p2/BA"} and [r["status"] for r in out if r["status"] != OK] == [dpo_data.NO_INCORRECT]
    for r in ok.values():
        assert r["chosen"][0]["content"].endswith(f"[[{r['verdict']}]]")
        assert r["rejected_verdict"] != r["verdict"] and r["rejected"][0]["content"].startswith("bad")  # never unparsed
        assert [m["role"] for m in r["prompt"]] == ["system", "user"] and r["template"].startswith("judge_verdict_first@")
    # The judge's A/B balance applies as in sft_data: a row above its verdict's threshold is dropped, counted.
    t = {"A": balance_key(0, "p0/AB") - 1, "B": 2 ** 64 - 1}
    out = dpo_data.process(rows, None, None, dpo_data.DpoBuild(JudgeConfig(), thresholds=t))
    assert [(r["example_id"], r["status"]) for r in out if r["status"] == BALANCED_OUT] == [("p0/AB", BALANCED_OUT)]


def _verified(pair: int, side: str, verdicts: list) -> dict:
    gold = "Yes" if side == "chosen" else "No"
    samples = [{"judgment": f"Verdict: {v}\nit {j}" if v else "Verdict: maybe", "verdict": v, "error": None, "tokens": 3,
                "margin": None, "explained": True, "repeat": 0.0} for j, v in enumerate(verdicts)]
    return {"example_id": f"p{pair}/{side}", "pair_id": f"p{pair}", "side": side, "gold": gold,
            "instruction": f"Name {pair} fruit.", "response": f"apple {pair}" if gold == "Yes" else "a tuba",
            "category": "Other", "samples": samples, "status": OK, "kept_judgment": f"Verdict: {gold}",
            "kept_verdict": gold, "verify_meta": {"stage": "verify_pairs"}}


def test_verify_preference_rows_put_the_other_verdict_against_the_kept_one():
    """judge.mode=verify: one row per answer, in the verify prompt. With explanation=none the rejected target is the
    other verdict's line even where every sample was correct; with explanations it must be a sampled wrong one."""
    from selftaught.config import JudgeConfig
    from selftaught.stages.judge import VERIFY
    from selftaught.stages.verify_pairs import BALANCED_OUT as YES_NO_OUT

    rows = [_verified(0, "chosen", ["Yes", "No"]), _verified(0, "rejected", ["No"]), _verified(1, "chosen", ["Yes"])]
    terse = JudgeConfig(mode="verify", explanation="none")
    out = dpo_data.process(rows, None, None, dpo_data.DpoBuild(terse))
    assert [r["status"] for r in out] == [OK] * 3
    for r in out:
        assert r["order"] == r["example_id"].split("/")[1] and r["chosen"][0]["content"] == VERIFY.line(r["verdict"])
        assert {r["verdict"], r["rejected_verdict"]} == {"Yes", "No"}
        assert r["rejected"][0]["content"] == VERIFY.line(r["rejected_verdict"])  # a verdict line, as SFT's targets
        assert r["template"].startswith("verify@") and ("a tuba" in r["prompt"][1]["content"]) == (r["order"] == "rejected")
    explained = dpo_data.process(rows, None, None, dpo_data.DpoBuild(JudgeConfig(mode="verify", explanation="short")))
    assert [r["status"] for r in explained] == [OK, dpo_data.NO_INCORRECT, dpo_data.NO_INCORRECT]
    assert explained[0]["rejected"][0]["content"] == "Verdict: No\nit 1"  # the sampled wrong one, as judged
    # verify_pairs' yes/no balance applies as in sft_data, counted as its own failure.
    t = {"Yes": max(balance_key(0, "p0/chosen"), balance_key(0, "p1/chosen")) - 1, "No": 2 ** 64 - 1}
    out = dpo_data.process(rows, None, None, dpo_data.DpoBuild(terse, verify_thresholds=t))
    dropped = [r["example_id"] for r in out if r["status"] == YES_NO_OUT]
    assert len(dropped) == 1 and dropped[0].endswith("/chosen") and sum(r["status"] == OK for r in out) == 2


def test_objective_config():
    cfg = compose(["train.objective=sft_then_dpo"])
    kw = dpo_config_kwargs(cfg.train, "/tmp/x", gpu=False)
    assert kw["beta"] == 0.1 and kw["loss_type"] == ["sigmoid", "sft"] and kw["loss_weights"] == [1.0, 1.0]
    assert kw["learning_rate"] == cfg.train.lr == 1e-6 and "completion_only_loss" not in kw
    plain = dpo_config_kwargs(TrainConfig(objective="dpo", dpo=DpoConfig(nll_weight=0.0, lr=5e-7)), "/tmp/x", gpu=False)
    assert plain["loss_type"] == ["sigmoid"] and plain["learning_rate"] == 5e-7
    with pytest.raises(ConfigError, match="train.objective: dpo trains on verdicts; judge.mode=absolute samples grades"):
        compose(["train.objective=dpo", "judge.mode=absolute"])
    with pytest.raises(ConfigError, match="train.objective: must be one of sft|dpo|sft_then_dpo"):
        compose(["train.objective=ppo"])


def preference_rows(n: int = 8) -> list[dict]:
    rows = []
    for i in range(n):
        gold = "A" if i % 2 else "B"
        wrong = "B" if gold == "A" else "A"
        q = f"[Question]\nWhat is {i} + {i}?\n[Answer A]\n{2 * i if gold == 'A' else 2 * i + 1}\n[Answer B]\n{2 * i if gold == 'B' else 2 * i + 1}"
        rows.append({"prompt": [{"role": "system", "content": "Compare the two answers."}, {"role": "user", "content": q}],
                     "chosen": [{"role": "assistant", "content": f"Verdict: [[{gold}]]\n\nIt adds up."}],
                     "rejected": [{"role": "assistant", "content": f"Verdict: [[{wrong}]]"}],
                     "example_id": f"e{i}", "pair_id": f"p{i}", "order": "AB", "verdict": gold, "rejected_verdict": wrong})
    return rows


def sft_rows(pref: list[dict]) -> list[dict]:
    return [{"messages": r["prompt"] + r["chosen"], "example_id": r["example_id"]} for r in pref]


def margin(model_dir: str, rows: list[dict]) -> float:
    """Mean over rows of log p(chosen) - log p(rejected) given the prompt (the chat template's rendering)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def logp(prompt, completion) -> float:
        p = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(prompt + completion, tokenize=False)
        ids_p = tok(p, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([tok(full, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            lp = torch.log_softmax(model(ids).logits[0, :-1], -1).gather(1, ids[0, 1:, None])[:, 0]
        return float(lp[len(ids_p) - 1:].sum())

    return sum(logp(r["prompt"], r["chosen"]) - logp(r["prompt"], r["rejected"]) for r in rows) / len(rows)


@pytest.mark.parametrize("objective", ["dpo", "sft_then_dpo"])
def test_dpo_moves_the_policy_toward_chosen(objective, tmp_path, tiny_model_path, ray_local):
    from selftaught.training.launch import train_with_ray

    pref = preference_rows()
    write_records(tmp_path / "dpo.parquet", pref)
    write_records(tmp_path / "sft.parquet", sft_rows(pref))
    cfg = TrainConfig(strategy="zero2", deepspeed="zero2.json", num_workers=2, lr=1e-3, warmup_steps=0, max_steps=6,
                      per_device_batch_size=2, gradient_accumulation_steps=1, max_seq_length=512, logging_steps=1,
                      objective=objective, dpo=DpoConfig(lr=5e-4))
    res = train_with_ray(str(tmp_path / "sft.parquet"), tiny_model_path, str(tmp_path / "model"), cfg, RAY,
                         dpo_path=str(tmp_path / "dpo.parquet"))
    m = res.metrics
    assert m["steps"] == 6 and m["world_size"] == 2 and m["dpo_margin_first"] is not None
    assert m["dpo_margin_last"] > m["dpo_margin_first"]  # the implicit reward margin rises from ~0
    before, after = margin(tiny_model_path, pref), margin(res.model_path, pref)
    assert after > before + 1.0, (before, after)  # the policy itself prefers chosen more
    assert not os.path.exists(os.path.join(res.model_path, "sft_stage"))  # the SFT step's folder is gone
    if objective == "sft_then_dpo":
        assert m["sft"]["steps"] == 6 and m["sft"]["train_loss"] > 0
    saved = json.load(open(os.path.join(res.model_path, "train_metrics.json")))
    assert saved["dpo_margin_last"] == m["dpo_margin_last"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy,workers,lora", [("zero3", 2, False), ("plain", 1, True)])
def test_dpo_under_zero3_and_with_lora(strategy, workers, lora, tmp_path, tiny_model_path, ray_local):
    """ZeRO-3 (the reference model partitioned too) and LoRA (the reference is the model with its adapter
    off; the adapter is merged into the saved model): DPO still moves the saved policy toward chosen."""
    from selftaught.config import LoraConfig
    from selftaught.training.launch import train_with_ray

    pref = preference_rows()
    write_records(tmp_path / "dpo.parquet", pref)
    cfg = TrainConfig(strategy=strategy, deepspeed=None if strategy == "plain" else f"{strategy}.json",
                      num_workers=workers, lr=1e-3, warmup_steps=0, max_steps=6, per_device_batch_size=2,
                      gradient_accumulation_steps=1, max_seq_length=512, logging_steps=1, objective="dpo",
                      dpo=DpoConfig(lr=5e-3 if lora else 5e-4), lora=LoraConfig(enabled=lora))
    res = train_with_ray(None, tiny_model_path, str(tmp_path / "model"), cfg, RAY, dpo_path=str(tmp_path / "dpo.parquet"))
    assert res.metrics["dpo_margin_last"] > res.metrics["dpo_margin_first"] and res.metrics["lora"] is lora
    before, after = margin(tiny_model_path, pref), margin(res.model_path, pref)
    assert after > before + 0.5, (before, after)


@pytest.mark.slow
def test_a_round_with_sft_then_dpo(tmp_path, tiny_model_path, ray_local):
    """Through the driver: the judge's samples become preference rows (stage dpo_data, beside sft_data),
    and the round trains SFT then DPO on them; a rerun redoes nothing."""
    from selftaught.driver import Run
    from selftaught.io import read_records

    data = tmp_path / "x.jsonl"
    data.write_text("".join(json.dumps({"id": f"i{i}", "instruction": t}) + "\n" for i, t in enumerate(
        ["What is 15% of 80?", "Write a haiku about the sea.", "Explain why the sky is blue.", "Name three primes."])))
    cfg = compose([f"output_dir={tmp_path}", "name=dpo", f"model.path={tiny_model_path}", f"data.path={data}",
                   "generator.path=embedded:smollm2", "engine=hf", "engine.constrained=true", "ray.enabled=false",
                   "ray.num_cpus=2", "judge.n=4", "judge.max_tokens=8", "judge.balance=false", "pairs.max_tokens=24", "pairs.checks.enabled=false",
                   "pairs.modify_max_tokens=32", "pairs.max_instruction_tokens=32", "categorize.max_tokens=24",
                   "eval.enabled=false", "rounds=1", "until=train", "tracking.mode=disabled",
                   "train.objective=sft_then_dpo", "train.num_workers=2", "train.lr=1e-4", "train.warmup_steps=0",
                   "train.max_steps=2", "train.per_device_batch_size=1", "train.gradient_accumulation_steps=1",
                   "train.max_seq_length=512"])
    run = Run(cfg)
    run.run()
    s = {x["stage"]: x for x in run.summaries}
    j, d = s["judge"], s["dpo_data"]
    assert d["in"] == j["out"] == d["out"] + d["failed"] and d["out"] > 0  # the tiny judge: A and B both sampled
    rows = read_records(run.run_dir / "round_1" / "dpo_data" / "data")
    judged = {r["example_id"]: r for r in read_records(run.run_dir / "round_1" / "judge" / "data")}
    for r in rows:
        src = judged[r["example_id"]]
        assert r["chosen"][0]["content"] == src["kept_judgment"] and r["verdict"] == src["gold"]
        assert r["rejected"][0]["content"] in [x["judgment"] for x in src["samples"] if x["verdict"] not in (None, src["gold"])]
    t = s["train"]
    assert t["objective"] == "sft_then_dpo" and not t["skipped"] and t["dpo_examples"] == d["out"]
    assert t["examples"] == s["sft_data"]["out"] and t["sft"]["steps"] == 2 and t["steps"] == 2
    again = Run(cfg)
    again.run()
    assert all(x["resumed"] for x in again.summaries)
