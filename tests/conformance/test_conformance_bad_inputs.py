"""Bad requests sent to both gateways: status, error code/type/param, and whether (and
what) reached the worker.

The cases come from the shared validation table ``tests/cases/validation_cases.py``
when it exists (``load_cases`` reads its entries whatever their form: mapping,
object or tuple), else from ``FALLBACK`` below. An entry this suite cannot read
fails ``test_validation_table_is_readable`` instead of being skipped.
"""
from __future__ import annotations

import importlib
from typing import Any

import pytest

from tests.conformance.case import Case, assert_same
from tests.conformance.ledger import LEDGER
from tests.conformance.rig import ECHO_MODEL

M = ECHO_MODEL
USER = [{"role": "user", "content": "hi"}]

# (id, path, body): body bytes are sent as they are, anything else as JSON
FALLBACK = [
    ("chat: body not JSON", "/v1/chat/completions", b"{not json"),
    ("chat: empty body", "/v1/chat/completions", b""),
    ("chat: body a list", "/v1/chat/completions", [1, 2]),
    ("chat: messages missing", "/v1/chat/completions", {"model": M}),
    ("chat: messages not a list", "/v1/chat/completions", {"model": M, "messages": "hi"}),
    ("chat: messages empty", "/v1/chat/completions", {"model": M, "messages": []}),
    ("chat: message without role", "/v1/chat/completions", {"model": M, "messages": [{"content": "hi"}]}),
    ("chat: unknown role", "/v1/chat/completions", {"model": M, "messages": [{"role": "wizard", "content": "x"}]}),
    ("chat: model not a string", "/v1/chat/completions", {"model": 7, "messages": USER}),
    ("chat: unknown model", "/v1/chat/completions", {"model": "no-such-model", "messages": USER}),
    ("chat: stream not a bool", "/v1/chat/completions", {"model": M, "messages": USER, "stream": "yes"}),
    ("chat: max_tokens negative", "/v1/chat/completions", {"model": M, "messages": USER, "max_tokens": -1}),
    ("chat: max_tokens a string", "/v1/chat/completions", {"model": M, "messages": USER, "max_tokens": "8"}),
    ("chat: temperature out of range", "/v1/chat/completions", {"model": M, "messages": USER, "temperature": 5}),
    ("chat: top_p out of range", "/v1/chat/completions", {"model": M, "messages": USER, "top_p": 1.5}),
    ("chat: n zero", "/v1/chat/completions", {"model": M, "messages": USER, "n": 0}),
    ("completions: prompt missing", "/v1/completions", {"model": M}),
    ("completions: prompt a number", "/v1/completions", {"model": M, "prompt": 5}),
    ("embeddings: input missing", "/v1/embeddings", {"model": M}),
    ("generate: neither text nor input_ids", "/generate", {"model": M}),
    ("messages: max_tokens missing", "/v1/messages", {"model": M, "messages": USER}),
    ("messages: body not JSON", "/v1/messages", b"[[["),
    ("rerank: documents missing", "/v1/rerank", {"model": M, "query": "q"}),
]


def _field(entry: Any, *names: str, default: Any = None) -> Any:
    for n in names:
        if isinstance(entry, dict) and n in entry:
            return entry[n]
        if not isinstance(entry, (dict, tuple, list)) and hasattr(entry, n):
            return getattr(entry, n)
    return default


def _from_entry(entry: Any) -> tuple:
    """(id, method, path, headers, body) of one table entry; raises ValueError if unreadable.

    A ``content_type`` field is the Content-Type sent (None: none at all); without one,
    a bytes body goes as ``application/json``. The model the table was recorded with
    (``mock-model``) is renamed to the echo worker's, so what reached it is compared."""
    if isinstance(entry, (tuple, list)) and len(entry) >= 3:
        return str(entry[0]), "POST", entry[1], [], _to_echo(entry[2])
    cid = _field(entry, "id", "name", "case_id")
    path = _field(entry, "path", "route", "endpoint")
    if cid is None or not isinstance(path, str):
        raise ValueError(f"no id/path in {entry!r}")
    method = _field(entry, "method", default="POST")
    headers = _field(entry, "headers", default=None) or []
    if isinstance(headers, dict):
        headers = list(headers.items())
    headers = list(headers)
    body = _field(entry, "raw", "raw_body", "body_bytes", default=None)
    if body is None:
        body = _field(entry, "body", "json", "payload", default=None)
    missing = object()
    ctype = _field(entry, "content_type", default=missing)
    if ctype is not missing and not any(n.lower() == "content-type" for n, _ in headers):
        headers.append(("Content-Type", ctype))  # None: send none (client.request skips it)
    return str(cid), str(method), path, headers, _to_echo(body)


def _to_echo(body: Any) -> Any:
    if isinstance(body, bytes):
        return body.replace(b'"mock-model"', ('"%s"' % M).encode())
    if isinstance(body, dict) and body.get("model") == "mock-model":
        return {**body, "model": M}
    return body


def load_cases() -> tuple:
    """(cases, source, unreadable entries)."""
    try:
        mod = importlib.import_module("tests.cases.validation_cases")
    except ModuleNotFoundError as e:
        if e.name not in ("tests.cases.validation_cases", "tests.cases"):
            raise
        mod = None
    table = None
    if mod is not None:
        for name in ("CASES", "VALIDATION_CASES", "cases"):
            table = getattr(mod, name, None)
            if table is not None:
                break
    source = "tests/cases/validation_cases.py" if table is not None else "fallback table"
    if table is None:
        table = FALLBACK
    cases, bad = [], []
    for entry in table:
        try:
            cid, method, path, headers, body = _from_entry(entry)
        except ValueError as e:
            bad.append(str(e))
            continue
        cases.append(Case(f"bad input: {cid}", method, path, headers=headers, body=body, worker=True))
    return cases, source, bad


CASES, SOURCE, UNREADABLE = load_cases()


def test_validation_table_is_readable():
    assert CASES, f"no cases read from {SOURCE}"
    assert not UNREADABLE, f"entries of {SOURCE} this suite cannot read: {UNREADABLE}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(rig, case):
    LEDGER.count("bad-input cases")
    assert_same(rig, case)
