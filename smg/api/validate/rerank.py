"""Validation of rerank bodies: ``POST /rerank`` (SGLang's, typed with validation,
answered in the OpenAI error format) and ``POST /v1/rerank`` (decoded without
validation: a wrong field type is a plain ``422``; ``model`` is optional there)."""
from __future__ import annotations

from smg.api.validate._core import (Shape, int_range, nonempty_rule, opt_bool, opt_list_of, opt_string, opt_u32,
                                    rule_fault, rules, screened, string, type_spec, wrong)
from smg.api.validate.screen import T_LIST

_DOCUMENTS = opt_list_of(string)


@screened((T_LIST, False, type_spec(string), None))
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


@nonempty_rule
def _documents_rule(name, v):
    if not v:
        return rule_fault(name, "invalid_value", "documents list cannot be empty")
    return None


@nonempty_rule
def _query_rule(name, v):
    return None if v else rule_fault(name, "invalid_value", "query cannot be empty")


RULES = rules({"query": _query_rule, "documents": _documents_rule, "top_k": int_range(1, None)})

# a JSON array decodes as the fields in declaration order
SEQUENCE = (string, _documents, string)

V1_FIELDS = {"query": string, "documents": _documents}
V1_REQUIRED = ("query", "documents")


validate = Shape(FIELDS, REQUIRED, RULES)  # ``/rerank``
validate_v1 = Shape(V1_FIELDS, V1_REQUIRED, plain=True)  # ``/v1/rerank``
