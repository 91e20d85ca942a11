"""passthrough: the first candidate, always (for a gateway in front of one backend).

Candidates come in the worker registry's order (the order workers completed
registration) and are READY with a usable breaker, so this is the earliest-registered
worker still usable: when it fails or leaves, traffic moves to the next one and comes
back once it is ready again. No state; it reads neither engine loads nor the request.
"""
from smg.routing.policy import Policy


class PassthroughPolicy(Policy):
    name = "passthrough"
    __slots__ = ()

    def select(self, workers: list, request):
        return workers[0]
