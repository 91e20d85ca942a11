"""SSEScanner.observe(): the count-only mode the gateway uses on streamed answers.

observe() must leave the scanner in exactly the state feed() would (counts, [DONE],
last data, bytes seen, truncation, errors), whatever the split and whether pieces come
one by one, as lists, or wrapped in HTTP Data events; it must read the clock only when
data events complete; and usage() must equal usage_counts(last_data). Both twins.
"""
from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smg.errors import RemoteProtocolError
from smg.http1.events import Data, EndOfMessage, Response
from smg.streaming.sse import SSEScannerC, SSEScannerPy, usage_countsPy
from smg.testing.twins import twin_params
from tests.native.test_sse import CORPUS, CORPUS_IDS, _stream, chunked, cut

TWINS = twin_params(SSEScannerPy, SSEScannerC)
IMPLS = [SSEScannerPy] + ([SSEScannerC] if SSEScannerC is not None else [])
STATE = ("events", "data_events", "done", "last_data", "bytes_seen", "truncated")


def fed_state(cls, pieces) -> dict:
    sc = cls()
    for p in pieces:
        sc.feed(p)
    sc.feed_eof()
    return {k: getattr(sc, k) for k in STATE}


def observed_state(cls, batches) -> tuple[dict, int, object]:
    """Observe each batch (a piece, or a list of items), then EOF: (state, returned total, usage)."""
    sc = cls()
    total = 0
    for b in batches:
        n = sc.observe(b)
        assert type(n) is int and n >= 0
        total += n
    usage = sc.usage()
    sc.feed_eof()
    return {k: getattr(sc, k) for k in STATE}, total, usage


def groupings(pieces: list) -> list:
    """The same pieces as single pieces, one list, lists of two, and HTTP events."""
    events = [Response(200, b"OK", b"1.1", [], -1, True, True)] + [Data(p) for p in pieces] + [EndOfMessage()]
    pairs = [pieces[i:i + 2] for i in range(0, len(pieces), 2)]
    return [list(pieces), [pieces], pairs, [tuple(pieces)], [events],
            [[bytearray(p) for p in pieces]], [[memoryview(p) for p in pieces]]]


@pytest.fixture(params=TWINS)
def impl(request):
    return request.param


@pytest.mark.parametrize("name,stream,expected", CORPUS, ids=CORPUS_IDS)
def test_corpus_observe_equals_feed(impl, name, stream, expected):
    for pieces in ([stream], chunked(stream, 7), chunked(stream, 1)):
        want = fed_state(impl, pieces)
        for batches in groupings(pieces):
            got, total, usage = observed_state(impl, batches)
            assert got == want, (name, batches[:2])
            assert total == want["data_events"]
            assert usage == (usage_countsPy(want["last_data"]) if want["last_data"] is not None else None)


@pytest.mark.parametrize("name,stream,expected", CORPUS, ids=CORPUS_IDS)
def test_corpus_observe_every_split_as_one_list(impl, name, stream, expected):
    # one list per read: a data value pending in one piece while later pieces of the
    # same list complete (or do not complete) further events
    want = fed_state(impl, [stream])
    for i in range(len(stream) + 1):
        for j in (i, min(i + 3, len(stream))):
            got, _, _ = observed_state(impl, [[stream[:i], stream[i:j], stream[j:]]])
            assert got == want, (name, i, j)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gen=_stream(), data=st.data())
def test_property_observe_equals_feed(gen, data):
    stream, _, _ = gen
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    pieces = cut(stream, cuts)
    split = data.draw(st.integers(0, len(pieces)))
    for cls in IMPLS:
        want = fed_state(cls, pieces)
        got, total, usage = observed_state(cls, [pieces[:split], pieces[split:]])
        assert got == want
        assert total == want["data_events"]
    if SSEScannerC is not None:
        assert observed_state(SSEScannerC, [pieces]) == observed_state(SSEScannerPy, [pieces])


def test_clock_is_read_only_when_data_events_complete(impl):
    sc = impl()
    assert (sc.first_t, sc.last_t) == (0.0, 0.0)
    assert sc.observe([b": comment\n\n", b"event: x\n\n", b"data: par"]) == 0
    assert (sc.first_t, sc.last_t) == (0.0, 0.0)   # no data event yet: no reading
    before = time.monotonic()
    assert sc.observe(b"tial\n\n") == 1
    after = time.monotonic()
    first = sc.first_t
    assert before <= first <= after                # the scanner reads the monotonic clock
    assert sc.last_t == first
    time.sleep(0.002)
    assert sc.observe([Data(b"data: a\n\n"), Data(b"data: [DONE]\n\n")]) == 2
    assert sc.first_t == first                     # the first reading is kept
    assert sc.last_t > first


def test_last_data_built_lazily_and_updated(impl):
    sc = impl()
    sc.observe([b"data: one\n\n", b"data: t", b"wo\n\n"])
    assert sc.last_data == b"two"                  # spans two pieces of one list
    sc.observe(b"data: three\ndata: lines\n\n")
    assert sc.last_data == b"three\nlines"         # a joined value
    sc.observe(b"data: [DONE]\n\n")
    assert sc.last_data == b"three\nlines" and sc.done
    assert sc.feed([b"data: four\n\n"][0]) == [b"four"]   # feed and observe mix
    assert sc.last_data == b"four"
    sc.observe(bytearray(b"data: five\n\n"))
    assert sc.last_data == b"five"


def test_usage_of_the_last_data_event(impl):
    sc = impl()
    assert sc.usage() is None
    sc.observe([b'data: {"usage":{"prompt_tokens":3,"completion_tokens":7}}\n\n', b"data: [DONE]\n\n"])
    assert sc.usage() == (3, 7)
    sc.observe(b'data: {"choices":[]}\n\n')
    assert sc.usage() is None                      # only the last value counts


def test_items_without_data_are_skipped(impl):
    sc = impl()
    n = sc.observe([Response(200, b"OK", b"1.1", [], -1, True, True), Data(b"data: x\n\n"), EndOfMessage(),
                    7, "data: y\n\n"])
    assert n == 1 and sc.last_data == b"x" and sc.bytes_seen == 9


@pytest.mark.parametrize("bad", [1, None, 1.5, "data: x\n\n", [Data("text")], [b"data: x\n\n", Data(7)]])
def test_type_error(impl, bad):
    sc = impl()
    with pytest.raises(TypeError):
        sc.observe(bad)


def test_oversized_event_in_a_list_fails_the_scanner(impl):
    sc = impl(max_event_size=16)
    with pytest.raises(RemoteProtocolError) as e:
        sc.observe([b"data: ok\n\n", b"data: " + b"x" * 40 + b"\n\n"])
    assert e.value.status_hint == 502
    assert sc.data_events == 1 and sc.last_data == b"ok"
    with pytest.raises(RemoteProtocolError):
        sc.observe(b"data: more\n\n")
    sc.feed_eof()
    assert sc.truncated
