"""Request ids: honour a valid client-supplied id, else mint one with SMG's prefixes
(each endpoint's prefix is in the endpoint table, smg/server/endpoints.py).

The first stage of the request pipeline: ``RequestIds.assign(ctx)`` runs when the head
is parsed. Of the headers named by ``--request-id-headers``, the first in that list
that is present and valid wins.
"""
from __future__ import annotations

from random import getrandbits

MAX_LEN = 128  # SMG accepts 1-128 visible ASCII characters

def is_valid(value: bytes) -> bool:
    if not 0 < len(value) <= MAX_LEN:
        return False
    return value.isascii() and all(0x21 <= c <= 0x7E for c in value)


def new_id(prefix: bytes) -> bytes:
    """A fresh id: ``prefix`` followed by 24 random hex characters."""
    return prefix + b"%024x" % getrandbits(96)


class RequestIds:
    __slots__ = ("priority",)

    def __init__(self, header_names) -> None:
        # header name -> rank in --request-id-headers
        self.priority = {h.encode(): i for i, h in enumerate(header_names)}

    def assign(self, ctx) -> None:
        rid = None
        best = 1 << 30
        prio = self.priority
        for n, v in ctx.headers:
            p = prio.get(n)
            if p is not None and p < best:
                rid = v
                best = p
        ctx.rid = rid if rid is not None and is_valid(rid) else new_id(ctx.endpoint.id_prefix)
