"""Chaos run (bounded): 4 mock workers, continuous load, workers crashed and restarted
at random. Prints requests, failures (requests that did not get a 200 although a
healthy worker existed: target 0), crashes, and streams cut mid-way by a crash.

    python bench/rig/chaos.py --duration 30
"""
import argparse
import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from smg.testing.chaos import run_chaos  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of load (bounded)")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--kill-every", type=float, default=0.3, help="seconds between crashes")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    logging.disable(logging.WARNING)
    r = run_chaos(duration=min(a.duration, 600), workers=a.workers, clients=a.clients,
                  kill_every=a.kill_every, seed=a.seed)
    print(json.dumps(r.__dict__, indent=2, default=str))
    sys.exit(1 if r.failures else 0)


if __name__ == "__main__":
    main()
