"""Tool-parser names, the ``--tool-call-parser`` aliases, and the model-name map.

- :func:`names` lists every name :func:`create` accepts: the 21 parsers, ``deepseek_v41``
  (a 1.13 addition), and the aliases that name one of them.
- :data:`CLI_CHOICES` is the full set of ``--tool-call-parser`` values the command line takes;
  the ones in :data:`UNSUPPORTED` name formats this gateway does not parse, and
  :func:`create` refuses them with a message saying so (never a silent fallback).
- :func:`for_model` maps a model id to a parser name: an exact pattern first, else the
  longest pattern stem (the pattern without its trailing ``*``) found in the model id,
  compared case-insensitively; ``passthrough`` when none matches.
"""
from __future__ import annotations

from .base import PassthroughToolParser, ToolParser
from .json_formats import (
    CohereToolParser, DeepSeek31ToolParser, DeepSeekToolParser, InklingToolParser,
    JsonToolParser, KimiK2ToolParser, LlamaToolParser, MistralToolParser, QwenToolParser,
)
from .pythonic import PythonicToolParser, SarashinaToolParser
from .xml_formats import (
    DeepSeek32ToolParser, DeepSeekV41ToolParser, DeepSeekV4ToolParser, Glm45ToolParser, Glm47ToolParser,
    KimiK3ToolParser, MinimaxM2ToolParser, QwenXmlToolParser, Step3ToolParser,
)

__all__ = ["names", "create", "for_model", "resolve", "CLI_CHOICES", "UNSUPPORTED", "ALIASES"]

_PARSERS: dict[str, type[ToolParser]] = {
    "passthrough": PassthroughToolParser,
    "json": JsonToolParser,
    "mistral": MistralToolParser,
    "qwen": QwenToolParser,
    "qwen_xml": QwenXmlToolParser,
    "qwen_coder": QwenXmlToolParser,
    "pythonic": PythonicToolParser,
    "llama": LlamaToolParser,
    "deepseek": DeepSeekToolParser,
    "deepseek31": DeepSeek31ToolParser,
    "deepseek32": DeepSeek32ToolParser,
    "deepseek_v4": DeepSeekV4ToolParser,
    "deepseek_v41": DeepSeekV41ToolParser,  # 1.13
    "glm45_moe": Glm45ToolParser,
    "glm47_moe": Glm47ToolParser,
    "step3": Step3ToolParser,
    "sarashina": SarashinaToolParser,
    "kimik2": KimiK2ToolParser,
    "kimi_k3": KimiK3ToolParser,
    "inkling": InklingToolParser,
    "minimax_m2": MinimaxM2ToolParser,
    "cohere": CohereToolParser,
}

# Command-line aliases that are one of the parsers above under another name.
ALIASES: dict[str, str] = {
    "nemotron": "qwen_xml",  # Nemotron-3 templates write Qwen3-Coder XML parameters
    "qwen2.5": "qwen",  # Hermes-style <tool_call> JSON
    "qwen3": "qwen",
    "glm": "glm47_moe",  # the GLM tag format (4.5 and 4.7 spacing both read)
    "glm4": "glm47_moe",
    "deepseek_v4.1": "deepseek_v41",
}

# ``--tool-call-parser`` values of the 1.13 command line whose formats are not parsed here.
UNSUPPORTED: frozenset[str] = frozenset({
    "dots3", "function_gemma", "gemma4", "hf", "hy4", "hy_v4",
    "iquest", "k2_horizon", "lfm2.5", "ling", "llama_nemotron", "minicpm5", "minimax_m3",
    "mistral_v13", "olmo3", "plain", "qwen3_tagged", "qwen3_tagged_direct", "seed_oss", "xlam",
})

CLI_CHOICES: tuple[str, ...] = tuple(sorted(set(_PARSERS) | set(ALIASES) | UNSUPPORTED))


def names() -> list[str]:
    """Every name :func:`create` accepts (parsers and aliases), sorted."""
    return sorted(set(_PARSERS) | set(ALIASES))


def resolve(name: str) -> str:
    """The parser an accepted name stands for.  Raises: KeyError (with the reason)."""
    if name in _PARSERS:
        return name
    if name in ALIASES:
        return ALIASES[name]
    if name in UNSUPPORTED:
        raise KeyError(f"tool parser {name!r} is not implemented by this gateway")
    raise KeyError(f"unknown tool parser {name!r}")


def create(name: str, tools: list | None = None) -> ToolParser:
    """A fresh parser for one request or stream.  Raises: KeyError for an unknown name."""
    return _PARSERS[resolve(name)](tools)


# Model-id patterns (a trailing "*" marks a stem matched anywhere in the id).
_MODEL_PATTERNS: dict[str, str] = {
    "gpt-4*": "json", "gpt-3.5*": "json", "gpt-4o*": "json", "claude-*": "json",
    "mistral-*": "mistral", "mixtral-*": "mistral",
    "Qwen/Qwen3.5*": "qwen_xml", "Qwen3.5*": "qwen_xml", "qwen3.5*": "qwen_xml",
    "qwen/qwen3.5*": "qwen_xml", "Qwen/Qwen3.6*": "qwen_xml", "Qwen3.6*": "qwen_xml",
    "qwen3.6*": "qwen_xml", "qwen/qwen3.6*": "qwen_xml", "Qwen/Qwen3.8*": "qwen_xml",
    "Qwen3.8*": "qwen_xml", "qwen3.8*": "qwen_xml", "qwen/qwen3.8*": "qwen_xml",
    "Qwen/Qwen3-Coder*": "qwen_xml", "Qwen3-Coder*": "qwen_xml", "qwen3-coder*": "qwen_xml",
    "qwen/qwen3-coder*": "qwen_xml",
    "qwen*": "qwen", "Qwen*": "qwen",
    "nemotron-3*": "qwen_xml",
    "llama-4*": "pythonic", "meta-llama-4*": "pythonic",
    "llama-3.2*": "llama", "meta-llama-3.2*": "llama",
    "llama-*": "json", "meta-llama-*": "json",
    "deepseek-v3*": "deepseek", "deepseek-ai/DeepSeek-V3*": "deepseek",
    "deepseek-v3.1*": "deepseek31", "deepseek-ai/DeepSeek-V3.1*": "deepseek31",
    "deepseek-v3.2-exp*": "deepseek31", "deepseek-ai/DeepSeek-V3.2-Exp*": "deepseek31",
    "deepseek-v3.2*": "deepseek32", "deepseek-ai/DeepSeek-V3.2*": "deepseek32",
    "deepseek-v4*": "deepseek_v4", "deepseek-ai/DeepSeek-V4*": "deepseek_v4",
    "deepseek-*": "pythonic",
    "glm-4.5*": "glm45_moe", "glm-4.6*": "glm45_moe", "glm-4.7*": "glm47_moe",
    "glm-5*": "glm47_moe", "glm-*": "json",
    "sarashina*": "sarashina", "Sarashina*": "sarashina",
    "step3*": "step3", "Step-3*": "step3",
    "kimi-k2*": "kimik2", "Kimi-K2*": "kimik2", "moonshot*/Kimi-K2*": "kimik2",
    "kimi-k3*": "kimi_k3", "Kimi-K3*": "kimi_k3", "moonshot*/Kimi-K3*": "kimi_k3",
    "kimi_k3*": "kimi_k3", "Kimi_K3*": "kimi_k3", "moonshot*/Kimi_K3*": "kimi_k3",
    "inkling*": "inkling", "Inkling*": "inkling",
    "minimax*": "minimax_m2", "MiniMax*": "minimax_m2",
    "command-r*": "cohere", "command-r-plus*": "cohere", "command-a*": "cohere",
    "c4ai-command*": "cohere", "cohere*": "cohere", "CohereForAI*": "cohere",
    "gemini-*": "json", "palm-*": "json", "gemma-*": "json",
}

# Stems, lower-cased, longest first (ties keep declaration order), built once.
_STEMS: tuple[tuple[str, str], ...] = tuple(
    sorted(
        ((p[:-1].lower(), parser) for p, parser in _MODEL_PATTERNS.items() if p.endswith("*")),
        key=lambda sp: -len(sp[0]),
    )
)


def for_model(model: str) -> str:
    """The parser name for a model id; ``passthrough`` when no pattern matches."""
    exact = _MODEL_PATTERNS.get(model)
    if exact is not None:
        return exact
    low = model.lower()
    for stem, parser in _STEMS:
        if stem in low:
            return parser
    return "passthrough"
