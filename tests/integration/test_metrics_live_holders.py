"""smg_admission_inflight, smg_worker_routing_keys_active and
smg_worker_cb_health_readmissions_total on a running gateway: read while requests are
in flight, back to zero after, and a breaker readmitted when its worker's health
returns (the values the Rust SMG shows for the same steps)."""
import threading
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from smg.testing.mock_worker import MockConfig

from . import rawhttp

CHAT = b'{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}'


def scrape(h) -> dict:
    with urllib.request.urlopen(h.metrics_url, timeout=5) as r:
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def val(m, name, **labels):
    return m.get((name, frozenset(labels.items())))


def post(h, key=None):
    extra = b"x-smg-routing-key: %s\r\n" % key if key else b""
    return rawhttp.request(h.port, b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                           b"%scontent-length: %d\r\n\r\n%s" % (extra, len(CHAT), CHAT), methods=["POST"])[0]


def wait_for(fn, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    return fn()


def test_inflight_and_routing_key_gauges_follow_requests(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="slow", ttft=1.5)])
    url = h.workers[0].url
    m = scrape(h)
    assert val(m, "smg_admission_inflight") == 0
    assert val(m, "smg_worker_routing_keys_active", worker=url) is None  # no keyed request yet
    results = []
    threads = [threading.Thread(target=lambda k=k: results.append(post(h, k)[0]))
               for k in (b"a", b"b", b"a", None)]
    for t in threads:
        t.start()
    try:
        m = wait_for(lambda: (lambda s: s if val(s, "smg_worker_requests_active", worker=url) == 4 else None)(
            scrape(h)), timeout=5)
        assert m, "the four requests never were in flight together"
        assert val(m, "smg_admission_inflight") == 4
        assert val(m, "smg_worker_routing_keys_active", worker=url) == 2   # a (twice) and b
    finally:
        for t in threads:
            t.join(10)
    assert results == [200] * 4
    m = wait_for(lambda: (lambda s: s if val(s, "smg_admission_inflight") == 0 else None)(scrape(h)))
    assert val(m, "smg_admission_inflight") == 0
    assert val(m, "smg_worker_routing_keys_active", worker=url) == 0


def test_no_admission_gauge_without_the_legacy_limiter(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="a")], max_concurrent_requests=0)
    assert not any(k[0] == "smg_admission_inflight" for k in scrape(h))


def test_open_breaker_readmitted_when_health_returns(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="a", fail_status=503)], health_check_interval_secs=0.1,
                     worker_startup_check_interval=0.1, health_failure_threshold=1, health_success_threshold=1,
                     cb_failure_threshold=1, cb_timeout_duration_secs=600, retry_max_retries=1)
    w = h.workers[0]
    url = w.url
    assert val(scrape(h), "smg_worker_cb_health_readmissions_total", worker=url) == 0
    assert post(h)[0] == 503
    gw = h.on_loop(lambda: h.gw.registry.all()[0])
    assert val(scrape(h), "smg_worker_cb_state", worker=url) == 1
    w.config.health_status = 503
    assert wait_for(lambda: gw.status == "not_ready")
    assert val(scrape(h), "smg_worker_cb_health_readmissions_total", worker=url) == 0  # down: no readmission
    w.config.fail_status = None
    w.config.health_status = 200
    assert wait_for(lambda: gw.status == "ready")
    m = scrape(h)
    assert val(m, "smg_worker_cb_health_readmissions_total", worker=url) == 1
    assert val(m, "smg_worker_cb_state", worker=url) == 2
    assert val(m, "smg_worker_cb_transitions_total", worker=url, **{"from": "open", "to": "half_open"}) == 1
    assert post(h)[0] == 200                       # half-open admits traffic again
