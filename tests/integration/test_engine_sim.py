"""The engine simulator over real sockets: cached_tokens in usage (whole and streamed),
SGLang-shaped load reports, queueing past the batch bound, a client leaving frees its slot."""
import asyncio

import httpx
import openai

from smg.testing.engine_sim import SimParams, start_fleet
from smg.testing.harness import LoopThread

SYSTEM = "You are a helpful assistant. " * 40


def _fleet(n=1, **params):
    lt = LoopThread()
    engines = lt.run(start_fleet(n, SimParams(**params)))
    return lt, engines


def _stop(lt, engines):
    for e in engines:
        lt.run(e.stop())
    lt.stop()


def test_cached_tokens_reported_whole_and_streamed():
    lt, (e,) = _fleet()
    try:
        client = openai.OpenAI(base_url=e.url + "/v1", api_key="x", max_retries=0, timeout=10)
        msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "one"}]
        first = client.chat.completions.create(model="sim-model", messages=msgs, max_tokens=4)
        assert first.usage.prompt_tokens_details.cached_tokens == 0
        assert first.usage.completion_tokens == 4
        msgs2 = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "two"}]
        stream = client.chat.completions.create(model="sim-model", messages=msgs2, max_tokens=3, stream=True,
                                                stream_options={"include_usage": True})
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usage = chunks[-1].usage
        assert text == "tok " * 3
        # the shared system prompt's whole blocks hit; the new user turn does not
        assert 0 < usage.prompt_tokens_details.cached_tokens < usage.prompt_tokens
        stats = httpx.get(e.url + "/_sim/stats").json()
        assert stats["requests"] == 2 and stats["block_hits"] > 0 and stats["cached_tokens"] > 0
    finally:
        _stop(lt, [e])


def test_loads_report_the_queue_and_the_batch_bound():
    lt, (e,) = _fleet(max_running=1, decode_base_ms=30.0)

    async def run():
        async with httpx.AsyncClient(timeout=10) as c:
            body = {"model": "sim-model", "messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 5}
            tasks = [asyncio.create_task(c.post(e.url + "/v1/chat/completions", json=body)) for _ in range(3)]
            while e.engine.running + len(e.engine.waiting) < 3:
                await asyncio.sleep(0.005)
            loads = (await c.get(e.url + "/v1/loads")).json()
            legacy = (await c.get(e.url + "/get_load")).json()
            metrics = (await c.get(e.url + "/metrics")).text
            done = await asyncio.gather(*tasks)
            return loads, legacy, metrics, done
    try:
        loads, legacy, metrics, done = lt.run(run())
        ld = loads["loads"][0]
        assert ld["max_running_requests"] == 1 and ld["num_running_reqs"] == 1 and ld["num_waiting_reqs"] == 2
        assert legacy[0]["num_reqs"] == 3 and legacy[0]["num_waiting_reqs"] == 2
        assert 'sglang:num_queue_reqs{model_name="sim-model"} 2' in metrics
        assert all(r.status_code == 200 for r in done)
        # the two that waited found the first one's blocks cached
        assert sorted(r.json()["usage"]["prompt_tokens_details"]["cached_tokens"] > 0 for r in done) == [
            False, True, True]
    finally:
        _stop(lt, [e])


def test_a_client_that_leaves_frees_its_slot():
    lt, (e,) = _fleet(max_running=1, decode_base_ms=50.0)

    async def run():
        body = {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 200}
        async with httpx.AsyncClient(timeout=10) as c:
            t = asyncio.create_task(c.post(e.url + "/v1/chat/completions", json=body))
            while e.engine.running == 0:
                await asyncio.sleep(0.005)
            t.cancel()
            while e.engine.running:
                await asyncio.sleep(0.005)
            r = await c.post(e.url + "/v1/chat/completions", json={**body, "max_tokens": 1})
            return r.status_code
    try:
        assert lt.run(run()) == 200
        assert e.engine.running == 0 and not e.engine.waiting
    finally:
        _stop(lt, [e])


def test_bad_requests_get_openai_errors():
    lt, (e,) = _fleet()
    try:
        u = e.url + "/v1/chat/completions"
        r = httpx.post(u, content=b"{nope")
        assert r.status_code == 400 and "error" in r.json()
        r = httpx.post(u, json={"messages": []})
        assert r.status_code == 400
        r = httpx.post(u, json={"messages": [{"role": "user", "content": "x"}], "max_tokens": -1})
        assert r.status_code == 400
        assert httpx.get(e.url + "/nowhere").status_code == 404
        assert httpx.get(u).status_code == 405
        assert e.engine.running == 0
    finally:
        _stop(lt, [e])
