"""The Responses conversion (smg/responses/convert.py) and event stream
(smg/responses/stream.py): chat chunks in, events the openai SDK's types accept out,
and the streamed answer's final output equal to the non-streamed answer's."""
import json

import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from smg.responses import convert
from smg.responses.stream import EventStream

EVENT = pydantic.TypeAdapter(ResponseStreamEvent)
BODY = {"model": "m", "input": "hi"}


def parse(raw: list) -> list:
    out = []
    for ev in raw:
        head, data = ev.decode().rstrip("\n").split("\n")
        obj = json.loads(data[len("data: "):])
        assert head == "event: " + obj["type"]
        EVENT.validate_python(obj)
        out.append(obj)
    return out


def chunk(delta, finish=None):
    return {"model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def final(es: EventStream, status="completed"):
    return convert.response_object(BODY, "resp_1", 1, status, es.output, convert.usage_of(es.usage))


def test_text_reasoning_and_two_calls_in_order():
    es = EventStream()
    raw = es.start(convert.response_object(BODY, "resp_1", 1, "in_progress", []))
    for c in (chunk({"role": "assistant"}), chunk({"reasoning_content": "hm"}), chunk({"content": "Hel"}),
              chunk({"content": "lo"}),
              chunk({"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "f", "arguments": "{"}}]}),
              chunk({"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}),
              chunk({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "g", "arguments": "[]"}}]}),
              chunk({}, "tool_calls")):
        raw += es.chunk(c)
    es.usage = {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    es.close(raw)
    raw += es.finish(final(es))
    evs = parse(raw)
    assert [e["sequence_number"] for e in evs] == list(range(len(evs)))
    assert [e["type"] for e in evs] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.reasoning_text.delta", "response.reasoning_text.done",
        "response.output_item.done",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done", "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed"]
    done = Response.model_validate(evs[-1]["response"])
    assert [o.type for o in done.output] == ["reasoning", "message", "function_call", "function_call"]
    assert done.output_text == "Hello" and done.output[2].arguments == "{}" and done.output[3].call_id == "call_b"
    # the same answer, not streamed
    whole = convert.output_of({"reasoning_content": "hm", "content": "Hello", "tool_calls": [
        {"id": "call_a", "function": {"name": "f", "arguments": "{}"}},
        {"id": "call_b", "function": {"name": "g", "arguments": "[]"}}]})
    strip = lambda items: [{k: v for k, v in it.items() if k != "id"} for it in items]
    assert strip(whole) == strip(evs[-1]["response"]["output"])


def test_incomplete_and_failed_events():
    es = EventStream()
    raw = es.chunk(chunk({"content": "x"}, "length"))
    status, incomplete = convert.finish_status(es.finish_reason)
    assert (status, incomplete) == ("incomplete", {"reason": "max_output_tokens"})
    obj = convert.response_object(BODY, "resp_1", 1, status, es.output, incomplete=incomplete)
    evs = parse(raw + es.finish(obj))
    assert evs[-1]["type"] == "response.incomplete"
    es2 = EventStream()
    es2.chunk(chunk({"content": "x"}))
    failed = convert.response_object(BODY, "resp_1", 1, "failed", es2.output,
                                     error={"code": "server_error", "message": "cut"})
    evs = parse([e + b"\n\n" for e in es2.failed(failed).split(b"\n\n") if e])
    assert [e["type"] for e in evs][-2:] == ["response.output_item.done", "response.failed"]
    assert evs[-1]["response"]["error"]["message"] == "cut"


def test_chat_request_mapping():
    body = {"model": "m", "instructions": "sys", "input": [
        {"role": "developer", "content": "dev"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"},
                                                        {"type": "input_image", "image_url": "data:x"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "r1"},
        {"type": "reasoning", "summary": []}],
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}],
        "tool_choice": {"type": "function", "name": "f"}, "top_p": 0.5, "parallel_tool_calls": False,
        "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}, "strict": True}}}
    convert.check(body)
    chat = convert.chat_request(body, [], convert.input_items(body["input"]))
    assert chat["messages"] == [
        {"role": "system", "content": "sys"}, {"role": "system", "content": "dev"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "data:x"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "r1"}]
    assert chat["tools"] == [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"},
                                                               "strict": True}}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "s", "schema": {"type": "object"}, "strict": True}}
    assert chat["top_p"] == 0.5 and chat["parallel_tool_calls"] is False


@pytest.mark.parametrize("body", [{"model": "m", "input": "x", "stream": "yes"},
                                  {"model": "m", "input": "x", "temperature": True},
                                  {"model": "m", "input": [{"type": "function_call", "name": "f"}]},
                                  {"model": "m", "input": [{"role": "user", "content": [{"type": "input_file"}]}]},
                                  {"model": "m", "input": "x", "tool_choice": "sometimes"},
                                  {"model": "m", "input": "x", "reasoning": {"effort": "max"}}])
def test_check_refuses(body):
    with pytest.raises(convert.Bad):
        convert.check(body)
