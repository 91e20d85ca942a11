# cython: language_level=3
"""smg._native.sse: native scanner for upstream Server-Sent-Events streams, and the
stream-end watcher StreamEnd.

Twin: smg/streaming/sse_py.py.  Selector: smg/streaming/sse.py (import from there).

Rules:
- The scanner observes, never rewrites: the gateway forwards the upstream bytes verbatim; it
  only reports what passed (data of completed events, event counts, [DONE], the last data
  chunk). StreamEnd is the one rewriter: it drops what a worker sends after [DONE]; its
  rules are the twin's ("stream end" section of sse_py.py), kept here to the byte.
- Split invariance: the concatenation of what feed() returns, and every attribute after
  feed_eof(), do not depend on where the network split the stream.
- feed() raises only TypeError (argument not bytes-like) and smg.errors.RemoteProtocolError
  (an event larger than max_event_size, or input after such an error). Anything else is a bug.

Theory of operation (WHATWG HTML "Server-sent events", section 9.2.6 "Interpreting an
event stream"):
- Lines end at CRLF, LF or a lone CR. A CR is acted on as soon as it is seen; if it was the
  last byte of a piece, `_skip_lf` drops an LF at the start of the next piece, so CRLF split
  across two reads is still one terminator.
- A blank line completes the event. `data` values are joined with LF; one space after the
  colon is stripped; a line without a colon is a field with an empty value; a line starting
  with a colon is a comment; all other fields are ignored.
- Work is per line, with memchr (libc, vectorised) finding LF and CR; the position of the
  next CR and LF is cached so a stream without CRs (the usual case) is scanned for CR once
  per piece, not once per line.
- Copies: a complete `data: ...` line that is also the event's only data line is turned
  into the returned bytes straight from the caller's buffer (the common case: one copy,
  the one that makes the result). Only the unterminated tail of a piece is copied into
  `_line`, each byte once, however many pieces the line spans.

No function here indexes a Python buffer or memoryview, so boundscheck/wraparound have
nothing to switch off: all indexing is on C pointers whose bounds the loops keep by hand.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_GetSlice
from libc.string cimport memchr, memcmp
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from smg._native.buffer cimport bytebuf_append, bytebuf_free

from operator import index as _index

from smg.errors import RemoteProtocolError as _RemoteProtocolError
from smg.http1.events import Data as _Data

# Looked up once (style rule 8). Data is matched exactly (type(ev) is Data), as the twin does.
cdef object RemoteProtocolError = _RemoteProtocolError
cdef object Data = _Data

cdef extern from "Python.h":
    # PY_SSIZE_T_MAX is how big max_event_size may be; larger requests mean "no limit".
    const Py_ssize_t PY_SSIZE_T_MAX

# Same value and reasoning as smg.streaming.sse_py.DEFAULT_MAX_EVENT_SIZE.
DEFAULT_MAX_EVENT_SIZE = 8 * 1024 * 1024

# The public API, as in sse.pyi and the twin (tests/test_stubs.py checks all three agree).
__all__ = ["DEFAULT_MAX_EVENT_SIZE", "SSEScanner", "StreamEnd", "usage_counts"]

cdef enum:
    # After an event or line this large, its buffer is freed rather than kept: one
    # oversized event must not pin megabytes for the rest of a long stream.
    SSE_KEEP_BUFFER_MAX = 64 * 1024

cdef const char* SSE_BOM = b"\xef\xbb\xbf"   # UTF-8 byte order mark
cdef const char* SSE_DONE = b"[DONE]"        # OpenAI end-of-stream sentinel


cdef inline Py_ssize_t _find(const char* p, Py_ssize_t pos, Py_ssize_t n, int c) noexcept:
    # Index of the first byte == c in p[pos:n], or n if there is none.
    cdef const void* r = memchr(p + pos, c, <size_t>(n - pos))
    if r == NULL:
        return n
    return <const char*>r - p


cdef class SSEScanner:
    """Incremental SSE scanner: feed it the upstream bytes, read back completed events."""

    def __init__(self, *, max_event_size=DEFAULT_MAX_EVENT_SIZE):
        size = _index(max_event_size)
        if size < 1:
            raise ValueError(f"max_event_size must be >= 1, got {size}")
        self.max_event_size = size if size < PY_SSIZE_T_MAX else PY_SSIZE_T_MAX
        self.events = 0
        self.data_events = 0
        self.bytes_seen = 0
        self.done = False
        self.truncated = False
        self.first_t = 0.0
        self.last_t = 0.0
        self._last_obj = None
        self._last_in_buf = False
        self._lpending = False
        self._hold_last = False
        self._line.len = 0
        self._data.len = 0
        self._dptr = NULL
        self._dlen = 0
        self._ev_size = 0
        self._deferred = False
        self._has_data = False
        self._ev_lines = False
        self._bom_held = 0
        self._at_start = True
        self._skip_lf = False
        self._failed = False
        self._eof = False

    def __dealloc__(self):
        bytebuf_free(&self._line)
        bytebuf_free(&self._data)
        bytebuf_free(&self._last)

    @property
    def last_data(self):
        """Data of the most recent data event other than [DONE], or None (built on first read
        after observe(), which keeps it as raw bytes)."""
        if self._last_obj is None and self._last_in_buf:
            self._last_obj = PyBytes_FromStringAndSize(self._last.buf, self._last.len)
        return self._last_obj

    def feed(self, data):
        """Consume the next piece of the stream.

        Returns:
            the data value of every event this piece completed, in order (list of bytes).
        Raises:
            TypeError: data is not bytes, bytearray or memoryview.
            RemoteProtocolError: (status_hint 502) an event exceeded max_event_size, or an
                earlier call raised. Any other exception is a bug.
        """
        cdef list out = []
        self._feed_one(data, out, "feed")
        return out

    def observe(self, data):
        """Consume the next piece(s) of the stream, keeping counts but no event list.

        ``data`` is one bytes-like piece or a list/tuple of items fed in order, as if
        concatenated: an item is a bytes-like piece or an object with a bytes ``data``
        attribute (an HTTP Data event); items without one (other HTTP events) are skipped.
        When at least one data event (``[DONE]`` included) completed, the monotonic clock
        (``time.monotonic()``'s) is read once: ``first_t`` keeps the first such reading,
        ``last_t`` the latest. ``last_data`` is kept without making a bytes object per event.

        Returns:
            the number of data events completed (int).
        Raises:
            as feed().
        """
        cdef Py_ssize_t before = self.data_events
        cdef Py_ssize_t i
        cdef timespec ts
        cdef double now
        if PyBytes_CheckExact(data):
            self._scan(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), None)
        elif type(data) is list or type(data) is tuple:
            try:
                for i in range(len(data)):
                    item = data[i]
                    if not PyBytes_CheckExact(item) and not isinstance(item, (bytearray, memoryview)):
                        item = getattr(item, "data", None)
                        if item is None:
                            continue
                    if PyBytes_CheckExact(item):
                        # immutable and kept alive by `data`: the last value may stay where
                        # it is until the whole list is scanned (one copy, not one per item)
                        self._hold_last = True
                        self._scan(PyBytes_AS_STRING(item), PyBytes_GET_SIZE(item), None)
                    else:
                        self._hold_last = False
                        self._settle_last()
                        self._feed_one(item, None, "observe")
            finally:
                self._hold_last = False
            self._settle_last()
        else:
            self._feed_one(data, None, "observe")
        if self.data_events == before:
            return 0
        clock_gettime(CLOCK_MONOTONIC, &ts)
        now = <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9
        if self.first_t == 0.0:
            self.first_t = now
        self.last_t = now
        return self.data_events - before

    def usage(self):
        """usage_counts(last_data), without building last_data: (input, output) or None."""
        return self._last_usage()

    cdef object _last_usage(self):
        if self._last_obj is not None:
            return _usage(PyBytes_AS_STRING(self._last_obj), PyBytes_GET_SIZE(self._last_obj))
        if self._last_in_buf:
            return _usage(self._last.buf, self._last.len)
        return None

    cdef int _feed_one(self, object data, list out, str who) except -1:
        cdef Py_buffer view
        if PyBytes_CheckExact(data):
            return self._scan(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), out)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"SSEScanner.{who}() needs bytes, bytearray or memoryview, not {type(data).__name__}"
            )
        if isinstance(data, memoryview) and not data.c_contiguous:
            data = bytes(data)  # PyBUF_SIMPLE refuses strided views; the twin copies too
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            return self._scan(<const char*>view.buf, view.len, out)
        finally:
            PyBuffer_Release(&view)

    def feed_eof(self):
        """End of stream. An unfinished event is dropped (WHATWG SSE) and noted in `truncated`.

        Returns:
            [] always (events complete at their blank line, inside feed()).
        """
        if self._eof:
            return []
        self._eof = True
        self.truncated = (
            self._failed
            or self._line.len > 0
            or self._ev_lines
            or (self._at_start and self._bom_held > 0)
        )
        self._deferred = False
        self._has_data = False
        self._ev_lines = False
        self._ev_size = 0
        self._bom_held = 0
        bytebuf_free(&self._line)
        bytebuf_free(&self._data)
        return []

    cdef int _scan(self, const char* p, Py_ssize_t n, list out) except -1:
        # out: the list completed data values go to (feed), or None (observe: counts only)
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t lf = -1   # next LF at or after pos (n: none), valid while lf >= pos
        cdef Py_ssize_t cr = -1   # next CR, same convention
        cdef Py_ssize_t t, nxt
        if self._failed:
            raise RemoteProtocolError(
                "SSE stream already failed; further input is refused", status_hint=502
            )
        if self._eof:
            return 0
        self.bytes_seen += n
        try:
            if self._at_start:
                # Hold back up to two bytes that may still turn out to be a BOM.
                while pos < n and self._bom_held < 3 and p[pos] == SSE_BOM[self._bom_held]:
                    pos += 1
                    self._bom_held += 1
                if self._bom_held == 3:
                    self._at_start = False  # a BOM: dropped
                    self._bom_held = 0
                elif pos == n:
                    return 0                # still undecided
                else:
                    # Not a BOM: the held bytes start the first line (they hold no CR/LF).
                    bytebuf_append(&self._line, SSE_BOM, self._bom_held)
                    self._at_start = False
                    self._bom_held = 0

            if self._skip_lf and pos < n:
                self._skip_lf = False
                if p[pos] == c'\n':
                    pos += 1

            while pos < n:
                if lf < pos:
                    lf = _find(p, pos, n, c'\n')
                if cr < pos:
                    cr = _find(p, pos, n, c'\r')
                if lf < cr:
                    t = lf
                    nxt = lf + 1
                elif cr < n:
                    t = cr
                    if cr + 1 < n:
                        nxt = cr + 2 if p[cr + 1] == c'\n' else cr + 1
                    else:
                        nxt = n
                        self._skip_lf = True
                else:
                    break  # no terminator left in this piece
                if self._line.len:
                    # Only the first line of a piece can continue a pending line.
                    bytebuf_append(&self._line, p + pos, t - pos)
                    self._on_line(self._line.buf, self._line.len, False, out)
                    self._line.len = 0
                    if self._line.cap > SSE_KEEP_BUFFER_MAX:
                        bytebuf_free(&self._line)
                else:
                    self._on_line(p + pos, t - pos, True, out)
                pos = nxt

            if pos < n:
                # Unterminated tail: check the limit before copying it.
                if self._line.len + (n - pos) > self.max_event_size - self._ev_size:
                    self._too_big()
                bytebuf_append(&self._line, p + pos, n - pos)
            if self._deferred:
                self._flush_deferred()  # p is only valid until we return
            if not self._hold_last:
                self._settle_last()  # p is only valid until we return
        except BaseException:
            self._failed = True
            self._deferred = False
            # the pending last value (in p or in an earlier item of an observed list) is
            # still readable here: keep it, as feed() would have
            try:
                self._settle_last()
            except MemoryError:
                self._lpending = False
                self._last_in_buf = False
                self._last_obj = None
            raise
        return 0

    cdef int _on_line(self, const char* s, Py_ssize_t m, bint stable, list out) except -1:
        # One complete line, terminator excluded. `stable`: s points into the caller's
        # buffer (valid until _scan returns) rather than into self._line.
        cdef const char* v
        cdef Py_ssize_t vlen
        if m == 0:
            if self._ev_lines:
                self._dispatch(out)
            return 0
        self._ev_lines = True
        if m > self.max_event_size - self._ev_size:
            self._too_big()
        self._ev_size += m
        # The field name is everything before the first colon, so it is exactly "data"
        # iff the line starts with "data:" or is the bare word "data" (empty value).
        if m >= 5 and memcmp(s, b"data:", 5) == 0:
            v = s + 5
            vlen = m - 5
            if vlen and v[0] == c' ':
                v += 1
                vlen -= 1
        elif m == 4 and memcmp(s, b"data", 4) == 0:
            v = s + 4
            vlen = 0
        else:
            return 0  # comment (leading colon) or a field we do not observe
        if not self._has_data:
            self._has_data = True
            if stable:
                self._deferred = True
                self._dptr = v
                self._dlen = vlen
            else:
                bytebuf_append(&self._data, v, vlen)
        else:
            if self._deferred:
                self._flush_deferred()
            bytebuf_append(&self._data, b"\n", 1)
            bytebuf_append(&self._data, v, vlen)
        return 0

    cdef int _dispatch(self, list out) except -1:
        cdef bytes d
        cdef ByteBuf tmp
        self.events += 1
        if self._has_data and out is None:
            # observe(): no bytes object; the value is remembered where it lies
            self._has_data = False
            self.data_events += 1
            if self._deferred:
                self._deferred = False
                if self._dlen == 6 and memcmp(self._dptr, SSE_DONE, 6) == 0:
                    self.done = True
                else:
                    self._lpending = True   # copied at the end of _scan, if still the last
                    self._lptr = self._dptr
                    self._llen = self._dlen
                    self._last_in_buf = True
                    self._last_obj = None
            elif self._data.len == 6 and memcmp(self._data.buf, SSE_DONE, 6) == 0:
                self.done = True
                self._data.len = 0
            else:
                # the joined value becomes the last one by swapping buffers, no copy
                self._lpending = False
                tmp = self._last
                self._last = self._data
                self._data = tmp
                self._data.len = 0
                self._last_in_buf = True
                self._last_obj = None
            if self._data.cap > SSE_KEEP_BUFFER_MAX:
                bytebuf_free(&self._data)
        elif self._has_data:
            if self._deferred:
                d = PyBytes_FromStringAndSize(<char*>self._dptr, self._dlen)
                self._deferred = False
            else:
                d = PyBytes_FromStringAndSize(self._data.buf, self._data.len)
                self._data.len = 0
                if self._data.cap > SSE_KEEP_BUFFER_MAX:
                    bytebuf_free(&self._data)
            self._has_data = False
            self.data_events += 1
            out.append(d)
            if PyBytes_GET_SIZE(d) == 6 and memcmp(PyBytes_AS_STRING(d), SSE_DONE, 6) == 0:
                self.done = True
            else:
                self._last_obj = d
                self._last_in_buf = False
                self._lpending = False
        self._ev_lines = False
        self._ev_size = 0
        return 0

    cdef int _settle_last(self) except -1:
        # The latest data value, if still in a caller's buffer, is copied into _last.
        if self._lpending:
            self._lpending = False
            self._last.len = 0
            bytebuf_append(&self._last, self._lptr, self._llen)
        return 0

    cdef int _flush_deferred(self) except -1:
        # Move the first data value out of the caller's buffer into _data.
        self._deferred = False
        bytebuf_append(&self._data, self._dptr, self._dlen)
        self._dptr = NULL
        return 0

    cdef int _too_big(self) except -1:
        raise RemoteProtocolError(
            f"SSE event larger than max_event_size ({self.max_event_size} bytes)",
            status_hint=502,
        )


# -- token usage (twin: smg/streaming/sse_py.py usage_counts; same rules, documented there) --

cdef extern from "string.h":
    # glibc; Python.h (pyconfig.h) defines _GNU_SOURCE, which declares it.
    void* memmem(const void* haystack, size_t hlen, const void* needle, size_t nlen) nogil

cdef inline Py_ssize_t _mem_find(const char* p, Py_ssize_t start, Py_ssize_t n,
                                 const char* needle, Py_ssize_t m) noexcept:
    if start > n - m:
        return -1
    cdef const char* r = <const char*>memmem(p + start, <size_t>(n - start), needle, <size_t>m)
    return -1 if r == NULL else <Py_ssize_t>(r - p)

cdef inline Py_ssize_t _mem_rfind(const char* p, Py_ssize_t n, const char* needle, Py_ssize_t m) noexcept:
    # the last occurrence: forward searches from just after each hit (answers name it once)
    cdef Py_ssize_t last = -1
    cdef Py_ssize_t i = _mem_find(p, 0, n, needle, m)
    while i >= 0:
        last = i
        i = _mem_find(p, i + 1, n, needle, m)
    return last

cdef inline bint _is_ws(char c) noexcept:
    return c == b' ' or c == b'\t' or c == b'\r' or c == b'\n'

cdef long long _count_after(const char* p, Py_ssize_t n, Py_ssize_t start, const char* k1, Py_ssize_t m1,
                            const char* k2, Py_ssize_t m2) noexcept:
    # -1: no count found under either key
    cdef const char* keys[2]
    cdef Py_ssize_t lens[2]
    cdef Py_ssize_t i, j, e
    cdef long long v
    cdef int t
    keys[0] = k1
    keys[1] = k2
    lens[0] = m1
    lens[1] = m2
    for t in range(2):
        i = _mem_find(p, start, n, keys[t], lens[t])
        if i < 0:
            continue
        j = i + lens[t]
        while j < n and _is_ws(p[j]):
            j += 1
        if j >= n or p[j] != b':':
            continue
        j += 1
        while j < n and _is_ws(p[j]):
            j += 1
        e = j
        v = 0
        while e < n and b'0' <= p[e] <= b'9' and e - j < 19:
            v = v * 10 + (p[e] - 48)
            e += 1
        if e == j or e - j > 18:
            continue
        return v
    return -1


cdef object _usage(const char* p, Py_ssize_t n):
    cdef Py_ssize_t start
    cdef long long i, o
    start = _mem_rfind(p, n, b'"usage"', 7)
    if start < 0:
        start = _mem_rfind(p, n, b'"meta_info"', 11)
        if start < 0:
            return None
    i = _count_after(p, n, start, b'"prompt_tokens"', 15, b'"input_tokens"', 14)
    o = _count_after(p, n, start, b'"completion_tokens"', 19, b'"output_tokens"', 15)
    if i < 0 and o < 0:
        return None
    return (i if i >= 0 else 0, o if o >= 0 else 0)


def usage_counts(data):
    """(input tokens, output tokens) named in ``data``, or None (see the twin's docstring)."""
    cdef Py_buffer view
    if PyBytes_CheckExact(data):
        return _usage(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("usage_counts() takes bytes-like data")
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        return _usage(<const char*>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


# -- stream end (twin: smg/streaming/sse_py.py StreamEnd; its "stream end" section has the
# rules, kept here to the byte) --
#
# Per Data event, on its payload's buffer (no copy, no Python object on the usual path):
# until `finished`, one search for the family's marker; then one search for "[DONE]",
# whose prefix is checked only where it was found. The searches find a rare byte of the
# needle with memchr (vectorised) and compare the rest in place: `[` for "[DONE]" (a chunk
# usually holds one, its "choices" array), `_` for "finish_reason" and "message_stop".

cdef const char* SE_FINISH = b'"finish_reason":'   # 16 bytes
cdef const char* SE_MESSAGE_STOP = b"message_stop"  # 12 bytes


cdef inline Py_ssize_t _find_at(const char* p, Py_ssize_t start, Py_ssize_t n,
                                const char* needle, Py_ssize_t m, Py_ssize_t a) noexcept:
    # First index >= start of needle[0:m] in p[0:n], or -1: memchr finds needle[a] (a byte
    # chosen to be rare in the input), memcmp checks the rest. Bounds: a hit at i needs
    # start <= i and i + m <= n, i.e. needle[a] at k in [start + a, n - m + a].
    cdef const char* r
    cdef Py_ssize_t k = start + a
    cdef Py_ssize_t last = n - m + a   # the last k a whole needle fits at
    cdef char c = needle[a]
    while k <= last:
        r = <const char*>memchr(p + k, c, <size_t>(last + 1 - k))
        if r == NULL:
            return -1
        k = r - p
        if memcmp(p + k - a, needle, <size_t>m) == 0:
            return k - a
        k += 1
    return -1


cdef Py_ssize_t _done_at(const char* p, Py_ssize_t n) noexcept:
    # Where a "data: [DONE]" (or "data:[DONE]") line starts in p[0:n], or -1.
    cdef Py_ssize_t s
    cdef Py_ssize_t j = _find_at(p, 0, n, SSE_DONE, 6, 0)
    while j >= 0:
        if j >= 6 and memcmp(p + j - 6, b"data: ", 6) == 0:
            s = j - 6
        elif j >= 5 and memcmp(p + j - 5, b"data:", 5) == 0:
            s = j - 5
        else:
            s = -1
        if s == 0 or (s > 0 and p[s - 1] == c'\n'):
            return s
        j = _find_at(p, j + 6, n, SSE_DONE, 6, 0)
    return -1


cdef bint _finished_openai(const char* p, Py_ssize_t n) noexcept:
    # A non-null "finish_reason": a string or an object after optional spaces.
    cdef Py_ssize_t k
    cdef Py_ssize_t j = _find_at(p, 0, n, SE_FINISH, 16, 7)
    while j >= 0:
        k = j + 16
        while k < n and p[k] == c' ':
            k += 1
        if k < n and (p[k] == c'"' or p[k] == c'{'):
            return True
        j = _find_at(p, k, n, SE_FINISH, 16, 7)
    return False


@cython.final
@cython.auto_pickle(False)  # (sse.pxd says why)
cdef class StreamEnd:
    """Watches an SSE answer for its end: ``done`` ([DONE] seen; later bytes are
    dropped), ``finished`` (a finish reason / message_stop seen)."""

    def __init__(self, anthropic):
        self.done = False
        self.finished = False
        self._anthropic = bool(anthropic)

    @property
    def complete(self):
        return self.done or self.finished

    def __call__(self, list events not None):
        cdef Py_ssize_t i = -1
        cdef Py_ssize_t cut
        cdef Py_buffer view
        cdef object ev, d, piece
        cdef list out
        if self.done:
            return _without_data(events, 0)
        while True:
            # the size is read each time: the buffer path below may run Python code
            i += 1
            if i >= PyList_GET_SIZE(events):
                return None
            ev = <object>PyList_GET_ITEM(events, i)
            if type(ev) is not Data:
                continue
            d = ev.data
            if PyBytes_CheckExact(d):
                cut = self._watch(PyBytes_AS_STRING(d), PyBytes_GET_SIZE(d))
                if cut < 0:
                    continue
                if cut == PyBytes_GET_SIZE(d):
                    piece = ev
                else:
                    piece = Data(PyBytes_FromStringAndSize(PyBytes_AS_STRING(d), cut))
            else:
                # not bytes (never from the HTTP/1.1 parsers): its buffer, as the twin's
                # bytes(memoryview(d)) reads it
                if isinstance(d, memoryview) and not d.c_contiguous:
                    d = d.tobytes()  # PyBUF_SIMPLE refuses strided views
                PyObject_GetBuffer(d, &view, PyBUF_SIMPLE)
                try:
                    cut = self._watch(<const char*>view.buf, view.len)
                    if cut < 0:
                        continue
                    if cut == view.len:
                        piece = ev
                    else:
                        piece = Data(PyBytes_FromStringAndSize(<const char*>view.buf, cut))
                finally:
                    PyBuffer_Release(&view)
            self.done = True
            out = PyList_GetSlice(events, 0, i)
            out.append(piece)
            out.extend(_without_data(events, i + 1))
            return out

    cdef Py_ssize_t _watch(self, const char* p, Py_ssize_t n) noexcept:
        # (sse.pxd states the contract)
        cdef Py_ssize_t s, e
        if not self.finished:
            if self._anthropic:
                self.finished = _find_at(p, 0, n, SE_MESSAGE_STOP, 12, 7) >= 0
            else:
                self.finished = _finished_openai(p, n)
        s = _done_at(p, n)
        if s < 0:
            return -1
        e = _mem_find(p, s, n, b"\n\n", 2)
        return e + 2 if e >= 0 else n


cdef list _without_data(list events, Py_ssize_t start):
    # events[start:] without their Data events (a new list).
    cdef list out = []
    cdef Py_ssize_t i
    cdef object ev
    for i in range(start, PyList_GET_SIZE(events)):  # append runs no Python code
        ev = <object>PyList_GET_ITEM(events, i)
        if type(ev) is not Data:
            out.append(ev)
    return out
