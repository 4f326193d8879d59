#!/usr/bin/env python
"""Training throughput of the SFT stack (HF Trainer + DeepSpeed ZeRO-2/3) on a random-init Llama.

Prints one row per strategy: workers, dtype, sequence length, tokens/s (all workers), MFU and peak
memory. No download: the model is built from a config (``tiny`` for a CPU smoke run, ``1b`` = a
Llama-3.2-1B-shaped model). Each strategy runs in fresh processes (one per worker, torchrun-style
env on one node), so DeepSpeed state and memory never leak from one row to the next.

    python scripts/bench_train.py --model-config 1b --strategy zero2,zero3 --workers 1 --bf16 --steps 10
    python scripts/bench_train.py --model-config tiny --strategy zero2,zero3 --workers 2 --steps 4 --seq-len 256
    python scripts/bench_train.py --mode both --model-config 1b --strategy zero2,zero3 --bf16 --steps 24   # GPU
    python scripts/bench_train.py --mode stage --model-config tiny --strategy zero2 --cpu --steps 6 --cases packed,masked --max-tokens auto,4096
    python scripts/bench_train.py --mode stage --model-config smollm2 --strategy plain --cpu --steps 6 --cases unpacked,autocast

``--mode stage`` trains the project's own ``train_worker`` (TRL SFTTrainer, completion-only loss) on real
judge rows under each strategy: unpacked (the recipe's micro-batch x accumulation), batched (the same rows
as one padded micro-batch), packed (token-budget micro-batches, ``train.packing``; ``auto`` = the budget
the stage sizes itself; rows attend row by row), masked (packs under one block-diagonal SDPA mask,
``train.attention=sdpa``), compiled (``train.torch_compile``, which masks packs) and autocast (unpacked with
``train.bf16=true``: on CPU, bf16 autocast over float32 weights), and prints steady
tokens/s, MFU, padding share, start-up (and its engine set-up part), the first step, peak memory and the
budget's memory estimate; ``--mode both`` prints the raw table after it, in the same run.

MFU = 6 x params x tokens/s / (peak FLOPS x GPUs): the usual dense-transformer estimate (forward +
backward, attention score FLOPs and gradient-checkpointing recompute not counted). ``--peak-tflops``
defaults to 989 (H100 SXM bf16 dense); on CPU, MFU is printed only if ``--peak-tflops`` is given.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from selftaught import atomic  # noqa: E402


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
    if name == "smollm2":  # SmolLM2-135M shapes: the embedded judge
        return LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                           num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=8192,
                           rope_theta=100000.0, tie_word_embeddings=True, rms_norm_eps=1e-5)
    raise SystemExit(f"--model-config: unknown {name!r} (tiny | smollm2 | 1b)")


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


# ---------------------------------------------------------------- --mode stage: the project's train_worker

def judge_rows(rows_path: str | None) -> list[dict]:
    """SFT rows: a run's ``sft_data`` (a folder or parquet file), or the shipped demo eval set through the
    judge template (both orders, the judgment a reasoning paragraph and its verdict line)."""
    from selftaught.io import read_records

    if rows_path:
        return read_records(rows_path)
    from selftaught import io
    from selftaught.prompts import load_template
    from selftaught.stages.judge import both_orders, judge_messages

    tpl = load_template("judge")
    pairs, _ = io.load_pairwise_eval(io.resolve_data_path("builtin:demo_eval.jsonl"))
    out = []
    for p in pairs:
        for order, gold, item in both_orders(str(p["id"]), p["instruction"], p["chosen"], p["rejected"]):
            why = (f"Assistant {gold}'s answer addresses the question directly and is correct, while the other answer "
                   "misreads what was asked; it is also clearer and easier to follow. ") * 3
            out.append({"messages": judge_messages(tpl, item) + [
                {"role": "assistant", "content": f"{why.strip()}\n\nFinal verdict: [[{gold}]]"}]})
    return out


def padding_share(lengths: list[int], batch: int, seed: int = 0) -> float:
    """Share of token slots that are padding when rows are batched in a seeded random order and padded
    to the longest of each micro-batch (the trainer's default collation, unpacked)."""
    import random

    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    slots = used = 0
    for i in range(0, len(order), batch):
        b = [lengths[j] for j in order[i:i + batch]]
        slots += max(b) * len(b)
        used += sum(b)
    return 1 - used / slots if slots else 0.0


def _stage_case(config: dict, queue) -> None:
    try:
        from selftaught.training.worker import METRICS_FILE, train_worker

        train_worker(config)
        queue.put(json.loads(Path(config["out_dir"], METRICS_FILE).read_text()))
    except BaseException:
        queue.put({"error": traceback.format_exc()})


def train_in_fresh_process(config: dict, label: str) -> dict:
    """``train_worker(config)`` in a spawned process (no state leaks from one case to the next); its
    ``train_metrics.json``, or a RuntimeError naming ``label`` with the worker's traceback."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_stage_case, args=(config, queue))
    proc.start()
    m = queue.get()
    proc.join()
    if "error" in m:
        raise RuntimeError(f"{label}: {m['error']}")
    return m


CASES = ("unpacked", "batched", "packed", "masked", "compiled", "autocast")


def stage_cases(args: argparse.Namespace) -> list[tuple[str, Optional[int]]]:
    """(case, packed budget): ``--cases``, with ``packed`` and ``masked`` once per ``--max-tokens`` value
    (auto: unset, the budget train_worker sizes itself)."""
    out: list[tuple[str, Optional[int]]] = []
    for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
        if case not in CASES:
            raise SystemExit(f"--cases: unknown {case!r} ({' | '.join(CASES)})")
        if case not in ("packed", "masked"):
            out.append((case, None))
            continue
        for b in [x.strip() for x in str(args.max_tokens).split(",") if x.strip()]:
            if b != "auto" and not (b.isdigit() and int(b) >= 64):
                raise SystemExit(f"--max-tokens: {b!r} is neither auto nor a number >= 64")
            out.append((case if b == "auto" else f"{case}-{b}", None if b == "auto" else int(b)))
    return out


def run_stage(args: argparse.Namespace, strategies: list[str]) -> list[dict]:
    """Each case (``--cases``) under each strategy trains the project's ``train_worker`` (1 process,
    standalone) on the same judge rows for ``--warmup + --steps`` optimizer steps, in a fresh process; its
    own metrics file gives steady tokens/s (the steps after the first two), start-up and peak memory."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from selftaught.config import ConfigError, TrainConfig
    from selftaught.io import write_records
    from selftaught.training import packing
    from selftaught.training.data import sft_dataset

    tmp = Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    base = tmp / f"base-{args.model_config}"
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    if not (base / "config.json").is_file():
        torch.manual_seed(0)
        cfg = model_config(args.model_config)
        cfg.vocab_size = max(cfg.vocab_size, len(tok))
        # Saved in the dtype it trains in: a 1B model in float32 is 5 GB to write and read per case.
        AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16 if args.bf16 else torch.float32).save_pretrained(base)
        tok.save_pretrained(base)
    params = count_params(AutoConfig.from_pretrained(base))  # the vocabulary grown to the tokenizer's
    rows = judge_rows(args.rows)
    write_records(tmp / "rows.parquet", rows)
    lengths = packing.row_lengths(sft_dataset(rows), tok)
    gpu = torch.cuda.is_available() and not args.cpu
    out = []
    for strategy in strategies:
        for case, max_tokens in stage_cases(args):
            # compiled: packed (auto) + train.torch_compile (masked packs); masked: packed, each pack one sequence under
            # transformers' block-diagonal SDPA mask (train.attention=sdpa) instead of SDPA row by row
            packed = case.startswith(("packed", "masked")) or case == "compiled"
            # batched: the same rows per step as one padded micro-batch (no accumulation)
            micro, accum = ((args.batch_size * args.accumulation, 1) if case == "batched" else (args.batch_size, args.accumulation))
            try:
                tc = TrainConfig(strategy=strategy, deepspeed=None if strategy == "plain" else f"{strategy}.json",
                                 num_workers=1, use_gpu=gpu, lr=1e-5, warmup_steps=0,
                                 # autocast: train.bf16=true (on CPU bf16 autocast over float32 weights)
                                 bf16=True if case == "autocast" else (bool(args.bf16) if gpu else None),
                                 max_steps=args.warmup + args.steps, per_device_batch_size=micro,
                                 gradient_accumulation_steps=accum, max_seq_length=args.seq_len,
                                 gradient_checkpointing=args.grad_ckpt, packing=packed, max_tokens_per_batch=max_tokens,
                                 torch_compile=case == "compiled", logging_steps=1,
                                 attention="sdpa" if case.startswith("masked") else "auto")
            except ConfigError as e:  # a combination the stage refuses (compiled under zero3)
                print(f"skipped {strategy} {case}: {e}", flush=True)
                continue
            config = {"data_path": str(tmp / "rows.parquet"), "dpo_path": None, "base_model": str(base),
                      "out_dir": str(tmp / f"out-{strategy}-{case}"), "train": tc}
            m = train_in_fresh_process(config, f"{strategy} {case}")
            pk = m.get("packing") or {}
            out.append({"strategy": strategy, "case": case, "rows": len(rows), "mean_row_tokens": sum(lengths) / len(lengths),
                        "micro_batch": f"1 pack x {pk['budget']} tok" if pk else f"{micro} rows",
                        "budget_source": {"train.max_tokens_per_batch": "--max-tokens"}.get(pk.get("budget_source"),
                                                                                            pk.get("budget_source", "")),
                        "accumulation": pk.get("gradient_accumulation_steps", accum),
                        "rows_per_step": round(pk["rows_per_pack"] * pk["gradient_accumulation_steps"], 2) if pk
                        else micro * accum,
                        "padding_share": 0.0 if pk else padding_share(lengths, micro),
                        "steady_tokens_per_s": m.get("steady_tokens_per_s"), "reported_tokens_per_s": m.get("tokens_per_s"),
                        "startup_seconds": m.get("startup_seconds"), "engine_seconds": m.get("engine_seconds"),
                        "first_step_seconds": m.get("first_step_seconds"), "peak_gib": m.get("peak_memory_gib"),
                        "estimated_peak_gib": pk.get("estimated_peak_gib"),
                        "steps": m.get("steps"), "gpu": gpu, "loss": m.get("train_loss"), "params": params})
            shutil.rmtree(config["out_dir"], ignore_errors=True)  # a trained 1B copy per case would fill the disk
            if args.json:  # after every case: a run stopped at a time limit keeps what it measured
                atomic.write_json(args.json, out)
            print(f"done {strategy} {case}: {out[-1]['steady_tokens_per_s']} steady tok/s", file=sys.stderr, flush=True)
    return out


def print_stage(rows: list[dict], params: int, peak_tflops: float | None) -> None:
    """One line per (strategy, case); ``vs first`` is each line's steady tok/s over the first line's."""
    base = rows[0]["steady_tokens_per_s"] or 0
    head = (f"{'strategy':<9}{'case':<13}{'micro-batch':>20}{'budget from':>17}{'accum':>6}{'rows/step':>10}{'padding':>8}"
            f"{'steady tok/s':>13}{'vs first':>9}{'MFU %':>7}{'reported tok/s':>15}{'start-up s':>11}{'engine s':>9}"
            f"{'1st step s':>11}{'peak GiB':>9}{'est. GiB':>9}")
    print(head)
    print("-" * len(head))
    for r in rows:
        tps = r["steady_tokens_per_s"] or 0
        mfu = f"{100 * 6 * params * tps / (peak_tflops * 1e12):.1f}" if peak_tflops else "n/a"
        est = f"{r['estimated_peak_gib']:.2f}" if r.get("estimated_peak_gib") is not None else "-"
        print(f"{r['strategy']:<9}{r['case']:<13}{r['micro_batch']:>20}{r['budget_source'] or '-':>17}{r['accumulation']:>6}"
              f"{r['rows_per_step']:>10}{r['padding_share']:>8.1%}{tps:>13.1f}{(tps / base if base else 0):>8.2f}x{mfu:>7}"
              f"{r['reported_tokens_per_s'] or 0:>15.1f}{r['startup_seconds'] or 0:>11.1f}{r['engine_seconds'] or 0:>9.1f}"
              f"{r['first_step_seconds'] or 0:>11.2f}{r['peak_gib'] or 0:>9.2f}{est:>9}")


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-config", default="tiny", choices=["tiny", "smollm2", "1b"])
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
    ap.add_argument("--mode", default="raw", choices=["raw", "stage", "both"],
                    help="raw: random tokens, plain HF Trainer; stage: the project's train_worker on judge rows")
    ap.add_argument("--cases", default="unpacked,batched,packed",
                    help="stage mode: comma list of unpacked (micro-batch x accumulation, the recipe's default), "
                         "batched (the same rows as one padded micro-batch), packed (train.packing, once per "
                         "--max-tokens), masked (packed, with train.attention=sdpa: a pack under one block-diagonal "
                         "mask instead of SDPA row by row), compiled (packed with the auto budget, and "
                         "train.torch_compile, which masks packs), autocast (unpacked with train.bf16=true: on CPU "
                         "bf16 autocast over float32 weights, trainer plain only)")
    ap.add_argument("--rows", default=None, help="stage mode: a run's sft_data folder (default: the demo eval set "
                                                 "through the judge template)")
    ap.add_argument("--tokenizer", default=None, help="stage mode: tokenizer folder (default: the embedded SmolLM2's)")
    ap.add_argument("--accumulation", type=int, default=8, help="stage mode: the recipe's accumulation (unpacked)")
    ap.add_argument("--max-tokens", default="auto",
                    help="stage mode: tokens per packed micro-batch, a comma list (one packed case each); auto: "
                         "train.max_tokens_per_batch unset, the budget train_worker sizes from memory")
    args = ap.parse_args(argv)
    if args.mode in ("stage", "both") and args.tokenizer is None:
        from selftaught.config import ModelConfig
        from selftaught.models import resolve_model

        args.tokenizer = resolve_model(ModelConfig())
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
    stage: list[dict] = []
    if args.mode in ("stage", "both"):
        import torch

        gpu = torch.cuda.is_available() and not args.cpu
        stage = run_stage(args, strategies)
        if not stage:
            raise SystemExit("stage mode: every case was skipped (see above)")
        print(f"\nstage mode: train_worker, model {args.model_config} ({stage[0]['params'] / 1e6:.1f}M params), "
              f"{stage[0]['rows']} judge rows of {stage[0]['mean_row_tokens']:.0f} tokens on "
              f"average, {args.steps} steps after {args.warmup} (steady: after the first two)")
        print_stage(stage, stage[0]["params"], args.peak_tflops if args.peak_tflops is not None else (989.0 if gpu else None))
        if not gpu:
            print("(CPU: peak GiB = the process's max RSS, libraries included; est. GiB = model states + a micro-batch's "
                  "activations, as training.budget estimates them)")
        if args.mode == "stage":
            return stage
    rows = []
    for s in strategies:
        r = run_strategy(args, s)
        peak = args.peak_tflops if args.peak_tflops is not None else (989.0 if r["gpu"] else None)
        r["params"] = params
        r["mfu_pct"] = 100.0 * 6 * params * r["tokens_per_s"] / (peak * 1e12 * args.workers) if peak else None
        rows.append(r)
        if args.json:  # stage rows first (--mode both), then the raw rows so far
            atomic.write_json(args.json, stage + rows)
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
    return rows


if __name__ == "__main__":
    main()
