"""Worker health: the status table, the tracker, and the prober (fake and real HTTP)."""
from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smg.config.schema import GatewayConfig
from smg.testing.mock_worker import MockConfig, MockWorker
from smg.workers import guards
from smg.workers import health as H
from smg.workers.health import HealthChecker, HealthTracker
from smg.workers.worker import DRAINING, FAILED, NOT_READY, PENDING, READY, Worker

CFG = GatewayConfig()


def checker(on_status, **kw) -> HealthChecker:
    """A checker with the settings table's values except those given."""
    return HealthChecker.from_config(CFG, on_status, **kw)


def run(coro, timeout: float = 10.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def feed(t: HealthTracker, pattern: str) -> list:
    """'+' = success, '-' = failure; returns the transitions seen."""
    return [s for s in (t.on_probe(c == "+") for c in pattern) if s is not None]


# -- the table

def test_table_is_total():
    assert set(H.TRANSITIONS) == {(s, i) for s in H.STATUSES for i in H.INPUTS}
    for guards in H.TRANSITIONS.values():
        for counter, limit, target in guards:
            assert target in H.STATUSES
            assert counter is H.ALWAYS or counter in (H.SUCCESSES, H.FAILURES, H.PROBES)


def test_draining_is_terminal_in_table():
    for i in H.INPUTS:
        assert H.TRANSITIONS[(DRAINING, i)] == ()


# -- the rules, one by one (defaults: success 2, failure 3)

def test_pending_to_ready_after_success_threshold():
    t = HealthTracker(2, 3)
    assert t.status == PENDING
    assert t.on_probe(True) is None
    assert t.on_probe(True) == READY
    assert t.status == READY


def test_pending_success_streak_must_be_consecutive():
    t = HealthTracker(2, 3)
    assert feed(t, "+-+-+") == []
    assert t.status == PENDING
    assert feed(t, "+") == [READY]


def test_pending_to_failed_after_ten_times_failure_threshold_probes():
    t = HealthTracker(2, 3)
    assert feed(t, "-" * 29) == []
    assert t.on_probe(False) == FAILED


def test_pending_flapping_still_fails_on_total_probes():
    t = HealthTracker(3, 1)  # limit 10 probes; streak of 3 never reached
    assert feed(t, "++-" * 3) == []
    assert t.status == PENDING
    assert t.on_probe(True) == FAILED  # 10th probe, streak only 1


def test_ready_to_not_ready_after_failure_threshold():
    t = HealthTracker(2, 3, READY)
    assert feed(t, "--+--") == []  # a success resets the streak
    assert t.on_probe(False) == NOT_READY


def test_not_ready_back_to_ready():
    t = HealthTracker(2, 3, READY)
    assert feed(t, "---") == [NOT_READY]
    assert feed(t, "+-+") == []
    assert feed(t, "+") == [READY]


def test_not_ready_to_failed_counts_failures_since_last_success():
    t = HealthTracker(2, 3, READY)
    assert feed(t, "---") == [NOT_READY]
    assert feed(t, "-----") == []        # 8 in a row
    assert feed(t, "-") == [FAILED]      # 9 = 3 x 3


def test_not_ready_to_failed_streak_resets_on_success():
    t = HealthTracker(2, 3, READY)
    feed(t, "---")
    feed(t, "+")
    assert feed(t, "--------") == []     # 8 since the success
    assert feed(t, "-") == [FAILED]


def test_failed_keeps_probing_and_rejoins():
    # smg#2468: failed workers come back after success_threshold successes.
    t = HealthTracker(2, 3, FAILED)
    assert feed(t, "-" * 50) == []
    assert feed(t, "+-+") == []
    assert feed(t, "+") == [READY]


def test_drain_from_every_status_and_terminal():
    for s in (PENDING, READY, NOT_READY, FAILED):
        t = HealthTracker(1, 1, s)
        assert t.drain() == DRAINING
        assert t.drain() is None
        assert feed(t, "++++----") == []
        assert t.status == DRAINING


def test_thresholds_validated():
    with pytest.raises(ValueError):
        HealthTracker(0, 3)
    with pytest.raises(ValueError):
        HealthTracker(2, 0)
    with pytest.raises(ValueError):
        HealthTracker(2, 3, "bogus")


def test_reset():
    t = HealthTracker(2, 3)
    feed(t, "+")
    t.reset(READY)
    assert (t.status, t.successes, t.failures, t.probes) == (READY, 0, 0, 0)


# -- hypothesis: any sequence lands in a valid status, exactly as an independent model says

class Model:
    """The rules written out as plain if/else (an oracle for the table)."""

    def __init__(self, s: int, f: int, status: str) -> None:
        self.s, self.f, self.status = s, f, status
        self.succ = self.fail = self.probes = 0

    def step(self, inp: str) -> None:
        if inp == H.DRAIN:
            self.status = DRAINING
            self.probes = 0
            return
        ok = inp == H.PROBE_OK
        self.succ, self.fail = (self.succ + 1, 0) if ok else (0, self.fail + 1)
        self.probes += 1
        st, new = self.status, None
        if st == PENDING:
            if ok and self.succ >= self.s:
                new = READY
            elif self.probes >= 10 * self.f:
                new = FAILED
        elif st == READY and not ok and self.fail >= self.f:
            new = NOT_READY
        elif st == NOT_READY:
            if ok and self.succ >= self.s:
                new = READY
            elif not ok and self.fail >= 3 * self.f:
                new = FAILED
        elif st == FAILED and ok and self.succ >= self.s:
            new = READY
        if new is not None:
            self.status = new
            self.probes = 0


EDGES = {(s, g[2]) for (s, _), gs in H.TRANSITIONS.items() for g in gs}
assert EDGES == guards.edges(H.TRANSITIONS)


@settings(max_examples=300, deadline=None)
@given(s=st.integers(1, 4), f=st.integers(1, 4), initial=st.sampled_from(H.STATUSES),
       inputs=st.lists(st.sampled_from(H.INPUTS), max_size=120))
def test_any_sequence_matches_model(s, f, initial, inputs):
    t = HealthTracker(s, f, initial)
    m = Model(s, f, initial)
    for inp in inputs:
        before = t.status
        if inp == H.DRAIN:
            got = t.drain()
        else:
            got = t.on_probe(inp == H.PROBE_OK)
        m.step(inp)
        assert t.status in H.STATUSES
        assert t.status == m.status
        if got is None:
            assert t.status == before
        else:
            assert got == t.status != before
            assert (before, got) in EDGES
        if before == DRAINING:
            assert t.status == DRAINING


@settings(max_examples=100, deadline=None)
@given(s=st.integers(1, 5), f=st.integers(1, 5))
def test_failing_worker_always_reaches_failed(s, f):
    # From any routable-ish status, enough failures end in FAILED, never stuck.
    for initial in (PENDING, READY, NOT_READY):
        t = HealthTracker(s, f, initial)
        for _ in range(10 * f + 3 * f + 1):
            t.on_probe(False)
        assert t.status == FAILED


# -- the prober, with a fake probe, clock and sleep

class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_checker(results: dict, clock: FakeClock, **kw):
    events = []
    calls = []

    async def probe(worker, api_key):
        calls.append((worker.id, api_key))
        r = results[worker.id]
        if isinstance(r, Exception):
            raise r
        return r

    chk = checker(lambda w, s: events.append((w.id, s)), probe=probe, clock=clock,
                        jitter=0.0, **kw)
    return chk, events, calls


def test_checker_moves_workers_and_reports():
    async def main():
        clock = FakeClock()
        a, b = Worker("http://127.0.0.1:1", worker_id="a"), Worker("http://127.0.0.1:2", worker_id="b")
        results = {"a": True, "b": False}
        chk, events, calls = make_checker(results, clock, interval=10.0, success_threshold=2,
                                          failure_threshold=1, api_key="k")
        chk.add(a)
        chk.add(b, api_key="kb")
        assert await chk.check_once() == 2
        assert calls == [("a", "k"), ("b", "kb")]
        assert await chk.check_once() == 0       # not due yet
        clock.now += 10
        assert await chk.check_once() == 2
        assert ("a", READY) in events
        assert chk.tracker(a).status == READY and chk.tracker(b).status == PENDING
        # b fails for 10 x 1 probes -> failed
        for _ in range(8):
            clock.now += 10
            await chk.check_once()
        assert ("b", FAILED) in events
        # and comes back (smg#2468)
        results["b"] = True
        for _ in range(2):
            clock.now += 10
            await chk.check_once()
        assert events[-1] == ("b", READY)

    run(main())


def test_checker_probe_exception_is_failure():
    async def main():
        from smg.errors import UpstreamError
        clock = FakeClock()
        w = Worker("http://127.0.0.1:1", worker_id="x")
        chk, events, _ = make_checker({"x": UpstreamError("boom")}, clock, failure_threshold=1,
                                      success_threshold=1)
        chk.add(w, initial=READY)
        await chk.check_once(force=True)
        assert events == [("x", NOT_READY)]

    run(main())


def test_checker_remove_unhealthy():
    async def main():
        clock = FakeClock()
        w = Worker("http://127.0.0.1:1", worker_id="x")
        failed = []
        chk, events, calls = make_checker({"x": False}, clock, failure_threshold=1,
                                          remove_unhealthy=True, on_failed=failed.append)
        chk.add(w, initial=READY)
        for _ in range(3):
            await chk.check_once(force=True)
        assert events == [("x", NOT_READY), ("x", FAILED)]
        assert failed == [w]
        assert len(chk) == 0
        await chk.check_once(force=True)
        assert len(calls) == 3

    run(main())


def test_checker_drain_stops_probing():
    async def main():
        clock = FakeClock()
        w = Worker("http://127.0.0.1:1", worker_id="x")
        chk, events, _ = make_checker({"x": True}, clock)
        chk.add(w)
        chk.drain(w)
        assert events == [("x", DRAINING)]
        assert await chk.check_once(force=True) == 0

    run(main())


def test_checker_on_result_and_removed_mid_probe():
    async def main():
        clock = FakeClock()
        w = Worker("http://127.0.0.1:1", worker_id="x")
        results = []
        gate = asyncio.Event()

        async def probe(worker, key):
            await gate.wait()
            return True

        chk = checker(lambda *_: None, probe=probe, clock=clock,
                            on_result=lambda wk, ok: results.append(ok))
        chk.add(w)
        task = asyncio.ensure_future(chk.check_once())
        await asyncio.sleep(0)
        chk.remove(w)
        gate.set()
        await task
        assert results == []  # the result of a removed worker is dropped

    run(main())


def test_checker_jitter_bounds():
    async def main():
        import random
        clock = FakeClock()
        workers = [Worker(f"http://127.0.0.1:{i + 1}", worker_id=f"w{i}") for i in range(50)]
        chk = checker(lambda *_: None, probe=lambda w, k: asyncio.sleep(0, True), clock=clock,
                      interval=60.0, startup_interval=None, jitter=0.2, rng=random.Random(7))
        for w in workers:
            chk.add(w)
        await chk.check_once()
        dues = [e.due - clock.now for e in chk._entries.values()]
        assert all(48.0 <= d <= 72.0 for d in dues)
        assert len({round(d, 6) for d in dues}) > 40  # spread out
        assert 48.0 <= chk.next_wakeup() <= 72.0

    run(main())


def test_checker_startup_interval_for_pending():
    async def main():
        clock = FakeClock()
        w = Worker("http://127.0.0.1:1", worker_id="x")
        chk, events, _ = make_checker({"x": True}, clock, interval=60.0, startup_interval=5.0)
        chk.add(w)
        await chk.check_once()
        assert chk.next_wakeup() == pytest.approx(5.0)
        clock.now += 5
        await chk.check_once()
        assert events == [("x", READY)]
        assert chk.next_wakeup() == pytest.approx(60.0)

    run(main())


def test_run_wakes_on_add():
    async def main():
        clock = FakeClock()
        forever = asyncio.Event()
        probed = asyncio.Event()

        async def probe(worker, key):
            probed.set()
            return True

        async def sleep(d):
            await forever.wait()  # only a wake-up can end the wait

        chk = checker(lambda *_: None, probe=probe, clock=clock, sleep=sleep, interval=60.0)
        task = asyncio.ensure_future(chk.run())
        await asyncio.sleep(0.01)
        chk.add(Worker("http://127.0.0.1:1", worker_id="x"))
        await asyncio.wait_for(probed.wait(), 2)
        await chk.stop()  # not started via start(): stop is a no-op
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())


def test_run_bounded_rounds():
    async def main():
        clock = FakeClock()
        slept = []

        async def sleep(d):
            slept.append(d)
            clock.now += d

        w = Worker("http://127.0.0.1:1", worker_id="x")
        chk, events, calls = make_checker({"x": True}, clock, interval=7.0)
        chk._sleep = sleep
        chk.add(w)
        await chk.run(rounds=3)
        assert len(calls) == 3
        assert slept == [7.0, 7.0, 7.0]
        assert events == [("x", READY)]

    run(main())


# -- the real HTTP probe over loopback

def test_http_probe_against_mock_worker():
    async def main():
        mw = await MockWorker(MockConfig()).start()
        try:
            w = Worker(mw.url, worker_id="m")
            events = []
            chk = checker(lambda wk, s: events.append(s), success_threshold=1, failure_threshold=1,
                                timeout=2.0)
            chk.add(w)
            await chk.check_once(force=True)
            assert events == [READY]
            mw.config.health_status = 503
            await chk.check_once(force=True)
            assert events == [READY, NOT_READY]
        finally:
            await mw.stop()
        # the worker is gone: connection refused is a failure
        await chk.check_once(force=True)
        await chk.check_once(force=True)
        assert events[-1] == FAILED

    run(main())


def test_http_probe_sends_bearer_and_endpoint():
    async def main():
        seen = []

        async def handle(reader, writer):
            head = await reader.readuntil(b"\r\n\r\n")
            seen.append(head.decode())
            writer.write(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            chk = checker(lambda *_: None, endpoint="readiness", api_key="sekret", timeout=2.0)
            ok = await chk.http_probe(Worker(f"http://127.0.0.1:{port}"), "sekret")
            assert ok is True
            assert seen[0].startswith("GET /readiness HTTP/1.1")
            assert "authorization: Bearer sekret" in seen[0]
        finally:
            server.close()
            await server.wait_closed()

    run(main())


def test_http_probe_goes_to_the_address_of_a_dp_rank():
    """``base@rank`` is a logical key: parsed as a URL its ``@`` makes ``base`` user-info
    and the probe would go nowhere. The probe uses ``base_url``, and the rank gets ready."""
    async def main():
        mw = await MockWorker(MockConfig()).start()
        try:
            ranks = [Worker(mw.url, worker_id=f"r{i}", dp_rank=i) for i in range(2)]
            assert [w.url for w in ranks] == [mw.url + "@0", mw.url + "@1"]
            events = []
            chk = checker(lambda wk, s: events.append((wk.id, s)), success_threshold=1, timeout=2.0)
            for w in ranks:
                chk.add(w)
            await chk.check_once(force=True)
            assert sorted(events) == [("r0", READY), ("r1", READY)]
        finally:
            await mw.stop()

    run(main())


def test_checker_settings_come_from_the_table():
    chk = checker(lambda *_: None)
    assert (chk.endpoint, chk.interval, chk.timeout, chk.success_threshold, chk.failure_threshold,
            chk.startup_interval, chk.remove_unhealthy) == \
        (CFG.health_check_endpoint, CFG.health_check_interval_secs, CFG.health_check_timeout_secs,
         CFG.health_success_threshold, CFG.health_failure_threshold, CFG.worker_startup_check_interval,
         CFG.remove_unhealthy_workers)
    cfg = CFG.replace(health_check_endpoint="ready", health_failure_threshold=7, remove_unhealthy_workers=True)
    chk = HealthChecker.from_config(cfg, lambda *_: None)
    assert (chk.endpoint, chk.failure_threshold, chk.remove_unhealthy) == ("/ready", 7, True)
    with pytest.raises(TypeError):
        HealthChecker(lambda *_: None)  # no value restated: every setting is required
    with pytest.raises(TypeError):
        HealthTracker()


def test_unknown_input_is_a_bug():
    t = HealthTracker(2, 3)
    with pytest.raises(ValueError, match="no health transition"):
        t._apply("bogus")
