"""Which parser a request gets.

Order (first that names a registered parser wins):
1. the model card's ``reasoning_parser`` / ``tool_parser`` (``card``);
2. the worker's labels of the same names (``labels``);
3. the gateway's setting (``--reasoning-parser`` / ``--tool-call-parser``: ``configured``);
4. the model-name map of the kind's registry;
5. ``passthrough``.

Rules:
- A card or label value that names no registered parser is passed over (they are
  worker-reported data, not the operator's choice); a ``configured`` name is checked
  once at start-up with ``check_configured``, so an unknown one never reaches here.
- The tool registry is imported on first use, so reasoning-only callers never load it.
"""
from __future__ import annotations

from smg.parsers.reasoning import registry as reasoning_registry

KINDS = ("reasoning", "tool")
_FIELD = {"reasoning": "reasoning_parser", "tool": "tool_parser"}


def registry(kind: str):
    """The registry module of ``kind`` ("reasoning" or "tool").

    Raises:
        ValueError: an unknown kind.
    """
    if kind == "reasoning":
        return reasoning_registry
    if kind == "tool":
        from smg.parsers.tools import registry as tool_registry
        return tool_registry
    raise ValueError(f"unknown parser kind {kind!r} (expected one of {', '.join(KINDS)})")


def _known(reg, name) -> bool:
    return type(name) is str and name in reg.names()


def select(model: str, card: dict | None, configured: str | None, kind: str,
           labels: dict | None = None) -> str:
    """The parser name for a request to ``model``.

    Raises:
        ValueError: an unknown ``kind``.
    """
    reg = registry(kind)
    field = _FIELD[kind]
    for source in (card, labels):
        if type(source) is dict:
            name = source.get(field)
            if name and _known(reg, name):
                return name
    if configured:
        return configured
    return reg.for_model(model if type(model) is str else "")


def check_configured(name: str | None, kind: str) -> str | None:
    """Returns an error message when ``name`` (a ``--reasoning-parser`` /
    ``--tool-call-parser`` value) is not a registered parser, else None."""
    if name is None:
        return None
    reg = registry(kind)
    if not _known(reg, name):
        return (f"{kind} parser {name!r} is not one smg parses "
                f"(supported: {', '.join(reg.names())})")
    return None
