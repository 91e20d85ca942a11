"""EngineChannel against the fake gRPC engine (smg.testing.grpc_engine) over real
sockets on 127.0.0.1, for both runtimes: streamed generation, abort on abandon, status
codes → typed errors, unary round trips, the tokenizer bundle, embeddings."""
from __future__ import annotations

import asyncio
import hashlib
import io
import os
import signal
import subprocess
import sys
import zipfile
from contextlib import asynccontextmanager

import grpc
import pytest

from smg.engine_grpc.client import EngineChannel, EngineChunk
from smg.engine_grpc.errors import EngineFailed, EngineOverloaded, EngineRejected, TokenizerBundleError
from smg.engine_grpc.sampling import build_generate_request
from smg.errors import ConnectFailed, UpstreamClosed, UpstreamError, UpstreamTimeout
from smg.testing.grpc_engine import engine_in_thread, run_engine, tokenizer_zip
from tests.helpers import wait_for_async

RUNTIMES = ["sglang", "vllm"]
PROMPT = [1, 2, 3]
SCRIPT = [101, 102, 103, 104]


def run(coro, timeout: float = 15.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


@asynccontextmanager
async def engine_and_channel(runtime, channel_kw=None, **config):
    async with run_engine(runtime, **config) as engine:
        channel = EngineChannel(engine.target, runtime, **(channel_kw or {}))
        try:
            yield engine, channel
        finally:
            await channel.close()


def request(runtime, body=None, rid="req-1", prompt=PROMPT, **kw):
    return build_generate_request(runtime, {"stream": True, **(body or {})}, prompt, request_id=rid, **kw)


async def collect(stream) -> list[EngineChunk]:
    return [c async for c in stream]


# --------------------------------------------------------------------- generation


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_streamed_generation_in_order_with_usage(runtime):
    async def go():
        async with engine_and_channel(runtime, tokens=SCRIPT, cached_tokens=2) as (engine, ch):
            chunks = await collect(ch.generate(request(runtime)))
            await ch.close()
            return engine, chunks

    engine, chunks = run(go())
    assert [t for c in chunks for t in c.token_ids] == SCRIPT
    assert [c.finished for c in chunks] == [False] * 4 + [True]
    last = chunks[-1]
    assert last.finish_reason == "stop"
    assert last.output_ids == tuple(SCRIPT)
    assert (last.prompt_tokens, last.completion_tokens, last.cached_tokens) == (3, 4, 2)
    assert [c.completion_tokens for c in chunks[:-1]] == [1, 2, 3, 4]
    assert last.matched_stop == SCRIPT[-1]
    assert engine.stats.requests == 1
    assert engine.stats.aborts == 0  # a completed stream sends no Abort


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_non_streamed_generation_is_one_complete(runtime):
    async def go():
        async with engine_and_channel(runtime, tokens=SCRIPT) as (engine, ch):
            return await collect(ch.generate(request(runtime, {"stream": False})))

    chunks = run(go())
    assert len(chunks) == 1
    assert chunks[0].finished and chunks[0].token_ids == tuple(SCRIPT)
    assert chunks[0].completion_tokens == 4


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_default_echo_and_max_tokens_finish_with_length(runtime):
    async def go():
        async with engine_and_channel(runtime) as (engine, ch):
            echo = await collect(ch.generate(request(runtime, rid="a", prompt=[7, 8, 9])))
            short = await collect(ch.generate(request(runtime, {"max_tokens": 2}, rid="b", prompt=[7, 8, 9])))
            return echo, short

    echo, short = run(go())
    assert [t for c in echo for t in c.token_ids] == [7, 8, 9]
    assert echo[-1].finish_reason == "stop"
    assert [t for c in short for t in c.token_ids] == [7, 8]
    assert short[-1].finish_reason == "length"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_request_reaches_engine_unchanged(runtime):
    req = request(runtime, {"temperature": 0.5, "stop": ["x"], "max_tokens": 8, "regex": "[a-z]+"}, data_parallel_rank=1)

    async def go():
        async with engine_and_channel(runtime) as (engine, ch):
            await collect(ch.generate(req))
            return engine.stats.last_request

    assert run(go()) == req


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_logprobs_are_normalized(runtime):
    async def go():
        async with engine_and_channel(runtime, tokens=[50, 60]) as (engine, ch):
            streamed = await collect(ch.generate(request(runtime, {"logprobs": True, "top_logprobs": 2})))
            whole = await collect(
                ch.generate(request(runtime, {"logprobs": True, "top_logprobs": 2, "stream": False}, rid="r2"))
            )
            return streamed, whole

    streamed, whole = run(go())
    first = streamed[0].logprobs
    assert first.token_ids == (50,)
    assert first.token_logprobs == pytest.approx((-0.1,))
    assert [t for t, _ in first.top[0]] == [50, 51]
    assert [lp for _, lp in first.top[0]] == pytest.approx([-0.1, -0.11])
    assert streamed[1].logprobs.token_logprobs == pytest.approx((-0.2,))
    assert streamed[-1].logprobs is None  # the cumulative complete is not repeated
    assert whole[0].logprobs.token_ids == (50, 60)
    assert whole[0].logprobs.token_logprobs == pytest.approx((-0.1, -0.2))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_n_choices_each_complete_and_no_abort(runtime):
    async def go():
        async with engine_and_channel(runtime, tokens=[5, 6]) as (engine, ch):
            chunks = await collect(ch.generate(request(runtime, {"n": 2})))
            await ch.close()
            return engine, chunks

    engine, chunks = run(go())
    for index in (0, 1):
        mine = [c for c in chunks if c.index == index]
        assert [t for c in mine for t in c.token_ids] == [5, 6]
        assert mine[-1].finished
    assert engine.stats.aborts == 0


# ------------------------------------------------------------------------- aborts


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_cancelling_the_consumer_aborts_the_engine(runtime):
    async def go():
        async with engine_and_channel(runtime, tokens=SCRIPT, stall_after=2) as (engine, ch):
            got: list[EngineChunk] = []
            two = asyncio.Event()

            async def consume():
                async for chunk in ch.generate(request(runtime, rid="cancel-me")):
                    got.append(chunk)
                    if len(got) == 2:
                        two.set()

            task = asyncio.create_task(consume())
            await asyncio.wait_for(two.wait(), 5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await wait_for_async(lambda: engine.stats.aborts == 1, timeout=5)
            assert await wait_for_async(lambda: engine.stats.cancelled == 1, timeout=5)
            return engine, got

    engine, got = run(go())
    assert engine.stats.aborted_ids == ["cancel-me"]
    assert engine.stats.tokens_emitted == 2  # nothing produced after the abort
    assert [c.token_ids for c in got] == [(101,), (102,)]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_leaving_the_stream_early_aborts_once(runtime):
    async def go():
        async with engine_and_channel(runtime, tokens=SCRIPT, stall_after=1) as (engine, ch):
            async with ch.generate(request(runtime, rid="early")) as stream:
                async for _chunk in stream:
                    break
            await stream.aclose()  # idempotent: still one abort
            await ch.close()  # waits for the pending abort
            return engine

    engine = run(go())
    assert engine.stats.aborts == 1 and engine.stats.aborted_ids == ["early"]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_closing_after_the_complete_sends_no_abort(runtime):
    async def go():
        async with engine_and_channel(runtime, tokens=[1, 2]) as (engine, ch):
            stream = ch.generate(request(runtime))
            async for chunk in stream:
                if chunk.finished:
                    break
            await stream.aclose()
            await ch.close()
            return engine

    assert run(go()).stats.aborts == 0


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_explicit_abort_reaches_engine(runtime):
    async def go():
        async with engine_and_channel(runtime) as (engine, ch):
            await ch.abort("some-id")
            return engine

    engine = run(go())
    assert engine.stats.aborts == 1 and engine.stats.aborted_ids == ["some-id"]


# ------------------------------------------------------------------------- errors

STATUS_CASES = [
    (grpc.StatusCode.INVALID_ARGUMENT, EngineRejected, 400, "engine_rejected"),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, EngineOverloaded, 503, "engine_overloaded"),
    (grpc.StatusCode.INTERNAL, EngineFailed, 502, "engine_failed"),
    (grpc.StatusCode.UNKNOWN, EngineFailed, 502, "engine_failed"),
    (grpc.StatusCode.UNAVAILABLE, ConnectFailed, 502, "connect_failed"),
    (grpc.StatusCode.DEADLINE_EXCEEDED, UpstreamTimeout, 504, "upstream_timeout"),
]


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("code,cls,status,kind", STATUS_CASES, ids=[c[0].name for c in STATUS_CASES])
def test_status_before_first_token_maps_to_typed_error(runtime, code, cls, status, kind):
    async def go():
        async with engine_and_channel(runtime, error=(code, "prompt is too long")) as (engine, ch):
            with pytest.raises(UpstreamError) as info:
                await collect(ch.generate(request(runtime)))
            return info.value

    err = run(go())
    assert type(err) is cls
    assert err.status_hint == status and err.kind == kind
    assert err.grpc_code == code.name
    assert "prompt is too long" in str(err)
    if cls is EngineRejected:
        assert str(err) == "prompt is too long"  # the engine's message, as the 400's text


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_mid_stream_failure_after_tokens(runtime):
    async def go():
        async with engine_and_channel(
            runtime, tokens=SCRIPT, error=(grpc.StatusCode.INTERNAL, "scheduler died"), error_after=2
        ) as (engine, ch):
            got = []
            with pytest.raises(EngineFailed, match="scheduler died"):
                async for chunk in ch.generate(request(runtime)):
                    got.append(chunk)
            await ch.close()
            return engine, got

    engine, got = run(go())
    assert [c.token_ids for c in got] == [(101,), (102,)]
    assert engine.stats.aborts == 0  # the engine ended the call itself


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_unavailable_mid_stream_is_upstream_closed(runtime):
    async def go():
        async with engine_and_channel(
            runtime, tokens=SCRIPT, error=(grpc.StatusCode.UNAVAILABLE, "going away"), error_after=1
        ) as (engine, ch):
            with pytest.raises(UpstreamClosed):
                await collect(ch.generate(request(runtime)))

    run(go())


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_engine_stopped_mid_stream_is_upstream_closed(runtime):
    async def go():
        async with engine_and_channel(runtime, tokens=SCRIPT, stall_after=1) as (engine, ch):
            stream = ch.generate(request(runtime))
            first = await stream.__anext__()
            await engine.stop(None)
            with pytest.raises(UpstreamClosed) as info:
                await stream.__anext__()
            return first, info.value

    first, err = run(go())
    assert first.token_ids == (101,)
    assert err.kind == "upstream_closed"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_nothing_listening_is_connect_failed(runtime):
    async def go():
        async with run_engine(runtime) as engine:
            target = engine.target
        ch = EngineChannel(target, runtime, timeout=3, generate_timeout=3)
        try:
            with pytest.raises(ConnectFailed):
                await ch.health()
            with pytest.raises(ConnectFailed):
                await collect(ch.generate(request(runtime)))
        finally:
            await ch.close()

    run(go())


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_generate_deadline_is_upstream_timeout_and_aborts(runtime):
    async def go():
        async with engine_and_channel(runtime, tokens=SCRIPT, stall_after=1) as (engine, ch):
            got = []
            with pytest.raises(UpstreamTimeout):
                async for chunk in ch.generate(request(runtime, rid="slow"), timeout=0.5):
                    got.append(chunk)
            assert await wait_for_async(lambda: engine.stats.aborts == 1, timeout=5)
            return engine, got

    engine, got = run(go())
    assert len(got) == 1 and engine.stats.aborted_ids == ["slow"]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_unary_status_maps_too(runtime):
    async def go():
        async with engine_and_channel(
            runtime,
            unary_errors={
                "GetLoads": (grpc.StatusCode.RESOURCE_EXHAUSTED, "busy"),
                "GetModelInfo": (grpc.StatusCode.UNIMPLEMENTED, "no"),
            },
        ) as (engine, ch):
            with pytest.raises(EngineOverloaded):
                await ch.loads()
            with pytest.raises(EngineFailed):
                await ch.model_info()
            assert (await ch.health()).healthy

    run(go())


# ------------------------------------------------------------------ unary answers


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_health_round_trip(runtime):
    async def go():
        async with engine_and_channel(runtime) as (engine, ch):
            ok = await ch.health()
            engine.configure(healthy=False, health_message="draining")
            bad = await ch.health()
            return ok, bad

    ok, bad = run(go())
    assert ok.healthy and ok.message == "ok"
    assert not bad.healthy and bad.message == "draining"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_model_info_round_trip(runtime):
    async def go():
        async with engine_and_channel(
            runtime, model_info={"served_model_name": "m-1", "max_context_length": 8192, "eos_token_ids": [2, 32000]}
        ) as (engine, ch):
            return await ch.model_info()

    info = run(go())
    assert info["served_model_name"] == "m-1"
    assert info["max_context_length"] == 8192
    assert info["eos_token_ids"] == [2, 32000]
    assert info["model_path"] == "fake/model"
    assert info["is_generation"] is True
    assert "default_sampling_params_json" in info  # every field present


def test_server_info_round_trip_sglang():
    async def go():
        async with engine_and_channel(
            "sglang", server_info={"server_args": {"tp_size": 2, "dp_size": 4}, "active_requests": 3}
        ) as (engine, ch):
            return await ch.server_info()

    info = run(go())
    assert info["server_args"] == {"tp_size": 2, "dp_size": 4}
    assert info["active_requests"] == 3
    assert info["server_type"] == "grpc"


def test_server_info_round_trip_vllm():
    async def go():
        async with engine_and_channel(
            "vllm", server_info={"kv_connector": "NixlConnector", "kv_role": "kv_producer", "data_parallel_size": 2}
        ) as (engine, ch):
            return await ch.server_info()

    info = run(go())
    assert info["kv_connector"] == "NixlConnector" and info["kv_role"] == "kv_producer"
    assert info["data_parallel_size"] == 2
    assert info["server_type"] == "vllm-grpc"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_loads_round_trip(runtime):
    loads = [
        {"dp_rank": 0, "num_running_reqs": 3, "num_waiting_reqs": 1, "token_usage": 0.5, "max_running_requests": 64},
        {"dp_rank": 1, "num_running_reqs": 5, "num_waiting_reqs": 0, "token_usage": 0.25, "max_running_requests": 64},
    ]

    async def go():
        async with engine_and_channel(runtime, loads=loads) as (engine, ch):
            return await ch.loads(include=["core"]), await ch.loads(dp_rank=1)

    every, one = run(go())
    assert every["dp_rank_count"] == 2
    assert [x["num_running_reqs"] for x in every["loads"]] == [3, 5]
    assert every["loads"][0]["token_usage"] == 0.5
    assert every["loads"][1]["max_running_requests"] == 64
    assert [x["dp_rank"] for x in one["loads"]] == [1]
    if runtime == "sglang":
        assert every["aggregate"]["total_running_reqs"] == 8
        assert every["aggregate"]["total_reqs"] == 9


# --------------------------------------------------------------- tokenizer bundle

FILES = {"tokenizer.json": b'{"model": {"type": "BPE"}}' * 40, "tokenizer_config.json": b'{"bos_token": "<s>"}'}


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_tokenizer_bundle_reassembled_from_chunks(runtime):
    async def go():
        async with engine_and_channel(runtime, tokenizer_files=FILES, tokenizer_chunk=64) as (engine, ch):
            return await ch.tokenizer_bundle()

    data, sha = run(go())
    assert data == tokenizer_zip(FILES)
    assert len(data) > 64  # it did come in several chunks
    assert sha == hashlib.sha256(data).hexdigest()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert {n: zf.read(n) for n in zf.namelist()} == FILES


def test_tokenizer_digest_in_upper_case_accepted():
    digest = hashlib.sha256(tokenizer_zip(FILES)).hexdigest()

    async def go():
        async with engine_and_channel("sglang", tokenizer_files=FILES, tokenizer_sha256=digest.upper()) as (e, ch):
            return await ch.tokenizer_bundle()

    assert run(go())[1] == digest


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_tokenizer_corrupted_digest_detected(runtime):
    async def go():
        async with engine_and_channel(runtime, tokenizer_files=FILES, tokenizer_sha256="0" * 64) as (engine, ch):
            with pytest.raises(TokenizerBundleError, match="mismatch") as info:
                await ch.tokenizer_bundle()
            return info.value

    err = run(go())
    assert err.kind == "upstream_protocol"


# -------------------------------------------------------------------------- embed


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_embed_round_trip(runtime):
    async def go():
        async with engine_and_channel(runtime, embedding_dim=4) as (engine, ch):
            return engine, await ch.embed("e-1", [10, 20, 30])

    engine, emb = run(go())
    assert emb.dim == 4 and emb.prompt_tokens == 3
    assert emb.values == pytest.approx([((60 + i) % 97) / 97 for i in range(4)])
    assert engine.stats.embeds == 1


# ------------------------------------------------------------- other ways to run


def test_engine_in_thread_serves_another_loop():
    with engine_in_thread("vllm", tokens=[9, 8]) as engine:

        async def go():
            async with EngineChannel(engine.target, "vllm") as ch:
                return await collect(ch.generate(request("vllm")))

        chunks = run(go())
        assert [t for c in chunks for t in c.token_ids] == [9, 8]
        assert engine.stats.requests == 1


def test_entry_point_serves_until_sigterm():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen(
        [sys.executable, "-m", "smg.testing.grpc_engine", "--port", "0", "--runtime", "sglang", "--tokens", "4,5"],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on grpc://127.0.0.1:")
        target = line.split("listening on ")[1]

        async def go():
            async with EngineChannel(target, "sglang") as ch:
                return await ch.health(), await collect(ch.generate(request("sglang")))

        health, chunks = run(go())
        assert health.healthy
        assert [t for c in chunks for t in c.token_ids] == [4, 5]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
