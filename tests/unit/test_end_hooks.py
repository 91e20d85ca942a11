"""A filter's end hook (an admission permit, a rate-limit reservation) runs exactly once
per request, whatever way the request ends: answered, refused, failed by the worker,
or abandoned by the client (the in-memory request path, no sockets)."""
from __future__ import annotations

from smg.errors import UpstreamClosed
from smg.testing.pathbench import REQUEST, RESPONSE, PathBench


def bench_with_hook():
    pb = PathBench(metrics=True, access_log=False)
    ended = []

    def hold(conn, ctx):
        ctx.add_end_hook(lambda c: ended.append(c.status))
        return None

    route = pb.gw.routes.exact[b"/v1/chat/completions"]
    route.chain = (hold,) + route.chain
    return pb, ended


def test_answered_request_runs_its_hook_once():
    pb, ended = bench_with_hook()
    pb.one()
    pb.one()
    assert ended == [200, 200]
    pb.close()


def test_refused_request_runs_its_hook_once():
    pb, ended = bench_with_hook()
    bad = REQUEST.replace(b'"messages":[', b'"messages_":[')
    pb.proto.data_received(bad)
    assert b"HTTP/1.1 400" in b"".join(pb.client.out) and ended == [400]
    pb.close()


def test_client_gone_mid_answer_runs_its_hook_once():
    pb, ended = bench_with_hook()
    pb.proto.data_received(REQUEST)
    head, _, _ = RESPONSE.partition(b"\r\n\r\n")
    pb.conn.data_received(head + b"\r\n\r\n" + b"{")
    pb.proto.connection_lost(None)
    assert ended == [499] and pb.worker.inflight == 0
    pb.proto.connection_lost(None)  # a second report of the same loss changes nothing
    assert ended == [499]
    pb.close()


def test_worker_failing_mid_answer_runs_its_hook_once():
    pb, ended = bench_with_hook()
    pb.proto.data_received(REQUEST)
    head, _, _ = RESPONSE.partition(b"\r\n\r\n")
    pb.conn.data_received(head + b"\r\n\r\n" + b"{")
    pb.conn.owner.on_upstream_error(UpstreamClosed("reset"))
    pb.proto.connection_lost(None)
    assert ended == [200] and pb.worker.inflight == 0
    pb.close()
