"""The HTTP/2 flood guard (smg/server/h2_guard.py) over byte streams built by the
hyperframe library: frame sizes, header-block bounds, reset/PING/SETTINGS windows,
and the same verdicts whatever way the bytes are split into reads."""
from __future__ import annotations

import pytest
from hyperframe.frame import (ContinuationFrame, DataFrame, HeadersFrame, PingFrame, RstStreamFrame,
                              SettingsFrame, WindowUpdateFrame)

from smg.server import h2_guard
from smg.server.h2_guard import FrameGuard

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def guard(**kw) -> FrameGuard:
    args = dict(max_frame_size=16384, max_header_list_size=4096, window_secs=10.0, max_resets=5,
                max_pings=3, max_settings=2)
    args.update(kw)
    return FrameGuard(**args)


def feed_split(g: FrameGuard, data: bytes, step: int, now: float = 1.0):
    """Feeds ``data`` in reads of ``step`` bytes; the first verdict that is not None."""
    for i in range(0, len(data), step):
        v = g.feed(data[i:i + step], now)
        if v is not None:
            return v
    return None


def headers(sid: int, block: bytes, end_headers: bool = True, end_stream: bool = True) -> bytes:
    f = HeadersFrame(sid, data=block)
    if end_headers:
        f.flags.add("END_HEADERS")
    if end_stream:
        f.flags.add("END_STREAM")
    return f.serialize()


def pings(n: int, ack: bool = False) -> bytes:
    out = []
    for i in range(n):
        f = PingFrame(0, opaque_data=b"%08d" % i)
        if ack:
            f.flags.add("ACK")
        out.append(f.serialize())
    return b"".join(out)


def resets(n: int) -> bytes:
    return b"".join(RstStreamFrame(2 * i + 1, error_code=8).serialize() for i in range(n))


def ordinary_traffic() -> bytes:
    """A well-behaved connection: settings, a request with a body, window updates."""
    return (PREFACE + SettingsFrame(0, settings={4: 65535}).serialize() + headers(1, b"x" * 100, end_stream=False)
            + DataFrame(1, data=b"y" * 16384).serialize() + DataFrame(1, data=b"z" * 10, flags=["END_STREAM"]).serialize()
            + WindowUpdateFrame(0, window_increment=1000).serialize() + pings(2, ack=True))


@pytest.mark.parametrize("step", [1, 7, 9, 10, 100, 100000])
def test_ordinary_traffic_passes_whatever_the_read_sizes(step):
    g = guard()
    assert feed_split(g, ordinary_traffic(), step) is None
    assert g.skip == 0 and g.partial == b"" and not g.in_header_block


def test_an_over_long_frame_is_refused_at_its_header():
    g = guard()
    # only the 9-byte header of a frame claiming 1 MiB: no payload needs to arrive
    head = (1 << 20).to_bytes(3, "big") + bytes([0, 0]) + (1).to_bytes(4, "big")
    assert g.feed(PREFACE + head, 1.0) == h2_guard.FRAME_SIZE


def test_frame_size_limit_is_the_configured_one():
    g = guard(max_frame_size=32768)
    assert g.feed(PREFACE + DataFrame(1, data=b"a" * 20000).serialize(), 1.0) is None
    g = guard()
    assert g.feed(PREFACE + DataFrame(1, data=b"a" * 20000).serialize(), 1.0) == h2_guard.FRAME_SIZE


@pytest.mark.parametrize("step", [1, 13, 100000])
def test_continuation_flood_is_bounded_in_bytes(step):
    g = guard(max_header_list_size=4096)
    data = PREFACE + headers(1, b"h" * 100, end_headers=False)
    # empty CONTINUATION frames: each costs its 9-byte header against the bound
    data += b"".join(ContinuationFrame(1, data=b"").serialize() for _ in range(600))
    assert feed_split(g, data, step) == h2_guard.HEADER_BLOCK


def test_a_header_block_within_the_bound_passes_and_closes():
    g = guard(max_header_list_size=4096)
    data = PREFACE + headers(1, b"h" * 1000, end_headers=False)
    data += ContinuationFrame(1, data=b"c" * 1000).serialize()
    assert g.feed(data, 1.0) is None and g.in_header_block and g.block_since == 1.0
    last = ContinuationFrame(1, data=b"c" * 1000)
    last.flags.add("END_HEADERS")
    assert g.feed(last.serialize(), 2.0) is None and not g.in_header_block


def test_one_oversized_headers_frame_is_refused():
    g = guard(max_header_list_size=1024, max_frame_size=16384)
    assert g.feed(PREFACE + headers(1, b"h" * 8000), 1.0) == h2_guard.HEADER_BLOCK


@pytest.mark.parametrize("kind, frames, limit_name", [
    (h2_guard.RAPID_RESET, resets, "max_resets"),
    (h2_guard.PING_FLOOD, pings, "max_pings"),
    (h2_guard.SETTINGS_FLOOD, lambda n: SettingsFrame(0, settings={3: 100}).serialize() * n, "max_settings"),
])
def test_counted_frames_pass_up_to_the_limit_then_end_the_connection(kind, frames, limit_name):
    limit = {"max_resets": 5, "max_pings": 3, "max_settings": 2}[limit_name]
    g = guard()
    assert g.feed(PREFACE + frames(limit), 1.0) is None
    assert g.feed(frames(1), 1.5) == kind


def test_the_count_starts_again_in_a_new_window():
    g = guard(window_secs=10.0)
    assert g.feed(PREFACE + pings(3), 1.0) is None
    assert g.feed(pings(3), 11.5) is None       # a new window: three more are fine
    assert g.feed(pings(1), 12.0) == h2_guard.PING_FLOOD


def test_acks_are_not_counted():
    g = guard()
    acks = pings(50, ack=True) + b"".join(SettingsFrame(0, flags=["ACK"]).serialize() for _ in range(50))
    assert g.feed(PREFACE + acks, 1.0) is None


def test_a_frame_header_split_across_reads_is_still_checked():
    g = guard()
    head = (1 << 20).to_bytes(3, "big") + bytes([0, 0]) + (1).to_bytes(4, "big")
    assert g.feed(PREFACE + head[:4], 1.0) is None
    assert g.feed(head[4:], 1.0) == h2_guard.FRAME_SIZE
