"""Token-budget packing (train.packing): rows packed padding-free into sequences of
max_tokens_per_batch tokens must train exactly the tokens the unpacked rows train, and give the
same loss (each packed row attends only to itself); the plan keeps the rows per optimizer step."""
from __future__ import annotations

import pytest
import torch

from selftaught.config import TrainConfig
from selftaught.training import attention, packing
from selftaught.training.args import packed_kwargs, sft_config_kwargs
from selftaught.training.data import sft_dataset


def rows(n: int = 10) -> list[dict]:
    out = []
    for i in range(n):
        v = "A" if i % 2 else "B"
        out.append({"messages": [
            {"role": "system", "content": "Compare the two answers."},
            {"role": "user", "content": f"[Question]\nWhat is {i} + {i}?" + " Think." * (i % 4) + f"\n[A] {2 * i}\n[B] {2 * i + 1}"},
            {"role": "assistant", "content": f"Verdict: [[{v}]]\n\n" + "It adds up. " * (1 + i % 3)}]})
    return out


def test_plan_derives_the_accumulation_from_rows_per_pack():
    p = packing.plan([100] * 8, budget=256, rows_per_step=4, world_size=1)
    assert (p.packs, p.rows_per_pack, p.gradient_accumulation_steps) == (4, 2.0, 2)  # 2 rows a pack: 2 packs a step
    assert packing.plan([100] * 8, budget=256, rows_per_step=16, world_size=2).gradient_accumulation_steps == 2  # 4 packs / 2 workers
    one = packing.plan([300, 300], budget=256, rows_per_step=8, world_size=1)
    assert one.packs == 2 and one.tokens == 512  # a row longer than the budget is cut to it


def _trainer(tiny_model_path: str, tmp_path, packed: bool, attn: str = "sdpa"):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    cfg = TrainConfig(strategy="plain", deepspeed=None, num_workers=1, per_device_batch_size=2,
                      gradient_accumulation_steps=2, max_seq_length=512, packing=packed, max_tokens_per_batch=512)
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    ds = sft_dataset(rows())
    kw = sft_config_kwargs(cfg, str(tmp_path / ("p" if packed else "u")), gpu=False)
    plan = None
    if packed:
        plan = packing.plan(packing.row_lengths(ds, tok), 512, 4, 1)
        kw.update(packed_kwargs(plan))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32, attn_implementation=attn)
    return SFTTrainer(model=model, args=SFTConfig(**kw), train_dataset=ds, processing_class=tok), plan


def _trained_tokens(batch: dict) -> list[tuple[int, ...]]:
    """Per row: the token ids that carry a label (completion tokens), split at each row's start."""
    ids, labels = batch["input_ids"], batch["labels"]
    out = []
    if "position_ids" in batch:  # one padding-free pack: rows start where position ids restart at 0
        starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [ids.shape[1]]
        for a, b in zip(starts, starts[1:]):
            out.append(tuple(ids[0, a:b][labels[0, a:b] != -100].tolist()))
    else:
        for i in range(ids.shape[0]):
            out.append(tuple(ids[i][labels[i] != -100].tolist()))
    return out


def _loss_sum(model, batch: dict) -> tuple[torch.Tensor, int]:
    """Summed token loss and the number of predicted tokens (the model's own shift). The collator's row
    boundaries go in as the trainer passes them; no cache (a cache turns off transformers' packed-row mask)."""
    logits = model(use_cache=False, **{k: v for k, v in batch.items() if k != "labels"}).logits
    labels = batch["labels"][:, 1:]
    lp = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                           ignore_index=-100, reduction="sum")
    return lp, int((labels != -100).sum())


@pytest.mark.parametrize("attn", ["sdpa", attention.PACKED_SDPA], ids=["sdpa-block-mask", "sdpa-row-by-row"])
def test_packed_batches_train_the_same_tokens_with_the_same_loss_and_gradients(tiny_model_path, tmp_path, attn):
    """Both ways a pack's rows are kept apart: transformers' block-diagonal mask (what packed_sdpa_forward
    falls back to without row boundaries) and the worker's SDPA row by row."""
    attention.register()
    unpacked, _ = _trainer(tiny_model_path, tmp_path, packed=False)
    packed, plan = _trainer(tiny_model_path, tmp_path, packed=True, attn=attn)
    assert plan.packs == len(packed.train_dataset) < len(unpacked.train_dataset) == 10
    ub = [unpacked.data_collator([unpacked.train_dataset[i]]) for i in range(len(unpacked.train_dataset))]
    pb = [packed.data_collator([packed.train_dataset[i]]) for i in range(len(packed.train_dataset))]
    want = sorted(t for b in ub for t in _trained_tokens(b))
    got = sorted(t for b in pb for t in _trained_tokens(b))
    assert got == want and all(want)  # the same completion tokens, row for row, and nothing else
    model = packed.model.eval()
    grads = {}
    for name, batches in (("unpacked", ub), ("packed", pb)):
        model.zero_grad()
        sums = [_loss_sum(model, b) for b in batches]
        total = sum(x for x, _ in sums)
        total.backward()
        grads[name] = (float(total.detach()), sum(n for _, n in sums), [p.grad.clone() for p in model.parameters()])
    (u_loss, u_n, u_grads), (p_loss, p_n, p_grads) = grads["unpacked"], grads["packed"]
    assert p_n == u_n
    assert p_loss == pytest.approx(u_loss, rel=1e-5)  # no row sees another (attending across rows: ~6e-4 off)
    for gu, gp in zip(u_grads, p_grads):  # attending across rows: 26-52% off, parameter by parameter
        assert float((gp - gu).norm()) <= 1e-4 * float(gu.norm())


def test_torch_compile_trains_the_eager_losses(tiny_model_path, tmp_path):
    """train.torch_compile: the compiled model takes the same steps as the eager one (packed batches, whose
    lengths vary from pack to pack)."""
    from selftaught.io import write_records
    from selftaught.training import worker

    write_records(tmp_path / "rows.parquet", rows(12))
    losses = {}
    for compiled in (False, True):
        cfg = TrainConfig(strategy="plain", deepspeed=None, num_workers=1, per_device_batch_size=1, gradient_accumulation_steps=1,
                          max_seq_length=512, packing=True, max_tokens_per_batch=256, max_steps=3, warmup_steps=0, lr=1e-3,
                          torch_compile=compiled)
        trainer, _ = worker.load(cfg, str(tmp_path / "rows.parquet"), tiny_model_path, str(tmp_path / f"out{compiled}"), gpu=False)
        assert trainer.args.torch_compile is compiled
        losses[compiled] = [h["loss"] for h in worker.fit(trainer)["log_history"] if "loss" in h]
    assert len(losses[True]) == 3 and losses[True] == pytest.approx(losses[False], rel=1e-4)
    assert losses[True][-1] < losses[True][0]  # and it learns
    from selftaught.config import ConfigError

    with pytest.raises(ConfigError, match="train.torch_compile: does not work with train.strategy=zero3"):
        TrainConfig(strategy="zero3", deepspeed="zero3.json", torch_compile=True)


def test_train_attention_resolves_per_worker():
    """train.attention=auto: packed rows row by row (no flash_attn here; masked under torch.compile), unpacked
    batches transformers' default; sdpa and eager mask a pack as one sequence, which the budget counts."""
    from selftaught.training.args import attention_implementation, masks_packs

    auto = TrainConfig(strategy="plain", deepspeed=None)
    assert attention_implementation(auto, gpu=False, packed=True) == attention.PACKED_SDPA
    assert attention_implementation(auto, gpu=False, packed=False) is None
    rows_cfg = TrainConfig(strategy="plain", deepspeed=None, attention="sdpa_rows")
    assert attention_implementation(rows_cfg, gpu=False, packed=False) == "sdpa"  # no rows to split
    for name in ("sdpa", "eager"):
        cfg = TrainConfig(strategy="plain", deepspeed=None, attention=name)
        assert attention_implementation(cfg, gpu=False, packed=True) == name and masks_packs(name)
    assert not masks_packs(attention.PACKED_SDPA) and not masks_packs("flash_attention_2")
    compiled = TrainConfig(strategy="plain", deepspeed=None, torch_compile=True)
    assert attention_implementation(compiled, gpu=False, packed=True) == "sdpa"  # one traced graph, no row loop


@pytest.mark.parametrize("family", ["mistral", "qwen2-mixed-layers", "gemma2-alternating"])
@pytest.mark.parametrize("window", [16, 64], ids=["rows-beyond-the-window", "rows-within-the-window"])
def test_row_by_row_attention_keeps_a_sliding_window(window, family):
    """Models with a sliding window (Mistral: every layer, passed as a keyword; Qwen2: the upper layers, set
    on the module; Gemma2: every other layer): rows longer than the window go to the masked path, which
    applies it; shorter rows go row by row, where the window changes nothing. Either way: the masked result."""
    import transformers
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    attention.register()
    torch.manual_seed(0)
    shape = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, sliding_window=window)
    config, model_class = {
        "mistral": (transformers.MistralConfig(**shape), transformers.MistralForCausalLM),
        "qwen2-mixed-layers": (transformers.Qwen2Config(**shape, use_sliding_window=True, max_window_layers=2),
                               transformers.Qwen2ForCausalLM),
        "gemma2-alternating": (transformers.Gemma2Config(**shape), transformers.Gemma2ForCausalLM),
    }[family]
    model = model_class(config).eval()
    rows = [{"input_ids": torch.randint(1, 256, (n,)).tolist()} for n in (30, 20, 10)]
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(rows)
    logits = {}
    for impl in ("sdpa", attention.PACKED_SDPA):
        model.set_attn_implementation(impl)
        with torch.no_grad():
            logits[impl] = model(use_cache=False, **{k: v for k, v in batch.items() if k != "labels"}).logits
    torch.testing.assert_close(logits[attention.PACKED_SDPA], logits["sdpa"])


def test_row_by_row_builds_no_pack_mask_and_splits_without_the_collators_boundaries():
    """A lone unpadded pack gets no (pack × pack) mask under sdpa_rows; its rows are split at the collator's
    boundaries or, without them, where the position ids restart: the masked result either way. A padded
    batch or a sliding window still gets SDPA's mask."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    assert attention.rows_mask(batch_size=1, q_length=60, kv_length=60) is None
    padded = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert attention.rows_mask(batch_size=2, q_length=3, kv_length=3, attention_mask=padded).shape == (2, 1, 3, 3)
    assert attention.rows_mask(batch_size=1, q_length=60, kv_length=60, local_size=16) is not None
    # a pack left without a mask that cannot be split (here: rows longer than a window set on the module) stops
    from types import SimpleNamespace

    module = SimpleNamespace(num_key_value_groups=1, is_causal=True, training=False, sliding_window=8)
    q = torch.randn(1, 2, 30, 16)
    with pytest.raises(ValueError, match="a pack of 2 rows came without a mask"):
        attention.packed_sdpa_forward(module, q, q, q, None, cu_seq_lens_q=torch.tensor([0, 20, 30], dtype=torch.int32))

    attention.register()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16)
    model = LlamaForCausalLM(cfg).eval()
    rows = [{"input_ids": torch.randint(1, 256, (n,)).tolist()} for n in (30, 20, 10)]
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(rows)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    positions_only = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
    logits = {}
    for impl, feed in (("sdpa", inputs), (attention.PACKED_SDPA, inputs), ("rows-from-positions", positions_only)):
        model.set_attn_implementation("sdpa" if impl == "sdpa" else attention.PACKED_SDPA)
        with torch.no_grad():
            logits[impl] = model(use_cache=False, **feed).logits
    torch.testing.assert_close(logits[attention.PACKED_SDPA], logits["sdpa"])
    torch.testing.assert_close(logits["rows-from-positions"], logits["sdpa"])
    alone = torch.cat([model(input_ids=torch.tensor([r["input_ids"]])).logits for r in rows], dim=1)
    torch.testing.assert_close(logits["sdpa"], alone.detach(), atol=1e-5, rtol=1e-4)  # and that is each row alone
