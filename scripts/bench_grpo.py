#!/usr/bin/env python
"""Where a GRPO step goes: sampling and scoring the judgments against optimisation, per judge format and
generation backend, on the project's own GRPO trainer (``train_worker`` with ``train.objective=grpo``).

Each case trains ``--warmup + --steps`` optimizer steps in a fresh process on the demo eval set's pairs (or
a run's, ``--pairs``), turned into GRPO prompts as the ``grpo_data`` stage does (both presentations of a
pair), and prints per timed step: its wall time (the trainer's optimizer step, from ``train_metrics.json``'s
``step_seconds``), of it the sampling and scoring (``time/generate_s``: generation, rewards, advantages) and
the rest (optimisation: forward, backward, the update), the judgments' mean length and the sampled tokens
per second of sampling time.

    python scripts/bench_grpo.py                                          # CPU: the embedded judge
    python scripts/bench_grpo.py --formats reasoning_first --reasoning-tokens 128 --steps 3
    python scripts/bench_grpo.py --model-config 1b --bf16 --pairs-per-step 8 --generation transformers,vllm  # GPU

Formats: ``verify`` (each answer alone, yes/no, the demo's; prefilled ``Verdict:``), ``verdict_first``
(a pair in one order, prefilled ``Verdict: [[``), ``reasoning_first`` (J1's "thinking" judge: the reasoning
first, never prefilled, up to ``--reasoning-tokens``). Generation: ``transformers`` (``generate``) or ``vllm``
(TRL's vLLM colocated with training, ``train.grpo.generation=vllm``: GPU only; skipped with a line elsewhere).
``--model-config`` builds random weights from a config (no download): they write nonsense to the length
limit, the worst case for sampling time; the embedded judge (the default) stops where it stops.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from selftaught import atomic  # noqa: E402

FORMATS = ("verify", "verdict_first", "reasoning_first")
GENERATION = ("transformers", "vllm")


def grpo_rows(fmt: str, pairs: int, source: str | None) -> list[dict]:
    """The ``grpo_data`` stage's rows for the first ``pairs`` pairs of ``source`` (a run's ``pairs`` stage folder)
    or of the demo eval set, repeated if fewer."""
    from selftaught import io
    from selftaught.parsing import REASONING_FIRST, VERDICT_FIRST
    from selftaught.stages import grpo_data

    if source:
        loaded = [{"id": p["pair_id"], **p} for p in io.read_records(Path(source) / "data") if p.get("status") == "ok"]
    else:
        loaded, _ = io.load_pairwise_eval(io.resolve_data_path("builtin:demo_eval.jsonl"))
    if not loaded:
        raise SystemExit(f"--pairs {source}: no pairs")
    src = [{"pair_id": f"{p['id']}#{i // len(loaded)}", "instruction": p["instruction"], "chosen": p["chosen"],
            "rejected": p["rejected"]} for i, p in ((i, loaded[i % len(loaded)]) for i in range(pairs))]
    build = {"verify": grpo_data.GrpoBuild(verify=True, template="verify", format=VERDICT_FIRST),
             "verdict_first": grpo_data.GrpoBuild(verify=False, template="judge_verdict_first", format=VERDICT_FIRST),
             "reasoning_first": grpo_data.GrpoBuild(verify=False, template="judge", format=REASONING_FIRST)}[fmt]
    return grpo_data.process(src, None, None, build)


def embedded() -> str:
    from selftaught.config import ModelConfig
    from selftaught.models import resolve_model

    return resolve_model(ModelConfig())


def base_model(args: argparse.Namespace) -> str:
    """``--model``, else (``--model-config``) random weights saved once under ``--tmp``, else the embedded judge."""
    if args.model:
        return args.model
    if args.model_config is None:
        return embedded()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench_train import model_config

    base = Path(args.tmp) / f"base-{args.model_config}"
    if not (base / "config.json").is_file():
        tok = AutoTokenizer.from_pretrained(args.tokenizer or embedded())
        cfg = model_config(args.model_config)
        cfg.vocab_size = max(cfg.vocab_size, len(tok))
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16 if args.bf16 else torch.float32).save_pretrained(base)
        tok.save_pretrained(base)
    return str(base)


def summarize(fmt: str, gen: str, m: dict, warmup: int, prompts: int, generations: int) -> dict:
    """One row from a case's ``train_metrics.json``: means over the steps after ``warmup``."""
    steps = m["step_seconds"][warmup:]
    logged = [h for h in m["log_history"] if "time/generate_s" in h][warmup:]
    gen_s = [float(h["time/generate_s"]) for h in logged]
    lengths = [float(h["completions/mean_length"]) for h in logged]
    n = len(steps)
    step = sum(steps) / n
    sample = sum(gen_s) / len(gen_s)
    completions = prompts * generations
    return {"format": fmt, "generation": gen, "steps": n, "prompts_per_step": prompts, "judgments_per_step": completions,
            "mean_judgment_tokens": sum(lengths) / len(lengths), "step_s": step, "generate_s": sample,
            "optimise_s": step - sample, "generate_share": sample / step,
            "sampled_tok_per_s": completions * (sum(lengths) / len(lengths)) / sample,
            "peak_gib": m.get("peak_memory_gib"), "startup_s": m.get("startup_seconds")}


def run(args: argparse.Namespace) -> list[dict]:
    import torch

    from bench_train import train_in_fresh_process
    from selftaught.config import TrainConfig
    from selftaught.config.train import GrpoConfig
    from selftaught.io import write_records
    from selftaught.training.args import grpo_uses_vllm

    gpu = torch.cuda.is_available() and not args.cpu
    tmp = Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    base = base_model(args)
    prompts = 2 * args.pairs_per_step
    judgments = prompts * args.num_generations
    micro = args.micro_batch or judgments
    if judgments % micro:
        raise SystemExit(f"--micro-batch {micro} must divide the {judgments} judgments of a step")
    out: list[dict] = []
    for fmt in [f.strip() for f in args.formats.split(",") if f.strip()]:
        rows = grpo_rows(fmt, args.pairs_per_step * (args.warmup + args.steps), args.pairs)
        data = tmp / f"grpo-{fmt}.parquet"
        write_records(data, rows)
        for gen in [g.strip() for g in args.generation.split(",") if g.strip()]:
            try:
                grpo_uses_vllm(gen, gpu)
            except RuntimeError as e:
                print(f"skipped {fmt} {gen}: {e}", file=sys.stderr, flush=True)
                continue
            reasoning = fmt == "reasoning_first"
            tc = TrainConfig(objective="grpo", strategy=args.strategy,
                             deepspeed=None if args.strategy == "plain" else f"{args.strategy}.json",
                             num_workers=1, use_gpu=gpu, lr=1e-5, warmup_steps=0, bf16=bool(args.bf16) if gpu else None,
                             max_steps=args.warmup + args.steps, per_device_batch_size=micro,
                             gradient_accumulation_steps=judgments // micro, logging_steps=1, max_seq_length=args.seq_len,
                             grpo=GrpoConfig(num_generations=args.num_generations, generation=gen,
                                             max_completion_length=args.reasoning_tokens if reasoning else 16))
            config = {"data_path": None, "dpo_path": None, "grpo_path": str(data), "base_model": base,
                      "out_dir": str(tmp / f"out-{fmt}-{gen}"), "train": tc}
            try:
                m = train_in_fresh_process(config, f"{fmt} {gen}")
            finally:
                shutil.rmtree(config["out_dir"], ignore_errors=True)
            out.append(summarize(fmt, gen, m, args.warmup, prompts, args.num_generations))
            if args.json:  # after every case: a run stopped at a time limit keeps what it measured
                atomic.write_json(args.json, out)
            r = out[-1]
            print(f"done {fmt} {gen}: {r['step_s']:.2f} s a step, {r['generate_s']:.2f} s sampling",
                  file=sys.stderr, flush=True)
    return out


def print_table(rows: list[dict], head_line: str) -> None:
    print(head_line)
    head = (f"{'format':<16}{'generation':<13}{'steps':>6}{'judgments':>10}{'mean tok':>9}{'step s':>8}"
            f"{'sampling s':>11}{'optimise s':>11}{'sampling':>9}{'sampled tok/s':>14}{'peak GiB':>9}{'start-up s':>11}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['format']:<16}{r['generation']:<13}{r['steps']:>6}{r['judgments_per_step']:>10}"
              f"{r['mean_judgment_tokens']:>9.1f}{r['step_s']:>8.2f}{r['generate_s']:>11.2f}{r['optimise_s']:>11.2f}"
              f"{r['generate_share']:>9.0%}{r['sampled_tok_per_s']:>14.1f}{r['peak_gib'] or 0:>9.2f}"
              f"{r['startup_s'] or 0:>11.1f}")


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--formats", default="verify,reasoning_first", help=f"comma list of {' | '.join(FORMATS)}")
    ap.add_argument("--generation", default="transformers", help=f"comma list of {' | '.join(GENERATION)}")
    ap.add_argument("--pairs", default=None, help="a run's pairs stage folder (runs/<name>/round_<k>/pairs; default: "
                                                  "the demo eval set's pairs)")
    ap.add_argument("--model", default=None, help="an HF model folder (default: the embedded judge)")
    ap.add_argument("--model-config", default=None, choices=["tiny", "smollm2", "1b"],
                    help="random weights from a config instead (bench_train's shapes)")
    ap.add_argument("--tokenizer", default=None, help="with --model-config (default: the embedded judge's)")
    ap.add_argument("--strategy", default="plain", choices=["plain", "zero2", "zero3"])
    ap.add_argument("--bf16", action="store_true", help="GPU: bf16 weights")
    ap.add_argument("--cpu", action="store_true", help="train on CPU even if a GPU is present")
    ap.add_argument("--pairs-per-step", type=int, default=1, help="pairs a step (2 prompts each)")
    ap.add_argument("--num-generations", type=int, default=4, help="judgments sampled per prompt")
    ap.add_argument("--micro-batch", type=int, default=None,
                    help="judgments per forward and backward (train.per_device_batch_size; the rest is gradient "
                         "accumulation); default: all of a step's")
    ap.add_argument("--reasoning-tokens", type=int, default=256, help="reasoning_first: max judgment length")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=4, help="timed optimizer steps")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--tmp", default="/tmp/selftaught_bench_grpo")
    args = ap.parse_args(argv)
    for name, allowed in (("formats", FORMATS), ("generation", GENERATION)):
        for v in [x.strip() for x in getattr(args, name).split(",") if x.strip()]:
            if v not in allowed:
                ap.error(f"--{name}: unknown {v!r} ({' | '.join(allowed)})")
    if args.warmup < 0 or args.steps < 1 or args.pairs_per_step < 1 or args.num_generations < 2:
        ap.error("--warmup >= 0, --steps >= 1, --pairs-per-step >= 1 and --num-generations >= 2")
    rows = run(args)
    if not rows:
        raise SystemExit("every case was skipped (see above)")
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() and not args.cpu else "cpu"
    model = args.model or (f"random {args.model_config}" if args.model_config else "the embedded judge")
    print_table(rows, f"\nGRPO step, {model}, {device}, strategy {args.strategy}, {args.steps} steps after "
                      f"{args.warmup}: {args.pairs_per_step} pair(s) = {2 * args.pairs_per_step} prompts x "
                      f"{args.num_generations} judgments a step, {args.micro_batch or 'all'} a micro-batch")
    print("(sampling: TRL's _generate_and_score_completions: generate, score, advantages; "
          "optimise: the rest of the step; sampled tok/s: judgment tokens over sampling time)")
    return rows


if __name__ == "__main__":
    main()
