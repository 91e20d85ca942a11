"""Validation of ``POST /v1/embeddings`` and ``POST /v1/classify`` bodies.

SMG decodes this route's body without typed validation: a wrong field type is a plain
``422`` (text/plain), ``input`` may hold any JSON value (its shape is the worker's to
judge), and nothing past the field types is checked here."""
from __future__ import annotations

from smg.api.validate._core import ANY, Shape, opt_string, opt_u32, string

FIELDS = {
    "model": string,
    "input": ANY,
    "encoding_format": opt_string,
    "user": opt_string,
    "dimensions": opt_u32,
}
REQUIRED = ("model", "input")

CLASSIFY_FIELDS = {"model": string, "input": ANY, "user": opt_string}


# ``/v1/classify``
validate_classify = Shape(CLASSIFY_FIELDS, REQUIRED, plain=True)
validate = Shape(FIELDS, REQUIRED, plain=True)
