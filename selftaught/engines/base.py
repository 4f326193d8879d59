"""The one engine contract every generative stage uses.

A request is a chat (``messages``) plus an optional ``assistant_prefix`` that the model must
continue (used to force a verdict after free reasoning). Engines render the chat with the model's
own chat template, so every engine sees byte-identical prompts.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Sampling:
    n: int = 1
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    # > 0 subtracts penalty x count from the logit of every token already in the *output* (OpenAI /
    # vLLM frequency_penalty; transformers through our own processor): small models loop on one
    # sentence without it. Prompt tokens are not penalized: an answer must reuse the question's words.
    frequency_penalty: float = 0.0


def regex_escape(text: str) -> str:
    """Escape regex metacharacters only: xgrammar rejects ``re.escape``'s ``\\ `` (escaped space)."""
    return re.sub(r"([.^$*+?{}\[\]\\|()])", r"\\\1", text)


@dataclass(frozen=True)
class Constraint:
    """Structured decoding: exactly one of ``regex`` / ``choice`` / ``tokens`` is set.

    ``tokens``: the next token is one of these strings, each a single token of the model's
    vocabulary; the result carries every option's log-probability (``GenResult.option_logprobs``),
    which is what verdict calibration reads. One forward pass, no grammar.
    """

    regex: str | None = None
    choice: tuple[str, ...] | None = None
    tokens: tuple[str, ...] | None = None

    def as_regex(self) -> str:
        if self.regex is not None:
            return self.regex
        assert self.choice, "empty constraint (token options have no regex: engines mask them)"
        return "(" + "|".join(regex_escape(c) for c in self.choice) + ")"


@dataclass
class GenRequest:
    id: str
    messages: list[dict]
    sampling: Sampling = field(default_factory=Sampling)
    constraint: Constraint | None = None
    assistant_prefix: str = ""


@dataclass
class GenResult:
    id: str
    texts: list[str]  # n samples (without the assistant_prefix)
    finish_reasons: list[str]  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: list[int]
    # ``Constraint.tokens`` requests: each option's log-probability under the model's raw next-token
    # distribution (before temperature and the mask); the same for every sample of the request.
    option_logprobs: dict[str, float] | None = None


class Engine(Protocol):
    name: str
    model_path: str

    def generate(self, requests: list[GenRequest]) -> list[GenResult]: ...

    def count_prompt_tokens(self, request: GenRequest) -> int: ...

    def close(self) -> None: ...


def render_prompt(tokenizer, request: GenRequest) -> str:
    """The exact prompt text every engine feeds the model: chat template + forced assistant prefix."""
    text = tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
    return text + request.assistant_prefix


def encode_prompt(tokenizer, request: GenRequest) -> list[int]:
    """Token ids of ``render_prompt``; no extra special tokens (the template already has them)."""
    return tokenizer(render_prompt(tokenizer, request), add_special_tokens=False)["input_ids"]


def draws(s: Sampling) -> int:
    """Sequences an engine actually decodes: greedy samples are identical, so decode one
    (vLLM also rejects greedy with n > 1); ``make_result`` copies it back to ``n``."""
    return 1 if s.temperature == 0 else s.n


def option_token_ids(tokenizer, options: tuple[str, ...]) -> list[int]:
    """The vocabulary id of each single-token option; a multi-token option is a caller error."""
    ids = []
    for o in options:
        enc = tokenizer.encode(o, add_special_tokens=False)
        if len(enc) != 1:
            raise ValueError(f"Constraint.tokens option {o!r} is {len(enc)} tokens for this tokenizer; each must be one")
        ids.append(enc[0])
    return ids


def make_result(request: GenRequest, prompt_tokens: int, samples: list[tuple[str, str, int]],
                option_logprobs: dict[str, float] | None = None) -> GenResult:
    """``samples`` = (text, finish_reason, completion_tokens) per decoded sequence."""
    if len(samples) == 1:
        samples = samples * request.sampling.n  # greedy n > 1
    return GenResult(
        id=request.id,
        texts=[s[0] for s in samples],
        finish_reasons=[s[1] for s in samples],
        prompt_tokens=prompt_tokens,
        completion_tokens=[s[2] for s in samples],
        option_logprobs=option_logprobs,
    )
