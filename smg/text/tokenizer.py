"""A model's tokenizer (HF ``tokenizer.json`` + ``tokenizer_config.json``) and SMG's two
tokenization caches.

``Tokenizer`` wraps ``tokenizers.Tokenizer`` and adds what the config files say: the
bos/eos tokens, ``add_bos_token``/``add_eos_token``, the special tokens and the eos ids
(``tokenizer_config.json``'s ``eos_token`` plus ``generation_config.json``'s
``eos_token_id``, an int or a list). ``load_tokenizer(path)`` takes an HF directory or a
``tokenizer.json`` file (its sibling config files are read when present).

Rules this module keeps:

- **tokenizer.json is the truth** for how text becomes ids; the config only adds a bos
  (eos) the post-processor did not add when ``add_bos_token`` (``add_eos_token``) is true
  and ``add_special_tokens`` was asked for. SMG's request path tokenizes the rendered
  chat template with ``add_special_tokens=False`` (the template holds the bos), which is
  this module's default.
- **No I/O but reading the path given**; nothing is fetched.
- **Caches never change an answer.** ``TokenizerCache.encode`` returns exactly what
  ``Tokenizer.encode`` returns, for every input (a hypothesis test holds it to that):
  - L0 (``--tokenizer-cache-enable-l0``): whole-string exact match keyed on
    ``(text, add_special_tokens)``.
  - L1 (``--tokenizer-cache-enable-l1``): prefix ids stored at *special-token
    boundaries* (right after an atomic special token such as ``<|im_end|>``) and keyed
    on a 128-bit BLAKE2b digest of the prefix text. A special token is matched before
    normalization and pre-tokenization, so the text on either side of it tokenizes
    independently and ``encode(prefix) + encode(suffix)`` is ``encode(prefix+suffix)``.
    A token is used as a boundary only when that holds for it: special, not
    ``normalized``/``rstrip``/``single_word``, not part of any other added token's text,
    and an encode probe agrees, run the first time a text holds the token (it catches
    pre-tokenizers whose behaviour depends on the position in the whole string, e.g.
    Metaspace ``prepend_scheme="first"``). L1 serves ``add_special_tokens=False`` only (a
    post-processor's bos/eos would land in the middle otherwise).
  - Both are bounded in **bytes** (an estimate of what an entry holds: key text, 4
    bytes per id, a fixed per-entry overhead), evict least-recently-used first, and
    count hits, misses and evictions (``stats()``). An entry larger than its cache's
    whole budget is not stored. L0 may also be bounded in entries (SMG's
    ``--tokenizer-cache-l0-max-entries``).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import threading
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import tokenizers

from smg.errors import SmgError

__all__ = [
    "CacheStats",
    "Tokenizer",
    "TokenizerCache",
    "TokenizerError",
    "load_tokenizer",
    "DEFAULT_L0_MAX_ENTRIES",
    "DEFAULT_L0_MAX_BYTES",
    "DEFAULT_L1_MAX_BYTES",
]

# SMG's defaults (smg.md §6): L0 10000 entries / 256 MB, L1 50 MB.
DEFAULT_L0_MAX_ENTRIES = 10_000
DEFAULT_L0_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_L1_MAX_BYTES = 50 * 1024 * 1024

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG_JSON = "tokenizer_config.json"
GENERATION_CONFIG_JSON = "generation_config.json"

_CONFIG_TOKEN_KEYS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)


class TokenizerError(SmgError):
    """A tokenizer could not be loaded (missing file, bad JSON, unsupported format)."""


def _token_content(value: Any) -> str | None:
    """A config token entry is a string or an ``AddedToken`` dict with ``content``."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        content = value.get("content")
        if isinstance(content, str):
            return content
    return None


def _parse_json(raw: bytes | str | None, what: str) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TokenizerError(f"{what}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise TokenizerError(f"{what}: expected a JSON object")
    return data


class Tokenizer:
    """One model's tokenizer: ``tokenizers.Tokenizer`` plus the config files' facts.

    Attributes:
        inner: the wrapped ``tokenizers.Tokenizer``.
        config: ``tokenizer_config.json`` as parsed (``{}`` when absent); the chat
            template helper reads ``chat_template`` from it.
        source: where it came from (a path or a caller's label), for listings.
        vocab_size: ids the tokenizer knows, added tokens included.
        bos_token, eos_token: their text (``None`` when not configured).
        bos_id, eos_id: the config's bos and eos token ids, when known.
        eos_ids: every id that ends generation, in config order, without repeats.
        special_ids: ids of special tokens (added tokens marked special and the
            config's bos/eos/unk/sep/pad/cls/mask/additional special tokens).
        special_tokens: special token text -> id.
        add_bos_token, add_eos_token: the config's flags (``None`` when unset).
    """

    def __init__(
        self,
        inner: tokenizers.Tokenizer,
        config: Mapping[str, Any] | None = None,
        generation_config: Mapping[str, Any] | None = None,
        source: str = "",
    ) -> None:
        # The gateway never pads or truncates (some tokenizer.json files ship padding on).
        inner.no_padding()
        inner.no_truncation()
        self.inner = inner
        self.config: dict[str, Any] = dict(config or {})
        self.source = source
        self.vocab_size: int = inner.get_vocab_size(with_added_tokens=True)

        added = inner.get_added_tokens_decoder()
        self._added: dict[int, tokenizers.AddedToken] = dict(added)
        special: dict[str, int] = {}
        for tid, tok in sorted(added.items()):
            if tok.special:
                special.setdefault(tok.content, tid)

        cfg = self.config
        config_tokens: dict[str, str] = {}
        for key in _CONFIG_TOKEN_KEYS:
            content = _token_content(cfg.get(key))
            if content is not None:
                config_tokens[key] = content
        extra = cfg.get("additional_special_tokens") or []
        extra_contents = [c for c in (_token_content(v) for v in extra) if c is not None]
        for content in list(config_tokens.values()) + extra_contents:
            found = inner.token_to_id(content)
            if found is not None:
                special.setdefault(content, found)
        self.special_tokens: dict[str, int] = special
        self.special_ids: frozenset[int] = frozenset(special.values())

        self.bos_token = config_tokens.get("bos_token")
        self.eos_token = config_tokens.get("eos_token")
        self.bos_id = inner.token_to_id(self.bos_token) if self.bos_token else None
        self.eos_id = inner.token_to_id(self.eos_token) if self.eos_token else None
        eos: list[int] = []
        if self.eos_token is not None:
            found = inner.token_to_id(self.eos_token)
            if found is not None:
                eos.append(found)
        gen_eos = (generation_config or {}).get("eos_token_id")
        if isinstance(gen_eos, int) and not isinstance(gen_eos, bool):
            gen_eos = [gen_eos]
        if isinstance(gen_eos, list):
            eos.extend(i for i in gen_eos if isinstance(i, int) and not isinstance(i, bool))
        self.eos_ids: tuple[int, ...] = tuple(dict.fromkeys(eos))

        flag = cfg.get("add_bos_token")
        self.add_bos_token: bool | None = flag if isinstance(flag, bool) else None
        flag = cfg.get("add_eos_token")
        self.add_eos_token: bool | None = flag if isinstance(flag, bool) else None

    # -- construction -------------------------------------------------------------

    @classmethod
    def from_bytes(
        cls,
        tokenizer_json: bytes | str,
        config_json: bytes | str | None = None,
        generation_config_json: bytes | str | None = None,
        source: str = "",
    ) -> Tokenizer:
        """Build from the files' contents (e.g. the members of a worker's zip)."""
        text = tokenizer_json.decode("utf-8", "strict") if isinstance(tokenizer_json, bytes) else tokenizer_json
        try:
            inner = tokenizers.Tokenizer.from_str(text)
        except Exception as exc:  # the Rust side raises a bare Exception
            raise TokenizerError(f"{TOKENIZER_JSON}: cannot be loaded ({exc})") from exc
        return cls(
            inner,
            _parse_json(config_json, TOKENIZER_CONFIG_JSON),
            _parse_json(generation_config_json, GENERATION_CONFIG_JSON),
            source,
        )

    # -- the tokenizer's operations --------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Text to ids; with ``add_special_tokens`` the post-processor's (and the
        config's) bos/eos are added."""
        ids = self.inner.encode(text, add_special_tokens=add_special_tokens).ids
        if add_special_tokens:
            ids = self._add_config_specials(ids)
        return ids

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids and their character offsets, no special tokens added (for the caches)."""
        enc = self.inner.encode(text, add_special_tokens=False)
        return enc.ids, enc.offsets

    def _add_config_specials(self, ids: list[int]) -> list[int]:
        if self.add_bos_token and self.bos_id is not None and (not ids or ids[0] != self.bos_id):
            ids = [self.bos_id, *ids]
        if self.add_eos_token and self.eos_id is not None and (not ids or ids[-1] != self.eos_id):
            ids = [*ids, self.eos_id]
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Ids to text (ids the vocabulary lacks are dropped, as ``tokenizers`` does)."""
        return self.inner.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def id_to_token(self, token_id: int) -> str | None:
        return self.inner.id_to_token(token_id)

    def token_to_id(self, token: str) -> int | None:
        return self.inner.token_to_id(token)

    def added_token(self, token_id: int) -> tokenizers.AddedToken | None:
        """The added-token record for an id (``None`` for a plain vocabulary id)."""
        return self._added.get(token_id)

    def __repr__(self) -> str:
        return f"Tokenizer(source={self.source!r}, vocab_size={self.vocab_size})"


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """Load from an HF directory (``tokenizer.json`` required; ``tokenizer_config.json``
    and ``generation_config.json`` read when present) or from a ``tokenizer.json`` file
    (the same sibling files read from its directory).

    Raises:
        TokenizerError: the path is missing, holds no ``tokenizer.json`` (tiktoken and
            sentencepiece-only models are not supported here), or a file is malformed.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        directory, tok_file = path, os.path.join(path, TOKENIZER_JSON)
    elif os.path.isfile(path):
        directory, tok_file = os.path.dirname(path) or ".", path
    else:
        raise TokenizerError(f"{path}: no such file or directory")
    if not os.path.isfile(tok_file):
        raise TokenizerError(f"{path}: no {TOKENIZER_JSON} (only HF tokenizer.json is supported)")

    def read(name: str) -> bytes | None:
        p = os.path.join(directory, name)
        if not os.path.isfile(p):
            return None
        with open(p, "rb") as fh:
            return fh.read()

    with open(tok_file, "rb") as fh:
        tok_bytes = fh.read()
    return Tokenizer.from_bytes(
        tok_bytes, read(TOKENIZER_CONFIG_JSON), read(GENERATION_CONFIG_JSON), source=path
    )


# -- caches ---------------------------------------------------------------------------

# What an entry costs besides its text and ids: the dict slot, the key tuple or digest,
# the array header. An estimate, applied the same way to every entry.
_ENTRY_OVERHEAD = 128
_DIGEST_SIZE = 16

# Probes for the boundary check: text before the token, text after it.
_PROBE_BEFORE = ("", "a", "a ", "\n")
_PROBE_AFTER = ("hello", " hello", "\n\nhi", "  x", "1", "é")


@dataclass(frozen=True)
class CacheStats:
    """Counters and sizes of a ``TokenizerCache`` (``*_bytes`` are the estimates that
    the bounds apply to)."""

    l0_hits: int
    l0_misses: int
    l0_entries: int
    l0_bytes: int
    l0_evictions: int
    l1_hits: int
    l1_misses: int
    l1_entries: int
    l1_bytes: int
    l1_evictions: int
    l1_boundary_tokens: int


class _LruBytes:
    """An LRU map bounded in (estimated) bytes and optionally in entries."""

    __slots__ = ("data", "max_bytes", "max_entries", "bytes", "evictions")

    def __init__(self, max_bytes: int, max_entries: int | None = None) -> None:
        self.data: OrderedDict[Any, tuple[array, int]] = OrderedDict()
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.bytes = 0
        self.evictions = 0

    def get(self, key: Any) -> array | None:
        hit = self.data.get(key)
        if hit is None:
            return None
        self.data.move_to_end(key)
        return hit[0]

    def put(self, key: Any, ids: array, cost: int) -> None:
        if cost > self.max_bytes or self.max_entries == 0:
            return
        old = self.data.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self.data[key] = (ids, cost)
        self.bytes += cost
        while self.bytes > self.max_bytes or (
            self.max_entries is not None and len(self.data) > self.max_entries
        ):
            _, (_, c) = self.data.popitem(last=False)
            self.bytes -= c
            self.evictions += 1

    def clear(self) -> None:
        self.data.clear()
        self.bytes = 0


class TokenizerCache:
    """L0 exact-string and L1 special-token-boundary prefix caches over a ``Tokenizer``.

    Args:
        tokenizer: the tokenizer whose ``encode`` this reproduces.
        l0_max_bytes: L0's budget; 0 disables L0.
        l1_max_bytes: L1's budget; 0 disables L1.
        l0_max_entries: an extra bound on L0's entry count (``None``: bytes only).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        l0_max_bytes: int = DEFAULT_L0_MAX_BYTES,
        l1_max_bytes: int = DEFAULT_L1_MAX_BYTES,
        l0_max_entries: int | None = DEFAULT_L0_MAX_ENTRIES,
    ) -> None:
        if l0_max_bytes < 0 or l1_max_bytes < 0 or (l0_max_entries is not None and l0_max_entries < 0):
            raise ValueError("cache bounds must be >= 0")
        self.tokenizer = tokenizer
        self._lock = threading.Lock()
        self._l0 = _LruBytes(l0_max_bytes, l0_max_entries) if l0_max_bytes else None
        self._l1 = _LruBytes(l1_max_bytes) if l1_max_bytes else None
        self._l0_hits = self._l0_misses = 0
        self._l1_hits = self._l1_misses = 0
        # Candidate boundary tokens; each is probed the first time a text holds it.
        self._boundary: dict[str, int] = {}
        self._verdict: dict[str, bool] = {}
        self._boundary_re: re.Pattern[str] | None = None
        if self._l1 is not None:
            self._boundary = _boundary_candidates(tokenizer)
            if self._boundary:
                alts = sorted(self._boundary, key=len, reverse=True)
                self._boundary_re = re.compile("|".join(re.escape(a) for a in alts))

    @property
    def boundary_tokens(self) -> frozenset[str]:
        """The special tokens L1 may split at (each still passes a probe before use)."""
        return frozenset(self._boundary)

    def _is_safe(self, content: str) -> bool:
        verdict = self._verdict.get(content)
        if verdict is None:
            verdict = _probe_boundary(self.tokenizer.inner, content)
            self._verdict[content] = verdict
        return verdict

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Exactly ``tokenizer.encode(text, add_special_tokens)``, served from the caches
        when they can."""
        l0 = self._l0
        if l0 is not None:
            key = (text, add_special_tokens)
            with self._lock:
                hit = l0.get(key)
                if hit is not None:
                    self._l0_hits += 1
                    return hit.tolist()
                self._l0_misses += 1
        if self._l1 is not None and self._boundary_re is not None and not add_special_tokens:
            ids = self._encode_l1(text)
        else:
            ids = self.tokenizer.encode(text, add_special_tokens)
        if l0 is not None:
            arr = array("I", ids)
            cost = sys.getsizeof(text) + 4 * len(ids) + _ENTRY_OVERHEAD
            with self._lock:
                l0.put((text, add_special_tokens), arr, cost)
        return ids

    def _boundaries(self, text: str) -> list[tuple[int, int, int]]:
        """(start, end, id) of each boundary-token occurrence, left to right."""
        assert self._boundary_re is not None
        table = self._boundary
        out = []
        for m in self._boundary_re.finditer(text):
            content = m.group()
            if self._is_safe(content):
                out.append((m.start(), m.end(), table[content]))
        return out

    def _encode_l1(self, text: str) -> list[int]:
        assert self._l1 is not None
        bounds = self._boundaries(text)
        digests: list[bytes] = []
        h = hashlib.blake2b(digest_size=_DIGEST_SIZE)
        pos = 0
        for _, end, _ in bounds:
            h.update(text[pos:end].encode("utf-8", "surrogatepass"))
            pos = end
            digests.append(h.copy().digest())

        base = 0
        prefix: list[int] = []
        with self._lock:
            for i in range(len(bounds) - 1, -1, -1):
                hit = self._l1.get(digests[i])
                if hit is not None:
                    base = bounds[i][1]
                    prefix = hit.tolist()
                    self._l1_hits += 1
                    break
            else:
                self._l1_misses += 1
        if base == len(text) and base:
            return prefix
        suffix = text[base:]
        ids, offsets = self.tokenizer.encode_with_offsets(suffix)
        # Store the prefixes ending at the boundaries this encode covered.
        entries: list[tuple[bytes, array, int]] = []
        j = 0
        n = len(ids)
        for (start, end, tid), digest in zip(bounds, digests):
            if end <= base:
                continue
            s, e = start - base, end - base
            while j < n and offsets[j][1] < e:
                j += 1
            if j < n and ids[j] == tid and offsets[j] == (s, e):
                arr = array("I", prefix)
                arr.extend(ids[: j + 1])
                entries.append((digest, arr, 4 * len(arr) + _ENTRY_OVERHEAD))
        if entries:
            with self._lock:
                for digest, arr, cost in entries:
                    if digest not in self._l1.data:
                        self._l1.put(digest, arr, cost)
        if not prefix:
            return ids
        return prefix + ids

    def stats(self) -> CacheStats:
        with self._lock:
            l0, l1 = self._l0, self._l1
            return CacheStats(
                l0_hits=self._l0_hits,
                l0_misses=self._l0_misses,
                l0_entries=len(l0.data) if l0 else 0,
                l0_bytes=l0.bytes if l0 else 0,
                l0_evictions=l0.evictions if l0 else 0,
                l1_hits=self._l1_hits,
                l1_misses=self._l1_misses,
                l1_entries=len(l1.data) if l1 else 0,
                l1_bytes=l1.bytes if l1 else 0,
                l1_evictions=l1.evictions if l1 else 0,
                l1_boundary_tokens=len(self._boundary),
            )

    def clear(self) -> None:
        """Drop every entry (counters are kept)."""
        with self._lock:
            if self._l0:
                self._l0.clear()
            if self._l1:
                self._l1.clear()


def _boundary_candidates(tokenizer: Tokenizer) -> dict[str, int]:
    """Special tokens that are atomic wherever they occur: matched before normalization,
    eating no neighbouring whitespace, and not part of any other added token's text (a
    longer added token could otherwise straddle the split)."""
    inner = tokenizer.inner
    if getattr(inner, "encode_special_tokens", False):
        return {}  # special tokens are then tokenized as plain text
    added = inner.get_added_tokens_decoder()
    every = "\x00".join(tok.content for tok in added.values())
    candidates: dict[str, int] = {}
    for tid, tok in sorted(added.items()):
        c = tok.content
        if not tok.special or tok.normalized or tok.rstrip or tok.single_word or not c:
            continue
        if "\x00" in c or every.count(c) != 1 or c in candidates:
            continue
        candidates[c] = tid
    return candidates


def _probe_boundary(inner: tokenizers.Tokenizer, content: str) -> bool:
    """Whether splitting right after ``content`` kept the ids on a few probe texts
    (catches pre-tokenizers that look at the position in the whole string)."""
    whole: list[str] = []
    halves: list[str] = []
    for before in _PROBE_BEFORE:
        for after in _PROBE_AFTER:
            whole.append(before + content + after)
            halves.append(before + content)
            halves.append(after)
    enc_whole = inner.encode_batch(whole, add_special_tokens=False)
    enc_halves = inner.encode_batch(halves, add_special_tokens=False)
    for m, enc in enumerate(enc_whole):
        if enc_halves[2 * m].ids + enc_halves[2 * m + 1].ids != enc.ids:
            return False
    return True
