"""Differential tests for the body framing of relayed answers (smg.http1.framing).

Every test that takes ``impl`` runs against the pure-Python twin (id "py") and the native
one (id "c"; skipped when not built, an import error under SMG_REQUIRE_EXTENSIONS=1).

- ``chunked``: h11 is the oracle. Framed bytes, read back by h11 as a chunked response
  body, give the pieces' bytes; the body ends exactly when ``end`` was given; empty
  pieces never end a body early. Sizes around each hex-digit boundary, one piece past
  64 KiB, bytes-like pieces (handed to the twin) and bad input raise the same errors.
- ``collect``: appends exactly the Data payloads (the same objects) up to the first
  EndOfMessage, counts their bytes, fills ``parts`` too when given, passes over other
  events; tuples and bytes-like payloads give the twin's answer.
- Property: hypothesis piece lists and event batches give C == Py (and == h11).
"""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smg.http1.events import Data, EndOfMessage, InformationalResponse, Response
from smg.http1.framing import chunkedC, chunkedPy, collectC, collectPy
from smg.testing.twins import twin_params

CHUNKED = twin_params(chunkedPy, chunkedC)
COLLECT = twin_params(collectPy, collectC)
HEAD = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"


def h11_read(wire: bytes) -> tuple[bytes, bool]:
    """The body h11 reads from a chunked response ``wire`` and whether it ended."""
    c = h11.Connection(h11.CLIENT)
    c.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    c.send(h11.EndOfMessage())
    c.receive_data(wire)
    body, ended = [], False
    while True:
        ev = c.next_event()
        if ev is h11.NEED_DATA or ev is h11.PAUSED:
            break
        if isinstance(ev, h11.Data):
            body.append(bytes(ev.data))
        elif isinstance(ev, h11.EndOfMessage):
            ended = True
            break
    return b"".join(body), ended


SIZES = [1, 9, 15, 16, 17, 255, 256, 4095, 4096, 65535, 65536, 70001]


@pytest.mark.parametrize("impl", CHUNKED)
@pytest.mark.parametrize("end", [True, False])
def test_chunked_read_back_by_h11(impl, end):
    pieces = [bytes([65 + i % 26]) * n for i, n in enumerate(SIZES)]
    wire = impl(HEAD, pieces, end)
    body, ended = h11_read(wire)
    assert body == b"".join(pieces)
    assert ended is end
    # every size line is lower-case hex without padding
    assert b"\r\n10\r\n" + b"D" * 16 + b"\r\n" in wire
    assert b"\r\n10000\r\n" in wire


@pytest.mark.parametrize("impl", CHUNKED)
def test_chunked_empty_pieces_do_not_end_the_body(impl):
    wire = impl(HEAD, [b"", b"ab", b"", b"c"], False)
    assert wire == HEAD + b"2\r\nab\r\n1\r\nc\r\n"
    assert h11_read(wire) == (b"abc", False)


@pytest.mark.parametrize("impl", CHUNKED)
def test_chunked_without_head(impl):
    assert impl(None, [], False) == b""
    assert impl(None, [], True) == b"0\r\n\r\n"
    assert impl(None, [b"xyz"], True) == b"3\r\nxyz\r\n0\r\n\r\n"
    assert impl(b"H", [], False) == b"H"


@pytest.mark.parametrize("impl", CHUNKED)
def test_chunked_bytes_like_pieces(impl):
    pieces = [bytearray(b"ab"), memoryview(b"cde"), b"f"]
    assert impl(None, pieces, True) == b"2\r\nab\r\n3\r\ncde\r\n1\r\nf\r\n0\r\n\r\n"
    assert impl(None, (b"ab",), False) == b"2\r\nab\r\n"


@pytest.mark.parametrize("impl", CHUNKED)
def test_chunked_bad_input_raises_like_the_twin(impl):
    with pytest.raises(TypeError):
        impl(None, ["text"], False)
    with pytest.raises(TypeError):
        impl(None, [b"a", 5], False)
    with pytest.raises(TypeError):
        impl("head", [b"a"], False)


@pytest.mark.parametrize("impl", COLLECT)
def test_collect_payloads_up_to_the_end(impl):
    d1, d2, d3 = Data(b"ab"), Data(b"cde"), Data(b"late")
    resp = Response(200, b"OK", b"1.1", [], -1, True, True)
    info = InformationalResponse(100, b"Continue", b"1.1", [])
    events = [info, resp, d1, d2, EndOfMessage(), d3]
    out, parts = [b"before"], []
    assert impl(events, out, parts) == (5, True)
    assert out == [b"before", b"ab", b"cde"] and out[1] is d1.data
    assert parts == [b"ab", b"cde"]
    out = []
    assert impl([d1, d3], out, None) == (6, False)
    assert out == [b"ab", b"late"]
    assert impl([], out, None) == (0, False)
    assert impl([EndOfMessage()], [], None) == (0, True)


@pytest.mark.parametrize("impl", COLLECT)
def test_collect_other_containers(impl):
    out = []
    assert impl((Data(b"ab"), Data(memoryview(b"xyz"))), out, None) == (5, False)
    assert bytes(out[1]) == b"xyz"
    parts: list = []
    assert impl([Data(bytearray(b"q"))], [], parts) == (1, False)
    assert parts == [bytearray(b"q")]
    with pytest.raises(AttributeError):
        impl([Data(b"a")], (), None)   # out must be appendable


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=12), st.booleans(), st.booleans())
def test_chunked_twins_agree(pieces, end, with_head):
    head = HEAD if with_head else None
    py = chunkedPy(head, pieces, end)
    if chunkedC is not None:
        assert chunkedC(head, pieces, end) == py
    if with_head:
        assert h11_read(py) == (b"".join(pieces), end)


_EVENT = st.one_of(st.binary(min_size=1, max_size=40).map(Data), st.just("end"), st.just("resp"))


@settings(max_examples=300, deadline=None)
@given(st.lists(_EVENT, max_size=12), st.booleans())
def test_collect_twins_agree(spec, keep):
    events = [EndOfMessage() if e == "end" else Response(200, b"OK", b"1.1", [], 0, False, True)
              if e == "resp" else e for e in spec]
    out_py, parts_py = [], ([] if keep else None)
    res = collectPy(events, out_py, parts_py)
    cut = next((i for i, e in enumerate(events) if type(e) is EndOfMessage), len(events))
    want = [e.data for e in events[:cut] if type(e) is Data]
    assert out_py == want and res == (sum(map(len, want)), cut < len(events))
    if collectC is not None:
        out_c, parts_c = [], ([] if keep else None)
        assert collectC(events, out_c, parts_c) == res
        assert out_c == out_py and parts_c == parts_py
