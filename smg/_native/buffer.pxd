# smg._native.buffer: a growable byte buffer for the native modules (this file is the contract).
#
# Declarations only: there is no buffer.pyx and no runtime module. Everything here is a C
# struct, an enum or an inline function, so each module that cimports it gets its own
# copy of the code at compile time and nothing is imported at run time.
#
# Users: smg/_native/sse.pyx (SSEScanner's pending line, the current event's data, the
# last data value) and smg/_native/tally.pyx (AccessBuffer's pending access lines).
# No twin: the pure-Python twins use bytes, bytearray or lists of bytes instead.
#
# Ownership rule: a ByteBuf is embedded by value in the object that owns it (a cdef class
# field), which zero-initialises it (buf NULL, len 0, cap 0: a valid empty buffer) and
# calls bytebuf_free() in __dealloc__. Copying the struct copies the pointer, not the
# bytes: only swap whole structs (as SSEScanner._dispatch does), never free both copies.
# The bytes are PyMem memory (pymalloc for small sizes), so tracemalloc sees them.

from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.string cimport memcpy


# buf is NULL until the first append (or reserve); 0 <= len <= cap always.
cdef struct ByteBuf:
    char* buf           # owned PyMem block of cap bytes, or NULL (cap == 0)
    Py_ssize_t len      # bytes in use: buf[0:len]
    Py_ssize_t cap      # bytes allocated


cdef enum:
    # First allocation of a ByteBuf; doubling from here reaches a typical SSE chat chunk
    # (~250 bytes) or a few access lines without a second realloc.
    BYTEBUF_MIN_CAP = 512


cdef inline int bytebuf_reserve(ByteBuf* b, Py_ssize_t extra) except -1:
    # Grow so that `extra` more bytes fit after len; amortised doubling keeps appends O(1).
    # Raises MemoryError (b unchanged) when the allocation fails.
    cdef Py_ssize_t need = b.len + extra
    cdef Py_ssize_t cap
    cdef char* nb
    if need <= b.cap:
        return 0
    cap = b.cap * 2
    if cap < need:
        cap = need
    if cap < BYTEBUF_MIN_CAP:
        cap = BYTEBUF_MIN_CAP
    nb = <char*>PyMem_Realloc(b.buf, <size_t>cap)
    if nb == NULL:
        raise MemoryError()
    b.buf = nb
    b.cap = cap
    return 0


cdef inline int bytebuf_append(ByteBuf* b, const char* s, Py_ssize_t n) except -1:
    # Append s[0:n]; n <= 0 appends nothing. Raises MemoryError (b unchanged).
    if n <= 0:
        # also avoids memcpy(NULL, ..., 0), which C leaves undefined
        return 0
    if n > b.cap - b.len:
        bytebuf_reserve(b, n)
    memcpy(b.buf + b.len, s, <size_t>n)
    b.len += n
    return 0


cdef inline void bytebuf_free(ByteBuf* b) noexcept:
    # Give the memory back; b is an empty buffer again (safe to call twice).
    PyMem_Free(b.buf)
    b.buf = NULL
    b.len = 0
    b.cap = 0
