"""power_of_two: draw two distinct candidates at random and send the request to the less
loaded one (Mitzenmacher's "power of two choices").

Load: the engine's ``token_usage`` (KV-cache occupancy from the load monitor) when both
drawn workers have reported one, else the gateway's in-flight counts. Lower wins; on a
tie the first drawn wins (so ties stay random).

Deliberately better than SMG: equal ``token_usage`` falls back to in-flight counts before
the first-drawn rule. Engine reports are polled, so between two polls every request sees
the same usage; idle engines all report 0.0 and SMG's tie rule then ignores the requests
the gateway has just sent them.

Stateless apart from its random generator (O(1) per decision at any fleet size).
"""
from __future__ import annotations

import random as _random

from smg.routing.policy import Policy


class PowerOfTwoPolicy(Policy):
    name = "power_of_two"
    __slots__ = ("_random",)

    def __init__(self, seed: int | None = None) -> None:
        self._random = _random.Random(seed).random

    def select(self, workers: list, request):
        n = len(workers)
        if n == 1:
            return workers[0]
        rand = self._random
        i = int(rand() * n)
        j = int(rand() * (n - 1))
        if j >= i:
            j += 1
        a = workers[i]
        b = workers[j]
        ea = a.engine
        eb = b.engine
        if ea is not None and eb is not None:
            ua = ea.get("token_usage")
            ub = eb.get("token_usage")
            if ua is not None and ub is not None and ua != ub:
                return b if ub < ua else a
        return b if b.inflight < a.inflight else a
