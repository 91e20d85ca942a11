"""The consistent-hash ring maps keys to the workers SMG maps them to.

A table recorded from SMG 1.13 (200 ``X-SMG-Routing-Key`` values over 3 workers,
tests/unit/data/hash_ring_smg_table.json) must agree 200/200; when the Rust SMG binary
is present, a fresh table is recorded from it over real sockets and compared the same
way. The ring's digest must be the BLAKE3 specification's vectors.
"""
from __future__ import annotations

import json
import os

import httpx
import pytest

from smg.routing import hash_ring
from smg.routing.hash_ring import _digest8
from smg.routing.consistent_hashing import ConsistentHashingPolicy
from smg.server.context import RequestContext
from smg.server.endpoints import ENDPOINTS
from smg.workers.worker import Worker
from tests.integration.recording_worker import RUST, Fleet, ok_script, rust_gateway

TABLE = os.path.join(os.path.dirname(__file__), "data", "hash_ring_smg_table.json")
CHAT = next(e for e in ENDPOINTS if e.path == "/v1/chat/completions")


def _choose(policy, workers, key: str):
    ctx = RequestContext(b"POST", b"/v1/chat/completions", b"/v1/chat/completions",
                         [(b"x-smg-routing-key", key.encode())], CHAT, 0.0)
    ctx.body = {}
    return policy.select(workers, ctx)


def _agreement(urls: list, table: dict) -> int:
    workers = [Worker(u) for u in urls]
    policy = ConsistentHashingPolicy(seed=1)
    for w in workers:
        policy.on_worker_added(w)
    return sum(_choose(policy, workers, k).url == want for k, want in table.items())


def test_recorded_smg_table_agrees_for_every_key():
    with open(TABLE) as f:
        d = json.load(f)
    assert len(d["table"]) == 200 and len(set(d["table"].values())) == 3
    assert _agreement(d["workers"], d["table"]) == 200


def test_unhealthy_owner_s_keys_walk_clockwise_and_come_back():
    with open(TABLE) as f:
        d = json.load(f)
    workers = [Worker(u) for u in d["workers"]]
    policy = ConsistentHashingPolicy(seed=1)
    for w in workers:
        policy.on_worker_added(w)
    key = next(k for k, u in d["table"].items() if u == workers[0].url)
    assert _choose(policy, workers[1:], key).url != workers[0].url
    assert _choose(policy, workers, key) is workers[0]


@pytest.mark.skipif(not os.path.exists(RUST), reason="the Rust SMG binary is not installed")
def test_a_table_recorded_now_from_the_rust_smg_agrees():
    with Fleet([ok_script] * 3) as fleet:
        p, port = rust_gateway(fleet.urls, "--policy", "consistent_hashing")
        try:
            table = {}
            with httpx.Client(timeout=10) as c:
                for i in range(200):
                    k = f"live-{i}"
                    r = c.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                               json={"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]},
                               headers={"x-smg-routing-key": k})
                    assert r.status_code == 200
                    table[k] = r.headers["x-smg-routed-worker-id"]
        finally:
            p.terminate()
            p.wait(10)
        assert _agreement(fleet.urls, table) == 200


# BLAKE3 test vectors (the official test_vectors.json input is bytes i % 251; digest prefixes)
VECTORS = {0: "af1349b9f5f9a1a6", 1: "2d3adedff11b61f1", 1023: "10108970eeda3eb9", 1024: "42214739f095a406",
           1025: "d00278ae47eb27b3", 2048: "e776b6028c7cd22a", 3072: "b98cb0ff3623be03", 31744: "62b6960e1a44bcc1"}


@pytest.mark.parametrize("n", sorted(VECTORS))
def test_ring_digest_is_the_blake3_specification_prefix(n):
    data = bytes(i % 251 for i in range(n))
    assert _digest8(data).hex() == VECTORS[n]


def test_hash64_is_the_little_endian_blake3_prefix_and_its_cache_is_bounded():
    assert hash_ring.hash64(b"") == int.from_bytes(bytes.fromhex("af1349b9f5f9a1a6"), "little")
    for i in range(hash_ring._KEY_CACHE_MAX + 10):
        hash_ring.hash64(b"k%d" % i)
    assert len(hash_ring._KEY_CACHE) <= hash_ring._KEY_CACHE_MAX
