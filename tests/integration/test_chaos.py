"""A bounded chaos run: 4 workers crashing and restarting under load; no request may
fail while a healthy worker exists."""
import logging

from smg.testing.chaos import run_chaos


def test_no_failures_while_a_worker_is_healthy(caplog):
    caplog.set_level(logging.ERROR)
    r = run_chaos(duration=5.0, workers=4, clients=6, kill_every=0.3, seed=7)
    assert r.kills >= 10          # the run really crashed workers
    assert r.requests > 200       # and carried real load
    assert r.failures == 0, r.statuses
