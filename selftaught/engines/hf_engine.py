"""transformers engine: same contract and output semantics as ``VLLMEngine``, no vLLM needed.

Requests are grouped by (sampling, constraint) because one ``generate()`` call takes one set of
generation settings, then run in left-padded batches of ``cfg.hf_batch_size`` prompts.
Structured decoding uses xgrammar's transformers logits processor (the library vLLM uses too).
"""
from __future__ import annotations

from collections import defaultdict

import torch

from selftaught.engines.base import (Constraint, GenRequest, GenResult, Sampling, draws, encode_prompt, make_result,
                                    option_token_ids)


class _AllowOnly:
    """Logits processor: every token but ``ids`` gets -inf (the ``Constraint.tokens`` mask)."""

    def __init__(self, ids: list[int]):
        self.ids = torch.tensor(ids)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        masked = torch.full_like(scores, float("-inf"))
        masked[:, self.ids] = scores[:, self.ids]
        return masked


class _FrequencyPenalty:
    """vLLM's frequency_penalty: logits -= penalty x (count of the token in the output so far);
    the prompt (the first ``prompt_len`` positions of every row) is not counted."""

    def __init__(self, penalty: float, prompt_len: int):
        self.penalty, self.prompt_len = penalty, prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = input_ids[:, self.prompt_len:]
        if out.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores).scatter_add_(1, out, torch.ones_like(out, dtype=scores.dtype))
        return scores - self.penalty * counts


class HFEngine:
    name = "hf"

    def __init__(self, cfg, model_path: str, max_model_len: int = 2048) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.cfg = cfg
        self.model_path = model_path
        self.max_model_len = max_model_len
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if self.device == "cuda" else "float32")
        if self.device == "cpu":
            torch.set_num_threads(cfg.threads)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).to(self.device).eval()
        self.eos_id: int = self.tokenizer.eos_token_id
        self.pad_id: int = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_id
        self._compiler = None
        self._seed, self._calls = cfg.seed, 0
        self._grammars: dict[Constraint, object] = {}

    # -- structured decoding ------------------------------------------------------------------
    def _logits_processor(self, constraint: Constraint):
        import xgrammar as xgr
        from xgrammar.contrib.hf import LogitsProcessor

        if self._compiler is None:
            # vocab_size from the model: the embedding may be larger than the tokenizer's vocab.
            info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.model.config.vocab_size)
            self._compiler = xgr.GrammarCompiler(info)
        if constraint not in self._grammars:
            self._grammars[constraint] = self._compiler.compile_regex(constraint.as_regex())
        return LogitsProcessor(self._grammars[constraint])  # stateful: a fresh one per generate()

    def reseed(self, seed: int) -> None:
        """Deterministic mode: the draws of a shard depend on its seed alone, not on what this
        engine generated before (a resumed run redoes a shard on a fresh engine)."""
        self._seed, self._calls = seed, 0

    # -- generation ---------------------------------------------------------------------------
    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        # Deterministic, but a new draw on every call (as vLLM's engine-level RNG moves on): a
        # repeated request (the next adaptive wave, a retry) must not get the same samples back.
        torch.manual_seed(self._seed * 1_000_003 + self._calls)
        self._calls += 1
        groups: dict[tuple[Sampling, Constraint | None], list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            groups[(r.sampling, r.constraint)].append(i)
        results: list[GenResult | None] = [None] * len(requests)
        bs = self.cfg.hf_batch_size
        for (sampling, constraint), idx in groups.items():
            for start in range(0, len(idx), bs):
                chunk = idx[start : start + bs]
                for i, res in zip(chunk, self._generate_batch([requests[i] for i in chunk], sampling, constraint)):
                    results[i] = res
        return results  # type: ignore[return-value]

    def _generate_batch(self, reqs: list[GenRequest], s: Sampling, constraint: Constraint | None) -> list[GenResult]:
        prompts = [encode_prompt(self.tokenizer, r) for r in reqs]
        longest = max(map(len, prompts))
        if longest >= self.max_model_len:
            raise ValueError(f"prompt of {longest} tokens does not fit max_model_len={self.max_model_len}")
        ids = torch.full((len(prompts), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(prompts):  # left padding: generation continues at the right edge
            ids[row, longest - len(p) :] = torch.tensor(p)
            mask[row, longest - len(p) :] = 1
        k = draws(s)
        options = constraint.tokens if constraint is not None else None
        kwargs: dict = dict(
            max_new_tokens=1 if options else min(s.max_tokens, self.max_model_len - longest),
            num_return_sequences=k,
            do_sample=s.temperature > 0,
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
        )
        if s.temperature > 0:  # top_k=0: vLLM applies no top-k; transformers defaults to 50
            kwargs.update(temperature=s.temperature, top_p=s.top_p, top_k=0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        processors = [_FrequencyPenalty(s.frequency_penalty, longest)] if s.frequency_penalty else []
        if options:
            # One token out of the options (vLLM: allowed_token_ids); the raw logits give each
            # option's logprob, as vLLM's raw logprobs mode does.
            option_ids = option_token_ids(self.tokenizer, options)
            kwargs.update(output_logits=True, return_dict_in_generate=True)
            processors.append(_AllowOnly(option_ids))
        elif constraint is not None:
            processors.append(self._logits_processor(constraint))
        elif s.stop:
            # Not with a constraint: a row halted mid-grammar would then feed pad tokens to its
            # xgrammar matcher (assertion). Constrained rows run to the grammar's end (or
            # max_tokens) and _sample cuts the text, so only their token counts differ from vLLM.
            kwargs.update(stop_strings=list(s.stop), tokenizer=self.tokenizer)
        if processors:
            kwargs["logits_processor"] = processors
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **kwargs)
        option_lp: list[dict[str, float] | None] = [None] * len(reqs)
        if options:
            lp = torch.log_softmax(out.logits[0].float(), dim=-1)  # [rows x k, vocab] at the one new position
            option_lp = [{o: float(lp[row * k, i]) for o, i in zip(options, option_ids)} for row in range(len(reqs))]
            out = out.sequences
        new = out[:, longest:].tolist()  # rows: prompt0 x k, prompt1 x k, ...
        return [
            make_result(r, len(p), [self._sample(new[row * k + j], s) for j in range(k)], option_lp[row])
            for row, (r, p) in enumerate(zip(reqs, prompts))
        ]

    def _sample(self, toks: list[int], s: Sampling) -> tuple[str, str, int]:
        """(text, finish_reason, completion_tokens) with vLLM's semantics (eos counted, stop string cut).

        Rows halted by a stop string are padded with pad_id; when pad == eos (SmolLM2) the count
        includes one pad token.
        """
        if self.eos_id in toks:
            toks = toks[: toks.index(self.eos_id) + 1]
            finish = "stop"
        else:
            finish = "length"
        text = self.tokenizer.decode(toks, skip_special_tokens=True)
        cuts = [text.find(x) for x in s.stop if x in text]
        if cuts:
            text, finish = text[: min(cuts)], "stop"
        return text, finish, len(toks)

    def count_prompt_tokens(self, request: GenRequest) -> int:
        return len(encode_prompt(self.tokenizer, request))

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
        self._grammars.clear()
        import gc

        gc.collect()
        if self.device == "cuda":
            torch.cuda.empty_cache()
