"""The SFT step for real on CPU: Ray Train workers, DeepSpeed ZeRO-2/3 (gloo), DDP + LoRA, on a tiny Llama.

No mocks: every run trains, saves and reloads with plain transformers.
"""
from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from selftaught.config import ConfigError, LoraConfig, RayConfig, TrainConfig
from selftaught.io import write_records

RAY = RayConfig(num_cpus=2)


def sft_rows(n: int = 12) -> list[dict]:
    rows = []
    for i in range(n):
        verdict = "A" if i % 2 else "B"
        rows.append({
            "messages": [
                {"role": "system", "content": "Please act as an impartial judge and compare two answers."},
                {"role": "user", "content": f"[Question]\nWhat is {i} + {i}?\n[Answer A]\n{2 * i}\n[Answer B]\n{2 * i + 1}"},
                {"role": "assistant", "content": f"Answer {verdict} gives the right sum of {i} and {i}. Final verdict: [[{verdict}]]"},
            ],
            "example_id": f"ex{i}", "pair_id": f"p{i // 2}", "order": "ab" if i % 2 else "ba", "verdict": verdict,
            "category": "Mathematical reasoning", "template": "judge", "judge_meta": {"n": 4, "correct": 3},
        })
    return rows


@pytest.fixture(scope="module")
def sft_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    p = tmp_path_factory.mktemp("sft") / "data.parquet"
    write_records(p, sft_rows())
    return str(p)


def train_cfg(strategy: str, workers: int, **kw) -> TrainConfig:
    base = dict(strategy=strategy, deepspeed=None if strategy == "plain" else f"{strategy}.json", num_workers=workers,
                lr=1e-3, warmup_steps=0, max_steps=3, per_device_batch_size=1, gradient_accumulation_steps=2,
                max_seq_length=512, logging_steps=1)
    base.update(kw)
    return TrainConfig(**base)  # checks itself when built


def state_dict(path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(os.path.join(path, "model.safetensors"))


def check_trained(model_path: str, base: str, metrics: dict, strategy: str, workers: int) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for f in ("config.json", "model.safetensors", "generation_config.json", "tokenizer_config.json", "train_metrics.json"):
        assert os.path.isfile(os.path.join(model_path, f)), f
    new, old = state_dict(model_path), state_dict(base)
    assert new, "no weights saved"
    for k, v in new.items():
        assert v.dtype == torch.float32, (k, v.dtype)
        assert v.numel() > 0, k  # ZeRO-3 without gathering saves empty tensors
    shared = [k for k in old if k in new]
    assert shared and all(new[k].shape == old[k].shape for k in shared)
    changed = [k for k in shared if not torch.equal(new[k], old[k])]
    assert len(changed) >= len(shared) // 2, f"only {len(changed)}/{len(shared)} tensors changed"

    # Shareable: tied embeddings stored once, every file readable as the umask allows (not 0600).
    with open(os.path.join(model_path, "config.json")) as f:
        tied = json.load(f).get("tie_word_embeddings")
    assert tied and "lm_head.weight" not in new
    umask = os.umask(0)
    os.umask(umask)
    modes = {f: stat.S_IMODE(os.stat(os.path.join(model_path, f)).st_mode) for f in os.listdir(model_path)
             if os.path.isfile(os.path.join(model_path, f))}
    assert set(modes.values()) == {0o666 & ~umask}, modes

    model = AutoModelForCausalLM.from_pretrained(model_path)
    assert model.dtype == torch.float32
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()  # re-tied on load
    tok = AutoTokenizer.from_pretrained(model_path)
    ids = tok.apply_chat_template([{"role": "user", "content": "Which answer is better?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]

    assert metrics["strategy"] == strategy and metrics["world_size"] == workers
    assert metrics["steps"] == 3 and metrics["examples"] == 12
    assert metrics["tokens"] > 0 and metrics["tokens_per_s"] > 0 and metrics["seconds"] > 0
    assert metrics["train_loss"] == metrics["train_loss"] and 0 < metrics["train_loss"] < 20  # finite
    with open(os.path.join(model_path, "train_metrics.json")) as f:
        on_disk = json.load(f)
    losses = [h["loss"] for h in on_disk["log_history"] if "loss" in h]
    assert len(losses) == 3


@pytest.mark.parametrize("strategy", ["zero2", "zero3"])
def test_deepspeed_two_workers(strategy, ray_local, sft_path, tiny_model_path, tmp_path):
    from selftaught.training.launch import train_with_ray

    out = tmp_path / "model"
    out.mkdir()
    (out / "stale.bin").write_text("partial output of an earlier attempt")
    res = train_with_ray(sft_path, tiny_model_path, str(out), train_cfg(strategy, 2), RAY)
    assert res.model_path == str(out) and os.path.isabs(res.model_path)
    assert not (out / "stale.bin").exists()
    assert "log_history" not in res.metrics and res.log_history
    check_trained(res.model_path, tiny_model_path, res.metrics, strategy, 2)


def test_zero3_two_workers_packed_row_by_row_with_checkpointing(ray_local, sft_path, tiny_model_path, tmp_path):
    """The GPU default's path on CPU: packed micro-batches, the budget sized by both workers together (an
    all-reduce), rows attending row by row, under ZeRO-3 with gradient checkpointing (recomputed forwards)."""
    from selftaught.training.launch import train_with_ray

    cfg = train_cfg("zero3", 2, packing=True, gradient_checkpointing=True, gradient_accumulation_steps=4)
    res = train_with_ray(sft_path, tiny_model_path, str(tmp_path / "model"), cfg, RAY)
    pk = res.metrics["packing"]
    assert pk["budget_source"] == "one step's rows" and pk["gradient_accumulation_steps"] == 1
    assert 3 <= pk["rows_per_pack"] <= 4  # about a step's 4 rows in one pack
    assert res.metrics["world_size"] == 2 and res.metrics["steps"] == 3
    losses = [h["loss"] for h in res.log_history if "loss" in h]
    assert len(losses) == 3 and all(0 < x < 20 for x in losses)
    new, old = state_dict(res.model_path), state_dict(tiny_model_path)
    assert all(v.numel() > 0 for v in new.values())  # gathered from the ZeRO-3 shards
    assert sum(not torch.equal(new[k], old[k]) for k in old if k in new) >= len(old) // 2
    with open(os.path.join(res.model_path, "config.json")) as f:
        assert "sdpa_rows" not in f.read()  # the training-only attention is not saved


def test_plain_lora_merged(ray_local, sft_path, tiny_model_path, tmp_path):
    from selftaught.training.launch import train_with_ray

    lora = LoraConfig(enabled=True, r=8, alpha=16, dropout=0.0)
    res = train_with_ray(sft_path, tiny_model_path, str(tmp_path / "model"), train_cfg("plain", 1, lora=lora, lr=5e-3), RAY)
    # A full merged model at the top level (no adapter files there): loads without peft.
    assert not os.path.exists(os.path.join(res.model_path, "adapter_config.json"))
    assert os.path.isfile(os.path.join(res.model_path, "lora_adapter", "adapter_config.json"))
    new = state_dict(res.model_path)
    assert not any("lora" in k for k in new)
    check_trained(res.model_path, tiny_model_path, res.metrics, "plain", 1)
    assert res.metrics["lora"] is True


def test_plain_bf16_autocast_on_cpu(sft_path, tiny_model_path, tmp_path):
    """train.bf16=true on CPU: the matmuls run in bf16 under autocast, weights and optimizer stay float32."""
    from selftaught.training.worker import fit, load, save

    cfg = train_cfg("plain", 1, bf16=True)
    out = str(tmp_path / "model")
    trainer, _ = load(cfg, sft_path, tiny_model_path, out, gpu=False)
    seen = []
    proj = trainer.model.model.layers[0].self_attn.q_proj
    proj.register_forward_hook(lambda mod, args, output: seen.append(output.dtype))
    save(trainer, cfg, None, tiny_model_path, out, False, fit(trainer))
    assert seen and set(seen) == {torch.bfloat16}  # float32 here: no autocast, the slow path
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}
    with open(os.path.join(out, "train_metrics.json")) as f:
        metrics = json.load(f)
    check_trained(out, tiny_model_path, metrics, "plain", 1)  # float32 weights saved, loads, generates
    assert metrics["dtype"] == "bfloat16 autocast"
    with pytest.raises(ConfigError, match="train.bf16.*plain"):
        train_cfg("zero2", 2, bf16=True)


def test_completion_only_labels(sft_path, tiny_model_path, tmp_path):
    """Prompt tokens get label -100; the judgment (assistant) tokens are trained on."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from selftaught.io import read_records
    from selftaught.training.args import sft_config_kwargs
    from selftaught.training.data import sft_dataset

    rows = read_records(sft_path)
    ds = sft_dataset(rows)
    assert ds.column_names == ["prompt", "completion"]
    assert ds[0]["completion"][0]["role"] == "assistant" and len(ds[0]["prompt"]) == 2
    cfg = train_cfg("plain", 1)
    kw = sft_config_kwargs(cfg, str(tmp_path / "o"), gpu=False)
    assert kw["use_cpu"] is True and kw["bf16"] is False and "deepspeed" not in kw
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_path), args=SFTConfig(**kw),
                         train_dataset=ds, processing_class=tok)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    for i in range(2):
        ids, labels = batch["input_ids"][i], batch["labels"][i]
        real = batch["attention_mask"][i].bool() if "attention_mask" in batch else torch.ones_like(ids, dtype=torch.bool)
        trained = labels != -100
        assert trained.any() and (~trained & real).any()
        first = int(trained.nonzero()[0])
        assert not trained[:first].any() and trained[first:int(real.nonzero()[-1]) + 1].any()
        prompt_text = tok.decode(ids[:first])
        completion_text = tok.decode(ids[trained])
        assert "impartial judge" in prompt_text and "[Question]" in prompt_text
        assert prompt_text.rstrip().endswith("assistant")  # the generation prompt is not trained on
        assert "Final verdict: [[" in completion_text
        assert "[Question]" not in completion_text and "impartial" not in completion_text


def test_config_errors(ray_local, sft_path, tiny_model_path, tmp_path):
    from selftaught.training.launch import check_train_resources, train_with_ray

    with pytest.raises(ConfigError, match="train.global_batch_size"):
        train_cfg("zero2", 2, global_batch_size=6)  # 1 x 2 x 2 = 4
    train_cfg("zero2", 2, global_batch_size=4)
    with pytest.raises(ConfigError, match=r"train\.(num_workers|use_gpu).*GPU"):
        check_train_resources(TrainConfig(num_workers=2, use_gpu=True), RAY)
    with pytest.raises(ConfigError, match="train.num_workers.*CPUs"):
        check_train_resources(TrainConfig(num_workers=4, cpus_per_worker=1.0), RAY)
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match=r"train\.(num_workers|use_gpu)"):
        train_with_ray(sft_path, tiny_model_path, str(out), TrainConfig(num_workers=1, use_gpu=True, bf16=None), RAY)
    assert not out.exists()  # checked before anything is written


def test_worker_error_is_raised(ray_local, tmp_path, tiny_model_path):
    from selftaught.training.launch import train_with_ray

    bad = tmp_path / "bad.parquet"
    write_records(bad, [{"messages": [{"role": "user", "content": "no judgment here"}, {"role": "user", "content": "x"}]}])
    with pytest.raises(RuntimeError, match="last message must be the assistant"):
        train_with_ray(str(bad), tiny_model_path, str(tmp_path / "m"), train_cfg("plain", 1), RAY)
