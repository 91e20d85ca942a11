"""The prefill/decode exchange: one request sent to a (prefill, decode) pair at once,
decode's answer relayed (SGLang's bootstrap protocol over HTTP).

Theory of operation: ``PdExchange`` is the Exchange (smg/server/exchange.py: its
attempt table, retries, deadline, backpressure, relaying) whose attempt is a pair:
``_dispatch`` injects the rendezvous (smg/server/pd_bootstrap.py) and starts two
upstream legs on the same path with the same body, the decode leg owned by the
exchange itself (its answer is the client's), the prefill leg by ``_PrefillSide``.

Rules:
- Either half failing before decode's head was relayed (a transport error, a
  retryable status from prefill) fails the attempt: the other leg is aborted at once
  (no leg is left waiting on a dead partner's rendezvous) and a retry picks a new pair
  (``PdSelector.again``), within the request's retries and deadline. Prefill answering
  a non-retryable error status ends the request with prefill's answer.
- Each half's attempt ends exactly once, and each breaker sees its own half's outcome:
  prefill's True once it answered 2xx to the end, False when it failed; decode's as the
  Exchange judges its answer; a half cancelled because of its partner or the client
  gets no verdict (a dead prefill does not open its healthy decode partner's breaker).
- After decode's answer is complete the prefill leg is drained in the background,
  bounded by ``request_timeout_secs``; decode cut mid-stream, the deadline, or the
  client leaving abort prefill too (the Exchange's ``_drop_leg``).
- A vLLM prefill worker (its runtime ``vllm``) gets vLLM's handoff instead, in sequence:
  prefill first with ``pd_bootstrap.vllm_prefill``'s copy; once it answered 2xx, its
  returned ``kv_transfer_params`` go with the client's request to decode (the
  exchange's own leg, started only then), whose answer is relayed.
- A ``/generate`` asking ``return_logprob`` waits (decode's events kept, not relayed)
  until prefill's answer is complete, then relays decode's answer with prefill's input
  logprobs merged (a reshape of a whole body, a rewrite of each SSE event).
"""
from __future__ import annotations

import logging

import orjson

from smg.http1.events import Data, EndOfMessage, Response
from smg.server import pd_bootstrap
from smg.server.exchange import DONE, GIVE_UP, WAITING, Exchange, settle_attempt

log = logging.getLogger("smg.proxy")

PREFILL_BODY_LIMIT = 16 * 1024 * 1024  # prefill's answer kept for a logprob merge, at most

# prefill half states
P_IDLE, P_RUNNING, P_DONE = 0, 1, 2


class _PrefillSide:
    """The owner of the prefill leg: hands its events to the exchange."""

    __slots__ = ("ex", "gen")

    def __init__(self, ex, gen: int) -> None:
        self.ex = ex
        self.gen = gen   # the attempt it belongs to (a late event of an old leg is ignored)

    def on_leg_events(self, events: list) -> None:
        ex = self.ex
        if ex.p_gen == self.gen:
            ex._prefill_events(events)

    def on_leg_error(self, err) -> None:
        ex = self.ex
        if ex.p_gen == self.gen:
            ex._prefill_error(err)


class _SseMerge:
    """Rewrites each SSE ``data:`` event of decode's stream with prefill's logprobs."""

    __slots__ = ("ex", "buf")

    def __init__(self, ex) -> None:
        self.ex = ex
        self.buf = b""

    def __call__(self, events: list):
        out = []
        lp = self.ex.p_logprobs
        for ev in events:
            if type(ev) is not Data:
                if type(ev) is EndOfMessage and self.buf:
                    out.append(Data(self.buf))
                    self.buf = b""
                out.append(ev)
                continue
            data = self.buf + ev.data
            cut = data.rfind(b"\n\n")
            if cut < 0:
                self.buf = data
                continue
            self.buf = data[cut + 2:]
            blocks = []
            for block in data[:cut].split(b"\n\n"):
                if block.startswith(b"data:") and lp:
                    block = b"data: " + pd_bootstrap.merge_event(block[5:].strip(), lp)
                blocks.append(block)
            out.append(Data(b"\n\n".join(blocks) + b"\n\n"))
        return out


class PdDeps:
    """What the PD exchange adds to ``ExchangeDeps``: the pair selector and metrics hooks
    (``on_prefill_done(ctx, worker, seconds, ok)``, ``on_bootstrap_failure()``; None: off)."""

    __slots__ = ("selector", "on_prefill_done", "on_bootstrap_failure")

    def __init__(self, selector, on_prefill_done=None, on_bootstrap_failure=None) -> None:
        self.selector = selector
        self.on_prefill_done = on_prefill_done
        self.on_bootstrap_failure = on_bootstrap_failure


class PdExchange(Exchange):
    __slots__ = ("pd", "prefill", "pleg", "pstate", "ppolicy", "p_in_attempt", "p_gen", "p_status", "p_parts",
                 "p_size", "p_logprobs", "merge", "waiting", "p_t0", "drain_handle", "vllm")

    def __init__(self, deps, pd: PdDeps, conn, ctx) -> None:
        vllm = ctx.prefill.runtime == pd_bootstrap.VLLM
        merge = not vllm and ctx.body is not None and pd_bootstrap.wants_logprobs(ctx.body, ctx.path)
        super().__init__(deps, conn, ctx, reshape=self._merge_body if merge else None,
                         rewrite_stream=(lambda: _SseMerge(self)) if merge else None)
        self.pd = pd
        self.prefill = ctx.prefill
        self.ppolicy = pd.selector.prefill_policy(ctx.model)
        self.pleg = None
        self.pstate = P_IDLE
        self.p_in_attempt = False
        self.p_gen = 0
        self.p_status = 0
        self.p_parts = None
        self.p_size = 0
        self.p_logprobs = None
        self.merge = merge
        self.waiting = None      # decode's events kept until prefill's answer is complete (merge)
        self.p_t0 = 0.0
        self.drain_handle = None
        self.vllm = vllm

    # -- dispatch ----------------------------------------------------------------------

    def _dispatch(self) -> None:
        ctx = self.ctx
        p = self.prefill
        raw, body = ctx.raw, ctx.body
        self.vllm = p.runtime == pd_bootstrap.VLLM
        try:
            injected = pd_bootstrap.vllm_prefill(body) if self.vllm else \
                pd_bootstrap.inject(body, ctx.path, p.host, p.spec.get("bootstrap_port"))
            wire = orjson.dumps(injected)
        except (TypeError, ValueError) as e:  # not serializable back (cannot happen for parsed JSON)
            if self.pd.on_bootstrap_failure is not None:
                self.pd.on_bootstrap_failure()
            self.in_attempt = False
            self._go_fail(500, f"bootstrap injection failed: {e}")
            return
        self.p_gen += 1
        self.pstate = P_RUNNING
        self.p_status = 0
        self.p_parts = [] if self.merge or self.vllm else None
        self.p_size = 0
        self.p_logprobs = None
        self.waiting = [] if self.merge else None
        p.inflight += 1
        self.p_in_attempt = True
        self.p_t0 = self.deps.clock()
        ctx.raw, ctx.body = wire, injected
        try:
            pleg = self.pleg = self.deps.open_leg(p, _PrefillSide(self, self.p_gen))
            tracing = self.deps.tracing
            trace = tracing.inject(ctx.span) if ctx.span is not None and tracing is not None else None
            pleg.start(ctx, p, trace)
            if self.pleg is pleg and not self.vllm:   # not failed synchronously
                super()._dispatch()         # the decode leg (the exchange's own), at once
        finally:
            ctx.raw, ctx.body = raw, body

    def _dispatch_decode(self, prefill_answer: bytes) -> None:
        """vLLM: prefill answered; decode gets the request with its KV-transfer params."""
        ctx = self.ctx
        raw, body = ctx.raw, ctx.body
        handoff = pd_bootstrap.vllm_decode(body, prefill_answer)
        ctx.raw, ctx.body = (orjson.dumps(handoff), handoff) if handoff is not body else (raw, body)
        try:
            super()._dispatch()
        finally:
            ctx.raw, ctx.body = raw, body

    def _go_fail(self, status: int, message: str) -> None:
        self._go(GIVE_UP)
        self.ctx.error_type = "pd_bootstrap_failed"
        self._fail(status, message)

    # -- decode side (the Exchange's leg) -------------------------------------------------

    def on_leg_events(self, events: list) -> None:
        waiting = self.waiting
        if waiting is not None and self.state is WAITING:
            waiting.extend(events)   # relayed once prefill's logprobs are known
            return
        super().on_leg_events(events)

    def _merge_body(self, raw: bytes):
        return pd_bootstrap.merge_body(raw, self.p_logprobs)

    def _release_waiting(self) -> None:
        waiting = self.waiting
        self.waiting = None
        if waiting and self.state is WAITING:
            super().on_leg_events(waiting)

    # -- prefill side ------------------------------------------------------------------

    def _prefill_events(self, events: list) -> None:
        for ev in events:
            t = type(ev)
            if t is Data:
                parts = self.p_parts
                if parts is not None:
                    self.p_size += len(ev.data)
                    if self.p_size <= PREFILL_BODY_LIMIT:
                        parts.append(ev.data)
            elif t is Response:
                self.p_status = st = ev.status_code
                if not 200 <= st < 300 and self.p_parts is None:
                    self.p_parts = []   # its error body is kept: it may become the answer
            elif t is EndOfMessage:
                self._prefill_complete(ev)
                return

    def _prefill_complete(self, ev) -> None:
        st = self.p_status
        leg = self.pleg
        self.pleg = None
        self.pstate = P_DONE
        ok = 200 <= st < 300
        body = b"".join(self.p_parts) if self.p_parts is not None else b""
        if leg is not None:
            leg.finish(True)
        if self.drain_handle is not None:
            self.drain_handle.cancel()
            self.drain_handle = None
        if ok:
            self._prefill_settle(True)
            if self.vllm:
                if self.state is WAITING:
                    self._dispatch_decode(body)
                return
            if self.merge:
                self.p_logprobs = pd_bootstrap.prefill_logprobs(body)
                self._release_waiting()
            return
        self._prefill_settle(False if st >= 500 or st in self.retry.retryable_status else None)
        self._prefill_refused(st, body)

    def _prefill_refused(self, st: int, body: bytes) -> None:
        """Prefill answered an error status: before decode's head was relayed, retry the
        pair (retryable status) or answer the client with prefill's answer."""
        if self.state is not WAITING:
            return
        msg = f"prefill worker {self.prefill.url} answered {st}"
        if st in self.retry.retryable_status and self.retries_left and self.retry.should_retry(self.attempt, st):
            self._end_attempt(None)   # decode was cancelled for its partner: no verdict on it
            self._attempt_failed(st, None, st, msg)
            return
        self._go(GIVE_UP)
        self.ctx.error_type = f"upstream_{st}"
        self._end_attempt(None)
        self._settle()
        self._drop_leg()
        log.warning("request %s: %s", self.ctx.rid.decode(), msg)
        self.conn.set_producer(None)
        self.conn.reply(st, body or b"{}")

    def _prefill_error(self, err) -> None:
        self.pleg = None
        self.pstate = P_DONE
        self._prefill_settle(False)
        if self.state is WAITING:
            if self.waiting is not None:
                self.waiting = None
            self._end_attempt(None)   # decode was cancelled for its partner: no verdict on it
            self._attempt_failed(None, err.kind, err.status_hint,
                                 f"prefill worker {self.prefill.url} failed: {err}")
        elif self.state is DONE and self.drain_handle is not None:
            self.drain_handle.cancel()
            self.drain_handle = None

    def _prefill_settle(self, ok) -> None:
        if not self.p_in_attempt:
            return
        self.p_in_attempt = False
        settle_attempt(self.prefill, self.ppolicy, ok, self.deps.record_outcome)
        hook = self.pd.on_prefill_done
        if hook is not None and ok is not None:
            hook(self.ctx, self.prefill, self.deps.clock() - self.p_t0, ok)

    def _abort_prefill(self) -> None:
        leg = self.pleg
        self.pleg = None
        if self.drain_handle is not None:
            self.drain_handle.cancel()
            self.drain_handle = None
        if leg is not None:
            self.pstate = P_DONE
            leg.abort()
        self._prefill_settle(None)

    # -- the Exchange's hooks ----------------------------------------------------------

    def _drop_leg(self) -> None:
        super()._drop_leg()
        self._abort_prefill()

    def _settle(self) -> None:
        super()._settle()
        if self.pleg is not None and self.state is DONE and self.drain_handle is None:
            # decode's answer is done: prefill drains in the background, bounded
            self.drain_handle = self.deps.schedule(self.deps.config.request_timeout_secs, self._abort_prefill)

    def _choose_again(self) -> bool:
        pair = self.pd.selector.again(self.ctx, self.prefill, self.worker)
        if pair is None:
            return False
        self.prefill, self.worker = pair
        self.ctx.prefill = pair[0]
        return True
