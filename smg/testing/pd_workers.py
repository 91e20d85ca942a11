"""Mock workers in prefill and decode roles that really rendezvous (SGLang's bootstrap).

Rules:
- ``PrefillWorker`` is a ``MockWorker`` that also listens on its bootstrap port. Each
  generation request's ``bootstrap_room`` (one per element of a batch) is marked
  arrived when the request is received (not when it fails by injection: a prefill that
  answers an error transfers nothing).
- ``DecodeWorker`` answers a generation request only after meeting its prefill
  partner: for each room it connects to ``bootstrap_host:bootstrap_port`` (the fields
  the gateway injected; ``bootstrap_default`` when the port is null) and asks for the
  room; the prefill side answers once the room has arrived or after its wait. A room
  not met within ``rendezvous_timeout`` seconds (verdict ``timeout``) or no partner
  listening (``unreachable``) is a 500 ``KV transfer failed``, like a real KV transfer. A request without the
  bootstrap fields is a 400.
- Both record what they received, bounded (``received``: the injected fields and the
  path of each request; decode adds its rendezvous verdict).
- ``return_logprob`` on ``/generate``: prefill answers its prompt's input logprobs
  (``PREFILL_LOGPROBS`` per element), decode its own (``DECODE_LOGPROBS``), streamed or
  not as asked, so a test can check the gateway's merge.
- ``VllmPrefillWorker``/``VllmDecodeWorker``: vLLM's handoff instead (see their
  docstrings); decode fetches the transfer prefill announced in its returned
  ``kv_transfer_params`` over the same bootstrap listener.
- The bootstrap channel: decode keeps one connection per prefill listener and writes
  ``<room>\\n``; prefill answers ``<room> ok\\n`` once the room has arrived, or
  ``<room> timeout\\n`` after ``wait`` seconds; the arrived table is bounded
  (``MAX_ROOMS``, oldest dropped).
"""
from __future__ import annotations

import asyncio
import os
from collections import OrderedDict, deque
from typing import Any

import orjson

from smg.testing.mock_worker import MockConfig, MockWorker
from smg.testing.mock_worker.endpoints import ROUTES
from smg.testing.mock_worker.errors import openai_error

FIELDS = ("bootstrap_host", "bootstrap_port", "bootstrap_room")
GENERATION_PATHS = (b"/generate", b"/v1/chat/completions", b"/v1/completions")
MAX_ROOMS = 65536
MAX_RECEIVED = 1024
PREFILL_LOGPROBS = [[-0.5, 101, None], [-0.25, 102, None]]
DECODE_LOGPROBS = [[-0.125, 103, None]]
OUTPUT_LOGPROBS = [[-0.0625, 7, None]]


def _rooms(obj: dict) -> list:
    room = obj.get("bootstrap_room")
    return room if type(room) is list else [room]


def _logprob_answer(w, obj: dict, input_lp: list, text: str) -> tuple:
    """``(content type, body)`` of a ``/generate`` answer carrying ``input_lp``."""
    ids = obj.get("input_ids")
    n = len(obj["text"]) if type(obj.get("text")) is list else \
        (len(ids) if type(ids) is list and ids and type(ids[0]) is list else None)

    def one() -> dict:
        return {"text": text, "meta_info": {"id": w._next_id().decode(), "input_token_logprobs": list(input_lp),
                                            "output_token_logprobs": list(OUTPUT_LOGPROBS),
                                            "finish_reason": {"type": "stop"}, "prompt_tokens": 2,
                                            "completion_tokens": 1}}
    doc: Any = [one() for _ in range(n)] if n is not None else one()
    if obj.get("stream") is True and n is None:
        events = b"".join(b"data: " + orjson.dumps(dict(doc, text=t)) + b"\n\n" for t in (text[:1], text))
        return b"text/event-stream", events + b"data: [DONE]\n\n"
    return b"application/json", orjson.dumps(doc)


class _PdWorker(MockWorker):
    def __init__(self, config=None, **overrides: Any) -> None:
        # an SGLang engine by its /v1/models (gateways that detect the backend then speak
        # SGLang's bootstrap protocol to it)
        super().__init__(config if config is not None else MockConfig(owned_by="sglang"), **overrides)
        self.received: deque = deque(maxlen=MAX_RECEIVED)
        routes = dict(ROUTES)
        for path in GENERATION_PATHS:
            inner = ROUTES[path][b"POST"]
            routes[path] = {b"POST": self._wrap(path, inner)}
        self.routes = routes

    def _wrap(self, path: bytes, inner):
        def handler(conn, req, body: bytes) -> None:
            try:
                obj = orjson.loads(body)
            except orjson.JSONDecodeError:
                obj = None
            if type(obj) is not dict:
                inner(conn, req, body)
                return
            rec = {"path": path.decode()}
            for f in FIELDS:
                rec[f] = obj.get(f, "<absent>")
            self.received.append(rec)
            self._serve(conn, req, body, obj, rec, inner)
        return handler

    def _serve(self, conn, req, body, obj, rec, inner) -> None:
        raise NotImplementedError


class PrefillWorker(_PdWorker):
    """A prefill mock: ``await PrefillWorker().start()``; ``bootstrap_port`` is where
    decode partners find it."""

    def __init__(self, config=None, *, wait: float = 5.0, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.wait = wait
        self.bootstrap_port = 0
        self._arrived: OrderedDict = OrderedDict()   # room -> True (bounded)
        self._waiting: dict = {}                     # room -> [(protocol, timer handle)]
        self._links: set = set()                     # open bootstrap connections
        self._bootstrap = None

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, ssl=None, bootstrap_port: int = 0):
        await super().start(host, port, ssl=ssl)
        loop = asyncio.get_running_loop()
        self._bootstrap = await loop.create_server(lambda: _BootstrapServer(self), host, bootstrap_port)
        self.bootstrap_port = self._bootstrap.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._bootstrap is not None:
            self._bootstrap.close()
            self._bootstrap = None
        for waiters in self._waiting.values():
            for _, handle in waiters:
                handle.cancel()
        self._waiting.clear()
        for proto in list(self._links):
            proto.transport.abort()
        await super().stop()

    def _arrive(self, room) -> None:
        """``room``'s KV is here: its waiting partners are told."""
        arrived = self._arrived
        arrived[room] = True
        if len(arrived) > MAX_ROOMS:
            arrived.popitem(last=False)
        for proto, handle in self._waiting.pop(room, ()):
            handle.cancel()
            proto.answer(room, b"ok")

    def _ask(self, proto, room) -> None:
        if room in self._arrived:
            proto.answer(room, b"ok")
            return
        handle = asyncio.get_running_loop().call_later(self.wait, self._expire, proto, room)
        self._waiting.setdefault(room, []).append((proto, handle))

    def _expire(self, proto, room) -> None:
        waiters = self._waiting.get(room)
        if waiters:
            self._waiting[room] = [(p, h) for p, h in waiters if p is not proto]
            if not self._waiting[room]:
                del self._waiting[room]
        proto.answer(room, b"timeout")

    def _serve(self, conn, req, body, obj, rec, inner) -> None:
        cfg = self.config
        if cfg.fail_status is None and cfg.fail_mode is None:
            for room in _rooms(obj):
                self._arrive(room)
        if obj.get("return_logprob") is True and req.target.startswith(b"/generate"):
            ctype, out = _logprob_answer(self, obj, PREFILL_LOGPROBS, "")
            conn.respond(200, out, ctype=ctype)
            return
        inner(conn, req, body)


class _BootstrapServer(asyncio.Protocol):
    """Prefill's bootstrap listener: ``<room>\n`` in, ``<room> ok|timeout\n`` out (in
    the order rooms arrive, not the order asked)."""

    def __init__(self, w: PrefillWorker) -> None:
        self.w = w
        self.buf = b""
        self.transport: Any = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.w._links.add(self)

    def connection_lost(self, exc) -> None:
        self.w._links.discard(self)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        *lines, self.buf = buf.split(b"\n")
        if len(self.buf) > 64:
            self.transport.abort()
            return
        for line in lines:
            try:
                room = int(line)
            except ValueError:
                self.transport.write(b"0 bad\n")
                continue
            self.w._ask(self, room)

    def answer(self, room, verdict: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(b"%d %s\n" % (room, verdict))


class _BootstrapClient(asyncio.Protocol):
    """Decode's connection to one prefill's bootstrap listener, kept and shared."""

    def __init__(self) -> None:
        self.buf = b""
        self.pending: dict = {}   # room -> [Future]
        self.transport: Any = None
        self.lost = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def ask(self, room: int) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.pending.setdefault(room, []).append(fut)
        self.transport.write(b"%d\n" % room)
        return fut

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        *lines, self.buf = buf.split(b"\n")
        for line in lines:
            room, _, verdict = line.partition(b" ")
            try:
                futs = self.pending.pop(int(room), ())
            except ValueError:
                continue
            for f in futs:
                if not f.done():
                    f.set_result(verdict.decode())

    def connection_lost(self, exc) -> None:
        self.lost = True
        for futs in self.pending.values():
            for f in futs:
                if not f.done():
                    f.set_result("unreachable")
        self.pending.clear()


class DecodeWorker(_PdWorker):
    """A decode mock; ``rendezvous_timeout`` bounds its wait for the prefill partner."""

    def __init__(self, config=None, *, rendezvous_timeout: float = 2.0, bootstrap_default: int | None = None,
                 **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.rendezvous_timeout = rendezvous_timeout
        self.bootstrap_default = bootstrap_default
        self.met = 0          # rooms met
        self.failed_rooms = 0
        self._clients: dict = {}   # (host, port) -> _BootstrapClient (or the Future of one connecting)

    def _serve(self, conn, req, body, obj, rec, inner) -> None:
        if any(obj.get(f) is None for f in ("bootstrap_host", "bootstrap_room")):
            rec["rendezvous"] = "missing"
            conn.respond(400, openai_error(400, "bootstrap_host and bootstrap_room are required in PD mode"))
            return
        conn.begin(False)
        conn.task = asyncio.get_running_loop().create_task(self._rendezvous(conn, req, body, obj, rec, inner))

    async def _rendezvous(self, conn, req, body, obj, rec, inner) -> None:
        rooms = _rooms(obj)
        hosts = obj["bootstrap_host"] if type(obj["bootstrap_host"]) is list else [obj["bootstrap_host"]] * len(rooms)
        ports = obj.get("bootstrap_port")
        ports = ports if type(ports) is list else [ports] * len(rooms)
        verdict = "ok"
        try:
            for room, host, port in zip(rooms, hosts, ports):
                port = port if port is not None else self.bootstrap_default
                verdict = "unreachable" if port is None else await self._meet(host, port, room)
                if verdict != "ok":
                    break
        except asyncio.CancelledError:
            rec["rendezvous"] = "cancelled"
            raise
        rec["rendezvous"] = verdict
        conn.release()
        if conn.closed:
            return
        if verdict != "ok":
            self.failed_rooms += 1
            conn.respond(500, openai_error(500, f"KV transfer failed: bootstrap rendezvous {verdict}"))
        elif obj.get("return_logprob") is True and req.target.startswith(b"/generate"):
            self.met += len(rooms)
            ctype, out = _logprob_answer(self, obj, DECODE_LOGPROBS, "hi")
            conn.respond(200, out, ctype=ctype)
        else:
            self.met += len(rooms)
            inner(conn, req, body)
        if not conn.busy and not conn.closed:
            conn.run_queue()

    async def _client(self, host: str, port: int) -> _BootstrapClient:
        """The kept connection to ``host:port``'s bootstrap listener (made once, shared)."""
        key = (host, port)
        c = self._clients.get(key)
        if isinstance(c, asyncio.Future):
            return await asyncio.shield(c)
        if c is not None and not c.lost:
            return c
        loop = asyncio.get_running_loop()
        fut = self._clients[key] = loop.create_future()
        try:
            _, c = await asyncio.wait_for(loop.create_connection(_BootstrapClient, host, port),
                                          self.rendezvous_timeout)
        except BaseException as e:
            del self._clients[key]
            fut.set_exception(OSError(f"bootstrap {host}:{port}: {e!r}"))
            fut.exception()   # marked retrieved; waiters, if any, get it too
            raise
        self._clients[key] = c
        fut.set_result(c)
        return c

    async def _meet(self, host: str, port: int, room) -> str:
        """``ok``, ``timeout`` (the partner never got the room) or ``unreachable``."""
        try:
            client = await self._client(host, port)
            return await asyncio.wait_for(client.ask(int(room)), self.rendezvous_timeout)
        except (OSError, ValueError, TypeError):
            return "unreachable"
        except asyncio.TimeoutError:
            return "timeout"

    async def stop(self) -> None:
        for c in list(self._clients.values()):
            if isinstance(c, _BootstrapClient) and c.transport is not None:
                c.transport.abort()
        self._clients.clear()
        await super().stop()


class VllmPrefillWorker(PrefillWorker):
    """vLLM's prefill side (``owned_by`` vllm): accepts only the gateway's prefill copy
    (``max_tokens`` 1, ``stream`` false, ``kv_transfer_params.do_remote_decode`` true;
    else 400), answers a one-token completion whose ``kv_transfer_params`` name a
    transfer id (``remote_block_ids``) and its own bootstrap address, and marks that id
    arrived, so its decode partner can fetch it."""

    def __init__(self, config=None, **overrides: Any) -> None:
        super().__init__(config if config is not None else MockConfig(owned_by="vllm"), **overrides)
        self.issued = 0

    def _serve(self, conn, req, body, obj, rec, inner) -> None:
        kv = obj.get("kv_transfer_params")
        rec["kv_transfer_params"] = kv
        rec["max_tokens"], rec["stream"] = obj.get("max_tokens"), obj.get("stream")
        if obj.get("max_tokens") != 1 or obj.get("stream") is not False or type(kv) is not dict or \
                kv.get("do_remote_decode") is not True or kv.get("do_remote_prefill") is not False:
            conn.respond(400, openai_error(400, "not a vLLM prefill request (max_tokens 1, stream false, "
                                                "kv_transfer_params.do_remote_decode true)"))
            return
        if self.config.fail_status is not None:
            conn.respond(self.config.fail_status, openai_error(self.config.fail_status, "mock prefill failure"))
            return
        self.issued += 1
        transfer = int.from_bytes(os.urandom(7), "big")
        self._arrive(transfer)
        params = {"do_remote_prefill": True, "do_remote_decode": False, "remote_engine_id": self.config.worker_id,
                  "remote_block_ids": [transfer], "remote_host": self.host, "remote_port": self.bootstrap_port}
        conn.json({"id": self._next_id().decode(), "object": "chat.completion", "model": obj.get("model"),
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"},
                                "finish_reason": "length"}],
                   "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
                   "kv_transfer_params": params})


class VllmDecodeWorker(DecodeWorker):
    """vLLM's decode side: answers only a request whose ``kv_transfer_params`` come
    from a prefill partner (``do_remote_prefill`` true; its transfer id met at
    ``remote_host:remote_port``); otherwise 400, or 500 when the transfer is not found."""

    def __init__(self, config=None, **overrides: Any) -> None:
        super().__init__(config if config is not None else MockConfig(owned_by="vllm"), **overrides)

    def _serve(self, conn, req, body, obj, rec, inner) -> None:
        kv = obj.get("kv_transfer_params")
        rec["kv_transfer_params"] = kv
        ids = kv.get("remote_block_ids") if type(kv) is dict else None
        if type(kv) is not dict or kv.get("do_remote_prefill") is not True or type(ids) is not list or not ids:
            rec["rendezvous"] = "missing"
            conn.respond(400, openai_error(400, "kv_transfer_params from a prefill worker are required"))
            return
        handoff = dict(obj, bootstrap_host=kv.get("remote_host"), bootstrap_port=kv.get("remote_port"),
                       bootstrap_room=ids[0])
        conn.begin(False)
        conn.task = asyncio.get_running_loop().create_task(self._rendezvous(conn, req, body, handoff, rec, inner))


async def serve(prefills: int, decodes: int, host: str = "127.0.0.1", port: int = 0) -> list:
    """Starts ``prefills`` prefill mocks (ports ``port``, ``port + 1``, … when ``port`` is
    set; their bootstrap ports after those) and ``decodes`` decode mocks after them; one
    line per worker on stdout: ``prefill URL BOOTSTRAP_PORT`` or ``decode URL``."""
    out = []
    nxt = port
    for _ in range(prefills):
        p = await PrefillWorker().start(host, nxt, bootstrap_port=nxt + prefills + decodes if port else 0)
        nxt = nxt + 1 if port else 0
        out.append(p)
        print(f"prefill {p.url} {p.bootstrap_port}", flush=True)
    for _ in range(decodes):
        d = await DecodeWorker().start(host, nxt)
        nxt = nxt + 1 if port else 0
        out.append(d)
        print(f"decode {d.url}", flush=True)
    return out


def main(argv: list | None = None) -> None:
    """``python -m smg.testing.pd_workers --prefills 1 --decodes 1 [--port N]``: PD mocks
    until interrupted (the benchmark's backends)."""
    import argparse

    import uvloop

    ap = argparse.ArgumentParser(prog="python -m smg.testing.pd_workers")
    ap.add_argument("--prefills", type=int, default=1)
    ap.add_argument("--decodes", type=int, default=1)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="first port (0: free ports)")
    args = ap.parse_args(argv)

    async def run() -> None:
        await serve(args.prefills, args.decodes, args.host, args.port)
        await asyncio.Event().wait()

    try:
        uvloop.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
