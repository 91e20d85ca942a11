# cython: language_level=3
"""smg._native.tally: per-request-shape accumulators and access-log lines.

Twin: smg/observability/tally_py.py.  Selector: smg/observability/tally.py (import from there).
Contract (fields, cdef methods, lifetime rule): smg/_native/tally.pxd.

Theory of operation: every finished request belongs to a shape (method, path, status,
model, worker, policy, ...; see smg.observability.observer). Its Tally holds the shape's
counters and histograms and the shape's pre-rendered access-log labels, so recording a
request is one call: count it, put its duration (and, for a stream, TTFT, TPOT and
generation time read off the SSE scanner) into the histograms, add its token usage, and
append its access line to the shared AccessBuffer. Prometheus families are folded from
the tallies at scrape time (smg.observability.metrics).

Rules:
- Same results as the twin, byte for byte (tests/native/test_tally.py): histograms use
  Prometheus "le" buckets (the bucket of v is the first bound >= v, else +Inf), durations
  are printed as milliseconds with exactly three decimals (rounded to the microsecond),
  timestamps as UTC ``YYYY-MM-DDTHH:MM:SS.mmmZ``.
- An access line is one line: the request id is the only per-request string and it is
  printable ASCII (smg.api.request_id); in JSON lines its quote and backslash are escaped.
- Never raises on the hot path except MemoryError.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.math cimport floor
from libc.string cimport memcpy

from smg._native.buffer cimport bytebuf_free, bytebuf_reserve
from smg._native.sse cimport SSEScanner

cdef extern from "time.h" nogil:
    ctypedef long time_t
    struct tm:
        pass
    tm* gmtime_r(const time_t* timep, tm* result)
    size_t strftime(char* s, size_t maxsize, const char* fmt, const tm* t)

cdef enum:
    # A number printed here has at most 20 digits; a line's fixed text is under 128 bytes.
    LINE_FIXED = 192
    # A buffer grown past this by one burst is freed once taken, not kept.
    KEEP_BUFFER_MAX = 1 << 20

# Durations above this (seconds) are printed as this: no request lives 30 years.
cdef double MAX_SECONDS = 1e9

# The public API, as in tally.pyi and the twin (tests/test_stubs.py checks all three agree).
__all__ = ["AccessBuffer", "Hist", "Tally"]


cdef class Hist:
    """A histogram cell: counts per "le" bucket (the last one is +Inf) and the sum."""

    # fields: tally.pxd

    def __cinit__(self, bounds):
        cdef Py_ssize_t i
        b = tuple(sorted(float(x) for x in bounds))
        self._n = len(b)
        self._bounds = <double*>PyMem_Malloc((self._n + 1) * sizeof(double))
        self._counts = <long long*>PyMem_Malloc((self._n + 1) * sizeof(long long))
        if self._bounds == NULL or self._counts == NULL:
            raise MemoryError()
        for i in range(self._n):
            self._bounds[i] = b[i]
        for i in range(self._n + 1):
            self._counts[i] = 0
        self.bounds = b
        self.sum = 0.0

    def __dealloc__(self):
        PyMem_Free(self._bounds)
        PyMem_Free(self._counts)

    @property
    def counts(self):
        """Observations per bucket, +Inf last (a new list)."""
        return [self._counts[i] for i in range(self._n + 1)]

    def observe(self, double value):
        self.add(value)

    cdef inline void add(self, double value) noexcept:
        # first bound >= value (bisect_left); buckets are few, so a linear scan wins
        cdef Py_ssize_t i = 0
        while i < self._n and self._bounds[i] < value:
            i += 1
        self._counts[i] += 1
        self.sum += value


cdef inline char* _put(char* p, const char* s, Py_ssize_t n) noexcept:
    memcpy(p, s, <size_t>n)
    return p + n


cdef inline char* _uint(char* p, unsigned long long v) noexcept:
    cdef char tmp[24]
    cdef int n = 0
    while True:
        tmp[n] = <char>(48 + v % 10)
        v //= 10
        n += 1
        if v == 0:
            break
    while n:
        n -= 1
        p[0] = tmp[n]
        p += 1
    return p


cdef inline char* _ms(char* p, double seconds) noexcept:
    # seconds as milliseconds with three decimals, rounded to the microsecond
    cdef long long us
    if seconds > MAX_SECONDS:
        seconds = MAX_SECONDS
    us = <long long>(seconds * 1e6 + 0.5) if seconds > 0 else 0
    p = _uint(p, <unsigned long long>(us // 1000))
    us = us % 1000
    p[0] = b'.'
    p[1] = <char>(48 + us // 100)
    p[2] = <char>(48 + us // 10 % 10)
    p[3] = <char>(48 + us % 10)
    return p + 4


cdef class AccessBuffer:
    """Access lines waiting for the next flush (smg.observability.logs.AccessLog owns it)."""

    # fields: tally.pxd

    def __cinit__(self, bint json=False):
        self.json = json
        self.offset = 0.0
        self._sec = -1
        self._plen = 0

    def __dealloc__(self):
        bytebuf_free(&self._b)

    @property
    def pending(self):
        """Bytes waiting."""
        return self._b.len

    def take(self):
        """Every line since the last take (each ending in LF), as bytes; empties the buffer."""
        d = PyBytes_FromStringAndSize(self._b.buf, self._b.len)
        self._b.len = 0
        if self._b.cap > KEEP_BUFFER_MAX:
            bytebuf_free(&self._b)
        return d

    def line(self, bytes labels, double now, bytes rid, double duration, ttft, long long nbytes):
        """Appends one line (``ttft`` None: not a stream); ``now`` is on the monotonic clock."""
        self._line(labels, now, rid, duration, -1.0 if ttft is None else <double>ttft, nbytes)

    cdef char* _stamp(self, char* p, double now) noexcept:
        # "YYYY-MM-DDTHH:MM:SS.mmm" (UTC) of the wall-clock time `now + offset`
        cdef double w = now + self.offset
        cdef double fsec = floor(w)
        cdef long long ms = <long long>((w - fsec) * 1000.0)
        cdef time_t sec = <time_t>fsec
        cdef tm t
        if ms > 999:
            ms = 999
        elif ms < 0:
            ms = 0
        if <long long>sec != self._sec:
            self._sec = <long long>sec
            gmtime_r(&sec, &t)
            self._plen = strftime(self._prefix, 32, b"%Y-%m-%dT%H:%M:%S", &t)
        p = _put(p, self._prefix, self._plen)
        p[0] = b'.'
        p[1] = <char>(48 + ms // 100)
        p[2] = <char>(48 + ms // 10 % 10)
        p[3] = <char>(48 + ms % 10)
        return p + 4

    cdef int _line(self, bytes labels, double now, bytes rid, double duration, double ttft,
                   long long nbytes) except -1:
        cdef Py_ssize_t rlen = PyBytes_GET_SIZE(rid)
        cdef Py_ssize_t llen = PyBytes_GET_SIZE(labels)
        cdef const char* r = PyBytes_AS_STRING(rid)
        cdef char* p
        cdef Py_ssize_t i
        bytebuf_reserve(&self._b, LINE_FIXED + llen + 2 * rlen)
        p = self._b.buf + self._b.len
        if nbytes < 0:
            nbytes = 0
        if self.json:
            p[0] = b'{'
            p = _put(p + 1, PyBytes_AS_STRING(labels), llen)
            p = _put(p, b',"ts":"', 7)
            p = self._stamp(p, now)
            p = _put(p, b'Z","request_id":"', 17)
            for i in range(rlen):
                if r[i] == b'"' or r[i] == b'\\':
                    p[0] = b'\\'
                    p += 1
                p[0] = r[i]
                p += 1
            p = _put(p, b'","duration_ms":', 16)
            p = _ms(p, duration)
            p = _put(p, b',"bytes":', 9)
            p = _uint(p, <unsigned long long>nbytes)
            if ttft >= 0:
                p = _put(p, b',"ttft_ms":', 11)
                p = _ms(p, ttft)
            p = _put(p, b'}\n', 2)
        else:
            p = self._stamp(p, now)
            p = _put(p, b"Z INFO smg.access: request_id=", 30)
            p = _put(p, r, rlen)
            p[0] = b' '
            p = _put(p + 1, PyBytes_AS_STRING(labels), llen)
            p = _put(p, b" duration_ms=", 13)
            p = _ms(p, duration)
            if ttft >= 0:
                p = _put(p, b" ttft_ms=", 9)
                p = _ms(p, ttft)
            else:
                p = _put(p, b" ttft_ms=-", 10)
            p = _put(p, b" bytes=", 7)
            p = _uint(p, <unsigned long long>nbytes)
            p[0] = b'\n'
            p += 1
        self._b.len = p - self._b.buf
        return 0


cdef class Tally:
    """Counters, histograms and access-log labels of one request shape."""

    # fields: tally.pxd

    def __cinit__(self, labels, dur_bounds, ttft_bounds, tpot_bounds, bytes access=b"", AccessBuffer log=None):
        self.labels = labels
        self.dur = Hist(dur_bounds)
        self.ttft = Hist(ttft_bounds)
        self.tpot = Hist(tpot_bounds)
        self.gen = Hist(dur_bounds)
        self.access = access
        self._log = log

    def record(self, double now, double t0, bytes rid, long long nbytes, usage):
        """A finished request that was not an observed stream; ``usage`` is (in, out) or None."""
        cdef double d = now - t0
        self.count += 1
        self.dur.add(d)
        if usage is not None:
            self.tok_in += <long long>usage[0]
            self.tok_out += <long long>usage[1]
        if self._log is not None:
            self._log._line(self.access, now, rid, d, -1.0, nbytes)

    def record_stream(self, double now, double t0, bytes rid, long long nbytes, scanner):
        """A finished SSE stream, timed by its scanner (SSEScanner.observe)."""
        cdef double d = now - t0
        cdef double first, last, gen, ttft = -1.0
        cdef long long tokens
        cdef SSEScanner sc
        self.count += 1
        self.dur.add(d)
        if type(scanner) is SSEScanner:
            sc = <SSEScanner>scanner
            first = sc.first_t
            last = sc.last_t
            usage = sc._last_usage() if first != 0.0 else None
            tokens = sc.data_events - sc.done
        else:  # the twin scanner (differential tests)
            first = scanner.first_t
            last = scanner.last_t
            usage = scanner.usage() if first != 0.0 else None
            tokens = scanner.data_events - scanner.done
        if first != 0.0:
            ttft = first - t0
            if ttft < 0:
                ttft = 0.0
            self.ttft.add(ttft)
            if usage is not None:
                self.tok_in += <long long>usage[0]
                self.tok_out += <long long>usage[1]
                tokens = <long long>usage[1]
            gen = last - first
            if tokens > 1 and gen > 0:
                self.tpot.add(gen / (tokens - 1))
                self.gen.add(gen)
        if self._log is not None:
            self._log._line(self.access, now, rid, d, ttft, nbytes)
