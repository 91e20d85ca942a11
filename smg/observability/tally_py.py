"""Pure-Python twin of smg._native.tally: per-request-shape accumulators and access lines.

Import from :mod:`smg.observability.tally` (the selector), not from here. Same API and
the same results byte for byte as the native module, whose docstring states the rules;
tests/native/test_tally.py runs both on the same inputs.
"""
from __future__ import annotations

import math
import time
from bisect import bisect_left

# The API shared with smg._native.tally (its stub, tally.pyi); the rest is this twin's own.
__all__ = ["AccessBuffer", "Hist", "Tally"]

# Durations above this (seconds) are printed as this.
MAX_SECONDS = 1e9


class Hist:
    """A histogram cell: counts per "le" bucket (the last one is +Inf) and the sum."""

    __slots__ = ("bounds", "_counts", "sum")

    def __init__(self, bounds) -> None:
        self.bounds = tuple(sorted(float(x) for x in bounds))
        self._counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    @property
    def counts(self) -> list:
        return list(self._counts)

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


def _ms(seconds: float) -> bytes:
    if seconds > MAX_SECONDS:
        seconds = MAX_SECONDS
    us = int(seconds * 1e6 + 0.5) if seconds > 0 else 0
    return b"%d.%03d" % divmod(us, 1000)


class AccessBuffer:
    """Access lines waiting for the next flush (smg.observability.logs.AccessLog owns it)."""

    __slots__ = ("json", "offset", "_lines", "_pending", "_sec", "_prefix")

    def __init__(self, json: bool = False) -> None:
        self.json = bool(json)
        self.offset = 0.0  # wall clock minus the monotonic clock, refreshed by the owner
        self._lines: list = []
        self._pending = 0
        self._sec = -1
        self._prefix = b""

    @property
    def pending(self) -> int:
        return self._pending

    def take(self) -> bytes:
        lines = self._lines
        self._lines = []
        self._pending = 0
        return b"".join(lines)

    def line(self, labels: bytes, now: float, rid: bytes, duration: float, ttft, nbytes: int) -> None:
        self._line(labels, now, rid, duration, -1.0 if ttft is None else float(ttft), nbytes)

    def _stamp(self, now: float) -> bytes:
        w = now + self.offset
        fsec = math.floor(w)
        ms = min(max(int((w - fsec) * 1000.0), 0), 999)
        if fsec != self._sec:
            self._sec = fsec
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(fsec)).encode()
        return b"%s.%03d" % (self._prefix, ms)

    def _line(self, labels: bytes, now: float, rid: bytes, duration: float, ttft: float, nbytes: int) -> None:
        nbytes = max(nbytes, 0)
        if self.json:
            rid = rid.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
            tail = b',"ttft_ms":%s}\n' % _ms(ttft) if ttft >= 0 else b"}\n"
            line = b'{%s,"ts":"%sZ","request_id":"%s","duration_ms":%s,"bytes":%d%s' % (
                labels, self._stamp(now), rid, _ms(duration), nbytes, tail)
        else:
            line = b"%sZ INFO smg.access: request_id=%s %s duration_ms=%s ttft_ms=%s bytes=%d\n" % (
                self._stamp(now), rid, labels, _ms(duration), _ms(ttft) if ttft >= 0 else b"-", nbytes)
        self._lines.append(line)
        self._pending += len(line)


class Tally:
    """Counters, histograms and access-log labels of one request shape."""

    __slots__ = ("count", "tok_in", "tok_out", "dur", "ttft", "tpot", "gen", "labels", "access", "_log")

    def __init__(self, labels, dur_bounds, ttft_bounds, tpot_bounds, access: bytes = b"",
                 log: AccessBuffer | None = None) -> None:
        self.labels = labels
        self.count = 0
        self.tok_in = 0
        self.tok_out = 0
        self.dur = Hist(dur_bounds)
        self.ttft = Hist(ttft_bounds)
        self.tpot = Hist(tpot_bounds)
        self.gen = Hist(dur_bounds)
        self.access = access
        self._log = log

    def record(self, now: float, t0: float, rid: bytes, nbytes: int, usage) -> None:
        """A finished request that was not an observed stream; ``usage`` is (in, out) or None."""
        d = now - t0
        self.count += 1
        self.dur.observe(d)
        if usage is not None:
            self.tok_in += usage[0]
            self.tok_out += usage[1]
        if self._log is not None:
            self._log._line(self.access, now, rid, d, -1.0, nbytes)

    def record_stream(self, now: float, t0: float, rid: bytes, nbytes: int, scanner) -> None:
        """A finished SSE stream, timed by its scanner (SSEScanner.observe)."""
        d = now - t0
        self.count += 1
        self.dur.observe(d)
        ttft = -1.0
        first = scanner.first_t
        if first != 0.0:
            ttft = max(first - t0, 0.0)
            self.ttft.observe(ttft)
            usage = scanner.usage()
            tokens = scanner.data_events - scanner.done
            if usage is not None:
                self.tok_in += usage[0]
                self.tok_out += usage[1]
                tokens = usage[1]
            gen = scanner.last_t - first
            if tokens > 1 and gen > 0:
                self.tpot.observe(gen / (tokens - 1))
                self.gen.observe(gen)
        if self._log is not None:
            self._log._line(self.access, now, rid, d, ttft, nbytes)
