"""``selftaught serve``: every endpoint over real HTTP against a live server on a real engine.

The fast tests serve the tiny random Llama on the transformers engine (one engine shared by several
services in this process, each on its own port with its own limits); the slow ones serve the embedded
SmolLM2 on vLLM, restart a killed ``selftaught serve`` process, and train one TRL GRPO step whose reward
calls a live server.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import httpx
import pytest
import uvicorn

from selftaught.overrides import compose
from selftaught.serve.app import build_app
from selftaught.serve.judge import ServedJudge
from selftaught.stages import verdicts

GOOD = {"instruction": "Name the capital of France.", "response_a": "The capital of France is Paris.",
        "response_b": "Bananas are rich in potassium."}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Live:
    """A uvicorn server in a thread (its lifespan starts the batcher), stopped at exit."""

    def __init__(self, app):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "Live":
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def judge_on(engine, model_path: str, *overrides: str) -> tuple[ServedJudge, object]:
    """A served judge on a shared engine, configured as ``selftaught serve <overrides>`` would be."""
    cfg = compose([f"model.path={model_path}", "judge_file.constrained=true", "model.max_model_len=1024", *overrides])
    return ServedJudge.on(engine, cfg, model_path), cfg


@pytest.fixture(scope="module")
def service(tiny_engine, tiny_model_path):
    """The tiny judge deciding by log-odds (every pair decided), its service with a token."""
    judge, cfg = judge_on(tiny_engine, tiny_model_path, "judge_file.decide=logprob", "serve.reward=grade")
    with Live(build_app(judge, cfg.serve, "s3cret", close_judge=False)) as live:
        live.judge = judge
        yield live


def client(live, token: str | None = "s3cret") -> httpx.Client:
    return httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {token}"} if token else {}, timeout=60)


def test_compare_decides_as_selftaught_judge_does(service):
    with client(service) as c:
        one = c.post("/v1/compare", json={**GOOD, "id": "q1"})
        many = c.post("/v1/compare", json=[GOOD, {**GOOD, "response_a": GOOD["response_b"], "response_b": GOOD["response_a"]}])
    assert one.status_code == 200 and many.status_code == 200
    got = one.json()
    assert got["id"] == "q1" and got["winner"] in ("response_a", "response_b")
    assert got["decided_by"] in ("agreement", "logprob") and got["verdict_AB"] in ("A", "B")
    # The batch command's own function on the same row, same engine: the same decision and margins.
    direct = verdicts.process([{**GOOD, "id": "x", "source": None}], service.judge.engine, service.judge.ctx,
                              service.judge.judging)[0]
    assert (got["winner"], got["margin_AB"], got["margin_BA"]) == (direct["winner"], direct["margin_AB"], direct["margin_BA"])
    both = many.json()
    assert len(both) == 2 and both[0]["winner"] == got["winner"]
    # The swapped pair: the same responses, so the other side wins.
    assert both[1]["winner"] == {"response_a": "response_b", "response_b": "response_a"}[got["winner"]]


def test_grade_and_reward(service):
    with client(service) as c:
        g = c.post("/v1/grade", json={"instruction": GOOD["instruction"], "response": GOOD["response_a"],
                                      "rubric": {"criteria": "Is it correct?", **{f"score{i}_description": f"level {i}"
                                                                                   for i in range(1, 6)}}})
        prompt = "<|im_start|>user\nName the capital of France.<|im_end|>\n<|im_start|>assistant\n"
        r = c.post("/get_reward", json={"query": [prompt + "Paris.", prompt + "Lyon."], "prompts": [prompt, prompt],
                                        "labels": ["Paris", "Paris"]})
    assert g.status_code == 200, g.text
    assert g.json()["score"] in (1, 2, 3, 4, 5) and 1 <= g.json()["expected_score"] <= 5
    body = r.json()
    assert r.status_code == 200 and body["reward"] == "grade" and len(body["rewards"]) == 2
    assert all(1 <= x <= 5 for x in body["rewards"]) and body["errors"] == {}


def test_bad_input_is_one_line_naming_the_field(service):
    with client(service) as c:
        cases = {
            "malformed": c.post("/v1/compare", content=b"{not json", headers={"content-type": "application/json"}),
            "missing": c.post("/v1/compare", json={"instruction": "x", "response_a": "y"}),
            "in a list": c.post("/v1/compare", json=[GOOD, {**GOOD, "response_b": 3}]),
            "same": c.post("/v1/compare", json={**GOOD, "response_b": GOOD["response_a"]}),
            "blank": c.post("/v1/grade", json={"instruction": " ", "response": "y"}),
            "lengths": c.post("/get_reward", json={"query": ["a b"], "prompts": ["a", "c"]}),
            "empty": c.post("/v1/compare", json=[]),
        }
    want = {"malformed": "body: not JSON", "missing": "response_b: Field required",
            "in a list": "[1].response_b: Input should be a valid string", "same": "the same text",
            "blank": "instruction: must not be empty", "lengths": "query has 1 items and prompts 2",
            "empty": "empty list"}
    for name, r in cases.items():
        assert r.status_code == 400, (name, r.text)
        err = r.json()["error"]
        assert want[name] in err and "\n" not in err, (name, err)


def test_reward_items_the_judge_cannot_score_get_the_middle_and_a_reason(service):
    """OpenRLHF's queries: special tokens after the response are cut; a query that does not start with its prompt
    is that item's error (not the batch's); a non-string label is no reference."""
    from selftaught.serve.requests import response_of

    assert response_of("P: hi<|im_end|>\n<|endoftext|></s> ", "P: ") == "hi"
    assert response_of("Q: hi", "P: ") is None
    with client(service) as c:
        r = c.post("/get_reward", json={"query": ["P: Paris.<|im_end|>", "x y", "P:  "], "prompts": ["P: ", "a", "P: "],
                                        "labels": [3, None, None]})
    body = r.json()
    assert r.status_code == 200 and len(body["rewards"]) == 3
    assert body["errors"] == {"1": "query does not start with its prompt", "2": "empty prompt or response"}
    assert body["rewards"][1:] == [3.0, 3.0] and 1 <= body["rewards"][0] <= 5  # grade: unscored get the middle


def test_client_chunks_what_the_server_would_refuse(service):
    from selftaught.reward import JudgeClient

    before = httpx.get(f"{service.url}/health").json()["rows"]
    jc = JudgeClient(service.url, token="s3cret", max_rows=2)
    out = jc.rewards(["Capital of France?"] * 5, ["Paris.", "Lyon.", "Nice.", "Paris", "Rome."])
    assert len(out) == 5 and all(1 <= x <= 5 for x in out)
    assert httpx.get(f"{service.url}/health").json()["rows"] - before == 5
    assert len(jc.compare([GOOD] * 3)) == 3


def test_limits_and_auth(service):
    with client(service) as c:
        big = c.post("/v1/compare", content=b"x" * (1_048_576 + 1), headers={"content-type": "application/json"})
        many = c.post("/v1/compare", json=[GOOD] * 257)
        metrics = c.get("/metrics")
    assert big.status_code == 413 and "max_body_bytes" in big.json()["error"]
    assert many.status_code == 413 and "max_rows=256" in many.json()["error"]
    with client(service, None) as c:
        assert c.post("/v1/compare", json=GOOD).status_code == 401
        assert c.get("/metrics").status_code == 401
        health = c.get("/health")  # load balancers probe it without the token
    with client(service, "wrong") as c:
        assert c.post("/v1/compare", json=GOOD).status_code == 401
    lower = httpx.post(f"{service.url}/v1/compare", json=GOOD, headers={"Authorization": "bearer s3cret"}, timeout=60)
    assert lower.status_code == 200  # the scheme is case-insensitive (RFC 7235), the token is not
    assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["decide"] == "logprob"
    text = metrics.text
    assert 'selftaught_requests_total{code="200",endpoint="compare"}' in text
    assert 'selftaught_failures_total{reason="bad_request"}' in text and "selftaught_queue_rows" in text
    assert 'selftaught_rows_total{kind="compare"}' in text and "s3cret" not in text


def test_overload_answers_429_and_loses_nothing(tiny_engine, tiny_model_path):
    """A queue of 4 rows and 40 concurrent 4-row requests: the ones that do not fit get 429 with Retry-After,
    every other gets its own rows' results (no lost or swapped answers), and the service goes on serving."""
    judge, cfg = judge_on(tiny_engine, tiny_model_path, "judge_file.decide=logprob", "serve.max_queue=4",
                          "serve.max_rows=4", "serve.max_batch=4")
    with Live(build_app(judge, cfg.serve, None, close_judge=False)) as live:
        async def one(c: httpx.AsyncClient, i: int):
            rows = [{**GOOD, "id": f"{i}-{j}"} for j in range(4)]
            return i, await c.post("/v1/compare", json=rows)

        async def burst():
            async with httpx.AsyncClient(base_url=live.url, timeout=120) as c:
                return await asyncio.gather(*(one(c, i) for i in range(40)))

        got = asyncio.run(burst())
        codes = [r.status_code for _, r in got]
        assert set(codes) <= {200, 429} and 429 in codes and 200 in codes, codes
        for i, r in got:
            if r.status_code == 200:
                assert [x["id"] for x in r.json()] == [f"{i}-{j}" for j in range(4)]
            else:
                assert int(r.headers["Retry-After"]) >= 1 and "queue full" in r.json()["error"]
        assert httpx.post(f"{live.url}/v1/compare", json=GOOD, timeout=60).status_code == 200


def test_timeout_answers_504_and_keeps_serving(tiny_engine, tiny_model_path):
    judge, cfg = judge_on(tiny_engine, tiny_model_path, "serve.timeout_s=0.001", "serve.max_wait_ms=50")
    with Live(build_app(judge, cfg.serve, None, close_judge=False)) as live:
        r = httpx.post(f"{live.url}/v1/compare", json=GOOD, timeout=60)
        assert r.status_code == 504 and "serve.timeout_s=0.001" in r.json()["error"]
        assert httpx.get(f"{live.url}/health").json()["status"] == "ok"
        assert 'selftaught_failures_total{reason="timeout"} 1.0' in httpx.get(f"{live.url}/metrics").text


def test_verify_and_reference_rewards(tiny_engine, tiny_model_path):
    prompt, ok, bad = "Name the capital of France.", "Paris is the capital of France.", "I like trains."
    judge, cfg = judge_on(tiny_engine, tiny_model_path, "judge_file.decide=verify")
    assert judge.reward == "verify"
    with Live(build_app(judge, cfg.serve, None, close_judge=False)) as live:
        r = httpx.post(f"{live.url}/get_reward", json={"prompts": [prompt, prompt], "responses": [ok, bad]}).json()
    assert r["reward"] == "verify" and all(0 < x < 1 for x in r["rewards"])
    direct = judge.verify([{"id": "a", "instruction": prompt, "response": ok}])[0]
    assert r["rewards"][0] == direct["p_yes"]
    judge, cfg = judge_on(tiny_engine, tiny_model_path, "judge_file.decide=logprob", "serve.reward=reference")
    with Live(build_app(judge, cfg.serve, None, close_judge=False)) as live:
        r = httpx.post(f"{live.url}/get_reward", json={"prompts": [prompt] * 2, "responses": [ok, bad],
                                                       "labels": [ok, "Paris."]}).json()
        missing = httpx.post(f"{live.url}/get_reward", json={"prompts": [prompt], "responses": [ok]})
    assert r["rewards"][0] == 0.5 and r["rewards"][1] in (0.0, 1.0)  # the reference itself ties, without the engine
    assert missing.status_code == 400 and "labels[0]" in missing.json()["error"]


def test_refuses_to_bind_publicly_without_a_token(tmp_path):
    """Before any engine starts: exit 2 and one line."""
    env = {k: v for k, v in os.environ.items() if k != "SELFTAUGHT_SERVE_TOKEN"}
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "selftaught.cli", "serve", "serve.host=0.0.0.0"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "serve.host: 0.0.0.0 is reachable from other machines" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    p = subprocess.run([sys.executable, "-m", "selftaught.cli", "serve", f"serve.token_file={tmp_path}/none"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "serve.token_file" in p.stderr and time.time() - t0 < 100


def _start(model: str, port: int, log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "selftaught.cli", "serve", f"model.path={model}", "engine=hf",
                             "engine.threads=1", "model.max_model_len=1024", "judge_file.constrained=true",
                             "judge_file.decide=logprob", f"serve.port={port}"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _wait_healthy(url: str, proc: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        assert proc.poll() is None, "the server exited"
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError("not healthy in time")


@pytest.mark.slow
def test_killed_server_restarts_and_serves(tiny_model_path, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "serve.log", "w") as log:
        first = _start(tiny_model_path, port, log)
        try:
            _wait_healthy(url, first)
            assert httpx.post(f"{url}/v1/compare", json=GOOD, timeout=60).status_code == 200
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
        second = _start(tiny_model_path, port, log)
        try:
            _wait_healthy(url, second)
            r = httpx.post(f"{url}/v1/compare", json=GOOD, timeout=60)
            assert r.status_code == 200 and r.json()["winner"] in ("response_a", "response_b")
        finally:
            second.send_signal(signal.SIGINT)  # a clean stop: uvicorn's shutdown closes the engine
            assert second.wait(timeout=60) == 0
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


@pytest.mark.slow
def test_embedded_judge_on_vllm_batches_concurrent_requests(smollm2_path):
    """The shipped judge on vLLM: 16 concurrent clients, fewer engine calls than requests, every answer its own."""
    from selftaught.engines import make_engine

    engine = make_engine(compose([]).engine, smollm2_path, 1024)
    try:
        judge, cfg = judge_on(engine, smollm2_path, "judge_file.decide=logprob", "serve.max_wait_ms=50")
        with Live(build_app(judge, cfg.serve, None, close_judge=False)) as live:
            async def burst():
                async with httpx.AsyncClient(base_url=live.url, timeout=300) as c:
                    return await asyncio.gather(*(c.post("/v1/compare", json={**GOOD, "id": i}) for i in range(16)))

            got = asyncio.run(burst())
            health = httpx.get(f"{live.url}/health").json()
        assert [r.status_code for r in got] == [200] * 16 and [r.json()["id"] for r in got] == list(range(16))
        assert len({json.dumps(r.json()["winner"]) for r in got}) == 1  # one pair, greedy: one decision
        assert health["rows"] == 16 and health["batches"] < 16
    finally:
        engine.close()


def test_trl_grpo_step_with_the_served_judge_as_reward(service, tiny_model_path, tmp_path):
    """TRL's GRPOTrainer, one step on the tiny policy, its reward from the live server (reward=grade)."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from selftaught.reward import JudgeReward

    reward = JudgeReward(service.url, token="s3cret")
    seen: list[float] = []

    def spy(prompts, completions, **kw):
        out = reward(prompts, completions, **kw)
        seen.extend(out)
        return out

    spy.__name__ = "judge"
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": "Name the capital of France."}]}] * 4)
    args = GRPOConfig(output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=4, num_generations=4, max_steps=1,
                      max_completion_length=8, report_to=[], use_cpu=True, logging_steps=1, save_strategy="no")
    trainer = GRPOTrainer(model=tiny_model_path, reward_funcs=[spy], args=args, train_dataset=data)
    trainer.train()
    assert len(seen) == 4 and all(x is not None and 1 <= x <= 5 for x in seen)
    logged = [h for h in trainer.state.log_history if "reward" in h]
    assert logged and logged[0]["rewards/judge/mean"] == pytest.approx(sum(seen) / 4, rel=1e-4)


@pytest.mark.slow
def test_ray_serve_replicas_answer_as_the_single_process(tiny_model_path, tiny_engine):
    """serve.replicas=2: two replicas behind Ray Serve's proxy (a local Ray), the same app in each: auth,
    decisions and errors as the single process gives them."""
    import ray
    from ray import serve

    from selftaught.serve.replicas import serve_on_ray

    port = free_port()
    args = [f"model.path={tiny_model_path}", "engine=hf", "engine.threads=1", "model.max_model_len=1024",
            "judge_file.constrained=true", "judge_file.decide=logprob"]
    cfg = compose([*args, "serve.replicas=2", f"serve.port={port}", "ray.num_cpus=2", "ray.num_cpus_per_actor=1"])
    started = not ray.is_initialized()
    try:
        serve_on_ray(cfg, tiny_model_path, "tok", blocking=False)
        url, auth = f"http://127.0.0.1:{port}", {"Authorization": "Bearer tok"}

        async def burst():
            async with httpx.AsyncClient(base_url=url, headers=auth, timeout=300) as c:
                return await asyncio.gather(*(c.post("/v1/compare", json={**GOOD, "id": i}) for i in range(12)))

        got = asyncio.run(burst())
        assert [r.status_code for r in got] == [200] * 12 and [r.json()["id"] for r in got] == list(range(12))
        single = ServedJudge.on(tiny_engine, compose(args), tiny_model_path).compare([{**GOOD, "id": "x"}])[0]
        # Batched with others in a replica (padding), a margin may move in its last digits, never the decision.
        assert {r.json()["winner"] for r in got} == {single["winner"]}
        assert all(r.json()["margin_AB"] == pytest.approx(single["margin_AB"], abs=1e-3) for r in got)
        assert httpx.post(f"{url}/v1/compare", json=GOOD).status_code == 401
        bad = httpx.post(f"{url}/v1/compare", json={"instruction": "x"}, headers=auth)
        assert bad.status_code == 400 and "response_a: Field required" in bad.json()["error"]
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
    finally:
        serve.shutdown()
        if started:
            ray.shutdown()


def test_verl_and_openrlhf_adapters_call_the_live_server(service, monkeypatch):
    from selftaught import reward

    monkeypatch.setenv("SELFTAUGHT_JUDGE_URL", service.url)
    monkeypatch.setenv("SELFTAUGHT_SERVE_TOKEN", "s3cret")
    reward._clients.clear()
    s = reward.compute_score("demo", "Paris.", "Paris", {"question": [{"role": "user", "content": "Capital of France?"}]})
    assert 1 <= s <= 5  # this service's reward is the expected 1-5 score
    prompt = "<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n"
    out = reward.reward_func([prompt + "Paris.", prompt + "Lyon."], [prompt, prompt], ["Paris", "Paris"])
    assert out["rewards"].shape == (2,) and out["extra_logs"]["judge_unscored"].tolist() == [0.0, 0.0]
    with pytest.raises(reward.JudgeError, match="needs the prompt"):
        reward.compute_score("demo", "Paris.", "Paris", {})
    monkeypatch.setenv("SELFTAUGHT_SERVE_TOKEN", "wrong")
    reward._clients.clear()
    with pytest.raises(reward.JudgeError, match="401 missing or wrong bearer token"):
        reward.compute_score("demo", "Paris.", None, {"question": "Capital of France?"})
    reward._clients.clear()
