"""smg.server.h2_hpack: the memoizing HPACK coders agree with plain hpack whatever the
dynamic table does, and check_fields refuses what h2's inbound validation refused."""
from __future__ import annotations

import random

import pytest
from h2.exceptions import ProtocolError
from hpack import Decoder, Encoder, NeverIndexedHeaderTuple

from smg.server import h2_hpack
from smg.server.h2_hpack import CheckedDecoder, MemoEncoder, check_fields

_REQ = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"gw"), (b":path", b"/v1/chat/completions"),
        (b"content-type", b"application/json"), (b"user-agent", b"OpenAI/Python 1.54")]


def _blocks(seed: int, n: int) -> list:
    """Header lists mixing repeats, new values (table inserts and evictions) and
    never-indexed fields."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        hdrs = list(_REQ)
        if rnd.random() < 0.5:
            hdrs.append((b"content-length", b"%d" % rnd.randrange(50)))
        if rnd.random() < 0.3:
            hdrs.append((b"x-big", b"v" * rnd.randrange(1, 1500)))  # evicts entries from a 4 KiB table
        hdrs.append(NeverIndexedHeaderTuple(b"x-request-id", b"req-%d" % i))
        out.append(hdrs)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_memo_encoder_output_decodes_like_plain_hpack_and_matches_it(seed):
    memo, plain, dec = MemoEncoder(), Encoder(), Decoder()
    for i, hdrs in enumerate(_blocks(seed, 300)):
        if i == 150:
            memo.header_table_size = plain.header_table_size = 1024  # a client's smaller table
        block = memo.encode(hdrs)
        assert block == plain.encode(hdrs, huffman=False)
        assert dec.decode(block, raw=True) == [tuple(h) for h in hdrs]


@pytest.mark.parametrize("seed", range(5))
def test_checked_decoder_remembers_only_while_the_table_stands(seed):
    enc = Encoder()
    checked, plain = CheckedDecoder(65536), Decoder()
    hits = 0
    for hdrs in _blocks(seed, 300):
        block = enc.encode([h for h in hdrs if h[0] != b"x-request-id"])  # repeats once the table is warm
        hits += block in checked._memo
        assert checked.decode(block, raw=True) == plain.decode(block, raw=True)
    assert hits > 10


def test_a_remembered_block_is_not_used_once_the_table_limit_is_lowered():
    enc = Encoder()
    d = CheckedDecoder(65536)
    d.decode(enc.encode(_REQ), raw=True)
    block = enc.encode(_REQ)  # all indexes now
    d.decode(block, raw=True)
    assert block in d._memo
    d.max_allowed_table_size = 0  # settings acked: the peer must shrink first
    with pytest.raises(Exception):
        d.decode(block, raw=True)


def test_the_header_list_bound_holds():
    d = CheckedDecoder(200)
    with pytest.raises(Exception):
        d.decode(Encoder().encode(_REQ + [(b"x-a", b"v" * 300)]), raw=True)


@pytest.mark.parametrize("bad", [
    (b"x-a", b"1\r\nx-injected: 1"),     # CR LF in a value: header injection over HTTP/1.1
    (b"x-a", b"1\nx"), (b"x-a", b"a\x00b"),
    (b"x-a", b" lead"), (b"x-a", b"trail\t"),
    (b"X-Upper", b"1"), (b"x a", b"1"), (b"x:a", b"1"), (b"x\x7f", b"1"), (b"", b"1"),
    (b"connection", b"close"), (b"transfer-encoding", b"chunked"), (b"keep-alive", b"1"),
    (b"upgrade", b"h2c"), (b"proxy-connection", b"1"), (b"te", b"gzip"),
    (b":status", b"200"), (b":custom", b"1"),
])
def test_check_fields_refuses_what_rfc_9113_calls_malformed(bad):
    with pytest.raises(ProtocolError):
        check_fields(_REQ + [bad])
    h2_hpack._good_names.discard(bad[0])


def test_check_fields_refuses_pseudo_headers_out_of_order_twice_or_empty_path():
    with pytest.raises(ProtocolError):
        check_fields(_REQ + [(b":path", b"/x")])          # after a regular field
    with pytest.raises(ProtocolError):
        check_fields([(b":method", b"GET"), (b":method", b"GET")])
    with pytest.raises(ProtocolError):
        check_fields([(b":method", b"GET"), (b":path", b"")])


def test_check_fields_accepts_ordinary_requests_repeatedly():
    for _ in range(3):  # the second time through, names come from the known-good set
        check_fields(_REQ + [(b"te", b"trailers"), (b"x-empty", b""), (b"x-inner", b"a b\tc")])
    with pytest.raises(ProtocolError):
        check_fields(_REQ + [(b"te", b"deflate")])  # TE keeps its value check after being seen
