"""Chaos run: continuous load through a gateway while mock workers crash and restart.

Workers are stopped abruptly (every connection reset, the listener gone) and brought
back on the same port after a random pause; at least one worker is always up. Each
client request counts as a failure when it did not get a 200: since a healthy worker
existed at every moment, every failure is one the gateway should have avoided.
Streams cut mid-way by a crash cannot be saved by any gateway (the answer was already
committed); they are reported apart.
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

from smg.testing.harness import GatewayHarness
from smg.testing.mock_worker import MockConfig, MockWorker

CHAT = b'{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}'
STREAM = b'{"model":"mock-model","stream":true,"messages":[{"role":"user","content":"hi"}]}'


@dataclass
class ChaosResult:
    requests: int = 0
    failures: int = 0
    streams: int = 0
    streams_cut: int = 0
    kills: int = 0
    statuses: dict = field(default_factory=dict)


def _request(port: int, body: bytes, timeout: float = 15.0) -> tuple:
    """(status, complete) for one request on a fresh connection; (0, False) on a transport error."""
    import socket

    import h11

    raw = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(raw)
            conn = h11.Connection(h11.CLIENT)
            conn.send(h11.Request(method="POST", target="/", headers=[("host", "x"), ("content-length", "0")]))
            conn.send(h11.EndOfMessage())
            status, chunks = 0, []
            while True:
                ev = conn.next_event()
                if ev is h11.NEED_DATA:
                    data = s.recv(65536)
                    if not data:
                        return status, False
                    conn.receive_data(data)
                elif isinstance(ev, h11.Response):
                    status = ev.status_code
                elif isinstance(ev, h11.Data):
                    chunks.append(ev.data)
                elif isinstance(ev, h11.EndOfMessage):
                    body = b"".join(chunks)
                    complete = not body.startswith(b"data:") or body.rstrip().endswith(b"data: [DONE]")
                    return status, complete
    except (OSError, h11.RemoteProtocolError):
        return 0, False


def run_chaos(duration: float = 5.0, workers: int = 4, clients: int = 8, kill_every: float = 0.3,
              down_for: tuple = (0.1, 0.6), stream_share: float = 0.25, seed: int = 1,
              **gateway_settings) -> ChaosResult:
    rng = random.Random(seed)
    settings = dict(health_check_interval_secs=0.2, worker_startup_check_interval=0.1,
                    health_failure_threshold=1, health_success_threshold=1, retry_initial_backoff_ms=5,
                    retry_max_backoff_ms=200, cb_failure_threshold=3, cb_timeout_duration_secs=1.0)
    settings.update(gateway_settings)
    result = ChaosResult()
    lock = threading.Lock()
    with GatewayHarness(workers=[MockConfig(worker_id=f"w{i}", num_chunks=8, token_delay=0.002)
                                 for i in range(workers)], **settings) as h:
        ports = [w.port for w in h.workers]
        live = list(h.workers)
        stop_at = time.monotonic() + duration

        def client(i: int) -> None:
            r = random.Random(seed * 1000 + i)
            while time.monotonic() < stop_at:
                is_stream = r.random() < stream_share
                status, complete = _request(h.port, STREAM if is_stream else CHAT)
                with lock:
                    result.requests += 1
                    result.statuses[status] = result.statuses.get(status, 0) + 1
                    if is_stream:
                        result.streams += 1
                    if status != 200:
                        result.failures += 1
                    elif not complete:
                        result.streams_cut += 1

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
        for t in threads:
            t.start()
        while time.monotonic() < stop_at:
            time.sleep(kill_every)
            up = [w for w in live if w is not None]
            if len(up) <= 1:
                continue
            victim = rng.choice(up)
            idx = live.index(victim)
            h.run(victim.stop())
            live[idx] = None
            result.kills += 1
            pause = rng.uniform(*down_for)

            def revive(idx=idx, pause=pause):
                time.sleep(pause)
                w = h.run(MockWorker(MockConfig(worker_id=f"w{idx}", num_chunks=8, token_delay=0.002))
                          .start("127.0.0.1", ports[idx]))
                live[idx] = w
                h.workers[idx] = w

            threading.Thread(target=revive, daemon=True).start()
        for t in threads:
            t.join(30)
        time.sleep(max(down_for) + 0.2)  # let revivals finish before the harness stops the workers
    return result
