"""The Workers API life cycle over real sockets, with SMG's shapes: create → (pending)
→ list → get → patch → put → delete, the last while a request is in flight (drain)."""
from __future__ import annotations

import http.client
import json
import socket
import threading
import uuid

import pytest

from smg.testing.harness import GatewayHarness
from smg.testing.mock_worker import MockConfig, MockWorker
from tests.helpers import wait_for

CHAT = {"model": "extra-model", "messages": [{"role": "user", "content": "hi"}]}


def call(h, method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", h.port, timeout=15)
    try:
        data = json.dumps(body) if body is not None and not isinstance(body, bytes) else body
        c.request(method, path, body=data, headers={"content-type": "application/json"} if data else {})
        r = c.getresponse()
        raw = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, (json.loads(raw) if raw else None)
    finally:
        c.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def h():
    with GatewayHarness(workers=[MockConfig(worker_id="base")], health_check_interval_secs=0.1,
                        health_success_threshold=1, drain_settle_secs=10) as g:
        yield g


def test_pending_worker_is_not_listed_but_can_be_fetched(h):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: registration keeps retrying
    st, headers, d = call(h, "POST", "/workers", {"url": url})
    assert st == 202 and set(d) == {"status", "worker_id", "url", "location", "message"}
    wid = d["worker_id"]
    assert uuid.UUID(wid).version == 7 and headers["location"] == d["location"] == f"/workers/{wid}"
    assert d["message"] == "Worker addition queued for background processing"
    st, _, listing = call(h, "GET", "/workers")
    assert wid not in {w["id"] for w in listing["workers"]} and listing["total"] == 1
    st, _, info = call(h, "GET", f"/workers/{wid}")
    assert st == 200 and info["status"] == "pending" and info["is_healthy"] is False
    assert info["job_status"]["job_type"] == "AddWorker" and info["job_status"]["status"] == "processing"
    assert "models" not in info and "model_id" not in info  # unknown yet: left out
    st, _, err = call(h, "POST", "/workers", {"url": url})
    assert st == 409 and err["code"] == "WORKER_CREATE_IN_PROGRESS" and wid in err["error"]
    st, _, d = call(h, "DELETE", f"/workers/{wid}")
    assert st == 202 and d == {"status": "accepted", "worker_id": wid,
                               "message": "Worker removal queued for background processing"}
    assert wait_for(lambda: call(h, "GET", f"/workers/{wid}")[0] == 404)


def test_life_cycle_with_drain(h):
    extra = h.run(MockWorker(MockConfig(worker_id="extra", model="extra-model")).start())
    try:
        st, _, d = call(h, "POST", "/workers", {"url": extra.url, "api_key": "k1", "labels": {"zone": "a"}})
        assert st == 202
        wid = d["worker_id"]
        assert wait_for(lambda: call(h, "GET", f"/workers/{wid}")[2]["status"] == "ready")
        st, _, info = call(h, "GET", f"/workers/{wid}")
        assert info["model_id"] == "extra-model" and info["models"][0]["id"] == "extra-model"
        assert info["labels"]["zone"] == "a" and info["priority"] == 50 and info["cost"] == 1.0
        assert info["labels"]["served_model_name"] == "extra-model"  # the engine's facts join the spec's
        assert info["is_healthy"] is True and "job_status" not in info and "api_key" not in info
        assert info["http2"] is False and info["load"] == 0

        st, _, listing = call(h, "GET", "/workers")
        stats = listing["stats"]
        assert listing["total"] == 2 and stats["regular_count"] == 2 and stats["prefill_count"] == 0
        assert stats["decode_count"] == 0 and stats["healthy_workers"] == 2 and stats["total_models"] == 2
        assert call(h, "GET", "/workers?model=extra-model")[2]["total"] == 1

        # PATCH: labels merge, key rotation reaches the worker, health merges, others refused
        st, _, d = call(h, "PATCH", f"/workers/{wid}", {"priority": 7, "cost": 2.5, "labels": {"tier": "x"},
                                                         "api_key": "k2", "health": {"check_interval_secs": 0.2}})
        assert st == 202 and d == {"status": "accepted", "worker_id": wid,
                                   "message": "Worker update queued for background processing"}
        info = call(h, "GET", f"/workers/{wid}")[2]
        assert (info["priority"], info["cost"]) == (7, 2.5)
        assert (info["labels"]["zone"], info["labels"]["tier"]) == ("a", "x")
        assert info["health"] == {"check_interval_secs": 0.2}
        assert call(h, "POST", "/v1/chat/completions", CHAT)[0] == 200
        assert extra.stats.last_headers["authorization"] == "Bearer k2"
        entry = h.on_loop(lambda: h.gw.workers.health._entries[wid])
        assert entry.api_key == "k2" and entry.interval == 0.2
        st, _, err = call(h, "PATCH", f"/workers/{wid}", {"url": "http://127.0.0.1:1"})
        assert st == 400 and err["code"] == "BAD_REQUEST" and "url" in err["error"]

        # PUT: same id, the spec replaced
        st, _, d = call(h, "PUT", f"/workers/{wid}", {"url": extra.url, "priority": 9, "api_key": "k3"})
        assert st == 202 and d["worker_id"] == wid
        assert wait_for(lambda: call(h, "GET", f"/workers/{wid}")[2]["status"] == "ready")
        info = call(h, "GET", f"/workers/{wid}")[2]
        assert info["priority"] == 9 and info["cost"] == 1.0
        assert "zone" not in info["labels"] and info["labels"]["served_model_name"] == "extra-model"
        st, _, err = call(h, "PUT", f"/workers/{wid}", {"url": "http://127.0.0.1:1"})
        assert st == 400 and "URL mismatch" in err["error"]

        # DELETE while a request is in flight: drained, not cut
        extra.config.ttft = 1.0
        result = {}
        t = threading.Thread(target=lambda: result.setdefault("r", call(h, "POST", "/v1/chat/completions", CHAT)))
        t.start()
        assert wait_for(lambda: extra._inflight == 1, timeout=5)
        assert call(h, "DELETE", f"/workers/{wid}")[0] == 202
        info = call(h, "GET", f"/workers/{wid}")[2]
        assert (info["status"], info["is_healthy"], info["load"]) == ("draining", False, 1)
        assert info["job_status"]["job_type"] == "RemoveWorker"
        assert call(h, "DELETE", f"/workers/{wid}")[0] == 202  # again: the drain goes on
        served = extra.stats.paths["/v1/chat/completions"]
        st, _, _ = call(h, "POST", "/v1/chat/completions", CHAT)
        assert st != 200 and extra.stats.paths["/v1/chat/completions"] == served  # no new request reaches it
        t.join(15)
        assert result["r"][0] == 200
        assert wait_for(lambda: call(h, "GET", f"/workers/{wid}")[0] == 404)
    finally:
        h.run(extra.stop())
