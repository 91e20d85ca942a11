"""Merging defaults, a YAML file and CLI flags into a GatewayConfig (CLI wins).

Every error names the offending key as the user wrote it: ``--flag`` for flags,
the YAML key (``file.yaml: key``) for the config file.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import yaml

from smg.config.schema import SETTINGS, GatewayConfig, Setting, setting
from smg.errors import ConfigError

_YAML_KEYS = {}
for _s in SETTINGS:
    _YAML_KEYS[_s.name] = _s
    _YAML_KEYS[_s.name.replace("_", "-")] = _s


def _coerce(s: Setting, value: Any, where: str) -> Any:
    kind = s.kind
    if kind is list:
        if isinstance(value, str):
            value = [p for p in value.replace(",", " ").split() if p]
        if s.item is float:
            try:
                value = [float(x) for x in value if not isinstance(x, bool)]
            except (TypeError, ValueError):
                raise ConfigError(where, "expected a list of numbers") from None
            if any(x <= 0 for x in value) or len(set(value)) != len(value):
                raise ConfigError(where, "buckets must be distinct positive numbers")
        elif not isinstance(value, (list, tuple)) or not all(isinstance(x, str) for x in value):
            raise ConfigError(where, "expected a list of strings")
        value = list(value)
    elif kind is bool:
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            value = value.lower() in ("true", "1", "yes", "on")
        if not isinstance(value, bool):
            raise ConfigError(where, f"expected true or false, got {value!r}")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(where, f"expected an integer, got {value!r}")
        try:
            value = int(value)
        except ValueError:
            raise ConfigError(where, f"expected an integer, got {value!r}") from None
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(where, f"expected a number, got {value!r}")
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(where, f"expected a number, got {value!r}") from None
    elif kind is str:
        if not isinstance(value, str):
            raise ConfigError(where, f"expected a string, got {value!r}")
    if s.choices is not None and value not in s.choices:
        raise ConfigError(where, f"{value!r} is not one of {', '.join(s.choices)}")
    if s.minimum is not None and value < s.minimum:
        raise ConfigError(where, f"must be at least {s.minimum}, got {value}")
    return value


def _check_worker_url(url: str, where: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(where, f"{url!r} is not an http(s)://host:port URL")
    try:
        parts.port
    except ValueError:
        raise ConfigError(where, f"{url!r} has an invalid port") from None
    return url.rstrip("/")


def load_yaml(path: str) -> dict:
    """Reads a YAML config file into {setting name: value}, validating keys and types."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError("--config", f"cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError("--config", f"{path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("--config", f"{path} must hold a mapping of setting names to values")
    out = {}
    for key, value in data.items():
        s = _YAML_KEYS.get(key) if isinstance(key, str) else None
        if s is None:
            raise ConfigError(f"{path}: {key}", "unknown setting")
        out[s.name] = _coerce(s, value, f"{path}: {key}")
    return out


def build_config(cli: dict, config_file: str | None = None) -> GatewayConfig:
    """Defaults, then the YAML file, then explicitly given CLI values.

    Args:
        cli: {setting name: value} for flags the user actually gave.
    Raises:
        ConfigError: naming the flag or config key that is wrong.
    """
    cfg = GatewayConfig()
    values = dict(cfg.values)
    if config_file:
        values.update(load_yaml(config_file))
    for name, value in cli.items():
        s = setting(name)
        values[name] = _coerce(s, value, s.flag)
    where = "--worker-urls"
    values["worker_urls"] = [_check_worker_url(u, where) for u in values["worker_urls"]]
    for h in values["request_id_headers"]:
        if not h or any(c in h for c in " :\t"):
            raise ConfigError("--request-id-headers", f"{h!r} is not a header name")
    values["request_id_headers"] = [h.lower() for h in values["request_id_headers"]]
    return GatewayConfig(values)
