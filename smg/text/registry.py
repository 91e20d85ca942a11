"""Which tokenizer each model uses: registration, lookup, removal, listing, readiness.

A model's tokenizer arrives three ways (smg.md §6): from a local path
(``--model-path``/``--tokenizer-path``, ``POST /v1/tokenizers``), from a gRPC worker's
``GetTokenizer`` stream (a zip plus its SHA-256, given here as bytes), or from the raw
files. Registration is synchronous here; a loader that works in the background marks the
entry ``pending``/``processing`` first (``begin``, ``mark_processing``) and ``failed``
when it gives up, so status and readiness can report it.

Rules this module keeps:

- **No I/O** but reading the local path it is given; zips arrive as bytes.
- **A worker's zip is untrusted.** ``read_tokenizer_zip`` refuses the whole archive when
  its SHA-256 differs from the one sent, when any member name is absolute, holds a
  ``..`` part, a backslash, a drive or a NUL, when a member is a symlink or encrypted,
  when there are more members than allowed, or when a wanted member is bigger than
  allowed (checked on the declared size and again while inflating, since the declared
  size can lie). Only the known tokenizer files are read, at the zip's root or under
  one top-level folder; the same file twice is refused.
- **Views are SMG's JSON shapes** for ``/v1/tokenizers``: add → ``{id, status, message}``,
  list → ``{tokenizers: [{id, name, source, vocab_size}]}``, get →
  ``{id, name, source, vocab_size}``, status → ``{id, status, message[, vocab_size]}``
  with status ∈ pending/processing/completed/failed, remove → ``{success, message}``.
- **Readiness** names every required model that lacks a loaded tokenizer, with the
  reason (none registered, still loading, or the load error).
"""
from __future__ import annotations

import hashlib
import hmac
import io
import posixpath
import stat
import uuid
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from smg.text.tokenizer import (
    GENERATION_CONFIG_JSON,
    TOKENIZER_CONFIG_JSON,
    TOKENIZER_JSON,
    Tokenizer,
    TokenizerError,
    load_tokenizer,
)

__all__ = [
    "PENDING",
    "PROCESSING",
    "COMPLETED",
    "FAILED",
    "TokenizerArchiveError",
    "TokenizerEntry",
    "TokenizerRegistry",
    "ZipLimits",
    "read_tokenizer_zip",
]

PENDING = "pending"
PROCESSING = "processing"
COMPLETED = "completed"
FAILED = "failed"

# Files a tokenizer zip may carry that are read (the rest are ignored).
WANTED_FILES = frozenset(
    {
        TOKENIZER_JSON,
        TOKENIZER_CONFIG_JSON,
        GENERATION_CONFIG_JSON,
        "special_tokens_map.json",
        "chat_template.jinja",
        "chat_template.json",
    }
)


class TokenizerArchiveError(TokenizerError):
    """A worker's tokenizer zip was refused (digest, names, sizes or format)."""


@dataclass(frozen=True)
class ZipLimits:
    """Bounds on a tokenizer zip. Large vocabularies' ``tokenizer.json`` run to tens
    of MB, so the member bound is generous; the archive bound caps memory."""

    max_archive_bytes: int = 256 * 1024 * 1024
    max_member_bytes: int = 128 * 1024 * 1024
    max_members: int = 256


def _unsafe_name(name: str) -> bool:
    if not name or "\x00" in name or "\\" in name or name.startswith("/"):
        return True
    if len(name) >= 2 and name[1] == ":":
        return True  # a Windows drive
    return any(part == ".." for part in name.split("/"))


def read_tokenizer_zip(data: bytes, sha256: str, limits: ZipLimits = ZipLimits()) -> dict[str, bytes]:
    """Check a ``GetTokenizer`` zip and return its tokenizer files by base name.

    Raises:
        TokenizerArchiveError: the zip is refused (see the module's rules).
    """
    if len(data) > limits.max_archive_bytes:
        raise TokenizerArchiveError(f"archive is {len(data)} bytes, over {limits.max_archive_bytes}")
    digest = hashlib.sha256(data).hexdigest()
    if not hmac.compare_digest(digest, (sha256 or "").strip().lower()):
        raise TokenizerArchiveError("sha256 mismatch")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError) as exc:
        raise TokenizerArchiveError(f"not a zip archive ({exc})") from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_members:
            raise TokenizerArchiveError(f"{len(infos)} members, over {limits.max_members}")
        wanted: dict[str, zipfile.ZipInfo] = {}
        tops: set[str] = set()
        for info in infos:
            name = info.filename
            if _unsafe_name(name):
                raise TokenizerArchiveError(f"unsafe member name {name!r}")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise TokenizerArchiveError(f"member {name!r} is a symlink")
            if info.is_dir():
                continue
            parts = name.split("/")
            base = parts[-1]
            if base not in WANTED_FILES or len(parts) > 2:
                continue
            if info.flag_bits & 0x1:
                raise TokenizerArchiveError(f"member {name!r} is encrypted")
            if base in wanted:
                raise TokenizerArchiveError(f"{base} appears twice")
            if info.file_size > limits.max_member_bytes:
                raise TokenizerArchiveError(
                    f"member {name!r} is {info.file_size} bytes, over {limits.max_member_bytes}"
                )
            wanted[base] = info
            tops.add(posixpath.dirname(name))
        if len(tops) > 1:
            raise TokenizerArchiveError("tokenizer files are spread over several folders")
        if TOKENIZER_JSON not in wanted:
            raise TokenizerArchiveError(f"no {TOKENIZER_JSON} in the archive")
        out: dict[str, bytes] = {}
        for base, info in wanted.items():
            out[base] = _read_bounded(zf, info, limits.max_member_bytes)
        return out


def _read_bounded(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    try:
        with zf.open(info) as fh:
            while True:
                chunk = fh.read(1 << 20)
                if not chunk:
                    break
                total += len(chunk)
                if total > limit:
                    raise TokenizerArchiveError(f"member {info.filename!r} inflates past {limit} bytes")
                chunks.append(chunk)
    except TokenizerArchiveError:
        raise
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError, OSError) as exc:
        raise TokenizerArchiveError(f"member {info.filename!r} cannot be read ({exc})") from exc
    return b"".join(chunks)


@dataclass
class TokenizerEntry:
    """One model's tokenizer record."""

    id: str
    name: str
    source: str
    status: str = PENDING
    message: str = ""
    tokenizer: Tokenizer | None = None
    chat_template_path: str | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    """Other files that came with it (``chat_template.jinja`` ...), by base name."""
    chat_template: Any = None
    """Its compiled chat template (smg.text.chat_template.ChatTemplate), when known."""
    cache: Any = None
    """Its L0/L1 cache (smg.text.tokenizer.TokenizerCache), when one is configured."""

    @property
    def vocab_size(self) -> int | None:
        return self.tokenizer.vocab_size if self.tokenizer is not None else None


class TokenizerRegistry:
    """Tokenizers by model name (an entry is also found by its id).

    Args:
        id_factory: makes entry ids (SMG uses UUIDs).
        zip_limits: bounds applied to workers' zips.
    """

    def __init__(
        self,
        *,
        id_factory: Callable[[], str] = lambda: str(uuid.uuid4()),
        zip_limits: ZipLimits = ZipLimits(),
    ) -> None:
        self._by_name: dict[str, TokenizerEntry] = {}
        self._id_factory = id_factory
        self.zip_limits = zip_limits

    # -- registration ---------------------------------------------------------------

    def _entry_for(self, name: str, source: str) -> TokenizerEntry:
        if not name:
            raise ValueError("a tokenizer needs a name")
        old = self._by_name.get(name)
        entry = TokenizerEntry(id=old.id if old else self._id_factory(), name=name, source=source)
        self._by_name[name] = entry
        return entry

    def begin(self, name: str, source: str, chat_template_path: str | None = None) -> TokenizerEntry:
        """Record a registration that a background loader will finish (``pending``)."""
        entry = self._entry_for(name, source)
        entry.chat_template_path = chat_template_path
        entry.message = f"Tokenizer '{name}' registration job submitted. Loading from: {source}"
        return entry

    def mark_processing(self, name: str) -> None:
        """A background load of ``name`` (recorded by ``begin``) has started."""
        entry = self._by_name[name]
        entry.status = PROCESSING
        entry.message = f"Tokenizer '{name}' is loading"

    def mark_failed(self, name: str, message: str) -> None:
        """Loading ``name`` failed; readiness reports ``message``."""
        entry = self._by_name.get(name) or self._entry_for(name, "")
        entry.status = FAILED
        entry.tokenizer = None
        entry.message = f"Tokenizer '{name}' failed to load: {message}"

    def _complete(self, entry: TokenizerEntry, tokenizer: Tokenizer) -> TokenizerEntry:
        entry.tokenizer = tokenizer
        entry.status = COMPLETED
        entry.message = f"Tokenizer '{entry.name}' is loaded and ready"
        return entry

    def _attempt(self, name: str, source: str, load: Callable[[], Tokenizer]) -> TokenizerEntry:
        old = self._by_name.get(name)
        keep = old.chat_template_path if old else None
        entry = self._entry_for(name, source)
        entry.chat_template_path = keep
        try:
            tokenizer = load()
        except TokenizerError as exc:
            self.mark_failed(name, str(exc))
            raise
        return self._complete(entry, tokenizer)

    def register(self, name: str, tokenizer: Tokenizer, source: str = "") -> TokenizerEntry:
        """Register an already built tokenizer."""
        return self._attempt(name, source or tokenizer.source, lambda: tokenizer)

    def register_path(
        self, name: str, path: str, chat_template_path: str | None = None
    ) -> TokenizerEntry:
        """Load from an HF directory or a ``tokenizer.json`` (``TokenizerError`` on
        failure; the entry is then ``failed``)."""
        entry = self._attempt(name, path, lambda: load_tokenizer(path))
        entry.chat_template_path = chat_template_path
        return entry

    def register_files(
        self,
        name: str,
        tokenizer_json: bytes,
        config_json: bytes | None = None,
        generation_config_json: bytes | None = None,
        *,
        source: str = "",
        files: Mapping[str, bytes] | None = None,
    ) -> TokenizerEntry:
        """Build from the files' bytes."""
        entry = self._attempt(
            name,
            source,
            lambda: Tokenizer.from_bytes(tokenizer_json, config_json, generation_config_json, source=source),
        )
        entry.files = dict(files or {})
        return entry

    def from_zip(self, name: str, data: bytes, sha256: str, *, source: str = "worker") -> TokenizerEntry:
        """Register from a worker's ``GetTokenizer`` zip, after ``read_tokenizer_zip``'s
        checks (``TokenizerArchiveError`` on refusal; the entry is then ``failed``)."""
        try:
            files = read_tokenizer_zip(data, sha256, self.zip_limits)
        except TokenizerArchiveError as exc:
            self.mark_failed(name, str(exc))
            raise
        extra = {k: v for k, v in files.items() if k not in (TOKENIZER_JSON, TOKENIZER_CONFIG_JSON, GENERATION_CONFIG_JSON)}
        return self.register_files(
            name,
            files[TOKENIZER_JSON],
            files.get(TOKENIZER_CONFIG_JSON),
            files.get(GENERATION_CONFIG_JSON),
            source=source,
            files=extra,
        )

    # -- lookup -----------------------------------------------------------------------

    def get(self, name: str) -> Tokenizer | None:
        """The model's loaded tokenizer, or ``None``."""
        entry = self._by_name.get(name)
        return entry.tokenizer if entry is not None and entry.status == COMPLETED else None

    def entry(self, key: str) -> TokenizerEntry | None:
        """The entry named ``key``, else the one whose id is ``key``."""
        entry = self._by_name.get(key)
        if entry is not None:
            return entry
        for e in self._by_name.values():
            if e.id == key:
                return e
        return None

    def remove(self, key: str) -> bool:
        entry = self.entry(key)
        if entry is None:
            return False
        del self._by_name[entry.name]
        return True

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self._by_name)

    # -- readiness ----------------------------------------------------------------------

    def readiness(self, models: Iterable[str]) -> dict[str, str]:
        """Each of ``models`` that lacks a loaded tokenizer -> why (empty when ready)."""
        missing: dict[str, str] = {}
        for model in models:
            entry = self._by_name.get(model)
            if entry is None:
                missing[model] = "no tokenizer registered"
            elif entry.status in (PENDING, PROCESSING):
                missing[model] = f"tokenizer {entry.status}"
            elif entry.status == FAILED:
                missing[model] = entry.message or "tokenizer failed to load"
        return missing

    # -- SMG's /v1/tokenizers shapes ------------------------------------------------------

    @staticmethod
    def add_view(entry: TokenizerEntry) -> dict[str, Any]:
        return {"id": entry.id, "status": entry.status, "message": entry.message}

    @staticmethod
    def info_view(entry: TokenizerEntry) -> dict[str, Any]:
        return {
            "id": entry.id,
            "name": entry.name,
            "source": entry.source,
            "vocab_size": entry.vocab_size,
        }

    def list_view(self) -> dict[str, Any]:
        """Loaded tokenizers (``GET /v1/tokenizers``)."""
        return {
            "tokenizers": [
                self.info_view(e)
                for _, e in sorted(self._by_name.items())
                if e.status == COMPLETED
            ]
        }

    @staticmethod
    def status_view(entry: TokenizerEntry) -> dict[str, Any]:
        out: dict[str, Any] = {"id": entry.id, "status": entry.status, "message": entry.message}
        if entry.vocab_size is not None:
            out["vocab_size"] = entry.vocab_size
        return out

    def remove_view(self, key: str) -> dict[str, Any]:
        """Remove and answer as ``DELETE /v1/tokenizers/{id}`` does."""
        entry = self.entry(key)
        if entry is None or not self.remove(key):
            return {"success": False, "message": f"Tokenizer '{key}' not found"}
        return {"success": True, "message": f"Tokenizer '{entry.name}' removed successfully"}
