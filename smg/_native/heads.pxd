# cython: language_level=3
#
# smg._native.heads: the header lines of proxied heads (this file is the contract).
#
# Twin: smg/http1/heads_py.py (same API, same results: bytes, None, exceptions).
# Stub: smg/_native/heads.pyi.
#
# Who imports this module:
# - Python code: only the selector smg/http1/heads.py (through smg._native.load); the
#   users are smg.http1.writer.forward_headers (header_lines, for the response heads the
#   server relays: smg/server/protocol.py send_head) and smg/upstream/http1_leg.py
#   request_head (allowed_lines, the default forwarding mode).
# - Cython code: nobody cimports it; the declarations below are private to heads.pyx.
#
# Memory and lifetime rules:
# - Lines are assembled in a LineBuf: a stack array of LINEBUF_STACK bytes in the calling
#   function's frame, moved to one PyMem block when it overflows (doubling); the result is
#   one PyBytes_FromStringAndSize copy, and linebuf_free() (in a finally) releases the
#   PyMem block on every exit path. No Python object is made per header.
# - The pointers copied from are the data of exact ``bytes`` objects the function holds
#   a reference to (the pair tuple and its items, held by local variables) for the
#   duration of the memcpy; nothing is kept past the call.
# - A list is re-measured before every item (classify() and set lookups may run Python
#   code that changes it); anything that is not a list or tuple of 2-tuples of exact
#   bytes (and a bytes or None rid) goes to the twin
#   (smg.http1.heads_py), started over: verdicts cached meanwhile are the same ones.

cdef enum:
    LINEBUF_STACK = 2048    # bytes of lines before the first heap allocation
    HEADS_DROP = 0          # verdict codes: smg.upstream.forwarding DROP, FORWARD, CONNECTION
    HEADS_FORWARD = 1
    HEADS_CONNECTION = 2

# buf points at the caller's stack array until the first overflow (heap == 0), then at a
# PyMem block of cap bytes (heap == 1); 0 <= len <= cap always.
cdef struct LineBuf:
    char* buf
    Py_ssize_t len
    Py_ssize_t cap
    bint heap

cdef int linebuf_grow(LineBuf* b, Py_ssize_t extra) except -1
cdef void linebuf_free(LineBuf* b) noexcept
