"""Validation of ``POST /v1/embeddings`` and ``POST /v1/classify`` bodies.

SMG decodes this route's body without typed validation: a wrong field type is a plain
``422`` (text/plain), ``input`` may hold any JSON value (its shape is the worker's to
judge), and nothing past the field types is checked here."""
from __future__ import annotations

from smg.api.validate._core import Bad, decode_fault, opt_string, opt_u32, string, walk


def _any(v) -> None:
    return None


FIELDS = {
    "model": string,
    "input": _any,
    "encoding_format": opt_string,
    "user": opt_string,
    "dimensions": opt_u32,
}
REQUIRED = ("model", "input")

CLASSIFY_FIELDS = {"model": string, "input": _any, "user": opt_string}


def validate_classify(body: dict):
    """``/v1/classify``: None for a body SMG accepts, else the (plain-text) ``Invalid``."""
    try:
        walk(body, CLASSIFY_FIELDS, REQUIRED)
    except Bad as e:
        return decode_fault(e, plain=True)
    return None


def validate(body: dict):
    """Returns None for a body SMG accepts, else the (plain-text) ``Invalid`` answer."""
    try:
        walk(body, FIELDS, REQUIRED)
    except Bad as e:
        return decode_fault(e, plain=True)
    return None
