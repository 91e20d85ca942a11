# cython: language_level=3
"""smg._native.screen: the native body screen.

Twin: smg/api/validate/screen_py.py (its docstring states what a screen vouches for and
the spec format). Selector: smg/api/validate/screen.py (import from there).

Rules:
- The same decisions as the twin for every body (tests/native/test_screen.py), with one
  allowed difference: an integer that does not fit a C long long is DOUBT here (the
  full validator then judges it, so the answer the client gets is the same).
- The walk keeps borrowed references only (PyDict_Next, PyDict_GetItem) and allocates
  nothing; the spec is compiled once, at construction, into _Type/_Field objects.
- Exact types, as the validator: a boolean is never an integer, a str subclass is not a
  string (JSON decoding makes none).
"""

cimport cython
from cpython.dict cimport PyDict_GetItem, PyDict_Next, PyDict_Size
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_CheckExact
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.long cimport PyLong_CheckExact
from cpython.object cimport PyObject
from cpython.set cimport PySet_Contains
from cpython.unicode cimport PyUnicode_CheckExact, PyUnicode_GET_LENGTH
from libc.limits cimport LLONG_MAX, LLONG_MIN

cdef extern from "Python.h":
    long long PyLong_AsLongLongAndOverflow(object v, int* overflow) except? -1

__all__ = ["CROSS", "DOUBT", "VALID", "F32_MAX", "Screen",
           "T_ANY", "T_STR", "T_BOOL", "T_INT", "T_NUM", "T_MAP", "T_STRS", "T_LIST", "T_MAPOF", "T_OBJ", "T_TEXT",
           "T_DOUBT", "R_NONE", "R_INT", "R_DEC", "R_NONEMPTY", "R_ITEMS", "R_STOP", "R_TOPK", "R_DOUBT"]

cdef enum:
    K_ANY, K_STR, K_BOOL, K_INT, K_NUM, K_MAP, K_STRS, K_LIST, K_MAPOF, K_OBJ, K_TEXT, K_DOUBT
cdef enum:
    Q_NONE, Q_INT, Q_DEC, Q_NONEMPTY, Q_ITEMS, Q_STOP, Q_TOPK, Q_DOUBT

DOUBT, VALID, CROSS = SC_DOUBT, SC_VALID, SC_CROSS
T_ANY, T_STR, T_BOOL, T_INT, T_NUM, T_MAP, T_STRS, T_LIST, T_MAPOF, T_OBJ, T_TEXT, T_DOUBT = (
    K_ANY, K_STR, K_BOOL, K_INT, K_NUM, K_MAP, K_STRS, K_LIST, K_MAPOF, K_OBJ, K_TEXT, K_DOUBT)
R_NONE, R_INT, R_DEC, R_NONEMPTY, R_ITEMS, R_STOP, R_TOPK, R_DOUBT = (
    Q_NONE, Q_INT, Q_DEC, Q_NONEMPTY, Q_ITEMS, Q_STOP, Q_TOPK, Q_DOUBT)

cdef double C_F32_MAX = 3.4028234663852886e38  # beyond it a 32-bit float is infinite
F32_MAX = C_F32_MAX

cdef object _CONTENT = "content"
cdef object _ROLE = "role"


cdef long long _clamp(object b):
    if b > LLONG_MAX:
        return LLONG_MAX
    if b < LLONG_MIN:
        return LLONG_MIN
    return b


cdef _Type _compile_type(object t, str where):
    if type(t) is not tuple or len(t) != 4 or type(t[0]) is not int or not K_ANY <= t[0] <= K_DOUBT:
        raise ValueError(f"{where}: not a type spec: {t!r}")
    cdef _Type c = _Type.__new__(_Type)
    c.code = t[0]
    c.nullable = bool(t[1])
    x, y = t[2], t[3]
    if c.code == K_INT:
        if not (type(x) is int and type(y) is int and x <= y):
            raise ValueError(f"{where}: T_INT needs integer bounds x <= y")
        c.lo = _clamp(x)
        c.hi = _clamp(y)
    elif c.code == K_LIST or c.code == K_MAPOF:
        c.item = _compile_type(x, where + "[]")
    elif c.code == K_OBJ:
        if type(x) is not dict or type(y) is not tuple:
            raise ValueError(f"{where}: T_OBJ needs a dict of member specs and a tuple of required names")
        c.members = {k: _compile_type(s, f"{where}.{k}") for k, s in x.items()}
        c.required = y
    elif c.code == K_TEXT:
        if type(x) is not frozenset:
            raise ValueError(f"{where}: T_TEXT needs a frozenset of roles")
        c.roles = x
        c.nonempty = bool(y)
    return c


cdef _Field _compile_field(_Type t, object r, bint cross, str where):
    cdef _Field f = _Field.__new__(_Field)
    f.type = t
    f.cross = cross
    if r is None:
        f.rule = Q_NONE
        return f
    if type(r) is not tuple or len(r) != 4 or type(r[0]) is not int or not Q_NONE <= r[0] <= Q_DOUBT:
        raise ValueError(f"{where}: not a rule spec: {r!r}")
    f.rule = r[0]
    lo, hi = r[1], r[2]
    f.has_lo = lo is not None
    f.has_hi = hi is not None
    f.lo_open = bool(r[3])
    if f.rule == Q_INT:
        if (f.has_lo and type(lo) is not int) or (f.has_hi and type(hi) is not int):
            raise ValueError(f"{where}: R_INT bounds are integers or None")
        f.ilo = _clamp(lo) if f.has_lo else LLONG_MIN
        f.ihi = _clamp(hi) if f.has_hi else LLONG_MAX
    elif f.rule == Q_DEC:
        if (f.has_lo and type(lo) not in (int, float)) or (f.has_hi and type(hi) not in (int, float)):
            raise ValueError(f"{where}: R_DEC bounds are numbers or None")
        f.dlo = float(lo) if f.has_lo else 0.0
        f.dhi = float(hi) if f.has_hi else 0.0
    return f


# -- the walk ---------------------------------------------------------------------------

cdef inline int _as_ll(object v, long long* out) except -2:
    # 0 and *out set, or -1 when v does not fit a long long
    cdef int overflow = 0
    cdef long long x = PyLong_AsLongLongAndOverflow(v, &overflow)
    if overflow:
        return -1
    out[0] = x
    return 0


cdef bint _ok(_Type t, object v) except -1:
    # whether v (not known to be non-null) passes type spec t
    cdef long long n
    cdef Py_ssize_t i, m, pos
    cdef PyObject* key
    cdef PyObject* val
    cdef PyObject* p
    cdef int code
    if v is None:
        return t.nullable
    code = t.code
    if code == K_STR:
        return PyUnicode_CheckExact(v)
    if code == K_BOOL:
        return v is True or v is False
    if code == K_INT:
        if not PyLong_CheckExact(v) or _as_ll(v, &n) < 0:
            return False
        return t.lo <= n <= t.hi
    if code == K_NUM:
        return PyFloat_CheckExact(v) or PyLong_CheckExact(v)
    if code == K_ANY:
        return True
    if code == K_MAP:
        return type(v) is dict
    if code == K_STRS:
        if PyUnicode_CheckExact(v):
            return True
        if type(v) is not list:
            return False
        m = PyList_GET_SIZE(v)
        for i in range(m):
            if not PyUnicode_CheckExact(<object>PyList_GET_ITEM(v, i)):
                return False
        return True
    if code == K_LIST:
        if type(v) is not list:
            return False
        m = PyList_GET_SIZE(v)
        for i in range(m):
            if not _ok(t.item, <object>PyList_GET_ITEM(v, i)):
                return False
        return True
    if code == K_MAPOF:
        if type(v) is not dict:
            return False
        pos = 0
        while PyDict_Next(v, &pos, &key, &val):
            if not _ok(t.item, <object>val):
                return False
        return True
    if code == K_OBJ:
        if type(v) is not dict:
            return False
        pos = 0
        while PyDict_Next(v, &pos, &key, &val):
            p = PyDict_GetItem(t.members, <object>key)
            if p != NULL and not _ok(<_Type>p, <object>val):
                return False
        for name in t.required:
            if PyDict_GetItem(v, name) == NULL:
                return False
        return True
    if code == K_TEXT:
        if type(v) is not list:
            return False
        m = PyList_GET_SIZE(v)
        for i in range(m):
            msg = <object>PyList_GET_ITEM(v, i)
            if type(msg) is not dict or PyDict_Size(msg) != 2:
                return False
            p = PyDict_GetItem(msg, _CONTENT)
            if p == NULL or not PyUnicode_CheckExact(<object>p):
                return False
            if t.nonempty and PyUnicode_GET_LENGTH(<object>p) == 0:
                return False
            p = PyDict_GetItem(msg, _ROLE)
            if p == NULL or not PyUnicode_CheckExact(<object>p) or not PySet_Contains(t.roles, <object>p):
                return False
        return True
    return False  # K_DOUBT


cdef bint _rule_ok(_Field f, object v) except -1:
    # whether the non-null v, which passed f's type spec, passes f's rule
    cdef long long n
    cdef double d
    cdef Py_ssize_t i, m
    cdef int rule = f.rule
    if rule == Q_NONE:
        return True
    if rule == Q_INT:
        if _as_ll(v, &n) < 0:
            return False
        return f.ilo <= n <= f.ihi
    if rule == Q_DEC:
        if PyFloat_CheckExact(v):
            d = PyFloat_AS_DOUBLE(v)
            if not (-C_F32_MAX <= d <= C_F32_MAX):
                return False
        else:
            if _as_ll(v, &n) < 0:
                return False
            d = <double>n
        if f.has_lo and (d <= f.dlo if f.lo_open else d < f.dlo):
            return False
        return not f.has_hi or d <= f.dhi
    if rule == Q_NONEMPTY:
        return len(v) > 0
    if rule == Q_ITEMS:
        return type(v) is not list or PyList_GET_SIZE(v) > 0
    if rule == Q_STOP:
        if PyUnicode_CheckExact(v):
            return PyUnicode_GET_LENGTH(v) > 0
        m = PyList_GET_SIZE(v)
        if m > 4:
            return False
        for i in range(m):
            if PyUnicode_GET_LENGTH(<object>PyList_GET_ITEM(v, i)) == 0:
                return False
        return True
    if rule == Q_TOPK:
        if _as_ll(v, &n) < 0:
            return False
        return n == -1 or n >= 1
    return False  # Q_DOUBT


@cython.final
@cython.auto_pickle(False)  # a screen is built from its spec, never pickled
cdef class Screen:
    """One API's screen over parsed request bodies (see the twin)."""

    def __init__(self, dict fields, required, dict rules, cross_fields):
        cdef dict table = {}
        if type(required) is not tuple:
            raise ValueError("required: a tuple of names")
        for k in rules:
            if k not in fields:
                raise ValueError(f"{k}: a rule for a field with no type spec")
        cross = cross_fields or frozenset()
        for k, t in fields.items():
            table[k] = _compile_field(_compile_type(t, k), rules.get(k), k in cross, k)
        for k in cross:
            if k not in table:
                table[k] = _compile_field(_compile_type((K_ANY, True, None, None), k), None, True, k)
        self._fields = table
        self._required = required
        self._always = cross_fields is None

    def passes(self, dict body):
        cdef Py_ssize_t pos = 0
        cdef PyObject* key
        cdef PyObject* val
        cdef PyObject* p
        cdef _Field f
        cdef bint cross = self._always
        while PyDict_Next(body, &pos, &key, &val):
            p = PyDict_GetItem(self._fields, <object>key)
            if p == NULL:
                continue
            f = <_Field>p
            if f.cross:
                cross = True
            if <object>val is None:
                if not f.type.nullable:
                    return SC_DOUBT
                continue
            if not _ok(f.type, <object>val) or not _rule_ok(f, <object>val):
                return SC_DOUBT
        for name in self._required:
            if PyDict_GetItem(body, name) == NULL:
                return SC_DOUBT
        return SC_CROSS if cross else SC_VALID
