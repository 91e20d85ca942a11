"""WorkerManager on its narrow dependencies (settings, registry, event sink, clock):
registration, DP ranks probed at their address, per-worker retry policies, lifecycle
records, settings-driven probe timeouts. Real sockets on 127.0.0.1."""
from __future__ import annotations

import asyncio
import json
import uuid

import orjson
import pytest

from smg.config.load import build_config
from smg.observability.metrics import Metrics
from smg.testing.mock_worker import MockConfig, MockWorker
from smg.workers import events as E
from smg.workers.manager import WorkerManager
from smg.workers.registry import WorkerRegistry
from smg.workers.spec import validate
from smg.workers.worker import READY

FAST = dict(health_check_interval_secs=0.05, worker_startup_check_interval=0.05, health_success_threshold=1,
            health_failure_threshold=1, load_monitor_interval=0.05)


def run(coro, timeout: float = 20.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def until(pred, timeout: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return pred()


def manager(**settings) -> tuple:
    reg, bus, seen = WorkerRegistry(), E.EventBus(), []
    bus.subscribe(seen.append)
    return WorkerManager(build_config(dict(FAST, **settings)), reg, bus), reg, seen


class Engine:
    """A minimal engine on 127.0.0.1: fixed answers per path; records (path, host)."""

    def __init__(self, routes: dict, hang: bool = False) -> None:
        self.routes = routes
        self.hang = hang
        self.seen: list = []
        self.connections = 0
        self.server = None

    async def _handle(self, reader, writer) -> None:
        self.connections += 1
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            if self.hang:
                await asyncio.sleep(3600)
            target = head.split(" ", 2)[1]
            host = next((ln.split(":", 1)[1].strip() for ln in head.split("\r\n") if ln.lower().startswith("host:")), "")
            path = target.split("?")[0]
            self.seen.append((path, host))
            status, body = self.routes.get(path, (404, b"{}"))
            writer.write(b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                         b"connection: close\r\n\r\n%s" % (status, len(body), body))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def start(self) -> "Engine":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        self.server.close()


def dp_engine(size: int) -> Engine:
    return Engine({
        "/v1/models": (200, orjson.dumps({"object": "list", "data": [{"id": "dp-model", "owned_by": "sglang"}]})),
        "/health": (200, b""),
        "/get_server_info": (200, orjson.dumps({"dp_size": size})),
        "/v1/loads": (200, orjson.dumps({"loads": [{"dp_rank": r, "num_running_reqs": r} for r in range(size)]})),
    })


def test_registers_and_reports_through_the_event_sink_only():
    async def main():
        mw = await MockWorker(MockConfig()).start()
        m, reg, seen = manager()
        try:
            m.start()
            w = m.add(validate({"url": mw.url}))
            job = m.jobs[w.id]
            assert w.status != READY and job["job_type"] == "AddWorker" and job["status"] == "processing"
            assert job["worker_url"] == w.url and m.info(w)["job_status"] == job
            assert uuid.UUID(w.id).version == 7                  # SMG's id format
            assert await until(lambda: w.status == READY)
            assert w.models == ("mock-model",) and w.id not in m.jobs and "job_status" not in m.info(w)
            assert await until(lambda: w.engine is not None)     # load monitor on, at the address
            checks = [r for r in seen if isinstance(r, E.HealthChecked)]
            assert checks and checks[0] == E.HealthChecked(w.id, w.url, "regular", True)
            assert reg.candidates("mock-model") == [w] and m.info(w)["status"] == READY
            assert w.retry is None                               # no retry fields: the gateway's policy
        finally:
            await m.stop()
            await mw.stop()

    run(main())


def test_dp_ranks_from_server_info_stay_ready_with_health_checks_on():
    async def main():
        eng = await dp_engine(2).start()
        m, reg, seen = manager(dp_aware=True)
        try:
            m.start()
            first = m.add(validate({"url": eng.url}))
            assert await until(lambda: len(reg.candidates("dp-model")) == 2)
            ranks = sorted(reg.all(), key=lambda w: w.dp_rank)
            assert first not in ranks                           # replaced by one worker per rank
            assert [w.url for w in ranks] == [eng.url + "@0", eng.url + "@1"]
            assert {w.base_url for w in ranks} == {eng.url} and {w.dp_size for w in ranks} == {2}
            assert ranks[0].pool is ranks[1].pool
            n_probes = sum(1 for p, _ in eng.seen if p == "/health")
            assert await until(lambda: sum(1 for p, _ in eng.seen if p == "/health") >= n_probes + 4)
            assert all(w.status == READY for w in ranks)          # still ready after several probe rounds
            assert await until(lambda: all(w.engine is not None for w in ranks))
            host = eng.url.removeprefix("http://")
            assert {h for _, h in eng.seen} == {host}            # every request went to the address
            assert not any(isinstance(r, E.HealthChecked) and not r.ok for r in seen)
        finally:
            await m.stop()
            await eng.stop()

    run(main())


def test_per_worker_retry_policy_from_resilience():
    async def main():
        eng = await dp_engine(1).start()
        m, reg, _ = manager(retry_max_retries=4, retry_initial_backoff_ms=25.0, dp_aware=True)
        try:
            plain = m.add(validate({"url": eng.url}))
            assert plain.retry is None
            tuned = m.add(validate({"url": eng.url + "/", "dp_size": 2, "resilience": {
                "max_retries": 2, "backoff_multiplier": 2.0, "retryable_status_codes": [503],
                "cb_failure_threshold": 3}}))
            ranks = [w for w in reg.all() if w.dp_rank is not None]
            assert tuned in ranks and len(ranks) == 2
            for w in ranks:
                p = w.retry
                assert (p.max_retries, p.initial_backoff_ms, p.multiplier) == (2, 25.0, 2.0)
                assert p.retryable_status == frozenset({503}) and w.breaker.failure_threshold == 3
            off = m.add(validate({"url": "http://127.0.0.1:9", "resilience": {"disable_retry": True}}))
            assert off.retry.max_retries == 1 and off.retry.initial_backoff_ms == 25.0
            assert m.retry.max_retries == 4                       # the gateway's policy is untouched
        finally:
            await m.stop()
            await eng.stop()

    run(main())


def test_breaker_transitions_go_to_registry_and_sink():
    async def main():
        m, reg, seen = manager(disable_health_check=True, disable_load_monitoring=True)
        got = []
        reg.subscribe(got.append)
        try:
            w = m.add(validate({"url": "http://127.0.0.1:9", "models": ["x"],
                                "resilience": {"cb_failure_threshold": 1, "cb_timeout_secs": 0.0}}))
            assert await until(lambda: w.status == READY)
            m.record_outcome(w, False)
            assert E.BreakerTransition(w.id, w.url, "closed", "open") in seen
            assert E.BreakerChanged(w.id, True) in got and reg.candidates("x") == []
            m.sweep()                                             # the timeout (0 s) passed: half-open
            assert E.BreakerTransition(w.id, w.url, "open", "half_open") in seen
            assert reg.candidates("x") == [w]
        finally:
            await m.stop()

    run(main())


def test_registration_probe_timeout_and_backoff_come_from_settings():
    async def main():
        eng = await Engine({}, hang=True).start()
        m, reg, _ = manager(worker_probe_timeout_secs=0.05, worker_registration_max_backoff_secs=0.05)
        try:
            w = m.add(validate({"url": eng.url}))
            # each attempt: /v1/models, then /health, each cut off by the 50 ms timeout
            assert await until(lambda: eng.connections >= 6)
            assert m.jobs[w.id]["status"] == "processing" and w.status != READY
        finally:
            await m.stop()
            await eng.stop()

    run(main())


def test_file_discovery_reports_records(tmp_path):
    async def main():
        mw = await MockWorker(MockConfig()).start()
        manifest = tmp_path / "workers.json"
        manifest.write_text(json.dumps([{"url": mw.url}]))
        m, reg, seen = manager(discovery_file=str(manifest), discovery_check_interval_secs=0.1)
        try:
            m.start()
            assert await until(lambda: len(reg.candidates(None)) == 1)
            assert E.DiscoveryChanged("file", "registration", "success") in seen
            assert any(isinstance(r, E.DiscoverySynced) and r.source == "file" for r in seen)
            assert m.discovered_counts() == [("file", 1)]
            manifest.write_text(json.dumps([]))
            assert await until(lambda: len(reg) == 0)
            assert E.DiscoveryChanged("file", "deregistration", "removed") in seen
        finally:
            await m.stop()
            await mw.stop()

    run(main())


def test_metrics_consume_lifecycle_records_with_smgs_labels():
    reg = WorkerRegistry()
    m = Metrics(reg, [], lambda: [])
    bus = E.EventBus()
    bus.subscribe(m.on_event)
    bus.emit(E.HealthChecked("w1", "http://h:1@0", "decode", True))
    bus.emit(E.HealthChecked("w1", "http://h:1@0", "decode", False))
    bus.emit(E.BreakerTransition("w1", "http://h:1@0", "closed", "open"))
    bus.emit(E.DiscoverySynced("kubernetes", 0.2))
    bus.emit(E.DiscoveryChanged("file", "registration", "invalid"))
    bus.emit(E.DiscoveryChanged("file", "deregistration", "removed"))
    bus.emit(E.StatusChanged("w1", "ready"))                    # not a metrics record: ignored
    assert m.health_checks.value(("decode", "success")) == 1 and m.health_checks.value(("decode", "failure")) == 1
    assert m.cb_transitions.value(("http://h:1@0", "closed", "open")) == 1
    assert m.discovery_registrations.value(("file", "invalid")) == 1
    assert m.discovery_deregistrations.value(("file", "removed")) == 1
    fam = {f.name: f for f in m.collect()}
    sync = fam["smg_discovery_sync_duration_seconds"]
    assert any(s.labels.get("source") == "kubernetes" and s.name.endswith("_count") and s.value == 1
               for s in sync.samples)


def test_constructor_takes_no_gateway():
    cfg = build_config({})
    with pytest.raises(TypeError):
        WorkerManager(cfg)  # registry and event sink are required
    m = WorkerManager(cfg, WorkerRegistry(), E.EventBus(), clock=lambda: 42.0)
    assert m.loop is None and m.health is not None and m.loads is not None
    assert m.health.interval == cfg.health_check_interval_secs and m.loads.timeout == cfg.load_monitor_timeout_secs


@pytest.mark.parametrize("section, field, value", [
    ("resilience", "backoff_multiplier", 0.5), ("resilience", "jitter_factor", 1.5),
    ("resilience", "cb_failure_threshold", 0), ("resilience", "cb_success_threshold", 0),
    ("resilience", "retryable_status_codes", [42]), ("health", "success_threshold", 0),
    ("health", "failure_threshold", 0),
])
def test_a_spec_that_validates_builds_its_worker(section, field, value):
    """Bounds the breaker and the retry policy enforce are checked at validation, so an
    accepted POST /workers never fails while the worker is built."""
    from smg.workers.spec import SpecError

    with pytest.raises(SpecError) as e:
        validate({"url": "http://127.0.0.1:9", section: {field: value}})
    assert e.value.field == f"{section}.{field}"


def test_reconfigure_takes_retry_breaker_and_probe_settings_keeping_breaker_state():
    async def main():
        m, reg, _ = manager(disable_load_monitoring=True, retry_max_retries=4, cb_failure_threshold=2)
        try:
            plain = m.add(validate({"url": "http://127.0.0.1:9"}))
            tuned = m.add(validate({"url": "http://127.0.0.1:10", "resilience": {"max_retries": 2}}))
            m.record_outcome(plain, False)
            m.record_outcome(plain, False)                         # two failures: open
            assert plain.breaker.state == "open"
            new = build_config(dict(FAST, disable_load_monitoring=True, retry_max_retries=7,
                                    retry_initial_backoff_ms=10.0, cb_failure_threshold=9,
                                    cb_timeout_duration_secs=5.0, health_check_interval_secs=2.5))
            retry = m.reconfigure(new)
            assert retry is m.retry and retry.max_retries == 7
            assert plain.retry is None                             # the gateway's policy, the new one
            assert (tuned.retry.max_retries, tuned.retry.initial_backoff_ms) == (2, 10.0)  # its field over the new base
            assert plain.breaker.state == "open" and plain.breaker.consecutive_failures == 2  # state kept
            assert (plain.breaker.failure_threshold, plain.breaker.timeout) == (9, 5.0)
            m.record_outcome(tuned, False)
            m.record_outcome(tuned, False)
            assert tuned.breaker.state == "closed"                 # the new threshold (9) counts
            assert m.health.interval == 2.5 and reg.get(plain.id) is plain
        finally:
            await m.stop()

    run(main())
