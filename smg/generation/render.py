"""``ResponseBuilder``: a gRPC engine's token chunks in, the OpenAI (chat completions,
completions) or SGLang ``/generate`` answer out, as bytes ready for the sink.
Sans-I/O: no sockets, no loop; the exchange (smg/server/grpc_exchange.py) drives it.

Per choice (``index`` 0..n-1), each with its own state:
- Stop token ids are checked on the ids before they are detokenized
  (``StopMatcher.feed_ids``): the request's ``stop_token_ids`` and, unless
  ``ignore_eos``, the tokenizer's EOS ids; a stop id is never rendered as text (unless
  ``include_stop_str_in_output``/``no_stop_trim``).
- The kept ids are detokenized incrementally (``DecodeStream``: never a broken UTF-8
  character; the prompt's last ids as context) and the text passes the stop-string
  matcher (hidden or visible stops, bounded hold-back).
- A choice finishes when the engine finishes it (its ``finish_reason``, ``matched_stop``)
  or when the gateway finds a stop (``"stop"``, ``matched_stop`` the string or the id):
  the text held back is released, or cut at the stop. Later chunks of a finished
  choice are ignored; ``all_finished`` tells the exchange to stop reading and give the
  engine call up (which aborts the generation).
- ``finish()`` ends every choice still open (the engine stream ended): its held text
  is released, and its finish reason is ``"abort"`` (SGLang's name, in its OpenAI
  ``finish_reason`` literals, for a generation that did not end by itself; /generate:
  ``{"type": "abort"}``) unless a stop string completes in the flushed text.
- ``parsing`` (chat only; smg/generation/parsing.py ``Parsers``): each choice's text
  passes the reasoning then the tool-call parser after the stops; streamed deltas then
  carry ``reasoning_content``, ``content`` and ``tool_calls`` (OpenAI's delta fields),
  a whole message ``content`` (null when empty and calls were made),
  ``reasoning_content`` and ``tool_calls``; a choice that made a call and ended on a
  stop finishes with ``"tool_calls"`` (``matched_stop`` null), as SGLang's server does.
  None: the text is content as it is.

Shapes (field order as SGLang's OpenAI server writes them):
- chat: ``chat.completion`` with ``choices[{index, message{role, content,
  reasoning_content, tool_calls}, logprobs, finish_reason, matched_stop}]`` and
  ``usage``; streamed ``chat.completion.chunk``: first a ``{"role": "assistant",
  "content": ""}`` delta per choice, then content deltas, then an empty delta with the
  finish reason, then (``include_usage``) a chunk with ``choices: []`` and the usage,
  then ``data: [DONE]``.
- completions: ``text_completion`` with ``choices[{index, text, logprobs,
  finish_reason, matched_stop}]``; streamed chunks are ``text_completion`` objects
  carrying the text delta.
- generate: ``{text, output_ids, meta_info{id, finish_reason{type, matched|length},
  prompt_tokens, completion_tokens, cached_tokens}}`` (a list of them for n > 1);
  streamed, each event carries the text and output ids so far (SGLang's cumulative
  stream), with ``index`` when n > 1; ``output_ids`` are the ids rendered (a hidden
  stop id is not among them).
- logprobs: chat ``{"content": [{token, logprob, bytes, top_logprobs[{token, logprob,
  bytes}]}]}`` (OpenAI's and vLLM's order; SGLang writes ``bytes`` before
  ``logprob``); completions ``{text_offset, token_logprobs, tokens, top_logprobs}``
  (both engines' order), ``top_logprobs`` a ``{token: logprob}`` per position, or
  null without alternatives. Token strings are the single id decoded with special
  tokens kept (a byte token of a split character is U+FFFD, as the engines show it).
  Positions of a hidden stop token id are not reported.
- usage: ``prompt_tokens`` (the engine's count, else the prompt's length),
  ``completion_tokens`` summed over choices (the engine's count; a choice stopped by
  the gateway counts the ids it received), ``total_tokens``,
  ``prompt_tokens_details.cached_tokens`` and, when reported,
  ``completion_tokens_details.reasoning_tokens`` (SGLang itself writes a top-level
  ``reasoning_tokens`` and ``prompt_tokens_details`` only with --enable-cache-report).
- Not here: SGLang's ``metadata: null`` on whole bodies and its null
  ``reasoning_content``/``tool_calls`` keys in stream deltas (deltas are vLLM's
  compact form).
- Completions ``echo``: the prompt text (given by the exchange) opens each choice's
  text, in its first streamed chunk or at the start of the whole body's text.
- Memory: a streamed chat/completions choice keeps no text or ids (only the stop
  hold-back and the decoder window); whole bodies and /generate keep the answer.
"""
from __future__ import annotations

from typing import Any

import orjson

from smg.generation.parsing import Parsers
from smg.text.detokenize import DecodeStream
from smg.text.stops import StopMatcher

__all__ = ["ResponseBuilder"]

_DONE = b"data: [DONE]\n\n"


def _sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _collect(calls: list, deltas: list) -> None:
    """Folds streamed tool-call deltas into whole calls (``calls[index]``)."""
    for d in deltas:
        if "id" in d:
            fn = d["function"]
            calls.append({"id": d["id"], "type": "function",
                          "function": {"name": fn["name"], "arguments": fn["arguments"]}})
        elif 0 <= d["index"] < len(calls):
            calls[d["index"]]["function"]["arguments"] += d["function"]["arguments"]


class _Choice:
    __slots__ = ("index", "decoder", "stops", "parts", "ids", "finished", "reason", "matched", "tokens",
                 "reasoning", "logprobs", "started", "reported", "offset", "parser", "thought", "calls")

    def __init__(self, index: int, tokenizer, prompt_ids, stop_ids, s, parser) -> None:
        self.index = index
        self.decoder = DecodeStream(tokenizer, s.skip_special_tokens, prompt_ids)
        visible = s.no_stop_trim if s.include_stop_str_in_output is None else bool(s.include_stop_str_in_output)
        self.stops = StopMatcher(s.stop, stop_ids, visible)
        self.parts: list[str] = []
        self.ids: list[int] = []
        self.finished = False
        self.reason: str | None = None
        self.matched: Any = None
        self.tokens = 0        # completion tokens (the engine's count, or ids received)
        self.reasoning = 0
        self.logprobs: list = []
        self.started = False   # chat: the streamed role delta went out; completions: the echo
        self.reported = False  # the streamed finish chunk went out
        self.offset = 0        # characters of text so far (completions text_offset)
        self.parser = parser   # OutputParsing (chat with parsers) until the choice ends, else None
        self.thought: list[str] = []   # reasoning text of a whole answer
        self.calls: list[dict] = []    # tool calls of a whole answer


class ResponseBuilder:
    """See the module docstring. ``api`` is "chat", "completions" or "generate"."""

    def __init__(self, *, api: str, stream: bool, model: str, response_id: str, created: int, tokenizer,
                 prompt_ids, sampling, include_usage: bool = False,
                 parsing: Parsers | None = None, echo: str = "") -> None:
        if api not in ("chat", "completions", "generate"):
            raise ValueError(f"unknown api {api!r}")
        self.api = api
        self.stream = stream
        self.model = model
        self.id = response_id
        self.created = created
        self.tok = tokenizer
        self.sampling = sampling
        self.include_usage = include_usage
        self.echo = echo if api == "completions" else ""
        self.prompt_len = len(prompt_ids)
        self.prompt_tokens = 0
        self.cached_tokens = 0
        stop_ids = list(sampling.stop_token_ids)
        if not sampling.ignore_eos:
            stop_ids.extend(tokenizer.eos_ids)
        n = max(1, sampling.n)
        parsing = parsing if api == "chat" else None
        self.choices = [_Choice(i, tokenizer, prompt_ids, stop_ids, sampling,
                                parsing.choice(not stream) if parsing is not None else None) for i in range(n)]
        # What a choice keeps: the text for a whole body or SGLang's cumulative stream;
        # the ids only for /generate's output_ids (a streamed chat answer keeps neither).
        self._keep_text = not stream or api == "generate"
        self._keep_ids = api == "generate"
        self._open = n
        self.usage: dict | None = None

    @property
    def all_finished(self) -> bool:
        return self._open == 0

    # -- feeding ---------------------------------------------------------------------

    def feed(self, chunk) -> list[bytes]:
        if chunk.prompt_tokens:
            self.prompt_tokens = chunk.prompt_tokens
        if chunk.cached_tokens:
            self.cached_tokens = chunk.cached_tokens
        if not 0 <= chunk.index < len(self.choices):
            return []
        c = self.choices[chunk.index]
        if c.finished:
            return []
        if chunk.reasoning_tokens:
            c.reasoning = chunk.reasoning_tokens
        kept, stop_id = c.stops.feed_ids(chunk.token_ids)
        if stop_id is not None:   # counted up to the stop id: what the engine made before it
            c.tokens += list(chunk.token_ids).index(stop_id) + 1
        else:
            c.tokens = chunk.completion_tokens or c.tokens + len(chunk.token_ids)
        if self.sampling.logprobs and chunk.logprobs is not None:
            self._logprobs(c, chunk.logprobs, len(kept))
        if self._keep_ids:
            c.ids.extend(kept)
        text = c.decoder.push(kept) if kept else ""
        ending = stop_id is not None or chunk.finished
        if ending:
            text += c.decoder.flush()
        step = c.stops.feed(text)
        emit = step.emit
        if step.stopped:
            self._finish(c, "stop", step.matched)
        elif ending:
            emit += c.stops.flush()
            if stop_id is not None:
                self._finish(c, "stop", stop_id)
            else:
                self._finish(c, chunk.finish_reason or "stop", chunk.matched_stop)
        return self._emit(c, emit)

    def _logprobs(self, c: _Choice, lp, keep: int) -> None:
        """The positions of the ids kept (a hidden stop id and what follows it have none)."""
        for j in range(min(keep, len(lp.token_ids))):
            top = lp.top[j] if j < len(lp.top) else ()
            c.logprobs.append((lp.token_ids[j], lp.token_logprobs[j] if j < len(lp.token_logprobs) else 0.0, top))

    def _finish(self, c: _Choice, reason: str, matched: Any) -> None:
        c.finished = True
        c.reason = reason
        c.matched = matched
        self._open -= 1

    def _emit(self, c: _Choice, text: str) -> list[bytes]:
        if self.echo and not c.started:   # completions echo: the prompt opens each choice's text
            c.started = True
            text = self.echo + text
        p = c.parser
        thought = ""
        calls = None
        if p is not None:
            if text:
                text, thought, calls = p.feed(text)
            if c.finished:   # the choice's last text: the parsers' tail, once
                c.parser = None
                more, more_thought, more_calls = p.finish()
                text += more
                thought += more_thought
                calls = (calls or []) + more_calls
                if p.called and c.reason == "stop":
                    c.reason, c.matched = "tool_calls", None
            if not self.stream:
                if thought:
                    c.thought.append(thought)
                if calls:
                    _collect(c.calls, calls)
        if text and self._keep_text:
            c.parts.append(text)
        if not self.stream:
            return []
        out: list[bytes] = []
        api = self.api
        if api == "chat":
            if not c.started:
                c.started = True
                out.append(self._chat_chunk(c, {"role": "assistant", "content": ""}, None))
            if thought or calls:
                delta: dict = {}
                if thought:
                    delta["reasoning_content"] = thought
                if text:
                    delta["content"] = text
                if calls:
                    delta["tool_calls"] = calls
                out.append(self._chat_chunk(c, delta, self._chat_logprobs(c, True)
                                            if self.sampling.logprobs else None))
            elif text or (self.sampling.logprobs and c.logprobs):
                out.append(self._chat_chunk(c, {"content": text}, self._chat_logprobs(c, True)
                                            if self.sampling.logprobs else None))
            if c.finished and not c.reported:
                c.reported = True
                out.append(self._chat_chunk(c, {}, None, c.reason, c.matched))
        elif api == "completions":
            if text or (c.finished and not c.reported):
                done = c.finished and not c.reported
                c.reported = c.reported or done
                lp = self._completion_logprobs(c, True) if self.sampling.logprobs else None
                out.append(_sse({"id": self.id, "object": "text_completion", "created": self.created,
                                 "model": self.model, "choices": [{
                                     "index": c.index, "text": text, "logprobs": lp,
                                     "finish_reason": c.reason if done else None,
                                     "matched_stop": c.matched if done else None}], "usage": None}))
        else:
            if text or (c.finished and not c.reported):
                c.reported = c.reported or c.finished
                obj = self._generate_obj(c)
                if len(self.choices) > 1:
                    obj["index"] = c.index
                out.append(_sse(obj))
        return out

    # -- the end ---------------------------------------------------------------------

    def finish(self) -> list[bytes]:
        out: list[bytes] = []
        for c in self.choices:
            if not c.finished:
                text = c.decoder.flush()
                step = c.stops.feed(text)
                emit = step.emit
                if step.stopped:
                    self._finish(c, "stop", step.matched)
                else:
                    emit += c.stops.flush()
                    self._finish(c, "abort", None)
                out.extend(self._emit(c, emit))
            elif self.stream and not c.reported:
                out.extend(self._emit(c, ""))
        completion = sum(c.tokens for c in self.choices)
        prompt = self.prompt_tokens or self.prompt_len
        usage: dict = {"prompt_tokens": prompt, "total_tokens": prompt + completion,
                       "completion_tokens": completion,
                       "prompt_tokens_details": {"cached_tokens": self.cached_tokens}}
        reasoning = sum(c.reasoning for c in self.choices)
        if reasoning:
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
        self.usage = usage
        if self.stream:
            if self.include_usage and self.api != "generate":
                obj = "chat.completion.chunk" if self.api == "chat" else "text_completion"
                out.append(_sse({"id": self.id, "object": obj, "created": self.created, "model": self.model,
                                 "choices": [], "usage": usage}))
            out.append(_DONE)
            return out
        return [orjson.dumps(self._whole())]

    def _whole(self) -> Any:
        if self.api == "generate":
            objs = [self._generate_obj(c) for c in self.choices]
            return objs[0] if len(objs) == 1 else objs
        if self.api == "chat":
            choices = [{"index": c.index,
                        "message": {"role": "assistant",
                                    "content": "".join(c.parts) if c.parts or not c.calls else None,
                                    "reasoning_content": "".join(c.thought) if c.thought else None,
                                    "tool_calls": c.calls or None},
                        "logprobs": self._chat_logprobs(c, False) if self.sampling.logprobs else None,
                        "finish_reason": c.reason, "matched_stop": c.matched} for c in self.choices]
            obj = "chat.completion"
        else:
            choices = [{"index": c.index, "text": "".join(c.parts),
                        "logprobs": self._completion_logprobs(c, False) if self.sampling.logprobs else None,
                        "finish_reason": c.reason, "matched_stop": c.matched} for c in self.choices]
            obj = "text_completion"
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "choices": choices, "usage": self.usage}

    # -- pieces ----------------------------------------------------------------------

    def _chat_chunk(self, c: _Choice, delta: dict, logprobs, reason=None, matched=None) -> bytes:
        return _sse({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                     "choices": [{"index": c.index, "delta": delta, "logprobs": logprobs, "finish_reason": reason,
                                  "matched_stop": matched}], "usage": None})

    def _token(self, tid: int) -> str:
        return self.tok.decode([tid], skip_special_tokens=False)

    def _take(self, c: _Choice, incremental: bool) -> list:
        items = c.logprobs
        if incremental:
            c.logprobs = []
        return items

    def _chat_logprobs(self, c: _Choice, incremental: bool) -> dict:
        content = []
        for tid, lp, top in self._take(c, incremental):
            t = self._token(tid)
            content.append({"token": t, "logprob": lp, "bytes": list(t.encode()),
                            "top_logprobs": [{"token": (s := self._token(i)), "logprob": v, "bytes": list(s.encode())}
                                             for i, v in top]})
        return {"content": content}

    def _completion_logprobs(self, c: _Choice, incremental: bool) -> dict:
        tokens, lps, tops, offsets = [], [], [], []
        for tid, lp, top in self._take(c, incremental):
            t = self._token(tid)
            tokens.append(t)
            lps.append(lp)
            tops.append({self._token(i): v for i, v in top} if top else None)
            offsets.append(c.offset)
            c.offset += len(t)
        return {"text_offset": offsets, "token_logprobs": lps, "tokens": tokens, "top_logprobs": tops}

    def _generate_obj(self, c: _Choice) -> dict:
        if not c.finished:
            reason = None
        elif c.reason == "length":
            reason = {"type": "length", "length": c.tokens}
        elif c.reason == "stop":
            reason = {"type": "stop", "matched": c.matched}
        else:
            reason = {"type": c.reason}
        return {"text": "".join(c.parts), "output_ids": list(c.ids),
                "meta_info": {"id": self.id, "finish_reason": reason,
                              "prompt_tokens": self.prompt_tokens or self.prompt_len,
                              "completion_tokens": c.tokens, "cached_tokens": self.cached_tokens}}
