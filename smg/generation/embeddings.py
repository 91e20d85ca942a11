"""The OpenAI embeddings answer of a gRPC engine's ``Embed`` results. Sans-I/O: the
request body's format knobs and the engine's vectors in, the response bytes out.

Rules:
- ``encoding_format`` is ``"float"`` (default: JSON numbers) or ``"base64"`` (the
  vector as little-endian float32 bytes, base64: what the ``openai`` SDK decodes);
  anything else is a 400 ``invalid_request`` naming the parameter.
- ``dimensions`` must equal the engine's embedding size when given: the engines
  report one size per model and truncating a vector that was not trained for it
  (Matryoshka) would answer silently wrong numbers, so a different value is a 400.
  It is checked against the first vector's size, before anything is sent.
- The body: ``{"object": "list", "data": [{"object": "embedding", "index": i,
  "embedding": ...}], "model", "usage": {"prompt_tokens", "total_tokens"}}``, inputs in
  request order; usage sums the engine's ``prompt_tokens`` (the prompt's length when
  the engine reports 0).
"""
from __future__ import annotations

import base64
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

__all__ = ["EmbeddingFormatError", "check_dimensions", "embeddings_body", "encoding_format"]

_FORMATS = ("float", "base64")


class EmbeddingFormatError(ValueError):
    """The body asks for an answer this engine cannot give; ``param`` names the field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def encoding_format(body: Mapping[str, Any]) -> str:
    fmt = body.get("encoding_format")
    if fmt is None:
        return "float"
    if fmt not in _FORMATS:
        raise EmbeddingFormatError(f"'encoding_format' must be one of {', '.join(_FORMATS)}, not {fmt!r}",
                                   "encoding_format")
    return fmt


def check_dimensions(body: Mapping[str, Any], dim: int) -> None:
    want = body.get("dimensions")
    if want is not None and want != dim:
        raise EmbeddingFormatError(f"this model's embeddings have {dim} dimensions; 'dimensions' {want} "
                                   "cannot be served (the engine does not shorten embeddings)", "dimensions")


def _encode(values: Sequence[float], fmt: str) -> Any:
    if fmt == "float":
        return list(values)
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")


def embeddings_body(results: Sequence[Any], prompt_lens: Sequence[int], model: str, fmt: str) -> bytes:
    """``results``: one ``smg.engine_grpc.client.Embedding`` per input, in order."""
    tokens = sum(r.prompt_tokens or n for r, n in zip(results, prompt_lens))
    return orjson.dumps({
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": _encode(r.values, fmt)}
                 for i, r in enumerate(results)],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })
