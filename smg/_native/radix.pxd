# cython: language_level=3
#
# The contract of smg._native.radix (semantics: smg/routing/radix_py.py module docstring).
#
# Memory layout. Everything below the tree object lives in PyMem_* allocations (pymalloc
# for the small ones, so tracemalloc sees them and the per-node overhead stays low):
#   Node          56 bytes -> one 64-byte pymalloc block
#   label         nbytes bytes (UTF-8 for StringTree, native uint32 for TokenTree)
#   slots         nslot x 16 bytes, one per tenant holding the node
#   edges         nedge x 16 bytes, sorted by first unit (binary search)
# Tenants are interned to small ids (uint32) per tree; ids are recycled once a tenant
# holds nothing.
#
# Memory accounting (radix_py module docstring, rule 5, which derives the constants from
# the layout above): _mem is kept equal to
#     sum over nodes (RADIX_NODE_BYTES + nbytes) + RADIX_SLOT_BYTES * (holdings)
# by every change: a new leaf adds a node, its label and a slot; a new holding a slot; a
# split a node and its copied slots (the two labels together are the old one); a dropped
# holding subtracts a slot, a freed node its overhead and label. The twin keeps the same
# books with the same constants, so evict_mem() stops at the same holding in both.

from libc.stdint cimport uint8_t, uint32_t, uint64_t

cdef enum:
    RADIX_NODE_BYTES = 112   # per node, on top of its label (radix_py.NODE_BYTES)
    RADIX_SLOT_BYTES = 24    # per (tenant, node) holding (radix_py.SLOT_BYTES)

cdef struct Node

# One tenant's holding of a node.
cdef struct Slot:
    uint64_t stamp      # logical clock value of the tenant's last touch of this node
    uint32_t tid        # interned tenant id
    uint32_t nchild     # children of this node the tenant also holds (0: eviction candidate)

# A child link, keyed by the child's first unit (code point or token id).
cdef struct Edge:
    uint32_t first
    Node* node

cdef struct Node:
    Node* parent        # NULL only for the root
    uint8_t* label      # owned; NULL when nbytes == 0 (root)
    Edge* edges         # owned; NULL when cedge == 0
    Slot* slots         # owned; NULL when cslot == 0
    uint32_t nbytes     # label length in bytes (< 2**32: keys are capped at MAX_KEY_UNITS)
    uint32_t nunits     # label length in units (chars / tokens); == nbytes <=> ASCII label
    uint32_t nedge, cedge
    uint32_t nslot, cslot

# A key borrowed for the duration of one call (the owner object is kept by the caller).
cdef struct KeyView:
    const uint8_t* data
    Py_ssize_t nbytes
    Py_ssize_t nunits
    bint ascii          # StringTree only: every byte is a unit (skips unit counting)

# Eviction heap entry (min-heap on stamp; stamps of leaf holdings are unique).
cdef struct HeapEntry:
    uint64_t stamp
    Node* node
    uint32_t tid


cdef class _Tree:
    cdef Node* _root
    cdef bint _utf8             # True: StringTree (UTF-8 labels); False: TokenTree (uint32)
    cdef uint64_t _clock        # logical clock (module docstring of radix_py)
    cdef uint64_t _total        # size(): units held, summed over tenants
    cdef uint64_t _mem          # mem_size(): accounted bytes (memory accounting above)
    cdef Py_ssize_t _nodes      # non-root nodes
    cdef dict _tids             # tenant name -> tid
    cdef list _names            # tid -> tenant name (None when the id is free)
    cdef list _free             # recycled tids (stack)
    cdef uint64_t* _sizes       # tid -> units held (capacity == len(_names))
    cdef Node** _path           # scratch: nodes touched by the current descent / traversal
    cdef Py_ssize_t _path_cap

    cdef object _acquire(self, object key, KeyView* kv)
    cdef object _acquire_tokens(self, object key, KeyView* kv)
    cdef int _path_reserve(self, Py_ssize_t n) except -1
    cdef uint32_t _intern(self, str tenant) except? 0xFFFFFFFF
    cdef int _release_tid(self, uint32_t tid) except -1
    cdef int _hold(self, Node* node, uint32_t tid, uint64_t stamp) except -1
    cdef void _account(self, Node* node, uint32_t tid) noexcept
    cdef Node* _split(self, Node* parent, Py_ssize_t idx, uint32_t cut) except NULL
    cdef Py_ssize_t _walk(self, KeyView* kv, Py_ssize_t only_tid, Py_ssize_t* units) except -1
    # Detach an unheld (childless) node, free it and book the bytes freed.
    cdef void _unlink_free(self, Node* node) noexcept
    # The eviction loop of evict() / evict_mem(): bound on _mem (by_mem) or on _total.
    cdef int _evict(self, uint64_t bound, bint by_mem, Py_ssize_t only) except -1
    # These are final (no subclass overrides them); `inline` per uvloop's convention.
    cdef inline uint32_t _unit_at(self, const uint8_t* p) noexcept
    cdef inline uint32_t _lcp(self, KeyView* kv, Py_ssize_t pos, Node* child) noexcept
    cdef inline uint32_t _units_in(self, const uint8_t* p, uint32_t nbytes, bint ascii) noexcept


cdef class StringTree(_Tree):
    pass


cdef class TokenTree(_Tree):
    pass
