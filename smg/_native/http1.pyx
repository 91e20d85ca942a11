# cython: language_level=3
"""smg._native.http1: native HTTP/1.1 request and response parsers.

Twin: smg/http1/parser_py.py, whose module docstring is the behavioural spec (the rules
kept, and each deliberate difference from h11 with its RFC reason). Selector:
smg/http1/parser.py (import from there). Declarations: http1.pxd. Stub: http1.pyi.

Rules:
- One Python->C call per network read: feed(data) runs the state machine as far as the
  bytes allow and returns every event they completed, as smg.http1.events instances.
- Same behaviour as the twin, byte for byte: same events, same exception class and
  status_hint on the same input, same state afterwards, however the input is split.
  tests/native/test_http1.py checks this against the twin and against h11.
- feed() raises only TypeError (argument not bytes-like) and smg.errors
  .RemoteProtocolError; anything else is a bug. Any exception raised while parsing
  leaves the parser in H1_ERROR, after which every feed() raises again (a TypeError
  for the argument does not: nothing was parsed).

Theory of operation:
- Input is taken through the buffer protocol without copying. When nothing is left over
  from the previous read, the state machine runs straight over the caller's buffer and
  only the unconsumed tail (an incomplete head or chunk line) is copied into `_buf`.
  Otherwise the new bytes are appended to `_buf` (read offset + compaction, no
  re-slicing) and the machine runs there.
- A head is located with memchr for LF, checking for "LF [CR] LF" after each hit; a
  failed search remembers where to resume (`_scan`), so a head arriving a byte at a time
  is scanned once, not once per read (h11's ReceiveBuffer does the same).
- Character classes are one 256-entry table of bit flags; integers are parsed in C with
  the twin's limits (Content-Length 18 decimal digits; chunk-size 16 hex digits and at
  most MAX_CHUNK_SIZE = 2**63 - 1), which is what makes them fit uint64_t.
- A section that can no longer become valid fails at the byte that breaks it, not when
  its end arrives: a bare CR in an incomplete head, trailer section or chunk line (its
  search resumes at `_cr_scan`, so it is linear too), and a chunk line whose size is
  already malformed or too big (a few bytes, checked again on each read).
- Bodies: a Data event is a new bytes copied from the input, except that a body which
  is exactly the caller's whole `bytes` object reuses that object.

Indexing is on C pointers and on the 256-entry tables (indexed by an unsigned char),
whose bounds the loops keep by hand; the one index into a Python object (the tuple of
common header names, in _lower_name) switches boundscheck/wraparound off for that
function only, with the reason beside it.
"""

cimport cython
from cpython.buffer cimport (
    PyBUF_SIMPLE,
    PyBuffer_IsContiguous,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytearray cimport PyByteArray_Check
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_Check,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.memoryview cimport PyMemoryView_Check, PyMemoryView_GET_BUFFER
from libc.stdint cimport uint64_t
from libc.string cimport memchr, memcmp, memcpy, memmove

from smg.errors import RemoteProtocolError as _RemoteProtocolError
from smg.http1 import events as _events

# Looked up once (style rule 8): the events and the exception are the twin's classes.
cdef object RemoteProtocolError = _RemoteProtocolError
cdef object Request = _events.Request
cdef object InformationalResponse = _events.InformationalResponse
cdef object Response = _events.Response
cdef object Data = _events.Data
cdef object EndOfMessage = _events.EndOfMessage

# 16 KiB, the twin's DEFAULT_MAX_HEAD_SIZE (h11's max_incomplete_event_size; see the twin
# for the precedents). A test checks the two agree.
DEFAULT_MAX_HEAD_SIZE = 16 * 1024

# The largest chunk-size accepted, the twin's MAX_CHUNK_SIZE (2**63 - 1: what a signed
# 64-bit length holds; see the twin). A test checks the two agree.
cdef uint64_t H1_MAX_CHUNK_SIZE = 0x7FFFFFFFFFFFFFFF
MAX_CHUNK_SIZE = H1_MAX_CHUNK_SIZE

# A receive buffer larger than this is freed once it is empty, so that one big read (say
# a partial head followed by a megabyte of body) does not pin its memory for the rest of
# a keep-alive connection. Heads and chunk lines are capped at max_head_size (16 KiB by
# default), so in steady state the buffer stays below this and is reused.
cdef enum:
    H1_BUF_KEEP = 64 * 1024
    H1_BUF_MIN = 1024

cdef enum:
    LF = 10
    CR = 13
    SP = 32
    HTAB = 9

# Character classes, one bit each (RFC 9110 §5.6.2 tchar, §5.5 field-vchar, §5.6.4 qdtext).
cdef enum:
    C_TOKEN = 0x01    # tchar
    C_TEXT = 0x02     # HTAB / SP / VCHAR / obs-text: field value, reason-phrase, quoted-pair
    C_VCHAR = 0x04    # %x21-7E: request-target (as h11 and the twin accept it)
    C_QDTEXT = 0x08   # HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
    C_HEX = 0x10      # HEXDIG
    C_DIGIT = 0x20    # DIGIT

cdef unsigned char CHAR_CLASS[256]
cdef unsigned char LOWER[256]


cdef void _init_tables() noexcept:
    cdef int c
    cdef unsigned char k
    cdef const char *tchar = b"!#$%&'*+-.^_`|~"
    for c in range(256):
        k = 0
        if 0x30 <= c <= 0x39:
            k |= C_TOKEN | C_HEX | C_DIGIT
        elif 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A:
            k |= C_TOKEN
            if 0x41 <= c <= 0x46 or 0x61 <= c <= 0x66:
                k |= C_HEX
        if c == HTAB or c == SP or 0x21 <= c <= 0x7E or c >= 0x80:
            k |= C_TEXT
            if c != 0x22 and c != 0x5C:
                k |= C_QDTEXT
        if 0x21 <= c <= 0x7E:
            k |= C_VCHAR
        CHAR_CLASS[c] = k
        LOWER[c] = <unsigned char>(c + 32) if 0x41 <= c <= 0x5A else <unsigned char>c
    while tchar[0]:
        CHAR_CLASS[<unsigned char>tchar[0]] |= C_TOKEN
        tchar += 1


_init_tables()

# Constant values shared by every event (never mutated).
cdef bytes V10 = b"1.0"
cdef bytes V11 = b"1.1"
cdef bytes EMPTY = b""
cdef bytes CHUNKED = b"chunked"
cdef bytes HEAD_METHOD = b"HEAD"

# Header names and methods seen on nearly every request are returned as these shared
# objects instead of a new bytes each time (equal values; bytes are immutable).
# Bucketed by length: _COMMON_NAMES[n] is a tuple of the known names of length n.
cdef enum:
    H1_COMMON_MAX = 32
cdef tuple _COMMON_NAMES
cdef tuple _COMMON_METHODS = (b"GET", b"PUT", b"POST", b"HEAD", b"PATCH", b"DELETE",
                              b"OPTIONS")


def _bucket(names):
    out = [[] for _ in range(H1_COMMON_MAX + 1)]
    for n in names:
        out[len(n)].append(n)
    return tuple([tuple(b) for b in out])


_COMMON_NAMES = _bucket([
    b"host", b"user-agent", b"accept", b"accept-encoding", b"accept-language",
    b"content-type", b"content-length", b"transfer-encoding", b"connection",
    b"authorization", b"cache-control", b"cookie", b"expect", b"origin", b"referer",
    b"x-request-id", b"x-forwarded-for", b"x-forwarded-proto", b"traceparent",
    b"tracestate", b"date", b"server", b"keep-alive", b"vary", b"content-encoding",
    b"x-correlation-id", b"openai-organization", b"openai-project", b"x-api-key",
    b"anthropic-version", b"x-stainless-lang", b"x-stainless-retry-count",
    b"x-stainless-timeout", b"x-stainless-os", b"x-stainless-arch",
    b"x-stainless-runtime", b"x-stainless-runtime-version",
    b"x-stainless-package-version", b"x-stainless-async", b"pragma", b"etag",
    b"last-modified", b"location", b"set-cookie", b"upgrade", b"trailer", b"te",
])
del _bucket


# ---------------------------------------------------------------------------------------
# Byte-level helpers. Each takes a pointer and a length it never reads past.

cdef inline bint _is_ows(unsigned char c) noexcept:
    return c == SP or c == HTAB


cdef inline bint _ieq(const unsigned char *p, Py_ssize_t n, const char *lower,
                      Py_ssize_t m) noexcept:
    # p[0:n] equals the lower-case ASCII string lower[0:m], ignoring ASCII case
    cdef Py_ssize_t i
    if n != m:
        return False
    for i in range(n):
        if LOWER[p[i]] != <unsigned char>lower[i]:
            return False
    return True


cdef Py_ssize_t _find_head_end(const unsigned char *p, Py_ssize_t n,
                               Py_ssize_t *scan) noexcept:
    # Index just past the first "LF [CR] LF" at or after scan[0], or -1. On -1, scan[0] is
    # set to where the search must resume when more bytes arrive: no match can start
    # before it. (The twin's _find_head_end, made resumable.)
    cdef Py_ssize_t i = scan[0]
    cdef const unsigned char *q
    while i < n:
        q = <const unsigned char *>memchr(p + i, LF, <size_t>(n - i))
        if q == NULL:
            break
        i = q - p
        if i + 1 >= n:
            scan[0] = i
            return -1
        if p[i + 1] == LF:
            return i + 2
        if p[i + 1] == CR:
            if i + 2 >= n:
                scan[0] = i
                return -1
            if p[i + 2] == LF:
                return i + 3
        i += 1
    scan[0] = n
    return -1


cdef Py_ssize_t _find_section_end(const unsigned char *p, Py_ssize_t n,
                                  Py_ssize_t *scan) noexcept:
    # Like _find_head_end, but the section may be empty (the trailers after a 0 chunk).
    if n > 0:
        if p[0] == LF:
            return 1
        if p[0] == CR:
            if n == 1:
                return -1
            if p[1] == LF:
                return 2
    return _find_head_end(p, n, scan)


cdef inline bint _has_bare_cr(const unsigned char *p, Py_ssize_t n) noexcept:
    # A CR not followed by LF anywhere in p[0:n] (the twin's _split_lines check).
    cdef const unsigned char *q
    cdef Py_ssize_t i = 0
    while i < n:
        q = <const unsigned char *>memchr(p + i, CR, <size_t>(n - i))
        if q == NULL:
            return False
        i = q - p + 1
        if i >= n or p[i] != LF:
            return True
    return False


cdef bint _bare_cr_in(const unsigned char *p, Py_ssize_t n, Py_ssize_t *scan) noexcept:
    # A CR followed by a byte other than LF in p[scan[0]:n]? A CR at n - 1 is undecided
    # (its next byte has not arrived, or lies past a limit): on False, scan[0] is where
    # the search resumes when more bytes arrive (every CR before it is followed by LF).
    cdef const unsigned char *q
    cdef Py_ssize_t i = scan[0]
    while i < n:
        q = <const unsigned char *>memchr(p + i, CR, <size_t>(n - i))
        if q == NULL:
            break
        i = q - p + 1
        if i == n:
            scan[0] = i - 1
            return False
        if p[i] != LF:
            return True
    scan[0] = n
    return False


cdef inline Py_ssize_t _line_end(const unsigned char *p, Py_ssize_t start, Py_ssize_t nl) noexcept:
    # end of the line whose LF is at nl, without its CR
    if nl > start and p[nl - 1] == CR:
        return nl - 1
    return nl


cdef object _shared(tuple pool, const unsigned char *p, Py_ssize_t n):
    # a bytes equal to p[0:n]: a member of pool if one matches, else a new one
    cdef object b
    for b in pool:
        if PyBytes_GET_SIZE(b) == n and memcmp(PyBytes_AS_STRING(b), p, <size_t>n) == 0:
            return b
    return PyBytes_FromStringAndSize(<const char *>p, n)


@cython.boundscheck(False)  # 0 <= n <= H1_COMMON_MAX and len(_COMMON_NAMES) == H1_COMMON_MAX + 1
@cython.wraparound(False)   # n is a length, never negative
cdef object _lower_name(const unsigned char *p, Py_ssize_t n):
    # the header name p[0:n] in lower case, as bytes
    cdef unsigned char tmp[H1_COMMON_MAX]
    cdef Py_ssize_t i
    cdef object out
    cdef unsigned char *o
    if n <= H1_COMMON_MAX:
        for i in range(n):
            tmp[i] = LOWER[p[i]]
        return _shared(<tuple>_COMMON_NAMES[n], tmp, n)
    out = PyBytes_FromStringAndSize(NULL, n)
    o = <unsigned char *>PyBytes_AS_STRING(out)
    for i in range(n):
        o[i] = LOWER[p[i]]
    return out


cdef bint _list_has(const unsigned char *p, Py_ssize_t s, Py_ssize_t e, const char *tok,
                    Py_ssize_t tlen) noexcept:
    # Does the comma-separated list p[s:e] hold an element equal to the lower-case tok,
    # ignoring case and surrounding OWS? (The twin: t.strip() in value.lower().split(","))
    cdef const unsigned char *c
    cdef Py_ssize_t a, b, ce
    while True:
        c = <const unsigned char *>memchr(p + s, b',', <size_t>(e - s))
        ce = e if c == NULL else c - p
        a = s
        b = ce
        while a < b and _is_ows(p[a]):
            a += 1
        while b > a and _is_ows(p[b - 1]):
            b -= 1
        if _ieq(p + a, b - a, tok, tlen):
            return True
        if c == NULL:
            return False
        s = ce + 1


# Header names the parser acts on.
cdef enum:
    K_OTHER = 0
    K_CONTENT_LENGTH = 1
    K_TRANSFER_ENCODING = 2
    K_CONNECTION = 3
    K_HOST = 4
    K_EXPECT = 5


cdef inline int _header_kind(const unsigned char *p, Py_ssize_t n) noexcept:
    # p[0:n] is a token; which of the framing-relevant names is it (ignoring case)?
    if n == 4:
        return K_HOST if _ieq(p, n, b"host", 4) else K_OTHER
    if n == 6:
        return K_EXPECT if _ieq(p, n, b"expect", 6) else K_OTHER
    if n == 10:
        return K_CONNECTION if _ieq(p, n, b"connection", 10) else K_OTHER
    if n == 14:
        return K_CONTENT_LENGTH if _ieq(p, n, b"content-length", 14) else K_OTHER
    if n == 17:
        return K_TRANSFER_ENCODING if _ieq(p, n, b"transfer-encoding", 17) else K_OTHER
    return K_OTHER


# Errors in what a well-formed field means. They are raised only once every line of the
# section has passed the syntax checks (h11's order: a malformed line is a 400 even when
# an earlier field would have been a 501), so _field_meaning reports them as codes.
cdef enum:
    E_NONE = 0
    E_CL_CONFLICT = 1
    E_CL_BAD = 2
    E_TE_MULTIPLE = 3
    E_TE_UNSUPPORTED = 4


cdef object _field_error(int code):
    if code == E_CL_CONFLICT:
        return RemoteProtocolError("conflicting Content-Length headers")
    if code == E_CL_BAD:
        return RemoteProtocolError("bad Content-Length")
    if code == E_TE_MULTIPLE:
        return RemoteProtocolError("multiple Transfer-Encoding headers", 501)
    return RemoteProtocolError("only Transfer-Encoding: chunked is supported", 501)


cdef int _field_meaning(const unsigned char *p, Py_ssize_t ns, Py_ssize_t ne, Py_ssize_t vs,
                        Py_ssize_t ve, H1Framing *f, list headers) except -1:
    # One syntactically valid field: name p[ns:ne], value p[vs:ve] (OWS stripped).
    # Appends it to headers and updates *f; returns E_NONE or an E_* code.
    cdef int kind = _header_kind(p + ns, ne - ns)
    cdef const unsigned char *q
    cdef Py_ssize_t es, ee, a, b, k
    cdef uint64_t v
    cdef object value
    if kind == K_CONTENT_LENGTH:
        # every comma-separated element, stripped, must be the same bytes (RFC 9112 §6.3
        # item 5), 1-18 digits, and the same bytes as any earlier field's
        q = <const unsigned char *>memchr(p + vs, b',', <size_t>(ve - vs))
        es = vs
        ee = ve if q == NULL else q - p
        while ee > es and _is_ows(p[ee - 1]):
            ee -= 1
        while q != NULL:
            a = q - p + 1
            q = <const unsigned char *>memchr(p + a, b',', <size_t>(ve - a))
            b = ve if q == NULL else q - p
            while a < b and _is_ows(p[a]):
                a += 1
            while b > a and _is_ows(p[b - 1]):
                b -= 1
            if b - a != ee - es or memcmp(p + a, p + es, <size_t>(ee - es)) != 0:
                return E_CL_CONFLICT
        if ee - es < 1 or ee - es > 18:
            return E_CL_BAD
        v = 0
        for k in range(es, ee):
            if not CHAR_CLASS[p[k]] & C_DIGIT:
                return E_CL_BAD
            v = v * 10 + (p[k] - 0x30)  # at most 18 digits < 2**63: no overflow
        if f.cl_len < 0:
            f.cl_start = es
            f.cl_len = ee - es
            f.content_length = v
            headers.append((_lower_name(p + ns, ne - ns),
                            PyBytes_FromStringAndSize(<const char *>p + es, ee - es)))
        elif f.cl_len != ee - es or memcmp(p + f.cl_start, p + es, <size_t>(ee - es)) != 0:
            return E_CL_CONFLICT
        return E_NONE
    if kind == K_TRANSFER_ENCODING:
        if f.chunked:  # Transfer-Encoding is only ever accepted as exactly "chunked"
            return E_TE_MULTIPLE
        if not _ieq(p + vs, ve - vs, b"chunked", 7):
            return E_TE_UNSUPPORTED
        f.chunked = True
        value = CHUNKED
    else:
        if kind == K_CONNECTION:
            if not f.close and _list_has(p, vs, ve, b"close", 5):
                f.close = True
        elif kind == K_HOST:
            f.hosts += 1
        elif kind == K_EXPECT:
            if not f.expect_continue and _list_has(p, vs, ve, b"100-continue", 12):
                f.expect_continue = True
        value = PyBytes_FromStringAndSize(<const char *>p + vs, ve - vs)
    headers.append((_lower_name(p + ns, ne - ns), value))
    return E_NONE


cdef list _parse_header_lines(const unsigned char *p, Py_ssize_t pos, Py_ssize_t n,
                              H1Framing *f):
    # Header field lines from p[pos:] up to the first empty line (the section p[0:n] ends
    # with one, and has no bare CR: callers check). Returns [(lower-case name, value)]
    # and fills *f. The twin's _parse_headers, rule for rule: every line's syntax first,
    # then the first error in the fields' meaning, then Content-Length with
    # Transfer-Encoding; so the error raised (and its status) is the twin's.
    cdef list headers = []
    cdef const unsigned char *q
    cdef Py_ssize_t nl, e, j, k, vs, ve
    cdef int err = E_NONE
    f.cl_start = 0
    f.cl_len = -1
    f.content_length = 0
    f.chunked = False
    f.close = False
    f.expect_continue = False
    f.hosts = 0
    while pos < n:
        q = <const unsigned char *>memchr(p + pos, LF, <size_t>(n - pos))
        if q == NULL:  # cannot happen: the section ends with LF
            break
        nl = q - p
        e = _line_end(p, pos, nl)
        if e == pos:
            break
        # syntax: field-name ":" OWS field-value OWS (RFC 9112 §5), no obs-fold (§5.2)
        if _is_ows(p[pos]):
            raise RemoteProtocolError("obsolete line folding is not accepted")
        j = pos
        while j < e and CHAR_CLASS[p[j]] & C_TOKEN:
            j += 1
        if j == pos or j == e or p[j] != b':':
            raise RemoteProtocolError("malformed header line")
        for k in range(j + 1, e):
            if not CHAR_CLASS[p[k]] & C_TEXT:
                raise RemoteProtocolError("malformed header line")
        # meaning, until the first error; the syntax of the rest is still checked
        if err == E_NONE:
            vs = j + 1
            ve = e
            while vs < ve and _is_ows(p[vs]):
                vs += 1
            while ve > vs and _is_ows(p[ve - 1]):
                ve -= 1
            err = _field_meaning(p, pos, j, vs, ve, f, headers)
        pos = nl + 1
    if err != E_NONE:
        raise _field_error(err)
    if f.chunked and f.cl_len >= 0:
        raise RemoteProtocolError("both Content-Length and Transfer-Encoding present")
    return headers


cdef inline Py_ssize_t _chunk_size(const unsigned char *p, Py_ssize_t n,
                                   uint64_t *size) noexcept:
    # The chunk-size at the start of p[0:n] (the twin: _CHUNK_LINE's 1-16 HEXDIG and
    # MAX_CHUNK_SIZE): returns the number of its hex digits (0: none) and stores the
    # value; -1 once it can no longer be valid: a 17th digit, or a value above
    # H1_MAX_CHUNK_SIZE.
    cdef Py_ssize_t i = 0
    cdef uint64_t v = 0
    cdef unsigned char c
    while i < n and CHAR_CLASS[p[i]] & C_HEX:
        # v <= MAX >> 4 keeps v * 16 + 15 <= MAX = 2**63 - 1: nothing shifts out
        if i == 16 or v > (H1_MAX_CHUNK_SIZE >> 4):
            return -1
        c = p[i]
        v = (v << 4) | (c - 0x30 if c <= 0x39 else (c | 0x20) - 0x57)
        i += 1
    size[0] = v
    return i


cdef bint _chunk_prefix_bad(const unsigned char *p, Py_ssize_t n) noexcept:
    # p[0:n] (n > 0, no LF yet) starts a chunk line: is no complete line valid any more?
    # The size must be 1-16 HEXDIG <= MAX, followed by OWS, ";" or the line's CR (a bare
    # CR is the caller's _bare_cr_in). The twin's _chunk_prefix_bad.
    cdef uint64_t size
    cdef Py_ssize_t i = _chunk_size(p, n, &size)
    cdef unsigned char c
    if i <= 0:
        return True
    if i < n:
        c = p[i]
        return not (c == SP or c == HTAB or c == b';' or c == CR)
    return False


cdef uint64_t _parse_chunk_line(const unsigned char *p, Py_ssize_t n) except? 0xFFFFFFFFFFFFFFFF:
    # chunk-size [ chunk-ext ] without its CRLF (RFC 9112 §7.1, §7.1.1; the twin's
    # _CHUNK_LINE): 1-16 HEXDIG, then *( BWS ";" BWS token [ BWS "=" BWS ( token /
    # quoted-string ) ] ), then OWS. Returns the size.
    cdef uint64_t size = 0
    cdef Py_ssize_t i = _chunk_size(p, n, &size)
    cdef unsigned char c
    if i <= 0:
        raise RemoteProtocolError("malformed chunk header")
    while True:
        while i < n and _is_ows(p[i]):
            i += 1
        if i == n:
            return size
        if p[i] != b';':
            raise RemoteProtocolError("malformed chunk header")
        i += 1
        while i < n and _is_ows(p[i]):
            i += 1
        if i == n or not CHAR_CLASS[p[i]] & C_TOKEN:
            raise RemoteProtocolError("malformed chunk header")
        while i < n and CHAR_CLASS[p[i]] & C_TOKEN:
            i += 1
        while i < n and _is_ows(p[i]):
            i += 1
        if i == n or p[i] != b'=':
            continue
        i += 1
        while i < n and _is_ows(p[i]):
            i += 1
        if i == n:
            raise RemoteProtocolError("malformed chunk header")
        if p[i] == b'"':
            i += 1
            while True:
                if i == n:
                    raise RemoteProtocolError("malformed chunk header")
                c = p[i]
                if c == b'"':
                    i += 1
                    break
                if c == b'\\':
                    if i + 1 == n or not CHAR_CLASS[p[i + 1]] & C_TEXT:
                        raise RemoteProtocolError("malformed chunk header")
                    i += 2
                elif CHAR_CLASS[c] & C_QDTEXT:
                    i += 1
                else:
                    raise RemoteProtocolError("malformed chunk header")
        elif CHAR_CLASS[p[i]] & C_TOKEN:
            while i < n and CHAR_CLASS[p[i]] & C_TOKEN:
                i += 1
        else:
            raise RemoteProtocolError("malformed chunk header")


cdef inline object _data_event(const unsigned char *buf, Py_ssize_t pos, Py_ssize_t take,
                               Py_ssize_t n, object whole):
    # Data for buf[pos:pos+take]; `whole` is the caller's bytes object when buf is its
    # buffer (else None): a body that is all of it is that object, not a copy.
    if whole is not None and pos == 0 and take == n:
        return Data(whole)
    return Data(PyBytes_FromStringAndSize(<const char *>buf + pos, take))


# ---------------------------------------------------------------------------------------

@cython.internal
cdef class _Parser:
    """Shared machinery of RequestParser and ResponseParser."""

    def __cinit__(self, *args, **kwargs):
        self._buf = NULL
        self._buf_cap = 0
        self._buf_start = 0
        self._buf_end = 0
        self._eof_status = 400
        self._error_status = 0

    def __dealloc__(self):
        PyMem_Free(self._buf)
        self._buf = NULL

    def __init__(self, Py_ssize_t max_head_size=DEFAULT_MAX_HEAD_SIZE):
        if self._in_feed:
            raise RuntimeError("__init__() called during feed()")
        self._max_head_size = max_head_size
        self._state = H1_HEAD
        self._remaining = 0
        self._skipped = 0
        self._keep_alive = True
        self._interim = False
        self._clear()

    @property
    def state(self):
        """The parser state, one of the H1_* integers."""
        return self._state

    @property
    def buffered(self):
        """Bytes received but not yet turned into events (e.g. an incomplete head)."""
        return self._buf_end - self._buf_start

    def feed(self, data):
        """Consume bytes; returns the events completed by them.

        Raises:
            RemoteProtocolError: the bytes break HTTP/1.1 (also on every call after).
            TypeError: data is not bytes, bytearray or memoryview.
        """
        cdef Py_buffer view
        cdef list events
        cdef Py_ssize_t consumed
        cdef int state = self._state
        if state == H1_ERROR:
            if self._error_status:
                raise RemoteProtocolError("can't receive data after a protocol error",
                                          self._error_status)
            raise RemoteProtocolError("can't receive data after a protocol error")
        if state == H1_CLOSED:
            return []
        if PyMemoryView_Check(data):
            # the twin (bytearray +=) refuses a strided view with TypeError, not BufferError
            if not PyBuffer_IsContiguous(PyMemoryView_GET_BUFFER(data), b'C'):
                raise TypeError("feed() takes a contiguous memoryview")
        elif not (PyBytes_Check(data) or PyByteArray_Check(data)):
            raise TypeError("feed() takes bytes-like data")
        if self._in_feed:
            raise RuntimeError("feed() re-entered")
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        self._in_feed = True
        events = []
        try:
            if self._buf_start == self._buf_end:
                # nothing left over: parse the caller's bytes where they are
                consumed = self._run(<const unsigned char *>view.buf, view.len, events,
                                     data if PyBytes_CheckExact(data) else None)
                if consumed < view.len:
                    self._append(<const unsigned char *>view.buf + consumed, view.len - consumed)
            else:
                self._append(<const unsigned char *>view.buf, view.len)
                consumed = self._run(self._buf + self._buf_start, self._buf_end - self._buf_start,
                                     events, None)
                self._consume(consumed)
        except BaseException as exc:
            # any exception leaves the parser in ERROR (as the twin and h11 do)
            self._state = H1_ERROR
            self._clear()
            if self._error_status and isinstance(exc, RemoteProtocolError):
                exc.status_hint = self._error_status
            raise
        finally:
            self._in_feed = False
            PyBuffer_Release(&view)
        return events

    def feed_eof(self):
        """The peer closed the connection.

        Returns:
            [EndOfMessage] for a body delimited by close; [] between messages.
        Raises:
            RemoteProtocolError: the connection closed in the middle of a message
                (for a response, that includes after a 1xx: the final one is due).
        """
        cdef int state = self._state
        if self._in_feed:
            raise RuntimeError("feed_eof() called during feed()")
        if state == H1_BODY_UNTIL_CLOSE:
            self._state = H1_CLOSED
            return [EndOfMessage([])]
        if state == H1_CLOSED or (state == H1_HEAD and self._buf_start == self._buf_end
                                  and not self._interim):
            self._state = H1_CLOSED
            return []
        self._state = H1_ERROR
        self._clear()
        raise RemoteProtocolError("connection closed in the middle of a message", self._eof_status)

    cdef inline int _append(self, const unsigned char *data, Py_ssize_t n) except -1:
        # Append data[0:n] to _buf: compact first (move the unconsumed bytes to the front)
        # when that makes room, else grow by doubling.
        cdef Py_ssize_t used = self._buf_end - self._buf_start
        cdef Py_ssize_t cap
        cdef unsigned char *nb
        if n <= 0:
            return 0
        if self._buf_end + n > self._buf_cap:
            if self._buf_start > 0:
                memmove(self._buf, self._buf + self._buf_start, <size_t>used)
                self._buf_start = 0
                self._buf_end = used
            if used + n > self._buf_cap:
                cap = self._buf_cap * 2
                if cap < used + n:
                    cap = used + n
                if cap < H1_BUF_MIN:
                    cap = H1_BUF_MIN
                nb = <unsigned char *>PyMem_Realloc(self._buf, <size_t>cap)
                if nb == NULL:
                    raise MemoryError()
                self._buf = nb
                self._buf_cap = cap
        memcpy(self._buf + self._buf_end, data, <size_t>n)
        self._buf_end += n
        return 0

    cdef inline void _consume(self, Py_ssize_t n) noexcept:
        self._buf_start += n
        if self._buf_start >= self._buf_end:
            self._clear()

    cdef inline void _clear(self) noexcept:
        # forget every buffered byte; give back a buffer that one big read inflated
        self._buf_start = 0
        self._buf_end = 0
        self._scan = 0
        self._cr_scan = 0
        if self._buf_cap > H1_BUF_KEEP:
            PyMem_Free(self._buf)
            self._buf = NULL
            self._buf_cap = 0

    cdef Py_ssize_t _run(self, const unsigned char *buf, Py_ssize_t n, list events,
                         object whole) except -1:
        # The twin's _run over buf[0:n]; returns the bytes consumed (the rest is an
        # incomplete head, chunk line, trailer section or chunk-ending CRLF).
        cdef Py_ssize_t pos = 0, end, nl, take, limit, scan
        cdef const unsigned char *q
        cdef uint64_t size
        cdef H1Framing f
        cdef list trailers
        cdef int state
        cdef unsigned char c
        while pos < n or (self._state == H1_BODY_LENGTH and self._remaining == 0):
            state = self._state
            if state == H1_HEAD:
                c = buf[pos]
                if c < 0x21:
                    # h11's early check: no head starts with a CTL or SP, so a TLS
                    # handshake (0x16) or other binary garbage on the port fails at once,
                    # not at 431 ...
                    if not self._skip_empty_lines or (c != LF and c != CR):
                        raise RemoteProtocolError("illegal first byte of a message head")
                    # ... but a request may follow empty lines (RFC 9112 §2.2), which
                    # count towards the head's limit
                    if c == LF:
                        take = 1
                    elif n - pos < 2:
                        break  # a CR: whether an LF follows is still to come
                    elif buf[pos + 1] == LF:
                        take = 2
                    else:
                        raise RemoteProtocolError("bare CR in message head")
                    pos += take
                    self._skipped += take
                    if self._skipped > self._max_head_size:
                        raise self._head_too_big()
                    continue
                # errors come in byte order: a bare CR within the limit is a 400 (its
                # next byte may be the first past it), a bare CR past it loses to the 431
                limit = self._max_head_size - self._skipped
                end = _find_head_end(buf + pos, n - pos, &self._scan)
                if end < 0:
                    if _bare_cr_in(buf + pos, n - pos if n - pos <= limit else limit + 1,
                                   &self._cr_scan):
                        raise RemoteProtocolError("bare CR in message head")
                    if n - pos > limit:
                        raise self._head_too_big()
                    break
                if end > limit:
                    scan = 0
                    if _bare_cr_in(buf + pos, limit + 1, &scan):
                        raise RemoteProtocolError("bare CR in message head")
                    raise self._head_too_big()
                self._scan = 0
                self._cr_scan = 0
                self._skipped = 0
                self._on_head(buf + pos, end, events)
                pos += end
            elif state == H1_BODY_LENGTH:
                take = n - pos
                if <uint64_t>take > self._remaining:
                    take = <Py_ssize_t>self._remaining
                if take:
                    events.append(_data_event(buf, pos, take, n, whole))
                    pos += take
                    self._remaining -= <uint64_t>take
                if self._remaining == 0:
                    self._end_message(events, [])
                else:
                    break
            elif state == H1_CHUNK_SIZE:
                q = <const unsigned char *>memchr(buf + pos, LF, <size_t>(n - pos))
                if q == NULL:
                    if n - pos > self._max_head_size:
                        raise RemoteProtocolError("chunk header too long")
                    # no waiting for the LF of a line that can no longer be valid
                    if (_chunk_prefix_bad(buf + pos, n - pos)
                            or _bare_cr_in(buf + pos, n - pos, &self._cr_scan)):
                        raise RemoteProtocolError("malformed chunk header")
                    break
                nl = q - buf
                if nl + 1 - pos > self._max_head_size:
                    raise RemoteProtocolError("chunk header too long")
                if nl == pos or buf[nl - 1] != CR:
                    raise RemoteProtocolError("chunk header must end in CRLF")
                size = _parse_chunk_line(buf + pos, nl - 1 - pos)
                pos = nl + 1
                self._cr_scan = 0
                if size == 0:
                    self._state = H1_TRAILERS
                    self._scan = 0
                else:
                    self._remaining = size
                    self._state = H1_CHUNK_DATA
            elif state == H1_CHUNK_DATA:
                take = n - pos
                if <uint64_t>take > self._remaining:
                    take = <Py_ssize_t>self._remaining
                events.append(_data_event(buf, pos, take, n, whole))
                pos += take
                self._remaining -= <uint64_t>take
                if self._remaining == 0:
                    self._state = H1_CHUNK_DATA_END
            elif state == H1_CHUNK_DATA_END:
                if n - pos < 2:
                    if buf[pos] != CR:
                        raise RemoteProtocolError("missing CRLF after chunk data")
                    break
                if buf[pos] != CR or buf[pos + 1] != LF:
                    raise RemoteProtocolError("missing CRLF after chunk data")
                pos += 2
                self._state = H1_CHUNK_SIZE
            elif state == H1_TRAILERS:
                # the trailer section is taken whole, like a head
                # (bare CR and the limit in byte order, as for a head)
                limit = self._max_head_size
                end = _find_section_end(buf + pos, n - pos, &self._scan)
                if end < 0:
                    if _bare_cr_in(buf + pos, n - pos if n - pos <= limit else limit + 1,
                                   &self._cr_scan):
                        raise RemoteProtocolError("bare CR in message head")
                    if n - pos > limit:
                        raise RemoteProtocolError("trailers too long", 431)
                    break
                if end > limit:
                    scan = 0
                    if _bare_cr_in(buf + pos, limit + 1, &scan):
                        raise RemoteProtocolError("bare CR in message head")
                    raise RemoteProtocolError("trailers too long", 431)
                if _has_bare_cr(buf + pos, end):
                    raise RemoteProtocolError("bare CR in message head")
                self._scan = 0
                self._cr_scan = 0
                trailers = _parse_header_lines(buf + pos, 0, end, &f)
                pos += end
                self._end_message(events, trailers)
            elif state == H1_BODY_UNTIL_CLOSE:
                events.append(_data_event(buf, pos, n - pos, n, whole))
                pos = n
            else:  # H1_CLOSED: leftover bytes after a closing message are ignored
                pos = n
                break
        return pos

    cdef int _end_message(self, list events, list trailers) except -1:
        events.append(EndOfMessage(trailers))
        self._state = H1_HEAD if self._keep_alive else H1_CLOSED
        return 0

    cdef int _on_head(self, const unsigned char *head, Py_ssize_t n, list events) except -1:
        raise NotImplementedError

    cdef object _head_too_big(self):
        raise NotImplementedError


cdef class RequestParser(_Parser):
    """Parses the requests a client sends (pipelined requests come out in order)."""

    def __cinit__(self, *args, **kwargs):
        self._eof_status = 400
        self._error_status = 0
        self._skip_empty_lines = True

    cdef object _head_too_big(self):
        return RemoteProtocolError("request head too large", 431)

    cdef int _on_head(self, const unsigned char *p, Py_ssize_t n, list events) except -1:
        # p[0:n] is a complete head, ending with its blank line.
        cdef const unsigned char *q
        cdef Py_ssize_t nl, e, j, ts, k, v
        cdef object method, target, version
        cdef list headers
        cdef H1Framing f
        cdef bint keep_alive
        cdef long long cl
        if _has_bare_cr(p, n):
            raise RemoteProtocolError("bare CR in message head")
        q = <const unsigned char *>memchr(p, LF, <size_t>n)
        nl = q - p
        e = _line_end(p, 0, nl)
        if e == 0:
            raise RemoteProtocolError("empty line where a message head was expected")
        # request-line = method SP request-target SP HTTP-version (RFC 9112 §3)
        j = 0
        while j < e and CHAR_CLASS[p[j]] & C_TOKEN:
            j += 1
        if j == 0 or j == e or p[j] != SP:
            raise RemoteProtocolError("malformed request line")
        ts = j + 1
        k = ts
        while k < e and CHAR_CLASS[p[k]] & C_VCHAR:
            k += 1
        if k == ts or k == e or p[k] != SP:
            raise RemoteProtocolError("malformed request line")
        v = k + 1
        if (e - v != 8 or memcmp(p + v, b"HTTP/", 5) != 0 or not CHAR_CLASS[p[v + 5]] & C_DIGIT
                or p[v + 6] != b'.' or not CHAR_CLASS[p[v + 7]] & C_DIGIT):
            raise RemoteProtocolError("malformed request line")
        if p[v + 5] == b'1' and p[v + 7] == b'1':
            version = V11
        elif p[v + 5] == b'1' and p[v + 7] == b'0':
            version = V10
        else:
            version = None  # 505, once the rest is known to be well-formed
        if j <= 7:
            method = _shared(_COMMON_METHODS, p, j)
        else:
            method = PyBytes_FromStringAndSize(<const char *>p, j)
        target = PyBytes_FromStringAndSize(<const char *>p + ts, k - ts)
        headers = _parse_header_lines(p, nl + 1, n, &f)
        # RFC 9112 §3.2: 400 for an HTTP/1.1 request without Host and for any request
        # with more than one
        if f.hosts > 1:
            raise RemoteProtocolError("multiple Host headers")
        if version is V11 and f.hosts == 0:
            raise RemoteProtocolError("missing Host header")
        # RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message is faulty framing
        if version is V10 and f.chunked:
            raise RemoteProtocolError("Transfer-Encoding in an HTTP/1.0 request")
        # last: 505 is for an otherwise well-formed request (and h11, which takes any
        # version, then reports the same error we do for the rest)
        if version is None:
            raise RemoteProtocolError("unsupported HTTP version", 505)
        keep_alive = version is V11 and not f.close
        self._keep_alive = keep_alive
        if f.chunked:
            cl = -1
            self._state = H1_CHUNK_SIZE
        else:
            cl = <long long>f.content_length if f.cl_len >= 0 else 0
            self._remaining = <uint64_t>cl
            self._state = H1_BODY_LENGTH
        events.append(Request(method, target, version, headers, cl, f.chunked, keep_alive,
                              version is V11 and f.expect_continue))
        return 0


cdef class ResponseParser(_Parser):
    """Parses the responses a worker sends back.

    Call ``set_request_method`` before each response if the request was HEAD.
    """

    def __cinit__(self, *args, **kwargs):
        # RFC 9112 §6.3: a proxy that receives an invalid response sends 502
        self._eof_status = 502
        self._error_status = 502
        self._head_request = False

    def __init__(self, Py_ssize_t max_head_size=DEFAULT_MAX_HEAD_SIZE):
        _Parser.__init__(self, max_head_size)
        self._head_request = False

    def set_request_method(self, method):
        """The method of the request the next response answers (HEAD: no body)."""
        self._head_request = method == HEAD_METHOD

    cdef object _head_too_big(self):
        return RemoteProtocolError("response head too large", 502)

    cdef int _on_head(self, const unsigned char *p, Py_ssize_t n, list events) except -1:
        # p[0:n] is a complete head, ending with its blank line.
        cdef const unsigned char *q
        cdef Py_ssize_t nl, e, k
        cdef int status
        cdef object version, reason
        cdef list headers
        cdef H1Framing f
        cdef bint keep_alive, chunked
        cdef long long cl
        if _has_bare_cr(p, n):
            raise RemoteProtocolError("bare CR in message head")
        q = <const unsigned char *>memchr(p, LF, <size_t>n)
        nl = q - p
        e = _line_end(p, 0, nl)
        if e == 0:
            raise RemoteProtocolError("empty line where a message head was expected")
        # status-line = HTTP-version SP status-code [ SP [ reason-phrase ] ] (RFC 9112 §4;
        # the reason, even its SP, may be missing, as h11 allows)
        if (e < 12 or memcmp(p, b"HTTP/", 5) != 0 or not CHAR_CLASS[p[5]] & C_DIGIT
                or p[6] != b'.' or not CHAR_CLASS[p[7]] & C_DIGIT or p[8] != SP
                or not CHAR_CLASS[p[9]] & C_DIGIT or not CHAR_CLASS[p[10]] & C_DIGIT
                or not CHAR_CLASS[p[11]] & C_DIGIT or (e > 12 and p[12] != SP)):
            raise RemoteProtocolError("malformed status line")
        for k in range(13, e):
            if not CHAR_CLASS[p[k]] & C_TEXT:
                raise RemoteProtocolError("malformed status line")
        if p[5] == b'1' and p[7] == b'1':
            version = V11
        elif p[5] == b'1' and p[7] == b'0':
            version = V10
        else:
            version = None
        status = (p[9] - 0x30) * 100 + (p[10] - 0x30) * 10 + (p[11] - 0x30)
        reason = PyBytes_FromStringAndSize(<const char *>p + 13, e - 13) if e > 13 else EMPTY
        headers = _parse_header_lines(p, nl + 1, n, &f)
        if version is None:
            raise RemoteProtocolError("unsupported HTTP version", 505)
        if status < 200:
            if status == 101:
                raise RemoteProtocolError("protocol upgrade is not supported", 502)
            if status < 100:
                raise RemoteProtocolError("status code below 100")
            self._interim = True
            events.append(InformationalResponse(status, reason, version, headers))
            return 0
        keep_alive = version is V11 and not f.close
        chunked = f.chunked
        if self._head_request or status == 204 or status == 304:
            cl = 0
            chunked = False
            self._remaining = 0
            self._state = H1_BODY_LENGTH
        elif chunked:
            cl = -1
            self._state = H1_CHUNK_SIZE
        elif f.cl_len >= 0:
            cl = <long long>f.content_length
            self._remaining = f.content_length
            self._state = H1_BODY_LENGTH
        else:
            cl = -1
            keep_alive = False
            self._state = H1_BODY_UNTIL_CLOSE
        self._keep_alive = keep_alive
        self._head_request = False
        self._interim = False
        events.append(Response(status, reason, version, headers, cl, chunked, keep_alive))
        return 0
