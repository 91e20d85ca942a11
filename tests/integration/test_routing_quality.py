"""Routing on simulated engines (smg.testing.engine_sim) through a real gateway."""
import asyncio

import httpx
import pytest

from smg.testing.engine_sim import SimParams, start_fleet
from smg.testing.harness import GatewayHarness, LoopThread
from tests.helpers import wait_for

SHARED = "You are a careful assistant who answers in one line. " * 60


@pytest.fixture
def single_slot_pair():
    lt = LoopThread()
    engines = lt.run(start_fleet(2, SimParams(max_running=1, decode_base_ms=5.0)))
    yield engines
    for e in engines:
        lt.run(e.stop())
    lt.stop()


def _burst(url: str, n: int) -> list:
    async def run():
        async with httpx.AsyncClient(timeout=30) as c:
            bodies = [{"model": "sim-model", "max_tokens": 8,
                       "messages": [{"role": "system", "content": SHARED},
                                    {"role": "user", "content": f"question {i}"}]} for i in range(n)]
            return await asyncio.gather(*(c.post(url + "/v1/chat/completions", json=b) for b in bodies))
    return asyncio.run(run())


def _reported(h) -> bool:
    return all((w.engine or {}).get("max_running_requests") == 1 for w in h.gw.registry.all())


def test_ttft_mode_spreads_shared_prefix_requests_over_single_slot_engines(single_slot_pair):
    with GatewayHarness(workers=[], extra_worker_urls=[e.url for e in single_slot_pair], policy="cache_aware",
                        cache_aware_mode="ttft") as h:
        assert wait_for(lambda: h.on_loop(_reported, h), 10)
        answers = _burst(h.url, 8)
        assert [r.status_code for r in answers] == [200] * 8
        per_engine = [e.engine.requests for e in single_slot_pair]
        assert sum(per_engine) >= 8 and min(per_engine) >= 3, per_engine


def test_threshold_mode_keeps_smg_behaviour_on_the_same_burst(single_slot_pair):
    # SMG's rule: the match wins until the load gap passes 64 in flight, so all 8 land on one
    with GatewayHarness(workers=[], extra_worker_urls=[e.url for e in single_slot_pair],
                        policy="cache_aware") as h:
        _burst(h.url, 1)                                   # the prefix is learned by one engine
        answers = _burst(h.url, 8)
        assert [r.status_code for r in answers] == [200] * 8
        per_engine = sorted(e.engine.requests for e in single_slot_pair)
        assert per_engine[1] - per_engine[0] >= 8, per_engine


def _metric(text: str, name: str, **labels) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not exported")


def test_cache_feedback_corrects_the_tree_from_reported_cached_tokens():
    lt = LoopThread()
    (engine,) = lt.run(start_fleet(1, SimParams(cache_blocks=24)))   # holds one 300-token prompt
    try:
        with GatewayHarness(workers=[], extra_worker_urls=[engine.url], policy="cache_aware",
                            cache_feedback=True) as h:
            def chat(system, stream):
                body = {"model": "sim-model", "max_tokens": 2, "stream": stream,
                        "messages": [{"role": "system", "content": system * 1200}, {"role": "user", "content": "q"}]}
                if stream:
                    body["stream_options"] = {"include_usage": True}
                r = httpx.post(h.url + "/v1/chat/completions", json=body, timeout=10)
                assert r.status_code == 200
            chat("A", False)
            chat("A", True)          # predicted and found: no correction
            chat("B", False)         # evicts A in the engine; the tree still has it
            chat("A", True)          # predicted a hit, the engine reports none
            m = httpx.get(h.metrics_url).text
            assert _metric(m, "smg_router_cache_corrections_total", kind="evicted") == 1
            assert _metric(m, "smg_router_cache_corrections_total", kind="learned") == 0
            predicted = _metric(m, "smg_router_cache_predicted_tokens_total", model="sim-model")
            actual = _metric(m, "smg_router_cache_actual_tokens_total", model="sim-model")
            assert actual == engine.engine.cached_tokens > 0
            assert predicted > actual
            assert _metric(m, "smg_router_cache_prompt_tokens_total", model="sim-model") == \
                engine.engine.prompt_tokens
    finally:
        lt.run(engine.stop())
        lt.stop()


def test_route_explain_header(single_slot_pair):
    urls = [e.url for e in single_slot_pair]
    with GatewayHarness(workers=[], extra_worker_urls=urls, policy="cache_aware", cache_aware_mode="ttft",
                        route_explain=True) as h:
        assert wait_for(lambda: h.on_loop(_reported, h), 10)
        body = {"model": "sim-model", "max_tokens": 2,
                "messages": [{"role": "system", "content": SHARED}, {"role": "user", "content": "q"}]}
        first = httpx.post(h.url + "/v1/chat/completions", json=body, timeout=10).headers["x-smg-route-explain"]
        second = httpx.post(h.url + "/v1/chat/completions", json=body, timeout=10).headers["x-smg-route-explain"]
        assert first.startswith("mode=ttft; prompt_tokens=")
        assert all(u in first for u in urls) and "cost=" in first and "cap=1" in first
        chosen = second.split("chosen=", 1)[1].split(";", 1)[0]
        assert chosen in urls
        # the second request found its prefix on the first one's worker and chose it
        item = [p for p in second.split("; ") if p.startswith(chosen + " ")][0]
        assert int(item.split("match=")[1].split()[0]) > 300
    with GatewayHarness(workers=[], extra_worker_urls=urls, policy="round_robin", route_explain=True) as h:
        r = httpx.post(h.url + "/v1/chat/completions", json=body, timeout=10)
        assert r.headers["x-smg-route-explain"].startswith("policy=round_robin; chosen=http://127.0.0.1:")
    with GatewayHarness(workers=[], extra_worker_urls=urls, policy="cache_aware") as h:
        assert "x-smg-route-explain" not in httpx.post(h.url + "/v1/chat/completions", json=body, timeout=10).headers
