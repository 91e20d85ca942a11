"""The Workers API on both gateways: one life cycle (POST, list, get, PATCH, PUT,
DELETE) of a third worker, bad worker specs and unknown ids.

The life cycle runs as one test: each step's answers are compared (with each
gateway's own worker id in the path) and every step's differences are reported
together at the end, so an early difference does not hide later ones. The worker is
removed again at the end (waited for, bounded), so the other cases see the two
workers they expect.
"""
from __future__ import annotations

import time

import pytest

from tests.conformance.case import Case, run
from tests.conformance.ledger import LEDGER, fail_message
from tests.conformance.rig import EXTRA_MODEL

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens there
SETTLE_TIMEOUT = 20.0  # registration is a few hundred ms; removal drains for drain_settle_secs (5 s)


def _find(gw, url: str) -> dict | None:
    r = gw.call("GET", "/workers")
    if r.status != 200:
        return None
    try:
        workers = r.json().get("workers", [])
    except ValueError:
        return None
    for w in workers:
        if isinstance(w, dict) and w.get("url") == url:
            return w
    return None


def _wait(gw, url: str, present: bool) -> bool:
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        w = _find(gw, url)
        if present and w is not None and (w.get("status") == "ready" or w.get("is_healthy") is True):
            return True
        if not present and w is None:
            return True
        time.sleep(0.2)
    return False


LOAD_TIMEOUT = 25.0  # both gateways poll engine loads every 10 s; the first poll's time differs


def _wait_loads(gw, url: str) -> bool:
    """Until the worker at ``url`` shows its first engine load report (``engine_load``):
    the time of each gateway's first poll differs, the report's shape is what is compared."""
    deadline = time.monotonic() + LOAD_TIMEOUT
    while time.monotonic() < deadline:
        w = _find(gw, url)
        if w is not None and isinstance(w.get("engine_load"), dict):
            return True
        time.sleep(0.25)
    return False


def _worker_id(gw, answer, url: str) -> str | None:
    try:
        wid = answer.json().get("worker_id")
    except (ValueError, AttributeError):
        wid = None
    if isinstance(wid, str) and wid:
        return wid
    w = _find(gw, url)
    return w.get("id") if w else None


def test_workers_lifecycle(rig):
    url = rig.extra_url
    left: list = []

    def step(name: str, method: str, path: str, body=None, ids: dict | None = None):
        LEDGER.count("Workers API steps")
        paths = {k: path.format(id=v) for k, v in ids.items()} if ids else None
        case = Case(f"workers: {name}", method, path, body=body, paths=paths,
                    route=f"{method} {path.replace('{id}', '{worker_id}')}")
        outcome = run(rig, case)
        left.extend(outcome.diffs)
        return outcome

    try:
        added = step("POST /workers", "POST", "/workers", {"url": url, "priority": 60, "labels": {"conf": "yes"}})
        for gw in (rig.rust, rig.ours):
            if not _wait(gw, url, True):
                pytest.fail(f"{gw.name}: {url} not ready {SETTLE_TIMEOUT}s after POST /workers\n"
                            + fail_message("workers", left))
        for gw in (rig.rust, rig.ours):
            if not _wait_loads(gw, url):
                pytest.fail(f"{gw.name}: {url} has no engine_load {LOAD_TIMEOUT}s after POST /workers\n"
                            + fail_message("workers", left))
        ids = {"rust": _worker_id(rig.rust, added.rust, url), "ours": _worker_id(rig.ours, added.ours, url)}
        assert all(ids.values()), f"no worker id: {ids}\n" + fail_message("workers", left)
        step("GET /workers", "GET", "/workers")
        step(f"GET /workers?model={EXTRA_MODEL}", "GET", f"/workers?model={EXTRA_MODEL}")
        step("GET /workers/{id}", "GET", "/workers/{id}", ids=ids)
        step("PATCH /workers/{id}", "PATCH", "/workers/{id}", {"priority": 10, "cost": 2.0, "labels": {"tier": "a"}},
             ids=ids)
        step("GET /workers/{id} after PATCH", "GET", "/workers/{id}", ids=ids)
        step("PATCH /workers/{id} bad field", "PATCH", "/workers/{id}", {"priority": "high"}, ids=ids)
        step("PUT /workers/{id}", "PUT", "/workers/{id}", {"url": url, "priority": 20}, ids=ids)
        for gw in (rig.rust, rig.ours):
            _wait(gw, url, True)
        step("GET /workers/{id} after PUT", "GET", "/workers/{id}", ids=ids)
        step("POST /workers duplicate url", "POST", "/workers", {"url": url})
        step("DELETE /workers/{id}", "DELETE", "/workers/{id}", ids=ids)
    finally:
        for gw in (rig.rust, rig.ours):
            if _find(gw, url) is not None:
                w = _find(gw, url)
                if w and w.get("id"):
                    gw.call("DELETE", f"/workers/{w['id']}")
        gone = {gw.name: _wait(gw, url, False) for gw in (rig.rust, rig.ours)}
    assert all(gone.values()), f"{url} still registered {SETTLE_TIMEOUT}s after DELETE: {gone}"
    step("GET /workers/{id} after DELETE", "GET", "/workers/{id}", ids=ids)
    assert not left, fail_message("workers life cycle", left)


BAD = [
    ("POST /workers empty spec", "POST", "/workers", {}),
    ("POST /workers url not a string", "POST", "/workers", {"url": 5}),
    ("POST /workers url not a url", "POST", "/workers", {"url": "not a url"}),
    ("POST /workers bad worker_type", "POST", "/workers", {"url": UNREACHABLE, "worker_type": "bogus"}),
    ("POST /workers bad connection_mode", "POST", "/workers",
     {"url": UNREACHABLE, "connection_mode": "carrier-pigeon"}),
    ("POST /workers priority not a number", "POST", "/workers", {"url": UNREACHABLE, "priority": "hi"}),
    ("POST /workers body not JSON", "POST", "/workers", b"{url"),
    ("POST /workers body a list", "POST", "/workers", [{"url": UNREACHABLE}]),
    ("GET /workers/{unknown}", "GET", "/workers/00000000-0000-0000-0000-000000000000", None),
    ("GET /workers/{not an id}", "GET", "/workers/not-an-id", None),
    ("PATCH /workers/{unknown}", "PATCH", "/workers/00000000-0000-0000-0000-000000000000", {"priority": 1}),
    ("PUT /workers/{unknown}", "PUT", "/workers/00000000-0000-0000-0000-000000000000",
     {"url": UNREACHABLE}),
    ("DELETE /workers/{unknown}", "DELETE", "/workers/00000000-0000-0000-0000-000000000000", None),
    ("wrong method on /workers", "DELETE", "/workers", None),
]


@pytest.mark.parametrize("name,method,path,body", BAD, ids=[b[0] for b in BAD])
def test_workers_bad_request(rig, name, method, path, body):
    LEDGER.count("Workers API steps")
    route = f"{method} {'/workers/{worker_id}' if path.startswith('/workers/') else path}"
    outcome = run(rig, Case(f"workers: {name}", method, path, body=body, route=route))
    # a spec a gateway accepted anyway is removed again, so later cases see two workers
    for gw in (rig.rust, rig.ours):
        w = _find(gw, UNREACHABLE)
        if w is not None and w.get("id"):
            gw.call("DELETE", f"/workers/{w['id']}")
    assert not outcome.diffs, fail_message(f"workers: {name}", outcome.diffs)
