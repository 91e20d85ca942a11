"""Merging defaults, a YAML file and CLI flags into a GatewayConfig (CLI wins).

Every error names the offending key as the user wrote it: ``--flag`` for flags,
the YAML key (``file.yaml: key``) for the config file. A setting whose feature smg does
not have yet (status NOT_YET in smg/config/schema.py) given any value but its default
raises ``NotSupportedYet``, so that no option is silently ignored.

Settings resolved from others when left unset: ``remove_unhealthy_workers`` (on with a
discovery source), ``prometheus_host`` (``host`` itself when it is a loopback address, else ``::`` when
``host`` is an IPv6 address and ``0.0.0.0`` otherwise), and
``discovery_provider`` (``kubernetes`` sets ``service_discovery``; ``file`` needs
``discovery_file``). ``--reasoning-parser``/``--tool-call-parser`` values SMG's command
line takes but whose format smg does not parse are refused here, naming the flag.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import yaml

from smg.config.groups import grouped
from smg.config.schema import NOT_YET, SETTINGS, GatewayConfig, Setting, setting
from smg.errors import ConfigError
from smg.parsers.select import check_configured


class NotSupportedYet(ConfigError):
    """A setting smg accepts only at its default was given another value."""


#: setting name -> heading of its area (named in NotSupportedYet messages)
_AREA = {s.name: g.title for g, rows in grouped(SETTINGS) for s in rows}
_NOT_YET = tuple(s for s in SETTINGS if s.status == NOT_YET)
_PENDING = tuple(s for s in SETTINGS if s.pending)

_YAML_KEYS = {}  # the setting's name, or any of its flags without the dashes, - or _ alike
for _s in SETTINGS:
    for _key in (_s.name, *(a[2:] for a in _s.aliases)):
        _YAML_KEYS[_key.replace("-", "_")] = _s
        _YAML_KEYS[_key.replace("_", "-")] = _s


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
    if parts.scheme not in ("http", "https", "grpc", "grpcs") or not parts.hostname:
        raise ConfigError(where, f"{url!r} is not an http(s):// or grpc(s)://host:port URL")
    try:
        parts.port
    except ValueError:
        raise ConfigError(where, f"{url!r} has an invalid port") from None
    return url.rstrip("/")


def _pd_workers(values: dict, origin: dict) -> None:
    """``prefill``/``decode`` as SMG's command line gives them: ``--prefill URL [PORT|none]``
    repeated (the list flag splits ``URL PORT`` into two items, a YAML item may be
    ``"URL PORT"``). Leaves ``prefill`` as ``[(url, bootstrap port or None)]`` and
    ``decode`` as ``[url]``; both need ``--pd-disaggregation``."""
    where = origin.get("prefill", "--prefill")
    pairs: list = []
    for item in values["prefill"]:
        for tok in (item if isinstance(item, (list, tuple)) else str(item).split()):
            tok = str(tok)
            if "://" in tok:
                pairs.append((_check_worker_url(tok, where), None))
                continue
            if not pairs or pairs[-1][1] is not None:
                raise ConfigError(where, f"{tok!r}: a bootstrap port (or none) follows a prefill URL")
            if tok.lower() == "none":
                pairs[-1] = (pairs[-1][0], "none")
                continue
            if not tok.isdigit() or not 0 < int(tok) < 65536:
                raise ConfigError(where, f"{tok!r} is not a bootstrap port (1-65535) or none")
            pairs[-1] = (pairs[-1][0], int(tok))
    values["prefill"] = [(u, None if p == "none" else p) for u, p in pairs]
    values["decode"] = [_check_worker_url(u, origin.get("decode", "--decode")) for u in values["decode"]]
    if (values["prefill"] or values["decode"]) and not values["pd_disaggregation"]:
        flag = "--prefill" if values["prefill"] else "--decode"
        raise ConfigError(origin.get(flag[2:], flag), "prefill and decode workers need --pd-disaggregation")


def load_yaml(path: str) -> dict:
    """Reads a YAML config file into {setting name: value}, validating keys and types."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError("--config", f"cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:  # one line: the problem and where it is
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        what = getattr(e, "problem", None) or " ".join(str(e).split())
        raise ConfigError("--config", f"{path} is not valid YAML: {what}{where}") from None
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
    origin = {}  # setting name -> how the user wrote it
    if config_file:
        from_file = load_yaml(config_file)
        values.update(from_file)
        origin.update((name, f"{config_file}: {name}") for name in from_file)
    for name, value in cli.items():
        s = setting(name)
        values[name] = _coerce(s, value, s.flag)
        origin[name] = s.flag
    for s in _NOT_YET:
        if values[s.name] != s.default:
            default = "unset" if s.default is None else ("empty" if s.default == [] else f"{s.default}")
            raise NotSupportedYet(origin.get(s.name, s.flag),
                                  f"not supported yet ({_AREA.get(s.name, 'this feature')}); "
                                  f"smg-proxy accepts it only at its default ({default})")
    for s in _PENDING:
        if values[s.name] in s.pending:
            raise NotSupportedYet(origin.get(s.name, s.flag),
                                  f"{values[s.name]!r} is not supported yet ({_AREA.get(s.name, 'this feature')}); "
                                  f"smg-proxy has {', '.join(c for c in s.choices if c not in s.pending)}")
    _resolve(values, origin)
    where = "--worker-urls"
    values["worker_urls"] = [_check_worker_url(u, where) for u in values["worker_urls"]]
    _pd_workers(values, origin)
    for h in values["request_id_headers"]:
        if not h or any(c in h for c in " :\t"):
            raise ConfigError("--request-id-headers", f"{h!r} is not a header name")
    values["request_id_headers"] = [h.lower() for h in values["request_id_headers"]]
    for name, kind in (("reasoning_parser", "reasoning"), ("tool_call_parser", "tool")):
        problem = check_configured(values[name], kind)
        if problem is not None:
            raise ConfigError(origin.get(name, setting(name).flag), problem)
    return GatewayConfig(values)


def _resolve(values: dict, origin: dict) -> None:
    """Fills the settings whose unset value depends on others (see the module docstring)."""
    provider = values["discovery_provider"]
    if provider is not None:
        if values["service_discovery"]:
            raise ConfigError(origin.get("discovery_provider", "--discovery-provider"),
                              "give --service-discovery or --discovery-provider, not both")
        if provider == "kubernetes":
            values["service_discovery"] = True
        elif not values["discovery_file"]:
            raise ConfigError(origin.get("discovery_provider", "--discovery-provider"),
                              "file discovery needs --discovery-file")
    if values["remove_unhealthy_workers"] is None:
        values["remove_unhealthy_workers"] = bool(values["service_discovery"] or values["discovery_file"])
    if "prometheus_host" not in origin:  # the metrics listener follows --host's family (loopback stays loopback)
        h = values["host"]
        values["prometheus_host"] = h if h in ("localhost", "::1") or h.startswith("127.") else \
            ("::" if ":" in h else "0.0.0.0")
