"""Conformance and differential tests for the SSE scanner twins (smg.streaming.sse).

Every test that takes ``impl`` runs against the pure-Python twin (id "py") and the native
one (id "c"; skipped when not built, an import error under SMG_REQUIRE_EXTENSIONS=1).

- Corpus: each stream is fed whole, one byte at a time, and split at every index; the
  concatenated results and final attributes must equal the expectation written here.
- Property: random event lists, rendered with random terminators and chunked at random,
  give the generator's ground truth in both twins.
- Fuzz: arbitrary bytes split arbitrarily give C == Py per feed, agree with a spec-literal
  whole-stream oracle, and never raise anything but RemoteProtocolError.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smg import _native
from smg.errors import ProtocolError, RemoteProtocolError
from smg.streaming import sse as sse_selector
from smg.streaming.sse import DEFAULT_MAX_EVENT_SIZE, SSEScannerC, SSEScannerPy
from smg.testing.twins import twin_params

TWINS = twin_params(SSEScannerPy, SSEScannerC)
IMPLS = [SSEScannerPy] + ([SSEScannerC] if SSEScannerC is not None else [])

BOM = b"\xef\xbb\xbf"
DONE = b"[DONE]"
ATTRS = ("events", "data_events", "done", "last_data", "bytes_seen", "truncated")


# --- helpers ------------------------------------------------------------------------


def attrs(scanner) -> dict:
    return {name: getattr(scanner, name) for name in ATTRS}


def feed_all(cls, pieces, **kwargs):
    """Feed pieces then EOF; return (concatenated data, attributes)."""
    scanner = cls(**kwargs)
    got: list[bytes] = []
    for piece in pieces:
        res = scanner.feed(piece)
        assert type(res) is list
        assert all(type(d) is bytes for d in res)
        got.extend(res)
    assert scanner.feed_eof() == []
    return got, attrs(scanner)


def chunked(stream: bytes, size: int) -> list[bytes]:
    return [stream[i : i + size] for i in range(0, len(stream), size)]


def cut(stream: bytes, points) -> list[bytes]:
    points = sorted(set(points))
    bounds = [0, *points, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


def exp(
    data, *, events=None, data_events=None, done=None, last_data=..., truncated=False
):
    """An expectation; fields left out follow from `data` (all events carry data)."""
    if last_data is ...:
        rest = [d for d in data if d != DONE]
        last_data = rest[-1] if rest else None
    return {
        "data": list(data),
        "events": len(data) if events is None else events,
        "data_events": len(data) if data_events is None else data_events,
        "done": (DONE in data) if done is None else done,
        "last_data": last_data,
        "truncated": truncated,
    }


def check(result, expected, stream):
    got, at = result
    assert got == expected["data"]
    want = {k: v for k, v in expected.items() if k != "data"}
    want["bytes_seen"] = len(stream)
    assert at == want


# --- corpus -------------------------------------------------------------------------


def _chat(delta: dict, finish=None) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-9f2c",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            ],
        },
        separators=(",", ":"),
    ).encode()


USAGE = (
    b'{"id":"chatcmpl-9f2c","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[],'
    b'"usage":{"prompt_tokens":12,"completion_tokens":4,"total_tokens":16}}'
)
CHAT = [
    _chat({"role": "assistant", "content": ""}),
    _chat({"content": "Hello"}),
    _chat({"content": ", "}),
    _chat({"content": "w\u00f6rld \U0001f600"}),
    _chat({}, "stop"),
    USAGE,
]


def _openai(term: bytes) -> bytes:
    return (
        b"".join(b"data: " + c + term + term for c in CHAT)
        + b"data: [DONE]"
        + term
        + term
    )


LONG_A = b"A" * 3000
LONG_B = b"0123456789" * 100

CORPUS = [
    ("openai-lf", _openai(b"\n"), exp([*CHAT, DONE], last_data=USAGE)),
    ("openai-crlf", _openai(b"\r\n"), exp([*CHAT, DONE], last_data=USAGE)),
    ("openai-cr", _openai(b"\r"), exp([*CHAT, DONE], last_data=USAGE)),
    (
        "anthropic-style",
        (
            b'event: message_start\ndata: {"type":"message_start"}\n\n'
            b'event: ping\ndata: {"type": "ping"}\n\n'
            b": keep-alive\n\n"
            b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"text":"Hi"}}\n\n'
            b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
        ),
        exp(
            [
                b'{"type":"message_start"}',
                b'{"type": "ping"}',
                b'{"type":"content_block_delta","delta":{"text":"Hi"}}',
                b'{"type":"message_stop"}',
            ],
            events=5,
        ),
    ),
    (
        "multiline-data",
        b"data: first\ndata:second\ndata:  third\ndata\ndata:\n\n",
        exp([b"first\nsecond\n third\n\n"]),
    ),
    ("two-empty-data-lines", b"data:\ndata\n\n", exp([b"\n"])),
    (
        "empty-data",
        b"data:\n\ndata\n\ndata: \n\n",
        exp([b"", b"", b""], last_data=b""),
    ),
    ("no-space", b"data:x\n\n", exp([b"x"])),
    (
        "comments-and-fields",
        (
            b":ping\n\n"
            b"event: update\n\n"
            b"id: 42\n\n"
            b"retry: 1000\n\n"
            b"event: x\nid: 7\ndata: payload\nretry: 5\nfoo: bar\n\n"
            b": comment\ndata: a\n: between\ndata: b\n\n"
        ),
        exp([b"payload", b"a\nb"], events=6),
    ),
    (
        "field-names",
        (
            b"data : not data\n\n"
            b"Data: no\n\n"
            b"DATA: no\n\n"
            b"datax: no\n\n"
            b"dat: no\n\n"
            b"data:x:y\n\n"
            b"data:: z\n\n"
            b"data\tx\n\n"
        ),
        exp([b"x:y", b": z"], events=8),
    ),
    ("bom", BOM + b"data: x\n\n", exp([b"x"])),
    ("bom-crlf-blank-first", BOM + b"\r\n\r\ndata: x\r\n\r\n", exp([b"x"])),
    # Only one BOM is dropped; the second makes the first field "\xef\xbb\xbfdata".
    ("double-bom", BOM + BOM + b"data: x\n\ndata: y\n\n", exp([b"y"], events=2)),
    # A BOM prefix that is not a BOM is content: the first field is "\xef\xbbdata".
    ("partial-bom", b"\xef\xbbdata: x\n\ndata: y\n\n", exp([b"y"], events=2)),
    ("bom-only", BOM, exp([])),
    ("bom-prefix-only", b"\xef\xbb", exp([], truncated=True)),
    ("bom-not-at-start", b"data: x\n\n" + BOM + b"data: y\n\n", exp([b"x"], events=2)),
    (
        "done-variants",
        b'data: {"a":1}\n\ndata: [DONE] \n\ndata:[DONE]\n\ndata: after\n\n',
        exp([b'{"a":1}', b"[DONE] ", DONE, b"after"], last_data=b"after"),
    ),
    (
        "done-multiline-is-not-done",
        b"data: [DONE]\ndata: x\n\n",
        exp([b"[DONE]\nx"], done=False),
    ),
    (
        "keepalive-then-done",
        b": ping\n\n: ping\n\ndata: [DONE]\n\n",
        exp([DONE], events=3, data_events=1, done=True, last_data=None),
    ),
    (
        "mixed-terminators",
        b"data: a\r\rdata: b\r\n\r\ndata: c\n\r\ndata: d\r\n\ndata: e\n\r",
        exp([b"a", b"b", b"c", b"d", b"e"]),
    ),
    ("crlf-runs", b"data: x\r\n\r\n\r\n\n\r\r\n", exp([b"x"])),
    ("lone-cr-inside", b"data: a\rb\r\r", exp([b"a"])),
    ("cr-then-lf-blank", b"data: a\r\r\n", exp([b"a"])),
    (
        "truncated-partial-line",
        b"data: x\n\ndata: partial",
        exp([b"x"], truncated=True),
    ),
    ("truncated-complete-line", b"data: x\n\ndata: y\n", exp([b"x"], truncated=True)),
    ("truncated-comment", b"data: x\n\n: still going", exp([b"x"], truncated=True)),
    ("truncated-after-cr", b"data: x\r", exp([], truncated=True)),
    ("trailing-blank-lines", b"data: x\n\n\n\n", exp([b"x"])),
    ("empty", b"", exp([])),
    ("only-blank-lines", b"\n\r\n\r\r\n\n", exp([])),
    (
        "binary-data",
        b"data: \x00\xff\xfe caf\xc3\xa9\n\n",
        exp([b"\x00\xff\xfe caf\xc3\xa9"]),
    ),
    (
        "long-events",
        b"data: "
        + LONG_A
        + b"\ndata: "
        + LONG_B
        + b"\r\n\r\n: "
        + LONG_B
        + b"\n\ndata: small\n\n",
        exp([LONG_A + b"\n" + LONG_B, b"small"], events=3),
    ),
]
CORPUS_IDS = [c[0] for c in CORPUS]


@pytest.fixture(params=TWINS)
def impl(request):
    return request.param


@pytest.mark.parametrize("name,stream,expected", CORPUS, ids=CORPUS_IDS)
def test_corpus_whole(impl, name, stream, expected):
    check(feed_all(impl, [stream]), expected, stream)


@pytest.mark.parametrize("name,stream,expected", CORPUS, ids=CORPUS_IDS)
def test_corpus_byte_at_a_time(impl, name, stream, expected):
    check(feed_all(impl, chunked(stream, 1)), expected, stream)


@pytest.mark.parametrize("name,stream,expected", CORPUS, ids=CORPUS_IDS)
def test_corpus_every_split(impl, name, stream, expected):
    for i in range(len(stream) + 1):
        check(feed_all(impl, [stream[:i], stream[i:]]), expected, stream)


@pytest.mark.parametrize("name,stream,expected", CORPUS, ids=CORPUS_IDS)
def test_corpus_input_types(impl, name, stream, expected):
    for wrap in (bytearray, memoryview, lambda b: memoryview(bytearray(b))):
        check(feed_all(impl, [wrap(p) for p in chunked(stream, 7)]), expected, stream)


def test_corpus_c_equals_py_per_feed():
    if SSEScannerC is None:
        pytest.skip("native extension not built")
    for _, stream, _ in CORPUS:
        for size in (1, 2, 3, 5, 64, 1024):
            py, c = SSEScannerPy(), SSEScannerC()
            for piece in chunked(stream, size):
                assert py.feed(piece) == c.feed(piece)
                assert attrs(py) == attrs(c)
            assert py.feed_eof() == c.feed_eof() == []
            assert attrs(py) == attrs(c)


# --- API details --------------------------------------------------------------------


def test_crlf_split_survives_empty_pieces(impl):
    s = impl()
    assert s.feed(b"data: x\r") == []
    assert s.feed(b"") == []
    assert s.feed(b"\n") == []  # the LF of a CRLF, not a blank line
    assert s.feed(b"") == []
    assert s.feed(b"\n") == [b"x"]
    assert s.feed_eof() == [] and not s.truncated


def test_results_do_not_alias_a_mutable_input(impl):
    buf = bytearray(b"data: abc\n")  # the event is not finished: its data is kept
    s = impl()
    assert s.feed(buf) == []
    buf[:] = b"X" * len(buf)
    assert s.feed(b"data: d\n\n") == [b"abc\nd"]
    buf = bytearray(b"data: abc\n")
    assert s.feed(memoryview(buf)) == []
    buf[:] = b"Y" * len(buf)
    assert s.feed(b"\n") == [b"abc"]
    assert s.last_data == b"abc"


def test_non_contiguous_memoryview(impl):
    stream = b"ddaattaa::  xx\n\n\n\n"
    s = impl()
    assert s.feed(memoryview(stream)[::2]) == [b"x"]
    assert s.bytes_seen == len(stream) // 2


@pytest.mark.parametrize("bad", ["data: x\n\n", 1, None, [b"data"], 1.0])
def test_type_error(impl, bad):
    s = impl()
    with pytest.raises(TypeError):
        s.feed(bad)
    # a TypeError is the caller's bug, not the stream's: the scanner carries on
    assert s.feed(b"data: ok\n\n") == [b"ok"]


def test_initial_state_and_read_only_attributes(impl):
    s = impl()
    assert attrs(s) == {
        "events": 0,
        "data_events": 0,
        "done": False,
        "last_data": None,
        "bytes_seen": 0,
        "truncated": False,
    }
    assert s.max_event_size == DEFAULT_MAX_EVENT_SIZE == 8 * 1024 * 1024
    for name in (*ATTRS, "max_event_size"):
        with pytest.raises(AttributeError):
            setattr(s, name, getattr(s, name))


def test_constructor_arguments(impl):
    assert impl(max_event_size=1).max_event_size == 1
    assert impl(max_event_size=10**30).max_event_size == sys.maxsize
    for bad in (0, -1):
        with pytest.raises(ValueError):
            impl(max_event_size=bad)
    for bad in ("10", 1.5, None):
        with pytest.raises(TypeError):
            impl(max_event_size=bad)
    with pytest.raises(TypeError):
        impl(100)  # keyword-only


def test_feed_after_eof_is_ignored(impl):
    s = impl()
    assert s.feed(b"data: a\n\ndata: b") == [b"a"]
    assert s.feed_eof() == []
    assert s.truncated
    assert s.feed(b"\n\n") == []
    assert s.feed_eof() == []
    assert (s.events, s.bytes_seen, s.truncated) == (1, 16, True)


def test_done_then_more_events(impl):
    s = impl()
    assert s.feed(b"data: 1\n\ndata: [DONE]\n\n") == [b"1", DONE]
    assert s.done and s.last_data == b"1"
    assert s.feed(b"data: 2\n\n") == [b"2"]
    assert s.done and s.last_data == b"2"


def test_big_event_across_many_pieces(impl):
    payload = bytes(range(256)).replace(b"\r", b"").replace(b"\n", b"") * (
        3 * 4096
    )  # ~3 MiB
    stream = b": hi\n\ndata: " + payload + b"\r\n\r\ndata: [DONE]\r\n\r\n"
    for size in (1000, 1024, 65536):
        got, at = feed_all(impl, chunked(stream, size))
        assert got == [payload, DONE]
        assert at["events"] == 3 and at["last_data"] == payload and not at["truncated"]


# --- max_event_size -----------------------------------------------------------------


def test_limit_counts_line_content_not_terminators(impl):
    s = impl(max_event_size=10)
    assert s.feed(b"data: 1234\r\n\r\n") == [b"1234"]  # 10 content bytes: at the limit
    assert s.feed(b"\n" * 100 + b"\r" * 100) == []  # blank lines are not content


@pytest.mark.parametrize(
    "shape",
    [
        b"data: %s\n\n",  # the whole-event fast path
        b"data: %s\r\n\r\n",
        b"data:%s\rdata\r\r",
        b": c\ndata: %s\n\n",
        b"event: e\n%s\n\n",
        b"data: %s",  # never completed: the pending-tail check
        b"data: %s\n",
    ],
)
def test_limit_boundary(impl, shape):
    for n in range(12):
        stream = b"data: 1\n\n" + shape % (b"x" * n)
        size = sum(
            len(ln) for ln in re.split(rb"\r\n|\r|\n", stream[len(b"data: 1\n\n") :])
        )
        for limit in (size - 1, size, size + 1):
            if limit < 7:  # the first event has 7 content bytes
                continue
            for pieces in ([stream], chunked(stream, 1), chunked(stream, 4)):
                s = impl(max_event_size=limit)
                if size > limit:
                    with pytest.raises(RemoteProtocolError):
                        for p in pieces:
                            s.feed(p)
                    assert (s.events, s.last_data) == (1, b"1")
                else:
                    for p in pieces:
                        s.feed(p)


def test_limit_sums_the_lines_of_one_event(impl):
    s = impl(max_event_size=10)
    with pytest.raises(RemoteProtocolError):
        s.feed(b"data: 12\ndata: 34\n\n")  # 8 + 8 content bytes
    s = impl(max_event_size=12)
    assert s.feed(b"data:1\ndata:2\n\n") == [b"1\n2"]  # 6 + 6
    s = impl(max_event_size=10)
    with pytest.raises(RemoteProtocolError):
        s.feed(b":12345\n:12345\n\n")  # comments count too


def test_limit_error_details_and_error_state(impl):
    s = impl(max_event_size=10)
    with pytest.raises(RemoteProtocolError) as info:
        s.feed(b"data: a\n\ndata: 0123456789\n\ndata: b\n\n")
    assert isinstance(info.value, ProtocolError)
    assert info.value.status_hint == 502
    # the event before the oversized one was observed; nothing after it
    assert (s.events, s.data_events, s.last_data, s.done) == (1, 1, b"a", False)
    with pytest.raises(RemoteProtocolError) as again:
        s.feed(b"data: c\n\n")
    assert again.value.status_hint == 502
    with pytest.raises(RemoteProtocolError):
        s.feed(b"")
    assert s.feed_eof() == []
    assert s.truncated


def test_limit_on_a_pending_line(impl):
    s = impl(max_event_size=10)
    for i, byte in enumerate(b"data: 0123456789"):
        if i < 10:
            assert s.feed(bytes([byte])) == []
        else:
            with pytest.raises(RemoteProtocolError):
                s.feed(bytes([byte]))
            break
    s = impl(max_event_size=10)
    with pytest.raises(RemoteProtocolError):
        s.feed(b"data: 0123456789")  # no terminator yet, already too big


def test_limit_is_split_invariant(impl):
    stream = b"data: ok\r\n\r\n: 12\r\ndata: 345678\r\n\r\ndata: never\r\n\r\n"
    for i in range(len(stream) + 1):
        s = impl(max_event_size=16)  # the second event has 4 + 12 = 16: fine
        assert s.feed(stream[:i]) + s.feed(stream[i:]) == [b"ok", b"345678", b"never"]
        s = impl(max_event_size=15)
        got = []
        with pytest.raises(RemoteProtocolError):
            got += s.feed(stream[:i])
            got += s.feed(stream[i:])
        assert (s.events, s.last_data) == (1, b"ok")


def test_default_limit(impl):
    s = impl()
    big = b"x" * (DEFAULT_MAX_EVENT_SIZE - 6)
    assert s.feed(b"data: " + big + b"\n\n") == [big]
    with pytest.raises(RemoteProtocolError):
        s.feed(b"data: " + big + b"x")


# --- selector -----------------------------------------------------------------------


def test_selector_exports():
    assert sse_selector.SSEScannerPy is SSEScannerPy
    if _native.NO_EXTENSIONS:
        assert SSEScannerC is None
    assert sse_selector.SSEScanner is (SSEScannerC or SSEScannerPy)


@pytest.mark.skipif(
    os.environ.get("SMG_REQUIRE_EXTENSIONS", "") in ("", "0"),
    reason="only meaningful when SMG_REQUIRE_EXTENSIONS=1",
)
def test_require_extensions_selects_native():
    assert SSEScannerC is not None
    assert sse_selector.SSEScanner is SSEScannerC


@pytest.mark.skipif(SSEScannerC is None, reason="native extension not built")
def test_require_extensions_selects_native_subprocess():
    env = {k: v for k, v in os.environ.items() if k != "SMG_NO_EXTENSIONS"}
    env["SMG_REQUIRE_EXTENSIONS"] = "1"
    code = (
        "import smg.streaming.sse as m; "
        "assert m.SSEScannerC is not None and m.SSEScanner is m.SSEScannerC; "
        "print(m.SSEScanner.__module__)"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    res = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "smg._native.sse"


# --- property test: generated streams with known ground truth -----------------------

_value = st.one_of(
    st.sampled_from(
        [b"", b"x", b" x", b"[DONE]", b'{"usage":{"total_tokens":3}}', b":", b"data: y"]
    ),
    st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
)
_other_field = st.sampled_from(
    [b"event", b"id", b"retry", b"foo", b"dat", b"data ", b"DATA", b"datax"]
)


@st.composite
def _line(draw):
    """One non-blank line: (content, data value or None)."""
    kind = draw(st.sampled_from(["data", "data", "comment", "field"]))
    value = draw(_value)
    if kind == "data":
        if value == b"" and draw(st.booleans()):
            return b"data", b""
        if value.startswith(b" ") or draw(st.booleans()):
            return b"data: " + value, value
        return b"data:" + value, value
    if kind == "comment":
        return b":" + value, None
    name = draw(_other_field)
    sep = draw(st.sampled_from([b":", b": ", b""]))
    return name + (sep + value if sep else b""), None


@st.composite
def _stream(draw):
    events = draw(st.lists(st.lists(_line(), max_size=4), max_size=8))
    tail = draw(st.lists(_line(), max_size=2))
    partial = draw(st.one_of(st.just(b""), _line().map(lambda lv: lv[0])))
    bom = draw(st.booleans())
    terms = st.sampled_from([b"\n", b"\r\n", b"\r"])

    out = [BOM] if bom else []
    prev = b""

    def emit(content):
        nonlocal prev
        term = draw(terms)
        if prev == b"\r" and content == b"" and term == b"\n":
            term = b"\r\n"  # CR + LF would be one terminator, not two
        out.append(content + term)
        prev = term

    truth = {
        "data": [],
        "events": 0,
        "data_events": 0,
        "done": False,
        "last_data": None,
    }
    sizes = []  # content size of each event, in order, for the limit check
    for ev in events:
        for content, _ in ev:
            emit(content)
        emit(b"")
        values = [v for _, v in ev if v is not None]
        if ev:
            sizes.append(sum(len(c) for c, _ in ev))
            truth["events"] += 1
            if values:
                d = b"\n".join(values)
                truth["data"].append(d)
                truth["data_events"] += 1
                if d == DONE:
                    truth["done"] = True
                else:
                    truth["last_data"] = d
    for content, _ in tail:
        emit(content)
    out.append(partial)
    if tail or partial:
        sizes.append(sum(len(c) for c, _ in tail) + len(partial))
    truth["truncated"] = bool(tail or partial)
    return b"".join(out), truth, sizes


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gen=_stream(), data=st.data())
def test_property_generated_streams(gen, data):
    stream, truth, _ = gen
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    chunkings = [[stream], cut(stream, cuts), chunked(stream, 1)]
    assert oracle(stream, sys.maxsize) == dict(truth, error=False)
    want = dict(truth, bytes_seen=len(stream))
    data_want = want.pop("data")
    for cls in IMPLS:
        for pieces in chunkings:
            got, at = feed_all(cls, pieces)
            assert got == data_want
            assert at == want


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gen=_stream(), data=st.data())
def test_property_generated_streams_with_limit(gen, data):
    stream, _, sizes = gen
    limit = data.draw(st.integers(1, 40))
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    want = _normalise(oracle(stream, limit))
    assert want["error"] == any(size > limit for size in sizes)
    for cls in IMPLS:
        for pieces in ([stream], cut(stream, cuts), chunked(stream, 1)):
            assert run_to_end(cls, pieces, limit) == want


# --- fuzz: arbitrary bytes, spec-literal oracle -------------------------------------


def oracle(stream: bytes, limit: int) -> dict:
    """WHATWG SSE over the whole stream at once, written for clarity, not speed.

    Returns the data list and attributes; with error=True, the counters are those at the
    point where the first event over `limit` content bytes was seen.
    """
    st_ = {"data": [], "events": 0, "data_events": 0, "done": False, "last_data": None}
    if stream and len(stream) < 3 and BOM.startswith(stream):
        return dict(
            st_, error=False, truncated=True
        )  # still waiting to see if it is a BOM
    if stream.startswith(BOM):
        stream = stream[3:]
    *lines, partial = re.split(rb"\r\n|\r|\n", stream)
    values: list[bytes] = []
    pending = False
    size = 0
    for line in lines:
        if not line:
            if pending:
                st_["events"] += 1
                if values:
                    d = b"\n".join(values)
                    st_["data"].append(d)
                    st_["data_events"] += 1
                    if d == DONE:
                        st_["done"] = True
                    else:
                        st_["last_data"] = d
            values, pending, size = [], False, 0
            continue
        pending = True
        size += len(line)
        if size > limit:
            return dict(st_, error=True, truncated=True)
        if line.startswith(b":"):
            continue
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            values.append(value)
    if size + len(partial) > limit:
        return dict(st_, error=True, truncated=True)
    return dict(st_, error=False, truncated=bool(partial) or pending)


def run_to_end(cls, pieces, limit) -> dict:
    """Like oracle(): feed pieces; an error stops the run (the scanner refuses more input)."""
    s = cls(max_event_size=limit)
    got: list[bytes] = []
    error = False
    try:
        for piece in pieces:
            got += s.feed(piece)
    except RemoteProtocolError as exc:
        assert exc.status_hint == 502
        error = True
        got = None
    s.feed_eof()
    res = {
        k: getattr(s, k)
        for k in ("events", "data_events", "done", "last_data", "truncated")
    }
    if error:
        # after an error only the counters are comparable: data up to the raise was not
        # returned by the feed that raised
        res["data"] = None
    else:
        res["data"] = got
    res["error"] = error
    return res


def _normalise(want: dict) -> dict:
    want = dict(want)
    if want["error"]:
        want["data"] = None
    return want


_fuzz_bytes = st.one_of(
    st.binary(max_size=200),
    st.lists(
        st.sampled_from(
            [
                b"data:",
                b"data: ",
                b"data",
                b"\r",
                b"\n",
                b"\r\n",
                b":",
                b" ",
                b"x",
                b"[DONE]",
                b"\xef",
                b"\xbb",
                b"\xbf",
                b"event: e",
                b"id",
                b"\x00",
                b"\xff",
            ]
        ),
        max_size=60,
    ).map(b"".join),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=_fuzz_bytes, data=st.data())
def test_fuzz_arbitrary_bytes(stream, data):
    limit = data.draw(st.one_of(st.integers(1, 24), st.just(DEFAULT_MAX_EVENT_SIZE)))
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=16))
    pieces = cut(stream, cuts)
    want = _normalise(oracle(stream, limit))
    for cls in IMPLS:
        for p in ([stream], pieces, chunked(stream, 1)):
            assert run_to_end(cls, p, limit) == want
    # C == Py feed by feed, exceptions included
    if SSEScannerC is not None:
        py, c = SSEScannerPy(max_event_size=limit), SSEScannerC(max_event_size=limit)
        for piece in [*pieces, b"more\n\n"]:
            outcome = []
            for s in (py, c):
                try:
                    outcome.append(("ok", s.feed(piece)))
                except RemoteProtocolError as exc:
                    outcome.append(("error", exc.status_hint))
            assert outcome[0] == outcome[1]
            assert attrs(py) == attrs(c)
        assert py.feed_eof() == c.feed_eof() == []
        assert attrs(py) == attrs(c)
