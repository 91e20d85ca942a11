"""Worker lifecycle through the running gateway: retries, health, breakers, the Workers
API, drain, SIGTERM, DP ranks, file and Kubernetes discovery."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import openai
import pytest

from smg.testing.fake_kube import FakeKube
from smg.testing.harness import GatewayHarness
from smg.testing.mock_worker import MockConfig, MockWorker
from tests.helpers import wait_for

from . import rawhttp
from .test_observability import scrape, val

CHAT = b'{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}'
STREAM = b'{"model":"mock-model","stream":true,"messages":[{"role":"user","content":"hi"}]}'


def req(method, path, body=b""):
    return (b"%s %s HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (method, path, len(body), body))


def call(h, method, path, body=b""):
    st, headers, data = rawhttp.request(h.port, req(method, path, body), methods=[method.decode()])[0]
    return st, headers, (json.loads(data) if data else None)


def worker_of(h, headers):
    return headers["x-mock-worker"]


FAST_HEALTH = dict(health_check_interval_secs=0.1, worker_startup_check_interval=0.1, health_failure_threshold=2,
                   health_success_threshold=1, retry_initial_backoff_ms=1)


def test_503_is_retried_on_another_worker(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="bad", fail_status=503), MockConfig(worker_id="good")],
                     retry_initial_backoff_ms=1)
    c = openai.OpenAI(base_url=h.url + "/v1", api_key="x", max_retries=0, timeout=10)
    for _ in range(6):
        raw = c.chat.completions.with_raw_response.create(model="mock-model", messages=[{"role": "user", "content": "x"}])
        assert raw.status_code == 200 and raw.headers["x-mock-worker"] == "good"


def test_last_attempt_answer_is_relayed(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="bad", fail_status=503)], retry_max_retries=3,
                     retry_initial_backoff_ms=1, cb_failure_threshold=100)
    st, _, body = call(h, b"POST", b"/v1/chat/completions", CHAT)
    assert st == 503 and "error" in body
    assert h.workers[0].stats.failures == 3  # three attempts in total


def test_no_retry_when_disabled_or_body_too_large(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="bad", fail_status=503), MockConfig(worker_id="good")],
                     disable_retries=True)
    assert sorted(call(h, b"POST", b"/v1/chat/completions", CHAT)[0] for _ in range(2)) == [200, 503]
    h2 = make_gateway(workers=[MockConfig(worker_id="bad", fail_status=503), MockConfig(worker_id="good")],
                      max_buffered_request_bytes=10, retry_initial_backoff_ms=1)
    assert sorted(call(h2, b"POST", b"/v1/chat/completions", CHAT)[0] for _ in range(2)) == [200, 503]


def test_worker_killed_mid_stream_other_streams_continue(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="a", token_delay=0.02, num_chunks=40),
                              MockConfig(worker_id="b", token_delay=0.02, num_chunks=40)])
    results = {}

    def stream(i):
        with rawhttp.connect(h.port) as s:
            s.sendall(req(b"POST", b"/v1/chat/completions", STREAM))
            st, headers, body = rawhttp.read_responses(s, 1, ["POST"])[0]
            results[i] = (headers["x-mock-worker"], body)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    h.run(h.workers[0].stop())  # kill worker a while its streams run
    for t in threads:
        t.join(20)
    assert len(results) == 4
    for wid, body in results.values():
        events = [e for e in body.split(b"\n\n") if e.strip()]
        if wid == "a":  # the cut stream ends with an in-band error event (then maybe [DONE])
            errors = [json.loads(e[6:]) for e in events if e.startswith(b"data: {") and b'"error"' in e]
            assert errors and "message" in errors[-1]["error"]
        else:
            assert events[-1] == b"data: [DONE]"
    assert sorted(w for w, _ in results.values()) == ["a", "a", "b", "b"]


def test_dead_worker_marked_not_ready_and_traffic_moves(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="a"), MockConfig(worker_id="b")], **FAST_HEALTH)
    a = h.workers[0]
    a.config.health_status = 503
    ga = h.on_loop(lambda: h.gw.registry.all()[0])
    assert wait_for(lambda: ga.status == "not_ready")
    assert {call(h, b"POST", b"/v1/chat/completions", CHAT)[1]["x-mock-worker"] for _ in range(6)} == {"b"}
    a.config.health_status = 200
    assert wait_for(lambda: ga.status == "ready")
    assert {call(h, b"POST", b"/v1/chat/completions", CHAT)[1]["x-mock-worker"] for _ in range(6)} == {"a", "b"}


def test_failed_worker_keeps_being_probed_and_rejoins(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="a")], **FAST_HEALTH)
    ga = h.on_loop(lambda: h.gw.registry.all()[0])
    h.workers[0].config.health_status = 500
    assert wait_for(lambda: ga.status == "failed")
    h.workers[0].config.health_status = 200
    assert wait_for(lambda: ga.status == "ready")


def test_breaker_opens_then_half_opens(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="a", fail_status=500), MockConfig(worker_id="b")],
                     cb_failure_threshold=2, cb_success_threshold=1, cb_timeout_duration_secs=0.5,
                     disable_retries=True)
    ga = h.on_loop(lambda: h.gw.registry.all()[0])
    statuses = [call(h, b"POST", b"/v1/chat/completions", CHAT)[0] for _ in range(4)]
    assert statuses.count(500) == 2                      # a failed twice: open
    assert ga.breaker_open and ga.breaker.state == "open"
    assert {call(h, b"POST", b"/v1/chat/completions", CHAT)[1]["x-mock-worker"] for _ in range(4)} == {"b"}
    h.workers[0].config.fail_status = None
    assert wait_for(lambda: not ga.breaker_open)           # timeout passed: half-open
    assert ga.breaker.state == "half_open"
    seen = {call(h, b"POST", b"/v1/chat/completions", CHAT)[1]["x-mock-worker"] for _ in range(4)}
    assert "a" in seen and ga.breaker.state == "closed"


def test_workers_api_lifecycle(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="a")], **FAST_HEALTH)
    extra = h.run(MockWorker(MockConfig(worker_id="new")).start())
    try:
        st, headers, body = call(h, b"POST", b"/workers", json.dumps(
            {"url": extra.url, "api_key": "sekret", "labels": {"zone": "z1"}, "priority": 7}).encode())
        assert st == 202 and body["status"] == "accepted" and headers["location"] == body["location"]
        wid = body["worker_id"]
        assert wait_for(lambda: call(h, b"GET", b"/workers/" + wid.encode())[2]["status"] == "ready")
        seen = {call(h, b"POST", b"/v1/chat/completions", CHAT)[1]["x-mock-worker"] for _ in range(6)}
        assert seen == {"a", "new"}
        assert extra.stats.last_headers["authorization"] == "Bearer sekret"  # worker key sent
        st, _, listing = call(h, b"GET", b"/workers")
        assert st == 200 and listing["total"] == 2 and listing["stats"]["healthy_workers"] == 2
        raw = json.dumps(listing)
        assert "sekret" not in raw  # write-only
        info = next(w for w in listing["workers"] if w["id"] == wid)
        assert info["labels"]["zone"] == "z1" and info["priority"] == 7 and info["has_api_key"]
        # the engine's own facts join the spec's labels (as strings); its cards show SMG's fields
        assert info["labels"]["served_model_name"] == "mock-model" and info["labels"]["max_model_len"] == "32768"
        assert info["labels"]["version"] and "max_connection_attempts" not in info
        card = info["models"][0]
        assert card["id"] == "mock-model" and card["context_length"] == 32768
        assert card["model_type"] == ["chat", "completions", "responses", "tools"] and "owned_by" not in card
        st, _, _ = call(h, b"PATCH", b"/workers/" + wid.encode(), b'{"priority": 9}')
        assert st == 202 and call(h, b"GET", b"/workers/" + wid.encode())[2]["priority"] == 9
        assert call(h, b"GET", b"/workers?model=other-model")[2]["total"] == 0
        st, _, _ = call(h, b"DELETE", b"/workers/" + wid.encode())
        assert st == 202
        assert wait_for(lambda: call(h, b"GET", b"/workers/" + wid.encode())[0] == 404)
        assert {call(h, b"POST", b"/v1/chat/completions", CHAT)[1]["x-mock-worker"] for _ in range(4)} == {"a"}
    finally:
        h.run(extra.stop())


@pytest.mark.parametrize("body, field", [
    (b'{"models": []}', "url"),
    (b'{"url": "ftp://x"}', "url"),
    (b'{"url": "http://127.0.0.1:1", "worker_type": "boss"}', "worker_type"),
    (b'{"url": "http://127.0.0.1:1", "health": {"timeout_secs": "soon"}}', "health.timeout_secs"),
    (b'{"url": "http://127.0.0.1:1", "resilience": {"max_retry": 3}}', "resilience.max_retry"),
    (b'{"url": "http://127.0.0.1:1", "labels": {"a": 1}}', "labels"),
    (b'[1]', "body"),
])
def test_workers_api_rejects_bad_specs(gateway, body, field):
    st, _, doc = call(gateway, b"POST", b"/workers", body)
    # the control plane's envelope: {"error": message, "code": CODE}
    assert st == 400 and doc["error"].startswith("Invalid JSON data: " + field + ":")
    assert doc["code"] == "BAD_REQUEST"


def test_workers_api_errors(gateway):
    st, _, doc = call(gateway, b"GET", b"/workers/nope")
    assert st == 400 and doc["code"] == "BAD_REQUEST" and "expected UUID" in doc["error"]
    unknown = b"/workers/01a233ea-b309-722b-89e6-024884b6ac6c"
    for method in (b"GET", b"DELETE", b"PATCH"):
        st, _, doc = call(gateway, method, unknown, b"{}" if method == b"PATCH" else b"")
        assert st == 404 and doc["code"] == "WORKER_NOT_FOUND"
    url = gateway.workers[0].url.encode()
    st, _, doc = call(gateway, b"POST", b"/workers", b'{"url": "%s"}' % url)
    wid = gateway.on_loop(lambda: gateway.gw.registry.all()[0].id)
    assert st == 409 and doc["code"] == "WORKER_ALREADY_EXISTS" and wid in doc["error"]
    st, _, doc = call(gateway, b"POST", b"/workers", b"{nope")
    assert st == 400 and doc["code"] == "BAD_REQUEST" and doc["error"].startswith("JSON syntax error")


def test_legacy_add_and_remove_worker(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="a")], **FAST_HEALTH)
    extra = h.run(MockWorker(MockConfig(worker_id="legacy")).start())
    try:
        st, _, _ = call(h, b"POST", b"/add_worker?url=" + extra.url.encode())
        assert st == 202
        assert wait_for(lambda: len(h.on_loop(lambda: h.gw.registry.candidates(None))) == 2)
        st, _, _ = call(h, b"POST", b"/remove_worker?url=" + extra.url.encode())
        assert st == 202
        assert wait_for(lambda: len(h.on_loop(lambda: h.gw.registry.all())) == 1)
    finally:
        h.run(extra.stop())


def test_delete_drains_without_cutting_a_stream(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="a", token_delay=0.02, num_chunks=30)],
                     drain_settle_secs=10)
    wid = h.on_loop(lambda: h.gw.registry.all()[0].id)
    result = {}

    def stream():
        with rawhttp.connect(h.port) as s:
            s.sendall(req(b"POST", b"/v1/chat/completions", STREAM))
            result["r"] = rawhttp.read_responses(s, 1, ["POST"])[0]

    t = threading.Thread(target=stream)
    t.start()
    time.sleep(0.15)
    assert call(h, b"DELETE", b"/workers/" + wid.encode())[0] == 202
    assert call(h, b"GET", b"/workers/" + wid.encode())[2]["status"] == "draining"
    assert call(h, b"POST", b"/v1/chat/completions", CHAT)[0] == 503  # no new traffic
    t.join(20)
    st, _, body = result["r"]
    assert st == 200 and body.rstrip().endswith(b"data: [DONE]")
    assert wait_for(lambda: call(h, b"GET", b"/workers/" + wid.encode())[0] == 404)


def test_dp_aware_injects_rank(make_gateway):
    h = make_gateway(workers=[], dp_aware=True, disable_health_check=True)
    w = h.run(MockWorker(MockConfig(worker_id="dp")).start())
    try:
        st, _, body = call(h, b"POST", b"/workers", b'{"url": "%s", "dp_size": 2}' % w.url.encode())
        assert st == 202
        assert wait_for(lambda: len(h.on_loop(lambda: h.gw.registry.candidates(None))) == 2)
        assert call(h, b"GET", b"/workers/" + body["worker_id"].encode())[2]["url"] == w.url + "@0"
        ranks = []
        for _ in range(4):
            assert call(h, b"POST", b"/v1/chat/completions", CHAT)[0] == 200
            ranks.append(w.stats.last_body["data_parallel_rank"])
        assert sorted(ranks) == [0, 0, 1, 1]
        urls = sorted(x["url"] for x in call(h, b"GET", b"/workers")[2]["workers"])
        assert urls == [w.url + "@0", w.url + "@1"]
    finally:
        h.run(w.stop())


def test_dp_aware_ranks_stay_ready_with_health_checks_on():
    """``base@rank`` is the ranks' logical key, not an address: probes and load polls go
    to the base URL, so healthy ranks stay ready round after round."""
    with GatewayHarness(workers=[MockConfig(worker_id="dp")], wait_ready=False, worker_urls=[], dp_aware=True,
                        load_monitor_interval=0.1, **FAST_HEALTH) as h:
        w = h.workers[0]
        st, _, _ = call(h, b"POST", b"/workers", b'{"url": "%s", "dp_size": 2}' % w.url.encode())
        assert st == 202
        assert wait_for(lambda: len(h.on_loop(lambda: h.gw.registry.candidates(None))) == 2)
        health_before = val(scrape(h), "smg_worker_health_checks_total", worker_type="regular", result="success")
        assert wait_for(lambda: val(scrape(h), "smg_worker_health_checks_total", worker_type="regular",
                                    result="success") >= health_before + 6)
        m = scrape(h)
        assert val(m, "smg_worker_health_checks_total", worker_type="regular", result="failure") == 0
        for rank in (0, 1):
            assert val(m, "smg_worker_health", worker=f"{w.url}@{rank}") == 1
        assert wait_for(lambda: all(x.engine is not None for x in h.on_loop(lambda: h.gw.registry.all())))
        ranks = []
        for _ in range(4):
            assert call(h, b"POST", b"/v1/chat/completions", CHAT)[0] == 200
            ranks.append(w.stats.last_body["data_parallel_rank"])
        assert sorted(ranks) == [0, 0, 1, 1]
        workers = call(h, b"GET", b"/workers")[2]["workers"]
        assert sorted((x["url"], x["status"]) for x in workers) == [(w.url + "@0", "ready"), (w.url + "@1", "ready")]


def test_file_discovery(tmp_path):
    manifest = tmp_path / "workers.json"
    with GatewayHarness(workers=[MockConfig(worker_id="m1"), MockConfig(worker_id="m2")], wait_ready=False,
                        worker_urls=[], discovery_file=str(manifest), discovery_check_interval_secs=0.1,
                        **FAST_HEALTH) as h:
        m1, m2 = h.workers
        manifest.write_text(json.dumps({"workers": [{"url": m1.url}]}))
        assert wait_for(lambda: len(h.on_loop(lambda: h.gw.registry.candidates(None))) == 1)
        manifest.write_text(json.dumps([{"url": m1.url}, {"url": m2.url}]))
        assert wait_for(lambda: len(h.on_loop(lambda: h.gw.registry.candidates(None))) == 2)
        m = scrape(h)
        assert val(m, "smg_discovery_workers_discovered", source="file") == 2
        assert val(m, "smg_discovery_registrations_total", source="file", result="success") == 2
        syncs = val(m, "smg_discovery_sync_duration_seconds_count", source="file")
        assert syncs >= 2                          # at least one read per manifest version
        manifest.write_text(json.dumps([{"url": m2.url}]))
        assert wait_for(lambda: [w.url for w in h.on_loop(lambda: h.gw.registry.all())] == [m2.url])
        m = scrape(h)
        assert val(m, "smg_discovery_workers_discovered", source="file") == 1
        assert val(m, "smg_discovery_deregistrations_total", source="file", reason="removed") == 1
        assert val(m, "smg_discovery_sync_duration_seconds_count", source="file") > syncs


def test_kubernetes_discovery(tmp_path):
    # two mock workers on one port at different loopback addresses, as pods would be
    probe = socket.socket()
    probe.bind(("127.0.0.2", 0))
    port = probe.getsockname()[1]
    probe.close()
    lt_h = GatewayHarness(workers=[], wait_ready=False)
    kube = FakeKube(token="tok")
    with lt_h as boot:
        pods = [boot.run(MockWorker(MockConfig(worker_id=f"pod{i}")).start(f"127.0.0.{i + 2}", port)) for i in range(2)]
        boot.run(kube.start())
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: t\n"
            f"clusters: [{{name: c, cluster: {{server: '{kube.url}'}}}}]\n"
            "users: [{name: u, user: {token: tok}}]\n"
            "contexts: [{name: t, context: {cluster: c, user: u}}]\n")
        try:
            with GatewayHarness(workers=[], wait_ready=False, service_discovery=True, selector=["app=llm"],
                                service_discovery_port=port, kubeconfig=str(kubeconfig), **FAST_HEALTH) as h:
                def routable():
                    return sorted(w.url for w in h.on_loop(lambda: h.gw.registry.candidates(None)))

                boot.on_loop(lambda: kube.add_pod("p0", labels={"app": "llm"}, ip="127.0.0.2"))
                boot.on_loop(lambda: kube.add_pod("other", labels={"app": "db"}, ip="127.0.0.9"))
                assert wait_for(lambda: routable() == [f"http://127.0.0.2:{port}"])
                boot.on_loop(lambda: kube.add_pod("p1", labels={"app": "llm"}, ip="127.0.0.3", ready=False))
                time.sleep(0.3)
                assert routable() == [f"http://127.0.0.2:{port}"]       # not ready yet: not routed
                boot.on_loop(lambda: kube.set_ready("p1", True))
                assert wait_for(lambda: routable() == [f"http://127.0.0.2:{port}", f"http://127.0.0.3:{port}"])
                seen = {call(h, b"POST", b"/v1/chat/completions", CHAT)[1]["x-mock-worker"] for _ in range(4)}
                assert seen == {"pod0", "pod1"}
                m = scrape(h)
                assert val(m, "smg_discovery_workers_discovered", source="kubernetes") == 2
                assert val(m, "smg_discovery_sync_duration_seconds_count", source="kubernetes") >= 1  # the list
                boot.on_loop(lambda: kube.delete_pod("p0"))
                assert wait_for(lambda: routable() == [f"http://127.0.0.3:{port}"])
        finally:
            boot.run(kube.stop())
            for p in pods:
                boot.run(p.stop())


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def test_sigterm_lets_50_open_streams_finish(tmp_path):
    wport, gport = _free_port(), _free_port()
    env = dict(os.environ)
    worker = subprocess.Popen([sys.executable, "-m", "smg", "mock-worker", "--port", str(wport),
                               "--token-delay", "0.02", "--num-chunks", "60"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gw = subprocess.Popen([sys.executable, "-m", "smg", "--host", "127.0.0.1", "--port", str(gport),
                           "--prometheus-port", "0", "--worker-urls", f"http://127.0.0.1:{wport}",
                           "--log-level", "warning", "--shutdown-grace-period-secs", "30"], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(150):  # up to ~15 s
            try:
                if rawhttp.request(gport, b"GET /readiness HTTP/1.1\r\nhost: x\r\n\r\n")[0][0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            pytest.fail("gateway never became ready")
        results = []
        lock = threading.Lock()

        def stream():
            try:
                with rawhttp.connect(gport, timeout=30) as s:
                    s.sendall(req(b"POST", b"/v1/chat/completions", STREAM))
                    st, _, body = rawhttp.read_responses(s, 1, ["POST"])[0]
                    ok = st == 200 and body.rstrip().endswith(b"data: [DONE]")
            except OSError:
                ok = False
            with lock:
                results.append(ok)

        threads = [threading.Thread(target=stream) for _ in range(50)]
        for t in threads:
            t.start()
        def streams_at_worker():
            raw = rawhttp.request(wport, b"GET /_mock/stats HTTP/1.1\r\nhost: x\r\n\r\n")[0][2]
            return json.loads(raw)["paths"].get("/v1/chat/completions", 0)

        # all 50 streams are open (60 tokens x 20 ms each) before the signal
        assert wait_for(lambda: streams_at_worker() >= 50, timeout=15)
        gw.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        with pytest.raises(OSError):         # no longer accepting
            rawhttp.request(gport, b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        for t in threads:
            t.join(30)
        assert gw.wait(30) == 0
        assert len(results) == 50 and all(results), results.count(False)
    finally:
        for p in (gw, worker):
            if p.poll() is None:
                p.kill()
            p.wait(10)
