"""Typed config schemas, registered in Hydra's ConfigStore and checked before Ray or any model starts.

Every knob of a run lives here; ``selftaught/conf/*.yaml`` only picks values. Checks sit next to
their fields: each section checks its own values when it is built (``__post_init__``), and
``validate`` checks what spans sections (token budgets vs the context, quotas vs categories,
deterministic decoding, the DeepSpeed JSON, shared storage). ``to_object`` turns a composed Hydra
config into a ``RunConfig`` and refuses any key outside the schema. Every failure is a
``ConfigError`` whose message starts with the key, so a bad override fails in milliseconds, not
after an engine has started. Sections are frozen once built: ``dataclasses.replace`` makes a
checked copy.

One module per section, next to the stage that reads it (``engine``, ``data``, ``pairs``, ``judge``, ``train``,
``eval``, ``serve``), the run and its cross-section checks (``run``), the Hydra side (``hydra``) and what they share
(``base``); every name is importable from ``selftaught.config``.
"""
from __future__ import annotations

from selftaught.config.base import (RECIPE_CATEGORIES, EMBEDDED_MODEL, JUDGE_FORMATS, EVAL_MODES, JUDGE_MODES,
                                    EXPLANATIONS, PAIR_SOURCES, ENGINE_BACKENDS, DATA_FORMATS, TRACKING_BACKENDS,
                                    TRACKING_MODES, ZERO_STAGES, LR_SCHEDULERS, CONF_PACKAGE, ConfigError, BaseConfig,
                                    config_hash, abspath)
from selftaught.config.engine import ModelConfig, EngineConfig, RayConfig, GeneratorConfig
from selftaught.config.data import DataSourceConfig, DataConfig, CategorizeConfig, SelectConfig
from selftaught.config.pairs import NeighborConfig, PairChecksConfig, PairsConfig
from selftaught.config.judge import JudgeConfig, JudgeFileConfig
from selftaught.config.serve import REWARDS, LOCAL_HOSTS, ServeConfig
from selftaught.config.train import (LoraConfig, DpoConfig, GrpoConfig, TRAIN_OBJECTIVES, TRAIN_ATTENTION, TrainConfig,
                                     deepspeed_file, load_deepspeed)
from selftaught.config.eval import EvalSetConfig, HoldoutConfig, EvalConfig, eval_set_name
from selftaught.config.run import (TrackingConfig, RunConfig, validate, check_shared_storage, stage_names,
                                   eval_config, constrained, generator_constrained)
from selftaught.config.hydra import unknown_key, omegaconf_error, schema, register_configs, to_object

__all__ = ["RECIPE_CATEGORIES", "EMBEDDED_MODEL", "JUDGE_FORMATS", "EVAL_MODES", "JUDGE_MODES", "EXPLANATIONS",
           "PAIR_SOURCES", "ENGINE_BACKENDS", "DATA_FORMATS", "TRACKING_BACKENDS", "TRACKING_MODES", "ZERO_STAGES",
           "LR_SCHEDULERS", "CONF_PACKAGE", "ConfigError", "BaseConfig", "config_hash", "abspath", "ModelConfig",
           "EngineConfig", "RayConfig", "GeneratorConfig", "DataSourceConfig", "DataConfig", "CategorizeConfig",
           "SelectConfig", "NeighborConfig", "PairChecksConfig", "PairsConfig", "JudgeConfig", "JudgeFileConfig",
           "REWARDS", "LOCAL_HOSTS", "ServeConfig",
           "LoraConfig", "DpoConfig", "GrpoConfig", "TRAIN_OBJECTIVES", "TRAIN_ATTENTION", "TrainConfig", "deepspeed_file",
           "load_deepspeed", "EvalSetConfig", "HoldoutConfig", "EvalConfig", "eval_set_name", "TrackingConfig",
           "RunConfig", "validate", "check_shared_storage", "stage_names", "eval_config", "constrained",
           "generator_constrained", "unknown_key", "omegaconf_error", "schema", "register_configs", "to_object"]
