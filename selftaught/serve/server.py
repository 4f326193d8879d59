"""``selftaught serve``: check the bind and the token, load the judge, serve it (uvicorn, one process).

Everything that can refuse to start refuses before the engine loads: a non-local address without a bearer
token, an empty token, a token file that does not exist, a model folder that is not one.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from selftaught import model_card
from selftaught.config import ConfigError, RunConfig, ServeConfig, abspath


def read_token(cfg: ServeConfig) -> Optional[str]:
    """The bearer token: ``$<serve.token_env>``, else the first line of ``serve.token_file``, else None."""
    token = os.environ.get(cfg.token_env)
    where = f"${cfg.token_env}"
    if token is None and cfg.token_file:
        path = Path(abspath(cfg.token_file))
        if not path.is_file():
            raise ConfigError(f"serve.token_file: {path} does not exist")
        lines = path.read_text(encoding="utf-8").splitlines()
        token, where = (lines[0] if lines else ""), f"serve.token_file ({path})"
    if token is not None and not token.strip():
        raise ConfigError(f"serve.token_env: {where} is set but empty; set a token or unset it")
    return token.strip() if token is not None else None


def check_bind(cfg: ServeConfig, token: Optional[str]) -> None:
    if not cfg.local and token is None:
        raise ConfigError(f"serve.host: {cfg.host} is reachable from other machines, and no bearer token is set; "
                          f"set ${cfg.token_env} (or serve.token_file), or bind serve.host=127.0.0.1")


def serve(cfg: RunConfig) -> None:
    from selftaught.models import resolve_model

    s = cfg.serve
    token = read_token(s)
    check_bind(s, token)
    model_path = resolve_model(cfg.model)
    if s.replicas:
        from selftaught.serve.replicas import serve_on_ray

        return serve_on_ray(cfg, model_path, token)
    import uvicorn

    from selftaught.serve.app import build_app
    from selftaught.serve.judge import ServedJudge

    spec = model_card.read_spec(Path(model_path)) if Path(model_path).is_dir() else None
    if spec and spec["decide"] != cfg.judge_file.decide:
        print(f"selftaught serve: note: {cfg.model.path} was trained as judge.mode={spec['judge_mode']}; its card calls "
              f"it with judge_file.decide={spec['decide']} (this service: {cfg.judge_file.decide})", flush=True)
    print(f"selftaught serve: loading {cfg.model.path} ({cfg.engine.backend}) ...", flush=True)
    judge = ServedJudge.load(cfg, model_path)
    app = build_app(judge, s, token)
    print(f"selftaught serve: {cfg.model.path} on http://{s.host}:{s.port}  decide={cfg.judge_file.decide} "
          f"reward={judge.reward} constrained={judge.judging.constrained} "
          f"token {'required' if token else 'not required (local only)'}; Ctrl-C stops", flush=True)
    uvicorn.run(app, host=s.host, port=s.port, log_level="info", access_log=False)
