"""The openai and anthropic SDKs through the gateway to two mock workers."""
import anthropic
import openai
import pytest

from smg.testing.mock_worker import MockConfig


def client(h, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=h.url + "/v1", api_key="unused", max_retries=0, timeout=10, **kw)


def test_chat_round_robin_alternates(gateway):
    c = client(gateway)
    seen = []
    for _ in range(4):
        raw = c.chat.completions.with_raw_response.create(
            model="mock-model", messages=[{"role": "user", "content": "hi"}])
        seen.append(raw.headers["x-mock-worker"])
        resp = raw.parse()
        assert resp.choices[0].message.content
        assert resp.usage.completion_tokens == 8
    assert seen == ["w1", "w2", "w1", "w2"]


def test_chat_streaming(gateway):
    c = client(gateway)
    workers = []
    for _ in range(2):
        with c.chat.completions.with_streaming_response.create(
                model="mock-model", messages=[{"role": "user", "content": "hi"}], stream=True,
                stream_options={"include_usage": True}) as raw:
            workers.append(raw.headers["x-mock-worker"])
            assert raw.headers["content-type"].startswith("text/event-stream")
            chunks = list(raw.parse())
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert text
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
    assert sorted(workers) == ["w1", "w2"]
    stats = [w.stats for w in gateway.workers]
    assert sum(s.completed_streams for s in stats) == 2


def test_completions_stream_and_not(gateway):
    c = client(gateway)
    r = c.completions.create(model="mock-model", prompt="Once upon a time", max_tokens=8)
    assert r.choices[0].text
    parts = list(c.completions.create(model="mock-model", prompt="Once", max_tokens=8, stream=True))
    assert "".join(p.choices[0].text for p in parts if p.choices)


def test_embeddings(gateway):
    r = client(gateway).embeddings.create(model="mock-model", input=["a", "b"])
    assert len(r.data) == 2
    assert len(r.data[0].embedding) == 8


def test_models_union(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="a", model="llama"), MockConfig(worker_id="b", model="qwen")])
    ids = sorted(m.id for m in client(h).models.list())
    assert ids == ["llama", "qwen"]


def test_model_selects_its_workers(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="a", model="llama"), MockConfig(worker_id="b", model="qwen")])
    c = client(h)
    for model, worker in [("llama", "a"), ("qwen", "b"), ("llama", "a"), ("qwen", "b")]:
        raw = c.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": "x"}])
        assert raw.headers["x-mock-worker"] == worker
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="mistral", messages=[{"role": "user", "content": "x"}])
    assert e.value.body["code"] == "model_not_found"


def test_request_id_round_trip(gateway):
    c = client(gateway)
    raw = c.chat.completions.with_raw_response.create(
        model="mock-model", messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-request-id": "my-trace-123"})
    assert raw.headers["x-request-id"] == "my-trace-123"
    worker = next(w for w in gateway.workers if w.config.worker_id == raw.headers["x-mock-worker"])
    assert worker.stats.last_headers["x-request-id"] == "my-trace-123"
    # an invalid id (too long) is replaced by a generated one with SMG's prefix
    raw = c.chat.completions.with_raw_response.create(
        model="mock-model", messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-request-id": "x" * 200})
    rid = raw.headers["x-request-id"]
    assert rid.startswith("chatcmpl-") and len(rid) == len("chatcmpl-") + 24
    raw = c.completions.with_raw_response.create(model="mock-model", prompt="p")
    assert raw.headers["x-request-id"].startswith("cmpl-")
    # the first configured alternative header is honoured too
    raw = c.embeddings.with_raw_response.create(model="mock-model", input="a",
                                                extra_headers={"x-correlation-id": "corr-9"})
    assert raw.headers["x-request-id"] == "corr-9"


def test_error_status_from_worker_is_relayed(make_gateway):
    h = make_gateway(workers=[MockConfig(worker_id="a", fail_status=429)])
    with pytest.raises(openai.RateLimitError):
        client(h).chat.completions.create(model="mock-model", messages=[{"role": "user", "content": "x"}])


def test_anthropic_messages_passthrough(gateway):
    c = anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0, timeout=10)
    msg = c.messages.create(model="mock-model", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert msg.content[0].text
    with c.messages.stream(model="mock-model", max_tokens=16, messages=[{"role": "user", "content": "hi"}]) as s:
        text = "".join(s.text_stream)
    assert text


def test_anthropic_error_shape(gateway):
    c = anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0, timeout=10)
    with pytest.raises(anthropic.BadRequestError) as e:
        c.messages.create(model="mock-model", max_tokens=16, messages="not-a-list")
    assert e.value.body["type"] == "error"
    assert e.value.body["error"]["type"] == "invalid_request_error"
