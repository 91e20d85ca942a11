"""Stop strings and stop token ids over a generated text stream (SMG's
``StopSequenceDecoder``, with the engines' semantics).

``StopMatcher.feed(text)`` takes the detokenized text as it grows and returns
``StopStep(emit, stopped, matched)``: the text that is safe to send, whether a stop
string ended the sequence, and which one. ``feed_ids(ids)`` checks stop token ids on
the ids before they are detokenized and says which ids to detokenize. ``flush()`` ends
the stream and releases the held text.

Rules this module keeps:

- **Which stop wins: the one that completes first** in the text, which is when an engine
  would stop generating; of stops completing at the same character, the one starting
  earliest (the longest). This depends only on the whole text, never on how it was
  chunked. (vLLM and SGLang test their stop list in order on each new piece; both stop
  at the first piece holding any stop, which is this rule up to ties inside a piece.)
- **Hidden or visible.** A hidden stop string is cut from the output with everything
  after it; a visible one is kept and everything after it cut.
  ``include_stop_str_in_output`` (vLLM; SGLang's ``no_stop_trim``) makes every stop
  string visible; ``visible_stop_strings`` names extra ones that are (SMG's visible stop
  sequences). A stop token id is dropped from the ids to detokenize unless it is
  visible (``include_stop_str_in_output`` or ``visible_stop_token_ids``); ids after it
  are always dropped.
- **Bounded hold-back.** Only text that could still begin a stop string is held: the
  longest tail of the text that is a proper prefix of some stop string, so at most
  ``max(len(stop)) - 1`` characters. With no stop strings nothing is held (SMG's
  token-only fast path).
- **Split invariance.** For any chunking of the same text, the emitted text joined and
  the stop found are the same (a hypothesis test holds it to that).
- After a stop every ``feed`` returns ``('', True, matched)`` and ``feed_ids`` keeps no
  ids; empty stop strings are ignored.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

__all__ = ["StopMatcher", "StopStep"]


class StopStep(NamedTuple):
    """What one ``feed`` produced.

    Attributes:
        emit: text safe to send now.
        stopped: a stop (string or token) ended the sequence.
        matched: the stop string or the stop token id that did, else ``None``.
    """

    emit: str
    stopped: bool
    matched: str | int | None


class StopMatcher:
    """One sequence's stop detector.

    Args:
        stop_strings: hidden stop strings (visible all of them with
            ``include_stop_str_in_output``).
        stop_token_ids: ids that end the sequence.
        include_stop_str_in_output: keep the stop string / stop token in the output.
        visible_stop_strings: stop strings kept in the output regardless.
        visible_stop_token_ids: stop ids kept in the ids to detokenize regardless.
    """

    __slots__ = (
        "_stops",
        "_visible",
        "_first_chars",
        "_max_hold",
        "_token_ids",
        "_visible_ids",
        "_held",
        "_stopped",
        "_matched",
        "_token_stop",
    )

    def __init__(
        self,
        stop_strings: Iterable[str] = (),
        stop_token_ids: Iterable[int] = (),
        include_stop_str_in_output: bool = False,
        *,
        visible_stop_strings: Iterable[str] = (),
        visible_stop_token_ids: Iterable[int] = (),
    ) -> None:
        stops: list[str] = []
        visible: set[str] = set()
        for s in stop_strings:
            if s and s not in stops:
                stops.append(s)
                if include_stop_str_in_output:
                    visible.add(s)
        for s in visible_stop_strings:
            if s:
                if s not in stops:
                    stops.append(s)
                visible.add(s)
        # A string listed both hidden and visible is visible (the caller asked to keep it).
        self._stops: tuple[str, ...] = tuple(stops)
        self._visible = frozenset(visible)
        self._first_chars = frozenset(s[0] for s in stops)
        self._max_hold = max((len(s) for s in stops), default=1) - 1
        vis_ids = set(visible_stop_token_ids)
        ids = set(stop_token_ids) | vis_ids
        if include_stop_str_in_output:
            vis_ids = set(ids)
        self._token_ids = frozenset(ids)
        self._visible_ids = frozenset(vis_ids)
        self._held = ""
        self._stopped = False
        self._matched: str | None = None
        self._token_stop: int | None = None

    @property
    def stopped(self) -> bool:
        """A stop string matched, or a stop id was seen."""
        return self._stopped or self._token_stop is not None

    @property
    def matched(self) -> str | int | None:
        """The stop string that matched, else the stop id seen, else ``None``."""
        return self._matched if self._stopped else self._token_stop

    @property
    def held(self) -> str:
        """Text held back as a possible start of a stop string."""
        return self._held

    def feed(self, text: str) -> StopStep:
        """Take the next piece of detokenized text."""
        if self._stopped:
            return StopStep("", True, self._matched)
        if not self._stops:
            return StopStep(text, False, None)
        if not text:
            return StopStep("", False, None)
        buf = self._held + text
        best_end = -1
        best_start = 0
        best: str | None = None
        for s in self._stops:
            i = buf.find(s)
            if i < 0:
                continue
            end = i + len(s)
            if best is None or end < best_end or (end == best_end and i < best_start):
                best, best_end, best_start = s, end, i
        if best is not None:
            self._stopped = True
            self._matched = best
            self._held = ""
            cut = best_end if best in self._visible else best_start
            return StopStep(buf[:cut], True, best)
        hold = self._hold_len(buf)
        if hold:
            self._held = buf[-hold:]
            return StopStep(buf[:-hold], False, None)
        self._held = ""
        return StopStep(buf, False, None)

    def _hold_len(self, buf: str) -> int:
        """Length of the longest tail of ``buf`` that a stop string starts with (and is
        longer than). Scans at most ``max_hold`` positions, comparing only where a stop's
        first character stands; memory stays the stop strings themselves."""
        n = len(buf)
        first = self._first_chars
        for p in range(max(0, n - self._max_hold), n):
            if buf[p] in first:
                tail = buf[p:]
                for s in self._stops:
                    if len(s) > len(tail) and s.startswith(tail):
                        return n - p
        return 0

    def feed_ids(self, ids: Sequence[int]) -> tuple[list[int], int | None]:
        """Check stop token ids; return the ids to detokenize and the stop id hit.

        After a stop id, ``feed_ids`` keeps nothing more; the caller still feeds the
        text of the kept ids (a stop string in it wins, being earlier) and then calls
        ``flush``, which releases the held text.
        """
        if self._stopped or self._token_stop is not None:
            return [], None
        token_ids = self._token_ids
        if token_ids:
            for n, tid in enumerate(ids):
                if tid in token_ids:
                    self._token_stop = tid
                    kept = ids[: n + 1] if tid in self._visible_ids else ids[:n]
                    return list(kept), tid
        return list(ids), None

    def flush(self) -> str:
        """End of stream: release the held text (it matched no stop string)."""
        if self._stopped:
            return ""
        out = self._held
        self._held = ""
        return out
