"""Validation of rerank bodies: ``POST /rerank`` (SGLang's, typed with validation,
answered in the OpenAI error format) and ``POST /v1/rerank`` (decoded without
validation: a wrong field type is a plain ``422``; ``model`` is optional there)."""
from __future__ import annotations

from smg.api.validate._core import (Bad, decode_fault, first_rule_fault, int_range, opt_bool, opt_list_of, opt_string,
                                    opt_u32, rule_fault, rules, string, walk, wrong)

_DOCUMENTS = opt_list_of(string)


def _documents(v) -> None:
    if v is None:
        raise wrong(v, "a sequence")
    _DOCUMENTS(v)


FIELDS = {
    "query": string,
    "documents": _documents,
    "model": string,
    "top_k": opt_u32,
    "return_documents": opt_bool,
    "rid": opt_string,
    "user": opt_string,
}
REQUIRED = ("query", "documents", "model")


def _documents_rule(name, v):
    if not v:
        return rule_fault(name, "invalid_value", "documents list cannot be empty")
    return None


def _query_rule(name, v):
    return None if v else rule_fault(name, "invalid_value", "query cannot be empty")


RULES = rules({"query": _query_rule, "documents": _documents_rule, "top_k": int_range(1, None)})

# a JSON array decodes as the fields in declaration order
SEQUENCE = (string, _documents, string)

V1_FIELDS = {"query": string, "documents": _documents}
V1_REQUIRED = ("query", "documents")


def validate(body: dict):
    """``/rerank``: None for a body SMG accepts, else the ``Invalid`` answer."""
    try:
        walk(body, FIELDS, REQUIRED)
    except Bad as e:
        return decode_fault(e)
    return first_rule_fault(body, RULES)


def validate_v1(body: dict):
    """``/v1/rerank``: None for a body SMG accepts, else the (plain-text) ``Invalid``."""
    try:
        walk(body, V1_FIELDS, V1_REQUIRED)
    except Bad as e:
        return decode_fault(e, plain=True)
    return None
