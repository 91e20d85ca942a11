"""FrameGuard: the HTTP/2 flood defences, sans-I/O, run over the raw bytes of each read
before the h2 library parses them.

The guard walks only the 9-byte frame headers (length, type, flags) of the client's
byte stream — it never parses a payload — and answers, per read, either None (go on)
or the reason the connection must be ended with GOAWAY (``REASONS``). It exists
because h2 accounts for these attacks either too late or not at all:

- an over-long frame is refused by h2 only once the whole claimed payload (up to
  16 MiB) has been buffered; the guard refuses it at its header (``frame_size``);
- a header block (HEADERS + CONTINUATION frames) is buffered whole before HPACK
  decoding; the guard bounds it in bytes, each frame costing its header too, so that
  a flood of empty CONTINUATION frames is bounded as well (``header_block``);
- client RST_STREAM frames (CVE-2023-44487, rapid reset: each reset stream made the
  gateway start a request, then cancel it), PING frames and SETTINGS frames (each
  makes the gateway queue an ACK a non-reading client never takes) are counted over
  a fixed time window against their limits (``rapid_reset``, ``ping_flood``,
  ``settings_flood``).

Rules:
- One pass over the frame headers of each read; state across reads is the bytes left
  of the current frame and at most 8 bytes of a split frame header.
- The connection preface (24 bytes) is skipped, not checked: h2 validates it.
- Limits come from the settings once, at construction; ``now`` is passed in (the
  loop's coarse clock), so the guard has no clock and no I/O.
"""
from __future__ import annotations

from struct import Struct

PREFACE_LEN = 24

FRAME_SIZE = "frame_size"
HEADER_BLOCK = "header_block"
RAPID_RESET = "rapid_reset"
PING_FLOOD = "ping_flood"
SETTINGS_FLOOD = "settings_flood"
REASONS = (FRAME_SIZE, HEADER_BLOCK, RAPID_RESET, PING_FLOOD, SETTINGS_FLOOD)

_HEAD = Struct(">HBBB")  # length (high 16 bits, low 8 bits), type, flags
_HEADERS, _RST_STREAM, _SETTINGS, _PING = 0x1, 0x3, 0x4, 0x6
_END_HEADERS = 0x4
_ACK = 0x1
# HEADERS may carry up to 255 bytes of padding and 5 of priority on top of the block
_BLOCK_SLACK = 512


class FrameGuard:
    __slots__ = ("max_frame", "max_block", "window", "max_resets", "max_pings", "max_settings",
                 "skip", "partial", "block", "block_since", "window_start", "resets", "pings", "settings")

    def __init__(self, max_frame_size: int, max_header_list_size: int, window_secs: float,
                 max_resets: int, max_pings: int, max_settings: int, now: float = 0.0) -> None:
        self.max_frame = max_frame_size
        # an HPACK-encoded block is never larger than the header list it decodes to
        # (each field costs 32 bytes more decoded than its name and value, and at most a
        # few bytes of integer prefixes encoded), so the list limit bounds the block
        self.max_block = max_header_list_size + _BLOCK_SLACK
        self.window = window_secs
        self.max_resets = max_resets
        self.max_pings = max_pings
        self.max_settings = max_settings
        self.skip = PREFACE_LEN     # bytes still to pass before the next frame header
        self.partial = b""          # the first bytes of a frame header split across reads
        self.block = -1             # bytes of the open header block; -1: none open
        self.block_since = 0.0      # when the open header block began
        self.window_start = now
        self.resets = 0
        self.pings = 0
        self.settings = 0

    @property
    def in_header_block(self) -> bool:
        return self.block >= 0

    def feed(self, data: bytes, now: float) -> str | None:
        """Accounts for the frames whose headers are in ``data``; returns a reason from
        ``REASONS`` when the connection must be closed, else None."""
        n = len(data)
        i = self.skip
        if i >= n:
            self.skip = i - n
            return None
        if now - self.window_start >= self.window:
            self.window_start = now
            self.resets = self.pings = self.settings = 0
        if self.partial:
            # a frame header split across reads: complete it, then carry on in ``data``
            need = 9 - len(self.partial)
            if n < need:
                self.partial += data
                self.skip = 0
                return None
            head = self.partial + data[:need]
            self.partial = b""
            length, reason = self._frame(head, 0, now)
            if reason is not None:
                return reason
            i = need + length
        head_struct = _HEAD
        while i + 9 <= n:
            hi, lo, typ, flags = head_struct.unpack_from(data, i)
            length = (hi << 8) | lo
            if length > self.max_frame:
                return FRAME_SIZE
            if typ or self.block >= 0:
                # DATA (type 0) outside a header block, the bulk of a busy connection,
                # needs no accounting
                reason = self._account(typ, flags, length, now)
                if reason is not None:
                    return reason
            i += 9 + length
        if i < n:
            self.partial = data[i:]
            self.skip = 0
        else:
            self.skip = i - n
        return None

    def _frame(self, data: bytes, i: int, now: float) -> tuple:
        hi, lo, typ, flags = _HEAD.unpack_from(data, i)
        length = (hi << 8) | lo
        if length > self.max_frame:
            return length, FRAME_SIZE
        return length, self._account(typ, flags, length, now)

    def _account(self, typ: int, flags: int, length: int, now: float) -> str | None:
        block = self.block
        if block >= 0:
            # inside a header block only CONTINUATION may come (h2 enforces the rest)
            block += 9 + length
            if block > self.max_block:
                return HEADER_BLOCK
            self.block = -1 if flags & _END_HEADERS else block
            return None
        if typ == _HEADERS:
            if not flags & _END_HEADERS:
                self.block = 9 + length
                self.block_since = now
            if length > self.max_block:
                return HEADER_BLOCK
        elif typ == _RST_STREAM:
            self.resets += 1
            if self.resets > self.max_resets:
                return RAPID_RESET
        elif typ == _PING:
            if not flags & _ACK:
                self.pings += 1
                if self.pings > self.max_pings:
                    return PING_FLOOD
        elif typ == _SETTINGS:
            if not flags & _ACK:
                self.settings += 1
                if self.settings > self.max_settings:
                    return SETTINGS_FLOOD
        return None
