"""Limits that were literals and are now settings change what the gateway does (the
in-memory request path of smg.testing.pathbench, no sockets)."""
from __future__ import annotations

from smg.observability.metrics import exposition
from smg.testing.pathbench import _BODY, REQUEST, RESPONSE, PathBench


def tokens(pb: PathBench) -> float:
    text = exposition(pb.gw.metrics.registry()).decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("smg_router_tokens_total{"))


def test_usage_body_limit_decides_whether_usage_is_read():
    pb = PathBench(True, False)
    pb.one()
    assert tokens(pb) == 13.0                          # 5 prompt + 8 completion tokens
    pb.close()
    pb = PathBench(True, False, usage_body_limit=len(_BODY) - 1)
    pb.one()
    assert tokens(pb) == 0.0                           # the answer is larger: not kept, not read
    pb.close()


def test_max_upstream_header_size_bounds_a_worker_head():
    big = RESPONSE.replace(b"x-mock-worker: w1\r\n", b"x-mock-worker: " + b"w" * 3000 + b"\r\n")
    for limit, status in ((65536, b"200"), (2048, b"502")):
        pb = PathBench(False, False, max_upstream_header_size=limit, retry_max_retries=1)
        pb.proto.data_received(REQUEST)
        pb.conn.data_received(big)
        out = b"".join(pb.client.out)
        assert out.startswith(b"HTTP/1.1 " + status), (limit, out[:120])
        assert pb.worker.inflight == 0
        pb.close()


def test_pipeline_queue_limit_pauses_reading():
    for limit, paused in ((64, False), (2, True)):
        pb = PathBench(False, False, pipeline_queue_limit=limit)
        calls = []
        pb.client.pause_reading = lambda: calls.append("pause")
        pb.proto.data_received(REQUEST * 4)            # one answered, three queued (6+ events)
        assert pb.proto.read_paused is paused and (calls == ["pause"]) is paused
        pb.close()
