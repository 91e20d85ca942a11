"""The prefill/decode exchange without sockets (the fakes of test_exchange.py): both legs
start with the same injected body, either failing before decode's head retries a new
pair, each half's attempt ends once with its own verdict, prefill drains after decode
and is aborted with it; and the pure injection/merge functions."""
from __future__ import annotations

import orjson

from smg.config.load import build_config
from smg.errors import ConnectFailed, UpstreamClosed
from smg.http1.events import Data, EndOfMessage
from smg.routing.policies import PolicyRegistry
from smg.server import exchange as X
from smg.server import pd_bootstrap as B
from smg.server.context import RequestContext
from smg.server.endpoints import ENDPOINTS
from smg.server.exchange import ExchangeDeps
from smg.server.pd_exchange import PdDeps, PdExchange
from smg.server.pd_selection import PdSelector
from smg.server.selection import Selector
from smg.server.timers import TimerWheel
from smg.workers.registry import WorkerRegistry
from smg.workers.retry import RetryPolicy
from smg.workers.worker import READY, Worker
from tests.unit.test_exchange import FakeLeg, FakeSink, Handle, head

GENERATE = next(e for e in ENDPOINTS if e.path == "/generate")


class RecordingLeg(FakeLeg):
    def start(self, ctx, worker, trace) -> None:
        super().start(ctx, worker, trace)
        self.body = orjson.loads(ctx.raw)


class PdRig:
    def __init__(self, prefills: int = 2, decodes: int = 2, retries: int = 3, body=None) -> None:
        self.cfg = build_config({"policy": "round_robin", "retry_max_retries": retries, "request_timeout_secs": 10.0,
                                 "pd_disaggregation": True})
        self.registry = WorkerRegistry()
        self.prefills, self.decodes = [], []
        for role, n, out in (("prefill", prefills, self.prefills), ("decode", decodes, self.decodes)):
            for i in range(n):
                w = Worker(f"http://{role}{i}:8000", ("m",), worker_type=role)
                w.spec = {"bootstrap_port": 9000 + i} if role == "prefill" else {}
                self.registry.add(w)
                self.registry.set_status(w, READY)
                out.append(w)
        regular = Selector(self.registry, PolicyRegistry(self.registry, "round_robin", self.cfg))
        self.selector = PdSelector(self.registry, regular,
                                   PolicyRegistry(self.registry, "round_robin", self.cfg, role="prefill"),
                                   PolicyRegistry(self.registry, "round_robin", self.cfg, role="decode"))
        self.legs: list = []
        self.handles: list = []
        self.outcomes: list = []
        self.prefill_done: list = []
        self.timers = TimerWheel(0.1)
        self.deps = ExchangeDeps(
            self.cfg, RetryPolicy.from_config(self.cfg), self.timers, now=lambda: 0.0, clock=lambda: 0.0,
            schedule=self._schedule, selector=regular, open_leg=self._open_leg,
            record_outcome=lambda w, ok: self.outcomes.append((w.url, ok)))
        self.sink = FakeSink()
        body = body or {"text": "hi"}
        self.ctx = RequestContext(b"POST", b"/generate", b"/generate", [], GENERATE, 0.0)
        self.ctx.raw = orjson.dumps(body)
        self.ctx.body = body
        self.ctx.rid = b"gen-test"
        assert self.selector.first(self.sink, self.ctx) is None
        pd = PdDeps(self.selector, on_prefill_done=lambda ctx, w, s, ok: self.prefill_done.append((w.url, ok)))
        self.ex = PdExchange(self.deps, pd, self.sink, self.ctx)

    def _schedule(self, delay, fn) -> Handle:
        h = Handle(fn)
        self.handles.append(h)
        return h

    def _open_leg(self, worker, owner) -> RecordingLeg:
        leg = RecordingLeg(worker, owner)
        self.legs.append(leg)
        return leg

    def pair(self) -> tuple:
        """The last attempt's (prefill leg, decode leg)."""
        return self.legs[-2], self.legs[-1]

    def fire_backoff(self) -> None:
        (h,) = [h for h in self.handles if not h.cancelled]
        self.handles.remove(h)
        h.fn()

    def inflight(self) -> int:
        return sum(w.inflight for w in self.prefills + self.decodes)


def test_both_legs_get_the_same_injected_body_and_decode_is_relayed():
    r = PdRig()
    r.ex.start()
    p, d = r.pair()
    assert p.worker.worker_type == "prefill" and d.worker.worker_type == "decode"
    assert p.body == d.body
    assert p.body["bootstrap_host"] == p.worker.host and p.body["bootstrap_port"] == p.worker.spec["bootstrap_port"]
    assert 0 <= p.body["bootstrap_room"] <= B.ROOM_MAX and p.body["text"] == "hi"
    assert r.ctx.body == {"text": "hi"}                   # the client's body is left as it was
    assert r.inflight() == 2
    d.owner.on_leg_events([head(200, 2), Data(b"ok"), EndOfMessage()])
    assert r.sink.data == [b"ok"] and r.sink.ended == 1 and r.ex.state == X.DONE
    assert p.live and r.inflight() == 1                   # prefill drains in the background, bounded
    assert [h for h in r.handles if not h.cancelled]
    p.owner.on_leg_events([head(200, 2), Data(b"{}"), EndOfMessage()])
    assert p.finished is True and r.inflight() == 0
    assert sorted(r.outcomes) == sorted([(d.worker.url, True), (p.worker.url, True)])
    assert not [h for h in r.handles if not h.cancelled]  # the drain bound went with it


def test_prefill_transport_error_aborts_decode_and_retries_a_new_pair():
    r = PdRig()
    r.ex.start()
    p, d = r.pair()
    p.fail(ConnectFailed("refused"))
    assert d.aborted and r.ex.state == X.BACKOFF and r.inflight() == 0
    assert (p.worker.url, False) in r.outcomes
    assert not any(url == d.worker.url for url, _ in r.outcomes)   # decode: cancelled, no verdict
    r.fire_backoff()
    p2, d2 = r.pair()
    assert p2.worker is not p.worker and p2.live and d2.live
    assert p2.body["bootstrap_room"] != p.body["bootstrap_room"]


def test_decode_error_before_head_aborts_prefill_and_retries():
    r = PdRig()
    r.ex.start()
    p, d = r.pair()
    d.fail(UpstreamClosed("closed"))
    assert p.aborted and r.ex.state == X.BACKOFF and r.inflight() == 0
    r.fire_backoff()
    p2, d2 = r.pair()
    assert d2.worker is not d.worker
    d2.owner.on_leg_events([head(200, 1), Data(b"x"), EndOfMessage()])
    assert r.sink.ended == 1


def test_prefill_retryable_status_retries_and_refusal_is_relayed():
    r = PdRig()
    r.ex.start()
    p, d = r.pair()
    p.owner.on_leg_events([head(503, 2), Data(b"{}"), EndOfMessage()])
    assert d.aborted and r.ex.state == X.BACKOFF
    r = PdRig(retries=1)
    r.ex.start()
    p, d = r.pair()
    r.sink.replies = []
    r.sink.reply = lambda status, body, **kw: r.sink.replies.append((status, body))
    p.owner.on_leg_events([head(400, 9), Data(b'{"e":"x"}'), EndOfMessage()])
    assert r.sink.replies == [(400, b'{"e":"x"}')] and d.aborted and r.ex.state == X.DONE and r.inflight() == 0


def test_decode_cut_mid_stream_aborts_prefill_and_fails_the_stream():
    r = PdRig()
    r.ex.start()
    p, d = r.pair()
    d.owner.on_leg_events([head(200, sse=True), Data(b'data: {"a":1}\n\n')])
    d.fail(UpstreamClosed("cut"))
    assert r.sink.failed and p.aborted and r.inflight() == 0 and r.ex.state == X.DONE


def test_client_gone_aborts_both():
    r = PdRig()
    r.ex.start()
    p, d = r.pair()
    r.ex.abort()
    assert p.aborted and d.aborted and r.inflight() == 0 and r.outcomes == []


def test_logprob_merge_waits_for_prefill():
    r = PdRig(body={"text": "hi", "return_logprob": True})
    r.ex.start()
    p, d = r.pair()
    d.owner.on_leg_events([head(200, 40), Data(b'{"meta_info":{"input_token_logprobs":[[3]]}}'), EndOfMessage()])
    assert r.sink.head is None                            # held until prefill's logprobs are known
    p.owner.on_leg_events([head(200, 40), Data(b'{"meta_info":{"input_token_logprobs":[[1],[2]]}}'),
                           EndOfMessage()])
    assert orjson.loads(b"".join(r.sink.data)) == {"meta_info": {"input_token_logprobs": [[1], [2], [3]]}}
    assert r.sink.head[1] == len(b"".join(r.sink.data))


def test_inject_batches_and_merge_functions():
    b = B.inject({"input_ids": [[1], [2], [3]]}, b"/generate", "10.0.0.1", None)
    assert b["bootstrap_host"] == ["10.0.0.1"] * 3 and b["bootstrap_port"] == [None] * 3
    assert len(set(b["bootstrap_room"])) == 3
    one = B.inject({"input_ids": [1, 2]}, b"/generate", "h", 1)
    assert type(one["bootstrap_room"]) is int
    chat = B.inject({"messages": [], "n": 2}, b"/v1/chat/completions", "h", 1)
    assert type(chat["bootstrap_room"]) is int
    assert B.wants_logprobs({"return_logprob": True}, b"/generate")
    assert not B.wants_logprobs({"logprobs": True}, b"/v1/chat/completions")
    assert B.prefill_logprobs(b'data: {"meta_info":{"input_token_logprobs":[[1]]}}\n\ndata: [DONE]\n\n') == [[[1]]]
    assert B.merge_body(b"not json", [[[1]]]) is None
    assert B.merge_event(b"[DONE]", [[[1]]]) == b"[DONE]"
    assert orjson.loads(B.merge_event(b'{"meta_info":{}}', [[[1]]])) == {"meta_info": {"input_token_logprobs": [[1]]}}


def test_pd_selection_falls_back_to_regular_and_refuses_half_pairs():
    r = PdRig(prefills=1, decodes=1)
    assert r.ctx.prefill is r.prefills[0] and r.ctx.worker is r.decodes[0]
    r.registry.set_status(r.decodes[0], "not_ready")
    ctx = RequestContext(b"POST", b"/generate", b"/generate", [], GENERATE, 0.0)
    ctx.body = {"text": "x"}
    reply = r.selector.first(r.sink, ctx)
    assert reply.status == 503 and reply.code == "no_available_workers"
    assert not r.selector.ready()
    reg = Worker("http://r:1", ("m",))
    r.registry.add(reg)
    r.registry.set_status(reg, READY)
    assert r.selector.first(r.sink, ctx) is None and ctx.prefill is None and ctx.worker is reg


def test_vllm_handoff_is_sequential():
    r = PdRig()
    for w in r.prefills:
        w.runtime = "vllm"
    r.ex = PdExchange(r.deps, r.ex.pd, r.sink, r.ctx)   # made again: the runtime decides at creation
    r.ex.start()
    (p,) = r.legs[-1:]
    assert p.worker.worker_type == "prefill" and len(r.legs) == 1      # decode waits for prefill
    assert p.body["max_tokens"] == 1 and p.body["stream"] is False
    assert p.body["kv_transfer_params"] == {"do_remote_decode": True, "do_remote_prefill": False}
    p.owner.on_leg_events([head(200, 9), Data(b'{"kv_transfer_params":{"remote_block_ids":[7]}}'),
                           EndOfMessage()])
    d = r.legs[-1]
    assert d.worker.worker_type == "decode" and d.body["kv_transfer_params"] == {"remote_block_ids": [7]}
    assert "max_tokens" not in d.body and r.ctx.body == {"text": "hi"}
    d.owner.on_leg_events([head(200, 2), Data(b"ok"), EndOfMessage()])
    assert r.sink.data == [b"ok"] and r.inflight() == 0
