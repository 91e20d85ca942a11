"""Streams end cleanly: nothing after the worker's ``data: [DONE]``; a stream that ends
(or is cut) without ``[DONE]`` or a finish reason gets exactly one error event in the
API's own shape; one that was complete just ends.
"""
from __future__ import annotations

import json

import httpx
import pytest

from tests.integration.recording_worker import Answer, Fleet, sse_chunk

CHAT = {"model": "mock-model", "messages": [{"role": "user", "content": "hi"}], "stream": True}
MESSAGES = {"model": "mock-model", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
            "stream": True}


def stream(port: int, path: str, body: dict) -> bytes:
    with httpx.stream("POST", f"http://127.0.0.1:{port}{path}", json=body, timeout=10) as r:
        assert r.status_code == 200
        return b"".join(r.iter_bytes())


def events(raw: bytes) -> list:
    return [e for e in raw.split(b"\n\n") if e.strip()]


def gateway_with(answer: Answer):
    fleet = Fleet([lambda req: answer]).__enter__()
    return fleet, fleet.gateway()


@pytest.fixture
def serve():
    fleets = []

    def make(answer: Answer):
        fleet, h = gateway_with(answer)
        fleets.append(fleet)
        return h.port

    yield make
    for f in fleets:
        f.__exit__(None, None, None)


def test_nothing_follows_done(serve):
    port = serve(Answer(chunks=(sse_chunk("a"), sse_chunk("b", "stop")), end="done",
                        after_done=b"data: extra\n\n"))
    evs = events(stream(port, "/v1/chat/completions", CHAT))
    assert evs[-1] == b"data: [DONE]" and len(evs) == 3 and b"extra" not in b"".join(evs)


def test_a_stream_ending_without_done_or_finish_gets_one_openai_error_event(serve):
    port = serve(Answer(chunks=(sse_chunk("a"), sse_chunk("b")), end="eof"))
    evs = events(stream(port, "/v1/chat/completions", CHAT))
    errors = [e for e in evs if b'"error"' in e]
    assert len(errors) == 1 and evs[-1] == errors[0] and len(evs) == 3
    err = json.loads(errors[0][len(b"data: "):])["error"]
    assert err["type"] == "stream_error" and err["code"] == "upstream_error" and err["message"]


def test_a_finished_stream_without_done_gets_no_error_event(serve):
    port = serve(Answer(chunks=(sse_chunk("a"), sse_chunk("b", "length")), end="eof"))
    evs = events(stream(port, "/v1/chat/completions", CHAT))
    assert len(evs) == 2 and not any(b'"error"' in e for e in evs)


def test_a_cut_stream_gets_one_error_event(serve):
    port = serve(Answer(chunks=(sse_chunk("a"),), end="cut"))
    evs = events(stream(port, "/v1/chat/completions", CHAT))
    assert sum(b'"error"' in e for e in evs) == 1 and b'"error"' in evs[-1]


def test_a_stream_cut_after_done_just_ends(serve):
    port = serve(Answer(chunks=(sse_chunk("a"), b"data: [DONE]\n\n"), end="cut"))
    evs = events(stream(port, "/v1/chat/completions", CHAT))
    assert evs[-1] == b"data: [DONE]" and not any(b'"error"' in e for e in evs)


def test_anthropic_streams_get_an_anthropic_error_event(serve):
    start = b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1"}}\n\n'
    port = serve(Answer(chunks=(start,), end="eof"))
    evs = events(stream(port, "/v1/messages", MESSAGES))
    errors = [e for e in evs if e.startswith(b"event: error")]
    assert len(errors) == 1 and evs[-1] == errors[0]
    data = json.loads(errors[0].split(b"data: ", 1)[1])
    assert data["type"] == "error" and data["error"]["type"] == "api_error"


def test_a_complete_anthropic_stream_gets_none(serve):
    chunks = (b'event: message_start\ndata: {"type":"message_start"}\n\n',
              b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    port = serve(Answer(chunks=chunks, end="eof"))
    evs = events(stream(port, "/v1/messages", MESSAGES))
    assert len(evs) == 2 and not any(e.startswith(b"event: error") for e in evs)
