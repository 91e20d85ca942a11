"""Micro-benchmarks of routing decisions (``policy.select``), per policy.

1. cache_aware, the default policy, on the workload of the radix benchmark: 64 workers, a
   warm per-model tree of 50,000 conversations (50 shared ~2 KB system prompts + " " + a
   unique 0.5-1.5 KB tail, each under a random worker), and ~8 KB chat prompts. Two
   request kinds: ``turn`` continues a stored conversation (a cache hit: the ~3 KB so far +
   ~5 KB new), ``new`` starts a conversation on a shared system prompt (2 KB of 8 KB
   match: a miss, so the least-loaded worker). Each round is one decision on a fresh
   ``RequestContext`` (routing text built from the JSON body inside the decision, as in the
   gateway), and inserts into the tree, so the tree keeps growing as in production.
   Parametrized over the radix twins: native (c) and pure Python (py). Target: <= 20 us
   native.
2. Every policy with 1,000 registered workers (random in-flight counts, engine load
   reports on all of them for least_load/power_of_two), one decision per round; the p99
   of the rounds is stored in ``extra_info["p99_us"]`` and printed (run with ``-s``).
   Target: p99 <= 1 ms.

Run: ``python -m pytest bench/micro/test_policy_bench.py --benchmark-only -s``.
Timing never decides pass/fail here.
"""
from __future__ import annotations

import base64
import random

import pytest

from smg.config import build_config
from smg.routing.policies import FACTORIES


def policy_classes() -> dict:
    """The policies beyond round_robin and random."""
    return {n: c for n, c in FACTORIES.items() if n not in ("round_robin", "random")}
from smg.routing.cache_aware import CacheAwarePolicy
from smg.routing.radix import StringTreeC, StringTreePy
from smg.server.context import RequestContext
from smg.server.endpoints import ENDPOINTS
from smg.testing.twins import twin_params
from smg.workers.worker import READY, Worker

_CHAT = next(e for e in ENDPOINTS if e.path == "/v1/chat/completions")


def RouteRequest(headers: list, body: dict, path: bytes) -> RequestContext:
    """What a policy sees of a request: the request context, as the gateway builds it."""
    ctx = RequestContext(b"POST", path, path, headers, _CHAT, 0.0)
    ctx.body = body
    return ctx

N_WORKERS = 64
N_SYSTEM_PROMPTS = 50
SYSTEM_PROMPT_CHARS = 2048
N_CONVERSATIONS = 50_000
TAIL_CHARS = (512, 1536)
PROMPT_CHARS = 8192
ROUNDS = 3000
N_WORKERS_LARGE = 1000
ROUNDS_LARGE = 2000

CONFIG = build_config({})
PATH = b"/v1/chat/completions"


def _text(rng: random.Random, n: int) -> str:
    # ASCII text (base64 alphabet): fast to generate and as hard to share as real text.
    return base64.b64encode(rng.randbytes(n * 3 // 4 + 3)).decode("ascii")[:n]


def _workers(n: int, rng: random.Random, max_load: int) -> list:
    ws = []
    for i in range(n):
        w = Worker(f"http://worker-{i}.smg.svc:8000", models=("m",), worker_id=f"w{i}")
        w.status = READY
        w.inflight = rng.randrange(max_load + 1)
        w.processed = rng.randrange(10_000)
        ws.append(w)
    return ws


def _chat(system: str, user: str) -> dict:
    return {"model": "m", "messages": [{"role": "system", "content": system},
                                       {"role": "user", "content": user}]}


def _report(samples: list, benchmark, label: str) -> None:
    data = sorted(benchmark.stats.stats.data)
    p99 = data[min(len(data) - 1, int(len(data) * 0.99))] * 1e6
    med = data[len(data) // 2] * 1e6
    benchmark.extra_info["p99_us"] = round(p99, 2)
    benchmark.extra_info["median_us"] = round(med, 2)
    print(f"\n{label}: median {med:.2f} us, p99 {p99:.2f} us over {len(data)} decisions")


# -- 1. cache_aware, 64 workers, warm 50k-conversation tree --------------------------------


@pytest.fixture(scope="module", params=twin_params(StringTreePy, StringTreeC))
def warm(request):
    rng = random.Random(2137)
    system = [_text(rng, SYSTEM_PROMPT_CHARS) for _ in range(N_SYSTEM_PROMPTS)]
    workers = _workers(N_WORKERS, rng, max_load=8)
    policy = CacheAwarePolicy(CONFIG, tree_cls=request.param)
    convs = []
    for j in range(N_CONVERSATIONS):
        sp = system[j % N_SYSTEM_PROMPTS]
        tail = _text(rng, rng.randrange(*TAIL_CHARS))
        policy.record(sp + " " + tail, workers[rng.randrange(N_WORKERS)].id)
        if j % 10 == 0:
            convs.append((sp, tail))
    return request.param, policy, workers, system, convs, rng


@pytest.mark.parametrize("kind", ["turn", "new"])
def test_cache_aware_decision_64_workers_8k_prompt(benchmark, warm, kind):
    tree_cls, policy, workers, system, convs, rng = warm
    bodies = []
    for i in range(ROUNDS):
        if kind == "turn":
            sp, tail = convs[rng.randrange(len(convs))]
            user = tail + " " + _text(rng, PROMPT_CHARS - len(sp) - len(tail) - 2)
        else:
            sp = system[rng.randrange(N_SYSTEM_PROMPTS)]
            user = _text(rng, PROMPT_CHARS - len(sp) - 1)
        bodies.append(_chat(sp, user))
    it = iter(bodies)

    def setup():
        return (workers, RouteRequest([], next(it), PATH)), {}

    benchmark.pedantic(policy.select, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    twin = "native" if tree_cls is StringTreeC else "twin"
    _report(bodies, benchmark, f"cache_aware 64 workers 8 KB {kind} ({twin})")


# -- 2. every policy, 1,000 workers --------------------------------------------------------


@pytest.mark.parametrize("name", sorted(policy_classes()))
def test_decision_1000_workers(benchmark, name):
    rng = random.Random(7)
    cls = policy_classes()[name]
    policy = cls(CONFIG) if cls.takes_config else cls()
    workers = _workers(N_WORKERS_LARGE, rng, max_load=20)
    for w in workers:
        w.engine = {"token_usage": rng.random(), "num_waiting_uncached_tokens": rng.randrange(20_000),
                    "gen_throughput": rng.uniform(500, 4000), "num_running_reqs": rng.randrange(64)}
        policy.on_worker_added(w)
    system = [_text(rng, SYSTEM_PROMPT_CHARS) for _ in range(N_SYSTEM_PROMPTS)]
    keys = [f"session-{i}" for i in range(20_000)]
    requests = []
    for i in range(ROUNDS_LARGE + 200):
        body = _chat(system[rng.randrange(N_SYSTEM_PROMPTS)], _text(rng, rng.randrange(64, 6000)))
        headers = [(b"x-smg-routing-key", keys[rng.randrange(len(keys))].encode())]
        requests.append((headers, body))
    for headers, body in requests[:200]:  # warm-up: ring built, trees and maps populated
        policy.select(workers, RouteRequest(headers, body, PATH))
    policy.maintain(0.0)
    it = iter(requests[200:])

    def setup():
        headers, body = next(it)
        return (workers, RouteRequest(headers, body, PATH)), {}

    benchmark.pedantic(policy.select, setup=setup, rounds=ROUNDS_LARGE, iterations=1, warmup_rounds=0)
    _report(requests, benchmark, f"{name} 1,000 workers")


# -- 3. cache_aware's other modes on the same warm tree ---------------------------------------


@pytest.mark.parametrize("mode", ["ttft", "ttft+feedback", "ttft+explain"])
@pytest.mark.parametrize("kind", ["turn", "new"])
def test_cache_aware_ttft_decision_64_workers_8k_prompt(benchmark, warm, kind, mode):
    """The ttft mode (per-candidate match lengths and costs), alone, with the closed loop's
    end hook and with the explanation, on the warm tree above; every worker reports
    max_running_requests 64 and a queue."""
    tree_cls, base, workers, system, convs, rng = warm
    settings = {"cache_aware_mode": "ttft", "cache_feedback": "feedback" in mode,
                "route_explain": "explain" in mode}
    policy = CacheAwarePolicy(build_config(settings), tree_cls=tree_cls)
    policy.tree = base.tree
    for w in workers:
        w.engine = {"max_running_requests": 64, "num_total_reqs": rng.randrange(16),
                    "num_waiting_uncached_tokens": rng.randrange(4000)}
    bodies = []
    for i in range(ROUNDS):
        if kind == "turn":
            sp, tail = convs[rng.randrange(len(convs))]
            user = tail + " " + _text(rng, PROMPT_CHARS - len(sp) - len(tail) - 2)
        else:
            sp = system[rng.randrange(N_SYSTEM_PROMPTS)]
            user = _text(rng, PROMPT_CHARS - len(sp) - 1)
        bodies.append(_chat(sp, user))
    it = iter(bodies)

    def setup():
        return (workers, RouteRequest([], next(it), PATH)), {}

    try:
        benchmark.pedantic(policy.select, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    finally:
        for w in workers:
            w.engine = None
    twin = "native" if tree_cls is StringTreeC else "twin"
    _report(bodies, benchmark, f"cache_aware {mode} 64 workers 8 KB {kind} ({twin})")
