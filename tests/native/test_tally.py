"""smg.observability.tally: per-shape counters, histograms and access lines, both twins.

The native module and its twin must agree byte for byte (access lines) and count for
count (histograms); the expected values here are worked out by hand from the rules in
smg/_native/tally.pyx.
"""
from __future__ import annotations

import calendar
import math
from bisect import bisect_left

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smg.observability import tally as selector
from smg.observability.tally import AccessBufferC, AccessBufferPy, HistC, HistPy, TallyC, TallyPy
from smg.streaming.sse import SSEScannerC, SSEScannerPy
from smg.testing.twins import twin_params

# (Hist, AccessBuffer, Tally, SSEScanner) of one implementation
PY = (HistPy, AccessBufferPy, TallyPy, SSEScannerPy)
C = (HistC, AccessBufferC, TallyC, SSEScannerC) if TallyC is not None else None
IMPLS = [PY] + ([C] if C is not None else [])
BOUNDS = (0.001, 0.005, 0.01, 0.1, 1.0)
# 2023-11-14T22:13:20Z as a wall-clock second; `now` values below are on a monotonic clock
WALL = calendar.timegm((2023, 11, 14, 22, 13, 20))
MONO = 1000.0
OFFSET = WALL - MONO


@pytest.fixture(params=twin_params(PY, C))
def impl(request):
    return request.param


def test_selector_exports():
    assert selector.Tally is (TallyC or TallyPy)
    assert selector.Hist is (HistC or HistPy)
    assert selector.AccessBuffer is (AccessBufferC or AccessBufferPy)


# --- histograms ----------------------------------------------------------------------


def test_hist_le_buckets(impl):
    h = impl[0]((1.0, 0.001, 0.01))          # unsorted bounds are sorted
    assert h.bounds == (0.001, 0.01, 1.0)
    for v in (0.0005, 0.001, 0.002, 0.01, 5.0, 1.0):
        h.observe(v)
    # a value equal to a bound is in that bound's bucket (Prometheus "le")
    assert h.counts == [2, 2, 1, 1]
    assert h.sum == pytest.approx(0.0005 + 0.001 + 0.002 + 0.01 + 5.0 + 1.0)
    h.counts[0] = 99                            # counts is a copy
    assert h.counts[0] == 2


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(-1e3, 1e4, allow_nan=False), max_size=40))
def test_hist_matches_bisect_and_twins(values):
    expect = [0] * (len(BOUNDS) + 1)
    for v in values:
        expect[bisect_left(BOUNDS, v)] += 1
    for impl in IMPLS:
        h = impl[0](BOUNDS)
        for v in values:
            h.observe(v)
        assert h.counts == expect
        assert h.sum == pytest.approx(math.fsum(values), abs=1e-6)


# --- access lines --------------------------------------------------------------------


def buffer(impl, json=False):
    b = impl[1](json)
    b.offset = OFFSET
    return b


def test_text_line_exact(impl):
    b = buffer(impl)
    b.line(b"method=POST path=/v1/chat/completions status=200", MONO + 0.5, b"chatcmpl-1", 0.0012345, 0.0004,
           512)
    b.line(b"L", MONO + 61.0999, b"r2", 2.5, None, 0)
    assert b.take() == (
        b"2023-11-14T22:13:20.500Z INFO smg.access: request_id=chatcmpl-1 "
        b"method=POST path=/v1/chat/completions status=200 duration_ms=1.235 ttft_ms=0.400 bytes=512\n"
        b"2023-11-14T22:14:21.099Z INFO smg.access: request_id=r2 L duration_ms=2500.000 ttft_ms=- bytes=0\n")
    assert b.take() == b"" and b.pending == 0


def test_json_line_parses_and_escapes_the_request_id(impl):
    b = buffer(impl, json=True)
    labels = orjson.dumps({"level": "info", "logger": "smg.access", "status": 200})[1:-1]
    b.line(labels, MONO + 0.25, b'a"b\\c', 0.1, 0.0200004, 9)
    b.line(labels, MONO + 0.25, b"plain", 0.1, None, 0)
    lines = b.take().splitlines()
    first, second = (orjson.loads(x) for x in lines)
    assert first == {"level": "info", "logger": "smg.access", "status": 200, "ts": "2023-11-14T22:13:20.250Z",
                     "request_id": 'a"b\\c', "duration_ms": 100.0, "bytes": 9, "ttft_ms": 20.0}
    assert "ttft_ms" not in second and second["request_id"] == "plain"


def test_odd_values_are_clamped_not_raised(impl):
    b = buffer(impl)
    b.line(b"L", MONO, b"r", -0.5, -1.0, -3)      # negative: 0 (ttft < 0 means none)
    b.line(b"L", MONO, b"r", 1e12, None, 5)       # absurd: capped at 1e9 s
    assert b.take() == (b"2023-11-14T22:13:20.000Z INFO smg.access: request_id=r L duration_ms=0.000 ttft_ms=- "
                        b"bytes=0\n"
                        b"2023-11-14T22:13:20.000Z INFO smg.access: request_id=r L duration_ms=1000000000000.000 "
                        b"ttft_ms=- bytes=5\n")


@pytest.mark.skipif(C is None, reason="native extension not built")
@settings(max_examples=300, deadline=None)
@given(json=st.booleans(), now=st.floats(0, 1e6, allow_nan=False), offset=st.floats(0, 2e9, allow_nan=False),
       rid=st.binary(min_size=1, max_size=40).map(lambda b: bytes(0x21 + c % 94 for c in b)),
       dur=st.floats(-1, 1e4, allow_nan=False), ttft=st.none() | st.floats(0, 1e3, allow_nan=False),
       nbytes=st.integers(-5, 1 << 40))
def test_lines_c_equals_py(json, now, offset, rid, dur, ttft, nbytes):
    out = []
    for impl in (PY, C):
        b = impl[1](json)
        b.offset = offset
        b.line(b'"k":"v"' if json else b"k=v", now, rid, dur, ttft, nbytes)
        out.append(b.take())
    assert out[0] == out[1]
    if json:
        doc = orjson.loads(out[0])
        assert doc["request_id"] == rid.decode()


# --- tallies -------------------------------------------------------------------------

STREAM = [b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n', b'data: {"choices":[{"delta":{}}]}\n\n',
          b'data: {"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":5}}\n\n', b"data: [DONE]\n\n"]


def test_record_counts_duration_tokens_and_line(impl):
    Hist, Buf, Tally, _ = impl
    b = buffer(impl)
    t = Tally({"x": 1}, BOUNDS, (0.01, 0.1), (0.001,), b"L", b)
    t.record(MONO + 0.003, MONO, b"r1", 40, (7, 3))
    t.record(MONO + 0.5, MONO, b"r2", 0, None)
    assert (t.count, t.tok_in, t.tok_out) == (2, 7, 3)
    assert t.dur.counts == [0, 1, 0, 0, 1, 0]
    assert t.ttft.counts == [0, 0, 0] and t.labels == {"x": 1} and t.access == b"L"
    assert b.take() == (b"2023-11-14T22:13:20.003Z INFO smg.access: request_id=r1 L duration_ms=3.000 ttft_ms=- "
                        b"bytes=40\n"
                        b"2023-11-14T22:13:20.500Z INFO smg.access: request_id=r2 L duration_ms=500.000 ttft_ms=- "
                        b"bytes=0\n")


def test_record_without_a_log(impl):
    t = impl[2]({}, BOUNDS, BOUNDS, BOUNDS)
    t.record(MONO + 1, MONO, b"r", 1, None)
    assert t.count == 1 and t.dur.counts[-2] == 1


@pytest.mark.parametrize("scanner_impl", ["same", "other"])
def test_record_stream_from_the_scanner(impl, scanner_impl):
    Hist, Buf, Tally, Scanner = impl
    if scanner_impl == "other":
        if C is None:
            pytest.skip("native extension not built")
        Scanner = (PY if impl is C else C)[3]   # a twin scanner works too
    sc = Scanner()
    sc.observe(STREAM[:2])
    sc.observe(STREAM[2:])
    assert sc.first_t > 0 and sc.last_t >= sc.first_t
    t0 = sc.first_t - 0.02                       # TTFT 20 ms by construction
    t = Tally({}, BOUNDS, (0.01, 0.05, 0.1), (0.001, 0.1), b"L", None)
    t.record_stream(sc.last_t + 0.001, t0, b"r", 100, sc)
    assert (t.count, t.tok_in, t.tok_out) == (1, 11, 5)   # tokens from usage
    assert t.ttft.counts == [0, 1, 0, 0]
    gen = sc.last_t - sc.first_t
    if gen > 0:
        # usage says 5 output tokens: TPOT = generation time / 4
        assert t.tpot.sum == pytest.approx(gen / 4) and t.gen.sum == pytest.approx(gen)
    else:
        assert t.tpot.counts == [0, 0, 0]


def test_record_stream_without_events_or_usage(impl):
    Hist, Buf, Tally, Scanner = impl
    b = buffer(impl)
    t = Tally({}, BOUNDS, BOUNDS, BOUNDS, b"L", b)
    t.record_stream(MONO + 0.01, MONO, b"r", 0, Scanner())   # no event: no TTFT
    assert t.count == 1 and sum(t.ttft.counts) == 0
    assert b.take().endswith(b" ttft_ms=- bytes=0\n")
    sc = Scanner()
    sc.observe([b"data: a\n\n", b"data: b\n\n", b"data: c\n\n", b"data: [DONE]\n\n"])
    t.record_stream(sc.last_t, sc.first_t - 0.001, b"r", 0, sc)
    assert (t.tok_in, t.tok_out) == (0, 0)
    assert sum(t.ttft.counts) == 1
    line = b.take()
    assert b" ttft_ms=1.000 " in line
