"""A fast, deterministic fake inference engine over gRPC: the SGLang ``SglangScheduler``
and vLLM ``VllmEngine`` services (from ``smg-grpc-proto``) with no model behind them.

Rules:
- Each ``Generate`` plays a script (``EngineConfig``, mutable between requests): the
  tokens to emit (``tokens``; ``None`` echoes the prompt's ids), ``token_delay`` seconds
  before each one, ``finish_reason``, ``cached_tokens``. A request's max tokens cut the
  script short and finish it with "length". ``n`` > 1 plays the script once per index.
- Streamed requests get one chunk per token (cumulative counts, incremental ids) and
  then the complete message (``output_ids`` = every id of its choice), as the real
  servicers send; non-streamed ones get the complete message only.
- Logprobs, when asked (SGLang ``return_logprob``, vLLM ``logprobs``): the token at
  position p has logprob ``-(p + 1) / 10``; its k top alternatives are ids
  ``t, t+1, ...`` with logprobs ``-(p + 1) / 10 - j / 100``.
- Failures: ``error`` = (status code, message) aborts the call after ``error_after``
  tokens (0: before the first message); ``stall_after`` = N emits N tokens then waits
  until the call is cancelled or its request id is aborted (then it emits nothing more);
  ``unary_errors`` maps an RPC name ("HealthCheck", "GetLoads", ...) to a status.
- ``stats`` counts Generate requests (the last one kept as received), tokens emitted,
  ``Abort`` requests (and their ids), calls cancelled by the client, Embed and
  GetTokenizer calls.
- ``GetTokenizer`` streams a zip of ``tokenizer_files`` (name → bytes; written with a
  fixed timestamp so the bytes, hence the sha256, are stable) in ``tokenizer_chunk``
  byte chunks, the sha256 hex on the last chunk (``tokenizer_sha256`` overrides it, to
  test a corrupted digest).
- ``Embed`` answers ``embedding_dim`` floats, value i = ((sum of ids + i) % 97) / 97.
- Info and load answers are the proto messages built from ``model_info``,
  ``server_info`` and ``loads`` (dicts of proto field names) over fixed defaults.
- Serves on 127.0.0.1, port 0 → the port the OS gave (``port``, ``target``).
  ``run_engine(...)`` (async context manager) for tests on the test's loop,
  ``engine_in_thread(...)`` for tests whose client runs on another loop or thread, and
  ``python -m smg.testing.grpc_engine --port P --runtime sglang [--tokenizer-dir DIR]``
  for benchmarks (``--tokenizer-dir``: the folder GetTokenizer serves; prints
  one ``listening on grpc://host:port`` line, exits 0 on SIGINT/SIGTERM).
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import os
import signal
import threading
import zipfile
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import click
import grpc
from google.protobuf.json_format import ParseDict
from smg_grpc_proto.generated import common_pb2
from smg_grpc_proto.generated import sglang_scheduler_pb2 as sglang_pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as sglang_grpc
from smg_grpc_proto.generated import vllm_engine_pb2 as vllm_pb
from smg_grpc_proto.generated import vllm_engine_pb2_grpc as vllm_grpc

RUNTIMES = ("sglang", "vllm")
ZIP_TIME = (2020, 1, 1, 0, 0, 0)

DEFAULT_MODEL_INFO: dict[str, Any] = {
    "model_path": "fake/model",
    "tokenizer_path": "fake/model",
    "served_model_name": "fake-model",
    "is_generation": True,
    "max_context_length": 4096,
    "vocab_size": 32000,
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "eos_token_ids": [2],
    "bos_token_id": 1,
    "pad_token_id": 0,
    "max_req_input_len": 4000,
}
DEFAULT_SERVER_INFO: dict[str, dict[str, Any]] = {
    "sglang": {"server_type": "grpc", "sglang_version": "0.0.0-fake", "max_total_num_tokens": 65536},
    "vllm": {"server_type": "vllm-grpc", "data_parallel_size": 1, "max_num_seqs": 256},
}
DEFAULT_LOAD: dict[str, Any] = {"dp_rank": 0, "max_total_num_tokens": 65536, "max_running_requests": 256}


@dataclass
class EngineConfig:
    """The script every request plays (module rules); change fields between requests."""

    tokens: Sequence[int] | None = None
    token_delay: float = 0.0
    finish_reason: str = "stop"
    cached_tokens: int = 0
    error: tuple[grpc.StatusCode, str] | None = None
    error_after: int = 0
    stall_after: int | None = None
    unary_errors: dict[str, tuple[grpc.StatusCode, str]] = field(default_factory=dict)
    healthy: bool = True
    health_message: str = "ok"
    model_info: Mapping[str, Any] = field(default_factory=dict)
    server_info: Mapping[str, Any] = field(default_factory=dict)
    loads: Sequence[Mapping[str, Any]] = ()
    tokenizer_files: Mapping[str, bytes] = field(
        default_factory=lambda: {"tokenizer.json": b'{"version": "1.0"}', "tokenizer_config.json": b"{}"}
    )
    tokenizer_chunk: int = 64 * 1024
    tokenizer_sha256: str | None = None
    embedding_dim: int = 8


@dataclass
class EngineStats:
    requests: int = 0
    last_request: Any = None
    tokens_emitted: int = 0
    aborts: int = 0
    aborted_ids: list[str] = field(default_factory=list)
    cancelled: int = 0
    embeds: int = 0
    embed_requests: list[Any] = field(default_factory=list)   # the last 64 EmbedRequests
    tokenizer_requests: int = 0


def tokenizer_zip(files: Mapping[str, bytes]) -> bytes:
    """The zip the engine streams for ``files`` (stable bytes: fixed timestamps, sorted)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            zf.writestr(zipfile.ZipInfo(name, date_time=ZIP_TIME), files[name])
    return buf.getvalue()


class _Script:
    """What the two servicers share: playing the script, counting, unary answers."""

    def __init__(self, runtime: str, config: EngineConfig, stats: EngineStats) -> None:
        self.runtime = runtime
        self.config = config
        self.stats = stats
        self.pb = sglang_pb if runtime == "sglang" else vllm_pb
        self._abort_events: dict[str, asyncio.Event] = {}

    async def _unary_error(self, name: str, context: grpc.aio.ServicerContext) -> None:
        err = self.config.unary_errors.get(name)
        if err is not None:
            await context.abort(err[0], err[1])

    def _limits(self, request: Any) -> tuple[int | None, int, int]:
        """(max tokens or None, n, top logprobs count or -1 when logprobs are off)."""
        sp = request.sampling_params
        if self.runtime == "sglang":
            max_tokens = sp.max_new_tokens if sp.HasField("max_new_tokens") else None
            top = request.top_logprobs_num if request.return_logprob else -1
        else:
            max_tokens = sp.max_tokens if sp.HasField("max_tokens") else None
            top = sp.logprobs if sp.HasField("logprobs") else -1
        return max_tokens, max(1, sp.n), top

    def _logprobs(self, ids: Sequence[int], start: int, top: int) -> Any:
        out = self.pb.OutputLogProbs()
        for p, t in enumerate(ids, start):
            lp = -(p + 1) / 10
            out.token_logprobs.append(lp)
            out.token_ids.append(t)
            out.top_logprobs.append(
                self.pb.TopLogProbs(values=[lp - j / 100 for j in range(top)], token_ids=[t + j for j in range(top)])
            )
        return out

    def _response(self, request_id: str, **kw: Any) -> Any:
        if self.runtime == "sglang":
            return self.pb.GenerateResponse(request_id=request_id, **kw)
        return self.pb.GenerateResponse(**kw)

    async def generate(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        cfg = self.config
        self.stats.requests += 1
        self.stats.last_request = request
        rid = request.request_id
        prompt = list(request.tokenized.input_ids)
        script = list(prompt if cfg.tokens is None else cfg.tokens)
        max_tokens, n, top = self._limits(request)
        finish = cfg.finish_reason
        if max_tokens is not None and max_tokens < len(script):
            script, finish = script[:max_tokens], "length"
        aborted = self._abort_events.setdefault(rid, asyncio.Event())
        emitted = 0
        try:
            for index in range(n):
                done: list[int] = []
                for t in script:
                    if cfg.error is not None and emitted == cfg.error_after:
                        await context.abort(cfg.error[0], cfg.error[1])
                    if cfg.stall_after is not None and emitted == cfg.stall_after:
                        await aborted.wait()
                        return
                    if aborted.is_set():
                        return
                    if cfg.token_delay:
                        await asyncio.sleep(cfg.token_delay)
                    done.append(t)
                    emitted += 1
                    self.stats.tokens_emitted += 1
                    if request.stream:
                        chunk = self.pb.GenerateStreamChunk(
                            token_ids=[t],
                            prompt_tokens=len(prompt),
                            completion_tokens=len(done),
                            cached_tokens=cfg.cached_tokens,
                            index=index,
                        )
                        if top >= 0:
                            chunk.output_logprobs.CopyFrom(self._logprobs([t], len(done) - 1, top))
                        yield self._response(rid, chunk=chunk)
                if cfg.error is not None and emitted == cfg.error_after:
                    await context.abort(cfg.error[0], cfg.error[1])
                complete = self.pb.GenerateComplete(
                    output_ids=done,
                    finish_reason=finish,
                    prompt_tokens=len(prompt),
                    completion_tokens=len(done),
                    cached_tokens=cfg.cached_tokens,
                    index=index,
                )
                if top >= 0:
                    complete.output_logprobs.CopyFrom(self._logprobs(done, 0, top))
                if finish == "stop" and done and cfg.tokens is not None:
                    complete.matched_token_id = done[-1]
                yield self._response(rid, complete=complete)
        except asyncio.CancelledError:
            self.stats.cancelled += 1
            raise
        finally:
            self._abort_events.pop(rid, None)

    def abort(self, request_ids: Sequence[str]) -> None:
        self.stats.aborts += 1
        for rid in request_ids:
            self.stats.aborted_ids.append(rid)
            event = self._abort_events.get(rid)
            if event is not None:
                event.set()

    def health(self) -> Any:
        return self.pb.HealthCheckResponse(healthy=self.config.healthy, message=self.config.health_message)

    def model_info(self) -> Any:
        fields = {f.name for f in self.pb.GetModelInfoResponse.DESCRIPTOR.fields}
        merged = {k: v for k, v in {**DEFAULT_MODEL_INFO, **self.config.model_info}.items() if k in fields}
        return ParseDict(merged, self.pb.GetModelInfoResponse())

    def server_info(self) -> Any:
        merged = {**DEFAULT_SERVER_INFO[self.runtime], **self.config.server_info}
        return ParseDict(merged, self.pb.GetServerInfoResponse())

    def loads(self, request: Any) -> Any:
        loads = [dict(x) for x in (self.config.loads or [DEFAULT_LOAD])]
        if request.HasField("dp_rank"):
            loads = [x for x in loads if x.get("dp_rank", 0) == request.dp_rank]
        resp = ParseDict(
            {"timestamp": "2020-01-01T00:00:00Z", "version": "0.0.0-fake", "dp_rank_count": len(loads), "loads": loads},
            self.pb.GetLoadsResponse(),
        )
        if self.runtime == "sglang":
            agg = resp.aggregate
            agg.total_running_reqs = sum(x.num_running_reqs for x in resp.loads)
            agg.total_waiting_reqs = sum(x.num_waiting_reqs for x in resp.loads)
            agg.total_reqs = agg.total_running_reqs + agg.total_waiting_reqs
        return resp

    def tokenizer_chunks(self) -> Iterator[Any]:
        self.stats.tokenizer_requests += 1
        data = tokenizer_zip(self.config.tokenizer_files)
        sha = self.config.tokenizer_sha256 or hashlib.sha256(data).hexdigest()
        size = max(1, self.config.tokenizer_chunk)
        pieces = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
        for i, piece in enumerate(pieces):
            yield common_pb2.GetTokenizerChunk(data=piece, sha256=sha if i == len(pieces) - 1 else "")

    def embed(self, request: Any) -> Any:
        self.stats.embeds += 1
        self.stats.embed_requests = self.stats.embed_requests[-63:] + [request]
        ids = list(request.tokenized.input_ids)
        base = sum(ids)
        dim = self.config.embedding_dim
        return self.pb.EmbedResponse(
            embedding=[((base + i) % 97) / 97 for i in range(dim)], embedding_dim=dim, prompt_tokens=len(ids)
        )


class _SglangServicer(sglang_grpc.SglangSchedulerServicer):
    def __init__(self, script: _Script) -> None:
        self.s = script

    async def Generate(self, request, context):  # noqa: N802 (gRPC method names)
        async for message in self.s.generate(request, context):
            yield message

    async def Abort(self, request, context):  # noqa: N802
        await self.s._unary_error("Abort", context)
        self.s.abort([request.request_id])
        return sglang_pb.AbortResponse(success=True)

    async def HealthCheck(self, request, context):  # noqa: N802
        await self.s._unary_error("HealthCheck", context)
        return self.s.health()

    async def GetModelInfo(self, request, context):  # noqa: N802
        await self.s._unary_error("GetModelInfo", context)
        return self.s.model_info()

    async def GetServerInfo(self, request, context):  # noqa: N802
        await self.s._unary_error("GetServerInfo", context)
        return self.s.server_info()

    async def GetLoads(self, request, context):  # noqa: N802
        await self.s._unary_error("GetLoads", context)
        return self.s.loads(request)

    async def Embed(self, request, context):  # noqa: N802
        await self.s._unary_error("Embed", context)
        return self.s.embed(request)

    async def GetTokenizer(self, request, context):  # noqa: N802
        await self.s._unary_error("GetTokenizer", context)
        for chunk in self.s.tokenizer_chunks():
            yield chunk


class _VllmServicer(vllm_grpc.VllmEngineServicer):
    def __init__(self, script: _Script) -> None:
        self.s = script

    async def Generate(self, request, context):  # noqa: N802
        async for message in self.s.generate(request, context):
            yield message

    async def Abort(self, request, context):  # noqa: N802
        await self.s._unary_error("Abort", context)
        self.s.abort(list(request.request_ids))
        return vllm_pb.AbortResponse()

    async def HealthCheck(self, request, context):  # noqa: N802
        await self.s._unary_error("HealthCheck", context)
        return self.s.health()

    async def GetModelInfo(self, request, context):  # noqa: N802
        await self.s._unary_error("GetModelInfo", context)
        return self.s.model_info()

    async def GetServerInfo(self, request, context):  # noqa: N802
        await self.s._unary_error("GetServerInfo", context)
        return self.s.server_info()

    async def GetLoads(self, request, context):  # noqa: N802
        await self.s._unary_error("GetLoads", context)
        return self.s.loads(request)

    async def Embed(self, request, context):  # noqa: N802
        await self.s._unary_error("Embed", context)
        return self.s.embed(request)

    async def GetTokenizer(self, request, context):  # noqa: N802
        await self.s._unary_error("GetTokenizer", context)
        for chunk in self.s.tokenizer_chunks():
            yield chunk


class FakeEngine:
    """One fake engine server; ``start()`` on a running loop, then ``stop()``."""

    def __init__(self, runtime: str = "sglang", *, host: str = "127.0.0.1", port: int = 0,
                 tls: tuple[bytes, bytes] | None = None, client_ca: bytes | None = None, **config: Any) -> None:
        """``tls``: (certificate chain PEM, private key PEM) to serve TLS (``grpcs://``);
        ``client_ca``: with it, clients must present a certificate this CA signed."""
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r} (one of {', '.join(RUNTIMES)})")
        self.runtime = runtime
        self.host = host
        self.port = port
        self.config = EngineConfig(**config)
        self.stats = EngineStats()
        self._script = _Script(runtime, self.config, self.stats)
        self._server: grpc.aio.Server | None = None
        self._tls = tls
        self._client_ca = client_ca

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> FakeEngine:
        server = grpc.aio.server()
        if self.runtime == "sglang":
            sglang_grpc.add_SglangSchedulerServicer_to_server(_SglangServicer(self._script), server)
        else:
            vllm_grpc.add_VllmEngineServicer_to_server(_VllmServicer(self._script), server)
        address = f"{self.host}:{self.port}"
        if self._tls is None:
            self.port = server.add_insecure_port(address)
        else:
            creds = grpc.ssl_server_credentials([(self._tls[1], self._tls[0])], root_certificates=self._client_ca,
                                                require_client_auth=self._client_ca is not None)
            self.port = server.add_secure_port(address, creds)
        await server.start()
        self._server = server
        return self

    def configure(self, **changes: Any) -> None:
        """Change the script for the next requests."""
        for key, value in changes.items():
            if not hasattr(self.config, key):
                raise AttributeError(f"EngineConfig has no field {key!r}")
            setattr(self.config, key, value)

    async def stop(self, grace: float | None = None) -> None:
        """Stop serving; with ``grace`` ``None`` calls in flight are cancelled at once."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(grace)


@asynccontextmanager
async def run_engine(runtime: str = "sglang", **config: Any) -> AsyncIterator[FakeEngine]:
    """A started ``FakeEngine`` on the running loop, stopped on exit."""
    engine = FakeEngine(runtime, **config)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop(None)


@contextmanager
def engine_in_thread(runtime: str = "sglang", timeout: float = 10.0, **config: Any) -> Iterator[FakeEngine]:
    """A ``FakeEngine`` served by its own loop on a daemon thread (for clients on other
    loops). Read ``stats`` from the test thread; ``configure`` between requests."""
    engine = FakeEngine(runtime, **config)
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(engine.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, name=f"fake-{runtime}-engine", daemon=True)
    thread.start()
    if not ready.wait(timeout):
        raise RuntimeError("fake engine did not start")
    try:
        yield engine
    finally:
        asyncio.run_coroutine_threadsafe(engine.stop(None), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        loop.close()


async def _serve_forever(engine: FakeEngine) -> None:
    await engine.start()
    print(f"listening on grpc://{engine.target}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await engine.stop(1.0)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=0, show_default=True, help="0 picks a free port")
@click.option("--runtime", type=click.Choice(RUNTIMES), default="sglang", show_default=True)
@click.option("--tokens", default=None, help="comma-separated ids to emit (default: echo the prompt)")
@click.option("--token-delay-ms", type=float, default=0.0, show_default=True)
@click.option("--cached-tokens", type=int, default=0, show_default=True)
@click.option("--tokenizer-dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="serve this folder's tokenizer.json, tokenizer_config.json and chat_template.jinja "
                   "through GetTokenizer")
@click.option("--served-model-name", default=None, help="the model id GetModelInfo reports")
def main(host: str, port: int, runtime: str, tokens: str | None, token_delay_ms: float, cached_tokens: int,
         tokenizer_dir: str | None, served_model_name: str | None) -> None:
    """Serve a fake SGLang or vLLM engine over gRPC until SIGINT/SIGTERM."""
    ids = None if tokens is None else [int(t) for t in tokens.split(",") if t.strip()]
    extra: dict[str, Any] = {}
    if tokenizer_dir is not None:
        files = {}
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
            path = os.path.join(tokenizer_dir, name)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    files[name] = f.read()
        if "tokenizer.json" not in files:
            raise click.BadParameter(f"no tokenizer.json in {tokenizer_dir}", param_hint="--tokenizer-dir")
        extra["tokenizer_files"] = files
    if served_model_name is not None:
        extra["model_info"] = {"served_model_name": served_model_name}
    engine = FakeEngine(
        runtime, host=host, port=port, tokens=ids, token_delay=token_delay_ms / 1000, cached_tokens=cached_tokens,
        **extra,
    )
    asyncio.run(_serve_forever(engine))


if __name__ == "__main__":
    main()
