"""A trained folder a team can share: tied embeddings stored once (single file and sharded), the
umask's permissions on every file, a model that loads re-tied."""
import json
import os
import stat

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from selftaught.training.export import retie_embeddings, share_permissions


def _folder(tmp_path, tied=True, same=True, sharded=False):
    emb = torch.randn(16, 4)
    head = emb.clone() if same else torch.randn(16, 4)
    (tmp_path / "config.json").write_text(json.dumps({"tie_word_embeddings": tied}))
    tensors = {"model.embed_tokens.weight": emb, "model.norm.weight": torch.ones(4), "lm_head.weight": head}
    if not sharded:
        save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    else:
        save_file({"model.embed_tokens.weight": emb}, str(tmp_path / "model-00001-of-00002.safetensors"))
        save_file({"model.norm.weight": torch.ones(4), "lm_head.weight": head},
                  str(tmp_path / "model-00002-of-00002.safetensors"))
        wm = {"model.embed_tokens.weight": "model-00001-of-00002.safetensors",
              "model.norm.weight": "model-00002-of-00002.safetensors",
              "lm_head.weight": "model-00002-of-00002.safetensors"}
        (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 528}, "weight_map": wm}))
    return emb


def test_tied_copy_dropped_single_file(tmp_path):
    emb = _folder(tmp_path)
    assert retie_embeddings(tmp_path) == 16 * 4 * 4
    sd = load_file(str(tmp_path / "model.safetensors"))
    assert set(sd) == {"model.embed_tokens.weight", "model.norm.weight"} and torch.equal(sd["model.embed_tokens.weight"], emb)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}  # transformers refuses a safetensors file without it
    assert retie_embeddings(tmp_path) == 0  # idempotent


def test_tied_copy_dropped_from_its_shard_and_the_index(tmp_path):
    _folder(tmp_path, sharded=True)
    assert retie_embeddings(tmp_path) == 256
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert "lm_head.weight" not in index["weight_map"] and index["metadata"]["total_size"] == 528 - 256
    assert set(load_file(str(tmp_path / "model-00002-of-00002.safetensors"))) == {"model.norm.weight"}


def test_untied_or_different_weights_are_kept(tmp_path):
    _folder(tmp_path, tied=False)
    assert retie_embeddings(tmp_path) == 0
    assert "lm_head.weight" in load_file(str(tmp_path / "model.safetensors"))
    other = tmp_path / "other"
    other.mkdir()
    _folder(other, tied=True, same=False)  # tied in the config, trained apart in fact: both are weights
    assert retie_embeddings(other) == 0
    assert "lm_head.weight" in load_file(str(other / "model.safetensors"))


def test_every_file_gets_the_umask_permissions(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x")
    os.chmod(f, 0o600)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.json").write_text("{}")
    os.chmod(tmp_path / "sub" / "a.json", 0o600)
    umask = os.umask(0o022)
    try:
        share_permissions(tmp_path)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "sub" / "a.json").stat().st_mode) == 0o644


def test_a_retied_tiny_model_loads_tied_and_generates_the_same(tmp_path, tiny_model_path):
    """The real case: a folder whose weights hold a tied lm_head copy, as a gathered ZeRO save writes it."""
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    assert ref.config.tie_word_embeddings
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"].clone()  # the untied copy
    ref.config.save_pretrained(tmp_path)
    save_file(sd, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    size = (tmp_path / "model.safetensors").stat().st_size
    saved = retie_embeddings(tmp_path)
    assert saved > 0 and (tmp_path / "model.safetensors").stat().st_size < size - saved // 2
    m = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert m.lm_head.weight.data_ptr() == m.get_input_embeddings().weight.data_ptr()
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(m(ids).logits, ref(ids).logits)
