"""Hydra composition: overrides -> the typed, checked ``RunConfig`` (``compose``), and Hydra's errors as
one ``ConfigError`` line that names the key (``hydra_error``). Used by the CLI and by ``submit``, which
checks a config before it ships it to a cluster."""
from __future__ import annotations

import re
from importlib import resources

from hydra.errors import MissingConfigException, OverrideParseException

from selftaught.config import (CONF_PACKAGE, ConfigError, RunConfig, omegaconf_error, register_configs, to_object,
                               unknown_key, validate)

# Found with importlib.resources: the same in a checkout, an editable install and a wheel.
CONF_PATH = f"pkg://{CONF_PACKAGE}"
CONF_DIR = str(resources.files(CONF_PACKAGE))  # its folder on disk (docs, tests)


def _conf_groups() -> set[str]:
    return {p.name for p in resources.files(CONF_PACKAGE).iterdir() if p.is_dir() and not p.name.startswith("_")}


def hydra_error(e: BaseException) -> ConfigError:
    """A Hydra composition error as one ``ConfigError`` line that starts with the key."""
    if isinstance(e, ConfigError):
        return e
    if isinstance(e, MissingConfigException) and e.missing_cfg_file and "/" in e.missing_cfg_file:
        group, _, name = e.missing_cfg_file.rpartition("/")
        options = f" (options: {', '.join(e.options)})" if e.options else ""
        return ConfigError(f"{group}: no config {name!r} in group {group}{options}")
    if isinstance(e, OverrideParseException):
        key = e.override.split("=", 1)[0].lstrip("+~") if e.override else "overrides"
        return ConfigError(f"{key}: cannot parse {e.override!r}: {str(e.message).splitlines()[0]}")
    cause: BaseException | None = e
    while cause is not None:  # Hydra wraps the OmegaConf error that names the key
        if getattr(cause, "full_key", None):
            return omegaconf_error(cause)
        cause = cause.__cause__
    text = str(e).strip() or type(e).__name__
    found = re.search(r"full_key: (\S+)", text)  # OmegaConf appends it to errors it re-raises as they are
    return ConfigError(f"{found.group(1) if found else 'overrides'}: {text.splitlines()[0]}")


def _check_override_keys(overrides: list[str]) -> None:
    """Every overridden key exists in the schema (or names a config group): Hydra's own message for
    ``judge.nn=3`` is several lines, and ``+judge.nn=3`` / ``++foo=1`` it lets through."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    groups = _conf_groups()
    for o in OverridesParser.create().parse_overrides(overrides):
        key = o.key_or_group
        if key in groups or key.split("/")[0] in groups or key.split(".")[0].split("/")[0] == "hydra":
            continue
        value = o.value() if not o.is_sweep_override() and o.type.name != "DEL" else None
        err = unknown_key(key, value if isinstance(value, (dict, list)) else None)
        if err:
            raise ConfigError(err)


def compose(overrides: list[str] | None = None, *, local_files: bool = True) -> RunConfig:
    """Python API: the typed, checked ``RunConfig`` the CLI would build from these overrides.
    Every failure is a ``ConfigError`` naming the key (``local_files``: see ``config.validate``)."""
    from hydra import compose as hydra_compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    overrides = list(overrides or [])
    register_configs()
    try:
        _check_override_keys(overrides)
        GlobalHydra.instance().clear()
        with initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=overrides)
    except Exception as e:  # noqa: BLE001 - whatever fails while composing is the config's fault
        raise hydra_error(e) from None
    return validate(to_object(cfg), local_files=local_files)
