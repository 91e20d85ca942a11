"""Exchange: one request forwarded to workers, attempt by attempt, its answer relayed.

Theory of operation: ``start`` dispatches the first attempt to the worker the
selection filter chose: an upstream leg (smg/upstream/http1_leg.py) takes it from
there. Each batch of leg events passes the response transforms and goes to the
response sink (the client connection) in one ``send``; every relayed head carries
``x-smg-routed-worker-id`` (the worker's URL, as SMG prints it) unless the handler
said otherwise (``routed=False``). While nothing has
been sent to the client, a transport failure or a retryable status
(408/429/500/502/503/504) ends the attempt and, if the retry policy allows another,
a new attempt runs after the backoff with a freshly selected worker
(smg/server/selection.py); a worker that answered 500 is not tried again for the
request (smg/workers/retry.py), so with none left the 500 is relayed at once. The
last attempt's answer is relayed as it is.

A 5xx head is held (state WAITING) until its body is read, up to ``HOLD_LIMIT``
bytes: a request-caused answer (a validation message in the body, or the same answer
from two workers that no other request shares: ``smg.workers.retry.RequestFaults``)
is relayed at once with no verdict on the worker; otherwise the attempt is the
worker's failure. The breaker verdict on a 5xx that led to a retry waits
(``pending``) until the next attempt shows whether it was request-caused; it is
recorded at the latest when the exchange ends.

A streamed answer ends cleanly (smg/server/transforms.py ``StreamEnd``): nothing
follows the worker's ``data: [DONE]``, a worker that closes after it ends the stream
normally, and a stream that ends without ``[DONE]`` or a finish reason gets one error
event in the API's own shape.

The attempt lifecycle is the table ``TRANSITIONS`` below: ``(state, input) -> state``.
Every state change goes through ``_go``, which refuses an input the table has no row
for (a bug, and what the Hypothesis walk in tests/unit/test_exchange.py looks for).

======== ============ ===========================================================
state    input        meaning
======== ============ ===========================================================
IDLE     START        first attempt dispatched                       -> WAITING
WAITING  HEAD         a head to relay arrived                        -> STREAMING
WAITING  RETRY        attempt failed before the head, retry allowed  -> BACKOFF
WAITING  GIVE_UP      attempt failed before the head, none left      -> DONE
BACKOFF  REDISPATCH   backoff over, a worker chosen                  -> WAITING
BACKOFF  WAIT_MORE    backoff over, no worker yet, retries left      -> BACKOFF
BACKOFF  NO_WORKER    backoff over, no worker, none left             -> DONE
STREAMING END         the answer is complete                         -> DONE
STREAMING CUT         the leg failed after the head                  -> DONE
any live TIMEOUT      the request deadline passed                    -> DONE
any live CLIENT_GONE  the client left                                -> DONE
WAITING  PREEMPT      the priority scheduler took the slot (no byte  -> DONE
BACKOFF  PREEMPT      sent yet): 503 scheduler_preempted             -> DONE
======== ============ ===========================================================

Rules:
- Every attempt ends exactly once (``_end_attempt``): the worker's in-flight count is
  decremented there and nowhere else, and the outcome goes to the policy and the
  worker's circuit breaker (a client hanging up is nobody's failure).
- The exchange reaches DONE exactly once, on every path; the request deadline (on the
  timer wheel) spans all attempts and backoffs.
- The client is answered only through the sink: ``send_head``/``send`` while
  relaying, ``reply_error`` before anything was sent, ``fail`` after.
- A leg is finished (its connection pooled) only after a complete answer; on any
  other end it is aborted, which is how an engine learns the generation is no longer
  wanted. Backpressure: a slow client pauses the leg.
"""
from __future__ import annotations

import logging

from smg.http1 import writer
from smg.http1.framing import collect
from smg.http1.events import Data, EndOfMessage, Response
from smg.server import transforms
from smg.workers.retry import EXCLUDING_STATUS, RequestFaults, request_caused

log = logging.getLogger("smg.proxy")

# states
IDLE, WAITING, BACKOFF, STREAMING, DONE = "idle", "waiting", "backoff", "streaming", "done"
STATES = (IDLE, WAITING, BACKOFF, STREAMING, DONE)
# inputs
START, HEAD, RETRY, GIVE_UP, REDISPATCH, WAIT_MORE, NO_WORKER, END, CUT, TIMEOUT, CLIENT_GONE, PREEMPT = (
    "start", "head", "retry", "give_up", "redispatch", "wait_more", "no_worker", "end", "cut", "timeout",
    "client_gone", "preempt")
INPUTS = (START, HEAD, RETRY, GIVE_UP, REDISPATCH, WAIT_MORE, NO_WORKER, END, CUT, TIMEOUT, CLIENT_GONE, PREEMPT)

TRANSITIONS = {
    (IDLE, START): WAITING,
    (WAITING, HEAD): STREAMING,
    (WAITING, RETRY): BACKOFF,
    (WAITING, GIVE_UP): DONE,
    (BACKOFF, REDISPATCH): WAITING,
    (BACKOFF, WAIT_MORE): BACKOFF,
    (BACKOFF, NO_WORKER): DONE,
    (STREAMING, END): DONE,
    (STREAMING, CUT): DONE,
    (WAITING, TIMEOUT): DONE,
    (BACKOFF, TIMEOUT): DONE,
    (STREAMING, TIMEOUT): DONE,
    (IDLE, CLIENT_GONE): DONE,
    (WAITING, CLIENT_GONE): DONE,
    (BACKOFF, CLIENT_GONE): DONE,
    (STREAMING, CLIENT_GONE): DONE,
    (WAITING, PREEMPT): DONE,
    (BACKOFF, PREEMPT): DONE,
}

_SKIP_RESPONSE = writer.HOP_BY_HOP | {b"x-request-id", b"x-smg-routed-worker-id"}
_SSE = b"text/event-stream"
#: Bytes of a 5xx answer read before deciding whether to retry (error bodies are small;
#: a larger one is the worker's failure, relayed when no retry is left).
HOLD_LIMIT = 65536
#: The largest answer a reshaping exchange reads whole.
MAX_RESHAPED = 64 * 1024 * 1024
_ROUTED_HEADER = b"x-smg-routed-worker-id"
_ROUTED: dict = {}   # worker URL -> its response header pair (bounded below)
_ROUTED_MAX = 4096


def _routed(worker) -> tuple:
    """``((x-smg-routed-worker-id, url),)`` for ``worker``, built once per URL."""
    h = _ROUTED.get(worker.url)
    if h is None:
        if len(_ROUTED) >= _ROUTED_MAX:
            _ROUTED.clear()
        h = _ROUTED[worker.url] = ((_ROUTED_HEADER, worker.url.encode()),)
    return h


class _Reshape:
    """The transform of a reshaped answer: keeps the body until its end, then sends
    the deferred head with the reshaped body's length and the body. An answer past
    ``MAX_RESHAPED`` bytes is relayed as it came (head without a length)."""

    __slots__ = ("ex", "status", "headers", "extra", "parts", "size", "passing")

    def __init__(self, ex, status: int, headers: list, extra) -> None:
        self.ex = ex
        self.status = status
        self.headers = headers
        self.extra = extra
        self.parts: list = []
        self.size = 0
        self.passing = False

    def __call__(self, events: list):
        if self.passing:
            return None
        out = []
        for i, ev in enumerate(events):
            t = type(ev)
            if t is Data:
                self.parts.append(ev)
                self.size += len(ev.data)
                if self.size > MAX_RESHAPED:
                    self.passing = True
                    self.ex.conn.send_head(self.status, self.headers, -1, _SKIP_RESPONSE, self.extra)
                    out = self.parts
                    self.parts = []
                    out.extend(events[i + 1:])
                    return out
            elif t is EndOfMessage:
                raw = b"".join(d.data for d in self.parts)
                self.parts = []
                new = self.ex.reshape(raw)
                body = raw if new is None else new
                self.ex.conn.send_head(self.status, self.headers, len(body), _SKIP_RESPONSE, self.extra)
                out.append(Data(body))
                out.append(ev)
                break
        return out


def settle_attempt(worker, policy, ok: bool | None, record_outcome) -> None:
    """An attempt on ``worker`` ended: its in-flight count back, the policy told, and
    the breaker verdict ``ok`` recorded (``ok`` None: no verdict; ``record_outcome``
    None: the verdict is left to the caller). Every exchange kind ends its attempts
    here, once each."""
    worker.inflight -= 1
    worker.processed += 1
    policy.on_complete(worker, bool(ok))
    if ok is not None and record_outcome is not None:
        record_outcome(worker, ok)


class InvalidTransition(RuntimeError):
    """An input the attempt table has no row for: a bug in the exchange."""


class ExchangeDeps:
    """What an exchange uses, handed over once per gateway (no gateway object).

    ``open_leg(worker, owner)`` makes the worker's upstream leg; ``schedule(delay, fn)``
    is ``loop.call_later``; ``now()`` the loop's coarse clock (deadlines), ``clock()``
    the precise one (the overhead header); ``on_retry(ctx, worker, attempt, delay,
    failed)`` (``failed``: the attempt's (worker status or None, transport error kind or
    None, status the client would get)) and ``on_retries_exhausted(ctx, worker)`` are
    metrics hooks (None: off).
    """

    __slots__ = ("config", "retry", "timers", "now", "clock", "schedule", "selector", "open_leg",
                 "record_outcome", "on_retry", "on_retries_exhausted", "tracing", "observe", "faults")

    def __init__(self, config, retry, timers, now, clock, schedule, selector, open_leg, record_outcome,
                 on_retry=None, on_retries_exhausted=None, tracing=None, observe: bool = False) -> None:
        self.config = config
        self.retry = retry
        self.timers = timers
        self.now = now
        self.clock = clock
        self.schedule = schedule
        self.selector = selector
        self.open_leg = open_leg
        self.record_outcome = record_outcome
        self.on_retry = on_retry
        self.on_retries_exhausted = on_retries_exhausted
        self.tracing = tracing
        self.observe = observe
        self.faults = RequestFaults()  # identical 5xx answers across requests (one per gateway)


class Exchange:
    __slots__ = ("deps", "conn", "ctx", "state", "leg", "worker", "retry", "attempt", "in_attempt",
                 "retries_left", "timer_key", "retry_handle", "paused", "upstream_keep", "transforms",
                 "stream_end", "excluded", "held", "held_size", "pending", "final", "final_ok", "routed", "reshape",
                 "rewrite_stream")

    def __init__(self, deps: ExchangeDeps, conn, ctx, retries: bool = True, routed: bool = True,
                 reshape=None, rewrite_stream=None) -> None:
        """``routed`` False: the relayed head goes without ``x-smg-routed-worker-id``
        (the routes that name no worker). ``reshape(raw) -> bytes | None``: a 2xx
        non-streamed answer is read whole and relayed as what it returns (None: as it
        came); its head waits for the new length. ``rewrite_stream()``: makes the
        transform that runs first on a 2xx SSE answer (a rewriter; None: none)."""
        self.deps = deps
        self.routed = routed
        self.reshape = reshape
        self.rewrite_stream = rewrite_stream
        self.conn = conn
        self.ctx = ctx
        self.state = IDLE
        self.leg = None
        self.worker = ctx.worker
        self.retry = deps.retry
        self.attempt = 0
        self.in_attempt = False
        # retries need a body small enough to have been kept
        self.retries_left = retries and len(ctx.raw) <= deps.config.max_buffered_request_bytes
        self.timer_key = 0
        self.retry_handle = None
        self.paused = False
        self.upstream_keep = False
        self.transforms = ()
        self.stream_end = None
        self.excluded = None    # workers that answered 500 to this request
        self.held = None        # a 5xx answer's events, read before deciding (None: not holding)
        self.held_size = 0
        self.pending = None     # (worker, answer digest): a 5xx whose breaker verdict waits
        self.final = False      # the current attempt's answer is relayed whatever its status
        self.final_ok = None    # ... and this is its breaker verdict

    def _go(self, inp: str) -> None:
        nxt = TRANSITIONS.get((self.state, inp))
        if nxt is None:
            raise InvalidTransition(f"exchange: no transition for {inp!r} in state {self.state!r}")
        self.state = nxt

    # -- dispatch ----------------------------------------------------------------------

    def start(self) -> None:
        deps = self.deps
        self._go(START)
        self.conn.set_producer(self)
        self.timer_key = deps.timers.add(self, deps.now() + deps.config.request_timeout_secs)
        if deps.config.expose_overhead_header:
            self.ctx.dispatch_t = deps.clock()
        self._dispatch()

    def _dispatch(self) -> None:
        w = self.worker
        w.inflight += 1
        self.in_attempt = True
        ctx = self.ctx
        ctx.worker = w
        ctx.attempts += 1
        self.final = False
        self.retry = w.retry or self.deps.retry
        tracing = self.deps.tracing
        trace = tracing.inject(ctx.span) if ctx.span is not None and tracing is not None else None
        leg = self.leg = self.deps.open_leg(w, self)
        if self.paused:
            leg.pause()
        leg.start(ctx, w, trace)

    # -- leg → client ------------------------------------------------------------------

    def on_leg_events(self, events: list) -> None:
        if self.state is DONE:
            return
        if self.held is not None:
            self._hold(events)
            return
        ctx = self.ctx
        head = self.state is WAITING
        if head:
            # before the head: find it and decide whether it is relayed
            for i, ev in enumerate(events):
                if type(ev) is Response:
                    break
            else:
                return  # a worker's 1xx is not relayed (the gateway answered any Expect itself)
            st = ev.status_code
            if st in self.retry.retryable_status and not self.final:
                if st >= 500:
                    self.held = [ev]
                    self.held_size = 0
                    self._hold(events[i + 1:])
                    return
                if self.retries_left and self.retry.should_retry(self.attempt, st):
                    self._attempt_failed(st, None, st, f"worker {self.worker.url} answered {st}")
                    return
            self._head(ev)
            events = events[i + 1:]
        for tr in self.transforms:
            replaced = tr(events)
            if replaced is not None:
                events = replaced
        out = []
        # the payloads, also into ctx.body_parts when a non-streamed body is kept for its usage
        n, done = collect(events, out, ctx.body_parts)
        ctx.bytes_out += n
        if done:
            self._go(END)
            end = self.stream_end
            if end is not None and not end.complete:
                # the worker ended the stream without [DONE] or a finish reason
                ctx.error_type = "upstream_stream_incomplete"
                out.append(transforms.error_event(ctx.family, "the worker ended the stream before the answer "
                                                             "was complete"))
            if self.pending is not None:
                self._flush_pending()
            self._end_attempt(self.final_ok if self.final else
                              ctx.upstream_status not in self.retry.retryable_status)
            self._settle()
            leg = self.leg
            self.leg = None
            leg.finish(self.upstream_keep)
            self.conn.send(out, True)
        elif out or head:
            self.conn.send(out, False)

    def _hold(self, events: list) -> None:
        """Reads a held 5xx answer until it ends (or passes HOLD_LIMIT), then judges it."""
        held = self.held
        for ev in events:
            t = type(ev)
            if t is Data:
                held.append(ev)
                self.held_size += len(ev.data)
                if self.held_size > HOLD_LIMIT:
                    self._judge(False)
                    return
            elif t is EndOfMessage:
                held.append(ev)
                self._judge(True)
                return

    def _judge(self, complete: bool) -> None:
        """A held 5xx answer was read (``complete``: all of it): relay it as the
        request's answer, or fail the attempt (the worker's fault) and retry."""
        held = self.held
        st = held[0].status_code
        w = self.worker
        ctx = self.ctx
        digest = None
        if complete:
            body = b"".join([ev.data for ev in held if type(ev) is Data])
            if request_caused(st, body):
                self._relay_held(None)
                return
            digest = RequestFaults.digest(st, body)
            pend = self.pending
            if pend is not None and pend[0] is not w and pend[1] == digest:
                if self.deps.faults.identical_is_request_caused(digest, ctx.rid, self.deps.now()):
                    self.pending = None   # two workers, one answer: the request's
                    self._relay_held(None)
                    return
        self._flush_pending()
        excluded = self.excluded
        if st == EXCLUDING_STATUS:
            excluded = self.excluded = (excluded or []) + [w]
        if self.retries_left and self.retry.should_retry(self.attempt, st) and \
                (st != EXCLUDING_STATUS or self.deps.selector.has_other(ctx, excluded)):
            self.held = None
            if digest is not None:
                self.pending = (w, digest)   # the verdict waits for the next attempt
                leg = self.leg
                self.leg = None
                leg.finish(held[0].keep_alive)   # read whole: the connection can be reused
            self._attempt_failed(st, None, st, f"worker {w.url} answered {st}", record=digest is None)
            return
        self._relay_held(False)

    def _relay_held(self, ok: bool | None) -> None:
        """Relays the held answer as this request's answer (breaker verdict ``ok``)."""
        held = self.held
        self.held = None
        self.final = True
        self.final_ok = ok
        self.on_leg_events(held)

    def _flush_pending(self) -> None:
        """Records the waiting 5xx verdict: it was the worker's failure after all."""
        pend = self.pending
        if pend is not None:
            self.pending = None
            self.deps.record_outcome(pend[0], False)

    def _head(self, ev: Response) -> None:
        self._go(HEAD)
        ctx = self.ctx
        st = ctx.upstream_status = ev.status_code
        self.upstream_keep = ev.keep_alive
        for n, v in ev.headers:
            if n == b"content-type":
                ctx.is_sse = v.startswith(_SSE)
                break
        cfg = self.deps.config
        extra = _routed(self.worker) if self.routed else ()
        if cfg.expose_overhead_header or cfg.expose_worker_header or cfg.route_explain:
            extra = list(extra)
            if cfg.expose_overhead_header:
                extra.append((b"x-smg-overhead-ms", b"%.3f" % ((ctx.dispatch_t - ctx.t0) * 1000)))
            if cfg.expose_worker_header:
                extra.append((b"x-smg-worker", self.worker.url.encode()))
            if cfg.route_explain:
                why = getattr(ctx, "explain", None) or f"policy={ctx.policy.name}; chosen={self.worker.url}"
                extra.append((b"x-smg-route-explain", why.encode("latin-1", "replace")))
        length = ev.content_length if not ev.chunked else -1
        if self.reshape is not None and 200 <= st < 300 and not ctx.is_sse:
            self.transforms, self.stream_end = (_Reshape(self, st, ev.headers, extra),), None
            return
        rewrite = self.rewrite_stream is not None and ctx.is_sse and 200 <= st < 300
        if rewrite:
            length = -1   # a rewritten stream's length is not the worker's
        self.conn.send_head(st, ev.headers, length, _SKIP_RESPONSE, extra)
        self.transforms, self.stream_end = transforms.for_response(
            ctx, st, length, self.deps.observe and ctx.endpoint.generative, cfg.usage_body_limit)
        if rewrite:
            self.transforms = (self.rewrite_stream(), *self.transforms)

    def on_leg_error(self, err) -> None:
        if self.state is DONE:
            return
        self.leg = None
        self.held = None
        if self.state is STREAMING:
            end = self.stream_end
            if end is None or not end.done:
                self.ctx.error_type = "upstream_closed_mid_response"
            self._go(CUT)
            self._cut(f"worker {self.worker.url} failed mid-response: {err}")
            return
        self._attempt_failed(None, err.kind, err.status_hint, f"worker {self.worker.url} failed: {err}")

    # -- attempts and retries ---------------------------------------------------------

    def _end_attempt(self, ok: bool | None, record: bool = True) -> None:
        """Ends the current attempt exactly once; ``ok`` None = no verdict on the worker;
        ``record`` False: the breaker verdict is left to ``pending``."""
        if not self.in_attempt:
            return
        self.in_attempt = False
        settle_attempt(self.worker, self.ctx.policy, ok, self.deps.record_outcome if record else None)

    def _attempt_failed(self, status, kind: str | None, fail_status: int, message: str,
                        record: bool = True) -> None:
        """The attempt failed before anything reached the client: retry or give up."""
        if record:
            self._flush_pending()
        self._end_attempt(False, record)
        self._drop_leg()
        deps = self.deps
        if self.retries_left and self.retry.should_retry(self.attempt, status):
            self._go(RETRY)
            self._backoff((status, kind, fail_status))
            log.info("request %s: %s; retry %d", self.ctx.rid.decode(), message, self.attempt)
            return
        self._go(GIVE_UP)
        if self.attempt and deps.on_retries_exhausted is not None:
            deps.on_retries_exhausted(self.ctx, self.worker)
        self.ctx.error_type = kind or f"upstream_{status}"
        self._fail(fail_status, message)

    def _backoff(self, failed: tuple | None) -> None:
        """``failed``: the failed attempt's (status, error kind, client status), or None
        when no attempt ran since the last backoff (nobody was free to retry on)."""
        deps = self.deps
        delay = self.retry.delay(self.attempt)
        self.attempt += 1
        if failed is not None and deps.on_retry is not None:
            deps.on_retry(self.ctx, self.worker, self.attempt, delay, failed)
        self.retry_handle = deps.schedule(delay, self._retry)

    def _retry(self) -> None:
        self.retry_handle = None
        if self.state is not BACKOFF:
            return
        if not self._choose_again():
            if self.retry.should_retry(self.attempt, None):
                # nobody to try right now: wait one more backoff (workers come back)
                self._go(WAIT_MORE)
                self._backoff(None)
                return
            self._go(NO_WORKER)
            self.ctx.error_type = "no_healthy_workers"
            self._fail(503, "no healthy worker is available for a retry")
            return
        self._go(REDISPATCH)
        self._dispatch()

    def _choose_again(self) -> bool:
        """Picks the retry's worker into ``self.worker``; False when there is none."""
        worker = self.deps.selector.again(self.ctx, self.worker, self.excluded)
        if worker is None:
            return False
        self.worker = worker
        return True

    # -- endings (the state is DONE already) -------------------------------------------

    def _settle(self) -> None:
        if self.pending is not None:
            self._flush_pending()
        self.held = None
        self.deps.timers.remove(self, self.timer_key)
        if self.retry_handle is not None:
            self.retry_handle.cancel()
            self.retry_handle = None

    def _drop_leg(self) -> None:
        leg = self.leg
        self.leg = None
        if leg is not None:
            leg.abort()

    def _fail(self, status: int, message: str) -> None:
        """Fails before anything was sent to the client: an error response."""
        self._end_attempt(False)
        self._settle()
        self._drop_leg()
        log.warning("request %s: %s", self.ctx.rid.decode(), message)
        self.conn.set_producer(None)
        self.conn.reply_error(status, message, code="call_upstream_timeout" if status == 504 else None)

    def _cut(self, message: str) -> None:
        """Fails after the response head went out: end the stream visibly (one error
        event in the API's shape), then close; a stream already past ``[DONE]`` (or its
        finish reason) just ends."""
        end = self.stream_end
        if end is not None and end.complete:
            self._end_attempt(True)
            self._settle()
            self._drop_leg()
            self.conn.send([], True)
            return
        self._end_attempt(False)
        self._settle()
        self._drop_leg()
        log.warning("request %s: %s", self.ctx.rid.decode(), message)
        event = transforms.error_event(self.ctx.family, message) if self.ctx.is_sse else None
        self.conn.fail(event)

    def abort(self) -> None:
        """The client went away: stop the worker at once."""
        if self.state is DONE:
            return
        self._go(CLIENT_GONE)
        self.ctx.error_type = "client_disconnected"
        self._end_attempt(None)
        self._settle()
        self._drop_leg()

    @property
    def preemptible(self) -> bool:
        """Nothing of the answer has reached the client yet (the priority scheduler may
        take this request's slot)."""
        return self.state is WAITING or self.state is BACKOFF

    def preempt(self, status: int, message: str, code: str, headers: list) -> bool:
        """The priority scheduler takes this request's slot: only while ``preemptible``
        (else False, nothing done). The attempt ends without a verdict on the worker,
        the leg is aborted (the engine stops generating) and the client is answered
        ``status`` (503 scheduler_preempted, Retry-After, X-SMG-Preempted)."""
        if self.state is not WAITING and self.state is not BACKOFF:
            return False
        self._go(PREEMPT)
        self.ctx.error_type = "scheduler_preempted"
        self._end_attempt(None)
        self.pending = None  # an earlier 5xx awaiting its verdict stays unjudged: preempting blames no worker
        self._settle()
        self._drop_leg()
        self.conn.set_producer(None)
        self.conn.reply_error(status, message, code=code, extra=headers)
        return True

    def on_timeout(self) -> None:
        if self.state is DONE:
            return
        streaming = self.state is STREAMING
        self._go(TIMEOUT)
        self.ctx.error_type = "upstream_timeout"
        if streaming:
            self._cut("upstream request timed out")
        else:
            self._fail(504, f"worker {self.worker.url} did not answer within the request timeout")

    # -- backpressure (from the sink) ----------------------------------------------------

    def pause(self) -> None:
        self.paused = True
        if self.leg is not None:
            self.leg.pause()

    def resume(self) -> None:
        self.paused = False
        if self.leg is not None:
            self.leg.resume()
