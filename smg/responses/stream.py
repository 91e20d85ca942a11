"""The Responses API's streaming events, made from a streamed chat completion.

``EventStream`` is fed the chat chunks (parsed JSON objects) of one turn and returns
SSE events (bytes, ``event: <type>`` then ``data: <json>``) in the Responses API's
order:

``response.created``, ``response.in_progress``; per output item
``response.output_item.added``, then for a message ``response.content_part.added``,
``response.output_text.delta``..., ``response.output_text.done``,
``response.content_part.done``; for reasoning ``response.reasoning_text.delta``...,
``response.reasoning_text.done``; for a function call
``response.function_call_arguments.delta``..., ``response.function_call_arguments.done``;
then ``response.output_item.done``; last ``response.completed`` (or
``response.incomplete``, ``response.failed``).

Rules:
- Every event carries ``sequence_number``, 0, 1, 2, ... in the order sent.
- One item is open at a time: text after reasoning closes the reasoning item, a new
  tool call closes what was open. The open item is closed (its ``.done`` events) before
  the final event.
- What the stream holds at the end (``output``, ``usage``, ``finish_reason``) is the
  final Response object's, the same as the non-streamed answer of the same chunks.
- MCP (a turn with an MCP tool loop, smg/responses/mcp.py; ``mcp`` names the kind of
  a called tool): the listed servers come first, each ``response.output_item.added``,
  ``response.mcp_list_tools.in_progress``, ``response.mcp_list_tools.completed``,
  ``response.output_item.done``. A call of an MCP tool is an ``mcp_call`` item:
  ``response.output_item.added``, ``response.mcp_call.in_progress``,
  ``response.mcp_call_arguments.delta``..., ``response.mcp_call_arguments.done``; once
  the gateway has run it (``mcp_done``) ``response.mcp_call.completed`` (or
  ``.failed``) and ``response.output_item.done``. A call that needs approval is an
  ``mcp_approval_request`` item, sent whole (added, done) when its arguments are.
  The loop's later model calls feed the same stream (``next_iteration``): one
  sequence, one ``output``.
- Memory per stream: the answer's text and arguments (what the final object repeats).
"""
from __future__ import annotations

import orjson

from smg.responses.convert import call_item, message_item, new_id, reasoning_item, text_part


def sse(kind: str, obj: dict) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


class EventStream:
    __slots__ = ("seq", "output", "open", "text", "calls", "usage", "finish_reason", "model", "mcp",
                 "mcp_pending", "kinds", "ids")

    def __init__(self, mcp=None) -> None:
        self.mcp = mcp              # f(tool name) -> None | ("mcp" | "approval", server label)
        self.mcp_pending: list = []  # (output index, {"id", "name", "arguments"}) of mcp_call items not run
        self.kinds: set = set()     # the kinds of the items opened since next_iteration
        self.ids: dict = {}         # output index of an open mcp_call -> the model's call id
        self.seq = 0
        self.output: list = []      # the output items (closed ones final)
        self.open = None            # "message" | "reasoning" | "call" | None
        self.text: list = []        # the open item's text pieces
        self.calls: dict = {}       # chat tool-call index -> output index
        self.usage = None
        self.finish_reason = None
        self.model = None

    def event(self, kind: str, fields: dict) -> bytes:
        obj = {"type": kind, **fields, "sequence_number": self.seq}
        self.seq += 1
        return sse(kind, obj)

    def start(self, snapshot: dict, done_items=()) -> list:
        """The first events; ``snapshot`` is the Response object in progress,
        ``done_items`` the MCP items the turn already has (its tool lists, calls run
        before the model was asked)."""
        out = [self.event("response.created", {"response": snapshot}),
               self.event("response.in_progress", {"response": snapshot})]
        for item in done_items:
            idx = len(self.output)
            self.output.append(item)
            iid = item["id"]
            ids = {"item_id": iid, "output_index": idx}
            if item["type"] == "mcp_list_tools":
                out.append(self.event("response.output_item.added", {"output_index": idx,
                                                                     "item": dict(item, tools=[])}))
                out.append(self.event("response.mcp_list_tools.in_progress", ids))
                out.append(self.event("response.mcp_list_tools.completed", ids))
            elif item["type"] == "mcp_call":
                out.append(self.event("response.output_item.added", {"output_index": idx, "item": dict(
                    item, output=None, error=None, status="in_progress")}))
                out.append(self.event("response.mcp_call.in_progress", ids))
                out.append(self.event("response.mcp_call_arguments.done", dict(ids, arguments=item["arguments"])))
                out.append(self.event("response.mcp_call.completed" if item["status"] == "completed"
                                      else "response.mcp_call.failed", ids))
            else:
                out.append(self.event("response.output_item.added", {"output_index": idx, "item": item}))
            out.append(self.event("response.output_item.done", {"output_index": idx, "item": item}))
        return out

    def next_iteration(self) -> None:
        """The MCP loop asks the model again: its chunks continue this stream."""
        self.calls = {}
        self.kinds = set()
        self.finish_reason = None

    def mcp_done(self, idx: int, output, error, status: str | None = None) -> list:
        """The events of the ``mcp_call`` item at ``idx`` once run (``status``
        ``incomplete``: not run, ``.failed`` sent)."""
        status = status or ("completed" if error is None else "failed")
        item = self.output[idx] = dict(self.output[idx], output=output, error=error, status=status)
        ids = {"item_id": item["id"], "output_index": idx}
        return [self.event("response.mcp_call.completed" if status == "completed" else "response.mcp_call.failed",
                           ids),
                self.event("response.output_item.done", {"output_index": idx, "item": item})]

    # -- items --------------------------------------------------------------------------

    def _add(self, item: dict, kind: str, out: list) -> None:
        self.output.append(item)
        self.open = kind
        self.text = []
        self.kinds.add(kind)
        if kind == "approval":
            return   # sent whole once its arguments are complete
        out.append(self.event("response.output_item.added", {"output_index": len(self.output) - 1, "item": item}))

    def close(self, out: list) -> None:
        """Closes the open item (its ``.done`` events)."""
        kind = self.open
        if kind is None:
            return
        self.open = None
        idx = len(self.output) - 1
        item = self.output[idx]
        iid = item["id"]
        text = "".join(self.text)
        if kind == "message":
            item = self.output[idx] = message_item(text, iid)
            out.append(self.event("response.output_text.done", {"item_id": iid, "output_index": idx,
                                                                 "content_index": 0, "text": text, "logprobs": []}))
            out.append(self.event("response.content_part.done", {"item_id": iid, "output_index": idx,
                                                                  "content_index": 0, "part": text_part(text)}))
        elif kind == "reasoning":
            item = self.output[idx] = reasoning_item(text, iid)
            out.append(self.event("response.reasoning_text.done", {"item_id": iid, "output_index": idx,
                                                                    "content_index": 0, "text": text}))
        elif kind == "mcp":
            item["arguments"] = text
            out.append(self.event("response.mcp_call_arguments.done", {"item_id": iid, "output_index": idx,
                                                                        "arguments": text}))
            self.mcp_pending.append((idx, {"id": self.ids.pop(idx), "name": item["name"], "arguments": text}))
            return   # done once the gateway has run it (mcp_done)
        elif kind == "approval":
            item["arguments"] = text
            out.append(self.event("response.output_item.added", {"output_index": idx, "item": item}))
        else:
            item = self.output[idx] = call_item(item["call_id"], item["name"], text, iid)
            out.append(self.event("response.function_call_arguments.done", {
                "item_id": iid, "output_index": idx, "name": item["name"], "arguments": text}))
        out.append(self.event("response.output_item.done", {"output_index": idx, "item": item}))

    def _text(self, piece: str, kind: str, out: list) -> None:
        if self.open != kind:
            self.close(out)
            if kind == "message":
                item = {"id": new_id("msg_"), "type": "message", "status": "in_progress", "role": "assistant",
                        "content": []}
                self._add(item, kind, out)
                out.append(self.event("response.content_part.added", {
                    "item_id": item["id"], "output_index": len(self.output) - 1, "content_index": 0,
                    "part": text_part("")}))
            else:
                self._add({"id": new_id("rs_"), "type": "reasoning", "summary": [], "status": "in_progress"},
                          kind, out)
        self.text.append(piece)
        idx = len(self.output) - 1
        iid = self.output[idx]["id"]
        if kind == "message":
            out.append(self.event("response.output_text.delta", {"item_id": iid, "output_index": idx,
                                                                  "content_index": 0, "delta": piece,
                                                                  "logprobs": []}))
        else:
            out.append(self.event("response.reasoning_text.delta", {"item_id": iid, "output_index": idx,
                                                                     "content_index": 0, "delta": piece}))

    def _call(self, call: dict, out: list) -> None:
        index = call.get("index", 0)
        fn = call.get("function") or {}
        if index not in self.calls:
            self.close(out)
            name = fn.get("name") or ""
            call_id = call.get("id") or new_id("call_")
            kind = self.mcp(name) if self.mcp is not None else None
            if kind is None:
                item = {"id": new_id("fc_"), "type": "function_call", "status": "in_progress",
                        "call_id": call_id, "name": name, "arguments": ""}
                self._add(item, "call", out)
            elif kind[0] == "mcp":
                item = {"id": new_id("mcp_"), "type": "mcp_call", "server_label": kind[1], "name": name,
                        "arguments": "", "status": "in_progress"}
                self._add(item, "mcp", out)
                self.ids[len(self.output) - 1] = call_id
                out.append(self.event("response.mcp_call.in_progress", {"item_id": item["id"],
                                                                        "output_index": len(self.output) - 1}))
            else:
                item = {"id": new_id("mcpr_"), "type": "mcp_approval_request", "server_label": kind[1],
                        "name": name, "arguments": ""}
                self._add(item, "approval", out)
            self.calls[index] = len(self.output) - 1
        elif self.calls[index] != len(self.output) - 1 or self.open not in ("call", "mcp", "approval"):
            return  # a late piece of a call already closed: the model's arguments are already final
        args = fn.get("arguments")
        if args:
            self.text.append(args)
            idx = len(self.output) - 1
            if self.open == "call":
                out.append(self.event("response.function_call_arguments.delta", {
                    "item_id": self.output[idx]["id"], "output_index": idx, "delta": args}))
            elif self.open == "mcp":
                out.append(self.event("response.mcp_call_arguments.delta", {
                    "item_id": self.output[idx]["id"], "output_index": idx, "delta": args}))

    # -- chunks -------------------------------------------------------------------------

    def chunk(self, obj: dict) -> list:
        """The events of one chat chunk."""
        out: list = []
        if type(obj.get("model")) is str:
            self.model = obj["model"]
        u = obj.get("usage")
        if type(u) is dict:
            self.usage = u
        choices = obj.get("choices")
        if type(choices) is not list:
            return out
        for choice in choices:
            if type(choice) is not dict or choice.get("index", 0) != 0:
                continue  # the Responses API has one answer
            delta = choice.get("delta") or {}
            r = delta.get("reasoning_content")
            if type(r) is str and r:
                self._text(r, "reasoning", out)
            c = delta.get("content")
            if type(c) is str and c:
                self._text(c, "message", out)
            for call in delta.get("tool_calls") or ():
                if type(call) is dict:
                    self._call(call, out)
            if choice.get("finish_reason") is not None:
                self.finish_reason = choice["finish_reason"]
        return out

    def finish(self, final: dict) -> list:
        """The closing events; ``final`` is the finished Response object."""
        out: list = []
        self.close(out)
        kind = {"completed": "response.completed", "incomplete": "response.incomplete"}.get(
            final["status"], "response.failed")
        out.append(self.event(kind, {"response": final}))
        return out

    def failed(self, final: dict) -> bytes:
        """The one event of a turn that failed mid-way (``final`` status ``failed``)."""
        out: list = []
        self.close(out)
        out.append(self.event("response.failed", {"response": final}))
        return b"".join(out)
