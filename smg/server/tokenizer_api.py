"""The gateway-side tokenizer API (SMG §1): ``/v1/tokenize``, ``/v1/detokenize`` (data
plane) and the ``/v1/tokenizers`` registry (control plane, admin), over the registry of
smg/text/registry.py.

- ``POST /v1/tokenize`` ``{model, prompt: str | [str]}`` → ``{tokens, count,
  char_count}``; for a list each field is a list, one item per prompt. Text is encoded
  with no special tokens added (SMG's choice), through the entry's L0/L1 cache when the
  ``--tokenizer-cache-*`` flags gave it one (the start-up tokenizer; API-registered ones
  have none, as in SMG). ``char_count`` counts code points.
- ``POST /v1/detokenize`` ``{model, tokens: [int] | [[int]], skip_special_tokens=true}``
  → ``{text}`` (a list for a batch).
- The tokenizer is found by name or id; a model of ``""`` or ``"unknown"`` takes the
  first loaded one (SMG's fallback); otherwise an unknown model is SMG's 400
  ``tokenizer_not_found``, whose message lists what is loaded.
- ``POST /v1/tokenizers`` ``{name, source, chat_template_path?}`` → 202 ``{id, status:
  "pending", message}``; the load runs off the event loop (``run_in_executor``) and its
  progress is ``GET /v1/tokenizers/{id}/status`` (pending/processing/completed/failed).
  A name already loaded or loading is a 409 ``{id, status: "failed", message}``. Only
  local paths load: a source that is not one fails with a message saying so (no hub
  downloads).
- ``GET /v1/tokenizers`` lists loaded tokenizers; ``GET``/``DELETE
  /v1/tokenizers/{id}`` answer only loaded ones (404 otherwise, as SMG: an unfinished
  load lives in its job, not the registry).
- Bodies are decoded as SMG's axum ``Json`` extractor does (plain text: 415 for a
  non-JSON content type, 400 for bad JSON, 422 naming the field); the handlers'
  own refusals use the OpenAI error envelope with SMG's ``type`` strings as codes.
"""
from __future__ import annotations

import asyncio
import logging
import os
from urllib.parse import unquote

import orjson

from smg.api.validate import Validator
from smg.api.validate._core import (INVALID_TYPE, Bad, Shape, opt_string, string, string_or_strings, wrong)
from smg.errors import ConfigError
from smg.server.filters import STOP
from smg.server.handlers import parse_body
from smg.text.chat_template import TemplateError, load_template
from smg.text.registry import COMPLETED, FAILED, PENDING, PROCESSING, TokenizerRegistry
from smg.text.tokenizer import TokenizerCache, TokenizerError, load_tokenizer

log = logging.getLogger("smg.tokenizers")

UNKNOWN_MODEL_ID = "unknown"
_U32_MAX = 4294967295


def _u32_list(v) -> bool:
    return type(v) is list and all(type(x) is int and 0 <= x <= _U32_MAX for x in v)


def _tokens_input(v) -> None:
    """SMG's ``TokensInput``: a list of u32, or a list of lists of u32."""
    if _u32_list(v) or (type(v) is list and all(_u32_list(x) for x in v)):
        return
    raise Bad(INVALID_TYPE, "data did not match any variant of untagged enum TokensInput")


def _bool(v) -> None:
    """A bool with a serde default: may be left out, not null."""
    if type(v) is not bool:
        raise wrong(v, "a boolean")


TOKENIZE = Validator(Shape({"model": string, "prompt": string_or_strings}, ("model", "prompt"), plain=True),
                     "TokenizeRequest", plain=True)
DETOKENIZE = Validator(Shape({"model": string, "tokens": _tokens_input, "skip_special_tokens": _bool},
                             ("model", "tokens"), plain=True), "DetokenizeRequest", plain=True)
ADD_TOKENIZER = Validator(Shape({"name": string, "source": string, "chat_template_path": opt_string},
                                ("name", "source"), plain=True), "AddTokenizerRequest", plain=True)


def _body(conn, ctx):
    """The validated body, or None when the refusal was sent."""
    verdict = parse_body(conn, ctx)
    if verdict is None:
        return ctx.body
    if verdict is not STOP:
        conn.reply_error(verdict.status, verdict.message, code=verdict.code)
    return None


def cache_for(tokenizer, config) -> TokenizerCache | None:
    """The L0/L1 cache the ``--tokenizer-cache-*`` settings ask for (None: both off)."""
    l0, l1 = config.tokenizer_cache_enable_l0, config.tokenizer_cache_enable_l1
    if not (l0 or l1):
        return None
    return TokenizerCache(tokenizer,
                          l0_max_bytes=config.tokenizer_cache_l0_max_memory if l0 else 0,
                          l1_max_bytes=config.tokenizer_cache_l1_max_memory if l1 else 0,
                          l0_max_entries=config.tokenizer_cache_l0_max_entries)


def _load(source: str, chat_template_path: str | None):
    """Blocking: the tokenizer and its chat template (``--chat-template`` / the
    request's ``chat_template_path`` first, else the source folder's own, else none).
    Raises TokenizerError / TemplateError / OSError."""
    if not os.path.exists(source):
        raise TokenizerError(f"{source}: not a local path (smg loads tokenizers from local "
                             "files only; it does not download from the Hugging Face Hub)")
    tokenizer = load_tokenizer(source)
    if chat_template_path:
        template = load_template(chat_template_path)
    else:
        folder = source if os.path.isdir(source) else os.path.dirname(source) or "."
        try:
            template = load_template(folder)
        except TemplateError:
            template = None  # a tokenizer without a chat template (an embedding model, say)
    return tokenizer, template


def _install(registry: TokenizerRegistry, name: str, source: str, chat_template_path, loaded, cache_config):
    tokenizer, template = loaded
    entry = registry.register(name, tokenizer, source)
    entry.chat_template_path = chat_template_path
    entry.chat_template = template
    entry.cache = cache_for(tokenizer, cache_config) if cache_config is not None else None
    return entry


def load_startup(config, registry: TokenizerRegistry):
    """Blocking (run it off the loop): the tokenizer of ``--tokenizer-path`` (else
    ``--model-path``), registered under that name as SMG does, with ``--chat-template``
    and the cache settings. None when neither is set or ``--disable-tokenizer-autoload``.

    Raises:
        ConfigError: the path is not local, or the tokenizer or template does not load.
    """
    source = config.tokenizer_path or config.model_path
    if not source or config.disable_tokenizer_autoload:
        return None
    flag = "--tokenizer-path" if config.tokenizer_path else "--model-path"
    if not os.path.exists(source):
        raise ConfigError(flag, f"{source!r} is not a local file or directory; smg loads tokenizers from "
                                "local paths only (no Hugging Face Hub downloads)")
    try:
        loaded = _load(source, config.chat_template)
    except (TokenizerError, OSError) as e:
        raise ConfigError(flag, f"cannot load the tokenizer: {e}") from None
    except TemplateError as e:
        raise ConfigError("--chat-template", f"cannot load the chat template: {e}") from None
    return _install(registry, source, source, config.chat_template, loaded, config)


class TokenizerAPI:
    """Handlers of the tokenizer rows of the endpoint table (smg/server/endpoints.py)."""

    def __init__(self, registry: TokenizerRegistry) -> None:
        self.registry = registry
        self._jobs: set = set()

    # -- lookup ------------------------------------------------------------------------

    def _loaded(self):
        reg = self.registry
        return [e for e in (reg.entry(n) for n in reg.names()) if e is not None and e.status == COMPLETED]

    def _find(self, conn, ctx, model: str):
        entry = self.registry.entry(model)
        if entry is not None and entry.status == COMPLETED:
            return entry
        loaded = self._loaded()
        if (model == UNKNOWN_MODEL_ID or not model) and loaded:
            return loaded[0]
        if not loaded:
            msg = "No tokenizers available. Use POST /v1/tokenizers to add one."
        else:
            msg = f"Tokenizer for model '{model}' not found. Available: {', '.join(e.name for e in loaded)}"
        conn.reply_error(400, msg, code="tokenizer_not_found")
        return None

    # -- data plane --------------------------------------------------------------------

    def tokenize(self, conn, ctx) -> None:
        obj = _body(conn, ctx)
        if obj is None:
            return
        entry = self._find(conn, ctx, obj["model"])
        if entry is None:
            return
        prompt = obj["prompt"]
        texts = prompt if type(prompt) is list else [prompt]
        encode = entry.cache.encode if entry.cache is not None else entry.tokenizer.encode
        try:
            tokens = [encode(t, False) for t in texts]
        except Exception as e:  # the Rust side of tokenizers raises bare exceptions
            conn.reply_error(500, f"Tokenization failed: {e}", code="tokenization_error")
            return
        counts = [len(t) for t in tokens]
        chars = [len(t) for t in texts]
        if type(prompt) is list:
            doc = {"tokens": tokens, "count": counts, "char_count": chars}
        else:
            doc = {"tokens": tokens[0], "count": counts[0], "char_count": chars[0]}
        conn.reply(200, orjson.dumps(doc))

    def detokenize(self, conn, ctx) -> None:
        obj = _body(conn, ctx)
        if obj is None:
            return
        entry = self._find(conn, ctx, obj["model"])
        if entry is None:
            return
        tokens = obj["tokens"]
        batch = bool(tokens) and type(tokens[0]) is list
        skip = obj.get("skip_special_tokens", True)
        try:
            texts = [entry.tokenizer.decode(seq, skip) for seq in (tokens if batch else [tokens])]
        except Exception as e:
            conn.reply_error(500, f"Detokenization failed: {e}", code="detokenization_error")
            return
        conn.reply(200, orjson.dumps({"text": texts if batch else texts[0]}))

    # -- control plane -------------------------------------------------------------------

    def add(self, conn, ctx) -> None:
        obj = _body(conn, ctx)
        if obj is None:
            return
        name, source, template = obj["name"], obj["source"], obj.get("chat_template_path")
        reg = self.registry
        old = reg.entry(name) if name in reg else None
        if old is not None and old.status in (COMPLETED, PENDING, PROCESSING):
            ctx.error_code = "tokenizer_exists"
            conn.reply(409, orjson.dumps({"id": old.id, "status": FAILED,
                                          "message": f"Tokenizer '{name}' already exists"}))
            return
        if old is not None:
            reg.remove(name)  # a failed load: a new registration gets a new id (as SMG's new job)
        try:
            entry = reg.begin(name, source, template)
        except ValueError as e:
            conn.reply_error(400, str(e), code="invalid_value", param="name")
            return
        conn.reply(202, orjson.dumps(reg.add_view(entry)))
        task = asyncio.get_running_loop().create_task(self._load_job(entry.id, name, source, template))
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def _load_job(self, entry_id: str, name: str, source: str, template) -> None:
        reg = self.registry
        current = reg.entry(name)
        if current is None or current.id != entry_id:
            return
        reg.mark_processing(name)
        try:
            loaded = await asyncio.get_running_loop().run_in_executor(None, _load, source, template)
        except (TokenizerError, TemplateError, OSError, ValueError) as e:
            current = reg.entry(name)
            if current is not None and current.id == entry_id:
                reg.mark_failed(name, str(e))
            log.warning("tokenizer %r failed to load from %s: %s", name, source, e)
            return
        current = reg.entry(name)
        if current is None or current.id != entry_id:
            return  # removed or replaced meanwhile
        _install(reg, name, source, template, loaded, None)  # API loads are not cached (SMG)
        log.info("tokenizer %r loaded from %s", name, source)

    def list(self, conn, ctx) -> None:
        conn.reply(200, orjson.dumps(self.registry.list_view()))

    def _key(self, ctx) -> str:
        return unquote(ctx.path[len(b"/v1/tokenizers/"):].decode("latin-1"))

    def get(self, conn, ctx) -> None:
        key = self._key(ctx)
        if key.endswith("/status"):
            self._status(conn, ctx, key[:-len("/status")])
            return
        entry = self.registry.entry(key)
        if entry is None or entry.status != COMPLETED:
            conn.reply_error(404, f"Tokenizer '{key}' not found", code="tokenizer_not_found")
            return
        conn.reply(200, orjson.dumps(self.registry.info_view(entry)))

    def _status(self, conn, ctx, key: str) -> None:
        entry = self.registry.entry(key)
        if entry is None:
            conn.reply_error(404, f"Tokenizer '{key}' not found and no pending job", code="not_found")
            return
        conn.reply(200, orjson.dumps(self.registry.status_view(entry)))

    def delete(self, conn, ctx) -> None:
        key = self._key(ctx)
        entry = self.registry.entry(key)
        if entry is None or entry.status != COMPLETED:
            ctx.error_code = "tokenizer_not_found"
            conn.reply(404, orjson.dumps({"success": False, "message": f"Tokenizer '{key}' not found"}))
            return
        conn.reply(200, orjson.dumps(self.registry.remove_view(entry.id)))
