# cython: language_level=3
"""smg._native.heads: the header lines of proxied heads, built in one C buffer.

Twin: smg/http1/heads_py.py (its docstring states the API and the rules).
Selector: smg/http1/heads.py (import from there).
Contract (buffer, lifetime rules): smg/_native/heads.pxd.

Theory of operation: the common case is a list of 2-tuples of exact ``bytes`` (what the
parsers make). For it, one pass classifies each pair (a set lookup for ``header_lines``;
a dict lookup, and ``classify`` for a name not seen yet, for ``allowed_lines``) and
copies the kept ``name: value\\r\\n`` lines into a LineBuf (a stack array first), and
the result is one bytes object: no per-header Python object, no ``bytes % tuple``. A tuple of
pairs is read the same way. Any other input (a list instead of a pair, a bytearray or str
name or value, a non-bytes rid) goes to the twin itself (smg.http1.heads_py), so both
return and raise the same for it.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from cpython.set cimport PyAnySet_Check, PySet_Contains
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from libc.string cimport memcmp, memcpy

__all__ = ["CONNECTION", "DROP", "FORWARD", "allowed_lines", "header_lines"]

DROP = HEADS_DROP
FORWARD = HEADS_FORWARD
CONNECTION = HEADS_CONNECTION

# input the fast paths do not take (not a list or tuple of 2-tuples of exact bytes) goes
# to the twin, which defines the results and the errors
from smg.http1 import heads_py as _twin

# returned by the fast paths when the input needs the twin
cdef object _GENERIC = object()
cdef object _DROP_OBJ = DROP
cdef object _FORWARD_OBJ = FORWARD
cdef object _CONNECTION_OBJ = CONNECTION


# --- the buffer ------------------------------------------------------------------------


cdef int linebuf_grow(LineBuf* b, Py_ssize_t extra) except -1:
    # Make room for `extra` more bytes: move to (or grow) a PyMem block, doubling.
    cdef Py_ssize_t need = b.len + extra
    cdef Py_ssize_t cap = b.cap * 2
    cdef char* nb
    if cap < need:
        cap = need
    nb = <char*>PyMem_Malloc(<size_t>cap)
    if nb == NULL:
        raise MemoryError()
    if b.len:
        memcpy(nb, b.buf, <size_t>b.len)
    if b.heap:
        PyMem_Free(b.buf)
    b.buf = nb
    b.cap = cap
    b.heap = 1
    return 0


cdef void linebuf_free(LineBuf* b) noexcept:
    if b.heap:
        PyMem_Free(b.buf)
        b.heap = 0
    b.buf = NULL
    b.len = b.cap = 0


cdef inline int _add_line(LineBuf* b, const char* n, Py_ssize_t nl, const char* v,
                          Py_ssize_t vl) except -1:
    # Append "n: v\r\n".
    cdef Py_ssize_t need = nl + vl + 4
    cdef char* p
    if need > b.cap - b.len:
        linebuf_grow(b, need)
    p = b.buf + b.len
    memcpy(p, n, <size_t>nl)
    p += nl
    p[0] = b':'
    p[1] = b' '
    p += 2
    memcpy(p, v, <size_t>vl)
    p += vl
    p[0] = b'\r'
    p[1] = b'\n'
    b.len += need
    return 0


# --- byte tests ------------------------------------------------------------------------


cdef inline bint _lower_eq(const unsigned char* s, const char* lit, Py_ssize_t n) noexcept:
    # s.lower() == lit, bytes.lower() style (ASCII A-Z only); lit is lower case.
    cdef Py_ssize_t i
    cdef unsigned char c
    for i in range(n):
        c = s[i]
        if 65 <= c <= 90:
            c += 32
        if c != <unsigned char>lit[i]:
            return False
    return True


cdef inline bint _framing(object v) noexcept:
    # v.lower() in (b"close", b"keep-alive"); v is exact bytes
    cdef Py_ssize_t n = PyBytes_GET_SIZE(v)
    cdef const unsigned char* s = <const unsigned char*>PyBytes_AS_STRING(v)
    if n == 5:
        return _lower_eq(s, b"close", 5)
    if n == 10:
        return _lower_eq(s, b"keep-alive", 10)
    return False


cdef inline bint _is(object n, const char* lit, Py_ssize_t size) noexcept:
    # n == lit; n is exact bytes
    return PyBytes_GET_SIZE(n) == size and memcmp(PyBytes_AS_STRING(n), lit, <size_t>size) == 0


cdef inline Py_ssize_t _size(object seq, bint is_list) noexcept:
    return PyList_GET_SIZE(seq) if is_list else PyTuple_GET_SIZE(seq)


cdef inline PyObject* _item(object seq, Py_ssize_t i, bint is_list) noexcept:
    # borrowed; i < _size(seq, is_list)
    return PyList_GET_ITEM(seq, i) if is_list else PyTuple_GET_ITEM(seq, i)


cdef inline int _contains(object s, object n) except -1:
    if PyAnySet_Check(s):
        return PySet_Contains(s, n)
    return n in s


# --- header_lines ----------------------------------------------------------------------


cdef object _header_lines_fast(object headers, bint is_list, object skip, LineBuf* b):
    cdef Py_ssize_t i = 0
    cdef object item, n, v
    while i < _size(headers, is_list):  # re-measured: lookups may run Python code
        item = <object>_item(headers, i, is_list)
        i += 1
        if type(item) is not tuple or PyTuple_GET_SIZE(item) != 2:
            return _GENERIC
        n = <object>PyTuple_GET_ITEM(item, 0)
        v = <object>PyTuple_GET_ITEM(item, 1)
        if type(n) is not bytes or type(v) is not bytes:
            return _GENERIC
        if _contains(skip, n):
            if _is(n, b"connection", 10) and not _framing(v):
                return None
            continue
        _add_line(b, PyBytes_AS_STRING(n), PyBytes_GET_SIZE(n), PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v))
    return PyBytes_FromStringAndSize(b.buf, b.len)


def header_lines(object headers, object skip):
    """The ``name: value`` lines of ``headers`` whose name is not in ``skip``, or None
    (a ``connection`` header nominates names; see smg.http1.heads_py)."""
    cdef char stack[LINEBUF_STACK]
    cdef LineBuf b
    cdef bint is_list = type(headers) is list
    if not is_list and type(headers) is not tuple:
        return _twin.header_lines(headers, skip)
    stack[0] = 0  # (gcc cannot tell that an empty result reads nothing)
    b.buf = stack
    b.len = 0
    b.cap = LINEBUF_STACK
    b.heap = 0
    try:
        r = _header_lines_fast(headers, is_list, skip, &b)
    finally:
        linebuf_free(&b)
    if r is _GENERIC:
        return _twin.header_lines(headers, skip)
    return r


# --- allowed_lines ---------------------------------------------------------------------


cdef object _allowed_fast(object headers, bint is_list, dict verdict, object classify, object replaced,
                          object rid, LineBuf* b):
    cdef Py_ssize_t i = 0
    cdef object item, n, v, k
    cdef PyObject* kp
    cdef int kv
    cdef bint has_rid = False
    cdef bint check_replaced = replaced is not None
    while i < _size(headers, is_list):  # re-measured: classify() may run any Python code
        item = <object>_item(headers, i, is_list)
        i += 1
        if type(item) is not tuple or PyTuple_GET_SIZE(item) != 2:
            return _GENERIC
        n = <object>PyTuple_GET_ITEM(item, 0)
        v = <object>PyTuple_GET_ITEM(item, 1)
        if type(n) is not bytes or type(v) is not bytes:
            return _GENERIC
        kp = PyDict_GetItem(verdict, n)
        if kp == NULL:
            k = classify(n)
        else:
            k = <object>kp
        # verdicts are the small ints 0, 1, 2 (cached objects): identity first
        if k is _FORWARD_OBJ:
            kv = HEADS_FORWARD
        elif k is _DROP_OBJ:
            kv = HEADS_DROP
        elif k is _CONNECTION_OBJ:
            kv = HEADS_CONNECTION
        else:
            kv = HEADS_FORWARD if k == HEADS_FORWARD else (HEADS_CONNECTION if k == HEADS_CONNECTION else -1)
        if kv == HEADS_FORWARD:
            if check_replaced and _contains(replaced, n):
                continue
            if _is(n, b"x-request-id", 12):
                if has_rid:
                    continue
                has_rid = True
                if rid is not None:
                    v = rid
            _add_line(b, PyBytes_AS_STRING(n), PyBytes_GET_SIZE(n), PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v))
        elif kv == HEADS_CONNECTION and not _framing(v):
            return None
    return (PyBytes_FromStringAndSize(b.buf, b.len), has_rid)


def allowed_lines(object headers, dict verdict not None, object classify, object replaced, object rid):
    """``(lines, has_rid)`` of the headers the default forwarding mode sends, or None (a
    CONNECTION-verdict header nominates names; see smg.http1.heads_py)."""
    cdef char stack[LINEBUF_STACK]
    cdef LineBuf b
    cdef bint is_list = type(headers) is list
    if (not is_list and type(headers) is not tuple) or (rid is not None and type(rid) is not bytes):
        return _twin.allowed_lines(headers, verdict, classify, replaced, rid)
    stack[0] = 0  # (gcc cannot tell that an empty result reads nothing)
    b.buf = stack
    b.len = 0
    b.cap = LINEBUF_STACK
    b.heap = 0
    try:
        r = _allowed_fast(headers, is_list, verdict, classify, replaced, rid, &b)
    finally:
        linebuf_free(&b)
    if r is _GENERIC:
        return _twin.allowed_lines(headers, verdict, classify, replaced, rid)
    return r
