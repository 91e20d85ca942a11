"""Instructions per request on the in-memory request path, counted by callgrind.

Runs ``smg.testing.pathbench`` under ``valgrind --tool=callgrind`` twice, with N and
3N requests, and divides the difference by 2N: start-up, imports and warm-up cancel
out, and the count is repeatable for the same build and inputs whatever else the
machine is doing (instructions, not seconds).

    python bench/callgrind.py                  # plain and streamed, observability off and on
    python bench/callgrind.py --n 2000 --json out.json
    python bench/callgrind.py --cases plain/off --set max_concurrent_requests=0   # a variant

Needs valgrind (Debian package ``valgrind``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

CASES = {
    "plain/off": ("one", False, False),
    "plain/on": ("one", True, True),
    "stream/off": ("one_stream", False, False),
    "stream/on": ("one_stream", True, True),
}

_CHILD = """
import json, sys
from smg.testing.pathbench import PathBench
meth, metrics, access, n = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1", int(sys.argv[4])
pb = PathBench(metrics, access, **json.loads(sys.argv[5]))
f = getattr(pb, meth)
for _ in range(200):  # warm: shapes, caches, pools
    f()
for _ in range(n):
    f()
assert pb.worker.inflight == 0 and pb.worker.processed == n + 200
pb.close()
"""


def _count(meth: str, metrics: bool, access: bool, n: int, settings: dict) -> int:
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "cg.out")
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-c", _CHILD,
               meth, "1" if metrics else "0", "1" if access else "0", str(n), json.dumps(settings)]
        env = dict(os.environ, PYTHONHASHSEED="0")
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
        if p.returncode != 0:
            raise SystemExit(f"callgrind run failed:\n{p.stderr[-3000:]}")
        m = re.search(r"Collected\s*:\s*(\d+)", p.stderr)
        if m is None:
            raise SystemExit(f"no instruction total in callgrind's output:\n{p.stderr[-2000:]}")
        return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="requests in the short run (the long one has 3N)")
    ap.add_argument("--cases", default=",".join(CASES), help="comma list of " + ", ".join(CASES))
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a gateway setting for the run (YAML value syntax), repeatable")
    a = ap.parse_args()
    import yaml

    settings = {}
    for kv in a.set:
        k, _, v = kv.partition("=")
        settings[k.strip().replace("-", "_")] = yaml.safe_load(v)
    res = {}
    for name in a.cases.split(","):
        meth, metrics, access = CASES[name]
        lo = _count(meth, metrics, access, a.n, settings)
        hi = _count(meth, metrics, access, 3 * a.n, settings)
        res[name] = (hi - lo) / (2 * a.n)
        print(f"{name:12s} {res[name] / 1000:8.1f}k instructions/request", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
