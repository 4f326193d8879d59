"""A served judge (``selftaught serve``) as the reward of someone else's RL loop.

    from selftaught.reward import JudgeReward
    trainer = GRPOTrainer(model=..., reward_funcs=[JudgeReward("http://127.0.0.1:8000")], ...)   # TRL

    # veRL: custom_reward_function.path=<site-packages>/selftaught/reward.py custom_reward_function.name=compute_score
    # OpenRLHF: --remote_rm_url http://host:8000/get_reward (local, no token), or
    #           --remote_rm_url <site-packages>/selftaught/reward.py (it reads reward_func; sends the token)

Every adapter posts to ``/get_reward``; what the reward is (P(yes), the 1-5 expected score, or the verdict
against a reference answer) is the server's ``serve.reward``. The URL and token come from the arguments or
``$SELFTAUGHT_JUDGE_URL`` / ``$SELFTAUGHT_SERVE_TOKEN``. A 429 is retried after its ``Retry-After``; a
connection error a few times; anything else raises with the server's one-line error. Batches larger than the
server's ``serve.max_rows`` are sent in chunks. Items the judge could not score (a prompt too long for its
context) come back as None to TRL (NaN, left out of the mean) and as the scale's middle to veRL and OpenRLHF.
"""
from __future__ import annotations

import os
import time
from typing import Any, Optional, Sequence

import httpx

URL_ENV, TOKEN_ENV = "SELFTAUGHT_JUDGE_URL", "SELFTAUGHT_SERVE_TOKEN"


class JudgeError(RuntimeError):
    pass


class JudgeClient:
    """A small synchronous client of ``selftaught serve``."""

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None, timeout: float = 300.0,
                 retries: int = 5, max_rows: int = 256):
        url = url or os.environ.get(URL_ENV)
        if not url:
            raise JudgeError(f"no judge URL: pass url= or set ${URL_ENV} (e.g. http://127.0.0.1:8000)")
        self.url = url.rstrip("/").removesuffix("/get_reward")
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self.retries, self.max_rows = retries, max_rows  # max_rows: the server's serve.max_rows (larger: chunked)

    def post(self, path: str, body: Any) -> Any:
        for attempt in range(self.retries + 1):
            try:
                r = self._http.post(path, json=body)
            except httpx.TransportError as e:
                if attempt == self.retries:
                    raise JudgeError(f"{self.url}{path}: {type(e).__name__}: {e}") from None
                time.sleep(min(2 ** attempt, 10))
                continue
            if r.status_code == 429 and attempt < self.retries:
                time.sleep(float(r.headers.get("Retry-After", "1")))
                continue
            if r.status_code != 200:
                try:
                    msg = r.json().get("error", r.text)
                except ValueError:
                    msg = r.text
                raise JudgeError(f"{self.url}{path}: {r.status_code} {msg}")
            return r.json()
        raise JudgeError(f"{self.url}{path}: still overloaded after {self.retries} retries")

    def _chunks(self, n: int) -> list[slice]:
        return [slice(i, i + self.max_rows) for i in range(0, n, self.max_rows)]

    def compare(self, rows: list[dict]) -> list[dict]:
        return [r for c in self._chunks(len(rows)) for r in self.post("/v1/compare", rows[c])]

    def grade(self, rows: list[dict]) -> list[dict]:
        return [r for c in self._chunks(len(rows)) for r in self.post("/v1/grade", rows[c])]

    def score(self, prompts: Sequence[str], responses: Sequence[str],
              labels: Optional[Sequence[Optional[str]]] = None) -> dict:
        """``/get_reward``'s answer for any number of items (sent ``max_rows`` at a time): ``rewards`` (an
        unscored item holds the scale's middle), ``errors`` (item index -> why it is unscored), ``reward``."""
        prompts, responses = list(prompts), list(responses)
        labels = None if labels is None else list(labels)
        out: dict = {"rewards": [], "errors": {}}
        for c in self._chunks(len(prompts)):
            got = self.post("/get_reward", {"prompts": prompts[c], "responses": responses[c],
                                            "labels": None if labels is None else labels[c]})
            out["errors"].update({str(int(i) + c.start): why for i, why in (got.get("errors") or {}).items()})
            out["rewards"] += got["rewards"]
            out["reward"] = got.get("reward")
        return out

    def rewards(self, prompts: Sequence[str], responses: Sequence[str],
                labels: Optional[Sequence[Optional[str]]] = None) -> list[Optional[float]]:
        """The rewards, None where the judge could not score the item."""
        out = self.score(prompts, responses, labels)
        return [None if str(i) in out["errors"] else r for i, r in enumerate(out["rewards"])]

    def close(self) -> None:
        self._http.close()


def _text(x: Any) -> str:
    """A TRL prompt or completion as text: a string as is; a conversation -> its last user turn (prompt)
    or its assistant turns (completion)."""
    if isinstance(x, str):
        return x
    if isinstance(x, list) and x and isinstance(x[0], dict):
        users = [m["content"] for m in x if m.get("role") == "user"]
        if users and x[-1].get("role") != "assistant":
            return users[-1]
        return "".join(m["content"] for m in x if m.get("role") == "assistant")
    raise TypeError(f"a prompt or completion is a string or a list of chat messages, got {type(x).__name__}")


class JudgeReward:
    """A TRL ``reward_funcs`` entry: each completion scored by the served judge against its prompt (and, for
    ``serve.reward=reference``, against the dataset column ``reference_column``)."""

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None, reference_column: str = "reference",
                 timeout: float = 300.0):
        self.client = JudgeClient(url, token, timeout)
        self.reference_column = reference_column
        self.__name__ = "selftaught_judge"  # TRL names the reward's metrics after it

    def __call__(self, prompts: list, completions: list, **kwargs) -> list[Optional[float]]:
        labels = kwargs.get(self.reference_column)
        return self.client.rewards([_text(p) for p in prompts], [_text(c) for c in completions], labels)


_clients: dict[str, JudgeClient] = {}


def _client() -> JudgeClient:
    url = os.environ.get(URL_ENV, "")
    if url not in _clients:
        _clients[url] = JudgeClient(url or None)
    return _clients[url]


def compute_score(data_source: str, solution_str: str, ground_truth: Any = None,
                  extra_info: Optional[dict] = None, **kwargs) -> float:
    """veRL's custom reward function: the prompt is ``extra_info["question"]`` (or ``["prompt"]``, a string or
    chat messages), the reference ``ground_truth`` when it is a string. Unscorable: the scale's middle."""
    info = extra_info or {}
    prompt = info.get("question", info.get("prompt"))
    if prompt is None:
        raise JudgeError("compute_score needs the prompt: put it in the dataset's extra_info as 'question'")
    label = ground_truth if isinstance(ground_truth, str) else None
    return float(_client().score([_text(prompt)], [solution_str], [label])["rewards"][0])


def reward_func(queries: list[str], prompts: list[str], labels: Optional[list] = None, **kwargs) -> dict:
    """OpenRLHF's ``--remote_rm_url <this file>``: the same call, with the token (its HTTP client sends none).
    Returns its dict: rewards, scores (the same), extra_logs (which items the judge could not score: they hold the
    scale's middle)."""
    import torch

    from selftaught.serve.requests import response_of

    # A query that does not start with its prompt (a decoding that does not round-trip) is sent whole.
    responses = [response_of(q, p) or q for q, p in zip(queries, prompts)]
    labels = [x if isinstance(x, str) else None for x in labels] if labels is not None else None
    got = _client().score(prompts, responses, labels)
    rewards = torch.tensor(got["rewards"], dtype=torch.float32)
    unscored = torch.tensor([float(str(i) in got["errors"]) for i in range(len(queries))])
    return {"rewards": rewards, "scores": rewards, "extra_logs": {"judge_unscored": unscored}}
