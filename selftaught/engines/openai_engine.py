"""OpenAI-compatible engine: the same chat requests, sent to a server (``vllm serve``, or any API
that speaks ``POST /v1/chat/completions``).

``engine.backend=openai`` with ``base_url`` (e.g. ``http://host:8000/v1``), ``api_model`` (the
served model name), ``api_key_env`` (the *name* of the environment variable holding the key;
unset variable -> ``"EMPTY"``, which vLLM accepts), ``max_concurrency``, ``max_retries``,
``timeout_s``.

Behaviour (explicit, tested in tests/test_openai_engine.py):

- ``generate`` is synchronous: it runs its own asyncio loop (in a worker thread when the caller is
  already inside a running loop) with one ``AsyncOpenAI`` client per call and at most
  ``max_concurrency`` HTTP requests in flight (an ``asyncio.Semaphore``; a request waiting out a
  backoff does not hold a slot). Results come back in request order.
- Retries are ours, not the client's (the client is built with ``max_retries=0``): HTTP 408, 409,
  429, 5xx, connection errors and timeouts are retried up to ``max_retries`` times with
  exponential backoff and jitter (``backoff_base_s * 2**attempt``, capped at ``backoff_max_s``,
  times a uniform factor in [0.5, 1]; a ``Retry-After`` header of at most ``backoff_max_s``
  seconds is honoured as a lower bound). ``timeout_s`` bounds each attempt end to end.
- Any other 4xx fails the whole ``generate`` call at once with ``OpenAIEngineError`` naming
  ``base_url``, the model and the status (401/403: a hint naming the key's *variable*). The key
  itself never appears in logs, ``repr`` or exception text (it is scrubbed from server messages).
- A prompt the server rejects as too long (HTTP 400 with a context-length message) does not fail
  the batch: its result has empty texts, ``finish_reasons == ["prompt_too_long"] * n`` and zero
  completion tokens, and a warning is logged. Stages normally never send such prompts: they check
  ``fits()`` with ``count_prompt_tokens`` first, which is exact with a local tokenizer or vLLM's
  ``/tokenize``.

``count_prompt_tokens``, in this order of preference (``self.token_count_source`` says which):

1. ``"tokenizer"``: the tokenizer in ``model_path`` when it is a local folder (the driver passes
   the seed model's folder): exactly what ``vllm serve`` of the same model counts;
2. ``"server"``: ``POST <root>/tokenize`` (vLLM's tokenizer endpoint, chat form, exact);
3. ``"estimate"``: ceil(characters / 3) + 8 per message + 64 (chat templates add role markers and
   sometimes a default system prompt: SmolLM2's adds ~20 tokens), deliberately above the ~4
   characters per token of English text, so ``fits()`` errs toward skipping. Not an upper bound for every
   text (CJK, dense code): use a local tokenizer or a vLLM server for those.

vLLM-only features, sent through ``extra_body`` (checked against vLLM 0.32's
``ChatCompletionRequest``): ``assistant_prefix`` -> the prefix as a final assistant message with
``continue_final_message: true, add_generation_prompt: false`` (the server renders exactly the
local ``render_prompt`` text); ``Constraint`` -> ``structured_outputs: {"choice": [...]}`` or
``{"regex": ...}`` (vLLM >= 0.11 name; the legacy ``guided_choice``/``guided_regex`` fields are
*silently ignored* by vLLM 0.32, so they are never sent); ``return_token_ids: true`` for exact
per-sample completion token counts. The server is recognised as vLLM by ``GET <root>/version``
(``<root>`` = ``base_url`` without its trailing ``/v1``); a request with a prefix or a constraint
to any other server raises ``OpenAIEngineError`` instead of silently decoding unconstrained, so
constrained mode (``engine.constrained=true``) needs a vLLM server.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import re
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from selftaught.engines.base import GenRequest, GenResult, draws, encode_prompt, make_result

log = logging.getLogger(__name__)

PROMPT_TOO_LONG = "prompt_too_long"  # finish reason of a request the server rejected as too long
RETRYABLE_STATUS = frozenset({408, 409, 429})  # plus every 5xx
_CONTEXT_RE = re.compile(r"context length|context_length|context window|prompt is too long|too many tokens|"
                         r"max_model_len|maximum (input|prompt) length", re.IGNORECASE)
# vLLM: "your prompt contains [at least ]N input tokens"; OpenAI: "your messages resulted in N tokens".
_PROMPT_TOKENS_RE = re.compile(r"contains (?:at least )?(\d+) input tokens|messages resulted in (\d+) tokens")


class OpenAIEngineError(RuntimeError):
    """A request failed for good (non-retryable status, retries exhausted, unsupported feature)."""


class _Secret:
    """Holds the API key; prints as ``***`` everywhere."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__


class OpenAIEngine:
    name = "openai"

    def __init__(self, cfg, model_path: str, max_model_len: int = 2048, *,
                 backoff_base_s: float = 0.5, backoff_max_s: float = 30.0) -> None:
        if not cfg.base_url or not cfg.api_model:
            raise ValueError("backend=openai needs engine.base_url and engine.api_model")
        self.cfg = cfg
        self.model_path = model_path
        self.max_model_len = max_model_len
        self.base_url = cfg.base_url.rstrip("/")
        self.root_url = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
        self.api_model = cfg.api_model
        self.api_key_env = cfg.api_key_env
        self._key = _Secret(os.environ.get(cfg.api_key_env) or "EMPTY")
        self.max_concurrency = int(cfg.max_concurrency)
        self.max_retries = int(cfg.max_retries)
        self.timeout_s = float(cfg.timeout_s)
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.tokenizer = _local_tokenizer(model_path)
        self.token_count_source = "tokenizer" if self.tokenizer is not None else None  # None: not probed yet
        self._vllm: bool | None = None  # server kind, probed once on first need
        # Counters (tests, logs): HTTP attempts, retries, prompt-too-long results, peak concurrency.
        self.stats = {"requests": 0, "attempts": 0, "retries": 0, "too_long": 0, "max_in_flight": 0}
        self._in_flight = 0
        log.info("openai engine: %s model=%r (key from $%s), prompt tokens via %s", self.base_url, self.api_model,
                 self.api_key_env, self.token_count_source or "server /tokenize or estimate")

    def __repr__(self) -> str:
        return f"OpenAIEngine(base_url={self.base_url!r}, model={self.api_model!r}, key=${self.api_key_env})"

    # -- server probing (sync, stdlib) ---------------------------------------------------------
    def _http(self, method: str, url: str, body: dict | None = None) -> tuple[int, object]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self._key.get()}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=min(self.timeout_s, 30.0)) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, None
        except (urllib.error.URLError, OSError, ValueError):
            return 0, None

    @property
    def is_vllm(self) -> bool:
        """Whether the server is vLLM (``GET <root>/version`` answers ``{"version": ...}``)."""
        if self._vllm is None:
            status, body = self._http("GET", f"{self.root_url}/version")
            if status == 0:
                return False  # unreachable now: decide on a later call, generate() reports the error
            self._vllm = status == 200 and isinstance(body, dict) and "version" in body
            log.info("openai engine: %s is %s", self.root_url,
                     f"vLLM {body['version']}" if self._vllm else "not vLLM (no prefix/constraint support)")
        return self._vllm

    # -- prompt length --------------------------------------------------------------------------
    def count_prompt_tokens(self, request: GenRequest) -> int:
        if self.tokenizer is not None:
            return len(encode_prompt(self.tokenizer, request))
        if self.token_count_source in (None, "server") and self.is_vllm:
            status, body = self._http("POST", f"{self.root_url}/tokenize", {
                "model": self.api_model, "messages": self._messages(request),
                **self._prefix_params(request)})
            if status == 200 and isinstance(body, dict) and "count" in body:
                self.token_count_source = "server"
                return int(body["count"])
            if status in (404, 405, 501):
                log.warning("openai engine: %s/tokenize answered %d: estimating prompt tokens", self.root_url, status)
                self.token_count_source = "estimate"
        elif self.token_count_source is None and self._vllm is False:
            self.token_count_source = "estimate"
        return estimate_tokens(request)

    # -- requests --------------------------------------------------------------------------------
    @staticmethod
    def _messages(r: GenRequest) -> list[dict]:
        if not r.assistant_prefix:
            return list(r.messages)
        return list(r.messages) + [{"role": "assistant", "content": r.assistant_prefix}]

    @staticmethod
    def _prefix_params(r: GenRequest) -> dict:
        return {"continue_final_message": True, "add_generation_prompt": False} if r.assistant_prefix else {}

    def _body(self, r: GenRequest) -> dict:
        s = r.sampling
        extra: dict = dict(self._prefix_params(r))
        if r.constraint is not None:
            c = r.constraint
            options = c.choice or c.tokens  # token options: a choice (no logprobs come back)
            extra["structured_outputs"] = {"choice": list(options)} if options else {"regex": c.as_regex()}
        if self._vllm:
            extra["return_token_ids"] = True  # exact per-sample completion token counts
        body: dict = dict(
            model=self.api_model,
            messages=self._messages(r),
            n=draws(s),  # greedy: one sequence, copied to n by make_result (vLLM rejects greedy n > 1)
            temperature=s.temperature,
            top_p=s.top_p if s.temperature > 0 else 1.0,
            max_tokens=s.max_tokens,
        )
        if s.stop:
            body["stop"] = list(s.stop)
        if s.frequency_penalty:
            body["frequency_penalty"] = s.frequency_penalty
        if extra:
            body["extra_body"] = extra
        return body

    def _check_features(self, requests: list[GenRequest]) -> None:
        needs = [r for r in requests if r.assistant_prefix or r.constraint is not None]
        if needs and not self.is_vllm:
            if self._vllm is None:
                raise OpenAIEngineError(f"cannot reach {self.root_url}/version to check for a vLLM server "
                                        f"(needed for request {needs[0].id!r}'s prefix/constraint)")
            what = "an assistant_prefix" if needs[0].assistant_prefix else "a constraint"
            raise OpenAIEngineError(
                f"request {needs[0].id!r} has {what}, which needs a vLLM server (continue_final_message / "
                f"structured_outputs); {self.root_url} did not answer GET /version like vLLM. "
                "Use engine.constrained=false with this server, or serve the model with `vllm serve`.")

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        if not requests:
            return []
        self._check_features(requests)
        if self._vllm is None:
            self.is_vllm  # noqa: B018 -- probe once so return_token_ids is sent to vLLM
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._agenerate(requests))
        # Called from inside a running loop (async Ray actor, notebook): run ours in a worker thread.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, self._agenerate(requests)).result()

    async def _agenerate(self, requests: list[GenRequest]) -> list[GenResult]:
        import openai

        client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self._key.get(), max_retries=0,
                                    timeout=self.timeout_s)
        sem = asyncio.Semaphore(self.max_concurrency)
        tasks = [asyncio.ensure_future(self._one(client, sem, r)) for r in requests]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            await client.close()

    async def _one(self, client, sem: asyncio.Semaphore, r: GenRequest) -> GenResult:
        import openai

        body = self._body(r)
        self.stats["requests"] += 1
        for attempt in range(self.max_retries + 1):
            retry_after = None
            async with sem:
                self._in_flight += 1
                self.stats["attempts"] += 1
                self.stats["max_in_flight"] = max(self.stats["max_in_flight"], self._in_flight)
                try:
                    resp = await asyncio.wait_for(client.chat.completions.create(**body), self.timeout_s)
                    return self._result(r, resp)
                except openai.APIStatusError as e:
                    status, message = e.status_code, self._scrub(_error_message(e))
                    if status in (400, 413, 422) and _CONTEXT_RE.search(message):
                        return self._too_long(r, message)
                    if not (status in RETRYABLE_STATUS or status >= 500):
                        raise OpenAIEngineError(self._fatal(status, message)) from None
                    why = f"HTTP {status}: {message[:200]}"
                    retry_after = _retry_after(e.response.headers.get("retry-after"))
                except (asyncio.TimeoutError, openai.APITimeoutError):
                    why = f"no response within timeout_s={self.timeout_s:g}"
                except openai.APIConnectionError as e:
                    why = f"connection error ({type(e.__cause__).__name__ if e.__cause__ else 'unknown'})"
                finally:
                    self._in_flight -= 1
            if attempt == self.max_retries:
                raise OpenAIEngineError(
                    f"{self.base_url} (model {self.api_model!r}): request {r.id!r} failed after "
                    f"{attempt + 1} attempt(s): {why}") from None
            delay = self._backoff(attempt, retry_after)
            self.stats["retries"] += 1
            log.warning("openai engine: %s from %s for %r (attempt %d/%d), retrying in %.2fs",
                        why, self.base_url, r.id, attempt + 1, self.max_retries + 1, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        delay = min(self.backoff_max_s, self.backoff_base_s * 2**attempt) * random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max_s))
        return delay

    def _result(self, r: GenRequest, resp) -> GenResult:
        choices = sorted(resp.choices, key=lambda c: c.index)
        usage = resp.usage
        total = usage.completion_tokens if usage is not None else None
        samples = []
        for c in choices:
            text = c.message.content or ""
            token_ids = getattr(c, "token_ids", None)  # vLLM return_token_ids
            if token_ids is not None:
                n_tok = len(token_ids)
            elif len(choices) == 1 and total is not None:
                n_tok = total
            elif self.tokenizer is not None:  # n > 1 without per-choice counts: re-tokenize the text
                n_tok = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            else:  # share usage by text length
                chars = sum(len(x.message.content or "") for x in choices) or 1
                n_tok = round((total or 0) * len(text) / chars)
            samples.append((text, "length" if c.finish_reason == "length" else "stop", n_tok))
        prompt_tokens = usage.prompt_tokens if usage is not None else self.count_prompt_tokens(r)
        return make_result(r, prompt_tokens, samples)

    def _too_long(self, r: GenRequest, message: str) -> GenResult:
        self.stats["too_long"] += 1
        m = _PROMPT_TOKENS_RE.search(message)
        prompt_tokens = int(m.group(1) or m.group(2)) if m else self.count_prompt_tokens(r)
        log.warning("openai engine: %s rejected request %r as too long for the context (%s); reported as %r",
                    self.base_url, r.id, message[:200], PROMPT_TOO_LONG)
        n = r.sampling.n
        return GenResult(id=r.id, texts=[""] * n, finish_reasons=[PROMPT_TOO_LONG] * n,
                         prompt_tokens=prompt_tokens, completion_tokens=[0] * n)

    def _fatal(self, status: int, message: str) -> str:
        hint = ""
        if status in (401, 403):
            hint = f" (check the API key in ${self.api_key_env})"
        elif status == 404:
            hint = " (check engine.api_model against the server's /v1/models, and engine.base_url)"
        return f"{self.base_url} (model {self.api_model!r}) answered HTTP {status}{hint}: {message[:500]}"

    def _scrub(self, text: str) -> str:
        key = self._key.get()
        return text.replace(key, "***") if key and key != "EMPTY" else text

    def close(self) -> None:
        """Nothing to free: a client (and its connections) lives for one ``generate`` call."""


def estimate_tokens(request: GenRequest) -> int:
    """Conservative prompt-token estimate without a tokenizer: ceil(chars / 3) + chat-template overhead
    (8 per message + 64 for markers and a possible default system prompt)."""
    chars = sum(len(str(m.get("content") or "")) for m in request.messages) + len(request.assistant_prefix)
    return math.ceil(chars / 3) + 8 * len(request.messages) + 64


def _error_message(e) -> str:
    body = e.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return str(err.get("message") or err)
        return str(err)
    return str(body) if body is not None else e.message


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: use our own backoff


def _local_tokenizer(model_path: str):
    if not model_path or not os.path.isdir(model_path):
        return None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model_path)
    except Exception as e:  # no tokenizer files there: fall back to the server
        log.warning("openai engine: no tokenizer in %s (%s): counting prompt tokens via the server", model_path, e)
        return None
