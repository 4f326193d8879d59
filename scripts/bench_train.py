#!/usr/bin/env python
"""Training throughput of the SFT stack (HF Trainer + DeepSpeed ZeRO-2/3) on a random-init Llama.

Prints one row per strategy: workers, dtype, sequence length, tokens/s (all workers), MFU and peak
memory. No download: the model is built from a config (``tiny`` for a CPU smoke run, ``1b`` = a
Llama-3.2-1B-shaped model). Each strategy runs in fresh processes (one per worker, torchrun-style
env on one node), so DeepSpeed state and memory never leak from one row to the next.

    python scripts/bench_train.py --model-config 1b --strategy zero2,zero3 --workers 1 --bf16 --steps 10
    python scripts/bench_train.py --model-config tiny --strategy zero2,zero3 --workers 2 --steps 4 --seq-len 256

MFU = 6 x params x tokens/s / (peak FLOPS x GPUs): the usual dense-transformer estimate (forward +
backward, attention score FLOPs and gradient-checkpointing recompute not counted). ``--peak-tflops``
defaults to 989 (H100 SXM bf16 dense); on CPU, MFU is printed only if ``--peak-tflops`` is given.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import traceback
from pathlib import Path



def model_config(name: str):
    from transformers import LlamaConfig

    if name == "tiny":
        return LlamaConfig(vocab_size=32000, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=64, max_position_embeddings=4096,
                           tie_word_embeddings=True)
    if name == "1b":  # Llama-3.2-1B shapes
        return LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                           num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
                           rope_theta=500000.0, tie_word_embeddings=True, rms_norm_eps=1e-5)
    raise SystemExit(f"--model-config: unknown {name!r} (tiny | 1b)")


def count_params(cfg) -> int:
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        m = LlamaForCausalLM(cfg)
    return sum(p.numel() for p in m.parameters())  # tied embeddings counted once


class _Tokens:
    """Random token batches (labels = inputs: every token trained on)."""

    def __init__(self, n: int, seq_len: int, vocab: int, seed: int):
        import torch

        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, vocab, (n, seq_len), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        import torch

        x = self.ids[i]
        return {"input_ids": x, "labels": x.clone(), "attention_mask": torch.ones_like(x)}


def worker(rank: int, world: int, port: int, args: argparse.Namespace, strategy: str, queue) -> None:
    try:
        _worker(rank, world, port, args, strategy, queue)
    except BaseException:
        queue.put({"rank": rank, "error": traceback.format_exc()})
        raise


def _worker(rank: int, world: int, port: int, args: argparse.Namespace, strategy: str, queue) -> None:
    import torch

    gpu = torch.cuda.is_available() and not args.cpu
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    if not gpu:
        os.environ["DS_ACCELERATOR"] = "cpu"
    else:
        torch.cuda.set_device(rank)
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments, default_data_collator

    cfg = model_config(args.model_config)
    ds_cfg = None
    if strategy != "plain":
        from selftaught.config import TrainConfig, load_deepspeed  # the shipped selftaught/conf/deepspeed/*.json

        ds_cfg = load_deepspeed(TrainConfig(strategy=strategy, deepspeed=f"{strategy}.json"))
    bf16 = bool(args.bf16)
    steps = args.warmup + args.steps
    targs = TrainingArguments(
        output_dir=os.path.join(args.tmp, f"{strategy}-{rank}"), max_steps=steps, learning_rate=1e-5,
        warmup_steps=0, per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1,
        bf16=bf16, use_cpu=not gpu, deepspeed=ds_cfg, report_to="none", save_strategy="no", logging_steps=1,
        disable_tqdm=True, gradient_checkpointing=args.grad_ckpt, dataloader_num_workers=0, seed=0,
        gradient_checkpointing_kwargs={"use_reentrant": False} if args.grad_ckpt else None,
    )
    if ds_cfg is not None:  # DeepSpeed comm must know the world before zero.Init reads the batch config
        import deepspeed

        deepspeed.init_distributed(dist_backend="nccl" if gpu else "gloo")
    dtype = torch.bfloat16 if bf16 else torch.float32
    torch.manual_seed(0)
    # After TrainingArguments: with ZeRO-3 the model is partitioned as it is built (zero.Init).
    model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation="sdpa")
    data = _Tokens(steps * args.batch_size * world, args.seq_len, cfg.vocab_size, seed=rank)

    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            if gpu:
                torch.cuda.synchronize()
            marks.append(time.perf_counter())

    if gpu:
        torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(model=model, args=targs, train_dataset=data, data_collator=default_data_collator,
                      callbacks=[Clock()])
    trainer.train()
    timed = marks[args.warmup:] if args.warmup > 0 else marks
    start = marks[args.warmup - 1] if args.warmup > 0 else None
    if start is None or len(timed) == 0:
        raise RuntimeError("need --warmup >= 1 and --steps >= 1")
    seconds = timed[-1] - start
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    if gpu:
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    queue.put({"rank": rank, "seconds": seconds, "steps": len(timed), "loss": losses[-1] if losses else float("nan"),
               "peak_gib": peak, "gpu": gpu, "device": torch.cuda.get_device_name() if gpu else "cpu"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_strategy(args: argparse.Namespace, strategy: str) -> dict:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=worker, args=(r, args.workers, port, args, strategy, queue)) for r in range(args.workers)]
    for p in procs:
        p.start()
    results = []
    while len(results) < args.workers:
        try:
            results.append(queue.get(timeout=5))
        except Exception:
            if all(not p.is_alive() for p in procs) and queue.empty():
                break
            continue
        if "error" in results[-1]:
            for p in procs:
                p.terminate()
            break
    for p in procs:
        p.join(timeout=60)
    errors = [r["error"] for r in results if "error" in r]
    if errors or len(results) < args.workers:
        raise RuntimeError(f"{strategy}: a worker failed:\n" + ("\n".join(errors) or "(no error reported; killed?)"))
    seconds = max(r["seconds"] for r in results)
    steps = results[0]["steps"]
    tokens = steps * args.batch_size * args.seq_len * args.workers
    return {"strategy": strategy, "workers": args.workers, "dtype": "bf16" if args.bf16 else "fp32",
            "seq_len": args.seq_len, "batch_per_worker": args.batch_size, "steps": steps, "seconds": seconds,
            "tokens_per_s": tokens / seconds, "loss": results[0]["loss"],
            "peak_gib": max(r["peak_gib"] for r in results), "gpu": results[0]["gpu"], "device": results[0]["device"]}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-config", default="tiny", choices=["tiny", "1b"])
    ap.add_argument("--strategy", default="zero2,zero3", help="comma list of plain|zero2|zero3")
    ap.add_argument("--workers", type=int, default=1, help="processes (GPUs) on this node")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=1, help="sequences per worker per step")
    ap.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing")
    ap.add_argument("--peak-tflops", type=float, default=None, help="per device; default 989 (H100 bf16 dense) on GPU")
    ap.add_argument("--cpu", action="store_true", help="train on CPU even if a GPU is present")
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--tmp", default="/tmp/selftaught_bench_train")
    args = ap.parse_args(argv)
    strategies = [s.strip() for s in args.strategy.split(",") if s.strip()]
    for s in strategies:
        if s not in ("plain", "zero2", "zero3"):
            ap.error(f"--strategy: unknown {s!r}")
    if args.warmup < 1 or args.steps < 1:
        ap.error("--warmup and --steps must be >= 1")
    if args.bf16:
        import torch

        if args.cpu or not torch.cuda.is_available():
            print("note: --bf16 on CPU (slow without AVX-512 bf16)", file=sys.stderr)
    params = count_params(model_config(args.model_config))
    rows = []
    for s in strategies:
        r = run_strategy(args, s)
        peak = args.peak_tflops if args.peak_tflops is not None else (989.0 if r["gpu"] else None)
        r["params"] = params
        r["mfu_pct"] = 100.0 * 6 * params * r["tokens_per_s"] / (peak * 1e12 * args.workers) if peak else None
        rows.append(r)
        print(f"done {s}: {r['tokens_per_s']:.1f} tok/s, loss {r['loss']:.3f}", file=sys.stderr, flush=True)

    print(f"\nmodel {args.model_config} ({params / 1e6:.1f}M params), device {rows[0]['device']}, "
          f"batch/worker {args.batch_size}, {args.steps} timed steps after {args.warmup} warmup")
    head = f"{'strategy':<9}{'workers':>8}{'dtype':>7}{'seq len':>9}{'tokens/s':>12}{'MFU %':>8}{'peak mem GiB':>14}{'loss':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        mfu = f"{r['mfu_pct']:.1f}" if r["mfu_pct"] is not None else "n/a"
        print(f"{r['strategy']:<9}{r['workers']:>8}{r['dtype']:>7}{r['seq_len']:>9}{r['tokens_per_s']:>12.1f}"
              f"{mfu:>8}{r['peak_gib']:>14.2f}{r['loss']:>8.3f}")
    if not rows[0]["gpu"]:
        print("(CPU: peak memory = max RSS of a worker process)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
