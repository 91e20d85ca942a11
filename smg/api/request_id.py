"""Request ids: honour a valid client-supplied id, else mint one with SMG's prefixes."""
from __future__ import annotations

from random import getrandbits

MAX_LEN = 128  # SMG accepts 1-128 visible ASCII characters

PREFIXES = {
    b"/v1/chat/completions": b"chatcmpl-",
    b"/v1/completions": b"cmpl-",
    b"/generate": b"gnt-",
    b"/v1/responses": b"resp-",
    b"/v1/messages": b"msg_",
}


def is_valid(value: bytes) -> bool:
    if not 0 < len(value) <= MAX_LEN:
        return False
    return value.isascii() and all(0x21 <= c <= 0x7E for c in value)


def new_id(path: bytes) -> bytes:
    """A fresh id: the path's prefix followed by 24 random hex characters."""
    return PREFIXES.get(path, b"req-") + b"%024x" % getrandbits(96)
