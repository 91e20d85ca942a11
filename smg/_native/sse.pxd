# smg._native.sse: declarations of the native SSE scanner (this file is the contract).
#
# Twin: smg/streaming/sse_py.py (same API, same limits, same errors).
# Stub: smg/_native/sse.pyi.  Only smg/streaming/sse.py imports this module.
#
# Lifetime rule: `_dptr` and `_lptr` may point into the caller's buffer, which is only
# valid for the duration of one feed()/observe() call; _scan() copies them (into `_data`,
# `_last`) before returning, and every exit path that does not return (an exception) puts
# the scanner into the failed state, which never reads them again.

cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.string cimport memcpy


# A growable byte buffer owned by one scanner: no Python object, no refcount.
# buf is NULL until the first append; 0 <= len <= cap always.
cdef struct SSEBuf:
    char* buf
    Py_ssize_t len
    Py_ssize_t cap


# First allocation of an SSEBuf; doubling from here reaches a typical chat chunk
# (~250 bytes) without a second realloc.
cdef enum:
    SSEBUF_MIN_CAP = 512


cdef inline int ssebuf_reserve(SSEBuf* b, Py_ssize_t extra) except -1:
    # Grow so that `extra` more bytes fit; amortised doubling keeps appends O(1).
    cdef Py_ssize_t need = b.len + extra
    cdef Py_ssize_t cap
    cdef char* nb
    if need <= b.cap:
        return 0
    cap = b.cap * 2
    if cap < need:
        cap = need
    if cap < SSEBUF_MIN_CAP:
        cap = SSEBUF_MIN_CAP
    nb = <char*>PyMem_Realloc(b.buf, <size_t>cap)
    if nb == NULL:
        raise MemoryError()
    b.buf = nb
    b.cap = cap
    return 0


cdef inline int ssebuf_append(SSEBuf* b, const char* s, Py_ssize_t n) except -1:
    if n <= 0:
        # also avoids memcpy(NULL, ..., 0), which C leaves undefined
        return 0
    if n > b.cap - b.len:
        ssebuf_reserve(b, n)
    memcpy(b.buf + b.len, s, <size_t>n)
    b.len += n
    return 0


cdef inline void ssebuf_free(SSEBuf* b) noexcept:
    PyMem_Free(b.buf)
    b.buf = NULL
    b.len = 0
    b.cap = 0


# final: nothing subclasses the scanner, so cdef method calls skip the vtable.
# no_gc: the only object fields are bytes or None, which cannot form reference cycles.
@cython.final
@cython.no_gc
cdef class SSEScanner:
    # --- public, read-only (see sse.pyi for their meaning) ---
    cdef readonly Py_ssize_t max_event_size
    cdef readonly Py_ssize_t events        # completed events, data-less ones included
    cdef readonly Py_ssize_t data_events   # completed events that had a data field
    cdef readonly Py_ssize_t bytes_seen    # bytes accepted by feed()
    cdef readonly bint done                # an event whose data is exactly b"[DONE]" completed
    cdef readonly bint truncated           # feed_eof() found a partial event pending
    cdef readonly double first_t           # observe(): clock when data events first completed (0: never)
    cdef readonly double last_t            # observe(): clock when data events last completed

    # --- the event being assembled ---
    cdef SSEBuf _line        # pending unterminated line; only ever holds bytes of ONE line
    cdef SSEBuf _data        # data field values of the current event, joined with b"\n"
    cdef const char* _dptr   # first data value, still in the caller's buffer (see lifetime rule)
    cdef Py_ssize_t _dlen    # its length
    cdef Py_ssize_t _ev_size # content bytes (terminators excluded) of the current event's lines
    cdef bint _deferred      # the first data value is at _dptr/_dlen, not yet in _data
    cdef bint _has_data      # the current event has seen a data field
    cdef bint _ev_lines      # the current event has seen a non-blank line

    # --- the latest non-[DONE] data value (the property last_data) ---
    cdef object _last_obj    # as bytes (feed() made one), or None
    cdef SSEBuf _last        # as raw bytes (observe()), valid when _last_in_buf
    cdef bint _last_in_buf   # _last holds the latest value; _last_obj is None or a copy of it
    cdef bint _lpending      # the latest value is still at _lptr/_llen in the caller's buffer
    cdef const char* _lptr
    cdef bint _hold_last     # observe(list): _lptr points into a bytes item the list keeps alive
    cdef Py_ssize_t _llen

    # --- stream state ---
    cdef int _bom_held       # 0..2 bytes of a possible leading BOM held back at stream start
    cdef bint _at_start      # no byte after a possible BOM has been consumed yet
    cdef bint _skip_lf       # the last piece ended in CR: drop an LF that starts the next one
    cdef bint _failed        # an error was raised; feed() refuses further input
    cdef bint _eof           # feed_eof() was called; feed() ignores further input

    cdef object _last_usage(self)
    cdef int _feed_one(self, object data, list out, str who) except -1
    cdef int _scan(self, const char* p, Py_ssize_t n, list out) except -1
    cdef int _on_line(self, const char* s, Py_ssize_t m, bint stable, list out) except -1
    cdef int _dispatch(self, list out) except -1
    cdef int _settle_last(self) except -1
    cdef int _flush_deferred(self) except -1
    cdef int _too_big(self) except -1
