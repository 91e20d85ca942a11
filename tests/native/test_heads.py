"""Differential tests for the header-line builders (smg.http1.heads).

Every test that takes ``impl`` runs against the pure-Python twin (id "py") and the native
one (id "c"; skipped when not built, an import error under SMG_REQUIRE_EXTENSIONS=1).

The oracle is the code the builders replaced, kept here as it was: the per-header loops
of smg.http1.writer.forward_headers and of smg.upstream.http1_leg.request_head (default
forwarding mode and ``--forward-all-headers``). The builders must give the same bytes
(and the same ``x-request-id`` bookkeeping, and the same verdict cache afterwards), and
the heads built with them must equal the old heads byte for byte.

- Hand cases: hop-by-hop names, Connection close / keep-alive / nominating, repeated
  x-request-id, the replaced set, rid replacement, names not classified yet, empty
  lists, tuples, bytes-like and str values, lines past the stack buffer.
- Property: hypothesis header lists (names from a pool of hop-by-hop, allow-listed and
  random tokens; values random bytes without CR/LF) give C == Py == oracle.
"""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smg.http1 import heads, writer
from smg.http1.heads import allowed_linesC, allowed_linesPy, header_linesC, header_linesPy
from smg.testing.twins import twin_params
from smg.upstream import forwarding
from smg.upstream.forwarding import CONNECTION, DEFAULT, FORWARD, Forwarding
from smg.upstream.http1_leg import _replaced, _skip_all, request_head
from smg.workers.worker import Worker

HEADER_LINES = twin_params(header_linesPy, header_linesC)
ALLOWED_LINES = twin_params(allowed_linesPy, allowed_linesC)
RID = b"x-request-id"


# --- the oracle: the loops as they were before smg.http1.heads -----------------------


def old_forward_headers(parts: list, headers: list, skip: frozenset) -> None:
    start = len(parts)
    for n, v in headers:
        if n in skip:
            if n == b"connection" and v.lower() not in (b"close", b"keep-alive"):
                nominated = writer.connection_tokens(headers)
                if not nominated <= skip:
                    del parts[start:]
                    full = skip | nominated
                    for n2, v2 in headers:
                        if n2 not in full:
                            parts.append(b"%s: %s\r\n" % (n2, v2))
                    return
            continue
        parts.append(b"%s: %s\r\n" % (n, v))


def old_allowed(parts: list, headers: list, fwd, replaced, rid) -> bool:
    """request_head's default-mode loop; appends lines to parts, returns has_rid."""
    verdict = fwd.verdict
    start = len(parts)
    nominated = None
    has_rid = False
    for n, v in headers:
        k = verdict.get(n)
        if k is None:
            k = fwd.classify(n)
        if k == FORWARD:
            if replaced is not None and n in replaced:
                continue
            if n == RID:
                if has_rid:
                    continue
                has_rid = True
                if rid is not None:
                    v = rid
            parts.append(b"%s: %s\r\n" % (n, v))
        elif k == CONNECTION and v.lower() not in (b"close", b"keep-alive"):
            nominated = writer.connection_tokens(headers)
    if nominated:
        kept = [p for p in parts[start:] if p.split(b":", 1)[0] not in nominated]
        del parts[start:]
        parts.extend(kept)
        has_rid = has_rid and RID not in nominated
    return has_rid


def old_request_head(method, target, worker, headers, body_len, trace=None, drop=None, fwd=DEFAULT, rid=None):
    parts = [b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (method, target, worker.host_header)]
    if body_len or method in (b"POST", b"PUT", b"PATCH"):
        parts.append(b"content-length: %d\r\n" % body_len if fwd.forward_all else
                     b"content-type: application/json\r\ncontent-length: %d\r\n" % body_len)
    if trace:
        for n, v in trace:
            parts.append(b"%s: %s\r\n" % (n, v))
    key = worker.api_key
    if key:
        parts.append(b"authorization: Bearer %s\r\n" % key)
    replaced = _replaced(True, bool(key), drop) if trace else \
        (_replaced(False, bool(key), drop) if key or drop is not None else None)
    if fwd.forward_all:
        skip = _skip_all(replaced or frozenset())
        sent_rid = any(n == RID for n, _ in headers)
        if sent_rid and rid is not None:
            skip = _skip_all(skip | {RID})
            parts.append(b"x-request-id: %s\r\n" % rid)
        old_forward_headers(parts, headers, skip)
        if fwd.mint_request_id and not sent_rid:
            parts.append(b"x-request-id: %s\r\n" % str(uuid.uuid4()).encode())
        parts.append(b"\r\n")
        return b"".join(parts)
    has_rid = old_allowed(parts, headers, fwd, replaced, rid)
    if not has_rid and fwd.mint_request_id:
        parts.append(b"x-request-id: %s\r\n" % str(uuid.uuid4()).encode())
    parts.append(b"\r\n")
    return b"".join(parts)


def nominates(headers, names=(b"connection",)) -> bool:
    return any(n in names and v.lower() not in (b"close", b"keep-alive") for n, v in headers)


def oracle_header_lines(headers, skip):
    """What header_lines must return: None when a skipped Connection header nominates
    names, else the old loop's lines."""
    if nominates(headers) and b"connection" in skip:
        return None
    parts: list = []
    old_forward_headers(parts, headers, skip)
    return b"".join(parts)


def oracle_allowed(headers, fwd, replaced, rid):
    """(result, verdict afterwards) that allowed_lines must give on a fresh fwd."""
    parts: list = []
    has_rid = old_allowed(parts, headers, fwd, replaced, rid)
    if any(fwd.verdict.get(n) == CONNECTION and v.lower() not in (b"close", b"keep-alive") for n, v in headers):
        return None, dict(fwd.verdict)
    return (b"".join(parts), has_rid), dict(fwd.verdict)


def run_allowed(impl, headers, fwd, replaced, rid):
    got = impl(headers, fwd.verdict, fwd.classify, replaced, rid)
    return got, dict(fwd.verdict)


def check_allowed(impl, headers, extra, replaced, rid):
    """impl on a fresh Forwarding(extra) agrees with the oracle; the verdicts it cached
    are the oracle's (all of them, or a part when it stopped early at a nominating
    Connection header: request_head's slow path classifies the rest)."""
    want, want_verdict = oracle_allowed(headers, Forwarding(extra), replaced, rid)
    got, verdict = run_allowed(impl, headers, Forwarding(extra), replaced, rid)
    assert got == want
    if got is None:
        assert verdict.items() <= want_verdict.items()
    else:
        assert verdict == want_verdict
    return want


# --- selector and constants ------------------------------------------------------------


def test_verdict_codes_agree_with_forwarding():
    assert (heads.DROP, heads.FORWARD, heads.CONNECTION) == (forwarding.DROP, forwarding.FORWARD,
                                                             forwarding.CONNECTION)
    if header_linesC is not None:
        from smg._native import heads as native
        assert (native.DROP, native.FORWARD, native.CONNECTION) == (0, 1, 2)


def test_selector_prefers_native():
    assert heads.header_lines is (header_linesC or header_linesPy)
    assert heads.allowed_lines is (allowed_linesC or allowed_linesPy)


# --- header_lines: hand cases ----------------------------------------------------------

HOP = writer.HOP_BY_HOP

HEADER_CASES = [
    ([], HOP),
    ([(b"content-type", b"application/json")], HOP),
    ([(b"content-type", b"a"), (b"content-length", b"12"), (b"x-mock", b"w1")], HOP),
    ([(b"transfer-encoding", b"chunked"), (b"keep-alive", b"timeout=5"), (b"x", b"")], HOP),
    ([(b"connection", b"close"), (b"x-ok", b"2")], HOP),
    ([(b"connection", b"Keep-Alive"), (b"x-ok", b"2")], HOP),
    ([(b"connection", b"CLOSE"), (b"x-ok", b"2")], HOP),
    ([(b"x-secret", b"1"), (b"connection", b"x-secret"), (b"x-ok", b"2")], HOP),
    ([(b"connection", b"upgrade"), (b"upgrade", b"h2c"), (b"x-ok", b"2")], HOP),   # nominated <= skip
    ([(b"connection", b"close, x-a"), (b"x-a", b"1")], HOP),
    ([(b"connection", b""), (b"x-a", b"1")], HOP),
    ([(b"connection", b"closed"), (b"x-a", b"1")], HOP),
    ([(b"connection", b"keep-alivE"), (b"x-a", b"1")], HOP),
    ([(b"connection", b"x-a")], frozenset()),   # connection not skipped: an ordinary line
    ([(b"access-control-allow-origin", b"*"), (b"vary", b"origin")],
     HOP | {b"access-control-allow-origin"}),
    ([(b"a", b"b"), (b"a", b"c"), (b"a", b"b")], HOP),
    ([(b"x-long", b"v" * 5000), (b"x-long2", b"w" * 3000)], HOP),   # past the stack buffer
    ([(b"x-%d" % i, b"v%d" % i) for i in range(400)], HOP),
    ([(b"x-b", b"\xff\x00\x80 tab\tend")], HOP),
]


@pytest.mark.parametrize("impl", HEADER_LINES)
@pytest.mark.parametrize("headers,skip", HEADER_CASES)
def test_header_lines_hand_cases(impl, headers, skip):
    assert impl(headers, skip) == oracle_header_lines(headers, skip)


@pytest.mark.parametrize("headers,skip", HEADER_CASES)
def test_forward_headers_output_is_unchanged(headers, skip):
    old: list = [b"HEAD\r\n"]
    old_forward_headers(old, headers, skip)
    new: list = [b"HEAD\r\n"]
    writer.forward_headers(new, headers, skip)
    assert b"".join(new) == b"".join(old)


@pytest.mark.parametrize("impl", HEADER_LINES)
def test_header_lines_other_shapes(impl):
    pairs = [(b"a", b"1"), (b"host", b"h"), (b"b", b"2")]
    want = b"a: 1\r\nb: 2\r\n"
    assert impl(tuple(pairs), HOP) == want
    assert impl([list(p) for p in pairs], HOP) == want
    assert impl(iter(pairs), HOP) == want
    assert impl(pairs, set(HOP)) == want
    assert impl(pairs, {b"host": 1}) == want   # any container with `in`
    assert impl([(b"a", bytearray(b"1")), (b"b", memoryview(b"2"))], HOP) == want
    assert impl([(b"a", b"1"), (b"connection", bytearray(b"x-a"))], HOP) is None
    with pytest.raises(TypeError):
        impl([(b"a", "str value")], HOP)
    with pytest.raises(TypeError):
        impl([("a", b"1")], HOP)
    with pytest.raises(TypeError):
        impl([(bytearray(b"a"), b"1")], HOP)   # unhashable name, as with the old loop
    with pytest.raises(ValueError):
        impl([(b"a", b"1", b"2")], HOP)
    with pytest.raises(TypeError):
        impl(None, HOP)


@pytest.mark.parametrize("impl", HEADER_LINES)
def test_header_lines_returns_exact_bytes(impl):
    for headers, skip in HEADER_CASES:
        got = impl(headers, skip)
        assert got is None or type(got) is bytes


# --- allowed_lines: hand cases ---------------------------------------------------------

ALLOWED_CASES = [
    [],
    [(b"user-agent", b"OpenAI/Python 1.54"), (b"content-type", b"application/json"),
     (b"authorization", b"Bearer sk-1"), (b"content-length", b"70")],
    [(b"x-request-id", b"r1"), (b"x-request-id", b"r2"), (b"x-request-id-extra", b"e")],
    [(b"x-request-id-a", b"1"), (b"x-request-id", b"r1")],
    [(b"traceparent", b"00-abc-def-01"), (b"tracestate", b"k=v"), (b"authorization", b"Bearer c")],
    [(b"connection", b"close"), (b"x-correlation-id", b"c1")],
    [(b"connection", b"Keep-Alive"), (b"x-correlation-id", b"c1")],
    [(b"x-request-id", b"r1"), (b"x-correlation-id", b"c1"), (b"connection", b"x-correlation-id")],
    [(b"connection", b"x-request-id"), (b"x-request-id", b"r1")],
    [(b"host", b"gw"), (b"te", b"trailers"), (b"cookie", b"a=b"), (b"x-api-key", b"k")],
    [(b"anthropic-version", b"2023-06-01"), (b"anthropic-beta", b"x"), (b"x-smg-routing-key", b"k")],
    [(b"x-correlation-id", b"c" * 3000), (b"authorization", b"d" * 3000)],   # past the stack buffer
    [(b"x-request-id-%d" % i, b"%d" % i) for i in range(300)],
]
REPLACED = [None, frozenset(), _replaced(True, False, None), _replaced(False, True, None),
            _replaced(True, True, b"authorization"), frozenset({RID})]


@pytest.mark.parametrize("impl", ALLOWED_LINES)
@pytest.mark.parametrize("headers", ALLOWED_CASES)
@pytest.mark.parametrize("replaced", REPLACED)
@pytest.mark.parametrize("rid", [None, b"gw-id"])
def test_allowed_lines_hand_cases(impl, headers, replaced, rid):
    for extra in ((), ("x-custom", "x-corr*")):
        want = check_allowed(impl, headers, extra, replaced, rid)
        # a second run finds every verdict cached: the same answer, classify not called
        fwd = Forwarding(extra)
        run_allowed(impl, headers, fwd, replaced, rid)
        cached = dict(fwd.verdict)

        def boom(name):
            raise AssertionError(name)

        assert impl(headers, fwd.verdict, boom, replaced, rid) == want
        assert fwd.verdict == cached


@pytest.mark.parametrize("impl", ALLOWED_LINES)
def test_allowed_lines_rid_replaces_the_first_only(impl):
    got = impl([(RID, b"a"), (RID, b"b")], {}, DEFAULT.classify, None, b"R")
    assert got == (b"x-request-id: R\r\n", True)
    assert impl([(RID, b"a")], {}, DEFAULT.classify, frozenset({RID}), b"R") == (b"", False)
    assert impl([(b"x-correlation-id", b"c")], {}, DEFAULT.classify, None, b"R") == \
        (b"x-correlation-id: c\r\n", False)


@pytest.mark.parametrize("impl", ALLOWED_LINES)
def test_allowed_lines_when_the_cache_is_full(impl):
    # classify() does not cache once the verdict table is full: every call asks again
    calls = []

    def classify(name):
        calls.append(name)
        return FORWARD if name.startswith(b"x-") else 0

    hdrs = [(b"x-a", b"1"), (b"y", b"2"), (b"x-a", b"3")]
    assert impl(hdrs, {}, classify, None, None) == (b"x-a: 1\r\nx-a: 3\r\n", False)
    assert calls == [b"x-a", b"y", b"x-a"]


@pytest.mark.parametrize("impl", ALLOWED_LINES)
def test_allowed_lines_other_shapes(impl):
    fwd = Forwarding()
    pairs = [(b"x-correlation-id", b"c"), (RID, b"r")]
    want = (b"x-correlation-id: c\r\nx-request-id: R\r\n", True)
    assert impl(tuple(pairs), fwd.verdict, fwd.classify, None, b"R") == want
    assert impl([list(p) for p in pairs], fwd.verdict, fwd.classify, None, b"R") == want
    assert impl(iter(pairs), fwd.verdict, fwd.classify, None, b"R") == want
    assert impl(pairs, fwd.verdict, fwd.classify, {RID: 1}, None) == (b"x-correlation-id: c\r\n", False)
    assert impl(pairs, fwd.verdict, fwd.classify, None, bytearray(b"R")) == want
    assert impl([(b"x-correlation-id", bytearray(b"c"))], fwd.verdict, fwd.classify, None, None) == \
        (b"x-correlation-id: c\r\n", False)
    assert impl([(b"connection", bytearray(b"x-a"))], fwd.verdict, fwd.classify, None, None) is None
    with pytest.raises(TypeError):
        impl([(b"x-correlation-id", "str")], fwd.verdict, fwd.classify, None, None)
    with pytest.raises(TypeError):
        impl(pairs, fwd.verdict, fwd.classify, None, "str rid")
    with pytest.raises(ValueError):
        impl([(b"a",)], fwd.verdict, fwd.classify, None, None)


@pytest.mark.parametrize("impl", ALLOWED_LINES)
def test_allowed_lines_survives_classify_mutating_the_list(impl):
    # pathological: classify() changes the list being read; no crash, same as the twin
    hdrs = [(b"x-a", b"1"), (b"x-b", b"2"), (b"x-c", b"3")]

    def classify(name):
        if hdrs:
            hdrs.pop()
        return FORWARD

    # (a pair already read is still sent, as with the list iterator of the twin)
    assert impl(hdrs, {}, classify, None, None) == (b"x-a: 1\r\nx-b: 2\r\n", False)

    hdrs2 = [(b"x-a", b"1")]

    def grow(name):
        if len(hdrs2) < 200:
            hdrs2.append((b"x-%d" % len(hdrs2), b"v" * 50))
        return FORWARD

    got = impl(hdrs2, {}, grow, None, None)
    assert got is not None and got[0].count(b"\r\n") == 200


# --- request_head and forward_headers against the old code -----------------------------


def _worker(key=None):
    w = Worker("http://127.0.0.1:8000")
    w.api_key = key
    return w


@pytest.fixture
def fixed_uuid(monkeypatch):
    u = uuid.UUID("12345678-1234-4234-8234-123456789abc")
    monkeypatch.setattr(uuid, "uuid4", lambda: u)


FWDS = [lambda: Forwarding(), lambda: Forwarding(("x-custom", "x-corr*")),
        lambda: Forwarding(request_id="uuid4"), lambda: Forwarding(forward_all=True),
        lambda: Forwarding(forward_all=True, request_id="uuid4")]


@pytest.mark.parametrize("mk", FWDS)
@pytest.mark.parametrize("headers", ALLOWED_CASES + [h for h, _ in HEADER_CASES])
def test_request_head_is_byte_identical(fixed_uuid, mk, headers):
    trace = [(b"traceparent", b"00-1-2-01"), (b"tracestate", b"gw=1")]
    for kw in ({}, {"trace": trace}, {"drop": b"authorization"}, {"rid": b"gw-rid"},
               {"trace": trace, "drop": b"x-api-key", "rid": b"r"}):
        for key in (None, b"sk-worker"):
            for method, blen in ((b"POST", 70), (b"GET", 0), (b"GET", 5)):
                want = old_request_head(method, b"/v1/chat/completions", _worker(key), headers, blen,
                                        fwd=mk(), **kw)
                got = request_head(method, b"/v1/chat/completions", _worker(key), headers, blen,
                                   fwd=mk(), **kw)
                assert got == want


# --- property tests --------------------------------------------------------------------

NAME_POOL = sorted(HOP | forwarding.SMG_FORWARDED | {
    b"content-type", b"cookie", b"x-api-key", b"x-request-id-a", b"x-request-id-", b"user-agent",
    b"x-custom", b"x-corr-1", b"openai-organization", b"access-control-allow-origin", b"vary"})
CONNECTION_VALUES = [b"close", b"keep-alive", b"Close", b"KEEP-ALIVE", b"x-custom", b"close, x-request-id",
                     b"x-correlation-id, authorization", b"", b"upgrade", b"te, trailer"]

token = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12).map(str.encode)
value = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
big_value = st.one_of(value, st.integers(1000, 4000).map(lambda n: b"v" * n))
pair = st.one_of(
    st.tuples(st.sampled_from(NAME_POOL), big_value),
    st.tuples(token, value),
    st.tuples(st.just(b"connection"), st.sampled_from(CONNECTION_VALUES) | value),
)
header_list = st.lists(pair, max_size=20)
skip_set = st.sampled_from([HOP, HOP | {b"access-control-allow-origin", b"vary"}, HOP | {b"x-custom"}])
replaced_set = st.sampled_from(REPLACED)
rid_value = st.one_of(st.none(), value)
fwd_args = st.sampled_from([(), ("x-custom",), ("x-corr*", "vary")])

PROP = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROP
@given(headers=header_list, skip=skip_set)
def test_header_lines_property(headers, skip):
    want = oracle_header_lines(headers, skip)
    assert header_linesPy(headers, skip) == want
    if header_linesC is not None:
        assert header_linesC(headers, skip) == want
    old: list = []
    old_forward_headers(old, headers, skip)
    new: list = []
    writer.forward_headers(new, headers, skip)
    assert b"".join(new) == b"".join(old)


@PROP
@given(headers=header_list, replaced=replaced_set, rid=rid_value, extra=fwd_args)
def test_allowed_lines_property(headers, replaced, rid, extra):
    want = check_allowed(allowed_linesPy, headers, extra, replaced, rid)
    if allowed_linesC is not None:
        assert check_allowed(allowed_linesC, headers, extra, replaced, rid) == want


@PROP
@given(headers=header_list, rid=rid_value, extra=fwd_args, forward_all=st.booleans(),
       traced=st.booleans(), key=st.sampled_from([None, b"sk-w"]),
       drop=st.sampled_from([None, b"authorization", b"x-api-key"]))
def test_request_head_property(headers, rid, extra, forward_all, traced, key, drop):
    trace = [(b"traceparent", b"00-1-2-01")] if traced else None
    fa = {"forward_all": forward_all}
    want = old_request_head(b"POST", b"/v1/x", _worker(key), headers, 12, trace, drop,
                            Forwarding(extra, **fa), rid)
    got = request_head(b"POST", b"/v1/x", _worker(key), headers, 12, trace, drop, Forwarding(extra, **fa), rid)
    assert got == want
