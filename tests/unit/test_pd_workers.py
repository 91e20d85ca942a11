"""The PD mocks rendezvous for real: decode answers only once its prefill partner has
received the same room (in either order), fails after its timeout otherwise, and
refuses a request without the bootstrap fields."""
from __future__ import annotations

import concurrent.futures

import httpx

from smg.testing.harness import LoopThread
from smg.testing.pd_workers import DecodeWorker, PrefillWorker


def _pair(lt, timeout=0.3):
    p = lt.run(PrefillWorker(wait=timeout).start())
    d = lt.run(DecodeWorker(rendezvous_timeout=timeout + 1).start())
    return p, d


def _body(p, room):
    return {"text": "x", "bootstrap_host": "127.0.0.1", "bootstrap_port": p.bootstrap_port, "bootstrap_room": room}


def test_rendezvous_in_either_order_and_timeout():
    lt = LoopThread()
    try:
        p, d = _pair(lt)
        # prefill first, then decode
        assert httpx.post(p.url + "/generate", json=_body(p, 11), timeout=5).status_code == 200
        assert httpx.post(d.url + "/generate", json=_body(p, 11), timeout=5).status_code == 200
        # decode first: it waits for the room, which prefill then receives
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            fut = ex.submit(httpx.post, d.url + "/generate", json=_body(p, 12), timeout=5)
            httpx.post(p.url + "/generate", json=_body(p, 12), timeout=5)
            assert fut.result().status_code == 200
        # a room prefill never gets: the transfer times out
        r = httpx.post(d.url + "/generate", json=_body(p, 13), timeout=5)
        assert r.status_code == 500 and "KV transfer failed" in r.json()["error"]["message"]
        assert [rec["rendezvous"] for rec in d.received] == ["ok", "ok", "timeout"]
        # no bootstrap fields at all
        assert httpx.post(d.url + "/generate", json={"text": "x"}, timeout=5).status_code == 400
        lt.run(p.stop())
        r = httpx.post(d.url + "/generate", json=_body(p, 14), timeout=5)
        assert r.status_code == 500 and d.received[-1]["rendezvous"] == "unreachable"
        lt.run(d.stop())
    finally:
        lt.stop()
