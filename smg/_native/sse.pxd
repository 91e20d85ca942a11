# smg._native.sse: declarations of the native SSE scanner and stream-end watcher (this
# file is the contract).
#
# Twin: smg/streaming/sse_py.py (same API, same limits, same errors).
# Stub: smg/_native/sse.pyi.
#
# Who imports this module:
# - Python code: only the selector smg/streaming/sse.py (through smg._native.load); the
#   server takes StreamEnd from there (smg/server/transforms.py).
# - Cython code: smg/_native/tally.pyx cimports SSEScanner, so that Tally.record_stream()
#   reads a native scanner's first_t, last_t, data_events and done as C fields and calls
#   _last_usage() as a C method (no attribute lookups, no bytes object for last_data).
#   That makes the compiled tally module import this one at run time (for the type
#   object), and makes these declarations part of tally's contract too: changing the
#   order or type of a field, or _last_usage's signature, needs both rebuilt together
#   (setup.py always builds every module; cythonize tracks the .pxd dependency).
# No other module may cimport SSEScanner's private fields.
#
# Lifetime rule: `_dptr` and `_lptr` may point into the caller's buffer, which is only
# valid for the duration of one feed()/observe() call; _scan() copies them (into `_data`,
# `_last`) before returning, and every exit path that does not return (an exception) puts
# the scanner into the failed state, which never reads them again.

cimport cython

from smg._native.buffer cimport ByteBuf


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
    cdef ByteBuf _line       # pending unterminated line; only ever holds bytes of ONE line
    cdef ByteBuf _data       # data field values of the current event, joined with b"\n"
    cdef const char* _dptr   # first data value, still in the caller's buffer (see lifetime rule)
    cdef Py_ssize_t _dlen    # its length
    cdef Py_ssize_t _ev_size # content bytes (terminators excluded) of the current event's lines
    cdef bint _deferred      # the first data value is at _dptr/_dlen, not yet in _data
    cdef bint _has_data      # the current event has seen a data field
    cdef bint _ev_lines      # the current event has seen a non-blank line

    # --- the latest non-[DONE] data value (the property last_data) ---
    cdef object _last_obj    # as bytes (feed() made one), or None
    cdef ByteBuf _last       # as raw bytes (observe()), valid when _last_in_buf
    cdef bint _last_in_buf   # _last holds the latest value; _last_obj is None or a copy of it
    cdef bint _lpending      # the latest value is still at _lptr/_llen in the caller's buffer
    cdef const char* _lptr   # ... at this address (see lifetime rule)
    cdef Py_ssize_t _llen    # ... and of this length
    cdef bint _hold_last     # observe(list): _lptr points into a bytes item the list keeps alive

    # --- stream state ---
    cdef int _bom_held       # 0..2 bytes of a possible leading BOM held back at stream start
    cdef bint _at_start      # no byte after a possible BOM has been consumed yet
    cdef bint _skip_lf       # the last piece ended in CR: drop an LF that starts the next one
    cdef bint _failed        # an error was raised; feed() refuses further input
    cdef bint _eof           # feed_eof() was called; feed() ignores further input

    # usage_counts() of the latest data value, wherever it lies: (in, out) or None.
    # Also called by smg._native.tally (Tally.record_stream).
    cdef object _last_usage(self)
    # One bytes-like piece: TypeError unless bytes/bytearray/memoryview; then _scan.
    # `out` is the list completed data values go to (feed), or None (observe: counts only).
    cdef int _feed_one(self, object data, list out, str who) except -1
    # The scanner proper over p[0:n] (module docstring, "Theory of operation").
    cdef int _scan(self, const char* p, Py_ssize_t n, list out) except -1
    # One complete line; `stable`: s points into the caller's buffer, not into _line.
    cdef int _on_line(self, const char* s, Py_ssize_t m, bint stable, list out) except -1
    # A blank line ended the current event.
    cdef int _dispatch(self, list out) except -1
    # Copy a latest data value still in the caller's buffer into _last.
    cdef int _settle_last(self) except -1
    # Copy the deferred first data value (_dptr/_dlen) into _data.
    cdef int _flush_deferred(self) except -1
    # Raise RemoteProtocolError(502) for an event larger than max_event_size.
    cdef int _too_big(self) except -1


# The stream-end watcher (rules: smg/streaming/sse_py.py, "stream end"). Nothing cimports
# it. final: no vtable for _watch. no_gc: no object fields at all. The .pyx adds
# auto_pickle(False) (Cython reads that directive there, not here): a watcher belongs to
# one response, and Cython would otherwise make its C fields picklable.
@cython.final
@cython.no_gc
cdef class StreamEnd:
    cdef readonly bint done        # a "data: [DONE]" line was seen; later Data is dropped
    cdef readonly bint finished    # a non-null finish_reason / message_stop was seen
    cdef bint _anthropic           # the family's marker: message_stop, else finish_reason

    # One Data payload p[0:n] (a bytes object's or a buffer's, valid for the call): notes
    # `finished`; returns where the event is cut (after the blank line that follows its
    # [DONE] line, or n), or -1 when it holds no [DONE] line.
    cdef Py_ssize_t _watch(self, const char* p, Py_ssize_t n) noexcept
