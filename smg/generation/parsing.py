"""Output parsing of one chat choice: the detokenized text in, content, reasoning and
tool-call deltas out (the parsers of smg/parsers, chained).

``OutputParsing`` runs the reasoning parser first and the tool parser on the content it
leaves, so a tool call written inside a thinking block stays reasoning (as the engines'
own servers read it). ``Parsers`` is what the exchange picks once per request: the names
and options; ``Parsers.choice()`` makes the per-choice state.

Rules:
- A streamed choice runs the parsers' streaming mode (``feed`` per piece, ``finish``
  once); a whole answer (``whole=True``) keeps its text and runs their complete mode at
  ``finish``. For well-formed output both give the same result (the parsers' split
  invariance); for a call cut off mid-way, complete mode returns the text as content,
  while a stream that already sent the call's name keeps it.
- ``stream_reasoning=False`` (SGLang's request field): reasoning text is held and sent as
  one piece when the reasoning ends (the first content or call after it, or the end).
- Tool-call deltas carry OpenAI's fields: the first delta of a call its ``id``, ``type``
  ``"function"`` and ``function.name`` (arguments ""), later ones only
  ``function.arguments`` fragments; ``index`` counts the calls of the choice.
- ``called`` tells the builder a call was made, for ``finish_reason: "tool_calls"``.
- No parser exception escapes (smg/parsers keeps that rule); memory is the parsers'
  hold-back plus, with ``stream_reasoning=False``, the reasoning text.
"""
from __future__ import annotations

from smg.parsers import select

__all__ = ["Parsers", "OutputParsing", "pick"]


class OutputParsing:
    """One choice's parsers. ``feed``/``finish`` return ``(content, reasoning, calls)``:
    text strings and a list of OpenAI ``tool_calls`` delta objects."""

    __slots__ = ("reasoning", "tools", "stream_reasoning", "held", "called", "whole")

    def __init__(self, reasoning, tools, stream_reasoning: bool = True, whole: bool = False) -> None:
        self.reasoning = reasoning   # a ReasoningParser or None
        self.tools = tools           # a ToolParser or None
        self.stream_reasoning = stream_reasoning
        self.held = ""               # reasoning not yet sent (stream_reasoning=False), or the whole text
        self.called = False
        self.whole = whole

    def feed(self, text: str) -> tuple:
        if self.whole:
            self.held += text
            return "", "", []
        return self._step(text, False)

    def finish(self) -> tuple:
        if self.whole:
            return self._complete()
        return self._step("", True)

    def _complete(self) -> tuple:
        text, self.held = self.held, ""
        reasoning = ""
        if self.reasoning is not None:
            r = self.reasoning.parse(text)
            text, reasoning = r.normal_text, r.reasoning_text
        calls: list = []
        if self.tools is not None:
            r = self.tools.parse(text)
            text = r.normal_text
            calls = [{"index": c.index, "id": c.id, "type": "function",
                      "function": {"name": c.name, "arguments": c.arguments}} for c in r.calls]
            self.called = bool(calls)
        return text, reasoning, calls

    def _step(self, text: str, final: bool) -> tuple:
        reasoning = ""
        if self.reasoning is not None:
            r = self.reasoning.finish() if final else self.reasoning.feed(text)
            text, reasoning = r.normal_text, r.reasoning_text
        calls: list = []
        tools = self.tools
        if tools is not None:
            if text:
                d = tools.feed(text)
                text, calls = d.normal_text, [_delta(c) for c in d.calls]
            if final:
                d = tools.finish()
                text += d.normal_text
                calls.extend(_delta(c) for c in d.calls)
            if calls:
                self.called = True
        if not self.stream_reasoning:
            if reasoning:
                self.held += reasoning
                reasoning = ""
            if self.held and (text or calls or final):
                reasoning, self.held = self.held, ""
        return text, reasoning, calls


def _delta(c) -> dict:
    if c.id is not None:
        return {"index": c.index, "id": c.id, "type": "function",
                "function": {"name": c.name, "arguments": c.arguments}}
    return {"index": c.index, "function": {"arguments": c.arguments}}


class Parsers:
    """The parsers one request runs (chosen by ``pick``); ``choice()`` makes one
    choice's state."""

    __slots__ = ("reasoning_name", "tool_name", "tools", "separate", "stream_reasoning", "kwargs",
                 "_reasoning_reg", "_tool_reg")

    def __init__(self, reasoning_name: str | None, tool_name: str | None, *, tools=None,
                 separate_reasoning: bool = True, stream_reasoning: bool = True,
                 chat_template_kwargs: dict | None = None) -> None:
        self.reasoning_name = reasoning_name
        self.tool_name = tool_name
        self.tools = tools
        self.separate = separate_reasoning
        self.stream_reasoning = stream_reasoning
        self.kwargs = chat_template_kwargs
        self._reasoning_reg = select.registry("reasoning") if reasoning_name else None
        self._tool_reg = select.registry("tool") if tool_name else None

    def choice(self, whole: bool = False) -> OutputParsing:
        r = t = None
        if self._reasoning_reg is not None:
            r = self._reasoning_reg.create(self.reasoning_name, separate_reasoning=self.separate,
                                           chat_template_kwargs=self.kwargs)
        if self._tool_reg is not None:
            t = self._tool_reg.create(self.tool_name, self.tools)
        return OutputParsing(r, t, self.stream_reasoning, whole)


def pick(body: dict, model, card, labels, reasoning_setting: str | None,
         tool_setting: str | None) -> Parsers | None:
    """The parsers a chat request gets, or None when neither applies.

    Reasoning: the parser ``select`` names (card → labels → ``--reasoning-parser`` →
    the model map), none when that is ``passthrough`` or ``separate_reasoning`` is false.
    Tools: only when the request has ``tools`` and ``tool_choice`` is not ``"none"``;
    none when ``select`` gives ``passthrough``.
    """
    reasoning = select.select(model, card, reasoning_setting, "reasoning", labels)
    if reasoning == "passthrough" or body.get("separate_reasoning") is False:
        reasoning = None
    tools = body.get("tools")
    tool = None
    if type(tools) is list and tools and body.get("tool_choice") != "none":
        tool = select.select(model, card, tool_setting, "tool", labels)
        if tool == "passthrough":
            tool = None
    if reasoning is None and tool is None:
        return None
    kwargs = body.get("chat_template_kwargs")
    return Parsers(reasoning, tool, tools=tools if tool else None,
                   stream_reasoning=body.get("stream_reasoning") is not False,
                   chat_template_kwargs=kwargs if type(kwargs) is dict else {})
