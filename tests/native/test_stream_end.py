"""Tests for the stream-end watcher twins (smg.streaming.sse ``StreamEnd``).

Every test that takes ``impl`` runs against the pure-Python twin (id "py") and the native
one (id "c"; skipped when not built, an import error under SMG_REQUIRE_EXTENSIONS=1).

- Spec: each behaviour of the watcher (the rules in smg/streaming/sse_py.py, "stream
  end") as a table of batches, their expected outputs and the final done/finished.
- Reference: ``Reference`` below is the StreamEnd that smg/server/transforms.py held
  before it moved into smg.streaming (verbatim but for taking the family as a bool);
  generated streams, split into Data events and batches at random, must give the same
  output batch by batch (content, and which events are passed through as the same
  object) and the same done/finished in the reference, the twin and the native class.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smg import _native
from smg.http1.events import Data, EndOfMessage, Response
from smg.streaming import sse as sse_selector
from smg.streaming.sse import StreamEndC, StreamEndPy
from smg.testing.twins import twin_params

TWINS = twin_params(StreamEndPy, StreamEndC)
IMPLS = [StreamEndPy] + ([StreamEndC] if StreamEndC is not None else [])


# --- the reference: the pre-move implementation ---------------------------------------

_DONE = b"[DONE]"
_FINISH = b'"finish_reason":'
_NON_NULL = (34, 123)
_MESSAGE_STOP = b"message_stop"


def _ref_done_at(d: bytes) -> int:
    j = d.find(_DONE)
    while j >= 0:
        if j >= 6 and d[j - 6:j] == b"data: ":
            s = j - 6
        elif j >= 5 and d[j - 5:j] == b"data:":
            s = j - 5
        else:
            s = -1
        if s == 0 or (s > 0 and d[s - 1] == 10):
            return s
        j = d.find(_DONE, j + 6)
    return -1


def _ref_finished_openai(d: bytes) -> bool:
    j = d.find(_FINISH)
    n = len(d)
    while j >= 0:
        k = j + 16
        while k < n and d[k] == 32:
            k += 1
        if k < n and d[k] in _NON_NULL:
            return True
        j = d.find(_FINISH, k)
    return False


def _ref_finished_anthropic(d: bytes) -> bool:
    return _MESSAGE_STOP in d


class Reference:
    __slots__ = ("done", "finished", "finish_in")

    def __init__(self, anthropic: bool) -> None:
        self.done = False
        self.finished = False
        self.finish_in = _ref_finished_anthropic if anthropic else _ref_finished_openai

    @property
    def complete(self) -> bool:
        return self.done or self.finished

    def __call__(self, events: list):
        if self.done:
            return [ev for ev in events if type(ev) is not Data]
        for i, ev in enumerate(events):
            if type(ev) is not Data:
                continue
            d = ev.data
            if not self.finished and self.finish_in(d):
                self.finished = True
            j = _ref_done_at(d)
            if j < 0:
                continue
            self.done = True
            e = d.find(b"\n\n", j)
            cut = e + 2 if e >= 0 else len(d)
            out = events[:i]
            out.append(ev if cut >= len(d) else Data(d[:cut]))
            out.extend(x for x in events[i + 1:] if type(x) is not Data)
            return out
        return None


# --- helpers ------------------------------------------------------------------------


class DataLike(Data):
    """A Data subclass: not a Data event for the watcher (types are matched exactly)."""

    __slots__ = ()


EOM = EndOfMessage()
HEAD = Response(200, b"OK", b"1.1", [(b"content-type", b"text/event-stream")], -1, True, True)


def shape(batch: list, out) -> object:
    """An output, comparable across implementations: None, or per element either
    ("same", index of that very object in the batch) or ("new", type name, data)."""
    if out is None:
        return None
    assert type(out) is list and out is not batch
    res = []
    for x in out:
        k = next((i for i, ev in enumerate(batch) if ev is x), -1)
        if k >= 0:
            res.append(("same", k))
        else:
            assert type(x) is Data and type(x.data) is bytes
            res.append(("new", type(x).__name__, x.data))
    return res


def run(cls, batches: list, anthropic: bool = False) -> tuple:
    """Feed the batches; returns ([shape per batch], [(done, finished) per batch])."""
    w = cls(anthropic)
    outs, states = [], []
    for batch in batches:
        outs.append(shape(batch, w(batch)))
        assert w.complete == (w.done or w.finished)
        assert type(w.done) is bool and type(w.finished) is bool
        states.append((w.done, w.finished))
    return outs, states


def relayed(batch: list, out) -> list:
    """The events the exchange relays for a batch."""
    return batch if out is None else out


def D(b: bytes) -> Data:
    return Data(b)


CHUNK = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}\n\n'
STOP = b'data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'


# --- spec: finish reasons -------------------------------------------------------------

FINISH_CASES = [
    # (payload, anthropic, finished)
    (CHUNK, False, False),
    (STOP, False, True),
    (b'data: {"finish_reason":"length"}\n\n', False, True),
    (b'data: {"finish_reason":{"type":"stop"}}\n\n', False, True),
    (b'data: {"finish_reason":null}\n\n', False, False),
    (b'data: {"finish_reason": "stop"}\n\n', False, True),
    (b'data: {"finish_reason":     "stop"}\n\n', False, True),
    (b'data: {"finish_reason":   {}}\n\n', False, True),
    (b'data: {"finish_reason":  null}\n\n', False, False),
    (b'data: {"finish_reason":\t"stop"}\n\n', False, False),  # only spaces are skipped
    (b'data: {"finish_reason" : "stop"}\n\n', False, False),  # the key is matched with its colon
    (b'data: {"finish_reason":', False, False),  # nothing after the colon
    (b'data: {"finish_reason":   ', False, False),
    (b'"finish_reason":"', False, True),
    (b'data: [{"finish_reason":null},{"finish_reason":"stop"}]\n\n', False, True),  # not the first one
    (b'data: {"finish_reason":"finish_reason":"x"}\n\n', False, True),
    (b'data: {"finish_reason":1}\n\n', False, False),
    (b'data: {"finish_reason":false}\n\n', False, False),
    (b'data: {"finish_reason":"stop"}\n\n', True, False),  # Anthropic looks for message_stop
    (b'event: message_stop\ndata: {"type":"message_stop"}\n\n', True, True),
    (b'event: message_stop\ndata: {"type":"message_stop"}\n\n', False, False),
    (b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn"}}\n\n', True, False),
    (b'message_sto', True, False),
    (b'message_stop', True, True),
    (b'xmessage_stopx', True, True),  # anywhere in the event
]


@pytest.mark.parametrize("impl", TWINS)
@pytest.mark.parametrize("payload,anthropic,finished", FINISH_CASES)
def test_finish_markers(impl, payload, anthropic, finished):
    batch = [D(payload)]
    outs, states = run(impl, [batch], anthropic)
    assert outs == [None] and states == [(False, finished)]
    assert run(Reference, [batch], anthropic) == (outs, states)


@pytest.mark.parametrize("impl", TWINS)
def test_finish_in_a_later_event_and_it_stays(impl):
    batches = [[D(CHUNK)], [D(CHUNK), D(STOP)], [D(CHUNK)]]
    assert run(impl, batches) == ([None, None, None], [(False, False), (False, True), (False, True)])


@pytest.mark.parametrize("impl", TWINS)
def test_a_marker_split_across_events_is_not_seen(impl):
    batches = [[D(b'data: {"finish_rea'), D(b'son":"stop"}\n\n')], [D(b'message_'), D(b"stop")]]
    assert run(impl, batches) == ([None, None], [(False, False), (False, False)])
    assert run(impl, batches[1:], True) == ([None], [(False, False)])


# --- spec: [DONE] ----------------------------------------------------------------------

DONE_CASES = [
    # (payload, where the event is cut (None: not done; len: kept whole))
    (b"data: [DONE]\n\n", 14),
    (b"data:[DONE]\n\n", 13),
    (b"data: [DONE]", 12),
    (b"data: [DONE]\n", 13),  # no blank line in this event: kept whole
    (b"data: [DONE]x\n\n", 15),  # only the prefix is checked
    (CHUNK + b"data: [DONE]\n\n", len(CHUNK) + 14),
    (CHUNK + b"data: [DONE]\n\ndata: late\n\n", len(CHUNK) + 14),
    (b"data: [DONE]\n\nlate bytes", 14),
    (b"data: [DONE]\n\n\n\n", 14),
    (b"data: [DONE]\nid: 1\n\nmore", 20),  # the blank line that ends the event
    (b"data: x\r\ndata: [DONE]\r\n\r\nlate", 29),  # after CRLF (an LF precedes it); no LF LF: kept whole
    (b"data: [DONE]\r\n\r\nlate", 20),  # no LF LF: kept whole
    (b"data: x\rdata: [DONE]\n\n", None),  # a lone CR does not start a line here
    (b"xdata: [DONE]\n\n", None),
    (b" data: [DONE]\n\n", None),
    (b"data:  [DONE]\n\n", None),
    (b"data: [DONE", None),
    (b"[DONE]\n\n", None),
    (b"data: [done]\n\n", None),
    (b'data: {"content":"data: [DONE]"}\n\n', None),  # inside JSON text
    (b'data: {"content":"\\ndata: [DONE]"}\n\n', None),  # an escaped newline is no line start
    (b'data: {"x":"[DONE]"}\ndata: [DONE]\n\n', 35),  # the second [DONE] is at a line start
    (b"data: [DONE][DONE]\n\n", 20),
    (b"data: x [DONE]\ndata:[DONE]\n\n", 28),
    (b"event: done\ndata: [DONE]\n\n", 26),
    (b"ta: [DONE]\n\n", None),
    (b"a: [DONE]\n\n", None),
    (b":[DONE]\n\n", None),
]


@pytest.mark.parametrize("impl", TWINS)
@pytest.mark.parametrize("payload,cut", DONE_CASES)
def test_done_lines(impl, payload, cut):
    ev = D(payload)
    batch = [ev, EOM]
    w = impl(False)
    out = w(batch)
    if cut is None:
        assert out is None and not w.done and not w.complete
    else:
        assert w.done and w.complete
        assert out[1] is EOM and len(out) == 2
        if cut == len(payload):
            assert out[0] is ev
        else:
            assert type(out[0]) is Data and out[0] is not ev and out[0].data == payload[:cut]
    assert run(Reference, [batch]) == run(impl, [batch])


@pytest.mark.parametrize("impl", TWINS)
def test_later_data_is_dropped_other_events_pass(impl):
    first = D(CHUNK)
    done = D(b"data: [DONE]\n\n")
    w = impl(False)
    assert w([HEAD, first]) is None
    out = w([first, done, D(b"data: late\n\n"), DataLike(b"data: like\n\n"), D(b"x"), EOM])
    assert out[0] is first and out[1] is done and out[2].data == b"data: like\n\n" and out[3] is EOM
    assert len(out) == 4
    later = [D(b"data: more\n\n"), HEAD, D(STOP), EOM]
    out2 = w(later)
    assert out2 == [HEAD, EOM] and out2[0] is HEAD and out2[1] is EOM
    assert w.done and not w.finished  # a finish reason after [DONE] is not looked at
    assert w([D(b"x")]) == []
    assert w([]) == []


@pytest.mark.parametrize("impl", TWINS)
def test_passing_batches_return_none(impl):
    w = impl(False)
    assert w([]) is None
    assert w([HEAD]) is None
    assert w([HEAD, D(CHUNK), D(CHUNK), EOM]) is None
    assert w([DataLike(b"data: [DONE]\n\n")]) is None  # not a Data event: not looked at
    assert not w.done


@pytest.mark.parametrize("impl", TWINS)
def test_done_at_the_end_of_a_batch_gives_a_new_list(impl):
    done = D(b"data: [DONE]\n\n")
    batch = [D(CHUNK), done]
    out = impl(False)(batch)
    assert out == batch and out is not batch and out[1] is done and out[0] is batch[0]


@pytest.mark.parametrize("impl", TWINS)
def test_finish_is_seen_in_the_done_event_even_after_the_cut(impl):
    w = impl(False)
    out = w([D(b'data: [DONE]\n\ndata: {"finish_reason":"stop"}\n\n')])
    assert out[0].data == b"data: [DONE]\n\n" and w.done and w.finished
    w = impl(True)
    w([D(b"data: [DONE]\n\nevent: message_stop\n\n")])
    assert w.done and w.finished


@pytest.mark.parametrize("impl", TWINS)
@pytest.mark.parametrize("at", range(0, 15))
def test_done_split_between_two_events(impl, at):
    stream = CHUNK + b"data: [DONE]\n\n" + b"data: late\n\n"
    k = len(CHUNK) + at
    a, b = D(stream[:k]), D(stream[k:])
    for batches in ([[a, b, EOM]], [[a], [b, EOM]]):
        got = run(impl, batches)
        assert got == run(Reference, batches)
        done_seen = at <= 0 or at >= 12  # the whole "data: [DONE]" in one of the events
        assert got[1][-1][0] == done_seen
    # what reaches the client
    w = impl(False)
    sent = b"".join(ev.data for ev in relayed([a, b, EOM], w([a, b, EOM])) if type(ev) is Data)
    if at == 0:
        assert sent == stream[:len(CHUNK) + 14]
    elif at >= 12:
        assert sent == stream[:k]  # the event with [DONE] has no blank line after it: kept whole
    else:
        assert sent == stream  # [DONE] split: not recognised, everything passes


@pytest.mark.parametrize("impl", TWINS)
def test_initial_state(impl):
    w = impl(False)
    assert (w.done, w.finished, w.complete) == (False, False, False)
    w = impl(anthropic=True)
    assert (w.done, w.finished, w.complete) == (False, False, False)


def test_native_attributes_are_read_only():
    if StreamEndC is None:
        pytest.skip("native extension not built")
    w = StreamEndC(False)
    for name in ("done", "finished", "complete"):
        with pytest.raises(AttributeError):
            setattr(w, name, True)


# --- payloads that are not bytes, and wrong arguments ----------------------------------


def _strided(b: bytes) -> memoryview:
    return memoryview(bytes(x for c in b for x in (c, 0)))[::2]  # every other byte: b


@pytest.mark.parametrize("impl", TWINS)
@pytest.mark.parametrize("make", [bytearray, memoryview, _strided], ids=["bytearray", "memoryview", "strided"])
def test_non_bytes_payloads(impl, make):
    for payload in [CHUNK, STOP, b"data: [DONE]\n\nlate", b"data: [DONE]\n\n", CHUNK + b"data:[DONE]"]:
        ev = D(make(payload))
        w, ref = impl(False), impl(False)
        out = w([ev, EOM])
        want = ref([D(payload), EOM])
        assert (w.done, w.finished) == (ref.done, ref.finished)
        if want is None:
            assert out is None
        else:
            assert len(out) == len(want) and out[-1] is EOM
            if want[0].data == payload:
                assert out[0] is ev
            else:
                assert type(out[0].data) is bytes and out[0].data == want[0].data


@pytest.mark.parametrize("impl", TWINS)
def test_type_errors(impl):
    w = impl(False)
    with pytest.raises(TypeError):
        w((D(CHUNK),))
    with pytest.raises(TypeError):
        w(None)
    with pytest.raises(TypeError):
        w([D("data: [DONE]\n\n")])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        w([D(None)])  # type: ignore[arg-type]
    assert not w.done
    assert w([D(CHUNK)]) is None  # still usable


# --- generated streams: reference == twin == native -------------------------------------

_finish_value = st.sampled_from([b'"stop"', b'"length"', b"null", b'{"type":"x"}', b"1", b"false", b'"'])
_spaces = st.sampled_from([b"", b" ", b"   ", b"\t"])


@st.composite
def _chunk(draw) -> bytes:
    content = draw(st.sampled_from([b"a", b"[DONE]", b"data: [DONE]", b"\\ndata: [DONE]", b"message_stop",
                                    b""]))
    finish = draw(_finish_value)
    return (b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"' + content + b'"},"finish_reason":'
            + draw(_spaces) + finish + b"}]}")


_line = st.one_of(
    _chunk(),
    st.sampled_from([b"data: [DONE]", b"data:[DONE]", b"data:  [DONE]", b"data: [DONE]x", b"xdata: [DONE]",
                     b"event: message_stop", b'data: {"type":"message_stop"}', b"event: ping", b"data: late",
                     b": comment", b"[DONE]", b"data: [DON", b'"finish_reason":"stop"', b"id: 1"]),
    st.binary(max_size=10),
)
_terminator = st.sampled_from([b"\n\n", b"\n\n", b"\n\n", b"\n", b"\r\n\r\n", b"\r", b""])


@st.composite
def _stream(draw) -> bytes:
    parts = draw(st.lists(st.tuples(_line, _terminator), max_size=12))
    return b"".join(line + term for line, term in parts)


def _cut(stream: bytes, cuts: list) -> list:
    idx = sorted({c for c in cuts if 0 < c < len(stream)})
    pieces, prev = [], 0
    for c in idx + [len(stream)]:
        pieces.append(stream[prev:c])
        prev = c
    return [p for p in pieces if p]  # Data events are never empty


@st.composite
def _batches(draw) -> tuple:
    stream = draw(_stream())
    pieces = _cut(stream, draw(st.lists(st.integers(0, max(len(stream), 1)), max_size=10)))
    events: list = [HEAD]
    for p in pieces:
        events.append(D(p))
        if draw(st.integers(0, 9)) == 0:
            events.append(draw(st.sampled_from([EOM, HEAD, DataLike(b"data: like\n\n")])))
    events.append(EOM)
    splits = sorted(set(draw(st.lists(st.integers(0, len(events)), max_size=6))))
    batches, prev = [], 0
    for s in splits + [len(events)]:
        batches.append(events[prev:s])
        prev = s
    return stream, batches


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gen=_batches(), anthropic=st.booleans())
def test_generated_streams_match_the_reference(gen, anthropic):
    _, batches = gen
    want = run(Reference, batches, anthropic)
    for cls in IMPLS:
        assert run(cls, batches, anthropic) == want, cls


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=_stream(), cuts=st.lists(st.integers(0, 400), max_size=10), anthropic=st.booleans())
def test_one_event_per_batch_c_equals_py(stream, cuts, anthropic):
    if StreamEndC is None:
        pytest.skip("native extension not built")
    batches = [[D(p)] for p in _cut(stream, cuts)] + [[EOM]]
    assert run(StreamEndC, batches, anthropic) == run(StreamEndPy, batches, anthropic)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=st.binary(max_size=64) | _stream(), anthropic=st.booleans())
def test_arbitrary_bytes(payload, anthropic):
    if not payload:
        return
    batch = [D(payload), D(b"data: after\n\n"), EOM]
    want = run(Reference, [batch], anthropic)
    for cls in IMPLS:
        assert run(cls, [batch], anthropic) == want


# --- selector ---------------------------------------------------------------------------


def test_selector_exports():
    assert sse_selector.StreamEndPy is StreamEndPy
    if _native.NO_EXTENSIONS:
        assert StreamEndC is None
    assert sse_selector.StreamEnd is (StreamEndC or StreamEndPy)
    from smg.server import transforms

    assert transforms.StreamEnd is sse_selector.StreamEnd


@pytest.mark.skipif(
    os.environ.get("SMG_REQUIRE_EXTENSIONS", "") in ("", "0"),
    reason="only meaningful when SMG_REQUIRE_EXTENSIONS=1",
)
def test_require_extensions_selects_native():
    assert StreamEndC is not None
    assert sse_selector.StreamEnd is StreamEndC


@pytest.mark.skipif(StreamEndC is None, reason="native extension not built")
def test_require_extensions_selects_native_subprocess():
    env = {k: v for k, v in os.environ.items() if k != "SMG_NO_EXTENSIONS"}
    env["SMG_REQUIRE_EXTENSIONS"] = "1"
    code = "import smg.streaming.sse as m; assert m.StreamEnd is m.StreamEndC; print(m.StreamEnd.__module__)"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    res = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "smg._native.sse"


# --- the exchange's use: for_response picks the family ----------------------------------


@pytest.mark.parametrize("anthropic", [False, True])
def test_for_response_passes_the_family(anthropic):
    from smg.api.errors import ANTHROPIC, OPENAI
    from smg.server import transforms

    class Endpoint:
        generative = True

    class Ctx:
        is_sse = True
        endpoint = Endpoint()
        family = ANTHROPIC if anthropic else OPENAI

    trs, end = transforms.for_response(Ctx(), 200, -1, False, 0)
    assert trs == (end,) and type(end) is sse_selector.StreamEnd
    end([D(STOP), D(b"event: message_stop\n\n")])
    assert end.finished  # both markers were in the batch; the family picks which counts
    end2 = transforms.for_response(Ctx(), 200, -1, False, 0)[1]
    end2([D(STOP)])
    assert end2.finished is (not anthropic)
