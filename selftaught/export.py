"""``selftaught export runs/<name>/round_<k> OUT``: a trained round as a folder the Hugging Face hub takes.

    selftaught export runs/demo/round_2 exported/demo-round-2
    huggingface-cli upload <you>/demo-judge exported/demo-round-2 .     # pushing is one command away

OUT gets the weights, config, tokenizer and chat template, the model card (``README.md``, regenerated from the
run's ``summary.json`` so its eval table has every round up to this one, with the eval results in its
``model-index``), ``selftaught_judge.json`` (how the judge is called) and ``prompts/`` (the judge's prompt
templates, as ``selftaught`` reads them). What only training needs (``training_args.bin``, checkpoints) stays.
The folder is written beside OUT (fsynced) and renamed into place, the old OUT moved aside first: a killed export
leaves the old folder or the new one, never a half one.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from selftaught import atomic, model_card
from selftaught.models import ensure_architectures

LEFT_OUT = {"training_args.bin", "train_metrics.json"}


class ExportError(Exception):
    pass


def export(src: Path, out: Path, force: bool = False) -> Path:
    src, out = Path(src).absolute(), Path(out).absolute()
    model = src / "model" if (src / "model").is_dir() else src
    if not (model / "config.json").is_file() or not list(model.glob("*.safetensors")):
        raise ExportError(f"{model} is not a trained round's model folder (no config.json or *.safetensors)")
    spec = model_card.read_spec(model)
    if spec is None:
        raise ExportError(f"{model} has no {model_card.JUDGE_FILE} (a round trained before model cards): rerun its "
                          f"`selftaught run` with the same overrides; every stage is reused and the card is written")
    if out == model or out in model.parents or model in out.parents:
        raise ExportError(f"{out} holds or is inside the round's model folder {model}: export somewhere else")
    if out.exists() and any(out.iterdir()) and not force:
        raise ExportError(f"{out} exists and is not empty (--force replaces it)")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write(model, spec, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # The old folder moves aside before the new one moves in: a kill between the renames leaves both beside OUT.
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.rename(out, old)
    os.rename(tmp, out)
    atomic.fsync_dir(out.parent)
    shutil.rmtree(old, ignore_errors=True)
    return out


def _write(model: Path, spec: dict, tmp: Path) -> None:
    from selftaught.prompts import PROMPTS_DIR

    tmp.mkdir(parents=True)
    for f in sorted(model.iterdir()):
        if f.is_file() and f.name not in LEFT_OUT:
            shutil.copy2(f, tmp / f.name)
    ensure_architectures(tmp)
    (tmp / "prompts").mkdir()
    for name in model_card.prompt_names(spec):
        base = Path(name) if "/" in name else PROMPTS_DIR / name
        for suffix in (".system.txt", ".user.txt", ".examples.jsonl"):
            f = base.with_name(base.name + suffix)
            if f.is_file():
                shutil.copy2(f, tmp / "prompts" / f.name)
    summary = model.parent.parent / "summary.json"  # runs/<name>/summary.json
    if summary.is_file():
        rows = [r for r in json.loads(summary.read_text()) if r["round"] <= spec["round"]]
        atomic.write_text(tmp / "README.md", model_card.render(spec, rows))
    for f in [*tmp.iterdir(), *(tmp / "prompts").iterdir()]:
        if f.is_file():
            atomic.fsync_file(f)
    atomic.fsync_dir(tmp / "prompts")
    atomic.fsync_dir(tmp)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="selftaught export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("round", help="runs/<name>/round_<k> (or its model folder)")
    ap.add_argument("out", help="the folder to write")
    ap.add_argument("--force", action="store_true", help="replace OUT if it exists")
    a = ap.parse_args(argv)
    try:
        out = export(Path(a.round), Path(a.out), a.force)
    except ExportError as e:
        print(f"selftaught export: {e}", file=sys.stderr)
        return 2
    spec = model_card.read_spec(out)
    print(f"exported round {spec['round']} of run {spec['run']} to {out}: "
          f"{', '.join(sorted(p.name for p in out.iterdir()))}")
    print(f"push it: huggingface-cli upload <user>/<repo> {out} .")
    return 0
