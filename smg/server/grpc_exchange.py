"""GrpcExchange: one request answered by a gRPC engine, the gateway being the full
OpenAI server (chat completions, completions, SGLang ``/generate``).

Theory of operation: the selection filter chose a gRPC worker (``worker.channel`` is its
``smg.engine_grpc.client.EngineChannel``). ``start`` runs the request as one task on
the loop, in stages:

1. **prepare** (smg/text/prompt.py): the model's tokenizer entry (smg/text/registry.py)
   renders the chat template and tokenizes; the body's sampling knobs are read
   (smg/engine_grpc/sampling.py ``read_sampling``);
2. **request building**: the engine's ``GenerateRequest`` for the worker's runtime
   (SGLang or vLLM), streamed from the engine when the client streams (a stop string
   found by the gateway then ends the generation at once); a non-streamed answer is
   one engine message (the engines apply the stop strings themselves; the gateway
   applies them again to the whole output, which leaves a correct answer unchanged);
3. **generate**: the engine's chunks pass the response builder (smg/generation:
   incremental detokenization, stops, for chat the reasoning and tool-call parsers
   (``pick``: model card, worker labels, ``--reasoning-parser``/``--tool-call-parser``,
   the model-name map), OpenAI/SGLang shapes) and its bytes go to the response sink;
4. **end**: the engine stream is given up when the builder says every choice finished
   (``all_finished``) or the engine ended it; the builder's tail (the last events and
   ``[DONE]``, or the whole non-streamed body) is sent.

Rules:
- The client is answered only through the sink: ``reply_error`` before the head,
  ``send_head``/``send`` after, ``fail`` (one error event in the API's shape, then the
  connection ends) when the engine fails mid-answer. The head goes out with the
  engine's first chunk, so an engine that fails before producing anything is still
  answered with a proper HTTP status.
- Errors: a body that cannot become a prompt or a request is a 400 in the API's
  format with its code; an engine status is mapped by smg/engine_grpc/errors.py (400
  for ``INVALID_ARGUMENT`` with the engine's message, 503 overloaded, 504 deadline, 502
  otherwise). Before the head, a failure the retry policy allows (connect failures,
  unavailable or overloaded engines) is retried on another worker after the backoff;
  a request-caused one (400) never is and counts against no worker.
- Every attempt ends exactly once: the worker's in-flight count, the policy's
  ``on_complete`` and the breaker verdict are settled there.
- The client leaving (``abort``) cancels the task: the engine call is cancelled and
  ``Abort`` is sent for its request id (smg/engine_grpc/client.py), so no generation
  continues for a gone client. The request deadline (``request_timeout_secs``) does
  the same and answers 504 (or an error event once streaming).
- Backpressure: while the sink is paused the task reads no further chunk, so the
  engine's stream (HTTP/2 flow control on the channel) waits with it.
- Request id: the engine's request id is the gateway's request id (``x-request-id``),
  which is also the answer's ``id``.
"""
from __future__ import annotations

import asyncio
import logging
import time

from smg.engine_grpc.errors import EngineRejected
from smg.engine_grpc.sampling import InvalidSampling, build_generate_request, read_sampling
from smg.errors import UpstreamError
from smg.generation import ResponseBuilder
from smg.generation.parsing import pick
from smg.http1.events import Data
from smg.server import transforms
from smg.server.exchange import settle_attempt
from smg.text.prompt import PromptError, chat_prompt, completion_prompt, generate_body, generate_prompt

log = logging.getLogger("smg.grpc")

_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_JSON_HEADERS = [(b"content-type", b"application/json")]
_NO_SKIP: frozenset = frozenset()
#: API label of the endpoint row -> (prompt stage, sampling endpoint, builder api)
_APIS = {
    "chat": (chat_prompt, "chat", "chat"),
    "completions": (completion_prompt, "completion", "completions"),
    "generate": (generate_prompt, "completion", "generate"),
}


def supports(endpoint) -> bool:
    """Whether a gRPC worker can answer this endpoint (the full server's routes)."""
    return endpoint.api in _APIS


def _model_for(model, worker, tokenizers):
    """The tokenizer registry's name for the request's model on ``worker``."""
    if type(model) is str and model in tokenizers:
        return model
    cards = worker.model_cards
    return cards[0]["id"] if cards else model


def routing_prompt(tokenizers):
    """The selection stage's ``prepare(ctx, worker)`` (smg/server/selection.py): the
    prompt rendered and tokenized before selection into ``ctx.prompt``, so policies
    route on token ids; nothing when it cannot be made (the exchange then refuses the
    request with the reason)."""

    def prepare(ctx, worker) -> None:
        stage = _APIS.get(ctx.endpoint.api)
        if stage is None or ctx.body is None:
            return
        model = _model_for(ctx.model, worker, tokenizers)
        entry = tokenizers.entry(model) if model is not None else None
        if entry is None or entry.tokenizer is None:
            return
        try:
            ctx.prompt = stage[0](ctx.body, entry)
        except PromptError:
            return

    return prepare


class GrpcDeps:
    """What a gRPC exchange uses, handed over once per gateway: the settings, the
    tokenizer registry, selection (retries), the retry policy, the breaker verdict
    sink and whether usage/timing is observed."""

    __slots__ = ("config", "tokenizers", "selector", "retry", "record_outcome", "observe")

    def __init__(self, config, tokenizers, selector, retry, record_outcome, observe: bool) -> None:
        self.config = config
        self.tokenizers = tokenizers
        self.selector = selector
        self.retry = retry
        self.record_outcome = record_outcome
        self.observe = observe


class GrpcExchange:
    __slots__ = ("deps", "conn", "ctx", "worker", "task", "resumed", "sent", "in_attempt", "done")

    def __init__(self, deps: GrpcDeps, conn, ctx) -> None:
        self.deps = deps
        self.conn = conn
        self.ctx = ctx
        self.worker = ctx.worker
        self.task = None
        self.resumed = asyncio.Event()
        self.resumed.set()
        self.sent = False        # the head went to the client
        self.in_attempt = False
        self.done = False

    def start(self) -> None:
        self.conn.set_producer(self)
        self.task = asyncio.get_running_loop().create_task(self._run())

    # -- the sink's producer interface -----------------------------------------------

    def pause(self) -> None:
        self.resumed.clear()

    def resume(self) -> None:
        self.resumed.set()

    def abort(self) -> None:
        """The client went away: stop the engine at once."""
        if self.done:
            return
        self.done = True
        self.ctx.error_type = "client_disconnected"
        self._end_attempt(None)
        if self.task is not None:
            self.task.cancel()

    @property
    def preemptible(self) -> bool:
        return not self.sent and not self.done

    def preempt(self, status: int, message: str, code: str, headers: list) -> bool:
        if not self.preemptible:
            return False
        self.done = True
        self.ctx.error_type = "scheduler_preempted"
        self._end_attempt(None)
        if self.task is not None:
            self.task.cancel()
        self.conn.set_producer(None)
        self.conn.reply_error(status, message, code=code, extra=headers)
        return True

    # -- the task --------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            async with asyncio.timeout(self.deps.config.request_timeout_secs):
                await self._serve()
        except asyncio.CancelledError:
            return  # abort() or preempt() settled everything
        except TimeoutError:
            if not self.done:
                self.ctx.error_type = "upstream_timeout"
                self._error(504, "the engine did not finish within the request timeout", "call_upstream_timeout")
        except Exception:  # a bug: answered, never left hanging
            log.exception("request %s: gRPC exchange failed", self.ctx.rid.decode())
            if not self.done:
                self._error(500, "internal gateway error", None)

    def _error(self, status: int, message: str, code: str | None, param: str | None = None) -> None:
        """Ends the request with an error: an error response before the head, one error
        event (then the end) after it."""
        self.done = True
        self._end_attempt(False if status >= 500 else None)
        conn = self.conn
        conn.set_producer(None)
        if not self.sent:
            conn.reply_error(status, message, code=code, param=param)
        else:
            conn.fail(transforms.error_event(self.ctx.family, message) if self.ctx.is_sse else None)

    def _end_attempt(self, ok: bool | None) -> None:
        if not self.in_attempt:
            return
        self.in_attempt = False
        settle_attempt(self.worker, self.ctx.policy, ok, self.deps.record_outcome)

    def _model_id(self) -> str | None:
        return _model_for(self.ctx.model, self.worker, self.deps.tokenizers)

    def _parsers(self, body: dict, model):
        """The reasoning and tool-call parsers of a chat answer (smg/generation/parsing.py):
        the worker's model card and labels, then the gateway's settings, then the model map."""
        w, config = self.worker, self.deps.config
        card = next((c for c in w.model_cards if c.get("id") == model), None)
        return pick(body, model, card, w.spec.get("labels"), config.reasoning_parser, config.tool_call_parser)

    async def _serve(self) -> None:
        deps, ctx = self.deps, self.ctx
        prepare, endpoint, api = _APIS[ctx.endpoint.api]
        model = self._model_id()
        entry = deps.tokenizers.entry(model) if model is not None else None
        if entry is None or entry.tokenizer is None:
            ctx.error_type = "tokenizer_not_ready"
            self._error(503, f"the tokenizer of model '{model}' is not loaded", "tokenizer_not_ready")
            return
        body = ctx.body if api != "generate" else generate_body(ctx.body)
        try:
            prompt = ctx.prompt   # made before selection when the policy routes on tokens
            if prompt is None:
                prompt = ctx.prompt = prepare(ctx.body, entry)
            sampling = read_sampling(body, endpoint)
        except PromptError as e:
            self._error(400, str(e), e.code, e.param)
            return
        except InvalidSampling as e:
            self._error(400, str(e), "invalid_request")
            return
        parsing = self._parsers(body, model) if api == "chat" else None
        rid = ctx.rid.decode()
        attempt = 0
        while True:
            w = self.worker
            try:
                request = build_generate_request(w.runtime_type, body, prompt.ids, request_id=rid,
                                                 endpoint=endpoint, original_text=prompt.text,
                                                 stream=sampling.stream)
            except (InvalidSampling, ValueError) as e:
                self._error(400, str(e), "invalid_request")
                return
            builder = ResponseBuilder(api=api, stream=sampling.stream, model=model, response_id=rid,
                                   created=int(time.time()), tokenizer=entry.tokenizer, prompt_ids=prompt.ids,
                                   sampling=sampling, parsing=parsing, include_usage=bool(
                                       (body.get("stream_options") or {}).get("include_usage")))
            w.inflight += 1
            self.in_attempt = True
            ctx.worker = w
            ctx.attempts += 1
            try:
                await self._generate(w, request, builder, sampling.stream)
                return
            except UpstreamError as e:
                if self.done:
                    return
                if self.sent:
                    ctx.error_type = "upstream_closed_mid_response"
                    log.warning("request %s: engine %s failed mid-answer: %s", rid, w.url, e)
                    self._error(502, f"the engine failed mid-answer: {e}", None)
                    return
                if isinstance(e, EngineRejected):   # the request's fault: no verdict, no retry
                    self._end_attempt(None)
                    self._error(400, str(e), "invalid_request")
                    return
                self._end_attempt(False)
                retry = w.retry or deps.retry
                nxt = deps.selector.again(ctx, w) if retry.should_retry(attempt, e.status_hint) else None
                if nxt is None or nxt.channel is None:
                    ctx.error_type = e.kind
                    self._error(e.status_hint, f"worker {w.url} failed: {e}", None)
                    return
                log.info("request %s: engine %s failed: %s; retry %d", rid, w.url, e, attempt + 1)
                await asyncio.sleep(retry.delay(attempt))
                attempt += 1
                self.worker = nxt

    async def _generate(self, w, request, builder, stream: bool) -> None:
        """One attempt. A streamed answer's head goes out with the engine's first chunk;
        a non-streamed one is sent whole at the end, with its length."""
        conn, ctx = self.conn, self.ctx
        observer = transforms.SSEObserver(ctx) if self.deps.observe and stream else None
        gen = w.channel.generate(request)
        try:
            async for chunk in gen:
                events = builder.feed(chunk)
                if stream and not self.sent:
                    self._head(True, -1)
                if events:
                    n = sum(len(e) for e in events)
                    ctx.bytes_out += n
                    if observer is not None:
                        observer([Data(e) for e in events])
                    conn.send(events, False)
                if builder.all_finished:
                    break
                if not self.resumed.is_set():
                    await self.resumed.wait()
        finally:
            await gen.aclose()
        tail = builder.finish()
        if not self.sent:
            self._head(stream, -1 if stream else sum(len(e) for e in tail))
        self.done = True
        ctx.bytes_out += sum(len(e) for e in tail)
        if observer is not None and tail:
            observer([Data(e) for e in tail])
        if not stream and self.deps.observe:
            ctx.body_parts = list(tail)
        self._end_attempt(True)
        conn.set_producer(None)
        conn.send(tail, True)

    def _head(self, stream: bool, length: int) -> None:
        self.sent = True
        ctx = self.ctx
        ctx.upstream_status = 200
        ctx.is_sse = stream
        extra = ((b"x-smg-routed-worker-id", self.worker.url.encode()),)
        self.conn.send_head(200, _SSE_HEADERS if stream else _JSON_HEADERS, length, _NO_SKIP, extra)
