# cython: language_level=3
#
# smg._native.screen: declarations of the native body screen (this file is the contract).
#
# Twin: smg/api/validate/screen_py.py, whose module docstring states what a screen
# vouches for and the spec format (type specs, rule specs); screen.pyx makes the same
# decisions. Stub: smg/_native/screen.pyi. Only smg/api/validate/screen.py (the selector)
# imports this module; nothing cimports it.
#
# Integers: T_INT and R_INT bounds are held as long long, clamped to its range; a value
# that does not fit a long long is DOUBT (the full validator judges it), which keeps the
# screen sound for u64 fields without big-integer arithmetic.
#
# Pickling: off (auto_pickle(False) on Screen in screen.pyx; _Type and _Field are never
# handed out).
#
# Memory: the spec is compiled once into _Type/_Field objects; passes() allocates nothing
# and keeps only borrowed references while it walks the body.

cimport cython

cdef enum:
    SC_DOUBT = 0
    SC_VALID = 1
    SC_CROSS = 2

# One compiled type spec ("code", nullable, x, y) of the twin's docstring.
@cython.final
cdef class _Type:
    cdef int code
    cdef bint nullable
    cdef long long lo, hi     # T_INT bounds (clamped)
    cdef _Type item           # T_LIST, T_MAPOF: the items' spec
    cdef dict members         # T_OBJ: name -> _Type
    cdef tuple required       # T_OBJ: names that must be present
    cdef frozenset roles      # T_TEXT: the roles of a plain text message
    cdef bint nonempty        # T_TEXT: the content must not be empty

# One top-level field: its type, its rule, whether the cross-field rules read it.
@cython.final
cdef class _Field:
    cdef _Type type
    cdef int rule             # R_* code
    cdef bint has_lo, has_hi, lo_open
    cdef long long ilo, ihi   # R_INT bounds (clamped)
    cdef double dlo, dhi      # R_DEC bounds
    cdef bint cross

@cython.final
cdef class Screen:
    cdef dict _fields         # name -> _Field
    cdef tuple _required
    cdef bint _always         # the cross-field rules always run
