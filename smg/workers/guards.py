"""The guard-table engine shared by the worker state machines (breaker, health).

A machine is a table ``{(state, input): guards}`` where ``guards`` is a tuple of
``(counter, limit, next_state)`` rows tried in order; the first row whose counter has
reached its limit fires, and an empty tuple means "stay". ``counter`` names an
attribute of the machine (read with ``getattr``), ``limit`` names an entry of the
machine's limits mapping; ``ALWAYS`` as the counter fires unconditionally.

Rules: this module only chooses the next state. It mutates nothing: what entering a
state does (zeroing streaks, stamping times, callbacks) is the machine's own business.
A ``(state, input)`` pair missing from the table is a bug in the machine and raises
``ValueError``; ``check_total`` lets a machine assert at import that its table has a
row for every pair.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

ALWAYS = None  # the counter of a guard that fires unconditionally


def next_state(table: Mapping, state: str, event: str, machine, limits: Mapping,
               what: str = "state") -> str | None:
    """The target of the first guard of ``table[(state, event)]`` that is met, else None.

    Args:
        machine: the object whose attributes are the guards' counters.
        limits: limit name -> threshold.
        what: names the machine in the error message.
    Raises:
        ValueError: the table has no row for ``(state, event)``.
    """
    try:
        guards = table[(state, event)]
    except KeyError:
        raise ValueError(f"no {what} transition for ({state}, {event})") from None
    for counter, limit, target in guards:
        if counter is ALWAYS or getattr(machine, counter) >= limits[limit]:
            return target
    return None


def check_total(table: Mapping, states: Iterable, inputs: Iterable, what: str = "state") -> None:
    """Raises ``ValueError`` unless ``table`` has exactly one row per (state, input) and
    every guard leads to a known state."""
    states = tuple(states)
    expected = {(s, i) for s in states for i in inputs}
    if set(table) != expected:
        missing = sorted(map(str, expected - set(table)))
        extra = sorted(map(str, set(table) - expected))
        raise ValueError(f"{what} table: missing rows {missing}, unknown rows {extra}")
    for key, guards in table.items():
        for counter, limit, target in guards:
            if target not in states:
                raise ValueError(f"{what} table row {key} leads to unknown state {target!r}")
            if (counter is ALWAYS) != (limit is None):
                raise ValueError(f"{what} table row {key}: ALWAYS guards take no limit, others need one")


def edges(table: Mapping) -> set:
    """Every (from_state, to_state) pair some guard can cause."""
    return {(state, target) for (state, _), guards in table.items() for _, _, target in guards}
