"""A filter's end hook (an admission permit, a rate-limit reservation) runs exactly once
per request, whatever way the request ends: answered, refused, failed by the worker,
or abandoned by the client (the in-memory request path, no sockets)."""
from __future__ import annotations

from smg.errors import UpstreamClosed
from smg.observability.metrics import exposition
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


def _raising(conn, ctx):
    def boom(c):
        raise RuntimeError("a stage's bug")
    ctx.add_end_hook(boom)
    return None


def test_a_failing_hook_does_not_keep_the_admission_permit(caplog):
    # the default limiter holds a permit per request; a hook added before it, and one
    # after it, both raise: the permit still comes back, every time
    pb = PathBench(metrics=True, access_log=False, max_concurrent_requests=2, queue_size=0)
    admission = pb.gw.admission
    route = pb.gw.routes.exact[b"/v1/chat/completions"]
    i = route.chain.index(admission)
    route.chain = route.chain[:i] + (_raising, admission, _raising) + route.chain[i + 1:]
    with caplog.at_level("ERROR", logger="smg.server"):
        for _ in range(5):  # more requests than permits: none would be admitted if one leaked
            pb.one()
    core = admission.core
    assert core.available(pb.gw.now) == core.capacity == 2 and admission.idle()
    assert pb.worker.processed == 5
    failed = [r for r in caplog.records if "end hook" in r.getMessage()]
    assert len(failed) == 10 and all(r.exc_info and "a stage's bug" in str(r.exc_info[1]) for r in failed)
    pb.close()


def test_a_failing_single_hook_is_logged_and_the_request_still_recorded(caplog):
    pb = PathBench(metrics=True, access_log=False, max_concurrent_requests=0)
    route = pb.gw.routes.exact[b"/v1/chat/completions"]
    route.chain = (_raising,) + route.chain
    with caplog.at_level("ERROR", logger="smg.server"):
        pb.one()
        pb.one()
    assert len([r for r in caplog.records if "end hook" in r.getMessage()]) == 2
    text = exposition(pb.gw.metrics.registry()).decode()
    assert 'smg_http_requests_total{method="POST",path="/v1/chat/completions"} 2' in text  # the observer ran
    pb.close()
