"""Hydra <-> the typed config: the structured schema registered in the ConfigStore, ``to_object`` (which refuses
any key outside the schema, naming the closest one) and OmegaConf errors as one ``ConfigError`` line."""
from __future__ import annotations

import difflib
import re
import typing
from dataclasses import is_dataclass
from typing import Any, Optional, Union

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from selftaught.config.base import ConfigError, _fields, _join
from selftaught.config.run import RunConfig


def _unwrap(tp: Any) -> Any:
    """Optional[X] -> X."""
    if typing.get_origin(tp) is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _item_type(tp: Any) -> Any:
    args = typing.get_args(tp)
    return args[0] if args else Any


def _not_a_key(key: str, names: Any) -> str:
    parent, _, leaf = key.rpartition(".")
    close = difflib.get_close_matches(leaf, list(names), n=1)
    hint = f"did you mean {_join(parent, close[0])}?" if close else f"{parent or 'the top level'} has {', '.join(names)}"
    return f"{key}: not a config key; {hint}"


def unknown_key(key: str, value: Any = None) -> Optional[str]:
    """The error message for a dotted ``key`` that has no place in the schema, or for a key inside
    ``value`` (a dict or list assigned to it) that has none; None if all fit. Keys under a dict
    (select.quotas) or an ``Any`` field are free."""
    tp: Any = RunConfig
    path = ""
    for part in key.split("."):
        tp = _unwrap(tp)
        if is_dataclass(tp):
            names = _fields(tp)
            if part not in names:
                return _not_a_key(_join(path, part), names)
            tp = names[part]
        elif typing.get_origin(tp) is list:
            if not part.isdigit():
                return f"{_join(path, part)}: {path} is a list; give an index ({path}.0...)"
            tp = _item_type(tp)
        else:
            return None
        path = _join(path, part)
    return _first_unknown(tp, value, key)


def _first_unknown(tp: Any, value: Any, key: str) -> Optional[str]:
    """The error message for the first key under ``value`` (plain containers) outside type ``tp``."""
    tp = _unwrap(tp)
    if is_dataclass(tp) and isinstance(value, dict):
        names = _fields(tp)
        for k, v in value.items():
            sub = _join(key, str(k))
            err = _not_a_key(sub, names) if k not in names else _first_unknown(names[k], v, sub)
            if err:
                return err
    elif typing.get_origin(tp) is list and isinstance(value, list):
        for i, v in enumerate(value):
            err = _first_unknown(_item_type(tp), v, f"{key}.{i}")
            if err:
                return err
    return None


def _build(tp: Any, value: Any, key: str) -> Any:
    """Plain ``value`` as type ``tp``: each section is built (and checks itself) under the key where
    it sits, so an EngineConfig error under generator.engine says ``generator.engine.backend``."""
    tp = _unwrap(tp)
    if value is None:
        return None
    if is_dataclass(tp):
        names = _fields(tp)
        kwargs = {k: _build(names[k], v, _join(key, k)) for k, v in value.items()}
        try:
            return tp(**kwargs)
        except ConfigError as e:
            msg, default = str(e), getattr(tp, "KEY", "")
            if key != default and msg.startswith(f"{default}."):
                msg = key + msg[len(default):]
            raise ConfigError(msg) from None
    if typing.get_origin(tp) is list and isinstance(value, list):
        return [_build(_item_type(tp), v, f"{key}.{i}") for i, v in enumerate(value)]
    return value


def omegaconf_error(e: BaseException) -> ConfigError:
    """An OmegaConf error (or one it tagged with ``full_key``) as one line that starts with the key."""
    key = re.sub(r"\[(\d+)\]", r".\1", str(getattr(e, "full_key", None) or getattr(e, "key", None) or "config"))  # a[0] -> a.0
    if isinstance(e, MissingMandatoryValue):
        return ConfigError(f"{key}: is required (set {key}=...)")
    text = str(getattr(e, "msg", None) or e).strip().splitlines()
    return ConfigError(f"{key}: {text[0] if text else type(e).__name__}")


def schema() -> DictConfig:
    """The RunConfig schema as an OmegaConf node. Its dict fields (select.quotas) take new keys:
    Hydra composes in struct mode, which would refuse ``select.quotas={Coding: 50}``."""
    node = OmegaConf.structured(RunConfig)

    def open_dicts(n: DictConfig, cls: type) -> None:
        for name, tp in _fields(cls).items():
            tp = _unwrap(tp)
            if typing.get_origin(tp) is dict:
                OmegaConf.set_struct(n[name], False)
            elif is_dataclass(tp) and isinstance(n[name], DictConfig):
                open_dicts(n[name], tp)

    open_dicts(node, RunConfig)
    return node


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="run_schema", node=schema())


def to_object(cfg: DictConfig | RunConfig) -> RunConfig:
    """A composed config -> a checked ``RunConfig`` (each section checks itself; ``validate`` does the
    rest). Any key outside the schema is refused: Hydra's struct mode lets ``+key=``/``++key=`` add
    one, and OmegaConf would set it on the object."""
    if isinstance(cfg, RunConfig):
        return cfg
    if "hydra" in cfg:
        cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    err = _first_unknown(RunConfig, OmegaConf.to_container(cfg, resolve=False), "")
    if err:
        raise ConfigError(err)
    try:  # the schema converts and type-checks values; interpolations resolve here
        plain = OmegaConf.to_container(OmegaConf.merge(schema(), cfg), resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as e:
        raise omegaconf_error(e) from None
    return _build(RunConfig, plain, "")
