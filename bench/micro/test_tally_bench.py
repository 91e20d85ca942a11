"""Micro-benchmarks of the per-request observation: the SSE scanner's observe() on one
worker read, and one Tally call (histograms, TTFT/TPOT, usage, access line), C vs Py.

Run: pytest bench/micro/test_tally_bench.py --benchmark-only
Timings never gate pass/fail; the asserts only check that the work was done.
"""
from __future__ import annotations

import pytest

from smg.observability.metrics import DEFAULT_DURATION_BUCKETS, TPOT_BUCKETS, TTFT_BUCKETS
from smg.observability.tally import AccessBufferC, AccessBufferPy, TallyC, TallyPy
from smg.streaming.sse import SSEScannerC, SSEScannerPy
from smg.testing.twins import twin_params

PY = (SSEScannerPy, TallyPy, AccessBufferPy)
C = (SSEScannerC, TallyC, AccessBufferC) if TallyC is not None else None

_CHUNK = (b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"mock-model",'
          b'"choices":[{"index":0,"delta":{"content":" token"},"finish_reason":null}]}\n\n')
# one worker read of an 8-token answer, as the chunked parser hands it over: one piece per event
READ = [_CHUNK] * 10 + [b"data: [DONE]\n\n"]


@pytest.fixture(params=twin_params(PY, C))
def impl(request):
    return request.param


def test_observe_one_read(benchmark, impl):
    scanner_cls = impl[0]

    def run():
        sc = scanner_cls()
        sc.observe(READ)
        return sc

    sc = benchmark(run)
    assert sc.data_events == 11 and sc.done


def test_tally_record_stream_with_access_line(benchmark, impl):
    scanner_cls, tally_cls, buffer_cls = impl
    buf = buffer_cls(False)
    t = tally_cls({}, DEFAULT_DURATION_BUCKETS, TTFT_BUCKETS, TPOT_BUCKETS, b"method=POST path=/v1/chat/completions "
                  b"status=200 worker=http://127.0.0.1:8001 policy=round_robin model=mock-model", buf)
    sc = scanner_cls()
    sc.observe(READ)
    t0 = sc.first_t - 0.002

    def run():
        t.record_stream(sc.last_t + 0.001, t0, b"chatcmpl-0123456789abcdef01234567", 2200, sc)
        if buf.pending > 1 << 20:
            buf.take()

    benchmark(run)
    assert t.count > 0 and sum(t.ttft.counts) == t.count
