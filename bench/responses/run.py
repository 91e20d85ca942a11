"""What a stored Responses turn adds over the same chat completion, per history backend,
and the storage operations per second the backends sustain from one gateway core.

    PYTHONPATH=$PWD python bench/responses/run.py [--n 400] [--backends memory,postgres,redis]

Per backend: a gateway (in this process, on its own loop thread) in front of one mock
worker; one keep-alive client sends, interleaved, a chat completion and a
``/v1/responses`` create (store true) with the same one-message input, ``--n`` of
each after a warm-up; the figures are the p50/p99 of each and the difference of the
p50s and p99s. Then ``--ops`` store operations (``put_response`` then
``get_response``, 32 in flight) are run on the gateway's own loop against the same
store: operations per second on one core. PostgreSQL and Redis are real servers
started on free loopback ports (smg/testing/datastores.py); a backend whose server is
not installed is skipped. The latency numbers are a ratio within one run, not
absolute truths: the machine is shared.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import time

from smg.testing.datastores import PostgresServer, RedisServer
from smg.testing.harness import GatewayHarness
from smg.testing.mock_worker import MockConfig

CHAT = json.dumps({"model": "mock-model", "messages": [{"role": "user", "content": "hello there"}]}).encode()
RESP = json.dumps({"model": "mock-model", "input": "hello there"}).encode()


def pct(xs: list, p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def latencies(port: int, n: int) -> tuple:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    chat, resp = [], []

    def one(path: str, body: bytes) -> float:
        t = time.perf_counter()
        c.request("POST", path, body, {"content-type": "application/json"})
        r = c.getresponse()
        r.read()
        assert r.status == 200, (path, r.status)
        return time.perf_counter() - t

    for _ in range(50):
        one("/v1/chat/completions", CHAT)
        one("/v1/responses", RESP)
    for _ in range(n):
        chat.append(one("/v1/chat/completions", CHAT))
        resp.append(one("/v1/responses", RESP))
    c.close()
    return chat, resp


async def store_ops(store, ops: int, inflight: int = 32) -> float:
    rec = {"owner": None, "conversation_id": None, "previous_response_id": None, "input": [{"id": "m", "type":
           "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
           "created_at": int(time.time()), "model": "m", "safety_identifier": None,
           "raw_response": {"id": "x", "output": [{"type": "message", "content": [{"text": "hello " * 20}]}]}}
    todo = iter(range(ops // 2))

    async def worker():
        for i in todo:
            rid = f"resp_bench_{os.getpid()}_{i}"
            await store.put_response(dict(rec, id=rid))
            assert await store.get_response(rid, None) is not None

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    return ops / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--ops", type=int, default=4000)
    ap.add_argument("--backends", default="memory,postgres,redis")
    a = ap.parse_args()
    os.environ["DB_AUTO_MIGRATE"] = "true"
    print(f"{'backend':9} {'chat p50':>9} {'chat p99':>9} {'resp p50':>9} {'resp p99':>9} "
          f"{'added p50':>10} {'added p99':>10} {'store ops/s':>12}")
    for name in a.backends.split(","):
        with contextlib.ExitStack() as stack:
            settings = {"history_backend": name}
            if name == "postgres":
                if PostgresServer.binaries() is None:
                    print(f"{name:9} skipped (not installed)")
                    continue
                settings["postgres_db_url"] = stack.enter_context(PostgresServer()).url
            elif name == "redis":
                if RedisServer.binary() is None:
                    print(f"{name:9} skipped (not installed)")
                    continue
                settings["redis_url"] = stack.enter_context(RedisServer()).url
            h = stack.enter_context(GatewayHarness(workers=[MockConfig(worker_id="w1")], **settings))
            chat, resp = latencies(h.port, a.n)
            ops = h.run(store_ops(h.gw.history, a.ops), 120)
            ms = lambda x: f"{x * 1000:9.3f}"  # noqa: E731
            c50, c99, r50, r99 = pct(chat, .5), pct(chat, .99), pct(resp, .5), pct(resp, .99)
            print(f"{name:9} {ms(c50)} {ms(c99)} {ms(r50)} {ms(r99)} {ms(r50 - c50):>10} {ms(r99 - c99):>10} "
                  f"{ops:12.0f}")


if __name__ == "__main__":
    main()
