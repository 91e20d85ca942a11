"""Incremental detokenization: generated ids in, new complete text out.

``DecodeStream`` keeps two offsets into the ids it has seen, as vLLM, SGLang and SMG do:
``prefix_offset`` (where the decode window starts) and ``read_offset`` (where the text
already emitted ends). Each ``push`` decodes the window twice, ``ids[prefix:read]`` and
``ids[prefix:]``, and emits the difference. Decoding a window with a little context
before the new ids, instead of the new ids alone, keeps what a tokenizer's decoder does
at the start of a string (a SentencePiece ``▁`` loses its space there; WordPiece
``##`` pieces join the word before) from leaking into the middle of the text.

Rules this module keeps:

- **Only complete text leaves.** A window whose text ends in U+FFFD means the last ids
  end inside a multi-byte character (an emoji or CJK character split over byte-level
  or byte-fallback tokens): nothing is emitted and the offsets stay until a later id
  completes it. ``flush`` emits whatever is held at the end, a dangling U+FFFD included
  (the full decode holds it too).
- **Split invariance.** For tokenizers whose decoder is a concatenation (byte-level BPE,
  byte-fallback SentencePiece), the pushes' outputs plus ``flush``, for any split of an
  id sequence, equal ``tokenizer.decode(ids)`` (without ``prompt_ids``) or the decode
  of ``prompt_tail + ids`` past the prompt tail's own text (with them). Byte-level BPE
  keeps this even for ids that are not valid UTF-8. A byte-fallback decoder does not:
  it turns a whole run of ``<0xNN>`` tokens that is not valid UTF-8 into one U+FFFD per
  token, so a character emitted before the run went bad (``<0x2E>`` ".", then a lone
  ``<0xC3>``) cannot be taken back; as in vLLM and SGLang, valid text is not delayed to
  guard against that.
- **Bounded memory.** Ids before ``prefix_offset`` are never needed again and are
  dropped; ``prompt_ids`` contributes only its last ``PROMPT_CONTEXT`` ids.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

__all__ = ["DecodeStream", "PROMPT_CONTEXT"]

# Prompt ids kept as decode context for the first generated ids (vLLM's initial offset).
PROMPT_CONTEXT = 5
# Drop consumed ids once this many have piled up before the window.
_COMPACT_AT = 256

_REPLACEMENT = "\ufffd"


class _Decoder(Protocol):
    def decode(self, ids: list[int], skip_special_tokens: bool = ...) -> str: ...


class DecodeStream:
    """One sequence's incremental detokenizer.

    Args:
        tokenizer: anything with ``decode(ids, skip_special_tokens)`` (a ``Tokenizer``).
        skip_special_tokens: passed to every decode.
        prompt_ids: the prompt, whose last ids serve as context for the first window.
    """

    __slots__ = ("_tok", "_skip", "_ids", "_prefix", "_read", "_prefix_text")

    def __init__(
        self,
        tokenizer: _Decoder,
        skip_special_tokens: bool = True,
        prompt_ids: Iterable[int] | None = None,
    ) -> None:
        self._tok = tokenizer
        self._skip = skip_special_tokens
        tail = list(prompt_ids)[-PROMPT_CONTEXT:] if prompt_ids is not None else []
        self._ids: list[int] = tail
        self._prefix = 0
        self._read = len(tail)
        self._prefix_text = self._decode(tail) if tail else ""

    def _decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=self._skip)

    def push(self, ids: Iterable[int] | int) -> str:
        """Add generated ids; return the text they complete ('' while held)."""
        if isinstance(ids, int):
            self._ids.append(ids)
        else:
            self._ids.extend(ids)
        if len(self._ids) == self._read:
            return ""
        text = self._decode(self._ids[self._prefix :])
        if len(text) <= len(self._prefix_text) or text.endswith(_REPLACEMENT):
            return ""
        out = text[len(self._prefix_text) :]
        self._advance()
        return out

    def _advance(self) -> None:
        self._prefix = self._read
        self._read = len(self._ids)
        if self._prefix >= _COMPACT_AT:
            del self._ids[: self._prefix]
            self._read -= self._prefix
            self._prefix = 0
        self._prefix_text = self._decode(self._ids[self._prefix : self._read])

    def flush(self) -> str:
        """Emit whatever is held (at the end of the sequence)."""
        if len(self._ids) == self._read:
            return ""
        text = self._decode(self._ids[self._prefix :])
        out = text[len(self._prefix_text) :] if len(text) > len(self._prefix_text) else ""
        self._advance()
        return out

    @property
    def pending(self) -> int:
        """Ids pushed whose text has not been emitted yet."""
        return len(self._ids) - self._read
