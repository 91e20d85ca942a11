# cython: language_level=3
"""smg._native.framing: the body bytes of relayed answers, without a Python loop.

Twin: smg/http1/framing_py.py (its docstring states the API and the rules).
Selector: smg/http1/framing.py (import from there).
Contract (lifetime rules): smg/_native/framing.pxd.

Theory of operation: ``collect`` walks an exact list of events once, comparing each
event's type with ``Data`` / ``EndOfMessage`` by pointer and appending the payloads
itself; ``chunked`` measures every piece, makes one bytes object of the exact size and
writes the chunk-size lines and the CRLFs into it (no ``bytes % int`` per chunk, no
intermediate list). The common input is exact: a list of events, lists for ``out`` and
``parts``, a list of exact bytes pieces. Anything else goes to the twin itself, which
defines the results and the errors for it.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_Append, PyList_CheckExact, PyList_GET_ITEM, PyList_GET_SIZE
from libc.string cimport memcpy

from smg.http1 import framing_py as _twin
from smg.http1.events import Data, EndOfMessage
from smg.http1.writer import LAST_CHUNK

__all__ = ["chunked", "collect"]

cdef object _Data = Data
cdef object _EndOfMessage = EndOfMessage
cdef const char* _HEX = b"0123456789abcdef"
cdef bytes _LAST = LAST_CHUNK


def collect(events, out, parts):
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t n = 0
    cdef object ev, d
    cdef bint keep = parts is not None
    if not PyList_CheckExact(events) or not PyList_CheckExact(out) or (keep and not PyList_CheckExact(parts)):
        return _twin.collect(events, out, parts)
    while i < PyList_GET_SIZE(events):
        ev = <object>PyList_GET_ITEM(events, i)
        i += 1
        if type(ev) is _Data:
            d = ev.data
            if PyBytes_CheckExact(d):
                n += PyBytes_GET_SIZE(d)
            else:
                n += len(d)
            if keep:
                PyList_Append(parts, d)
            PyList_Append(out, d)
        elif type(ev) is _EndOfMessage:
            return n, True
    return n, False


cdef inline Py_ssize_t _hex_digits(Py_ssize_t n) noexcept:
    cdef Py_ssize_t k = 1
    while n >= 16:
        n >>= 4
        k += 1
    return k


def chunked(head, pieces, end):
    cdef Py_ssize_t i, j, k, m, n, total = 0
    cdef Py_ssize_t count
    cdef object d
    cdef char* p
    cdef bytes res
    cdef bint last = bool(end)
    if not PyList_CheckExact(pieces) or (head is not None and not PyBytes_CheckExact(head)):
        return _twin.chunked(head, pieces, end)
    count = PyList_GET_SIZE(pieces)
    for i in range(count):
        d = <object>PyList_GET_ITEM(pieces, i)
        if not PyBytes_CheckExact(d):
            return _twin.chunked(head, pieces, end)
        n = PyBytes_GET_SIZE(d)
        if n:
            total += _hex_digits(n) + 4 + n
    if head is not None:
        total += PyBytes_GET_SIZE(head)
    if last:
        total += PyBytes_GET_SIZE(_LAST)
    res = PyBytes_FromStringAndSize(NULL, total)
    p = PyBytes_AS_STRING(res)
    if head is not None:
        n = PyBytes_GET_SIZE(head)
        memcpy(p, PyBytes_AS_STRING(head), <size_t>n)
        p += n
    for i in range(count):
        d = <object>PyList_GET_ITEM(pieces, i)
        n = PyBytes_GET_SIZE(d)
        if not n:
            continue
        k = _hex_digits(n)
        m = n
        for j in range(k - 1, -1, -1):   # the size in lower-case hex, most significant first
            p[j] = _HEX[m & 15]
            m >>= 4
        p += k
        p[0] = 13
        p[1] = 10
        memcpy(p + 2, PyBytes_AS_STRING(d), <size_t>n)
        p += n + 2
        p[0] = 13
        p[1] = 10
        p += 2
    if last:
        memcpy(p, PyBytes_AS_STRING(_LAST), <size_t>PyBytes_GET_SIZE(_LAST))
    return res
