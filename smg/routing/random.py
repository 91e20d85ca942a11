"""random: uniform over READY candidates."""
import random as _random

from smg.routing.policy import Policy


class RandomPolicy(Policy):
    name = "random"

    def __init__(self, seed: int | None = None) -> None:
        self._random = _random.Random(seed).random

    def select(self, workers: list, request):
        return workers[int(self._random() * len(workers))]
