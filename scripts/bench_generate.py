#!/usr/bin/env python
"""Generation benchmark: pipeline overhead, engine speed, tokens per kept SFT example.

    python scripts/bench_generate.py                     # defaults: SmolLM2, 12 LLMBar pairs, n=4
    python scripts/bench_generate.py --pairs 24 --n 8 --run runs/demo

1. The judge stage over real LLMBar pairs (constrained) run through the Ray Data pipeline (1 engine actor) vs the
   same stage function called straight on an engine in this process; both timings include engine
   start-up. Ratio target: <= 1.10x.
2. vLLM vs transformers on the same requests (8 prompts x n=4 x 64 tokens, temperature 0.7):
   generated tokens/s, engine start excluded.
3. Free vs constrained decoding on the same judge requests: parse rate, verdict balance.
4. Generated tokens per kept SFT example: judge tokens / kept examples from (1), and, with --run,
   every generative stage of that round / its SFT rows.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selftaught.config import EngineConfig, JudgeConfig, ModelConfig, RayConfig  # noqa: E402
from selftaught.engines import GenRequest, Sampling, make_engine  # noqa: E402
from selftaught.io import load_pairwise_eval, read_jsonl  # noqa: E402
from selftaught.models import resolve_model  # noqa: E402
from selftaught.stages import judge  # noqa: E402
from selftaught.stages.base import StageContext  # noqa: E402

LLMBAR = ROOT.parent / "shared" / "data" / "eval" / "llmbar" / "Natural.json"


def llmbar_pairs(k: int) -> list[dict]:
    rows, _ = load_pairwise_eval(str(LLMBAR))
    return [{"pair_id": r["id"], "instruction": r["instruction"], "chosen": r["chosen"], "rejected": r["rejected"]}
            for r in rows[:k]]


def bench_pipeline(model: str, backend: str, pairs: list[dict], jcfg: JudgeConfig, max_len: int) -> dict:
    """The judge stage on one engine straight, then through an engine actor on Ray (``EnginePool``: one
    input shard file in, one output shard file out), the same requests; the actor's start is timed apart."""
    import tempfile

    from selftaught.distributed.generation import EnginePool, ensure_ray
    from selftaught.io import read_records, write_records

    ecfg = EngineConfig(backend=backend)
    ctx = StageContext(round=0, model_path=model, constrained=True, max_model_len=max_len, seed=0)

    t0 = time.perf_counter()
    engine = make_engine(ecfg, model, max_len)
    direct = judge.process(pairs, engine, ctx, jcfg)
    t_direct = time.perf_counter() - t0
    engine.close()

    ray_cfg = RayConfig(batch_size=len(pairs))
    ensure_ray(ray_cfg)  # a cluster is up before a job starts: not part of the stage's cost
    with tempfile.TemporaryDirectory() as tmp:
        shard = Path(tmp) / "in.parquet"
        write_records(shard, pairs)
        t0 = time.perf_counter()
        pool = EnginePool(ecfg, ray_cfg, model, max_len)
        pool.run(judge.SPEC, str(Path(tmp) / "judge"), [(0, str(shard))], jcfg, ctx, "judge on an engine actor",
                 commit=lambda entry: None, total=len(pairs))
        t_pipe = time.perf_counter() - t0
        pool.close()
        piped = read_records(Path(tmp) / "judge" / "data")
    tokens = sum(r["judge_meta"]["completion_tokens"] for r in piped if r.get("judge_meta"))
    kept = [r for r in judge.balance(piped, 0) if r["status"] == "ok"]
    return {"direct_s": t_direct, "pipeline_s": t_pipe, "ratio": t_pipe / t_direct, "tokens": tokens,
            "kept": len(kept), "stats": judge.sample_stats(piped, jcfg.degenerate_threshold), "same_rows": len(direct) == len(piped)}


def bench_constrained(model: str, backend: str, pairs: list[dict], jcfg: JudgeConfig, max_len: int) -> list[dict]:
    """Same judge requests with and without structured decoding: parse rate and verdict balance."""
    engine = make_engine(EngineConfig(backend=backend), model, max_len)
    out = []
    for constrained in (False, True):
        ctx = StageContext(round=0, model_path=model, constrained=constrained, max_model_len=max_len, seed=0)
        rows = judge.process(pairs, engine, ctx, jcfg)
        kept = [r for r in judge.balance(rows, 0) if r["status"] == "ok"]
        out.append({"constrained": constrained, **judge.sample_stats(rows, jcfg.degenerate_threshold), "kept": len(kept)})
    engine.close()
    return out


def bench_engine(model: str, backend: str, dtype: str, max_len: int) -> dict:
    pairs = llmbar_pairs(8)
    s = Sampling(n=4, temperature=0.7, top_p=0.9, max_tokens=64)
    reqs = [GenRequest(id=p["pair_id"], messages=[{"role": "user", "content": p["instruction"]}], sampling=s)
            for p in pairs]
    t0 = time.perf_counter()
    engine = make_engine(EngineConfig(backend=backend, dtype=dtype), model, max_len)
    t_start = time.perf_counter() - t0
    engine.generate(reqs[:1])  # warm-up
    t0 = time.perf_counter()
    res = engine.generate(reqs)
    dt = time.perf_counter() - t0
    engine.close()
    toks = sum(sum(r.completion_tokens) for r in res)
    return {"backend": backend, "dtype": dtype, "start_s": t_start, "tokens": toks, "seconds": dt, "tok_s": toks / dt}


def round_tokens(run_dir: Path) -> dict | None:
    summary = run_dir / "round_0" / "summary.jsonl"
    if not summary.is_file():
        return None
    rows = {r["stage"]: r for r in read_jsonl(summary)}
    gen = sum(rows[s].get("completion_tokens", 0) for s in ("categorize", "pairs", "judge") if s in rows)
    sft = rows.get("sft_data", {}).get("out", 0)
    return {"generated": gen, "sft": sft}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:smollm2")
    ap.add_argument("--pairs", type=int, default=12)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--pipeline-backend", default="vllm", choices=["vllm", "hf"])
    ap.add_argument("--skip-engines", action="store_true")
    ap.add_argument("--run", type=Path, help="a finished run dir (runs/<name>) for whole-round tokens/example")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    max_len = 2048
    model = resolve_model(ModelConfig(path=args.model))
    jcfg = JudgeConfig(n=args.n, max_tokens=args.max_tokens)
    pipe = bench_pipeline(model, args.pipeline_backend, llmbar_pairs(args.pairs), jcfg, max_len)
    cons = bench_constrained(model, args.pipeline_backend, llmbar_pairs(args.pairs), jcfg, max_len)
    engines = [] if args.skip_engines else [
        bench_engine(model, "vllm", "float32", max_len),
        bench_engine(model, "vllm", "bfloat16", max_len),
        bench_engine(model, "hf", "float32", max_len),
    ]
    rt = round_tokens(args.run) if args.run else None

    print(f"\n## Judge stage: pipeline vs direct ({args.pairs} LLMBar Natural pairs x 2 orders x n={args.n}, "
          f"max_tokens={args.max_tokens}, {args.pipeline_backend}, constrained)")
    print("| path | seconds | generated tokens | ratio |\n|---|---|---|---|")
    print(f"| engine direct | {pipe['direct_s']:.1f} | {pipe['tokens']} | 1.00x |")
    print(f"| engine actor on Ray (start included) | {pipe['pipeline_s']:.1f} | {pipe['tokens']} | {pipe['ratio']:.2f}x |")
    st = pipe["stats"]
    print(f"\nparse rate {st['parse_rate']}, verdicts A/B {st['verdict_A']}/{st['verdict_B']}, "
          f"sample accuracy {st['sample_accuracy']}, kept after balance {pipe['kept']}")
    print(f"\n## Structured decoding (same judge requests, {args.pipeline_backend})")
    print("| decoding | judgments | parse rate | verdict A | verdict B | sample accuracy | kept after balance |")
    print("|---|---|---|---|---|---|---|")
    for c in cons:
        print(f"| {'constrained' if c['constrained'] else 'free'} | {c['samples']} | {c['parse_rate']} | "
              f"{c['verdict_A']} | {c['verdict_B']} | {c['sample_accuracy']} | {c['kept']} |")
    if engines:
        print("\n## Engines on SmolLM2-135M (8 prompts x n=4 x 64 tokens, temperature 0.7, 2 CPU threads)")
        print("| backend | dtype | engine start s | generated tokens | seconds | tokens/s |\n|---|---|---|---|---|---|")
        for e in engines:
            print(f"| {e['backend']} | {e['dtype']} | {e['start_s']:.1f} | {e['tokens']} | {e['seconds']:.1f} | {e['tok_s']:.1f} |")
    print("\n## Generated tokens per kept SFT example")
    print("| scope | generated tokens | kept examples | tokens/example |\n|---|---|---|---|")
    per = pipe["tokens"] / pipe["kept"] if pipe["kept"] else float("nan")
    print(f"| judge stage (above) | {pipe['tokens']} | {pipe['kept']} | {per:.0f} |")
    if rt:
        per = rt["generated"] / rt["sft"] if rt["sft"] else float("nan")
        print(f"| whole round ({args.run}) | {rt['generated']} | {rt['sft']} | {per:.0f} |")
    print(json.dumps({"pipeline": pipe, "constrained": cons, "engines": engines, "round": rt}, default=str), file=sys.stderr)


if __name__ == "__main__":
    main()
