"""Submit a run to a Ray cluster as a Ray job: what ``ray job submit`` does, with the right runtime_env.

    python -m selftaught.distributed.submit --address http://head:8265 --storage /mnt/shared/runs -- rounds=2 cluster=gpu_node
    python -m selftaught.distributed.submit --address http://head:8265 --status  <job id>
    python -m selftaught.distributed.submit --address http://head:8265 --logs    <job id>
    python -m selftaught.distributed.submit --address http://head:8265 --stop    <job id>

The overrides are composed and checked here first (``selftaught.compose``), so a typo or a bad
value fails in one line, exit 2, before the cluster is contacted. The job runs
``python -m selftaught.cli run <overrides> output_dir=<storage> ray.address=auto`` on
the cluster, in a copy of this project (``runtime_env.working_dir``, uploaded through the dashboard,
which refuses bodies over 100 MiB: "request entity too large"; hence ``EXCLUDES``: the virtualenv,
git history, run outputs, caches and model/data files never travel). Everything a run writes goes
under the absolute ``--storage`` root: a relative path would resolve inside the job's temporary
copy of the project (under Ray's session dir) and disappear with it; on a multi-node cluster the
root must be a filesystem every node mounts (workers write models there). From an installed
package (a wheel, no checkout around it) only the package itself travels (``py_modules``).

Python API (``address`` = the dashboard URL, ``http://<head>:8265``)::

    job_id = submit_run(address, ["rounds=2"], storage="/mnt/shared/runs")
    status = wait_for(address, job_id, timeout_s=3600)     # SUCCEEDED | FAILED | STOPPED
    print(job_logs(address, job_id))

Token auth (Ray >= 2.5x): a cluster started where ``~/.ray/auth_token`` exists (or with
``RAY_AUTH_MODE=token``) rejects unauthenticated job requests (401). Ray's client only sends the
token when *this* process has ``RAY_AUTH_MODE=token``; we send ``Authorization: Bearer <token>``
ourselves whenever a token is found (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``,
``~/.ray/auth_token``) and ``RAY_AUTH_MODE`` is not ``disabled``; ``auth_token=`` overrides.
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Optional

from selftaught.config import ConfigError

log = logging.getLogger("selftaught.submit")

PACKAGE_DIR = Path(__file__).resolve().parents[1]
PROJECT_ROOT = PACKAGE_DIR.parent
# A checkout has pyproject.toml beside the package; an installed copy sits in site-packages, which
# must never be uploaded whole.
IN_CHECKOUT = (PROJECT_ROOT / "pyproject.toml").is_file()
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")

# gitignore-style patterns (relative to the project root; a leading "/" anchors at the root). Ray
# also honours .gitignore / .rayignore, but not with RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1 nor when
# .gitignore is missing from a copy, so the list stands on its own.
EXCLUDES = [
    # VCS, environments, tool caches
    ".git", ".venv", "venv", ".env", "__pycache__", "*.pyc", "*.egg-info", ".pytest_cache", ".ruff_cache",
    ".mypy_cache", ".ipynb_checkpoints", ".cache", ".gl",
    # run outputs (default output_dir, Hydra, W&B)
    "/runs", "/outputs", "/multirun", "/hydra-multirun", "wandb",
    # models and data files: read from shared storage on the cluster, never uploaded
    "/models", "/checkpoints", "*.parquet", "*.arrow", "*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt",
    "*.gguf", "*.onnx", "*.npz", "*.tar", "*.tar.gz", "*.zip",
    # Docker build context files
    "/docker",
]


# -- building the job -----------------------------------------------------------------------------

def _override(overrides: list[str], key: str) -> Optional[str]:
    """The value of ``key=...`` (also ``+key=`` / ``++key=``) among Hydra overrides, or None."""
    for o in overrides:
        k, sep, v = o.lstrip("+").partition("=")
        if sep and k == key:
            return v
    return None


def storage_root(storage: str) -> str:
    """``storage`` if it is an absolute POSIX path (normalized); ``ConfigError`` otherwise."""
    s = str(storage)
    if not s.startswith("/"):
        hint = " ('~' would expand on the cluster's nodes, not here)" if s.startswith("~") else ""
        raise ConfigError(
            f"storage: must be an absolute path on a filesystem every Ray node mounts, got {s!r}{hint}. "
            "A relative path resolves inside the job's temporary working directory (a copy of the "
            "project under Ray's session dir) and is lost with it; use e.g. --storage /mnt/shared/selftaught")
    return os.path.normpath(s)


def resolve_storage(overrides: list[str], storage: Optional[str]) -> str:
    """The absolute output root of the job: ``storage``, else an absolute ``output_dir=`` override."""
    given = _override(overrides, "output_dir")
    if storage is None:
        if given is None:
            raise ConfigError("storage: required (--storage /abs/root, or an absolute output_dir=... override)")
        return storage_root(given)
    root = storage_root(storage)
    if given is not None and os.path.normpath(given) != root:
        raise ConfigError(f"output_dir: the override {given!r} conflicts with storage {root!r}; pass only one")
    return root


def job_overrides(overrides: list[str], storage: str) -> list[str]:
    """The overrides the job runs with: the user's, plus the storage root and ray.address=auto
    (address=None would start a second, local Ray) unless the user set them."""
    out = list(overrides)
    if _override(overrides, "output_dir") is None:
        out.append(f"output_dir={storage}")
    if _override(overrides, "ray.address") is None:
        out.append("ray.address=auto")
    return out


def build_entrypoint(overrides: list[str], storage: str, python: str = "python") -> str:
    """The shell command the job runs on the cluster (its driver joins the cluster: ray.address=auto)."""
    return shlex.join([python, "-m", "selftaught.cli", "run", *job_overrides(overrides, storage)])


def check_overrides(overrides: list[str], storage: str) -> None:
    """Compose and check the job's config here, as the job will (``ConfigError`` naming the key).
    Files only the cluster has (a DeepSpeed JSON at an absolute path) are left to the job."""
    from selftaught.overrides import compose

    compose(job_overrides(overrides, storage), local_files=False)


def build_runtime_env(storage: str, env: Optional[dict[str, str]] = None, extra: Optional[dict[str, Any]] = None,
                      working_dir: Optional[str | os.PathLike] = None) -> dict[str, Any]:
    """runtime_env of the job: the project as working_dir minus ``EXCLUDES`` (from an installed
    package: the package as ``py_modules``), and the storage env vars.

    ``extra`` is merged last: its ``env_vars`` update ours, its ``excludes`` are added to ours,
    any other key (``pip``, ``working_dir``...) is set as given. With ``image_uri`` (the job runs
    in that container image, code included) only ``env_vars`` and ``config`` are kept: Ray refuses
    any other runtime_env field next to it.
    """
    root = storage_root(storage)
    excludes = list(EXCLUDES)
    env_vars = {"SELFTAUGHT_RUNS": root, "SELFTAUGHT_STORAGE": root, "PYTHONUNBUFFERED": "1",
                "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    if working_dir is None and not IN_CHECKOUT:
        runtime_env: dict[str, Any] = {"py_modules": [str(PACKAGE_DIR)], "excludes": excludes, "env_vars": env_vars}
    else:
        wd = Path(working_dir or PROJECT_ROOT).resolve()
        try:  # storage inside the project (a local test cluster): never upload earlier runs
            excludes.append("/" + Path(root).resolve().relative_to(wd).as_posix())
        except ValueError:
            pass
        runtime_env = {"working_dir": str(wd), "excludes": excludes, "env_vars": env_vars}
    for k, v in (extra or {}).items():
        if k == "env_vars":
            runtime_env["env_vars"].update(v)
        elif k == "excludes":
            runtime_env["excludes"] += [x for x in v if x not in runtime_env["excludes"]]
        else:
            runtime_env[k] = v
    if runtime_env.get("image_uri"):
        # Ray allows only env_vars/config next to image_uri: the code is the image's (/app, docker/).
        runtime_env = {k: v for k, v in runtime_env.items() if k in ("image_uri", "env_vars", "config")}
    if any(not isinstance(v, str) for v in runtime_env["env_vars"].values()):
        raise ConfigError("runtime_env.env_vars: values must be strings")
    return runtime_env


# -- talking to the cluster -----------------------------------------------------------------------

def find_auth_token() -> Optional[str]:
    """The Ray auth token this machine would use (env, token file, ~/.ray/auth_token), or None."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return None
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    for p in (os.environ.get("RAY_AUTH_TOKEN_PATH"), str(Path.home() / ".ray" / "auth_token")):
        if p and os.path.isfile(p):
            tok = Path(p).read_text().strip()
            if tok:
                return tok
    return None


def client(address: Optional[str] = None, auth_token: Optional[str] = None):
    """A ``JobSubmissionClient`` for the dashboard at ``address``; ``auth_token=""`` sends no token."""
    from ray.job_submission import JobSubmissionClient

    token = find_auth_token() if auth_token is None else auth_token
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return JobSubmissionClient(address or default_address(), headers=headers)


def default_address() -> str:
    for var in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        v = os.environ.get(var, "")
        if v.startswith(("http://", "https://")):
            return v
    return DEFAULT_ADDRESS


def submit_run(address: Optional[str], overrides: list[str], storage: Optional[str],
               runtime_env_extra: Optional[dict[str, Any]] = None, wait: bool = False,
               timeout_s: Optional[float] = None, *, env: Optional[dict[str, str]] = None,
               python: str = "python", submission_id: Optional[str] = None,
               auth_token: Optional[str] = None) -> str:
    """Submit ``selftaught run <overrides>`` as a Ray job; returns the job (submission) id.

    ``wait=True`` blocks until the job ends (``timeout_s``) and raises ``RuntimeError`` (with the
    tail of its logs) if it did not succeed. ``python`` is the interpreter on the cluster's nodes.
    """
    overrides = list(overrides)
    root = resolve_storage(overrides, storage)
    check_overrides(overrides, root)  # before the cluster is contacted
    runtime_env = build_runtime_env(root, env=env, extra=runtime_env_extra)
    name = _override(overrides, "name") or "demo"
    c = client(address, auth_token)
    job_id = c.submit_job(
        entrypoint=build_entrypoint(overrides, root, python),
        runtime_env=runtime_env,
        submission_id=submission_id,
        metadata={"selftaught.storage": root, "selftaught.run_dir": f"{root}/{name}"},
    )
    log.info("submitted %s: artifacts in %s/%s", job_id, root, name)
    if wait:
        status = wait_for(address, job_id, timeout_s, auth_token=auth_token)
        if status != "SUCCEEDED":
            tail = "\n".join(job_logs(address, job_id, auth_token=auth_token).splitlines()[-40:])
            raise RuntimeError(f"job {job_id} ended {status}; last log lines:\n{tail}")
    return job_id


def job_status(address: Optional[str], job_id: str, auth_token: Optional[str] = None) -> str:
    return str(client(address, auth_token).get_job_status(job_id).value)


def wait_for(address: Optional[str], job_id: str, timeout_s: Optional[float] = None, poll_s: float = 2.0,
             auth_token: Optional[str] = None) -> str:
    """Poll until the job is SUCCEEDED, FAILED or STOPPED and return that; ``TimeoutError`` after ``timeout_s``."""
    c = client(address, auth_token)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        status = str(c.get_job_status(job_id).value)
        if status in TERMINAL:
            return status
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"job {job_id} still {status} after {timeout_s:g} s")
        time.sleep(poll_s)


def job_logs(address: Optional[str], job_id: str, auth_token: Optional[str] = None) -> str:
    """The job's driver output so far (stdout and stderr of the entrypoint)."""
    return client(address, auth_token).get_job_logs(job_id)


def stop_job(address: Optional[str], job_id: str, auth_token: Optional[str] = None) -> bool:
    """Ask Ray to stop the job (SIGTERM, then SIGKILL); True if it was running."""
    return bool(client(address, auth_token).stop_job(job_id))


# -- CLI ------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="selftaught submit",
        description="Submit `selftaught run <overrides>` to a Ray cluster as a Ray job, or inspect one.",
        epilog="example: %(prog)s --address http://head:8265 --storage /mnt/shared/runs -- cluster=gpu_node rounds=5",
    )
    p.add_argument("--address", default=None,
                   help=f"Ray dashboard URL (default: $RAY_API_SERVER_ADDRESS, an http $RAY_ADDRESS, or {DEFAULT_ADDRESS})")
    p.add_argument("--storage", default=os.environ.get("SELFTAUGHT_STORAGE"),
                   help="absolute output root on storage every node mounts (default: $SELFTAUGHT_STORAGE)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra env var for the job (repeatable)")
    p.add_argument("--python", default="python", help="the interpreter on the cluster's nodes (default: python)")
    p.add_argument("--submission-id", default=None, help="job id to use (default: Ray assigns one)")
    p.add_argument("--wait", action="store_true", help="wait until the job ends; exit 1 unless it SUCCEEDED")
    p.add_argument("--timeout", type=float, default=None, help="seconds to --wait before giving up (exit 124)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--status", metavar="JOB_ID", help="print a job's status and exit")
    g.add_argument("--logs", metavar="JOB_ID", help="print a job's logs and exit")
    g.add_argument("--stop", metavar="JOB_ID", help="stop a job")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of `selftaught run` (after --)")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    """CLI entry (``selftaught submit`` wires here); returns the exit status."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    address = args.address or default_address()
    try:
        if args.status:
            print(job_status(address, args.status))
            return 0
        if args.logs:
            print(job_logs(address, args.logs), end="")
            return 0
        if args.stop:
            print(f"{args.stop}: {'stop requested' if stop_job(address, args.stop) else 'not running'}")
            return 0
        env = {}
        for kv in args.env:
            k, sep, v = kv.partition("=")
            if not sep or not k:
                raise ConfigError(f"--env: expected KEY=VALUE, got {kv!r}")
            env[k] = v
        root = resolve_storage(args.overrides, args.storage)
        job_id = submit_run(address, args.overrides, root, env=env, python=args.python,
                            submission_id=args.submission_id)
    except ConfigError as e:
        print(f"selftaught submit: config error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # unreachable dashboard, 401/403 (ray.exceptions.AuthenticationError), upload refused
        hint = ("\n(token auth: set RAY_AUTH_TOKEN or put the cluster's token in ~/.ray/auth_token)"
                if type(e).__name__ == "AuthenticationError" else "")
        print(f"selftaught submit: {type(e).__name__}: {e}{hint}", file=sys.stderr)
        return 1
    run_dir = f"{root}/{_override(args.overrides, 'name') or 'demo'}"
    print(f"job id: {job_id}")
    print(f"artifacts: {run_dir}  (summary.json, round_<k>/model/)")
    print(f"follow: ray job logs --address {address} -f {job_id}")
    if not args.wait:
        print(f"status: {job_status(address, job_id)}")
        return 0
    try:
        status = wait_for(address, job_id, args.timeout)
    except TimeoutError as e:
        print(f"selftaught submit: {e}", file=sys.stderr)
        return 124
    print(f"status: {status}")
    if status != "SUCCEEDED":
        print("\n".join(job_logs(address, job_id).splitlines()[-40:]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
