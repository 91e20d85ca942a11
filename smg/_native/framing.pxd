# cython: language_level=3
#
# smg._native.framing: the body bytes of relayed answers (this file is the contract).
#
# Twin: smg/http1/framing_py.py (same API, same results, same exceptions).
# Stub: smg/_native/framing.pyi.
#
# Who imports this module:
# - Python code: only the selector smg/http1/framing.py (through smg._native.load); the
#   users are smg/server/exchange.py on_leg_events (collect) and smg/server/protocol.py
#   send (chunked).
# - Cython code: nobody cimports it; nothing is declared for other modules.
#
# Memory and lifetime rules:
# - collect() appends the payload objects themselves (no copy) and holds a reference to
#   each event while it reads it; the events list is re-measured before every item.
# - chunked() measures every piece first, makes one bytes object of the exact size and
#   copies into it; the pieces are held by the list it was given, which it does not
#   change (no Python code runs between measuring and copying: only exact bytes are
#   read; anything else goes to the twin before any copy).
