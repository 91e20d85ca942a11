"""Admission through a running gateway, with slow mock workers: the legacy limiter's
429 and 408 under real overload, every slot back after a thousand requests of which
some leave mid-stream and some mid-queue; the priority scheduler's order under
contention, its 429/408, preemption of a request that has sent nothing (and not of
one that is streaming), capacity from the workers' load reports, and the metrics."""
from __future__ import annotations

import socket
import struct
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import orjson
from prometheus_client.parser import text_string_to_metric_families

from smg.admission import scheduler as S
from smg.workers.worker import READY
from smg.testing.mock_worker import MockConfig
from tests.helpers import wait_for

from . import rawhttp

MODEL = b'"model":"mock-model","messages":[{"role":"user","content":"hi"}]'


def chat(priority: bytes | None = None, stream: bool = False) -> bytes:
    body = b"{" + MODEL + (b',"stream":true' if stream else b"") + b"}"
    extra = b"x-smg-priority: %s\r\n" % priority if priority else b""
    return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n%s\r\n%s" % (len(body), extra, body))


def call(port: int, raw: bytes):
    """(status, headers, body) of one request on its own connection."""
    return rawhttp.request(port, raw)[0]


def code(body: bytes) -> str:
    return orjson.loads(body)["error"]["code"]


def scrape(h) -> dict:
    with urllib.request.urlopen(h.metrics_url, timeout=5) as r:
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def val(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0)


def stage_of(h):
    return h.gw.admission


def idle(h) -> bool:
    return h.on_loop(lambda: stage_of(h).idle() and sum(w.inflight for w in h.gw.registry.all()) == 0)


def rst_close(s: socket.socket) -> None:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def scheduler_yaml(tmp_path, **classes) -> str:
    """Reservations off (so a capacity of 1 is valid), then per-class overrides."""
    lines = ["classes:"]
    for name in S.CLASS_NAMES:
        fields = {"reserved_floor": 0, "reserved_per_slot": 0.0, **classes.get(name, {})}
        lines.append(f"  {name}: {{{', '.join(f'{k}: {str(v).lower()}' for k, v in fields.items())}}}")
    path = tmp_path / "priority.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


# -- the legacy limiter ---------------------------------------------------------------


def test_overload_answers_429_at_once_and_408_after_the_queue_timeout(make_gateway):
    h = make_gateway(workers=[MockConfig(ttft=2.0)], max_concurrent_requests=2, queue_size=2, queue_timeout_secs=0.5)
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda _: call(h.port, chat()), range(5)))
    statuses = Counter(st for st, _, _ in answers)
    assert statuses == {200: 2, 408: 2, 429: 1}
    (refused,) = [a for a in answers if a[0] == 429]
    assert code(refused[2]) == "admission_queue_full" and refused[1]["retry-after"] == "1"
    assert all(code(b) == "queue_timeout" for st, _, b in answers if st == 408)
    m = scrape(h)
    assert val(m, "smg_http_rate_limit_total", result="allowed") == 2
    assert val(m, "smg_http_rate_limit_total", result="rejected") == 3
    assert val(m, "smg_http_responses_total", path="/v1/chat/completions", status_code="429",
               error_code="admission_queue_full") == 1
    assert wait_for(lambda: idle(h))


def test_queue_size_zero_refuses_at_once(make_gateway):
    h = make_gateway(workers=[MockConfig(ttft=1.0)], max_concurrent_requests=1, queue_size=0)
    first = threading.Thread(target=call, args=(h.port, chat()))
    first.start()
    assert wait_for(lambda: h.workers[0].stats.paths.get("/v1/chat/completions", 0) == 1)
    st, hdrs, body = call(h.port, chat())
    assert st == 429 and code(body) == "admission_queue_full" and hdrs["retry-after"] == "1"
    first.join(10)
    assert wait_for(lambda: idle(h))


PRIORITIES = (None, b"bulk", b"default", b"interactive", b"system")


def _client(port: int, i: int, mixed: bool) -> str:
    """One of the thousand: most complete (streamed or not); every fifth leaves
    mid-stream, every seventh right after sending (mid-queue when the slots are taken).
    ``mixed``: priorities vary, and a request may be preempted before its first byte."""
    prio = PRIORITIES[i % 5 if i % 3 else 0] if mixed else None
    if i % 5 == 0:
        s = rawhttp.connect(port)
        s.sendall(chat(prio, stream=True))
        got = b""
        while b"data:" not in got:
            d = s.recv(65536)
            if not d:
                return "closed"
            got += d
            if b"\r\n\r\n" in got and not got.startswith(b"HTTP/1.1 200"):
                assert mixed and b"scheduler_preempted" in got, got
                s.close()
                return "preempted"
        rst_close(s)
        return "left mid-stream"
    if i % 7 == 0:
        s = rawhttp.connect(port)
        s.sendall(chat(prio))
        time.sleep(0.01)
        rst_close(s)
        return "left early"
    st, _, body = call(port, chat(prio, stream=i % 2 == 0))
    if st == 503 and mixed and code(body) == "scheduler_preempted":
        return "preempted"
    assert st == 200, (st, body)
    return "complete"


def _thousand(h, mixed: bool = False) -> Counter:
    with ThreadPoolExecutor(32) as pool:
        return Counter(pool.map(lambda i: _client(h.port, i, mixed), range(1000)))


def test_after_a_thousand_requests_with_clients_leaving_every_slot_is_back(make_gateway):
    workers = [MockConfig(ttft=0.005, token_delay=0.01, num_chunks=8, worker_id=f"w{i}") for i in range(2)]
    h = make_gateway(workers=workers, max_concurrent_requests=16, queue_size=64, queue_timeout_secs=30)
    kinds = _thousand(h)
    assert kinds["complete"] == 1000 - 200 - 114 and kinds["left mid-stream"] == 200
    assert wait_for(lambda: idle(h), timeout=20)
    stage = stage_of(h)
    assert h.on_loop(lambda: stage.core.available(h.gw.now)) == stage.core.capacity == 16
    assert h.on_loop(lambda: stage.left) > 0                            # some left while queued
    assert sum(w.stats.cancelled for w in h.workers) > 0                # some left mid-stream
    assert val(scrape(h), "smg_http_rate_limit_total", result="rejected") == 0


# -- the priority scheduler -----------------------------------------------------------


def test_the_scheduler_gives_every_slot_back_after_a_thousand_requests(make_gateway, tmp_path):
    workers = [MockConfig(ttft=0.005, token_delay=0.01, num_chunks=8, worker_id=f"w{i}") for i in range(2)]
    h = make_gateway(workers=workers, priority_scheduler_enabled=True, worker_capacity_override=16,
                     priority_scheduler_default_max_class="system",
                     priority_scheduler_config=scheduler_yaml(tmp_path, default={"queue_size": 64}))
    kinds = _thousand(h, mixed=True)
    assert kinds["closed"] == 0 and kinds["complete"] > 0 and kinds["preempted"] > 0, kinds
    assert wait_for(lambda: idle(h), timeout=20)
    m = scrape(h)
    assert sum(val(m, "smg_scheduler_admit_total", **{"class": c, "outcome": "client_cancelled"})
               for c in S.CLASS_NAMES) > 0                                # some left while queued
    assert sum(w.stats.cancelled for w in h.workers) > 0                 # some left mid-stream
    for c in S.CLASS_NAMES:
        assert val(m, "smg_scheduler_inflight", **{"class": c}) == 0
        assert val(m, "smg_scheduler_queue_depth", **{"class": c}) == 0
    assert val(m, "smg_scheduler_utilization") == 0


def test_queued_classes_are_admitted_highest_first(make_gateway, tmp_path):
    no_preempt = {"can_preempt": False}
    h = make_gateway(workers=[MockConfig(ttft=30.0)], priority_scheduler_enabled=True, worker_capacity_override=1,
                     priority_scheduler_default_max_class="system",
                     priority_scheduler_config=scheduler_yaml(tmp_path, system=no_preempt, interactive=no_preempt))
    stage, worker = stage_of(h), h.workers[0]
    holder = rawhttp.connect(h.port)       # holds the one slot until it leaves
    holder.sendall(chat(b"default"))
    assert wait_for(lambda: worker.stats.paths.get("/v1/chat/completions", 0) == 1)
    worker.config.ttft = 0.2               # the queued ones answer quickly, one at a time
    done: list = []

    def send(prio):
        st, _, _ = call(h.port, chat(prio))
        done.append((prio, st))
    threads = []
    for n, prio in enumerate((b"bulk", b"default", b"interactive", b"system", b"bulk")):
        t = threading.Thread(target=send, args=(prio,))
        t.start()
        threads.append(t)
        assert wait_for(lambda: h.on_loop(lambda: stage.core.queued) == n + 1)
    rst_close(holder)                      # the slot frees: the queues drain by class
    for t in threads:
        t.join(15)
    assert done == [(b"system", 200), (b"interactive", 200), (b"default", 200), (b"bulk", 200), (b"bulk", 200)]
    assert wait_for(lambda: idle(h))


def test_the_scheduler_answers_429_when_a_class_queue_is_full_and_408_after_its_timeout(make_gateway, tmp_path):
    h = make_gateway(workers=[MockConfig(ttft=2.0)], priority_scheduler_enabled=True, worker_capacity_override=1,
                     priority_scheduler_config=scheduler_yaml(
                         tmp_path, default={"queue_size": 1, "queue_timeout_secs": 0.5}))
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: call(h.port, chat()), range(3)))
    assert Counter(st for st, _, _ in answers) == {200: 1, 408: 1, 429: 1}
    by = {st: (hdrs, body) for st, hdrs, body in answers}
    assert code(by[429][1]) == "scheduler_queue_full" and by[429][0]["retry-after"] == "1"
    assert code(by[408][1]) == "scheduler_queue_timeout"
    m = scrape(h)
    for outcome in ("admitted", "rejected_queue_full", "rejected_queue_timeout"):
        assert val(m, "smg_scheduler_admit_total", **{"class": "default", "outcome": outcome}) == 1
    assert val(m, "smg_scheduler_queue_size_limit", **{"class": "default"}) == 1
    assert val(m, "smg_scheduler_queue_wait_seconds_count", **{"class": "default"}) == 1
    assert wait_for(lambda: idle(h))


def test_a_system_request_preempts_a_bulk_request_that_has_sent_nothing(make_gateway, tmp_path):
    h = make_gateway(workers=[MockConfig(ttft=1.0)], priority_scheduler_enabled=True, worker_capacity_override=1,
                     priority_scheduler_default_max_class="system", priority_scheduler_config=scheduler_yaml(tmp_path))
    worker = h.workers[0]
    out: dict = {}
    bulk = threading.Thread(target=lambda: out.setdefault("bulk", call(h.port, chat(b"bulk"))))
    bulk.start()
    assert wait_for(lambda: worker.stats.paths.get("/v1/chat/completions", 0) == 1)
    st, _, _ = call(h.port, chat(b"system"))
    bulk.join(10)
    assert st == 200
    bst, bhdrs, bbody = out["bulk"]
    assert bst == 503 and code(bbody) == "scheduler_preempted"
    assert bhdrs["retry-after"] == "1" and bhdrs["x-smg-preempted"] == "true"
    assert wait_for(lambda: worker.stats.aborted == 1)        # the engine stopped generating for it
    m = scrape(h)
    assert val(m, "smg_scheduler_preemption_total", by_class="system", victim_class="bulk") == 1
    assert val(m, "smg_scheduler_admit_total", **{"class": "bulk", "outcome": "preempted"}) == 1
    assert val(m, "smg_http_responses_total", path="/v1/chat/completions", status_code="503",
               error_code="scheduler_preempted") == 1
    assert wait_for(lambda: idle(h))
    # the breaker was not blamed for the preemption
    assert h.on_loop(lambda: worker_failures(h)) == 0


def worker_failures(h) -> int:
    return sum(w.breaker.total_failures for w in h.gw.registry.all() if w.breaker)


def test_a_streaming_request_is_never_preempted(make_gateway, tmp_path):
    h = make_gateway(workers=[MockConfig(ttft=0.0, token_delay=0.3, num_chunks=6)], priority_scheduler_enabled=True,
                     worker_capacity_override=1, priority_scheduler_default_max_class="system",
                     priority_scheduler_config=scheduler_yaml(tmp_path))
    stage = stage_of(h)
    s = rawhttp.connect(h.port)
    s.sendall(chat(b"bulk", stream=True))
    got = b""
    while b"data:" not in got:
        got += s.recv(65536)
    out: dict = {}
    sysreq = threading.Thread(target=lambda: out.setdefault("system", call(h.port, chat(b"system"))))
    sysreq.start()
    assert wait_for(lambda: h.on_loop(lambda: stage.core.queued) == 1)   # it waits instead
    while not got.endswith(b"0\r\n\r\n"):       # the stream runs to its end
        d = s.recv(65536)
        assert d, "the stream was cut"
        got += d
    assert got.startswith(b"HTTP/1.1 200") and b"data: [DONE]" in got
    s.close()
    sysreq.join(10)
    assert out["system"][0] == 200
    assert val(scrape(h), "smg_scheduler_preemption_total", by_class="system", victim_class="bulk") == 0
    assert wait_for(lambda: idle(h))


def test_capacity_comes_from_the_workers_reported_max_running_requests(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="a"), MockConfig(worker_id="b")], priority_scheduler_enabled=True,
                     load_monitor_interval=0.2)
    stage = stage_of(h)

    def capacity():
        return h.on_loop(lambda: (stage.gauges(), stage.core.capacity, stage.source)[1:])
    # each mock engine reports max_running_requests 256 (tier 2: their sum)
    assert wait_for(lambda: capacity() == (512, S.SOURCE_REPORTED), timeout=15)
    assert call(h.port, chat())[0] == 200
    m = scrape(h)
    assert val(m, "smg_scheduler_queue_size_limit", **{"class": "system"}) == 64     # SMG's defaults
    assert val(m, "smg_scheduler_queue_size_limit", **{"class": "bulk"}) == 1024
    assert wait_for(lambda: idle(h))


# -- permits after retries and failing workers ------------------------------------------


def _dead_url() -> str:
    """A 127.0.0.1 address nobody listens on (connection refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def _failing_fleet(make_gateway, retries: int, **settings):
    # round robin over a worker answering 500, one refusing connections and a good one:
    # with 3 attempts every request reaches the good one; with 2, those starting on the
    # 500 worker try the refusing one next and fail
    workers = [MockConfig(worker_id="bad", fail_status=500), MockConfig(worker_id="good")]
    h = make_gateway(workers=workers, disable_health_check=True, disable_circuit_breaker=True,
                     retry_max_retries=retries, retry_initial_backoff_ms=1.0, retry_max_backoff_ms=5.0, **settings)
    dead = _dead_url()
    h.on_loop(lambda: h.gw.add_worker(dead, models=["mock-model"]))   # no probe: routable at once
    assert wait_for(lambda: h.on_loop(lambda: sum(w.status == READY for w in h.gw.registry.all())) == 3)
    return h


def _permits_back(h, stage) -> None:
    """The legacy limiter is idle and reports every token back."""
    assert wait_for(lambda: idle(h))
    assert h.on_loop(lambda: stage.core.available(h.gw.now)) == stage.core.capacity


def test_permits_come_back_after_retries_past_failing_and_refusing_workers(make_gateway):
    h = _failing_fleet(make_gateway, 5, max_concurrent_requests=3, queue_size=64)
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda i: call(h.port, chat(stream=i % 2 == 0)), range(60)))
    statuses = Counter(st for st, _, _ in answers)
    assert statuses[200] >= 50 and set(statuses) <= {200, 502}, statuses      # retried on to "good"
    assert h.workers[0].stats.paths.get("/v1/chat/completions", 0) > 0         # the 500 worker was tried
    assert h.workers[1].stats.paths.get("/v1/chat/completions", 0) == statuses[200]
    _permits_back(h, stage_of(h))
    assert stage_of(h).core.capacity == 3
    m = scrape(h)
    assert val(m, "smg_http_rate_limit_total", result="allowed") == 60
    assert val(m, "smg_http_rate_limit_total", result="rejected") == 0


def test_permits_come_back_when_retries_run_out(make_gateway):
    h = _failing_fleet(make_gateway, 2, max_concurrent_requests=2, queue_size=64)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: call(h.port, chat(stream=i % 2 == 0)), range(60)))
    statuses = Counter(st for st, _, _ in answers)
    assert statuses[200] > 0 and sum(n for st, n in statuses.items() if st >= 500) > 0, statuses
    assert sum(statuses.values()) == 60
    _permits_back(h, stage_of(h))
    assert stage_of(h).core.capacity == 2
    for _ in range(6):    # every slot is usable again: more sequential requests than slots all admitted
        assert call(h.port, chat())[0] in (200, 500, 502, 503)
    assert val(scrape(h), "smg_http_rate_limit_total", result="rejected") == 0


def test_scheduler_slots_come_back_after_retries_and_failures(make_gateway, tmp_path):
    h = _failing_fleet(make_gateway, 2, priority_scheduler_enabled=True, worker_capacity_override=2,
                       priority_scheduler_config=scheduler_yaml(tmp_path, default={"queue_size": 64}))
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: call(h.port, chat(stream=i % 2 == 0)), range(40)))
    statuses = Counter(st for st, _, _ in answers)
    assert statuses[200] > 0 and sum(n for st, n in statuses.items() if st >= 500) > 0, statuses
    stage = stage_of(h)
    assert wait_for(lambda: idle(h))
    assert h.on_loop(lambda: (stage.core.inflight, stage.core.queued, stage.core.capacity)) == (0, 0, 2)
