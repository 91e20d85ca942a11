"""What an engine says about itself at registration: the worker's labels and the facts
its model cards show in the Workers API.

Rules:
- Sans-I/O like smg/workers/engines.py: ``describe`` is given ``fetch(path) ->
  (status, headers, body)`` and opens no socket; a path that fails or answers
  something else than a JSON object contributes nothing (a description never fails a
  registration).
- Which endpoints are read depends on the engine (``runtime``):
  SGLang: ``/server_info`` (else ``/get_server_info``) and ``/model_info`` (else
  ``/get_model_info``); every other engine: its ``/v1/models`` card and ``/version``.
  Only the keys of ``LABEL_KEYS`` become labels, each value as a string (``true`` /
  ``false`` for booleans); nested values (lists, objects) never do.
- Model-info values win over server-info ones (``model_path``, ``tokenizer_path``);
  ``max_model_len`` is the ``/v1/models`` card's when it has one.
- ``api_card`` is the card the Workers API shows: SMG's ModelCard fields only (the
  engine's own card fields stay in /v1/models), ``model_type`` the capabilities of a
  generative model unless the card names its own, ``context_length`` from the
  card, else the engine's info, else the card's ``max_model_len``.
"""
from __future__ import annotations

import asyncio
from typing import NamedTuple

import orjson

from smg.errors import UpstreamError

SERVER_INFO_PATHS = ("/server_info", "/get_server_info")
MODEL_INFO_PATHS = ("/model_info", "/get_model_info")
VERSION_PATH = "/version"

LABEL_KEYS = ("model_path", "tokenizer_path", "served_model_name", "tp_size", "dp_size", "version",
              "context_length", "is_embedding", "is_generation", "max_model_len")
# What a generative model card can serve when it does not say (SMG's default model_type).
DEFAULT_MODEL_TYPE = ("chat", "completions", "responses", "tools")
CARD_FIELDS = ("id", "display_name", "aliases", "model_type", "hf_model_type", "architectures", "provider",
               "context_length", "tokenizer_path", "chat_template", "reasoning_parser", "tool_parser",
               "metadata", "num_labels")


class Description(NamedTuple):
    labels: dict                     # label name -> string value
    context_length: int | None = None
    tokenizer_path: str | None = None


def _label(value) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    return None


def _number(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


async def _object(fetch, paths: tuple) -> dict:
    """The first JSON object one of ``paths`` answers with 2xx, else {}."""
    for path in paths:
        try:
            status, _, body = await fetch(path)
        except (UpstreamError, OSError, asyncio.TimeoutError):
            return {}  # a description never fails a registration
        if 200 <= status < 300:
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                continue
            if isinstance(doc, dict):
                return doc
    return {}


async def describe(fetch, runtime: str, cards: list | None) -> Description:
    """The labels and card facts of a worker whose engine is ``runtime`` and whose
    ``/v1/models`` gave ``cards`` (None: no model list)."""
    card = cards[0] if cards else {}
    raw: dict = {}
    context_length = tokenizer_path = None
    if runtime == "sglang":
        server = await _object(fetch, SERVER_INFO_PATHS)
        model = await _object(fetch, MODEL_INFO_PATHS)
        raw.update({k: server[k] for k in LABEL_KEYS if k in server})
        raw.update({k: model[k] for k in LABEL_KEYS if k in model})
        context_length = _number(server.get("context_length"))
        tokenizer_path = model.get("tokenizer_path") or server.get("tokenizer_path")
        if not isinstance(tokenizer_path, str):
            tokenizer_path = None
    else:
        if card.get("id"):
            raw["served_model_name"] = card["id"]
        if card.get("root"):
            raw["model_path"] = card["root"]
        version = (await _object(fetch, (VERSION_PATH,))).get("version")
        if version is not None:
            raw["version"] = version
    if _number(card.get("max_model_len")):
        raw["max_model_len"] = card["max_model_len"]
    labels = {}
    for k, v in raw.items():
        s = _label(v)
        if s is not None:
            labels[k] = s
    return Description(labels, context_length, tokenizer_path)


def api_card(card: dict, description: Description | None = None) -> dict:
    """``card`` as the Workers API shows it (see the module rules)."""
    out = {"id": card["id"]}
    mt = card.get("model_type")
    out["model_type"] = mt if mt is not None else list(DEFAULT_MODEL_TYPE)
    ctx = _number(card.get("context_length"))
    if ctx is None and description is not None:
        ctx = description.context_length
    if ctx is None:
        ctx = _number(card.get("max_model_len"))
    if ctx is not None:
        out["context_length"] = ctx
    for k in CARD_FIELDS:
        if k in out:
            continue
        if k in card:
            out[k] = card[k]
        elif k == "tokenizer_path" and description is not None and description.tokenizer_path:
            out[k] = description.tokenizer_path
    return out


__all__ = ["Description", "describe", "api_card", "LABEL_KEYS", "DEFAULT_MODEL_TYPE"]
