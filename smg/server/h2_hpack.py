"""HPACK for the HTTP/2 server connection: the ``hpack`` library's own encoder and
decoder (through which h2 does all its header coding), made cheaper for the traffic a
gateway sees, plus the request-field checks that replace h2's inbound validation.

Theory of operation: most header blocks on a warm connection repeat — the same client
library sends the same fields, the same worker answers with the same ones — and
HPACK's output for a field (and its decoding of a block) depends only on the field (or
block) and the dynamic table. Both coders here use a dynamic table that counts its
changes (``_Table``), and remember their results only while that count stays put:

- ``MemoEncoder`` remembers each indexable field's encoding (a repeated field costs a
  dict look-up instead of a table search); never-indexed fields (the values unique to
  one response: request ids, lengths) are encoded by hpack every time. No Huffman
  coding: pure-Python Huffman coding costs more than the few header bytes it saves.
- ``CheckedDecoder`` remembers each block that changed nothing in the table (a warm
  client's repeated request head is all indexes): the same bytes, in the same table,
  decode to the same fields, which passed ``check_fields`` the first time.

h2 is configured not to validate or normalize inbound headers (smg/server/
h2_connection.py): its validators are a chain of generators over every field of every
block, about a tenth of a request's cost. ``check_fields`` runs instead on each block
hpack decodes, with the same rules (RFC 9113 §8.2, §8.3): field names without
upper-case letters, controls, spaces, DEL, non-ASCII or a colon past the first byte;
values without NUL, CR or LF and without leading or trailing SP/HTAB — a CR or LF
relayed to a worker over HTTP/1.1 would be header injection; no connection-specific
fields; TE only ``trailers``; pseudo-header fields known, unique, before the regular
ones, a ``:path`` never empty. A violation raises h2's ``ProtocolError``, which ends
the connection with GOAWAY PROTOCOL_ERROR, as h2's own validation did. The
request-level rules (the pseudo-header fields a request must have, ``:authority``
agreeing with ``host``, cookies joined) are ``smg.server.h2_stream.request_head``'s.

Rules:
- A memo is cleared whenever the table changes (an entry added or evicted, a size
  change) and is bounded (``MEMO_MAX`` entries, blocks up to ``MEMO_BLOCK_MAX``
  bytes); names seen valid are remembered up to ``GOOD_NAMES_MAX``.
- The decoder's HPACK-bomb bound (``max_header_list_size``) and table-size checks
  are hpack's, applied to every block decoded; a remembered block was within them.
"""
from __future__ import annotations

import re

from h2.exceptions import ProtocolError
from hpack import Decoder, Encoder
from hpack.table import HeaderTable

MEMO_MAX = 256
MEMO_BLOCK_MAX = 4096
GOOD_NAMES_MAX = 2048


class _Table(HeaderTable):
    """hpack's dynamic table, counting its changes (``changes``)."""

    def __init__(self) -> None:
        super().__init__()
        self.changes = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.changes += 1
        HeaderTable.add(self, name, value)

    def _set_maxsize(self, newmax: int) -> None:
        self.changes += 1
        HeaderTable.maxsize.fset(self, newmax)

    maxsize = property(HeaderTable.maxsize.fget, _set_maxsize)


class MemoEncoder(Encoder):
    """hpack's encoder without Huffman coding, remembering the encoding of each
    indexable field while the dynamic table is unchanged. Takes what h2 passes:
    (name, value) bytes tuples, and ``HeaderTuple``s (``NeverIndexedHeaderTuple`` for
    fields kept out of the table)."""

    def __init__(self) -> None:
        super().__init__()
        self.header_table = _Table()
        self._memo: dict = {}
        self._gen = 0

    def encode(self, headers, huffman: bool = True) -> bytes:
        t = self.header_table
        out = []
        if t.resized:
            out.append(self._encode_table_size_change())
            t.resized = False
        memo = self._memo
        if t.changes != self._gen:
            memo.clear()
            self._gen = t.changes
        add = self.add
        for h in headers:
            if type(h) is tuple:
                enc = memo.get(h)
                if enc is None:
                    enc = add(h, False, False)
                    if t.changes == self._gen:
                        if len(memo) >= MEMO_MAX:
                            memo.clear()
                        memo[h] = enc
                    else:
                        memo.clear()
                        self._gen = t.changes
            else:
                enc = add((h[0], h[1]), not h.indexable, False)
                if t.changes != self._gen:
                    memo.clear()
                    self._gen = t.changes
            out.append(enc)
        return b"".join(out)


class CheckedDecoder(Decoder):
    """hpack's decoder, checking each decoded block's fields (``check_fields``) and
    remembering the blocks that left the dynamic table as it was."""

    def __init__(self, max_header_list_size: int) -> None:
        super().__init__(max_header_list_size)
        self.header_table = _Table()
        self.max_allowed_table_size = self.header_table.maxsize
        self._memo: dict = {}
        self._gen = 0

    def decode(self, data, raw: bool = False):
        t = self.header_table
        memo = self._memo
        if t.changes != self._gen:
            memo.clear()
            self._gen = t.changes
        if type(data) is not bytes:
            data = bytes(data)
        hit = memo.get(data)
        if hit is not None and t.maxsize <= self.max_allowed_table_size:
            return list(hit)   # a copy: what a caller does to its list never reaches the memo
        headers = super().decode(data, raw)
        check_fields(headers)
        if t.changes == self._gen:
            if len(data) <= MEMO_BLOCK_MAX:
                if len(memo) >= MEMO_MAX:
                    memo.clear()
                memo[data] = headers
        else:
            memo.clear()
            self._gen = t.changes
        return headers


# RFC 9113 §8.2.1: a field name has none of 0x00-0x20, A-Z, 0x7f-0xff, nor a colon
# (pseudo-header names, checked against a set, aside)
_NAME = re.compile(rb"[^\x00-\x20A-Z\x7f-\xff:]+")
# ... a value no NUL, LF or CR, nor SP/HTAB at either end
_BAD_VALUE = re.compile(rb"[\x00\n\r]|\A[ \t]|[ \t]\Z")
_PSEUDO = {b":method": 1, b":scheme": 2, b":authority": 4, b":path": 8, b":protocol": 16}
CONNECTION_SPECIFIC = frozenset((b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding",
                                 b"upgrade"))
_good_names: set = set()  # regular field names that passed (shared by every connection)


def check_fields(headers) -> None:
    """Raises h2's ProtocolError for a decoded block HTTP/2 calls malformed at the
    field level (module rules)."""
    regular = False
    seen = 0
    good = _good_names
    for n, v in headers:
        if n in good:
            regular = True
        else:
            bit = _PSEUDO.get(n)
            if bit is not None:
                if regular:
                    raise ProtocolError(f"pseudo-header field out of sequence: {n!r}")
                if seen & bit:
                    raise ProtocolError(f"duplicate pseudo-header field {n!r}")
                seen |= bit
                if bit == 8 and not v:
                    raise ProtocolError("an empty :path")
            else:
                _check_name(n, v)
                regular = True
        if v and _BAD_VALUE.search(v) is not None:
            raise ProtocolError(f"illegal characters or surrounding whitespace in the value of {n[:64]!r}")


def _check_name(n: bytes, v: bytes) -> None:
    if not n:
        raise ProtocolError("a header field with an empty name")
    if n[:1] == b":":
        raise ProtocolError(f"unknown or response-only pseudo-header field {n[:64]!r}")
    if _NAME.fullmatch(n) is None:
        raise ProtocolError(f"illegal characters in header field name {n[:64]!r}")
    if n in CONNECTION_SPECIFIC:
        raise ProtocolError(f"connection-specific header field {n!r}")
    if n == b"te":
        if v.lower() != b"trailers":
            raise ProtocolError(f"invalid TE header value {v[:64]!r}")
        return  # checked with its value each time
    if len(_good_names) < GOOD_NAMES_MAX:
        _good_names.add(n)
