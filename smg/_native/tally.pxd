# smg._native.tally: declarations of the native per-shape tallies (this file is the contract).
#
# Twin: smg/observability/tally_py.py (same classes, same results byte for byte; the
# rules are in tally.pyx's module docstring). Stub: smg/_native/tally.pyi.
# Only smg/observability/tally.py imports this module.
#
# Dependencies: the growable byte buffer (smg/_native/buffer.pxd, compile time only), and
# smg._native.sse: Tally.record_stream cimports SSEScanner to read a native scanner's
# timing fields and call its _last_usage() without Python attribute lookups (see the
# import rule in sse.pxd); the compiled module therefore imports smg._native.sse at load.
#
# Lifetime rule: nothing here keeps a pointer into a Python object past one call. An
# access line is written straight into AccessBuffer._b after one reserve of its worst-case
# size (LINE_FIXED + labels + twice the request id, for JSON escaping), so the writers in
# between (_put, _uint, _ms, _stamp) never check bounds and never fail.
#
# Error returns: the only hot-path failure is MemoryError (a buffer that cannot grow),
# signalled through `except -1`; everything else is noexcept.

from smg._native.buffer cimport ByteBuf


cdef class Hist:
    cdef:
        double* _bounds          # owned (PyMem): the sorted "le" bounds, _n of them
        long long* _counts       # owned (PyMem): _n + 1 counts, the last one is +Inf
        Py_ssize_t _n            # number of finite bounds
        readonly tuple bounds    # the same bounds as Python floats (the public view)
        readonly double sum      # sum of every observed value

    # Count `value` in the first bucket whose bound is >= value (else +Inf) and add it to
    # sum. inline: final, a plain C call from Tally.
    cdef inline void add(self, double value) noexcept


cdef class AccessBuffer:
    cdef:
        ByteBuf _b               # the lines taken by the next take(), each ending in LF
        readonly bint json       # JSON lines (else the text format)
        public double offset     # wall clock minus the monotonic clock (owner refreshes it)
        long long _sec           # the second _prefix renders (-1: none yet)
        char _prefix[32]         # "YYYY-MM-DDTHH:MM:SS" (UTC) of _sec
        Py_ssize_t _plen         # bytes of _prefix in use

    # Write the timestamp "YYYY-MM-DDTHH:MM:SS.mmm" of monotonic time `now` at p (room
    # reserved by the caller); returns the end. Re-renders _prefix when the second changes.
    cdef char* _stamp(self, char* p, double now) noexcept
    # Append one access line (ttft < 0: not a stream; nbytes < 0 is written as 0).
    cdef int _line(self, bytes labels, double now, bytes rid, double duration, double ttft,
                   long long nbytes) except -1


cdef class Tally:
    cdef:
        readonly long long count     # requests recorded
        readonly long long tok_in    # prompt tokens, summed over requests that reported usage
        readonly long long tok_out   # completion tokens, likewise
        readonly Hist dur            # request duration (seconds)
        readonly Hist ttft           # streams: time to the first data event
        readonly Hist tpot           # streams: time per output token after the first
        readonly Hist gen            # streams: first to last data event (dur's bounds)
        readonly object labels       # dict of rendered metric labels (read at scrape)
        readonly bytes access        # the shape's part of an access line
        AccessBuffer _log            # where access lines go; None: no access log
