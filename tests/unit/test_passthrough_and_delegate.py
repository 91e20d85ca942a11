"""The passthrough policy and the manual policy's delegate assignment mode, sans-I/O:
real ``Worker`` records, fake requests, no sockets."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from smg.config import build_config
from smg.routing.manual import ManualPolicy
from smg.routing.passthrough import PassthroughPolicy
from smg.routing.policies import FACTORIES, make_policy
from smg.routing.policy import Policy
from smg.workers.worker import Worker


class Req:
    def __init__(self, key: str | None = None) -> None:
        self.body = {"model": "m", "prompt": "hello"}
        self.path = b"/v1/completions"
        self.headers = [(b"x-smg-routing-key", key.encode())] if key else []

    def header(self, name: bytes):
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def routing_text(self) -> str:
        return "hello"

    def routing_tokens(self):
        return None


def workers(n: int) -> list:
    return [Worker(f"http://10.1.0.{i + 1}:8000", worker_id=f"w{i}") for i in range(n)]


# -- passthrough -------------------------------------------------------------------------------


def test_passthrough_is_a_policy_choice_and_takes_the_first_candidate():
    assert FACTORIES["passthrough"] is PassthroughPolicy
    assert build_config({"policy": "passthrough"}).policy == "passthrough"
    pol = make_policy("passthrough")
    ws = workers(3)
    ws[0].inflight = 50  # load does not matter
    assert all(pol.select(ws, Req(k)) is ws[0] for k in (None, "a", "b"))


def test_passthrough_moves_on_when_the_first_is_no_candidate_and_back_when_it_returns():
    pol = make_policy("passthrough")
    ws = workers(3)
    assert pol.select(ws[1:], Req()) is ws[1]       # w0 not ready / breaker open
    assert pol.select(ws, Req()) is ws[0]           # w0 ready again


# -- manual, assignment_mode delegate -----------------------------------------------------------


class Recording(Policy):
    """An underlying policy that picks the last candidate and records every event."""

    name = "recording"
    needs_text = True

    def __init__(self) -> None:
        self.events = []
        self.refuse = False

    def select(self, workers, request):
        self.events.append(("select", request.header(b"x-smg-routing-key")))
        return None if self.refuse else workers[-1]

    def on_worker_added(self, worker):
        self.events.append(("added", worker.id))

    def on_worker_removed(self, worker):
        self.events.append(("removed", worker.id))

    def on_complete(self, worker, ok):
        self.events.append(("complete", worker.id, ok))

    def maintain(self, now):
        self.events.append(("maintain", now))


def delegate(underlying=None) -> ManualPolicy:
    return ManualPolicy(SimpleNamespace(assignment_mode="delegate", max_idle_secs=60.0), underlying=underlying)


def test_delegate_is_an_assignment_mode_and_unset_means_random():
    assert build_config({"assignment_mode": "delegate"}).assignment_mode == "delegate"
    assert build_config({}).assignment_mode is None
    assert ManualPolicy(build_config({})).assignment_mode == "random"
    assert ManualPolicy(build_config({"assignment_mode": "delegate"})).assignment_mode == "delegate"


def test_delegate_new_key_goes_where_the_underlying_policy_says_then_stays():
    under = Recording()
    pol = delegate(under)
    ws = workers(3)
    first = pol.select(ws, Req("s1"))
    assert first is ws[2] and under.events == [("select", b"s1")]
    # pinned: the underlying policy is not asked again, even when its choice would differ
    assert all(pol.select(ws[::-1], Req("s1")) is ws[2] for _ in range(5))
    assert under.events == [("select", b"s1")]
    assert pol.snapshot() == {b"s1": ["w2"]}


def test_delegate_homeless_key_is_reassigned_by_the_underlying_policy():
    under = Recording()
    pol = delegate(under)
    ws = workers(3)
    pol.select(ws, Req("s1"))                          # -> w2
    assert pol.select(ws[:2], Req("s1")) is ws[1]      # w2 gone: the underlying picks w1
    assert pol.snapshot() == {b"s1": ["w2", "w1"]}
    assert pol.select(ws, Req("s1")) is ws[2]          # w2 back: its old worker first


def test_delegate_without_key_asks_the_underlying_policy_and_remembers_nothing():
    under = Recording()
    pol = delegate(under)
    ws = workers(2)
    assert pol.select(ws, Req()) is ws[1]
    assert pol.snapshot() == {}


def test_delegate_refusal_is_passed_on_and_nothing_is_pinned():
    under = Recording()
    under.refuse = True
    pol = delegate(under)
    assert pol.select(workers(2), Req("s1")) is None
    assert pol.snapshot() == {}


def test_delegate_forwards_every_event_to_the_underlying_policy():
    under = Recording()
    pol = delegate(under)
    w = workers(1)[0]
    pol.on_worker_added(w)
    pol.on_complete(w, True)
    pol.maintain(5.0)
    pol.on_worker_removed(w)
    assert under.events == [("added", "w0"), ("complete", "w0", True), ("maintain", 5.0), ("removed", "w0")]
    assert pol.needs_text  # the underlying policy reads the text, so the request must offer it


def test_delegate_for_manual_itself_takes_the_least_loaded_worker():
    pol = delegate()
    ws = workers(3)
    ws[0].inflight, ws[1].inflight, ws[2].inflight = 4, 1, 2
    assert pol.select(ws, Req("k1")) is ws[1]
    ws[1].inflight = 9
    assert pol.select(ws, Req("k1")) is ws[1]          # pinned despite its load
    assert pol.select(ws, Req("k2")) is ws[2]          # a new key: fewest in flight
    assert not pol.needs_text


def test_manual_rejects_a_mode_it_does_not_know():
    with pytest.raises(ValueError):
        ManualPolicy(SimpleNamespace(assignment_mode="best"))
