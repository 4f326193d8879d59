#!/usr/bin/env bash
# Submit `selftaught run <overrides>` to a Ray cluster as a Ray job (selftaught/distributed/submit.py).
#   scripts/submit_ray_job.sh --address http://head:8265 --storage /mnt/shared/runs [--wait] -- cluster=gpu_node rounds=5
#   scripts/submit_ray_job.sh --address http://head:8265 --logs <job id>     (also --status, --stop)
# Uses the project's .venv when present (PYTHON=... overrides); the job itself runs with the
# cluster's `python` (--python to change).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
cd "$ROOT"
exec "$PYTHON" -m selftaught.distributed.submit "$@"
