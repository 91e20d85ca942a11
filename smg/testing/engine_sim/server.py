"""``SimEngine``: one ``EngineModel`` on a TCP port behind SGLang-shaped HTTP endpoints.

Rules:
- Requests are parsed by smg's own ``RequestParser``; answers are framed by
  ``smg.http1.writer``. A connection answers its requests one at a time, in order.
- ``POST /v1/chat/completions`` and ``/v1/completions`` render the prompt, submit a job
  and answer when the model's clock says so: a stream writes its first token at the end
  of the job's prefill and one token per decode step after it; a whole answer is
  written when the last token is. ``usage.prompt_tokens_details.cached_tokens`` is what
  the cache held at admission (in a stream: in the usage chunk when
  ``stream_options.include_usage`` asks for it, as OpenAI-compatible engines do).
- A client that leaves frees its job's slot or queue place at once.
- Load endpoints report the model's state: ``/v1/loads`` (``max_running_requests`` is
  the batch bound), ``/get_load``, ``/metrics`` (SGLang gauges plus ``sim:`` counters).
  ``GET /_sim/stats`` is the per-engine counters as JSON; ``POST /_sim/reset`` zeroes
  them and ``POST /flush_cache`` empties the cache.
- Malformed bodies get a 400 OpenAI error; unknown paths 404; wrong methods 405.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import orjson

from smg.errors import RemoteProtocolError
from smg.http1.events import Data, Request
from smg.http1.parser import RequestParser
from smg.http1.writer import LAST_CHUNK, chunk, response, status_line
from smg.testing.engine_sim.model import EngineModel, SimParams, render_chat

_dumps = orjson.dumps
WORD = "tok "


def _error(status: int, message: str) -> bytes:
    return _dumps({"error": {"message": message, "type": "invalid_request_error", "code": status}})


class SimEngine:
    """One simulated engine. ``await SimEngine(SimParams(...)).start()``; ``url``; ``stop()``."""

    def __init__(self, params: SimParams | None = None, model: str = "sim-model", engine_id: str = "") -> None:
        self.params = params or SimParams()
        self.model_name = model
        self.engine_id = engine_id
        self.engine = EngineModel(self.params)
        self.host = "127.0.0.1"
        self.port = 0
        self._server: Any = None
        self._conns: set = set()
        self._counter = 0
        self._started = time.time()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> SimEngine:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: SimProtocol(self), host, port, backlog=1024)
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]
        if not self.engine_id:
            self.engine_id = f"sim-{self.port}"
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for c in list(self._conns):
            if c.transport is not None:
                c.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def next_id(self) -> str:
        self._counter += 1
        return f"{self.engine_id}-{self._counter}"

    def stats(self) -> dict:
        s = self.engine.stats()
        s["engine_id"] = self.engine_id
        s["url"] = self.url
        return s

    # -- load reports (SGLang shapes)

    def load(self) -> dict:
        e = self.engine
        p = self.params
        used = len(e.cache) * p.block_size
        total = max(1, p.cache_blocks * p.block_size)
        return {"dp_rank": 0, "num_running_reqs": e.running, "num_waiting_reqs": len(e.waiting),
                "num_total_reqs": e.running + len(e.waiting),
                "num_waiting_uncached_tokens": e.waiting_uncached_tokens(), "num_used_tokens": used,
                "max_total_num_tokens": total, "token_usage": used / total, "gen_throughput": 0.0,
                "cache_hit_rate": e.stats()["hit_rate"], "utilization": e.running / max(1, p.max_running),
                "max_running_requests": p.max_running}

    def metrics_text(self) -> bytes:
        ld = self.load()
        st = self.engine.stats()
        m = self.model_name
        rows = [("sglang:num_running_reqs", "gauge", ld["num_running_reqs"]),
                ("sglang:num_queue_reqs", "gauge", ld["num_waiting_reqs"]),
                ("sglang:token_usage", "gauge", ld["token_usage"]),
                ("sglang:cache_hit_rate", "gauge", ld["cache_hit_rate"]),
                ("sglang:gen_throughput", "gauge", 0.0),
                ("sim:cache_block_hits_total", "counter", st["block_hits"]),
                ("sim:cache_block_misses_total", "counter", st["block_misses"]),
                ("sim:cache_evictions_total", "counter", st["evictions"]),
                ("sim:prompt_tokens_total", "counter", st["prompt_tokens"]),
                ("sim:cached_tokens_total", "counter", st["cached_tokens"])]
        lines = []
        for name, kind, value in rows:
            lines += [f"# TYPE {name} {kind}", f'{name}{{model_name="{m}"}} {value}']
        return ("\n".join(lines) + "\n").encode()


class SimProtocol(asyncio.Protocol):
    def __init__(self, sim: SimEngine) -> None:
        self.sim = sim
        self.transport: Any = None
        self.parser = RequestParser()
        self.req: Any = None
        self.body: list = []
        self.queue: deque = deque()
        self.busy = False
        self.closed = False
        self.task: Any = None
        self.job: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.sim._conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.sim._conns.discard(self)
        if self.job is not None:
            self.sim.engine.finish(self.job)
            self.job = None
        if self.task is not None:
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.parser.feed(data)
        except RemoteProtocolError as e:
            self.transport.write(response(e.status_hint, [(b"content-type", b"application/json")],
                                          _error(e.status_hint, str(e)), False))
            self.transport.close()
            return
        for ev in events:
            t = type(ev)
            if t is Data:
                self.body.append(ev.data)
            elif t is Request:
                self.req = ev
            else:
                self.queue.append((self.req, b"".join(self.body)))
                self.body = []
        self.run_queue()

    def eof_received(self) -> bool:
        return False

    def run_queue(self) -> None:
        while self.queue and not self.busy and not self.closed:
            req, body = self.queue.popleft()
            self.handle(req, body)

    # -- answers

    def respond(self, status: int, body: bytes, ctype: bytes = b"application/json") -> None:
        keep = self.req_keep
        self.transport.write(response(status, [(b"content-type", ctype)], body, keep))
        if not keep:
            self.transport.close()

    def json(self, obj: Any, status: int = 200) -> None:
        self.respond(status, _dumps(obj))

    def handle(self, req: Request, body: bytes) -> None:
        self.req_keep = req.keep_alive
        target = req.target
        q = target.find(b"?")
        path = target if q < 0 else target[:q]
        route = ROUTES.get(path)
        if route is None:
            self.respond(404, _error(404, f"no route for {path.decode('latin-1')}"))
            return
        handler = route.get(req.method)
        if handler is None:
            self.respond(405, _error(405, "method not allowed"))
            return
        handler(self, body)

    def done(self) -> None:
        self.busy = False
        self.task = None
        self.job = None
        if not self.closed:
            if not self.req_keep:
                self.transport.close()
            else:
                self.run_queue()


# -- handlers


def _ok(conn: SimProtocol, body: bytes) -> None:
    conn.respond(200, b"", b"text/plain")


def _models(conn: SimProtocol, body: bytes) -> None:
    s = conn.sim
    conn.json({"object": "list", "data": [{"id": s.model_name, "object": "model", "created": int(s._started),
                                            "owned_by": "smg-sim", "root": s.model_name, "max_model_len": 131072}]})


def _model_info(conn: SimProtocol, body: bytes) -> None:
    m = conn.sim.model_name
    conn.json({"model_path": m, "tokenizer_path": m, "is_generation": True, "preferred_sampling_params": None,
               "weight_version": "default"})


def _server_info(conn: SimProtocol, body: bytes) -> None:
    s = conn.sim
    p = s.params
    conn.json({"model_path": s.model_name, "tokenizer_path": s.model_name, "served_model_name": s.model_name,
               "dp_size": 1, "tp_size": 1, "context_length": 131072, "version": "0-sim",
               "max_total_num_tokens": p.cache_blocks * p.block_size, "max_running_requests": p.max_running,
               "page_size": p.block_size, "engine": "smg-sim", "worker_id": s.engine_id,
               "internal_states": [{"last_gen_throughput": 0.0}]})


def _version(conn: SimProtocol, body: bytes) -> None:
    conn.json({"version": "0-sim"})


def _loads(conn: SimProtocol, body: bytes) -> None:
    ld = conn.sim.load()
    conn.json({"timestamp": time.time(), "version": "0-sim", "dp_rank_count": 1, "loads": [ld],
               "aggregate": {"total_running_reqs": ld["num_running_reqs"],
                             "total_waiting_reqs": ld["num_waiting_reqs"], "total_reqs": ld["num_total_reqs"],
                             "avg_token_usage": ld["token_usage"], "avg_throughput": 0.0,
                             "avg_utilization": ld["utilization"]}})


def _get_load(conn: SimProtocol, body: bytes) -> None:
    ld = conn.sim.load()
    conn.json([{"dp_rank": 0, "num_reqs": ld["num_total_reqs"], "num_waiting_reqs": ld["num_waiting_reqs"],
                "num_tokens": ld["num_used_tokens"]}])


def _metrics(conn: SimProtocol, body: bytes) -> None:
    conn.respond(200, conn.sim.metrics_text(), b"text/plain; version=0.0.4")


def _stats(conn: SimProtocol, body: bytes) -> None:
    conn.json(conn.sim.stats())


def _reset(conn: SimProtocol, body: bytes) -> None:
    conn.sim.engine.reset_counters()
    conn.json(conn.sim.stats())


def _flush(conn: SimProtocol, body: bytes) -> None:
    conn.sim.engine.cache.clear()
    conn.respond(200, b"Cache flushed.\n", b"text/plain")


def _parse(conn: SimProtocol, body: bytes, chat: bool) -> tuple | None:
    try:
        obj = orjson.loads(body)
    except ValueError:
        conn.respond(400, _error(400, "body is not valid JSON"))
        return None
    if not isinstance(obj, dict):
        conn.respond(400, _error(400, "body must be a JSON object"))
        return None
    if chat:
        msgs = obj.get("messages")
        if not isinstance(msgs, list) or not msgs:
            conn.respond(400, _error(400, "messages must be a non-empty array"))
            return None
        prompt = render_chat(msgs)
    else:
        prompt = obj.get("prompt")
        if isinstance(prompt, list):
            prompt = "".join(x for x in prompt if isinstance(x, str))
        if not isinstance(prompt, str):
            conn.respond(400, _error(400, "prompt must be a string"))
            return None
    mt = obj.get("max_completion_tokens") or obj.get("max_tokens")
    if mt is not None and (not isinstance(mt, int) or isinstance(mt, bool) or mt < 1):
        conn.respond(400, _error(400, "max_tokens must be a positive integer"))
        return None
    so = obj.get("stream_options")
    usage = isinstance(so, dict) and bool(so.get("include_usage"))
    return prompt, mt, bool(obj.get("stream")), usage, obj.get("model") or conn.sim.model_name


def _generation(chat: bool):
    def handler(conn: SimProtocol, body: bytes) -> None:
        parsed = _parse(conn, body, chat)
        if parsed is None:
            return
        prompt, mt, stream, usage, model = parsed
        engine = conn.sim.engine
        job = engine.job(prompt, mt)
        conn.busy = True
        conn.job = job
        admitted = asyncio.get_running_loop().create_future()
        job.on_admit = lambda j: admitted.done() or admitted.set_result(None)
        conn.task = asyncio.get_running_loop().create_task(
            _run(conn, job, admitted, chat, stream, usage, model))
        engine.submit(job)
    return handler


def _usage(job: Any) -> dict:
    return {"prompt_tokens": job.prompt_tokens, "completion_tokens": job.out_tokens,
            "total_tokens": job.prompt_tokens + job.out_tokens,
            "prompt_tokens_details": {"cached_tokens": job.cached_tokens}}


async def _run(conn: SimProtocol, job: Any, admitted: Any, chat: bool, stream: bool, usage: bool,
               model: str) -> None:
    engine = conn.sim.engine
    rid = conn.sim.next_id()
    created = int(time.time())
    obj_kind = "chat.completion" if chat else "text_completion"
    try:
        await admitted
        delay = job.first_token_at - engine.clock()
        if delay > 0:
            await asyncio.sleep(delay)
        t = conn.transport
        if stream:
            t.write(status_line(200) + b"content-type: text/event-stream\r\ncache-control: no-cache\r\n"
                    b"transfer-encoding: chunked\r\n" + (b"" if conn.req_keep else b"connection: close\r\n")
                    + b"\r\n")
        for i in range(job.out_tokens):
            if i:
                await asyncio.sleep(engine.step_seconds())
            if conn.closed:
                return
            if stream:
                if chat:
                    delta = {"role": "assistant", "content": WORD} if i == 0 else {"content": WORD}
                    ch = {"index": 0, "delta": delta, "finish_reason": None}
                else:
                    ch = {"index": 0, "text": WORD, "finish_reason": None}
                t.write(chunk(b"data: " + _dumps({"id": rid, "object": obj_kind + ".chunk", "created": created,
                                                   "model": model, "choices": [ch]}) + b"\n\n"))
        engine.generated_tokens += job.out_tokens
        text = WORD * job.out_tokens
        if stream:
            last = {"index": 0, "delta": {}, "finish_reason": "length"} if chat else \
                {"index": 0, "text": "", "finish_reason": "length"}
            out = [chunk(b"data: " + _dumps({"id": rid, "object": obj_kind + ".chunk", "created": created,
                                              "model": model, "choices": [last]}) + b"\n\n")]
            if usage:
                out.append(chunk(b"data: " + _dumps({"id": rid, "object": obj_kind + ".chunk", "created": created,
                                                      "model": model, "choices": [], "usage": _usage(job)})
                                 + b"\n\n"))
            out.append(chunk(b"data: [DONE]\n\n"))
            out.append(LAST_CHUNK)
            t.write(b"".join(out))
            if not conn.req_keep:
                t.close()
        else:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"} \
                if chat else {"index": 0, "text": text, "finish_reason": "length"}
            conn.respond(200, _dumps({"id": rid, "object": obj_kind, "created": created, "model": model,
                                      "choices": [choice], "usage": _usage(job)}))
    except asyncio.CancelledError:
        return
    finally:
        engine.finish(job)
    conn.done()


ROUTES: dict = {
    b"/health": {b"GET": _ok}, b"/health_generate": {b"GET": _ok}, b"/readiness": {b"GET": _ok},
    b"/liveness": {b"GET": _ok}, b"/v1/models": {b"GET": _models},
    b"/get_model_info": {b"GET": _model_info}, b"/model_info": {b"GET": _model_info},
    b"/get_server_info": {b"GET": _server_info}, b"/server_info": {b"GET": _server_info},
    b"/version": {b"GET": _version}, b"/v1/loads": {b"GET": _loads}, b"/get_load": {b"GET": _get_load},
    b"/metrics": {b"GET": _metrics}, b"/_sim/stats": {b"GET": _stats}, b"/_sim/reset": {b"POST": _reset},
    b"/flush_cache": {b"POST": _flush},
    b"/v1/chat/completions": {b"POST": _generation(True)}, b"/v1/completions": {b"POST": _generation(False)},
}


async def start_fleet(n: int, params: SimParams | None = None, model: str = "sim-model",
                      host: str = "127.0.0.1", ports: list | None = None) -> list:
    """Starts ``n`` engines (each its own model and cache, same parameters) on free ports
    (or ``ports``); returns the started ``SimEngine`` list."""
    engines = []
    base = params or SimParams()
    try:
        for i in range(n):
            p = SimParams(**{**base.__dict__, "seed": base.seed + i})
            engines.append(await SimEngine(p, model, f"sim{i}").start(host, ports[i] if ports else 0))
    except BaseException:
        for e in engines:
            await e.stop()
        raise
    return engines
