# smg._native.http1: declarations of the native HTTP/1.1 parsers (this file is the contract).
#
# Twin: smg/http1/parser_py.py (same classes, states, events, errors and status hints; its
# module docstring is the behavioural spec). Stub: smg/_native/http1.pyi.
# Only smg/http1/parser.py imports this module.
#
# Lifetime rule: `_run` and everything it calls read from a `const unsigned char *` that is
# either the caller's buffer (held through a Py_buffer for the duration of one feed() call)
# or `_buf`. Nothing keeps such a pointer past the call: every byte an event needs is
# copied into a new bytes object (or, for a body that is exactly the caller's whole
# `bytes` object, that object itself is reused, which is safe because bytes are immutable),
# and the unconsumed tail is copied into `_buf` before feed() returns.

from libc.stdint cimport uint64_t


# Parser states; the same integers as H1_* in smg/http1/parser_py.py (a test checks).
# cpdef: they are also module attributes, as the twin's are.
cpdef enum:
    H1_HEAD = 0              # waiting for a request/status line and headers
    H1_BODY_LENGTH = 1       # reading a Content-Length body (_remaining bytes left)
    H1_CHUNK_SIZE = 2        # waiting for a chunk-size line
    H1_CHUNK_DATA = 3        # reading chunk data (_remaining bytes left)
    H1_CHUNK_DATA_END = 4    # waiting for the CRLF after chunk data
    H1_TRAILERS = 5          # waiting for the trailer section (ends at a blank line)
    H1_BODY_UNTIL_CLOSE = 6  # response body delimited by the connection closing
    H1_CLOSED = 7            # the connection is ending: further bytes are ignored
    H1_ERROR = 8             # a protocol error was raised: every feed() raises again


# What the framing-relevant header fields of one head said (filled by parse_header_lines).
cdef struct H1Framing:
    Py_ssize_t cl_start      # first Content-Length value: offset in the section ...
    Py_ssize_t cl_len        # ... and length; -1 when there was no Content-Length
    uint64_t content_length  # its value (at most 18 digits, so it fits)
    bint chunked             # Transfer-Encoding: chunked
    bint close               # a Connection field lists "close"
    bint expect_continue     # an Expect field lists "100-continue"
    int hosts                # number of Host fields


cdef class _Parser:
    cdef:
        unsigned char *_buf      # receive buffer (PyMem): bytes kept between feed() calls
        Py_ssize_t _buf_start    # read offset: first unconsumed byte of _buf
        Py_ssize_t _buf_end      # end of the received bytes in _buf
        Py_ssize_t _buf_cap      # allocated size of _buf
        Py_ssize_t _scan         # the blank-line search resumes here (offset from the
                                 # first unconsumed byte; 0 whenever a section completes)
        Py_ssize_t _cr_scan      # the bare-CR search of an incomplete head, trailer section
                                 # or chunk line resumes here (same offset, same resets)
        Py_ssize_t _skipped      # empty-line bytes skipped before the request-line being
                                 # read (RFC 9112 §2.2); they count towards max_head_size.
                                 # Not reset by _clear: only when a head completes.
        Py_ssize_t _max_head_size
        uint64_t _remaining      # body or chunk bytes still to read
        int _state               # H1_*
        int _error_status        # 0: each error keeps its own status; else all carry this
        int _eof_status          # status of "connection closed in the middle of a message"
        bint _keep_alive         # the current message lets the connection carry another
        bint _interim            # a 1xx response was read: the final one is still due
        bint _in_feed            # re-entrancy guard: _run may hold a pointer into _buf
        bint _skip_empty_lines   # RequestParser: empty lines before a head are ignored

    # inline: final, never overridden (plain C calls).
    cdef inline int _append(self, const unsigned char *data, Py_ssize_t n) except -1
    cdef inline void _consume(self, Py_ssize_t n) noexcept
    cdef inline void _clear(self) noexcept
    # Runs the state machine over buf[0:n]; returns how many bytes it consumed.
    cdef Py_ssize_t _run(self, const unsigned char *buf, Py_ssize_t n, list events,
                         object whole) except -1
    cdef int _end_message(self, list events, list trailers) except -1
    # Overridden by RequestParser / ResponseParser (one vtable call per head).
    cdef int _on_head(self, const unsigned char *head, Py_ssize_t n, list events) except -1
    cdef object _head_too_big(self)


cdef class RequestParser(_Parser):
    cdef int _on_head(self, const unsigned char *head, Py_ssize_t n, list events) except -1
    cdef object _head_too_big(self)


cdef class ResponseParser(_Parser):
    cdef:
        bint _head_request       # the response answers a HEAD request (no body)

    cdef int _on_head(self, const unsigned char *head, Py_ssize_t n, list events) except -1
    cdef object _head_too_big(self)
