"""``selftaught <command> [hydra overrides]``: Hydra entry points.

    selftaught run                              # seed eval, then `rounds` rounds (resumes)
    selftaught run preset=cpu_demo rounds=2     # the CPU-sized demo
    selftaught run --cfg job                    # print the composed config and exit
    selftaught run engine=hf until=pairs        # another engine; stop after a stage
    selftaught eval model.path=/abs/model eval=llmbar   # evaluate one judge, nothing else
    selftaught submit --address http://head:8265 --storage /abs/shared/runs -- rounds=2 cluster=gpu_node
                                                # the same run as a Ray job (see distributed/submit.py)

Configs are validated (``config.validate``) before any model or Ray starts; a bad value exits
with status 2 and one line naming the key.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from selftaught.config import ConfigError, register_configs, to_object, validate

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
COMMANDS = ("run", "eval", "submit")
log = logging.getLogger("selftaught")


def _typed(cfg: DictConfig):
    try:
        return validate(to_object(cfg))
    except (ConfigError, OmegaConfBaseException) as e:
        print(f"selftaught: config error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _guarded(fn, typed):
    try:
        return fn(typed)
    except (FileNotFoundError, ConfigError) as e:  # missing files, cluster too small for the config
        print(f"selftaught: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _sweep_name(cfg: DictConfig) -> None:
    """Under ``-m`` every sweep point gets its own run directory (and W&B run): the run name plus
    the point's overrides, e.g. ``demo-judge.n=4,train.lr=1e-06``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from hydra.core.override_parser.overrides_parser import OverridesParser

    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return
    # Only the swept keys name the point (fixed overrides such as model.path are the same for all).
    swept = {o.get_key_element() for o in OverridesParser.create().parse_overrides(
        [a for a in sys.argv[1:] if "=" in a and not a.startswith("-")]) if o.is_sweep_override()}
    point = [o for o in hc.overrides.task if o.split("=", 1)[0] in swept]
    suffix = ",".join(point).replace("/", "_").replace(" ", "") or f"job{hc.job.num}"  # e.g. a config-defined sweep
    if suffix:
        cfg.name = f"{cfg.name}-{suffix}"


def _run(cfg: DictConfig) -> None:
    from selftaught.driver import run

    _sweep_name(cfg)
    result = _guarded(run, _typed(cfg))
    print(f"run artifacts: {result.run_dir}")
    for k, path in sorted(result.models.items()):
        print(f"  judge after round {k}: {path}")


def _eval(cfg: DictConfig) -> None:
    from selftaught.driver import evaluate_model

    _guarded(evaluate_model, _typed(cfg))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    command = argv.pop(0)
    if command == "submit":  # not a Hydra app: it ships `run` overrides to a Ray cluster as a job
        from selftaught.distributed.submit import main as submit_main

        raise SystemExit(submit_main(argv))
    register_configs()
    sys.argv = [f"selftaught {command}", *argv]  # Hydra parses sys.argv
    entry = {"run": _run, "eval": _eval}[command]
    hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")(entry)()


def compose(overrides: list[str] | None = None):
    """Python API: the typed, validated ``RunConfig`` the CLI would build from these overrides."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides or [])
    OmegaConf.set_struct(cfg, False)
    cfg.pop("hydra", None)
    return validate(to_object(cfg))


if __name__ == "__main__":
    main()
