"""Registering a gRPC worker: the gRPC branch of SMG's registration workflow (smg.md §4
and §6), its channels, its health probe and its load fetch.

Theory of operation: ``WorkerManager._register`` hands a ``grpc://`` (``grpcs://``)
worker to ``GrpcWorkers``. ``identify`` finds its runtime by asking ``HealthCheck`` of
each engine service in turn — the spec's ``runtime_type`` first, then SGLang's, then
vLLM's (a service the engine does not serve answers ``UNIMPLEMENTED``; SMG's order) —
and reads ``GetModelInfo`` and ``GetServerInfo``. ``describe`` turns those answers
into the worker's model card and labels: the model id is the engine's
``served_model_name``, else its ``model_path``. ``ensure_tokenizers`` then makes sure
the gateway's ``TokenizerRegistry`` has a loaded tokenizer for every model the worker
serves: when one is missing, ``GetTokenizer``'s zip (its sha256 checked by the channel,
its members by ``read_tokenizer_zip``) is turned, off the loop, into the tokenizer and
its chat template (``--chat-template`` when given, else the zip's
``chat_template.jinja``/``chat_template.json``/``tokenizer_config.json`` one, as
``load_template`` searches a folder) and registered under the model id (its other
files kept in ``entry.files``). The manager puts the worker under the health checker
only after that, so a gRPC worker is never READY without its model's tokenizer.

Rules:
- One ``EngineChannel`` per base address: a server's DP ranks share it; it is closed
  when its last worker is released (``release``) and every one at ``close_all``.
- Nothing here raises for an engine's answer: ``identify`` returns ``Found`` or
  ``Waiting`` (``permanent`` when retrying cannot help), ``ensure_tokenizers`` a reason
  or None; the manager logs, shows the reason as the worker's job message and retries
  with backoff.
- A model's tokenizer is fetched once at a time (a lock per model): concurrent
  registrations of one model's workers wait for the first fetch and reuse it.
- Timeouts come from the settings: unary calls and health probes
  ``worker_probe_timeout_secs`` (a probe: the worker's health timeout), the tokenizer
  stream the channel's own bound.
- ``grpcs://`` channels trust ``--ca-cert-paths`` (PEM files) when given, else gRPC's
  default roots, and present ``--client-cert-path``/``--client-key-path`` when given.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import grpc

from smg.engine_grpc.client import RUNTIMES, EngineChannel
from smg.errors import UpstreamError
from smg.text.chat_template import TemplateError, load_template, template_from_files
from smg.text.registry import ZipLimits, read_tokenizer_zip
from smg.text.tokenizer import GENERATION_CONFIG_JSON, TOKENIZER_CONFIG_JSON, TOKENIZER_JSON, Tokenizer, TokenizerError
from smg.workers import server_info
from smg.workers.loads import parse_grpc_loads
from smg.workers.worker import Worker

log = logging.getLogger("smg.workers")

# GetModelInfo / GetServerInfo keys that become the worker's labels (as the HTTP path's
# smg.workers.server_info.LABEL_KEYS), plus vLLM's name for its DP size.
_DP_SIZE_KEYS = ("dp_size", "data_parallel_size")


@dataclass
class Found:
    """An engine that answered: its channel (open), runtime and self-description."""

    channel: EngineChannel
    runtime: str
    model_info: dict
    server_info: dict
    shared: bool = False  # the channel was already the base address's


@dataclass
class Waiting:
    """Why the engine cannot be registered (yet)."""

    reason: str
    permanent: bool = False


@dataclass
class _Shared:
    channel: EngineChannel
    users: int = 0


def target_of(w: Worker) -> str:
    """``host:port`` of the worker's base address (IPv6 literals bracketed)."""
    host = f"[{w.host}]" if ":" in w.host else w.host
    return f"{host}:{w.port}"


def credentials_for(url: str, config) -> grpc.ChannelCredentials | None:
    """TLS credentials for a ``grpcs://`` worker (module rules); None for ``grpc://``."""
    if not url.lower().startswith("grpcs://"):
        return None

    def read(path: str) -> bytes | None:
        if not path:
            return None
        with open(path, "rb") as f:
            return f.read()

    roots = b"".join(read(p) or b"" for p in config.ca_cert_paths) or None
    return grpc.ssl_channel_credentials(roots, read(config.client_key_path), read(config.client_cert_path))


def _server_fields(server: dict) -> dict:
    """``GetServerInfo``'s fields with SGLang's ``server_args`` Struct folded in (the
    answer's own fields win)."""
    args = server.get("server_args")
    return {**args, **server} if isinstance(args, dict) else server


def dp_size(server: dict) -> int | None:
    """The engine's data-parallel size from its ``GetServerInfo`` answer (SGLang's
    ``dp_size``, in ``server_args``; vLLM's ``data_parallel_size``), None when it names
    none."""
    server = _server_fields(server)
    for k in _DP_SIZE_KEYS:
        size = _positive(server.get(k))
        if size is not None:
            return size
    return None


def describe(runtime: str, model_info: dict, server: dict) -> tuple[str | None, dict, server_info.Description]:
    """(model id, model card, description) from the engine's answers; the id is None
    when the engine names no model."""
    model_id = model_info.get("served_model_name") or model_info.get("model_path") or None
    card: dict = {"id": model_id, "object": "model", "owned_by": runtime}
    model_path = model_info.get("model_path")
    if model_path:
        card["root"] = model_path
    ctx = _positive(model_info.get("max_context_length"))
    if ctx is not None:
        card["max_model_len"] = ctx
    tokenizer_path = model_info.get("tokenizer_path") or None
    if tokenizer_path:
        card["tokenizer_path"] = tokenizer_path
    if model_info.get("architectures"):
        card["architectures"] = list(model_info["architectures"])
    if model_info.get("model_type"):
        card["hf_model_type"] = model_info["model_type"]
    fields = _server_fields(server)
    raw = {k: fields[k] for k in server_info.LABEL_KEYS if k in fields}
    raw.update({k: model_info[k] for k in server_info.LABEL_KEYS if k in model_info})
    size = dp_size(server)
    if size is not None:
        raw["dp_size"] = size
    if "sglang_version" in server:
        raw["version"] = server["sglang_version"]
    labels = {}
    for k, v in raw.items():
        if isinstance(v, bool):
            labels[k] = "true" if v else "false"
        elif isinstance(v, float) and v.is_integer():   # a Struct's 2.0 is the label "2"
            labels[k] = str(int(v))
        elif isinstance(v, (int, float, str)) and v != "":
            labels[k] = str(v)
    return model_id, card, server_info.Description(labels, ctx, tokenizer_path)


def _positive(v) -> int | None:
    if isinstance(v, str) and v.isdigit():  # 64-bit proto ints arrive as strings
        v = int(v)
    elif isinstance(v, float) and v.is_integer():  # a Struct's numbers are doubles
        v = int(v)
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def build_bundle(data: bytes, sha256: str, limits: ZipLimits, source: str,
                 chat_template_path: str | None = None) -> tuple:
    """Blocking (run it off the loop): (tokenizer, other files, chat template or None)
    from a ``GetTokenizer`` zip.

    Raises:
        TokenizerError: the zip is refused or its tokenizer does not load.
        TemplateError, OSError: ``chat_template_path`` does not load.
    """
    files = read_tokenizer_zip(data, sha256, limits)
    tokenizer = Tokenizer.from_bytes(files[TOKENIZER_JSON], files.get(TOKENIZER_CONFIG_JSON),
                                     files.get(GENERATION_CONFIG_JSON), source=source)
    if chat_template_path:
        template = load_template(chat_template_path)
    else:
        try:
            template = template_from_files(files, origin=source)
        except TemplateError as e:
            log.info("%s: no usable chat template in the tokenizer bundle: %s", source, e)
            template = None  # a model without one (an embedding model, say)
    extra = {k: v for k, v in files.items() if k not in (TOKENIZER_JSON, TOKENIZER_CONFIG_JSON, GENERATION_CONFIG_JSON)}
    return tokenizer, extra, template


@dataclass
class GrpcWorkers:
    """The gRPC workers' channels and registration steps, for one ``WorkerManager``."""

    config: object
    tokenizers: object = None  # smg.text.registry.TokenizerRegistry; None: no tokenizer step
    _channels: dict = field(default_factory=dict)   # base url -> _Shared
    _locks: dict = field(default_factory=dict)      # model id -> asyncio.Lock
    _closing: set = field(default_factory=set)

    # -- identity ---------------------------------------------------------------------

    async def identify(self, w: Worker, hint: str | None) -> Found | Waiting:
        """Asks the engine at ``w.base_url`` who it is (module theory of operation)."""
        timeout = self.config.worker_probe_timeout_secs
        shared = self._channels.get(w.base_url)
        if shared is not None:  # another rank of this server already found it
            return await self._ask(shared.channel, timeout, shared=True)
        order = ([hint] if hint in RUNTIMES else []) + [r for r in RUNTIMES if r != hint]
        try:
            creds = credentials_for(w.base_url, self.config)
        except OSError as e:
            return Waiting(f"cannot read the TLS files for {w.base_url}: {e}", permanent=True)
        unimplemented = []
        for runtime in order:
            channel = EngineChannel(target_of(w), runtime, timeout=timeout, credentials=creds)
            try:
                health = await channel.health()
            except UpstreamError as e:
                await channel.close(None)
                if getattr(e, "grpc_code", None) == "UNIMPLEMENTED":
                    unimplemented.append(runtime)
                    continue
                return Waiting(f"{runtime} HealthCheck: {e}")
            if not health.healthy:
                await channel.close(None)
                return Waiting(f"{runtime} engine answers HealthCheck not healthy: {health.message}")
            return await self._ask(channel, timeout, health_known=True)
        return Waiting(f"the server at {w.base_url} serves none of the engine services "
                       f"({', '.join(unimplemented)}): not an SGLang or vLLM gRPC engine", permanent=True)

    async def _ask(self, channel: EngineChannel, timeout: float, shared: bool = False,
                   health_known: bool = False) -> Found | Waiting:
        try:
            if not health_known:
                health = await channel.health(timeout)
                if not health.healthy:
                    return Waiting(f"{channel.runtime} engine answers HealthCheck not healthy: {health.message}")
            info = await channel.model_info()
            server = await channel.server_info()
        except UpstreamError as e:
            if not shared:
                await channel.close(None)
            return Waiting(f"{channel.runtime} GetModelInfo/GetServerInfo: {e}")
        return Found(channel, channel.runtime, info, server, shared)

    def attach(self, w: Worker, found: Found) -> None:
        """``w`` uses ``found``'s channel (shared per base address) and runtime."""
        entry = self._channels.get(w.base_url)
        if entry is None or entry.channel is not found.channel:
            if entry is not None:  # a rank found its own meanwhile: keep the first
                self._spawn_close(found.channel)
            else:
                entry = self._channels[w.base_url] = _Shared(found.channel)
        entry.users += 1
        w.channel = entry.channel
        w.runtime = entry.channel.runtime

    async def discard(self, found: Found) -> None:
        """Closes a found channel that was never attached (its worker went away)."""
        if not found.shared:
            await found.channel.close(None)

    # -- the tokenizer ----------------------------------------------------------------

    async def ensure_tokenizers(self, w: Worker) -> str | None:
        """Makes sure each model ``w`` serves has a loaded tokenizer, fetching it from the
        engine when not. Returns None when they all do, else why not."""
        reg = self.tokenizers
        if reg is None:
            return None
        missing = [m for m in w.models if reg.get(m) is None]
        if not missing:
            return None
        lock = self._locks.setdefault(missing[0], asyncio.Lock())
        async with lock:
            missing = [m for m in w.models if reg.get(m) is None]  # another worker's fetch may have done it
            if not missing:
                return None
            return await self._fetch(w, missing)

    async def _fetch(self, w: Worker, models: list) -> str | None:
        reg = self.tokenizers
        source = f"{w.base_url} (GetTokenizer)"
        for m in models:
            reg.begin(m, source)
            reg.mark_processing(m)
        try:
            data, sha = await w.channel.tokenizer_bundle()
            loop = asyncio.get_running_loop()
            tokenizer, files, template = await loop.run_in_executor(
                None, build_bundle, data, sha, reg.zip_limits, source, self.config.chat_template or None)
        except (UpstreamError, TokenizerError, TemplateError, OSError) as e:
            reason = f"GetTokenizer: {e}" if isinstance(e, UpstreamError) else str(e)
            for m in models:
                reg.mark_failed(m, reason)
            return f"the tokenizer of model {', '.join(models)} cannot be loaded from the worker: {reason}"
        for m in models:
            entry = reg.register(m, tokenizer, source)
            entry.files = dict(files)
            entry.chat_template = template
            entry.chat_template_path = self.config.chat_template or None
        log.info("tokenizer of model %s loaded from worker %s (vocab %d, chat template %s)", ", ".join(models),
                 w.url, tokenizer.vocab_size, "yes" if template is not None else "none")
        return None

    # -- health and loads -------------------------------------------------------------

    @staticmethod
    def health_check(w: Worker):
        """The health checker's probe for ``w``: its channel's ``HealthCheck``."""
        channel = w.channel

        async def check(worker: Worker, timeout: float) -> str | None:
            try:
                h = await channel.health(timeout)
            except Exception as e:  # noqa: BLE001 - a probe reports, never raises (a closed channel too)
                return f"HealthCheck: {e}"
            return None if h.healthy else f"HealthCheck: not healthy ({h.message})"
        return check

    @staticmethod
    def loads_fetch(w: Worker):
        """The load monitor's fetch for ``w``: ``GetLoads``, parsed."""
        channel = w.channel

        async def fetch() -> dict:
            return parse_grpc_loads(await channel.loads())
        return fetch

    # -- closing ----------------------------------------------------------------------

    def release(self, w: Worker) -> None:
        """``w`` no longer uses its channel; the last user's release closes it."""
        if w.channel is None:
            return
        entry = self._channels.get(w.base_url)
        w.channel, channel = None, w.channel
        if entry is None or entry.channel is not channel:
            self._spawn_close(channel)
            return
        entry.users -= 1
        if entry.users <= 0:
            del self._channels[w.base_url]
            self._spawn_close(channel)

    def _spawn_close(self, channel: EngineChannel) -> None:
        task = asyncio.get_running_loop().create_task(channel.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close_all(self) -> None:
        """Closes every channel (the manager is stopping)."""
        for entry in list(self._channels.values()):
            self._spawn_close(entry.channel)
        self._channels.clear()
        if self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)


__all__ = ["GrpcWorkers", "Found", "Waiting", "describe", "build_bundle", "credentials_for", "target_of"]
