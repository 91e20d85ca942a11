"""The priority scheduler core without sockets or a loop (smg/admission/scheduler.py):
class parsing, reservations, SMG's capacity tiers, strict-priority dispatch, starvation
promotion, queue timeouts, victim choice — and a Hypothesis state machine that checks it
never admits beyond capacity (or past a higher class's reservation) and never loses or
double-counts a slot."""
from __future__ import annotations

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from smg.admission import scheduler as S
from smg.admission.scheduler import (BULK, DEFAULT, INTERACTIVE, SYSTEM, ClassConfig, Entry, PriorityScheduler,
                                     fleet_capacity, parse_config, parse_priority, reservations)


def flat(queue_size=4, timeout=10.0, starve=1000.0, preempt=(False, False, True, True), floors=(0, 0, 0, 0)):
    """Four classes without shares: floors, one queue size and timeout, no starvation."""
    return tuple(ClassConfig(floors[c], 0.0, queue_size, timeout, starve, preempt[c]) for c in S.CLASSES)


def admit(s, cls, now=0.0):
    e = Entry(cls)
    return e, s.try_admit(e, now)


@pytest.mark.parametrize("value, want", [
    (None, (DEFAULT, False)), (b"system", (SYSTEM, False)), (b"Interactive", (INTERACTIVE, False)),
    (b"  bulk\t", (BULK, False)), (b"DEFAULT", (DEFAULT, False)), (b"", (DEFAULT, False)),
    (b"urgent", (DEFAULT, True)), (b"123", (DEFAULT, True)),
])
def test_priority_header_parses_case_insensitively_and_unknown_is_default(value, want):
    assert parse_priority(value) == want


def test_a_higher_class_holds_its_unused_reservation_back_from_lower_ones():
    s = PriorityScheduler(flat(floors=(0, 0, 0, 32)), 128)
    assert s.headroom(BULK) == 96 and s.headroom(SYSTEM) == 128   # own reservation never limits itself
    for _ in range(32):
        assert admit(s, SYSTEM)[1]
    assert s.headroom(BULK) == 96                                   # a used reservation is simply in flight


def test_reservations_follow_capacity_and_a_dip_cuts_the_lowest_classes_first():
    assert reservations(S.DEFAULT_CLASSES, 4096) == [0, 410, 1024, 32]
    assert reservations(S.DEFAULT_CLASSES, 1000) == [0, 100, 250, 32]
    # floors 128 + 32 on a capacity of 100: default's share goes first, then interactive's
    assert reservations(S.DEFAULT_CLASSES, 100) == [0, 0, 68, 32]
    assert sum(reservations(S.DEFAULT_CLASSES, 10)) == 10


def test_fleet_capacity_has_smgs_four_tiers():
    assert fleet_capacity([256, 256], override=8, fallback=4096) == (8, S.SOURCE_OVERRIDE)
    assert fleet_capacity([256, 128], 0, 4096) == (384, S.SOURCE_REPORTED)
    assert fleet_capacity([256, None], 0, 4096) == (256 + S.SLOTS_PER_WORKER, S.SOURCE_MIXED)
    assert fleet_capacity([None, None], 0, 4096) == (2 * S.SLOTS_PER_WORKER, S.SOURCE_MIXED)
    assert fleet_capacity([], 0, 4096) == (4096, S.SOURCE_FALLBACK)


def test_waiters_are_admitted_highest_class_first_and_fifo_within_a_class():
    s = PriorityScheduler(flat(), 1)
    held, ok = admit(s, DEFAULT)
    assert ok
    order = [Entry(c) for c in (BULK, DEFAULT, BULK, INTERACTIVE, DEFAULT, SYSTEM)]
    for i, e in enumerate(order):
        assert not s.try_admit(e, float(i)) and s.enqueue(e, float(i))
    seen = []
    nxt = held
    while True:
        got = s.release(nxt, 10.0)
        if not got:
            break
        ((nxt, promoted),) = got
        assert not promoted
        seen.append(nxt)
    assert seen == [order[5], order[3], order[1], order[4], order[0], order[2]]
    assert s.inflight == 0 and s.queued == 0   # the last one released too


def test_a_full_queue_refuses_and_a_zero_queue_refuses_at_once():
    cfg = list(flat(queue_size=1))
    cfg[BULK] = ClassConfig(0, 0.0, 0, 10.0, 1000.0, False)
    s = PriorityScheduler(tuple(cfg), 1)
    admit(s, DEFAULT)
    assert s.enqueue(Entry(DEFAULT), 0.0) and not s.enqueue(Entry(DEFAULT), 0.0)
    assert not s.enqueue(Entry(BULK), 0.0)


def test_queue_timeouts_expire_in_order_and_next_wakeup_names_the_first():
    s = PriorityScheduler(flat(timeout=5.0, starve=1000.0), 1)
    admit(s, DEFAULT)
    a, b = Entry(DEFAULT), Entry(SYSTEM)
    s.enqueue(a, 1.0)
    s.enqueue(b, 2.0)
    assert s.next_wakeup() == 6.0
    assert s.expire(5.9) == [] and s.expire(6.0) == [a] and a.state == S.EXPIRED
    assert s.next_wakeup() == 7.0 and s.expire(100.0) == [b] and s.queued == 0 and s.next_wakeup() is None


def test_a_starved_head_is_promoted_into_a_reserved_but_unused_slot():
    cfg = list(flat(floors=(0, 0, 0, 1)))
    cfg[BULK] = ClassConfig(0, 0.0, 4, 100.0, 3.0, False)
    s = PriorityScheduler(tuple(cfg), 2)
    held, ok = admit(s, DEFAULT)
    assert ok
    e = Entry(BULK)
    assert not s.try_admit(e, 0.0)    # the last free slot is system's reservation
    s.enqueue(e, 0.0)
    assert s.next_wakeup() == 3.0     # when it starves
    assert s.dispatch(2.0) == []
    assert s.dispatch(3.5) == [(e, True)] and s.inflight == 2 and s.counts[BULK] == 1


def test_victims_are_lowest_class_first_then_most_recently_admitted():
    s = PriorityScheduler(flat(), 4)
    d1 = admit(s, DEFAULT)[0]
    b1 = admit(s, BULK)[0]
    b2 = admit(s, BULK)[0]
    i1 = admit(s, INTERACTIVE)[0]
    asked = []

    def probe(v):
        asked.append(v)
        return v is not b2 or None     # b2 is "not now" (not in an exchange yet)
    assert s.pick_victim(SYSTEM, probe) is b1 and asked == [b2, b1]
    sys_e = Entry(SYSTEM)
    s.preempt(b1, sys_e, 1.0)
    assert b1.state == S.PREEMPTED and s.counts == [1, 1, 1, 1] and sys_e.state == S.ADMITTED
    assert s.release(b1, 2.0) == () and s.counts == [1, 1, 1, 1]   # its slot is the preemptor's now
    # a victim that produced a byte is dropped from the candidates for good
    asked.clear()
    assert s.pick_victim(INTERACTIVE, lambda v: False) is None and asked == []
    assert not s.running[BULK] and not s.running[DEFAULT]
    assert i1.state == S.ADMITTED and d1.state == S.ADMITTED


def test_no_victim_when_one_freed_slot_would_not_be_enough():
    s = PriorityScheduler(flat(), 3)
    for _ in range(3):
        admit(s, BULK)
    s.set_capacity(1)                     # a dip: 3 in flight, 1 slot
    assert s.headroom(SYSTEM) == -2
    assert s.pick_victim(SYSTEM, lambda v: True) is None


def test_config_overrides_merge_with_defaults_and_bad_values_are_named():
    classes, tenants = parse_config({"classes": {"bulk": {"queue_size": 8, "can_preempt": True}},
                                     "tenant_policies": {"auth:acme": {"max_class": "interactive"}}})
    assert classes[BULK].queue_size == 8 and classes[BULK].can_preempt and classes[BULK].queue_timeout_secs == 300
    assert classes[SYSTEM] == S.DEFAULT_CLASSES[SYSTEM] and tenants == {"auth:acme": INTERACTIVE}
    assert parse_config(None) == (S.DEFAULT_CLASSES, {})
    for doc, where in [({"class": {}}, "'class'"), ({"classes": {"vip": {}}}, "vip"),
                       ({"classes": {"bulk": {"reserved": 1}}}, "classes.bulk.reserved"),
                       ({"classes": {"bulk": {"queue_size": 1.5}}}, "classes.bulk.queue_size"),
                       ({"classes": {"bulk": {"queue_timeout_secs": 0}}}, "queue_timeout_secs"),
                       ({"classes": {"bulk": {"reserved_per_slot": -0.1}}}, "reserved_per_slot"),
                       ({"classes": {"bulk": {"can_preempt": "yes"}}}, "can_preempt"),
                       ({"tenant_policies": {"auth:a": {"max_class": "gold"}}}, "gold"),
                       ({"tenant_policies": {"auth:a": "system"}}, "auth:a"), (["x"], "mapping")]:
        with pytest.raises(ValueError, match=where):
            parse_config(doc)


class SchedulerMachine(RuleBasedStateMachine):
    """Random arrivals, releases, cancels, clock steps, capacity changes and first bytes,
    against a model of which entries hold a slot."""

    def __init__(self) -> None:
        super().__init__()
        cfg = (ClassConfig(0, 0.0, 3, 5.0, 4.0, False), ClassConfig(1, 0.1, 3, 8.0, 6.0, False),
               ClassConfig(1, 0.0, 2, 3.0, 2.0, True), ClassConfig(1, 0.0, 2, 3.0, 2.0, True))
        self.s = PriorityScheduler(cfg, 4)
        self.now = 0.0
        self.holding: list = []      # admitted, not released (the model)
        self.waiting: list = []
        self.started: set = set()
        self.ended: dict = {}        # entry -> how it ended (once)

    def _end(self, e, how) -> None:
        assert e not in self.ended, f"{e} ended twice"
        self.ended[e] = how

    def _granted(self, got) -> None:
        s = self.s
        for e, promoted in got:
            event("promoted (starvation)" if promoted else "admitted from a queue")
            assert e in self.waiting and e.state == S.ADMITTED
            self.waiting.remove(e)
            self.holding.append(e)
        if got:
            # each admission needed a free slot: never beyond capacity
            assert s.inflight <= s.capacity
        # after a dispatch nobody left waiting could have been admitted
        for e in self.waiting:
            assert s.headroom(e.cls) <= 0 or any(w.cls > e.cls for w in self.waiting)

    @rule(cls=st.sampled_from(S.CLASSES))
    def arrive(self, cls):
        s = self.s
        e = Entry(cls)
        room = s.headroom(cls)
        before = s.inflight
        if s.try_admit(e, self.now):
            assert room > 0 and before < s.capacity
            assert not any(w.cls >= cls for w in self.waiting), "a newcomer overtook a waiter"
            self.holding.append(e)
            return
        assert room <= 0
        if s.classes[cls].can_preempt:
            v = s.pick_victim(cls, lambda v: v not in self.started)
            if v is not None:
                assert v.cls < cls and v in self.holding and v not in self.started
                event("preempted")
                s.preempt(v, e, self.now)
                self.holding.remove(v)
                self._end(v, "preempted")
                self.holding.append(e)
                assert s.headroom(cls) >= 0
                return
        if s.enqueue(e, self.now):
            self.waiting.append(e)
        else:
            assert sum(1 for w in self.waiting if w.cls == cls) == s.classes[cls].queue_size

    @precondition(lambda self: self.holding)
    @rule(i=st.integers(min_value=0, max_value=50))
    def release(self, i):
        e = self.holding.pop(i % len(self.holding))
        self._end(e, "released")
        self._granted(self.s.release(e, self.now))
        assert self.s.release(e, self.now) == ()    # a second release changes nothing

    @precondition(lambda self: self.waiting)
    @rule(i=st.integers(min_value=0, max_value=50))
    def cancel(self, i):
        e = self.waiting.pop(i % len(self.waiting))
        assert self.s.cancel(e) and not self.s.cancel(e)
        self._end(e, "cancelled")

    @precondition(lambda self: self.holding)
    @rule(i=st.integers(min_value=0, max_value=50))
    def first_byte(self, i):
        e = self.holding[i % len(self.holding)]
        self.started.add(e)
        if i % 2:
            self.s.started(e)

    @rule(dt=st.sampled_from([0.5, 1.0, 2.5, 7.0]))
    def tick(self, dt):
        self.now += dt
        for e in self.s.expire(self.now):
            event("expired")
            assert e.deadline <= self.now
            self.waiting.remove(e)
            self._end(e, "expired")
        self._granted(self.s.dispatch(self.now))

    @rule(cap=st.integers(min_value=0, max_value=6))
    def capacity(self, cap):
        self.s.set_capacity(cap)
        self._granted(self.s.dispatch(self.now))

    @invariant()
    def slots_match_the_model(self):
        s = self.s
        assert s.counts == [sum(1 for e in self.holding if e.cls == c) for c in S.CLASSES]
        assert s.queued == len(self.waiting) == sum(len(q) for q in s.queues)
        assert all(e.state == S.ADMITTED for e in self.holding) and all(e.state == S.QUEUED for e in self.waiting)
        assert sum(s.reserved) <= max(s.capacity, 0)

    def teardown(self):
        # every slot comes back: release all, the queues drain or expire, nothing is lost
        s = self.s
        while self.holding or self.waiting:
            if self.holding:
                self.release(0)
            else:
                self.tick(7.0)
        assert s.inflight == 0 and s.queued == 0
        assert not any(s.running)


SchedulerMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestSchedulerMachine = SchedulerMachine.TestCase
