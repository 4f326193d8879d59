"""Scratch: start one engine on SmolLM2 and run a few requests (python scripts/_engine_smoke.py vllm)."""
import logging, sys, time

from selftaught.config import EngineConfig, ModelConfig
from selftaught.engines import Constraint, GenRequest, Sampling, make_engine
from selftaught.models import resolve_model

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    backend = sys.argv[1] if len(sys.argv) > 1 else "vllm"
    dtype = sys.argv[2] if len(sys.argv) > 2 else "auto"
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    t = time.time()
    eng = make_engine(EngineConfig(backend=backend, dtype=dtype, threads=threads), resolve_model(ModelConfig()))
    print(f"start {time.time() - t:.1f}s")
    msgs = [{"role": "user", "content": "Write a haiku about the sea."}]
    reqs = [
        GenRequest("greedy", msgs, Sampling(max_tokens=32)),
        GenRequest("sampled", msgs, Sampling(n=4, temperature=0.7, top_p=0.9, max_tokens=32)),
        GenRequest("choice", msgs, Sampling(n=3, temperature=0.7, max_tokens=8), Constraint(choice=("[[A]]", "[[B]]"))),
        GenRequest("regex", msgs, Sampling(max_tokens=16), Constraint(regex=r"Category: (Coding|Other)\nComplexity: ([1-9]|10)")),
        GenRequest("prefix", msgs, Sampling(max_tokens=16, stop=("\n",)), assistant_prefix="Here is a haiku"),
    ]
    t = time.time()
    for r in eng.generate(reqs):
        print(r)
    print(f"gen {time.time() - t:.1f}s")
    # Throughput: 8 prompts x n=4 x 64 tokens, temperature 0.7.
    bench = [GenRequest(str(i), [{"role": "user", "content": f"Tell me fact number {i} about the ocean."}],
                        Sampling(n=4, temperature=0.7, top_p=0.9, max_tokens=64)) for i in range(8)]
    eng.generate(bench[:1])  # warm-up
    t = time.time()
    res = eng.generate(bench)
    dt = time.time() - t
    ntok = sum(sum(r.completion_tokens) for r in res)
    import os
    print(f"BENCH {backend} {dtype} threads={threads}: {ntok} tokens in {dt:.1f}s = {ntok / dt:.1f} tok/s (loadavg {os.getloadavg()[0]:.2f})")
    eng.close()
    print("closed")
