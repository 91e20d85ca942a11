"""The reasoning parsers by name, and the model-name map that picks one.

Rules:
- ``names()`` lists every registered name (SMG's 16 and four 1.13 added:
  ``deepseek_v4``, ``deepseek_v41``, ``hy_v4``, ``gemma4``); ``create`` refuses an unknown
  name with ``KeyError`` and an unknown option with ``TypeError``: nothing is
  accepted and ignored.
- ``for_model`` matches case-insensitive substrings in table order, first match
  wins, ``passthrough`` when none does (``MODEL_PATTERNS``: SMG's order, so
  ``deepseek-r1`` is tried before ``qwen`` and ``kimi-k2-thinking`` before ``kimi``).
"""
from __future__ import annotations

from smg.parsers.reasoning import toggle
from smg.parsers.reasoning.base import ReasoningParser
from smg.parsers.reasoning.families import PARSERS, Passthrough

_BY_NAME: dict = {cls.name: cls for cls in PARSERS}

DEFAULT = "passthrough"

# (substring of the lower-cased model name, parser name), first match wins
MODEL_PATTERNS: tuple = (
    ("deepseek-r1", "deepseek_r1"),
    ("deepseek-v3.1", "deepseek_v31"),
    ("deepseek-v3-1", "deepseek_v31"),
    ("qwen3-thinking", "qwen3_thinking"),
    ("qwen-thinking", "qwen3_thinking"),
    ("qwen3", "qwen3"),
    ("qwen", "qwen3"),
    ("glm45", "glm45"),
    ("glm47", "glm45"),
    ("glm-5", "glm45"),
    ("kimi-k2-thinking", "kimi_thinking"),
    ("kimi-k2.5", "kimi_k25"),
    ("kimi-k3", "kimi_k3"),
    ("kimi_k3", "kimi_k3"),
    ("kimi", "kimi"),
    ("step3", "step3"),
    ("minimax", "minimax"),
    ("minimax-m2", "minimax"),
    ("mm-m2", "minimax"),
    ("command-r", "cohere_cmd"),
    ("command-a", "cohere_cmd"),
    ("c4ai-command", "cohere_cmd"),
    ("cohere", "cohere_cmd"),
    ("nemotron-nano", "nano_v3"),
    ("nemotron-super", "nano_v3"),
    ("nano-v3", "nano_v3"),
    ("inkling", "inkling"),
)


def names() -> list:
    """Every registered parser name, sorted."""
    return sorted(_BY_NAME)


def has(name: str) -> bool:
    return name in _BY_NAME


def create(name: str, *, in_reasoning: bool | None = None, separate_reasoning: bool = True,
           chat_template_kwargs: dict | None = None) -> ReasoningParser:
    """A fresh parser (one per request or stream).

    ``in_reasoning``: where the output starts. ``None``: from ``chat_template_kwargs``
    through the family's thinking toggle when the request's kwargs are known (a dict,
    possibly empty: an absent key means the template's default), else the parser's
    default.
    ``separate_reasoning=False``: the reasoning stays in the content, markers and
    all (a ``passthrough`` parser).

    Raises:
        KeyError: ``name`` is not registered.
    """
    cls = _BY_NAME[name]
    if not separate_reasoning:
        return Passthrough()
    if in_reasoning is None and chat_template_kwargs is not None:
        in_reasoning = toggle.in_reasoning(name, chat_template_kwargs)
    return cls(in_reasoning=in_reasoning)


def for_model(model: str) -> str:
    """The parser name SMG's model-name map gives ``model``; ``passthrough`` when no
    pattern matches."""
    if type(model) is not str or not model:
        return DEFAULT
    m = model.lower()
    for pattern, name in MODEL_PATTERNS:
        if pattern in m:
            return name
    return DEFAULT
