"""round_robin: a counter modulo the number of READY candidates (as SMG: an index into
the filtered list, so membership changes shift positions)."""
from smg.routing.policy import Policy


class RoundRobinPolicy(Policy):
    name = "round_robin"
    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = 0

    def select(self, workers: list, request):
        i = self._next
        self._next = i + 1
        return workers[i % len(workers)]
