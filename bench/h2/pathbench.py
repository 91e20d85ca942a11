#!/usr/bin/env python3
"""The gateway's HTTP/2 request path on in-memory transports, against the HTTP/1.1 one.

Like ``smg.testing.pathbench`` (which drives HTTP/1.1): no sockets, no event-loop
turns. The client's bytes are made beforehand by an ``h2`` client (prior knowledge,
``--batch`` requests per read, as ``h2load -m 10`` sends them; windows opened as
h2load opens them), so only the gateway's work is timed: client bytes →
H2ServerConnection → streams → filters → selection → Exchange → Http1Leg → worker
connections → response frames.

    python bench/h2/pathbench.py                      # us per request, h1 and h2, both answers
    python bench/h2/pathbench.py --profile h2/plain   # cProfile of the h2 path, by own time
    python bench/h2/pathbench.py --callgrind          # instructions per request (valgrind)

``--callgrind`` counts as bench/callgrind.py does (runs of N and 3N requests
differenced), for h1 and h2.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from h2.config import H2Configuration  # noqa: E402
from h2.connection import H2Connection  # noqa: E402
from h2.events import DataReceived  # noqa: E402
from h2.settings import SettingCodes, Settings  # noqa: E402

from smg.testing import pathbench as p1  # noqa: E402
from smg.upstream.connection import UpstreamConnection  # noqa: E402

_CHAT = b'{"model":"mock-model","messages":[{"role":"user","content":"hello"}]}'
# what h2load sends (its default headers), plus the body's type
_HEADERS = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"127.0.0.1:8080"),
            (b":path", b"/v1/chat/completions"), (b"user-agent", b"h2load nghttp2/1.52.0"),
            (b"content-type", b"application/json"), (b"content-length", b"%d" % len(_CHAT))]
_WINDOW = 2**30 - 1  # h2load's -w 30 / -W 30


class Transport(p1.MemoryTransport):
    def __init__(self) -> None:
        super().__init__()
        self.protocol = None

    def set_protocol(self, protocol) -> None:
        self.protocol = protocol

    def get_write_buffer_size(self) -> int:
        return 0


class _Handle:
    __slots__ = ()

    def cancel(self) -> None:
        pass


class Loop:
    """The one loop method the HTTP/2 connection calls (a deferred flush), run by hand."""

    def __init__(self) -> None:
        self.ready: list = []

    def call_soon(self, cb, *args):
        self.ready.append((cb, args))
        return _Handle()

    def run(self) -> None:
        ready = self.ready
        while ready:
            self.ready = []
            for cb, args in ready:
                cb(*args)
            ready = self.ready


def client_reads(batches: int, batch: int) -> list:
    """The client's bytes, one item a read: the preface and SETTINGS, then ``batches``
    reads of ``batch`` requests (HEADERS + DATA with END_STREAM each)."""
    c = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    c.local_settings = Settings(client=True, initial_values={SettingCodes.INITIAL_WINDOW_SIZE: _WINDOW,
                                                             SettingCodes.ENABLE_PUSH: 0})
    c.initiate_connection()
    c.increment_flow_control_window(_WINDOW - 65535)
    # a server that takes everything, giving the window back, so the client can go on
    s = H2Connection(H2Configuration(client_side=False, header_encoding=None))
    s.local_settings = Settings(client=False, initial_values={SettingCodes.MAX_CONCURRENT_STREAMS: 100})
    s.initiate_connection()
    reads = []
    first = c.data_to_send()
    s.receive_data(first)
    c.receive_data(s.data_to_send())
    reads.append(first + c.data_to_send())
    s.receive_data(reads[-1][len(first):])
    sid = 1
    for _ in range(batches):
        for _ in range(batch):
            c.send_headers(sid, _HEADERS)
            c.send_data(sid, _CHAT, end_stream=True)
            sid += 2
        data = c.data_to_send()
        for ev in s.receive_data(data):
            if type(ev) is DataReceived:
                s.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        c.receive_data(s.data_to_send())
        reads.append(data + c.data_to_send())
        # close the generator's streams so that neither side hits the stream limit
        for st in list(s.streams):
            s.streams.pop(st)
        for st in list(c.streams):
            c.streams.pop(st)
    return reads


class H2PathBench(p1.PathBench):
    """One gateway, one worker with ``batch`` pooled connections, one HTTP/2 client
    connection sending ``batch`` requests a read."""

    def __init__(self, metrics: bool, access_log: bool, batches: int, batch: int = 10, **settings) -> None:
        # made first: the pooled connections must not sit idle past the pool's timeout
        self.reads = client_reads(batches, batch)
        super().__init__(metrics, access_log, **settings)
        pool = self.worker.pool
        self.conns = [self.conn]
        for _ in range(batch - 1):
            c = UpstreamConnection(pool)
            c.connection_made(p1.MemoryTransport())
            pool.open += 1
            pool.put(c)
            self.conns.append(c)
        self.batch = batch
        self.i = 1
        self.fake_loop = Loop()
        self.client = Transport()
        self.proto.connection_made(self.client)
        self.proto.data_received(self.reads[0])   # preface: hands over to H2ServerConnection
        self.h2 = self.client.protocol
        self.h2.loop = self.fake_loop
        self.client.out.clear()

    def many(self, response: bytes = p1.RESPONSE) -> None:
        """``batch`` proxied requests on one HTTP/2 connection, start to end."""
        self.h2.data_received(self.reads[self.i])
        self.i += 1
        self.fake_loop.run()
        for c in self.conns:
            t = c.transport
            if t.out:
                t.out.clear()
                c.data_received(response)
        self.fake_loop.run()
        if not self.client.out:
            raise SystemExit("the gateway sent nothing back")
        self.client.out.clear()
        self.n += self.batch
        if self.gw.access_log is not None and self.n % 64 < self.batch:
            self.gw.access_log.flush()
            self.log.seek(0)
            self.log.truncate()

    def many_stream(self) -> None:
        self.many(p1.STREAM_RESPONSE)


def _bench(proto: str, answer: str, n: int, metrics: bool, batch: int):
    """Returns (bench, the function doing one step, requests per step)."""
    if proto == "h1":
        b = p1.PathBench(metrics, metrics)
        return b, (b.one if answer == "plain" else b.one_stream), 1
    b = H2PathBench(metrics, metrics, n // batch + 60, batch)
    return b, (b.many if answer == "plain" else b.many_stream), batch


def time_case(proto: str, answer: str, n: int, metrics: bool, batch: int, repeat: int = 5) -> float:
    """Best-of-``repeat`` microseconds per request."""
    best = None
    for _ in range(repeat):
        b, f, per = _bench(proto, answer, n, metrics, batch)
        for _ in range(50 // per + 1):
            f()
        steps = n // per
        t0 = time.perf_counter()
        for _ in range(steps):
            f()
        us = (time.perf_counter() - t0) / (steps * per) * 1e6
        b.close()
        best = us if best is None else min(best, us)
    return best


_CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
from pathbench import _bench
proto, answer, n, batch = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
b, f, per = _bench(proto, answer, 3000, False, batch)
for _ in range(200 // per):
    f()
for _ in range(n // per):
    f()
"""


def callgrind(proto: str, answer: str, n: int, batch: int) -> float:
    counts = []
    for k in (n, 3 * n):
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "cg.out")
            cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-c", _CHILD,
                   str(Path(__file__).parent), proto, answer, str(k), str(batch)]
            p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONHASHSEED="0"),
                               timeout=1800)
            m = re.search(r"Collected\s*:\s*(\d+)", p.stderr)
            if p.returncode or m is None:
                raise SystemExit(f"callgrind run failed:\n{p.stderr[-3000:]}")
            counts.append(int(m.group(1)))
    return (counts[1] - counts[0]) / (2 * n)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000, help="requests per timed run")
    ap.add_argument("--batch", type=int, default=10, help="HTTP/2 requests per client read")
    ap.add_argument("--metrics", action="store_true", help="metrics and access log on")
    ap.add_argument("--profile", metavar="PROTO/ANSWER", help="cProfile one case (h2/plain, h1/stream, ...)")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--callgrind", action="store_true", help="instructions per request instead of time")
    ap.add_argument("--cases", default="h1/plain,h2/plain,h1/stream,h2/stream")
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args()
    if a.profile:
        import cProfile
        import pstats
        proto, answer = a.profile.split("/")
        b, f, per = _bench(proto, answer, a.n, a.metrics, a.batch)
        for _ in range(50 // per + 1):
            f()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(a.n // per):
            f()
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(a.top)
        return 0
    res = {}
    cases = a.cases.split(",")
    for answer in ("plain", "stream"):
        for proto in ("h1", "h2"):
            if f"{proto}/{answer}" not in cases:
                continue
            if a.callgrind:
                v = callgrind(proto, answer, a.n // 3 // a.batch * a.batch, a.batch)
                print(f"{proto}/{answer}: {v / 1000:.1f}k instructions per request", flush=True)
            else:
                v = time_case(proto, answer, a.n, a.metrics, a.batch)
                print(f"{proto}/{answer}: {v:.1f} us per request", flush=True)
            res[f"{proto}/{answer}"] = v
        if f"h1/{answer}" in res and f"h2/{answer}" in res:
            print(f"  {answer}: h2/h1 cost {res[f'h2/{answer}'] / res[f'h1/{answer}']:.2f}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
