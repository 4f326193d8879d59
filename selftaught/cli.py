"""``selftaught <command> [hydra overrides]``: Hydra entry points.

    selftaught run                              # seed eval, then `rounds` rounds (resumes)
    selftaught run preset=cpu_demo rounds=2     # the CPU-sized demo
    selftaught run --cfg job                    # print the composed config and exit
    selftaught run engine=hf until=pairs        # another engine; stop after a stage
    selftaught eval model.path=/abs/model eval=llmbar   # evaluate one judge, nothing else
    selftaught judge model.path=/abs/model judge_file.path=pairs.jsonl [judge_file.dpo_out=dpo.jsonl]
                                                # decide a file of response pairs, both orders
    selftaught judge judge_file.mode=absolute judge_file.path=responses.jsonl   # grade responses 1-5
    selftaught serve model.path=/abs/model [serve.port=8000 serve.host=0.0.0.0 judge_file.decide=verify]
                                                # the judge behind HTTP: /v1/compare /v1/grade /get_reward
    selftaught export runs/demo/round_2 OUT     # a trained round as a hub-ready folder (card, weights, prompts)
    selftaught submit --address http://head:8265 --storage /abs/shared/runs -- rounds=2 cluster=gpu_node
                                                # the same run as a Ray job (see distributed/submit.py)

The config (``selftaught/conf/``, shipped in the package) is composed and checked before Hydra
runs the command, so before Ray or any model starts: a bad value, a key outside the schema
(``judge.nn=3``, ``+judge.nn=3``, ``++foo=1``) or an input that cannot work exits with status 2
and one line, ``selftaught: config error: <key>: ...``.
"""
from __future__ import annotations

import logging
import sys
from typing import NoReturn

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from selftaught.config import ConfigError, RunConfig, register_configs, to_object, validate
from selftaught.overrides import CONF_DIR, CONF_PATH, compose, hydra_error  # noqa: F401 - CONF_DIR, compose: API

COMMANDS = ("run", "eval", "judge", "serve", "export", "submit")
EXIT_CONFIG = 2  # every config error, whichever layer finds it
log = logging.getLogger("selftaught")


def _fail(e: BaseException) -> NoReturn:
    """One line on stderr, exit 2: a config error is the user's to fix, never a traceback."""
    text = " ".join(str(e).split())
    print(f"selftaught: config error: {text}", file=sys.stderr)
    raise SystemExit(EXIT_CONFIG) from None


def _typed(cfg: DictConfig) -> RunConfig:
    try:
        return validate(to_object(cfg))
    except ConfigError as e:
        _fail(e)


def _guarded(fn, typed):
    try:
        return fn(typed)
    except (FileNotFoundError, ConfigError) as e:  # missing files, unusable data, cluster too small for the config
        _fail(e)


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
    _sweep_name(cfg)
    typed = _typed(cfg)  # before the driver's imports (Ray, engines)
    from selftaught.driver import run

    result = _guarded(run, typed)
    print(f"run artifacts: {result.run_dir}")
    for k, path in sorted(result.models.items()):
        print(f"  judge after round {k}: {path}")


def _eval(cfg: DictConfig) -> None:
    typed = _typed(cfg)
    from selftaught.driver import evaluate_model

    _guarded(evaluate_model, typed)


def _judge(cfg: DictConfig) -> None:
    typed = _typed(cfg)
    from selftaught.driver import judge_pairs

    _guarded(judge_pairs, typed)


def _serve(cfg: DictConfig) -> None:
    typed = _typed(cfg)
    from selftaught.serve.server import serve

    _guarded(serve, typed)


def check_overrides(argv: list[str]) -> None:
    """Compose and check what ``hydra.main`` is about to run, every sweep point of ``-m`` included,
    so that a config error is one line and exit 2 before anything starts (Hydra's own errors are
    several lines and exit 1)."""
    from hydra._internal.utils import get_args_parser

    args, _ = get_args_parser().parse_known_args(argv)
    if (args.help or args.hydra_help or args.info or args.shell_completion or args.config_path or args.config_name
            or args.config_dir or args.experimental_rerun):
        return  # Hydra's own commands, or another config than ours: the task function still checks
    try:
        jobs = [args.overrides]
        if args.multirun:
            from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
            from hydra.core.override_parser.overrides_parser import OverridesParser

            parsed = OverridesParser.create().parse_overrides(args.overrides)
            jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
        for job in jobs:
            compose(job)
    except (HydraException, OmegaConfBaseException, ConfigError) as e:
        _fail(hydra_error(e))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    command = argv.pop(0)
    if command == "export":  # not a Hydra app either: a round folder in, a hub-ready folder out
        from selftaught.export import main as export_main

        raise SystemExit(export_main(argv))
    if command == "submit":  # not a Hydra app: it ships `run` overrides to a Ray cluster as a job
        from selftaught.distributed.submit import main as submit_main

        raise SystemExit(submit_main(argv))
    check_overrides(argv)
    register_configs()
    sys.argv = [f"selftaught {command}", *argv]  # Hydra parses sys.argv
    entry = {"run": _run, "eval": _eval, "judge": _judge, "serve": _serve}[command]
    hydra.main(version_base="1.3", config_path=CONF_PATH, config_name="config")(entry)()


if __name__ == "__main__":
    main()
