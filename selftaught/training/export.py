"""A trained model folder a team can share: tied embeddings stored once, the usual file permissions.

- A gathered ZeRO state dict holds ``lm_head.weight`` as its own tensor even when the config ties it
  to the input embeddings, so the checkpoint carries a second copy of the largest matrix (SmolLM2-135M:
  651 MB instead of 538 MB). Loaders re-tie it from the embeddings, so the copy is dropped, but only
  when it is bit-for-bit the embedding matrix.
- ``safetensors`` writes through a private temporary file, leaving the weights 0600: unreadable to the
  rest of a team on a shared filesystem. Every file gets the umask's permissions, like the project's
  other outputs.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from selftaught.atomic import atomic_path, write_json

OUTPUT_EMBEDDING = "lm_head.weight"
INPUT_EMBEDDINGS = ("embed_tokens.weight", "wte.weight", "embed_in.weight", "word_embeddings.weight")
INDEX = "model.safetensors.index.json"


def _tied(out_dir: Path) -> bool:
    cfg = json.loads((out_dir / "config.json").read_text())
    return bool(cfg.get("tie_word_embeddings", cfg.get("text_config", {}).get("tie_word_embeddings", False)))


def _input_embedding_key(keys) -> str | None:
    found = [k for k in keys if k.endswith(INPUT_EMBEDDINGS)]
    return found[0] if len(found) == 1 else None


def retie_embeddings(out_dir: str | os.PathLike) -> int:
    """Drop the stored copy of tied output embeddings; returns the bytes saved (0: nothing to drop)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    out = Path(out_dir)
    if not (out / "config.json").is_file() or not _tied(out):
        return 0
    index_path = out / INDEX
    if index_path.is_file():
        index = json.loads(index_path.read_text())
        weight_map: dict[str, str] = index["weight_map"]
    elif (out / "model.safetensors").is_file():
        index = None
        with safe_open(str(out / "model.safetensors"), "pt") as f:
            weight_map = {k: "model.safetensors" for k in f.keys()}
    else:
        return 0
    emb_key = _input_embedding_key(weight_map)
    if OUTPUT_EMBEDDING not in weight_map or emb_key is None:
        return 0
    with safe_open(str(out / weight_map[emb_key]), "pt") as f:
        emb = f.get_tensor(emb_key)
    shard = out / weight_map[OUTPUT_EMBEDDING]
    tensors = load_file(str(shard))
    head = tensors[OUTPUT_EMBEDDING]
    if head.shape != emb.shape or not torch.equal(head, emb):
        return 0  # trained apart (untied in fact): both are real weights
    del tensors[OUTPUT_EMBEDDING]
    saved = head.numel() * head.element_size()
    with atomic_path(shard) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt"})
    if index is not None:
        del weight_map[OUTPUT_EMBEDDING]
        if "metadata" in index and "total_size" in index["metadata"]:
            index["metadata"]["total_size"] -= saved
        write_json(index_path, index)
    return saved


def share_permissions(out_dir: str | os.PathLike) -> None:
    """Every file under ``out_dir`` readable as the umask allows (0644 under the usual 022)."""
    umask = os.umask(0)
    os.umask(umask)
    for p in Path(out_dir).rglob("*"):
        if p.is_file():
            os.chmod(p, 0o666 & ~umask)
