"""The reasoning parser's machine: marker tables per state, one scanner for complete
mode and streaming.

A parser is a small state machine over the generated text:

- ``OUT``: content before any reasoning; an opening marker moves to ``IN``.
- ``IN``: reasoning; a closing marker moves to ``AFTER``.
- ``AFTER``: content after the reasoning block.
- ``DROP``, ``HEADER``: channels whose text belongs to neither (Inkling's text-mode
  tool invocation and message header); their text is discarded.

Each state has a table of markers, ``(marker, next state, kept)``: a marker of the
current state's table is consumed (``kept`` markers are passed on as content, e.g. a
tool-channel opener that ends reasoning but is the tool parser's to read); text that
matches no marker of the current state is literal and goes to that state's channel.
A parser family is nothing but its tables and its starting state.

Rules:
- One scanner (``_scan``) serves ``parse``, ``feed`` and ``finish``, so streamed
  deltas concatenate to the complete-mode result for every split of the text.
- A tail that is a proper prefix of a marker of the current state is held back, and
  only that; ``finish`` releases it as literal text. Memory is bounded by the longest
  marker.
- Text before an opening marker is content (the scanner never looks back): a model
  that writes ``hello <think>…`` keeps ``hello `` as content.
- Output is byte-faithful: no whitespace is trimmed around markers.
- No exception escapes: any ``str`` is valid input; ``None`` is empty text and other
  objects are read through ``str()``.
"""
from __future__ import annotations

from dataclasses import dataclass

# states
OUT = 0
IN = 1
AFTER = 2
DROP = 3
HEADER = 4
_STATES = (OUT, IN, AFTER, DROP, HEADER)

_NORMAL = 0
_REASONING = 1
_DISCARD = 2
_CHANNEL = (_NORMAL, _REASONING, _NORMAL, _DISCARD, _DISCARD)  # state -> where its text goes


@dataclass(slots=True)
class ReasoningResult:
    """Complete mode, and each streamed delta."""

    normal_text: str = ""
    reasoning_text: str = ""


class _Table:
    """One state's markers, compiled: the characters markers start with, and per
    lead character the rules ``(marker, next_state, kept)``, longest marker first."""

    __slots__ = ("leads", "lead", "by_lead", "maxlen")

    def __init__(self, rules) -> None:
        by_lead: dict = {}
        for marker, nxt, kept in rules:
            if not marker:
                raise ValueError("a marker cannot be empty")
            by_lead.setdefault(marker[0], []).append((marker, nxt, kept))
        for lst in by_lead.values():
            lst.sort(key=lambda r: -len(r[0]))
        self.by_lead = {k: tuple(v) for k, v in by_lead.items()}
        self.leads = tuple(by_lead)
        self.lead = self.leads[0] if len(self.leads) == 1 else None
        self.maxlen = max(len(r[0]) for r in rules)

    def find(self, text: str, pos: int, final: bool) -> tuple:
        """``(i, rule)``: the first marker at or after ``pos``; ``(i, None)`` when the
        tail from ``i`` is a proper prefix of a marker (never when ``final``: the text
        ends there); ``(len(text), None)`` when neither occurs."""
        n = len(text)
        lead = self.lead
        while pos < n:
            if lead is not None:
                i = text.find(lead, pos)
                if i < 0:
                    return n, None
            else:
                i = n
                for ch in self.leads:
                    j = text.find(ch, pos, i)
                    if j >= 0:
                        i = j
                if i == n:
                    return n, None
            rules = self.by_lead[text[i]]
            for rule in rules:
                if text.startswith(rule[0], i):
                    return i, rule
            rest = n - i
            if rest < self.maxlen and not final:
                tail = text[i:]
                for rule in rules:
                    if len(rule[0]) > rest and rule[0].startswith(tail):
                        return i, None
            pos = i + 1
        return n, None


def _compile(rules: dict) -> tuple:
    return tuple(_Table(rules[s]) if rules.get(s) else None for s in _STATES)


def _scan(tables: tuple, state: int, text: str, final: bool) -> tuple:
    """Runs the machine over ``text`` from ``state``.

    Returns ``(state, normal, reasoning, held)``: the state reached, the text of
    each channel, and the tail held back (a possible marker; always "" when
    ``final``)."""
    normal = reasoning = ""   # few segments per call: str += beats list + join here
    pos = 0
    n = len(text)
    held = ""
    while pos < n:
        table = tables[state]
        if table is None:
            i, rule = n, None
        else:
            i, rule = table.find(text, pos, final)
        if i > pos:
            channel = _CHANNEL[state]
            if channel == _NORMAL:
                normal += text[pos:i] if pos or i < n else text
            elif channel == _REASONING:
                reasoning += text[pos:i] if pos or i < n else text
        if i >= n:
            break
        if rule is None:
            held = text[i:]
            break
        marker, state, kept = rule
        if kept:
            normal += marker
        pos = i + len(marker)
    return state, normal, reasoning, held


def think_rules(start: str, end: str) -> dict:
    """The tables of the ``<think>…</think>`` shape: ``start`` opens reasoning,
    the first ``end`` closes it; ``start`` markers are dropped wherever they appear
    (a repeated opener is noise), an ``end`` outside reasoning is literal text."""
    return {OUT: ((start, IN, False),),
            IN: ((start, IN, False), (end, AFTER, False)),
            AFTER: ((start, AFTER, False),)}


def _text(t) -> str:
    if type(t) is str:
        return t
    return "" if t is None else str(t)


class ReasoningParser:
    """One instance per request or stream. Subclasses set ``name``, ``RULES``
    (state -> marker rules, see the module docstring) and ``IN_REASONING`` (whether
    the output starts inside reasoning: the chat template pre-fills the opener).

    ``in_reasoning``: ``None`` keeps the parser's default; ``True``/``False`` say
    where the output starts (the thinking toggle of the request, smg/parsers/
    reasoning/toggle.py)."""

    name = "base"
    RULES: dict = think_rules("<think>", "</think>")
    IN_REASONING = False
    _tables: tuple = _compile(RULES)

    __slots__ = ("_state", "_start", "_held")

    def __init_subclass__(cls, **kw) -> None:
        super().__init_subclass__(**kw)
        cls._tables = _compile(cls.RULES)  # once per family, at import

    def __init__(self, *, in_reasoning: bool | None = None) -> None:
        if in_reasoning is None:
            in_reasoning = self.IN_REASONING
        self._start = IN if in_reasoning else OUT
        self._state = self._start
        self._held = ""

    @property
    def in_reasoning(self) -> bool:
        """Whether the stream is inside reasoning now."""
        return self._state == IN

    def parse(self, text: str) -> ReasoningResult:
        """Complete mode: the whole text, from the parser's starting state. It does
        not touch the streaming state."""
        _, normal, reasoning, _ = _scan(self._tables, self._start, _text(text), True)
        return ReasoningResult(normal, reasoning)

    def feed(self, chunk: str) -> ReasoningResult:
        """Streaming: the delta for this chunk (a possible marker at its end is held
        back until the next chunk or ``finish``)."""
        if type(chunk) is not str:
            chunk = _text(chunk)
        if not self._held:
            # the common chunk: no marker can start in it, so it all goes to the
            # current state's channel without a scan
            state = self._state
            table = self._tables[state]
            if table is None or (table.lead is not None and table.lead not in chunk):
                channel = _CHANNEL[state]
                if channel == _NORMAL:
                    return ReasoningResult(chunk, "")
                if channel == _REASONING:
                    return ReasoningResult("", chunk)
                return ReasoningResult()
        text = self._held + chunk if self._held else chunk
        self._state, normal, reasoning, self._held = _scan(self._tables, self._state, text, False)
        return ReasoningResult(normal, reasoning)

    def finish(self) -> ReasoningResult:
        """End of stream: the held-back tail, as literal text of the current state."""
        text, self._held = self._held, ""
        if not text:
            return ReasoningResult()
        self._state, normal, reasoning, _ = _scan(self._tables, self._state, text, True)
        return ReasoningResult(normal, reasoning)
