"""Routing policies through a running gateway and mock workers (real sockets).

Which worker served a request is read from the mock's ``x-mock-worker`` response header,
or, for requests held open on purpose (mocks with a token delay), from the gateway's own
per-worker in-flight counts. Held requests are ended by closing the client socket, which
also exercises the disconnect path. Every wait is a bounded poll.
"""
from __future__ import annotations

import json
import socket
import struct
import time

import openai
import pytest

from smg.routing import policies
from smg.testing.mock_worker import MockConfig, MockWorker

from . import rawhttp

ALL_POLICIES = sorted(n for n in policies.FACTORIES if n not in ("round_robin", "random"))


# -- helpers -------------------------------------------------------------------------------


def raw_post(body: dict, path: bytes = b"/v1/chat/completions", headers: dict | None = None) -> bytes:
    data = json.dumps(body).encode()
    extra = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in (headers or {}).items())
    return (b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s"
            % (path, len(data), extra, data))


def post(h, body: dict, path: bytes = b"/v1/chat/completions", headers: dict | None = None):
    """One request, answer read whole: (status, headers, body)."""
    (resp,) = rawhttp.request(h.port, raw_post(body, path, headers), methods=["POST"])
    return resp


def served_by(h, body: dict, headers: dict | None = None) -> str:
    status, hdrs, _ = post(h, body, headers=headers)
    assert status == 200
    return hdrs["x-mock-worker"]


def wait_until(fn, timeout: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def inflight(h) -> dict:
    """Mock worker id -> gateway in-flight count, read on the gateway's loop."""
    by_url = {w.url: w.config.worker_id for w in h.workers}
    return h.on_loop(lambda: {by_url.get(w.url, w.url): w.inflight for w in h.gw.registry.all()})


def hold(h, body: dict, headers: dict | None = None) -> tuple:
    """Sends a request that the (slow) mock keeps open; returns (socket, worker id) once the
    gateway has dispatched it."""
    before = inflight(h)
    s = rawhttp.connect(h.port)
    s.sendall(raw_post(body, headers=headers))

    def dispatched():
        now = inflight(h)
        return now if sum(now.values()) > sum(before.values()) else None

    after = wait_until(dispatched, what="dispatch")
    (wid,) = [k for k in after if after[k] > before.get(k, 0)]
    return s, wid


def reset(s: socket.socket) -> None:
    """Closes with an RST (SO_LINGER 0): the gateway sees the client gone at once. A plain
    close is a half-close, after which the gateway still finishes the response."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def release(h, socks) -> None:
    for s in socks:
        reset(s)
    wait_until(lambda: not any(inflight(h).values()), what="in-flight back to zero")


def chat(system: str, turns: list) -> dict:
    msgs = [{"role": "system", "content": system}]
    for i, t in enumerate(turns):
        if i:
            msgs.append({"role": "assistant", "content": f"answer {i}"})
        msgs.append({"role": "user", "content": t})
    return {"model": "mock-model", "messages": msgs}


def slow(worker_id: str) -> MockConfig:
    # a request is held ~4 s unless the client leaves first (the tests close it early)
    return MockConfig(worker_id=worker_id, token_delay=0.1, num_chunks=40)


# -- cache_aware -----------------------------------------------------------------------------


def test_cache_aware_conversations_stick_to_their_worker(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id=f"w{i}") for i in range(3)], policy="cache_aware")
    convs = [f"Conversation {c} system prompt. " + "You are helpful and terse. " * 20 for c in range(6)]
    seen: dict = {c: [] for c in range(6)}
    for turn in range(4):
        for c, system in enumerate(convs):
            body = chat(system, [f"question {k} of conversation {c}" for k in range(turn + 1)])
            seen[c].append(served_by(h, body))
    for c, workers in seen.items():
        assert len(set(workers)) == 1, (c, workers)
    # new conversations (cache misses) went to the least-loaded worker, fewest processed first
    assert {seen[c][0] for c in range(6)} == {"w0", "w1", "w2"}


def test_cache_aware_spills_when_owner_overloaded(make_gateway):
    h = make_gateway(workers=[slow("a"), slow("b")], policy="cache_aware",
                     balance_abs_threshold=2, balance_rel_threshold=1.5)
    body = chat("Shared system prompt. " * 30, ["same question"])
    socks, got = [], []
    try:
        for _ in range(4):
            s, wid = hold(h, body)
            socks.append(s)
            got.append(wid)
        # three follow the cache; the fourth would make the owner 3 ahead of an idle peer
        assert got[:3] == [got[0]] * 3 and got[3] != got[0], got
    finally:
        release(h, socks)


# -- consistent_hashing ----------------------------------------------------------------------


def test_consistent_hashing_moves_about_one_nth_on_add(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id=f"w{i}") for i in range(3)], policy="consistent_hashing")
    body = chat("sys", ["hi"])

    def assign():
        return {k: served_by(h, body, {"X-SMG-Routing-Key": f"user-{k}"}) for k in range(240)}

    before = assign()
    assert set(before.values()) == {"w0", "w1", "w2"}
    extra = h.run(MockWorker(MockConfig(worker_id="w3")).start("127.0.0.1", 0))
    try:
        gw_w = h.on_loop(lambda: h.gw.add_worker(extra.url))
        wait_until(lambda: h.on_loop(lambda: gw_w.status) == "ready", what="new worker ready")
        after = assign()
        moved = [k for k in before if before[k] != after[k]]
        assert all(after[k] == "w3" for k in moved)
        assert 0.12 < len(moved) / len(before) < 0.40, len(moved)  # 1/4 expected
        h.on_loop(lambda: h.gw.registry.remove(gw_w.id))
        assert assign() == before  # only the removed worker's keys moved back
    finally:
        h.run(extra.stop())


def test_consistent_hashing_target_worker_header(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id=f"w{i}") for i in range(3)], policy="consistent_hashing")
    body = chat("sys", ["hi"])
    assert served_by(h, body, {"X-SMG-Target-Worker": "1"}) == "w1"
    status, _, _ = post(h, body, headers={"X-SMG-Target-Worker": "7"})
    assert status == 503


# -- manual ------------------------------------------------------------------------------------


def test_manual_key_sticks_and_moves_when_worker_leaves(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id=f"w{i}") for i in range(3)], policy="manual")
    body = chat("sys", ["hello"])
    key = {"X-SMG-Routing-Key": "session-42"}
    home = served_by(h, body, key)
    assert all(served_by(h, body, key) == home for _ in range(8))
    url = next(w.url for w in h.workers if w.config.worker_id == home)
    h.on_loop(lambda: h.gw.registry.remove(h.gw.registry.find_url(url).id))
    new_home = served_by(h, body, key)
    assert new_home != home
    assert all(served_by(h, body, key) == new_home for _ in range(5))


# -- power_of_two -----------------------------------------------------------------------------


def test_power_of_two_prefers_idle_worker(make_gateway):
    h = make_gateway(workers=[slow("a"), slow("b")], policy="power_of_two")
    body = chat("sys", ["hi"])
    for _ in range(4):
        socks = []
        try:
            s1, busy = hold(h, body)
            socks.append(s1)
            s2, second = hold(h, body)
            socks.append(s2)
            assert second != busy
        finally:
            release(h, socks)


# -- in-flight accounting ---------------------------------------------------------------------


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_inflight_returns_to_zero(make_gateway, policy):
    h = make_gateway(workers=[MockConfig(worker_id="a", num_chunks=4), MockConfig(worker_id="b", num_chunks=4)],
                     policy=policy)
    c = openai.OpenAI(base_url=h.url + "/v1", api_key="k", max_retries=0, timeout=10)
    hdr = {"X-SMG-Routing-Key": "rk"}
    for i in range(4):  # streams
        stream = c.chat.completions.create(model="mock-model", stream=True, extra_headers=hdr,
                                           messages=[{"role": "user", "content": f"stream {i}"}])
        assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    for w in h.workers:  # worker errors: a 500 answer, then a connection reset
        w.config.fail_status = 500
    assert post(h, chat("s", ["x"]), headers=hdr)[0] == 500
    for w in h.workers:
        w.config.fail_status = None
        w.config.fail_mode = "reset"
    assert post(h, chat("s", ["y"]), headers=hdr)[0] == 502
    for w in h.workers:
        w.config.fail_mode = None
        w.config.token_delay = 0.2
    # client disconnects mid-stream, with most tokens still to come: RSTs and half-closes
    for i in range(3):
        body = {"model": "mock-model", "stream": True, "messages": [{"role": "user", "content": f"bye {i}"}]}
        s = rawhttp.connect(h.port)
        s.sendall(raw_post(body, headers=hdr))
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        if i % 2:
            s.close()
        else:
            reset(s)
    wait_until(lambda: not any(inflight(h).values()), what="in-flight back to zero")
    # every attempt was counted once (the gateway may retry the failed ones)
    assert h.on_loop(lambda: sum(w.processed for w in h.gw.registry.all())) >= 4 + 2 + 3
