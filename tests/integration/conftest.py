import pytest

from smg.testing.harness import GatewayHarness
from smg.testing.mock_worker import MockConfig


@pytest.fixture
def gateway():
    """A gateway (round_robin) in front of two mock workers w1 and w2."""
    with GatewayHarness(policy="round_robin") as h:
        yield h


@pytest.fixture
def make_gateway():
    """Factory: make_gateway(workers=[MockConfig...], **settings) → started harness."""
    started = []

    def make(workers=None, **settings):
        h = GatewayHarness(workers=workers, **settings).__enter__()
        started.append(h)
        return h

    yield make
    for h in started:
        h.__exit__(None, None, None)


def mock(**kw) -> MockConfig:
    return MockConfig(**kw)
