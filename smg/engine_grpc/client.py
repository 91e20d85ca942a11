"""``EngineChannel``: one ``grpc.aio`` channel to one engine (SGLang ``SglangScheduler``
or vLLM ``VllmEngine``), with every answer normalized so callers never touch a proto
response.

Rules:
- ``generate(request)`` returns a ``GenerationStream`` of ``EngineChunk``: one per
  response message, in the engine's order. A chunk message gives its new token ids; a
  complete message ends its choice (``finished``, ``finish_reason``, ``matched_stop``,
  ``output_ids`` as the engine sent them). In a streamed request both engines send the
  finishing step as a chunk and then the complete, so a streamed complete adds no ids
  (``token_ids`` empty) and its cumulative logprobs are not repeated; in a non-streamed
  one the complete is the only message and ``token_ids`` are its ``output_ids``.
  Counts (prompt, completion, cached, reasoning) are the engine's cumulative numbers.
- Abort on abandon: a stream given up before every choice completed (its consumer was
  cancelled while waiting, ``aclose()``, leaving ``async with``, or the deadline hit)
  cancels the call and sends ``Abort`` for its request id, once, in the background
  (bounded by ``abort_timeout``; a failed abort is swallowed: the engine also sees the
  cancelled call). A stream that ended by the engine's own status or completed all its
  choices sends none. ``close()`` waits for pending aborts (bounded) before closing.
- Errors: every gRPC status is raised as the typed error of ``engine_grpc.errors``
  (``from_status``); ``started`` is whether a response message had arrived.
- Deadlines: ``timeout`` bounds each unary call and ``tokenizer_timeout`` the whole
  tokenizer stream; ``generate_timeout`` (``None`` = no deadline) bounds a generation,
  per call overridable.
- The tokenizer bundle is the concatenation of the streamed ``GetTokenizerChunk.data``;
  the sha256 (hex, any case) comes on the final chunk and must match the bytes.
"""
from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from smg_grpc_proto.generated import common_pb2
from smg_grpc_proto.generated import sglang_scheduler_pb2 as sglang_pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as sglang_grpc
from smg_grpc_proto.generated import vllm_engine_pb2 as vllm_pb
from smg_grpc_proto.generated import vllm_engine_pb2_grpc as vllm_grpc

from smg.engine_grpc.errors import TokenizerBundleError, from_rpc_error
from smg.errors import UpstreamProtocolError

RUNTIMES = ("sglang", "vllm")
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
MAX_TOKENIZER_BUNDLE_BYTES = 200 * 1024 * 1024  # SMG's limit on a streamed bundle

_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


@dataclass(frozen=True, slots=True)
class Logprobs:
    """Output logprobs of the positions one message covers."""

    token_ids: tuple[int, ...]
    token_logprobs: tuple[float, ...]
    # per position, the engine's top alternatives as (token id, logprob)
    top: tuple[tuple[tuple[int, float], ...], ...] = ()


@dataclass(frozen=True, slots=True)
class EngineChunk:
    """One normalized response message of a generation (module rules)."""

    index: int
    token_ids: tuple[int, ...]
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int = 0
    logprobs: Logprobs | None = None
    finished: bool = False
    finish_reason: str | None = None
    matched_stop: int | str | None = None
    output_ids: tuple[int, ...] | None = None
    kv_transfer_params_json: str | None = None


@dataclass(frozen=True, slots=True)
class Health:
    healthy: bool
    message: str


@dataclass(frozen=True, slots=True)
class Embedding:
    values: tuple[float, ...]
    dim: int
    prompt_tokens: int


def _logprobs(msg: Any) -> Logprobs:
    return Logprobs(
        token_ids=tuple(msg.token_ids),
        token_logprobs=tuple(msg.token_logprobs),
        top=tuple(tuple(zip(t.token_ids, t.values)) for t in msg.top_logprobs),
    )


def normalize(msg: Any, *, stream: bool) -> EngineChunk:
    """The ``EngineChunk`` for one ``GenerateResponse`` of either engine."""
    which = msg.WhichOneof("response")
    if which == "chunk":
        c = msg.chunk
        return EngineChunk(
            index=c.index,
            token_ids=tuple(c.token_ids),
            prompt_tokens=c.prompt_tokens,
            completion_tokens=c.completion_tokens,
            cached_tokens=c.cached_tokens,
            reasoning_tokens=getattr(c, "reasoning_tokens", 0),
            logprobs=_logprobs(c.output_logprobs) if c.HasField("output_logprobs") else None,
        )
    if which == "complete":
        c = msg.complete
        stop = c.WhichOneof("matched_stop")
        output_ids = tuple(c.output_ids)
        kv = None
        if c.DESCRIPTOR.fields_by_name.get("kv_transfer_params_json") is not None and c.HasField(
            "kv_transfer_params_json"
        ):
            kv = c.kv_transfer_params_json
        return EngineChunk(
            index=c.index,
            token_ids=() if stream else output_ids,
            prompt_tokens=c.prompt_tokens,
            completion_tokens=c.completion_tokens,
            cached_tokens=c.cached_tokens,
            reasoning_tokens=getattr(c, "reasoning_tokens", 0),
            logprobs=_logprobs(c.output_logprobs) if not stream and c.HasField("output_logprobs") else None,
            finished=True,
            finish_reason=c.finish_reason or "stop",
            matched_stop=getattr(c, stop) if stop else None,
            output_ids=output_ids,
            kv_transfer_params_json=kv,
        )
    raise UpstreamProtocolError("engine sent a GenerateResponse with neither chunk nor complete")


class GenerationStream:
    """The chunks of one ``Generate`` call; async iterator and async context manager."""

    def __init__(self, channel: EngineChannel, call: Any, request_id: str, *, stream: bool, n: int) -> None:
        self._channel = channel
        self._call = call
        self.request_id = request_id
        self._stream = stream
        self._n = max(1, n)
        self._completes = 0
        self._started = False
        self._done = False  # no more reads; the call ended or was given up

    @property
    def complete(self) -> bool:
        """Every choice has sent its complete message."""
        return self._completes >= self._n

    def __aiter__(self) -> GenerationStream:
        return self

    async def __anext__(self) -> EngineChunk:
        if self._done:
            raise StopAsyncIteration
        try:
            msg = await self._call.read()
        except asyncio.CancelledError:
            self._abandon()
            raise
        except grpc.aio.AioRpcError as exc:
            self._done = True
            if exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED and not self.complete:
                self._channel._spawn_abort(self.request_id)
            raise from_rpc_error(exc, started=self._started) from None
        if msg is grpc.aio.EOF:
            self._done = True
            raise StopAsyncIteration
        self._started = True
        chunk = normalize(msg, stream=self._stream)
        if chunk.finished:
            self._completes += 1
        return chunk

    def _abandon(self) -> None:
        if self._done:
            return
        self._done = True
        self._call.cancel()
        if not self.complete:
            self._channel._spawn_abort(self.request_id)

    async def aclose(self) -> None:
        """Give the stream up (module rules: abort unless every choice completed)."""
        self._abandon()

    async def __aenter__(self) -> GenerationStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._abandon()


def _target(target: str) -> str:
    for scheme in ("grpc://", "grpcs://", "http://"):
        if target.startswith(scheme):
            return target[len(scheme):].rstrip("/")
    return target


def _as_dict(msg: Any) -> dict[str, Any]:
    return MessageToDict(msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


class EngineChannel:
    """One channel to one engine. ``runtime`` is "sglang" or "vllm"."""

    def __init__(
        self,
        target: str,
        runtime: str = "sglang",
        *,
        timeout: float = 30.0,
        generate_timeout: float | None = None,
        tokenizer_timeout: float = 120.0,
        abort_timeout: float = 5.0,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r} (one of {', '.join(RUNTIMES)})")
        self.target = _target(target)
        self.runtime = runtime
        self.timeout = timeout
        self.generate_timeout = generate_timeout
        self.tokenizer_timeout = tokenizer_timeout
        self.abort_timeout = abort_timeout
        # ``credentials``: TLS for a ``grpcs://`` worker; None: plaintext
        self._channel = (grpc.aio.insecure_channel(self.target, options=_CHANNEL_OPTIONS) if credentials is None
                         else grpc.aio.secure_channel(self.target, credentials, options=_CHANNEL_OPTIONS))
        self._pb = sglang_pb if runtime == "sglang" else vllm_pb
        self._stub = (
            sglang_grpc.SglangSchedulerStub(self._channel)
            if runtime == "sglang"
            else vllm_grpc.VllmEngineStub(self._channel)
        )
        self._aborts: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ generation

    def generate(self, request: Any, *, timeout: float | None = None) -> GenerationStream:
        """Start ``Generate``; the RPC's errors surface when the stream is read."""
        call = self._stub.Generate(request, timeout=self.generate_timeout if timeout is None else timeout)
        return GenerationStream(
            self, call, request.request_id, stream=request.stream, n=request.sampling_params.n or 1
        )

    async def abort(self, request_id: str, reason: str = "aborted by the gateway") -> None:
        """Send ``Abort`` for one request id."""
        if self.runtime == "sglang":
            req = sglang_pb.AbortRequest(request_id=request_id, reason=reason)
        else:
            req = vllm_pb.AbortRequest(request_ids=[request_id])
        await self._unary(self._stub.Abort, req, self.abort_timeout)

    def _spawn_abort(self, request_id: str) -> None:
        async def send() -> None:
            try:
                await self.abort(request_id, "stream dropped")
            except Exception:  # the engine also sees the cancelled call
                pass

        task = asyncio.get_running_loop().create_task(send())
        self._aborts.add(task)
        task.add_done_callback(self._aborts.discard)

    # --------------------------------------------------------------------- unary

    async def _unary(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        try:
            return await method(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc, started=False) from None

    async def health(self, timeout: float | None = None) -> Health:
        resp = await self._unary(self._stub.HealthCheck, self._pb.HealthCheckRequest(), timeout)
        return Health(resp.healthy, resp.message)

    async def model_info(self) -> dict[str, Any]:
        """``GetModelInfo`` as a dict of the proto's field names (every field present)."""
        return _as_dict(await self._unary(self._stub.GetModelInfo, self._pb.GetModelInfoRequest()))

    async def server_info(self) -> dict[str, Any]:
        """``GetServerInfo`` as a dict (Struct fields become plain dicts)."""
        return _as_dict(await self._unary(self._stub.GetServerInfo, self._pb.GetServerInfoRequest()))

    async def loads(self, include: Sequence[str] = (), dp_rank: int | None = None) -> dict[str, Any]:
        """``GetLoads`` as a dict: ``timestamp``, ``version``, ``dp_rank_count``, ``loads``
        (one dict per DP rank) and, from SGLang, ``aggregate``."""
        req = self._pb.GetLoadsRequest(include=list(include))
        if dp_rank is not None:
            req.dp_rank = dp_rank
        return _as_dict(await self._unary(self._stub.GetLoads, req))

    async def embed(
        self,
        request_id: str,
        input_ids: Sequence[int],
        *,
        original_text: str = "",
        data_parallel_rank: int | None = None,
    ) -> Embedding:
        tokenized = self._pb.TokenizedInput(original_text=original_text, input_ids=list(input_ids))
        if self.runtime == "sglang":
            req = sglang_pb.EmbedRequest(request_id=request_id, tokenized=tokenized)
            if data_parallel_rank is not None:
                req.data_parallel_rank = data_parallel_rank
        else:
            req = vllm_pb.EmbedRequest(request_id=request_id, tokenized=tokenized)
        resp = await self._unary(self._stub.Embed, req)
        return Embedding(tuple(resp.embedding), resp.embedding_dim, resp.prompt_tokens)

    async def tokenizer_bundle(self) -> tuple[bytes, str]:
        """(zip bytes, sha256 hex lower-case) from ``GetTokenizer``, digest checked."""
        call = self._stub.GetTokenizer(common_pb2.GetTokenizerRequest(), timeout=self.tokenizer_timeout)
        parts: list[bytes] = []
        size = 0
        sha = ""
        seen = False
        try:
            while True:
                chunk = await call.read()
                if chunk is grpc.aio.EOF:
                    break
                seen = True
                sha = chunk.sha256
                size += len(chunk.data)
                if size > MAX_TOKENIZER_BUNDLE_BYTES:
                    call.cancel()
                    raise TokenizerBundleError(f"tokenizer bundle exceeds {MAX_TOKENIZER_BUNDLE_BYTES} bytes")
                parts.append(chunk.data)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc, started=seen) from None
        if not seen:
            raise TokenizerBundleError("tokenizer stream sent no chunk")
        if not sha:
            raise TokenizerBundleError("tokenizer stream ended without its sha256")
        data = b"".join(parts)
        if not data:
            raise TokenizerBundleError("tokenizer bundle is empty")
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha.lower():
            raise TokenizerBundleError(f"tokenizer bundle sha256 mismatch: engine sent {sha}, bytes hash to {digest}")
        return data, digest

    # -------------------------------------------------------------------- closing

    async def close(self, grace: float | None = 1.0) -> None:
        """Wait (at most ``abort_timeout``) for pending aborts, then close the channel."""
        if self._aborts:
            await asyncio.wait(set(self._aborts), timeout=self.abort_timeout)
        await self._channel.close(grace)

    async def __aenter__(self) -> EngineChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
