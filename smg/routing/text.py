"""The text prefix-matching policies route on, per endpoint (as SMG builds it); the
endpoint table (smg/server/endpoints.py) names each endpoint's extractor.

Chat (OpenAI and Anthropic): every message's text content joined with single spaces
(Anthropic's top-level ``system`` first); completions: the prompt; /generate: the text
(or the input ids rendered as text when only ids are given); embeddings: the input.
"""
from __future__ import annotations


def _content_text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, str):
                parts.append(p)
            elif isinstance(p, dict) and isinstance(p.get("text"), str):
                parts.append(p["text"])
        return " ".join(parts)
    return ""


def _join(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(v if isinstance(v, str) else " ".join(map(str, v)) if isinstance(v, list) else str(v)
                        for v in value)
    return ""


def chat_text(body: dict) -> str:
    """Chat (OpenAI and Anthropic): message texts, Anthropic's ``system`` first."""
    msgs = body.get("messages")
    if not isinstance(msgs, list):
        return ""
    parts = []
    system = body.get("system")
    if system is not None:
        parts.append(_content_text(system))
    for m in msgs:
        if isinstance(m, dict):
            t = _content_text(m.get("content"))
            if t:
                parts.append(t)
    return " ".join(parts)


def prompt_text(body: dict) -> str:
    """Completions: the prompt."""
    return _join(body.get("prompt"))


def generate_text(body: dict) -> str:
    """SGLang /generate: the text, or the input ids rendered as text."""
    if "text" in body:
        return _join(body["text"])
    return _join(body.get("input_ids"))


def input_text(body: dict) -> str:
    """Embeddings: the input."""
    return _join(body.get("input"))


def no_text(body: dict) -> str:
    """Endpoints whose requests carry no prefix worth matching (rerank)."""
    return ""


def routing_text(path: bytes, body: dict) -> str:
    """The text of any request body, whatever its endpoint (used where the endpoint is
    not known; the endpoint table names the per-endpoint extractor above)."""
    if isinstance(body.get("messages"), list):
        return chat_text(body)
    if "prompt" in body:
        return _join(body["prompt"])
    if "text" in body:
        return _join(body["text"])
    if "input_ids" in body:
        return _join(body["input_ids"])
    if "input" in body:
        return _join(body["input"])
    return ""
