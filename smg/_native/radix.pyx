# cython: language_level=3
"""Native tenant-tagged radix trees for cache_aware routing (StringTree, TokenTree).

Semantics are defined once, in the module docstring of the pure-Python twin
``smg/routing/radix_py.py`` (size definition, logical clock, what ``match`` refreshes,
eviction order); this module implements exactly that, and tests/native/test_radix.py
holds the two to the same observable results after every operation.

How it is fast (issue 3: an ~8 KB prompt, match + insert, <= 20 us):
- A key is turned into one flat byte buffer once per call, never into per-unit
  Python objects: an ASCII ``str`` is read in place (PyUnicode_DATA); any other
  ``str`` is encoded to UTF-8 once ("surrogatepass", so every str is accepted);
  token sequences become one native uint32 array.
- Edge labels are compared with memcmp over blocks, then 8-byte words to find the
  first difference, then rounded down to a unit boundary (UTF-8 lead byte or 4-byte
  token).
- Children sit in a sorted array keyed by first unit (binary search); tenants are
  interned to uint32 ids, and a node's holdings are a small array of 16-byte slots.
- Eviction keeps, per slot, the count of children the tenant also holds, so leaf
  holdings are known without scanning, and runs one heap over them.
- ``mem_size()`` (radix_py rule 5) is a counter every change keeps up to date (radix.pxd,
  "Memory accounting"), so cache_aware's budget check after each insert costs one call.

Not thread-safe: like the rest of smg's cores it is driven from one event loop thread
and relies on the GIL (no nogil sections).

No boundscheck/wraparound directives are used: all indexing in the hot paths is on raw
C pointers, which Cython never bounds-checks; sizes are tracked in the Node fields.
"""

from cpython.buffer cimport PyBUF_FORMAT, PyBUF_ND, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.number cimport PyNumber_Index
from cpython.object cimport PyObject
from libc.stdint cimport (
    int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t,
)
from libc.string cimport memcmp, memcpy, memmove, memset

import operator as _operator

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)
    void* PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    object PyUnicode_AsEncodedString(object o, const char* encoding, const char* errors)
    object PySequence_Fast(object o, const char* message)
    Py_ssize_t PySequence_Fast_GET_SIZE(object o)
    PyObject** PySequence_Fast_ITEMS(object o)
    bint PyObject_CheckBuffer(object o)
    bint PyLong_CheckExact(object o)

# Same value and reason as radix_py.MAX_KEY_UNITS: keeps every label length in bytes
# inside the uint32 Node fields (UTF-8 <= 4 bytes per unit, tokens exactly 4).
cdef enum:
    _MAX_KEY_UNITS = 1 << 28
    # memcmp block for the label comparison: big enough that memcmp's SIMD path pays,
    # small enough that re-scanning the mismatching block word by word stays cheap.
    _LCP_BLOCK = 256

MAX_KEY_UNITS = _MAX_KEY_UNITS
# mem_size() accounting (radix.pxd; radix_py.NODE_BYTES / SLOT_BYTES, same values).
NODE_BYTES = RADIX_NODE_BYTES
SLOT_BYTES = RADIX_SLOT_BYTES

# The public API, as in radix.pyi and the twin (tests/test_stubs.py checks all three agree).
__all__ = ["MAX_KEY_UNITS", "NODE_BYTES", "SLOT_BYTES", "StringTree", "TokenTree"]

cdef uint32_t _NO_TID = 0xFFFFFFFF


# ---------------------------------------------------------------------------------------
# Node, edge and slot helpers (plain C on the structs declared in radix.pxd)

cdef Node* node_new(Node* parent, const uint8_t* label, uint32_t nbytes,
                    uint32_t nunits) except NULL:
    cdef Node* n = <Node*>PyMem_Malloc(sizeof(Node))
    if n == NULL:
        raise MemoryError()
    memset(n, 0, sizeof(Node))
    if nbytes:
        n.label = <uint8_t*>PyMem_Malloc(nbytes)
        if n.label == NULL:
            PyMem_Free(n)
            raise MemoryError()
        memcpy(n.label, label, nbytes)
    n.parent = parent
    n.nbytes = nbytes
    n.nunits = nunits
    return n


cdef inline void node_free(Node* n) noexcept:
    PyMem_Free(n.label)
    PyMem_Free(n.edges)
    PyMem_Free(n.slots)
    PyMem_Free(n)


cdef inline Py_ssize_t edge_find(Node* n, uint32_t first) noexcept:
    # Binary search over the sorted edge array; -1 when absent.
    cdef Py_ssize_t lo = 0, hi = n.nedge, mid
    cdef uint32_t f
    while lo < hi:
        mid = (lo + hi) >> 1
        f = n.edges[mid].first
        if f < first:
            lo = mid + 1
        elif f > first:
            hi = mid
        else:
            return mid
    return -1


cdef int edge_add(Node* n, uint32_t first, Node* child) except -1:
    cdef Py_ssize_t lo = 0, hi = n.nedge, mid
    cdef uint32_t cap
    cdef Edge* grown
    while lo < hi:
        mid = (lo + hi) >> 1
        if n.edges[mid].first < first:
            lo = mid + 1
        else:
            hi = mid
    if n.nedge == n.cedge:
        cap = 2 if n.cedge == 0 else n.cedge * 2
        grown = <Edge*>PyMem_Realloc(n.edges, cap * sizeof(Edge))
        if grown == NULL:
            raise MemoryError()
        n.edges = grown
        n.cedge = cap
    memmove(&n.edges[lo + 1], &n.edges[lo], (n.nedge - lo) * sizeof(Edge))
    n.edges[lo].first = first
    n.edges[lo].node = child
    n.nedge += 1
    return 0


cdef void edge_del(Node* n, Py_ssize_t i) noexcept:
    cdef Edge* shrunk
    memmove(&n.edges[i], &n.edges[i + 1], (n.nedge - i - 1) * sizeof(Edge))
    n.nedge -= 1
    if n.nedge == 0:
        PyMem_Free(n.edges)
        n.edges = NULL
        n.cedge = 0
    elif n.cedge > 4 and n.nedge * 4 <= n.cedge:
        # Give memory back as children go; a failed shrink just keeps the old block.
        shrunk = <Edge*>PyMem_Realloc(n.edges, (n.cedge // 2) * sizeof(Edge))
        if shrunk != NULL:
            n.edges = shrunk
            n.cedge //= 2


cdef inline Slot* slot_find(Node* n, uint32_t tid) noexcept:
    # Linear: nslot is the number of tenants holding this prefix (<= fleet size).
    cdef uint32_t i
    for i in range(n.nslot):
        if n.slots[i].tid == tid:
            return &n.slots[i]
    return NULL


cdef Slot* slot_add(Node* n, uint32_t tid, uint64_t stamp) except NULL:
    cdef uint32_t cap
    cdef Slot* grown
    cdef Slot* s
    if n.nslot == n.cslot:
        cap = 1 if n.cslot == 0 else n.cslot * 2
        grown = <Slot*>PyMem_Realloc(n.slots, cap * sizeof(Slot))
        if grown == NULL:
            raise MemoryError()
        n.slots = grown
        n.cslot = cap
    s = &n.slots[n.nslot]
    n.nslot += 1
    s.stamp = stamp
    s.tid = tid
    s.nchild = 0
    return s


cdef void slot_del(Node* n, Slot* s) noexcept:
    # Order of slots carries no meaning (MRU is by stamp), so swap-remove.
    cdef Slot* shrunk
    n.nslot -= 1
    if s != &n.slots[n.nslot]:
        s[0] = n.slots[n.nslot]
    if n.nslot == 0:
        PyMem_Free(n.slots)
        n.slots = NULL
        n.cslot = 0
    elif n.cslot > 4 and n.nslot * 4 <= n.cslot:
        shrunk = <Slot*>PyMem_Realloc(n.slots, (n.cslot // 2) * sizeof(Slot))
        if shrunk != NULL:
            n.slots = shrunk
            n.cslot //= 2


cdef inline Py_ssize_t lcp_bytes(const uint8_t* a, const uint8_t* b, Py_ssize_t n) noexcept:
    # Longest common prefix of two byte ranges of length n.
    cdef Py_ssize_t i = 0, blk
    cdef uint64_t x, y
    while i < n:
        blk = n - i if n - i < _LCP_BLOCK else _LCP_BLOCK
        if memcmp(a + i, b + i, blk) != 0:
            break
        i += blk
    if i == n:
        return n
    # The first difference is inside this block: find it a word, then a byte, at a time.
    while i + 8 <= n:
        memcpy(&x, a + i, 8)
        memcpy(&y, b + i, 8)
        if x != y:
            break
        i += 8
    while i < n and a[i] == b[i]:
        i += 1
    return i


# Eviction heap (min on stamp). Leaf-holding stamps are unique (radix_py docstring), so
# the order is total and matches the twin's heapq exactly.

cdef inline void heap_sift_down(HeapEntry* h, Py_ssize_t n, Py_ssize_t i) noexcept:
    cdef HeapEntry item = h[i]
    cdef Py_ssize_t child
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        if child + 1 < n and h[child + 1].stamp < h[child].stamp:
            child += 1
        if h[child].stamp >= item.stamp:
            break
        h[i] = h[child]
        i = child
    h[i] = item


cdef inline void heap_sift_up(HeapEntry* h, Py_ssize_t i) noexcept:
    cdef HeapEntry item = h[i]
    cdef Py_ssize_t parent
    while i > 0:
        parent = (i - 1) >> 1
        if h[parent].stamp <= item.stamp:
            break
        h[i] = h[parent]
        i = parent
    h[i] = item


# ---------------------------------------------------------------------------------------

cdef class _Tree:
    """Shared core of StringTree and TokenTree (see radix_py for the semantics)."""

    def __cinit__(self):
        self._root = node_new(NULL, NULL, 0, 0)
        self._utf8 = True
        self._clock = 0
        self._total = 0
        self._mem = 0
        self._nodes = 0
        self._tids = {}
        self._names = []
        self._free = []
        self._sizes = NULL
        self._path = NULL
        self._path_cap = 0

    def __dealloc__(self):
        # Iterative post-order free: descend through the last edge, free leaves on the
        # way back up. No recursion (a chain of nested prefixes can be very deep).
        cdef Node* n = self._root
        cdef Node* p
        while n != NULL:
            if n.nedge:
                n.nedge -= 1
                n = n.edges[n.nedge].node
            else:
                p = n.parent
                node_free(n)
                n = p
        self._root = NULL
        PyMem_Free(self._sizes)
        PyMem_Free(self._path)

    # -- key acquisition --------------------------------------------------------------

    cdef object _acquire(self, object key, KeyView* kv):
        # Fills kv; returns the object that owns kv.data (keep it alive for the call).
        cdef Py_ssize_t n
        if not self._utf8:
            return self._acquire_tokens(key, kv)
        if not isinstance(key, str):
            raise TypeError(f"StringTree keys must be str, not {type(key).__name__}")
        n = PyUnicode_GET_LENGTH(key)
        if n > _MAX_KEY_UNITS:
            raise ValueError("key longer than MAX_KEY_UNITS")
        kv.nunits = n
        if PyUnicode_IS_ASCII(key):
            # Compact ASCII strings store exactly the UTF-8 bytes: read them in place.
            kv.data = <const uint8_t*>PyUnicode_DATA(key)
            kv.nbytes = n
            kv.ascii = True
            return key
        # A temporary bytes (not PyUnicode_AsUTF8AndSize, which would cache a UTF-8 copy
        # on the caller's string for its whole lifetime).
        b = PyUnicode_AsEncodedString(key, "utf-8", "surrogatepass")
        kv.data = <const uint8_t*>PyBytes_AS_STRING(b)
        kv.nbytes = PyBytes_GET_SIZE(b)
        kv.ascii = False
        return b

    cdef object _acquire_tokens(self, object key, KeyView* kv):
        cdef Py_buffer view
        cdef Py_ssize_t n, i, j
        cdef uint32_t* dst
        cdef PyObject** items
        if isinstance(key, (str, bytes, bytearray)):
            raise TypeError(f"TokenTree keys must be sequences of ints, not {type(key).__name__}")
        if type(key) is not list and type(key) is not tuple and PyObject_CheckBuffer(key):
            try:
                PyObject_GetBuffer(key, &view, PyBUF_FORMAT | PyBUF_ND)
            except (BufferError, ValueError, TypeError):
                pass  # e.g. a non-contiguous ndarray: take the generic path below
            else:
                try:
                    out = _tokens_from_buffer(&view, kv)
                finally:
                    PyBuffer_Release(&view)
                if out is not None:
                    return out
        seq = PySequence_Fast(key, "TokenTree keys must be sequences of ints")
        n = PySequence_Fast_GET_SIZE(seq)
        if n > _MAX_KEY_UNITS:
            raise ValueError("key longer than MAX_KEY_UNITS")
        out = PyBytes_FromStringAndSize(NULL, n * 4)
        dst = <uint32_t*>PyBytes_AS_STRING(out)
        items = PySequence_Fast_ITEMS(seq)
        for i in range(n):
            item = <object>items[i]
            if not PyLong_CheckExact(item):
                # Converting anything but an exact int may run Python code (__index__)
                # that could mutate a list under us: finish on an immutable copy.
                seq = tuple(seq)
                if len(seq) != n:  # pragma: no cover - only a racing mutation gets here
                    raise RuntimeError("token sequence changed size during conversion")
                for j in range(i, n):
                    # PyNumber_Index: __index__ only, as array('I') does; Cython's own
                    # conversion would accept floats through __int__.
                    dst[j] = PyNumber_Index(seq[j])
                break
            dst[i] = item
        kv.data = <const uint8_t*>dst
        kv.nbytes = n * 4
        kv.nunits = n
        kv.ascii = False
        return out

    # -- helpers ----------------------------------------------------------------------

    cdef int _path_reserve(self, Py_ssize_t n) except -1:
        cdef Py_ssize_t cap
        cdef Node** grown
        if n <= self._path_cap:
            return 0
        cap = self._path_cap * 2 if self._path_cap else 64
        if cap < n:
            cap = n
        grown = <Node**>PyMem_Realloc(self._path, cap * sizeof(Node*))
        if grown == NULL:
            raise MemoryError()
        self._path = grown
        self._path_cap = cap
        return 0

    cdef uint32_t _intern(self, str tenant) except? 0xFFFFFFFF:
        cdef Py_ssize_t tid
        cdef uint64_t* grown
        t = self._tids.get(tenant)
        if t is not None:
            return <uint32_t>t
        if self._free:
            tid = self._free.pop()
        else:
            tid = len(self._names)
            if tid >= <Py_ssize_t>_NO_TID:
                raise OverflowError("too many tenants")
            # Tenants come and go at worker-registration rate: growing by one is fine.
            grown = <uint64_t*>PyMem_Realloc(self._sizes, (tid + 1) * sizeof(uint64_t))
            if grown == NULL:
                raise MemoryError()
            self._sizes = grown
            self._names.append(None)
        self._names[tid] = tenant
        self._tids[tenant] = tid
        self._sizes[tid] = 0
        return <uint32_t>tid

    cdef int _release_tid(self, uint32_t tid) except -1:
        name = self._names[tid]
        del self._tids[name]
        self._names[tid] = None
        self._free.append(tid)
        return 0

    cdef inline uint32_t _unit_at(self, const uint8_t* p) noexcept:
        # First unit at p: a token id, or the code point of a (valid) UTF-8 sequence.
        cdef uint32_t v, b0
        if not self._utf8:
            memcpy(&v, p, 4)
            return v
        b0 = p[0]
        if b0 < 0x80:
            return b0
        if b0 < 0xE0:
            return ((b0 & 0x1F) << 6) | (p[1] & 0x3F)
        if b0 < 0xF0:
            return ((b0 & 0x0F) << 12) | ((p[1] & 0x3F) << 6) | (p[2] & 0x3F)
        return ((b0 & 0x07) << 18) | ((p[1] & 0x3F) << 12) | ((p[2] & 0x3F) << 6) | (p[3] & 0x3F)

    cdef inline uint32_t _units_in(self, const uint8_t* p, uint32_t nbytes, bint ascii) noexcept:
        # Units in a whole-unit byte range: tokens are 4 bytes; UTF-8 counts lead bytes.
        cdef uint32_t i, count = 0
        if not self._utf8:
            return nbytes >> 2
        if ascii:
            return nbytes
        for i in range(nbytes):
            count += (p[i] & 0xC0) != 0x80
        return count

    cdef inline uint32_t _lcp(self, KeyView* kv, Py_ssize_t pos, Node* child) noexcept:
        # Common prefix (bytes) of key[pos:] and child's label, cut to a unit boundary.
        # The caller found child by first unit, so the result is at least one unit.
        cdef Py_ssize_t avail = kv.nbytes - pos
        cdef Py_ssize_t n = child.nbytes if child.nbytes < avail else avail
        cdef Py_ssize_t l = lcp_bytes(kv.data + pos, child.label, n)
        if l < n:
            if self._utf8:
                # Both sides agree before l, so a continuation byte at l in the key is one
                # in the label too: back up to the lead byte of the unit that differs.
                while l > 0 and (kv.data[pos + l] & 0xC0) == 0x80:
                    l -= 1
            else:
                l &= ~(<Py_ssize_t>3)
        return <uint32_t>l

    cdef int _hold(self, Node* node, uint32_t tid, uint64_t stamp) except -1:
        # Give `tid` the holding of `node` (or refresh it). Paths are held top-down, so
        # the parent already holds tid and its child count can be bumped.
        cdef Slot* s = slot_find(node, tid)
        if s != NULL:
            s.stamp = stamp
            return 0
        slot_add(node, tid, stamp)
        self._account(node, tid)
        return 0

    cdef void _account(self, Node* node, uint32_t tid) noexcept:
        # Book a new holding (its slot already exists): sizes, memory, the parent's count.
        cdef Slot* ps
        self._sizes[tid] += node.nunits
        self._total += node.nunits
        self._mem += RADIX_SLOT_BYTES
        if node.parent != self._root:
            ps = slot_find(node.parent, tid)
            ps.nchild += 1

    cdef Node* _split(self, Node* parent, Py_ssize_t idx, uint32_t cut) except NULL:
        # Split parent's idx-th child at byte `cut` (a unit boundary, 0 < cut < nbytes).
        # The new upper node takes every holding of the lower one, same stamps, each with
        # one held child. Everything is allocated before anything is changed.
        cdef Node* lower = parent.edges[idx].node
        cdef uint32_t up_units = self._units_in(lower.label, cut, lower.nunits == lower.nbytes)
        cdef uint32_t rest = lower.nbytes - cut
        cdef uint32_t i
        cdef uint8_t* shrunk
        cdef Node* upper = node_new(parent, lower.label, cut, up_units)
        upper.slots = <Slot*>PyMem_Malloc(lower.nslot * sizeof(Slot))
        upper.edges = <Edge*>PyMem_Malloc(2 * sizeof(Edge))
        if upper.slots == NULL or upper.edges == NULL:
            node_free(upper)
            raise MemoryError()
        memcpy(upper.slots, lower.slots, lower.nslot * sizeof(Slot))
        upper.nslot = upper.cslot = lower.nslot
        for i in range(upper.nslot):
            upper.slots[i].nchild = 1
        upper.cedge = 2
        memmove(lower.label, lower.label + cut, rest)
        shrunk = <uint8_t*>PyMem_Realloc(lower.label, rest)
        if shrunk != NULL:
            lower.label = shrunk
        lower.nbytes = rest
        lower.nunits -= up_units
        upper.edges[0].first = self._unit_at(lower.label)
        upper.edges[0].node = lower
        upper.nedge = 1
        lower.parent = upper
        parent.edges[idx].node = upper
        self._nodes += 1
        # The two labels together are the old one: only the node and its slots are new.
        self._mem += RADIX_NODE_BYTES + RADIX_SLOT_BYTES * <uint64_t>upper.nslot
        return upper

    cdef Py_ssize_t _walk(self, KeyView* kv, Py_ssize_t only_tid, Py_ssize_t* units) except -1:
        # Longest match of kv in the tree (only through nodes held by only_tid when >= 0).
        # Leaves the touched nodes in self._path[0:depth]; returns depth.
        cdef Node* node = self._root
        cdef Node* child
        cdef Py_ssize_t pos = 0, u = 0, depth = 0, i
        cdef uint32_t l
        while pos < kv.nbytes and node.nedge:
            i = edge_find(node, self._unit_at(kv.data + pos))
            if i < 0:
                break
            child = node.edges[i].node
            if only_tid >= 0 and slot_find(child, <uint32_t>only_tid) == NULL:
                break
            l = self._lcp(kv, pos, child)
            if depth == self._path_cap:
                self._path_reserve(depth + 1)
            self._path[depth] = child
            depth += 1
            if l == child.nbytes:
                pos += l
                u += child.nunits
                node = child
            else:
                u += self._units_in(kv.data + pos, l, kv.ascii)
                break
        units[0] = u
        return depth

    cdef void _unlink_free(self, Node* node) noexcept:
        # Detach an unheld (hence childless) node from its parent and free it.
        cdef Node* parent = node.parent
        edge_del(parent, edge_find(parent, self._unit_at(node.label)))
        self._mem -= RADIX_NODE_BYTES + <uint64_t>node.nbytes
        node_free(node)
        self._nodes -= 1

    # -- public API (docstrings: radix.pyi / radix_py) ---------------------------------

    def insert(self, key, tenant):
        cdef KeyView kv
        cdef Node* node
        cdef Node* child
        cdef Py_ssize_t pos = 0, units = 0, i
        cdef uint32_t tid, first, l
        cdef uint64_t stamp
        owner = self._acquire(key, &kv)
        if not isinstance(tenant, str):
            raise TypeError(f"tenant must be str, not {type(tenant).__name__}")
        if kv.nbytes == 0:
            return
        tid = self._intern(tenant)
        self._clock += 1
        stamp = self._clock
        node = self._root
        try:
            while pos < kv.nbytes:
                first = self._unit_at(kv.data + pos)
                i = edge_find(node, first)
                if i < 0:
                    child = node_new(node, kv.data + pos, <uint32_t>(kv.nbytes - pos),
                                     <uint32_t>(kv.nunits - units))
                    # Give the leaf its holding before linking it, so no unheld node is
                    # ever reachable, even after a MemoryError.
                    try:
                        slot_add(child, tid, stamp)
                        edge_add(node, first, child)
                    except MemoryError:
                        node_free(child)
                        raise
                    self._nodes += 1
                    self._mem += RADIX_NODE_BYTES + <uint64_t>child.nbytes
                    self._account(child, tid)
                    break
                child = node.edges[i].node
                l = self._lcp(&kv, pos, child)
                if l < child.nbytes:
                    child = self._split(node, i, l)
                self._hold(child, tid, stamp)
                pos += l
                units += child.nunits
                node = child
        except MemoryError:
            # Every step above either completes or changes nothing (_split allocates
            # first; a failed slot_add leaves the node as it was), so the tree is
            # consistent, holding a prefix of the key; only undo the interning of a
            # tenant that ended up holding nothing.
            if self._sizes[tid] == 0:
                self._release_tid(tid)
            raise

    def match(self, key):
        cdef KeyView kv
        cdef Py_ssize_t units = 0, depth, d
        cdef Node* last
        cdef uint32_t i, best
        cdef uint64_t best_stamp
        owner = self._acquire(key, &kv)
        depth = self._walk(&kv, -1, &units)
        if depth == 0:
            return (0, None)
        last = self._path[depth - 1]
        best = last.slots[0].tid
        best_stamp = last.slots[0].stamp
        for i in range(1, last.nslot):
            if last.slots[i].stamp > best_stamp:
                best = last.slots[i].tid
                best_stamp = last.slots[i].stamp
        self._clock += 1
        for d in range(depth):
            # Prefix closure: the tenant of the last node holds every node above it.
            slot_find(self._path[d], best).stamp = self._clock
        return (units, self._names[best])

    def match_tenant(self, key, tenant):
        cdef KeyView kv
        cdef Py_ssize_t units = 0
        owner = self._acquire(key, &kv)
        if not isinstance(tenant, str):
            raise TypeError(f"tenant must be str, not {type(tenant).__name__}")
        t = self._tids.get(tenant)
        if t is None:
            return 0
        self._walk(&kv, <Py_ssize_t>t, &units)
        return units

    def match_all(self, key):
        cdef KeyView kv
        cdef Py_ssize_t units = 0, depth, d, full = 0, c
        cdef Node* nd
        cdef uint32_t i
        owner = self._acquire(key, &kv)
        depth = self._walk(&kv, -1, &units)
        out = {}
        if depth == 0:
            return out
        for d in range(depth - 1):
            full += self._path[d].nunits
        # Deepest node first: a tenant's match ends at the deepest node it holds (prefix
        # closure), so the first depth a tenant is seen at is its match length.
        c = units
        names = self._names
        for d in range(depth - 1, -1, -1):
            nd = self._path[d]
            for i in range(nd.nslot):
                name = names[nd.slots[i].tid]
                if name not in out:
                    out[name] = c
            c -= (units - full) if d == depth - 1 else nd.nunits
        return out

    def remove_tenant(self, tenant):
        cdef Py_ssize_t count = 0, j
        cdef uint32_t tid, e
        cdef Node* nd
        cdef Node* c
        if not isinstance(tenant, str):
            raise TypeError(f"tenant must be str, not {type(tenant).__name__}")
        t = self._tids.get(tenant)
        if t is None:
            return
        tid = t
        # Breadth-first over the nodes tid holds (only below held nodes, by prefix
        # closure), parents before children; then undo in reverse so children go first.
        nd = self._root
        j = -1
        while True:
            for e in range(nd.nedge):
                c = nd.edges[e].node
                if slot_find(c, tid) != NULL:
                    if count == self._path_cap:
                        self._path_reserve(count + 1)
                    self._path[count] = c
                    count += 1
            j += 1
            if j >= count:
                break
            nd = self._path[j]
        for j in range(count - 1, -1, -1):
            nd = self._path[j]
            slot_del(nd, slot_find(nd, tid))
            self._mem -= RADIX_SLOT_BYTES
            if nd.nslot == 0:
                self._unlink_free(nd)
        self._total -= self._sizes[tid]
        self._sizes[tid] = 0
        self._release_tid(tid)

    def evict(self, max_size):
        cdef uint64_t before = self._total
        ms = _operator.index(max_size)
        if ms < 0:
            raise ValueError("max_size must be >= 0")
        if ms >= self._total:
            return 0
        self._evict(<uint64_t>ms, False, -1)
        return before - self._total

    def evict_mem(self, max_bytes):
        cdef uint64_t before = self._mem
        mb = _operator.index(max_bytes)
        if mb < 0:
            raise ValueError("max_bytes must be >= 0")
        if mb >= self._mem:
            return 0
        self._evict(<uint64_t>mb, True, -1)
        return before - self._mem

    cdef int _evict(self, uint64_t bound, bint by_mem, Py_ssize_t only) except -1:
        # radix_py rule 4 while the measure (rule 5's _mem, or _total) is above bound;
        # with only >= 0, over that tenant's holdings while its size is above bound.
        cdef Py_ssize_t count = 0, j, hn = 0, ncand = 0
        cdef uint32_t e, s, tid, units
        cdef Node* nd
        cdef Node* parent
        cdef Node* root = self._root
        cdef Slot* ps
        cdef HeapEntry top
        cdef HeapEntry* heap = NULL
        # Every non-root node, breadth-first, counting leaf holdings (nchild == 0).
        nd = root
        j = -1
        while True:
            for e in range(nd.nedge):
                if count == self._path_cap:
                    self._path_reserve(count + 1)
                self._path[count] = nd.edges[e].node
                count += 1
            j += 1
            if j >= count:
                break
            nd = self._path[j]
            for s in range(nd.nslot):
                ncand += nd.slots[s].nchild == 0 and (only < 0 or nd.slots[s].tid == only)
        # Each push follows a pop, so the heap never outgrows the initial candidates.
        heap = <HeapEntry*>PyMem_Malloc((ncand if ncand else 1) * sizeof(HeapEntry))
        if heap == NULL:
            raise MemoryError()
        try:
            for j in range(count):
                nd = self._path[j]
                for s in range(nd.nslot):
                    if nd.slots[s].nchild == 0 and (only < 0 or nd.slots[s].tid == only):
                        heap[hn].stamp = nd.slots[s].stamp
                        heap[hn].node = nd
                        heap[hn].tid = nd.slots[s].tid
                        hn += 1
            for j in range(hn // 2 - 1, -1, -1):
                heap_sift_down(heap, hn, j)
            while hn > 0 and ((self._sizes[only] if only >= 0 else (self._mem if by_mem else self._total))
                              > bound):
                top = heap[0]
                hn -= 1
                heap[0] = heap[hn]
                heap_sift_down(heap, hn, 0)
                nd = top.node
                tid = top.tid
                slot_del(nd, slot_find(nd, tid))
                self._mem -= RADIX_SLOT_BYTES
                units = nd.nunits
                self._total -= units
                self._sizes[tid] -= units
                parent = nd.parent
                if nd.nslot == 0:
                    self._unlink_free(nd)
                if parent != root:
                    ps = slot_find(parent, tid)
                    ps.nchild -= 1
                    if ps.nchild == 0:
                        heap[hn].stamp = ps.stamp
                        heap[hn].node = parent
                        heap[hn].tid = tid
                        hn += 1
                        heap_sift_up(heap, hn - 1)
                if self._sizes[tid] == 0:
                    # (Only a holding directly under the root can be a tenant's last.)
                    self._release_tid(tid)
        finally:
            PyMem_Free(heap)
        return 0

    def evict_tenant(self, tenant, max_size):
        cdef uint64_t before
        if not isinstance(tenant, str):
            raise TypeError(f"tenant must be str, not {type(tenant).__name__}")
        ms = _operator.index(max_size)
        if ms < 0:
            raise ValueError("max_size must be >= 0")
        t = self._tids.get(tenant)
        if t is None or ms >= self._sizes[<uint32_t>t]:
            return 0
        before = self._total
        self._evict(<uint64_t>ms, False, <Py_ssize_t>t)
        return before - self._total

    def size(self):
        return self._total

    def mem_size(self):
        return self._mem

    def tenant_size(self, tenant):
        if not isinstance(tenant, str):
            raise TypeError(f"tenant must be str, not {type(tenant).__name__}")
        t = self._tids.get(tenant)
        if t is None:
            return 0
        return self._sizes[<Py_ssize_t>t]

    def tenants(self):
        return sorted(self._tids)

    def node_count(self):
        return self._nodes

    def _check(self):
        """Test hook: assert every structural invariant (as radix_py._Tree._check)."""
        cdef Node* nd
        cdef Node* c
        cdef uint32_t e, s, i, held
        cdef list stack = []
        cdef dict sizes = {}
        cdef Py_ssize_t count = 0
        cdef uint64_t total = 0
        cdef uint64_t mem = 0
        cdef uintptr_t addr
        nd = self._root
        while True:
            assert nd.nedge <= nd.cedge and nd.nslot <= nd.cslot
            if nd != self._root:
                count += 1
                assert nd.nbytes > 0 and nd.nunits > 0 and nd.nslot > 0
                assert nd.nunits == self._units_in(nd.label, nd.nbytes, False)
                mem += RADIX_NODE_BYTES + nd.nbytes + RADIX_SLOT_BYTES * <uint64_t>nd.nslot
                for s in range(nd.nslot):
                    name = self._names[nd.slots[s].tid]
                    assert name is not None
                    sizes[name] = sizes.get(name, 0) + nd.nunits
                    for i in range(s):
                        assert nd.slots[i].tid != nd.slots[s].tid, "duplicate slot"
                    held = 0
                    for e in range(nd.nedge):
                        if slot_find(nd.edges[e].node, nd.slots[s].tid) != NULL:
                            held += 1
                    assert nd.slots[s].nchild == held, "child count"
            for e in range(nd.nedge):
                c = nd.edges[e].node
                assert c.parent == nd
                assert nd.edges[e].first == self._unit_at(c.label)
                if e:
                    assert nd.edges[e - 1].first < nd.edges[e].first, "edge order"
                if nd != self._root:
                    for s in range(c.nslot):
                        assert slot_find(nd, c.slots[s].tid) != NULL, "prefix closure"
                stack.append(<uintptr_t>c)
            if not stack:
                break
            addr = stack.pop()
            nd = <Node*>addr
        assert count == self._nodes
        for name, tid in self._tids.items():
            assert self._names[tid] == name
            total += self._sizes[<Py_ssize_t>tid]
        assert sizes == {n: self._sizes[<Py_ssize_t>t] for n, t in self._tids.items()}
        assert total == self._total
        assert mem == self._mem, "memory accounting"


cdef object _tokens_from_buffer(Py_buffer* view, KeyView* kv):
    # 1-D C-contiguous integer buffers (array.array, numpy, memoryview) without per-item
    # objects. Returns None for any other format so the caller takes the generic path.
    cdef const char* fmt = view.format
    cdef char fc
    cdef bint signed
    cdef Py_ssize_t n, i, size = view.itemsize
    cdef uint32_t* dst
    cdef const uint8_t* src = <const uint8_t*>view.buf
    cdef int64_t sv
    cdef uint64_t uv
    if view.ndim != 1:
        return None
    if fmt == NULL:
        fc = b'B'
    else:
        if fmt[0] == b'@':
            fmt += 1
        if fmt[0] == 0 or fmt[1] != 0:
            return None
        fc = fmt[0]
    if fc in b'bhilqn':
        signed = True
    elif fc in b'BHILQN':
        signed = False
    else:
        return None
    if size != 1 and size != 2 and size != 4 and size != 8:
        return None
    n = view.len // size
    if n > _MAX_KEY_UNITS:
        raise ValueError("key longer than MAX_KEY_UNITS")
    out = PyBytes_FromStringAndSize(NULL, n * 4)
    dst = <uint32_t*>PyBytes_AS_STRING(out)
    if not signed and size == 4:
        memcpy(dst, src, n * 4)
    else:
        for i in range(n):
            if signed:
                if size == 1:
                    sv = (<const int8_t*>src)[i]
                elif size == 2:
                    sv = (<const int16_t*>src)[i]
                elif size == 4:
                    sv = (<const int32_t*>src)[i]
                else:
                    sv = (<const int64_t*>src)[i]
                if sv < 0 or sv > 0xFFFFFFFF:
                    raise OverflowError(f"token id {sv} outside [0, 2**32)")
                dst[i] = <uint32_t>sv
            else:
                if size == 1:
                    uv = src[i]
                elif size == 2:
                    uv = (<const uint16_t*>src)[i]
                else:
                    uv = (<const uint64_t*>src)[i]
                if uv > 0xFFFFFFFF:
                    raise OverflowError(f"token id {uv} outside [0, 2**32)")
                dst[i] = <uint32_t>uv
    kv.data = <const uint8_t*>dst
    kv.nbytes = n * 4
    kv.nunits = n
    kv.ascii = False
    return out


cdef class StringTree(_Tree):
    """Radix tree over ``str`` keys; one unit = one character (code point)."""

    def __cinit__(self):
        self._utf8 = True


cdef class TokenTree(_Tree):
    """Radix tree over token-id sequences in ``[0, 2**32)``; one unit = one token."""

    def __cinit__(self):
        self._utf8 = False
