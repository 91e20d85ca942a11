"""Engine recognition and per-engine probing (smg/workers/engines.py, health.py,
manager.py): fake servers on 127.0.0.1 that look like each engine, one without
/health, one whose /v1/models locks, a plain HTTP server that is no inference server;
the per-worker probe timeout; passthrough without load polling; rate-limited probe
warnings; worker URL checks (/v1 prefix, self-loop)."""
from __future__ import annotations

import asyncio
import ipaddress
import logging

import orjson
import pytest

from smg.workers import engines
from smg.workers.addresses import AddressGuard, reaches
from smg.workers.health import HealthChecker
from smg.workers.spec import SpecError, validate
from smg.workers.worker import READY, Worker
from tests.unit.test_manager import Engine, manager, run, until

MODELS = orjson.dumps({"object": "list", "data": [{"id": "m1", "object": "model", "owned_by": "me"}]})


def llama_cpp_python(lock: asyncio.Event | None = None) -> Engine:
    """llama-cpp-python's surface: no /health, /openapi.json titled, /v1/models."""
    return Engine({
        "/v1/models": (200, MODELS),
        "/openapi.json": (200, orjson.dumps({"openapi": "3.1.0", "info": {"title": "🦙 llama.cpp Python API"}})),
    })


ROUTES = {
    "sglang": {"/v1/models": (200, MODELS), "/health": (200, b""),
               "/get_server_info": (200, orjson.dumps({"model_path": "m1", "tp_size": 1}))},
    "vllm": {"/v1/models": (200, orjson.dumps({"data": [{"id": "m1", "owned_by": "vllm"}]})),
             "/health": (200, b"")},
    "llama_cpp": {"/v1/models": (200, MODELS), "/health": (200, b""),
                  "/props": (200, orjson.dumps({"default_generation_settings": {}, "total_slots": 1}))},
    "ollama": {"/v1/models": (200, MODELS), "/api/version": (200, b'{"version":"0.5"}'),
               "/api/tags": (200, orjson.dumps({"models": []}))},
    "tgi": {"/v1/models": (200, MODELS), "/health": (200, b""),
            "/info": (200, orjson.dumps({"model_id": "m1", "router": "text-generation-router"}))},
    "openai": {"/v1/models": (200, MODELS)},
}
PROBE = {"sglang": "/health", "vllm": "/health", "llama_cpp": "/health", "ollama": "/api/version",
         "tgi": "/health", "openai": "/v1/models", "llama_cpp_python": "/openapi.json"}


@pytest.mark.parametrize("runtime", sorted(PROBE))
def test_engine_recognised_and_probed_at_its_own_endpoint(runtime):
    async def main():
        eng = await (llama_cpp_python() if runtime == "llama_cpp_python" else Engine(ROUTES[runtime])).start()
        m, reg, _ = manager()
        try:
            m.start()
            w = m.add(validate({"url": eng.url}))
            assert await until(lambda: w.status == READY)
            assert w.runtime == runtime and m.info(w)["runtime_type"] == runtime and w.models == ("m1",)
            n = len(eng.seen)
            assert await until(lambda: sum(1 for p, _ in eng.seen[n:] if p == PROBE[runtime]) >= 3)
            after = {p for p, _ in eng.seen[n:]}
            assert PROBE[runtime] in after and w.status == READY
            if runtime == "llama_cpp_python":
                assert "/v1/models" not in after  # it takes the model lock: never probed
        finally:
            await m.stop()
            await eng.stop()

    run(main())


def test_a_plain_http_server_is_refused_not_a_wildcard(caplog):
    async def main():
        eng = await Engine({"/health": (200, b"ok"), "/": (200, b"<html>")}).start()
        m, reg, _ = manager()
        try:
            m.start()
            w = m.add(validate({"url": eng.url}))
            assert await until(lambda: len(reg) == 0)
            assert reg.candidates(None) == [] and reg.get(w.id) is None
        finally:
            await m.stop()
            await eng.stop()

    with caplog.at_level(logging.INFO, "smg.workers"):
        run(main())
    refused = [r for r in caplog.records if "not an inference server" in r.getMessage()]
    assert refused and refused[0].levelno == logging.ERROR
    assert not any("not answering yet" in r.getMessage() for r in caplog.records)  # it answers (404)


def test_known_engine_without_model_list_serves_any_model():
    async def main():
        eng = await Engine({"/health": (200, b""),
                            "/get_server_info": (200, orjson.dumps({"model_path": "x"}))}).start()
        m, reg, _ = manager()
        try:
            w = m.add(validate({"url": eng.url}))
            assert await until(lambda: w.status == READY)
            assert w.runtime == "sglang" and w.models == () and reg.candidates("anything") == [w]
        finally:
            await m.stop()
            await eng.stop()

    run(main())


def test_a_server_still_loading_is_asked_again_not_refused():
    async def main():
        eng = await Engine({"/v1/models": (503, b"{}"), "/health": (503, b"")}).start()
        m, reg, _ = manager(worker_registration_max_backoff_secs=0.05)
        try:
            w = m.add(validate({"url": eng.url}))
            assert await until(lambda: sum(1 for p, _ in eng.seen if p == "/v1/models") >= 3)
            assert reg.get(w.id) is w and w.status != READY
            eng.routes.update(ROUTES["sglang"])  # loaded now
            assert await until(lambda: w.status == READY)
        finally:
            await m.stop()
            await eng.stop()

    run(main())


def test_spec_runtime_hint_wins_and_explicit_endpoint_overrides():
    async def main():
        eng = await Engine(dict(ROUTES["openai"], **{"/healthz": (200, b"")})).start()
        m, reg, _ = manager(health_check_endpoint="/healthz")
        try:
            m.start()
            w = m.add(validate({"url": eng.url, "runtime_type": "vllm"}))
            assert await until(lambda: w.status == READY)
            assert w.runtime == "vllm"
            n = len(eng.seen)
            assert await until(lambda: sum(1 for p, _ in eng.seen[n:] if p == "/healthz") >= 2)
        finally:
            await m.stop()
            await eng.stop()

    run(main())


def test_per_worker_health_timeout_is_used():
    async def main():
        slow = await Engine({}, hang=True).start()
        seen = []

        async def fake_request(url, method, path, **kw):
            seen.append(kw["timeout"])
            return 200, [], b""

        hc = HealthChecker(lambda w, s: None, endpoint="/health", interval=1.0, timeout=5.0, success_threshold=1,
                           failure_threshold=1, startup_interval=None, remove_unhealthy=False)
        import smg.workers.health as health_mod
        real = health_mod.client.request
        health_mod.client.request = fake_request
        try:
            a, b = Worker(slow.url), Worker(slow.url + "/")
            hc.add(a, timeout=0.25)
            hc.add(b)
            await hc.check_once(force=True)
        finally:
            health_mod.client.request = real
            await slow.stop()
        assert sorted(seen) == [0.25, 5.0]

    run(main())


def test_spec_health_timeout_reaches_the_checker():
    async def main():
        eng = await Engine(ROUTES["sglang"]).start()
        m, reg, _ = manager()
        try:
            w = m.add(validate({"url": eng.url, "health": {"timeout_secs": 0.7}}))
            assert await until(lambda: w.status == READY)
            assert m.health._entries[w.id].timeout == 0.7
        finally:
            await m.stop()
            await eng.stop()

    run(main())


def test_passthrough_builds_no_load_monitor():
    m, _, _ = manager(policy="passthrough")
    assert m.loads is None
    m2, _, _ = manager(policy="round_robin")
    assert m2.loads is not None


def test_probe_failures_warn_with_reason_rate_limited(caplog):
    async def main():
        now = [0.0]
        hc = HealthChecker(lambda w, s: None, endpoint="/health", interval=1.0, timeout=0.2, success_threshold=1,
                           failure_threshold=100, startup_interval=None, remove_unhealthy=False,
                           clock=lambda: now[0])
        w = Worker("http://127.0.0.1:9")  # discard port: connection refused
        hc.add(w)
        for _ in range(5):
            await hc.check_once(force=True)
            now[0] += 1.0
        now[0] += 60.0
        await hc.check_once(force=True)

    with caplog.at_level(logging.DEBUG, "smg.workers.health"):
        run(main())
    warns = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warns) == 2                                   # 6 failures, 2 lines
    assert "GET /health" in warns[0].getMessage() and "127.0.0.1:9" in warns[0].getMessage()
    assert "4 more failure(s)" in warns[1].getMessage()


def test_detect_table_order_and_fallback():
    ok = (200, (), b"")
    assert engines.detect({}, [{"id": "a", "owned_by": "sglang"}]).runtime == "sglang"
    assert engines.detect({}, [{"id": "a"}]).runtime == "openai"
    assert engines.detect({}, None) is None
    assert engines.detect({"/version": (200, (), b'{"version":"1"}')}, None).runtime == "vllm"
    assert engines.detect({"/version": (200, (), b'{"version":"1","x":1}')}, None) is None  # only "version"
    assert engines.detect({"/health": ok}, None, hint="tgi").runtime == "tgi"
    assert engines.detect({"/x": (404, [(b"server", b"llama.cpp")], b"")}, None).runtime == "llama_cpp"
    assert engines.choose_probe("/health", "/openapi.json") == "/openapi.json"
    assert engines.choose_probe("/ready", "/openapi.json") == "/ready"


# -- worker URL checks


def test_v1_suffix_is_dropped_other_paths_refused(caplog):
    with caplog.at_level(logging.INFO, "smg.workers"):
        assert validate({"url": "http://h:8000/v1"})["url"] == "http://h:8000"
        assert validate({"url": "http://h:8000/v1/"})["url"] == "http://h:8000"
    assert any("/v1 is dropped" in r.getMessage() for r in caplog.records)
    for bad in ("http://h:8000/api", "http://h:8000/v1/chat", "http://h:8000?x=1"):
        with pytest.raises(SpecError) as e:
            validate({"url": bad})
        assert e.value.field == "url" and "base URL" in str(e.value)


@pytest.mark.parametrize("url,listeners,hit", [
    ("http://127.0.0.1:8080", [("127.0.0.1", 8080)], True),
    ("http://localhost:8080", [("127.0.0.1", 8080)], True),
    ("http://127.0.0.1:8080", [("0.0.0.0", 8080)], True),
    ("http://0.0.0.0:8080", [("127.0.0.1", 8080)], True),
    ("http://[::1]:8080", [("::", 8080)], True),
    ("http://[::ffff:127.0.0.1]:8080", [("127.0.0.1", 8080)], True),
    ("http://127.0.0.1:8081", [("127.0.0.1", 8080)], False),
    ("http://127.0.0.2:8080", [("127.0.0.1", 8080)], False),
    ("http://10.255.255.1:8080", [("0.0.0.0", 8080)], False),   # not an address of this host
])
def test_self_loop_refused(url, listeners, hit):
    g = AddressGuard()
    g.listeners = listeners
    msg = g.refusal(url)
    assert (msg is not None and "own listener" in msg) is hit


def test_self_loop_by_resolved_name():
    async def resolve(host, port):
        return ["127.0.0.1"]

    g = AddressGuard(resolve=resolve)
    g.listeners = [("0.0.0.0", 9999)]
    assert "own listener" in run(g.check("http://my-gateway:9999"))
    assert run(g.check("http://my-gateway:9998")) is None
    assert reaches(ipaddress.ip_address("127.0.0.1"), 1, [("localhost", 1)]) == ("localhost", 1)


def test_identify_names_a_refused_key_and_a_loading_server():
    async def fetch_for(routes):
        async def fetch(path):
            return routes.get(path, (404, (), b"{}"))
        return fetch

    async def main():
        ident = await engines.identify(await fetch_for({"/v1/models": (401, (), b"{}")}))
        assert ident.refusal and "api_key" in ident.refusal
        ident = await engines.identify(await fetch_for({"/v1/models": (503, (), b"")}))
        assert ident.refusal is None and "503" in ident.waiting
        ident = await engines.identify(await fetch_for({}))
        assert "not an inference server" in ident.refusal and ident.engine is None

    run(main())
