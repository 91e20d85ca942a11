"""One Responses API turn on its way through the chat pipeline: what it asked
(``Turn``) and the sink that turns the worker's chat answer into the Response
(``TurnSink``).

The turn's chat completion runs through the gateway's own exchange (HTTP workers, with
retries) or the gRPC full-server path; they write to a ``TurnSink`` as they would to
the client connection, and the sink writes the Responses answer to the real one.

Rules:
- A worker's error answer (non-2xx) and the gateway's own errors before the head are
  relayed as they are (OpenAI error bodies, the same family).
- A 2xx JSON answer is read whole and answered as the Response object; a 2xx SSE
  answer is answered as the Responses events (smg/responses/stream.py) as it arrives.
- The turn is stored (``store``, default true) before its final bytes are sent: the
  response record, and with a conversation the turn's input and output items linked to
  it, so a client that reads the answer can read it back at once. Storage that fails
  answers 503 ``storage_unavailable`` (non-streamed) or ends the stream with
  ``response.failed`` whose error code is ``storage_unavailable``.
- While the store runs the sink is the connection's producer: a client that leaves
  cancels it (so too while a streamed turn's MCP calls run).
- A streamed MCP turn (smg/responses/mcp.py) is one stream over the loop's model
  calls: a later call's sink continues the first one's events (no second head); its
  worker's error answer, or the gateway's own, ends the stream with
  ``response.failed``.
"""
from __future__ import annotations

import asyncio
import logging
import time

import orjson

from smg.errors import RemoteProtocolError
from smg.history import StorageUnavailable
from smg.responses import convert
from smg.responses.stream import EventStream
from smg.streaming.sse import SSEScanner

log = logging.getLogger("smg.responses")

_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_NO_SKIP: frozenset = frozenset()
_DONE = b"[DONE]"


def item_record(item: dict, response_id: str | None, owner, now: int) -> dict:
    """A conversation item record (smg/history) for an item object."""
    return {"id": item["id"], "owner": owner, "response_id": response_id, "item_type": item.get("type", "message"),
            "role": item.get("role"), "content": item.get("content"), "status": item.get("status"),
            "created_at": now, "item": item}


class Turn:
    __slots__ = ("id", "created_at", "owner", "body", "items", "conversation", "conv", "stream", "store",
                 "background", "loop")

    def __init__(self, body: dict, owner) -> None:
        self.id = convert.new_id("resp_")
        self.created_at = int(time.time())
        self.owner = owner
        self.body = body                 # the Responses request, as checked
        self.items = convert.input_items(body["input"])
        conv = body.get("conversation")
        self.conversation = conv if type(conv) is str or conv is None else conv["id"]
        self.conv = None                 # the conversation's record, once loaded
        self.stream = body.get("stream") is True
        self.store = body.get("store", True) is not False
        self.background = body.get("background") is True
        self.loop = None                 # the MCP tool loop (smg/responses/mcp.py), with mcp tools

    def response(self, status: str, output: list, usage=None, incomplete=None, error=None, model=None) -> dict:
        return convert.response_object(self.body, self.id, self.created_at, status, output, usage, incomplete, error,
                                       self.conversation, model)

    async def save(self, store, final: dict, link: bool = True) -> None:
        """Stores the turn's record ``final`` and (``link``) its items in the
        conversation (module rules); raises ``StorageUnavailable``."""
        if not self.store:
            return
        body = self.body
        await store.put_response({
            "id": self.id, "owner": self.owner, "conversation_id": self.conversation,
            "previous_response_id": body.get("previous_response_id"), "input": self.items,
            "created_at": self.created_at, "model": final["model"], "safety_identifier": body.get("safety_identifier"),
            "raw_response": final})
        if link and self.conv is not None:
            now = int(time.time())
            items = [item_record(it, self.id, self.owner, now) for it in self.items + final["output"]]
            await store.add_items(self.conv, items, now)


class TurnSink:
    """The response sink the turn's chat exchange writes to (module rules)."""

    __slots__ = ("conn", "ctx", "turn", "store", "mode", "parts", "scanner", "events", "pending", "extra",
                 "task", "done", "continued")

    def __init__(self, conn, ctx, turn: Turn, store, events=None) -> None:
        self.conn = conn
        self.ctx = ctx
        self.turn = turn
        self.store = store
        self.mode = None       # "relay" | "json" | "sse" | "late" (a continued stream's worker failed)
        self.parts: list = []
        self.scanner = None
        self.events = events   # a streamed MCP turn's later model calls continue its stream
        self.continued = events is not None
        self.pending = None    # the first events, sent with the first bytes
        self.extra = None
        self.task = None
        self.done = False

    # -- the sink interface the exchanges use -------------------------------------------

    def set_producer(self, producer) -> None:
        self.conn.set_producer(producer)

    def reply_error(self, status: int, message: str, code: str | None = None, close: bool = False,
                    extra: list | None = None, param: str | None = None) -> None:
        if self.continued:     # the stream's head went out with the loop's first model call
            self.done = True
            self.conn.fail(self.events.failed(self._failed(message, code or "server_error")))
            return
        self.conn.reply_error(status, message, code=code, close=close, extra=extra, param=param)

    def handler_failed(self) -> None:
        self.conn.handler_failed()

    def send_head(self, status: int, headers: list, length: int, skip: frozenset, extra) -> None:
        sse = any(n == b"content-type" and v.startswith(b"text/event-stream") for n, v in headers)
        if self.continued:
            # a later model call of a streamed MCP turn: its events join the stream
            self.mode = "sse" if 200 <= status < 300 and sse else "late"
            self.scanner = SSEScanner()
            self.events.next_iteration()
            return
        if not 200 <= status < 300:
            self.mode = "relay"
            self.conn.send_head(status, headers, length, skip, extra)
            return
        self.extra = list(extra) if extra else None
        if not sse:
            self.mode = "json"
            return
        self.mode = "sse"
        self.scanner = SSEScanner()
        loop = self.turn.loop
        self.events = EventStream(loop.kind if loop is not None else None)
        self.pending = self.events.start(self.turn.response("in_progress", []),
                                         loop.output if loop is not None else ())
        self.conn.send_head(200, _SSE_HEADERS, -1, _NO_SKIP, self.extra)

    def send(self, pieces: list, end: bool) -> None:
        if self.done:
            return  # the turn already ended (a failure event went out)
        mode = self.mode
        if mode == "relay":
            self.conn.send(pieces, end)
        elif mode == "late":
            self.parts += pieces
            if end:
                self.done = True
                self.conn.fail(self.events.failed(self._failed(
                    "the worker failed the tool loop's next model call: "
                    + b"".join(self.parts)[:500].decode("utf-8", "replace"))))
        elif mode == "json":
            self.parts += pieces
            if end:
                self._whole(b"".join(self.parts))
        else:
            self._stream(pieces, end)

    def fail(self, event) -> None:
        if self.mode in ("sse", "late") or self.continued:
            self.conn.fail(self.events.failed(self._failed("the worker's answer was cut off")))
        elif self.mode == "json":
            self.conn.reply_error(502, "the worker's answer was cut off", code="upstream_error")
        else:
            self.conn.fail(event)

    # -- the answer ---------------------------------------------------------------------

    def _failed(self, message: str, code: str = "server_error") -> dict:
        ev = self.events
        return self.turn.response("failed", ev.output if ev is not None else [],
                                  error={"code": code, "message": message})

    def _whole(self, raw: bytes) -> None:
        try:
            obj = orjson.loads(raw)
            choice = obj["choices"][0]
            message = choice["message"]
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
            self.conn.reply_error(502, "the worker's chat answer could not be read", code="upstream_error")
            return
        status, incomplete = convert.finish_status(choice.get("finish_reason"))
        output = convert.output_of(message)
        loop = self.turn.loop
        if loop is not None:
            calls = [{"id": c.get("id") or convert.new_id("call_"), "name": (c.get("function") or {}).get("name"),
                      "arguments": (c.get("function") or {}).get("arguments") or "{}"}
                     for c in message.get("tool_calls") or () if type(c) is dict]
            if calls and all(c["name"] in loop.tools for c in calls):
                requests = loop.approval_requests(calls)
                if requests:
                    output = [it for it in output if it["type"] != "function_call"] + requests
                elif loop.iterations >= loop.cap:
                    status, incomplete = "incomplete", {"reason": "max_tool_calls"}
                    output = [it for it in output if it["type"] != "function_call"]
                else:
                    loop.model = self.ctx.model_label or "unknown"
                    loop.iteration()
                    self.conn.set_producer(self)
                    self.task = asyncio.get_running_loop().create_task(self._tools(calls))
                    return
            output = loop.output + output
        final = self.turn.response(status, output, convert.usage_of(obj.get("usage")),
                                   incomplete, model=obj.get("model") if type(obj.get("model")) is str else None)
        self._after_save(final, self._reply_whole)

    async def _tools(self, calls: list) -> None:
        """Runs the model's MCP calls, then asks the model again (a new chat exchange)."""
        ctx = self.ctx
        try:
            await self.turn.loop.execute(calls, ctx.body["messages"])
        except asyncio.CancelledError:
            return
        if self.done:
            return
        self.done = True
        self.conn.set_producer(None)
        ctx.raw = orjson.dumps(ctx.body)
        self.turn.loop.again(self.conn, ctx, self.turn)

    async def _tools_streamed(self, pending: list) -> None:
        """Runs the MCP calls the stream showed, sends their results, then asks the
        model again; its events continue this stream."""
        ctx, ev = self.ctx, self.events
        try:
            results = await self.turn.loop.results([c for _, c in pending], ctx.body["messages"])
        except asyncio.CancelledError:
            return
        except Exception as e:  # noqa: BLE001 - a bug here ends the stream, never hangs it
            log.exception("request %s: the MCP calls failed", ctx.rid.decode())
            if not self.done:
                self.done = True
                self.conn.set_producer(None)
                self.conn.fail(ev.failed(self._failed(f"the MCP calls failed: {type(e).__name__}")))
            return
        if self.done:
            return
        self.done = True
        self.conn.set_producer(None)
        out: list = []
        for (idx, _), (output, error) in zip(pending, results):
            out += ev.mcp_done(idx, output, error)
        self.conn.send(out, False)
        ctx.raw = orjson.dumps(ctx.body)
        self.turn.loop.again(self.conn, ctx, self.turn, ev)

    def _reply_whole(self, final: dict, saved: bool) -> None:
        if saved:
            self.conn.reply(200, orjson.dumps(final), self.extra)
        else:
            self.conn.reply_error(503, "the history storage is unavailable", code="storage_unavailable")

    def _stream(self, pieces: list, end: bool) -> None:
        ev = self.events
        out = self.pending or []
        self.pending = None
        failed = None
        for piece in pieces:
            try:
                payloads = self.scanner.feed(piece)
            except RemoteProtocolError as e:
                failed = f"the worker's stream could not be read: {e}"
                break
            for payload in payloads:
                if payload == _DONE:
                    continue
                try:
                    obj = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    continue
                if type(obj) is not dict:
                    continue
                if "error" in obj:
                    err = obj["error"]
                    failed = err.get("message") if type(err) is dict else str(err)
                    break
                out += ev.chunk(obj)
        if failed is not None:
            self.done = True
            self.conn.send(out, False)
            self.conn.fail(ev.failed(self._failed(failed or "the worker failed")))
            return
        if not end:
            if out:
                self.conn.send(out, False)
            return
        status, incomplete = convert.finish_status(ev.finish_reason)
        close: list = []
        ev.close(close)
        loop = self.turn.loop
        if loop is not None and ev.mcp_pending:
            pending, ev.mcp_pending = ev.mcp_pending, []
            stop = "call" in ev.kinds or "approval" in ev.kinds   # the answer also needs the client
            if not stop and loop.iterations >= loop.cap:
                stop = True
                status, incomplete = "incomplete", {"reason": "max_tool_calls"}
            if not stop:
                loop.model = self.ctx.model_label or "unknown"
                loop.iteration()
                self.conn.send(out + close, False)
                self.conn.set_producer(self)
                self.task = asyncio.get_running_loop().create_task(self._tools_streamed(pending))
                return
            for idx, _ in pending:     # shown, not run
                close += ev.mcp_done(idx, None, None, "incomplete")
        final = self.turn.response(status, [], convert.usage_of(ev.usage), incomplete, model=ev.model)
        final["output"] = ev.output
        out += close
        if out:
            self.conn.send(out, False)
        self._after_save(final, self._finish_stream)

    def _finish_stream(self, final: dict, saved: bool) -> None:
        ev = self.events
        if saved:
            self.conn.send(ev.finish(final), True)
        else:
            self.conn.send([ev.failed(self._failed("the history storage is unavailable", "storage_unavailable"))],
                           True)

    def _after_save(self, final: dict, then) -> None:
        """Stores the turn, then ``then(final, saved)``; at once when nothing is stored."""
        if not self.turn.store:
            then(final, True)
            return
        self.conn.set_producer(self)
        self.task = asyncio.get_running_loop().create_task(self._save(final, then))

    async def _save(self, final: dict, then) -> None:
        saved = True
        try:
            await self.turn.save(self.store, final)
        except asyncio.CancelledError:
            return
        except StorageUnavailable as e:
            log.warning("request %s: storing the response failed: %s", self.ctx.rid.decode(), e)
            saved = False
        if self.done:
            return
        self.done = True
        self.conn.set_producer(None)
        then(final, saved)

    # -- the producer interface while the turn is stored --------------------------------

    def abort(self) -> None:
        if not self.done:
            self.done = True
            if self.task is not None:
                self.task.cancel()

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass
