"""The packed micro-batch's token budget when train.max_tokens_per_batch is unset (training.budget): the
activation estimate is what autograd really saves on transformers' Llama, and the budget is one optimizer
step's rows, cut by memory (and for a pack under one mask by max_seq_length), never below the longest row."""
from __future__ import annotations

import pytest
import torch

from selftaught.config import LoraConfig, TrainConfig
from selftaught.io import write_records
from selftaught.training import attention, budget, worker
from selftaught.training.budget import ModelShape

from test_packing import rows as judge_rows


def _saved_in_sft_step(tokenizer_path: str, dims: tuple, dtype, pack_tokens: int, checkpointing: bool,
                       attn: str) -> tuple[float, int]:
    """Bytes of the distinct tensors autograd saves for backward (weights excepted) in the project's SFT step
    (TRL's compute_loss) on the first packed micro-batch of at most ``pack_tokens`` tokens, per token; and
    that pack's length."""
    import tempfile

    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    from selftaught.training import attention, packing
    from selftaught.training.args import packed_kwargs, sft_config_kwargs
    from selftaught.training.data import sft_dataset

    h, i, heads, kv_heads, layers = dims
    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=h, intermediate_size=i, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=64, tie_word_embeddings=True,
                      attn_implementation=attention.register() if attn == "sdpa_rows" else attn)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(dtype)
    data = sft_dataset(judge_rows(24))
    tc = TrainConfig(strategy="plain", deepspeed=None, num_workers=1, max_seq_length=pack_tokens, packing=True,
                     max_tokens_per_batch=pack_tokens, gradient_checkpointing=checkpointing)
    kw = sft_config_kwargs(tc, tempfile.mkdtemp(), gpu=False)
    kw.update(packed_kwargs(packing.plan(packing.row_lengths(data, tok), pack_tokens, 8, 1)))
    trainer = SFTTrainer(model=model, args=SFTConfig(**kw), train_dataset=data, processing_class=tok)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    storages: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = max(storages.get(s.data_ptr(), 0), s.nbytes())
        return t

    trainer.model.train()
    if checkpointing:  # the trainer turns it on in train(); this calls compute_loss alone
        trainer.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        trainer.compute_loss(trainer.model, batch)
    weights = {p.untyped_storage().data_ptr() for p in trainer.model.parameters()}
    tokens = batch["input_ids"].shape[1]
    return sum(n for ptr, n in storages.items() if ptr not in weights) / tokens, tokens


@pytest.mark.parametrize("dims", [(128, 256, 2, 1, 2), (256, 1024, 4, 4, 2)], ids=["gqa", "mha-wide-mlp"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("pack_tokens,checkpointing", [(256, False), (1024, False), (1024, True)],
                         ids=["short-pack", "long-pack", "checkpointed"])
@pytest.mark.parametrize("attn", ["sdpa_rows", "sdpa"], ids=["rows", "masked-pack"])
def test_the_activation_estimate_is_what_the_sft_step_saves(tiny_model_path, dims, dtype, pack_tokens, checkpointing, attn):
    """train.attention=sdpa_rows (the default for packs without flash_attn) and sdpa (a pack under one mask)."""
    h, i, heads, kv_heads, layers = dims
    measured, tokens = _saved_in_sft_step(tiny_model_path, dims, dtype, pack_tokens, checkpointing, attn)
    shape = ModelShape(params=0, layers=layers, hidden=h, intermediate=i, kv_dim=kv_heads * 64)
    estimate = budget.saved_bytes_per_token(shape, dtype.itemsize, gradient_checkpointing=checkpointing,
                                            mask_tokens=tokens if attn == "sdpa" else 0)
    # Over by at most what the CPU path does not save: TRL's compacted copy of the completion's hidden states
    # on GPU (d x hidden) and the per-token constant.
    assert 0 <= estimate - measured <= dtype.itemsize * h + budget.OUTSIDE_CONSTANT, (estimate, measured)


def test_model_shape_is_read_from_the_model_folder(tiny_model_path):
    from transformers import AutoModelForCausalLM

    shape = ModelShape.of(tiny_model_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    assert shape.params == sum(p.numel() for p in model.parameters())
    assert (shape.layers, shape.hidden, shape.intermediate, shape.kv_dim) == (2, 128, 256, 64)


def test_budget_is_one_step_of_rows_cut_by_memory_and_masking_never_below_the_longest_row():
    lengths = [500, 600, 700] * 10  # mean 600; 8 rows a step: 4800 -> 4800 (a multiple of 64)
    free = budget.size(lengths, 8, 2048, fits=None)
    assert (free.tokens, free.source, free.step_tokens) == (4800, "one step's rows", 4800)  # longer than max_seq_length
    assert budget.size(lengths, 8, 2048, fits=3000).tokens == 3000  # memory-bound
    assert budget.size(lengths, 8, 2048, fits=3000).source == "memory"
    masked = budget.size(lengths, 8, 2048, fits=None, masked=True)
    assert (masked.tokens, masked.source) == (2048, "max_seq_length")  # one masked sequence: quadratic attention
    tight = budget.size(lengths, 8, 2048, fits=256)
    assert (tight.tokens, tight.source) == (700, "longest row")  # a row is never cut by the budget
    assert budget.size([3000], 8, 2048, fits=256).tokens == 2048  # ... beyond max_seq_length's cut
    small = budget.size([100] * 20, 4, 2048, fits=None)
    assert (small.tokens, small.source) == (448, "one step's rows")  # 4 x 100 = 400, aligned up to 448


def test_memory_left_for_activations_follows_the_sharding():
    shape = ModelShape(params=1_240_000_000, layers=16, hidden=2048, intermediate=8192, kv_dim=512)  # Llama-3.2-1B
    h200 = 140 * budget.GIB
    fits = {s: budget.memory_tokens(h200, shape, 2, s, 8, lora=False, gradient_checkpointing=False)
            for s in ("plain", "zero2", "zero3")}
    assert fits["plain"] < fits["zero2"] < fits["zero3"]  # states: 10 N > 4 N + 16 N / 8 > 20 N / 8 + 2 GB
    room = h200 * 0.9 - 2 * budget.GIB - 6 * shape.params  # zero2 with 8 workers: 6 bytes a parameter
    assert fits["zero2"] % 64 == 0 and budget.activation_bytes(shape, 2, fits["zero2"]) <= room
    assert budget.activation_bytes(shape, 2, fits["zero2"] + 64) > room  # the longest that fits
    masked = budget.memory_tokens(h200, shape, 2, "zero2", 8, lora=False, gradient_checkpointing=False, masked=True)
    assert masked < fits["zero2"]  # train.attention=sdpa: the pack's mask, d x T per token and layer
    lora = budget.memory_tokens(h200, shape, 2, "zero2", 1, lora=True, gradient_checkpointing=False)
    assert lora > budget.memory_tokens(h200, shape, 2, "zero2", 1, lora=False, gradient_checkpointing=False)
    ckpt = budget.memory_tokens(h200, shape, 2, "zero2", 8, lora=False, gradient_checkpointing=True)
    assert ckpt > 3 * fits["zero2"]
    assert budget.memory_tokens(8 * budget.GIB, shape, 2, "plain", 1, False, False) == 0  # states alone overflow


def test_an_unset_budget_packs_a_step_per_micro_batch_and_trains(tiny_model_path, tmp_path):
    """train_worker's SFT path on CPU with train.packing=true and no budget: 4 rows a step become one pack
    (accumulation 1), the plan says why, and the trainer takes it."""
    write_records(tmp_path / "rows.parquet", judge_rows(12))
    cfg = TrainConfig(strategy="plain", deepspeed=None, num_workers=1, per_device_batch_size=2, gradient_accumulation_steps=2,
                      max_seq_length=512, packing=True, max_steps=2, warmup_steps=0, lr=1e-4, lora=LoraConfig())
    trainer, lora = worker.load(cfg, str(tmp_path / "rows.parquet"), tiny_model_path, str(tmp_path / "out"), gpu=False)
    assert trainer.model.config._attn_implementation == attention.PACKED_SDPA  # packed rows attend row by row
    plan = trainer.pack_plan
    assert plan.sized is not None and plan.sized.source == "one step's rows"
    assert plan.budget == plan.sized.step_tokens < 512 and plan.gradient_accumulation_steps == 1
    assert 3 <= plan.rows_per_pack <= 4  # about the step's 4 rows, in one pack
    assert plan.sized.memory_tokens > plan.budget  # host memory holds it
    assert trainer.args.gradient_accumulation_steps == 1 and trainer.args.max_length == plan.budget
    metrics = worker.fit(trainer)
    assert metrics["steps"] == 2 and metrics["packing"]["budget_source"] == "one step's rows"
    assert metrics["packing"]["estimated_peak_gib"] > 0
    # start-up, split: the engine and optimizer set-up is part of it; the first step is timed apart
    assert metrics["startup_seconds"] >= metrics["engine_seconds"] > 0 and metrics["first_step_seconds"] > 0
    assert metrics["steady_tokens_per_s"] > 0
    worker.save(trainer, cfg, lora, tiny_model_path, str(tmp_path / "out"), False, metrics)
    assert attention.PACKED_SDPA not in (tmp_path / "out" / "config.json").read_text()  # loads anywhere
