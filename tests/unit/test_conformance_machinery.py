"""The conformance suite's own machinery, without any gateway: the comparisons, the
allow-list and its staleness check, the summary counts, the bad-input table reader.
"""
from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest

from tests.conformance import allowlist, compare, ledger
from tests.conformance.client import Response
from tests.conformance.compare import Difference, compare_responses, compare_worker_requests
from tests.conformance.test_conformance_bad_inputs import FALLBACK, _from_entry

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def resp(status=200, body=b"", ctype="application/json", **headers) -> Response:
    hdrs = [("content-type", ctype)] if ctype else []
    hdrs += [(k.replace("_", "-"), v) for k, v in headers.items()]
    return Response(status, hdrs, body if isinstance(body, bytes) else json.dumps(body).encode())


def where(diffs) -> set:
    return {(d.aspect, d.where) for d in diffs}


def test_same_shape_different_values_is_no_difference():
    a = resp(body={"id": "x1", "n": 1, "items": [{"k": "a"}], "f": 1.5}, x_request_id="chatcmpl-" + "a" * 24)
    b = resp(body={"id": "y2", "n": 2.0, "items": [{"k": "b"}, {"k": "c"}], "f": 2},
             x_request_id="chatcmpl-" + "0f" * 12)
    assert compare_responses("c", a, b) == []


def test_shape_differences_are_found_with_folded_paths():
    a = resp(body={"data": [{"id": "m", "owned_by": "x"}], "object": "list"})
    b = resp(body={"data": [{"id": 3, "root": "m"}], "object": "list", "extra": None})
    assert where(compare_responses("c", a, b)) == {
        ("body", "$.data[].id"), ("body", "$.data[].owned_by"), ("body", "$.data[].root"), ("body", "$.extra")}


def test_empty_versus_non_empty_list_is_a_difference():
    d = compare_responses("c", resp(body={"w": []}), resp(body={"w": [1]}))
    assert [(x.where, x.rust, x.ours) for x in d] == [("$.w[]", "0 items", "1 items")]


def test_status_media_type_and_error_fields_by_value():
    a = resp(400, {"error": {"type": "invalid_request_error", "code": "missing_required_parameter",
                             "param": "messages", "message": "x"}}, x_smg_error_code="missing_required_parameter")
    b = resp(422, {"error": {"type": "invalid_request_error", "code": "invalid_request", "message": "y"}},
             ctype="application/json; charset=utf-8")
    d = compare_responses("c", a, b)
    # different statuses: one summary line for the body, not one per key
    assert where(d) == {("status", "status"), ("header", "x-smg-error-code"), ("body", "$")}
    b.status = 400
    d = compare_responses("c", a, b)
    assert where(d) == {("error", "error.code"), ("error", "error.param"), ("header", "x-smg-error-code")}
    assert [x.ours for x in d if x.where == "error.param"] == ["absent"]


def test_workers_api_error_form_compares_code():
    a = resp(400, {"error": "bad url", "code": "BAD_REQUEST"})
    assert compare_responses("c", a, resp(400, {"error": "other words", "code": "BAD_REQUEST"})) == []
    d = compare_responses("c", a, resp(400, {"error": "bad url", "code": "NOT_FOUND"}))
    assert [(x.where, x.rust, x.ours) for x in d] == [("error.code", '"BAD_REQUEST"', '"NOT_FOUND"')]


def test_content_type_parameters_are_ignored_but_media_type_is_not():
    assert compare_responses("c", resp(ctype="text/plain; charset=utf-8", body=b"OK"),
                             resp(ctype="text/plain", body=b"OK")) == []
    d = compare_responses("c", resp(ctype="text/plain", body=b"OK"), resp(body={"status": "ok"}))
    assert ("content-type", "content-type") in where(d) and ("body", "$") in where(d)


def test_text_bodies_compared_exactly_unless_told_not_to():
    a, b = resp(ctype="text/plain", body=b"# a 1\n"), resp(ctype="text/plain", body=b"# a 2\n")
    assert where(compare_responses("c", a, b)) == {("body-text", "$")}
    assert compare_responses("c", a, b, text_exact=False) == []


def test_decoder_position_is_its_own_difference():
    a = resp(422, b"missing field `input` at line 1 column 22", ctype="text/plain")
    b = resp(422, b"missing field `input`", ctype="text/plain")
    d = compare_responses("c", a, b)
    assert [(x.aspect, x.where, x.rust, x.ours) for x in d] == [
        ("body-text", "$ position", "at line 1 column 22", "none")]
    assert allowlist.match(d[0]).key == "decode-error-position"
    d = compare_responses("c", a, resp(422, b"missing field `model`", ctype="text/plain"))
    assert [x.where for x in d] == ["$"] and allowlist.match(d[0]) is None


def test_request_id_format_and_echo():
    gen_r = resp(x_request_id="chatcmpl-" + "A1" * 12)
    assert compare_responses("c", gen_r, resp(x_request_id="cmpl-" + "a" * 24))[0].where == "x-request-id"
    assert compare_responses("c", gen_r, resp(x_request_id="chatcmpl-" + "a" * 23))  # length counts
    # a client id echoed by one side must be echoed by the other
    d = compare_responses("c", resp(x_request_id="mine"), resp(x_request_id="chatcmpl-" + "a" * 24),
                          sent_request_id="mine")
    assert [(x.rust, x.ours) for x in d] == [("mine", "chatcmpl-" + "a" * 24)]
    # an id neither echoed (too long, say) is compared by format
    assert compare_responses("c", gen_r, resp(x_request_id="chatcmpl-" + "b" * 24), sent_request_id="r" * 200) == []


def test_routed_worker_header_and_allow():
    urls = ["http://w1", "http://w2"]
    a = resp(x_smg_routed_worker_id="http://w1", allow="GET, HEAD")
    assert compare_responses("c", a, resp(x_smg_routed_worker_id="http://w2", allow="HEAD,GET"),
                             worker_urls=urls) == []
    d = compare_responses("c", a, resp(allow="GET"), worker_urls=urls)
    assert where(d) == {("header", "x-smg-routed-worker-id"), ("header", "allow")}


SSE_A = (b'data: {"id":"1","choices":[{"delta":{"content":"a"}}]}\n\n'
         b'data: {"id":"1","choices":[{"delta":{"content":"b"}}]}\n\n: keep-alive\n\ndata: [DONE]\n\n')


def test_sse_same_framing_is_no_difference_comments_ignored():
    b = SSE_A.replace(b": keep-alive\n\n", b"").replace(b'"a"', b'"zz"')
    assert compare_responses("c", resp(body=SSE_A, ctype="text/event-stream"),
                             resp(body=b, ctype="text/event-stream")) == []


def test_sse_missing_done_and_shape_change_are_found():
    b = SSE_A.replace(b"data: [DONE]\n\n", b"").replace(b'"content":"b"', b'"text":"b"')
    d = compare_responses("c", resp(body=SSE_A, ctype="text/event-stream"), resp(body=b, ctype="text/event-stream"))
    framing = [x for x in d if x.where == "framing"]
    assert framing and framing[0].rust == "data:jsonx2 data:[DONE]" and framing[0].ours == "data:jsonx2"
    assert ("sse", "event[message].choices[].delta.content") in where(d)


def test_sse_event_names_are_framing():
    a = b"event: message_start\ndata: {}\n\nevent: message_stop\ndata: {}\n\n"
    b = b"event: message_start\ndata: {}\n\ndata: {}\n\n"
    d = compare_responses("c", resp(body=a, ctype="text/event-stream"), resp(body=b, ctype="text/event-stream"))
    assert [x.where for x in d] == ["framing"]


def rec(target="/v1/chat/completions", headers=(), body=b"{}", method="POST"):
    return {"seq": 1, "method": method, "target": target, "headers": [list(h) for h in headers],
            "body": body.decode() if isinstance(body, bytes) else json.dumps(body)}


def test_worker_requests_transport_headers_ignored_names_and_sent_values_compared():
    sent = [("Authorization", "Bearer k"), ("Cookie", "a=b")]
    a = rec(headers=[("host", "w:1"), ("content-length", "2"), ("authorization", "Bearer k")])
    b = rec(headers=[("host", "w:1"), ("connection", "keep-alive"), ("authorization", "Bearer other"),
                     ("cookie", "a=b")])
    d = compare_worker_requests("c", [a], [b], sent)
    assert {(x.aspect, x.where, x.rust, x.ours) for x in d} == {
        ("worker-header", "authorization", "'Bearer k'", "'Bearer other'"),
        ("worker-header", "cookie", "absent", "forwarded")}


def test_worker_requests_count_line_and_body():
    a = rec(body={"model": "m", "stream": False})
    b = rec(target="/rerank", body={"model": "m", "n": 1})
    d = compare_worker_requests("c", [a], [b, b], [])
    assert {(x.aspect, x.where) for x in d} == {("worker-request", "count"), ("worker-request", "request line"),
                                               ("worker-body", "$.n"), ("worker-body", "$.stream")}
    assert compare_worker_requests("c", [rec(body=b"raw")], [rec(body=b"raw")], []) == []


def test_worker_body_fields_only_ours_forwarded_as_sent_are_marked():
    sent = {"model": "m", "extra": 1, "stream": None}
    a = rec(body={"model": "m", "stream": False, "logprobs": False})
    b = rec(body=sent)
    d = {x.where: (x.rust, x.ours) for x in compare_worker_requests("c", [a], [b], [], sent)}
    # ours forwarded the body unchanged: every difference is the other gateway's re-encoding
    assert d == {"$.extra": ("absent", "as sent"), "$.stream": ("false", "as sent"),
                 "$.logprobs": ("false", "as sent")}
    assert all(allowlist.match(Difference("c", "worker-body", w, r, o)) for w, (r, o) in d.items())
    # ours changed the body: only a top-level key kept with the client's value is "as sent"
    b = rec(body={"model": "m", "extra": 1, "other": 2})
    d = {x.where: (x.rust, x.ours) for x in compare_worker_requests("c", [a], [b], [], sent)}
    assert d["$.extra"] == ("absent", "as sent") and d["$.other"] == ("absent", "2")
    # a field ours added (the client did not send it) is not "as sent", and not allowed
    c = rec(body={"model": "m", "injected": 1})
    d = compare_worker_requests("c", [rec(body={"model": "m"})], [c], [], {"model": "m"})
    assert [(x.where, x.ours) for x in d] == [("$.injected", "1")] and allowlist.match(d[0]) is None


def test_generated_request_id_forwarded_compared_by_format():
    a = rec(headers=[("x-request-id", "chatcmpl-" + "A" * 24)])
    b = rec(headers=[("x-request-id", "chatcmpl-" + "b" * 24)])
    assert compare_worker_requests("c", [a], [b], []) == []
    b = rec(headers=[("x-request-id", "req-" + "b" * 24)])
    assert [x.where for x in compare_worker_requests("c", [a], [b], [])] == ["x-request-id"]


def test_allow_list_entries_are_documented_and_reasoned():
    with open(os.path.join(ROOT, "docs", "compatibility.md")) as f:
        doc = f.read()
    section = doc.split("## Known differences", 1)
    assert len(section) == 2, "docs/compatibility.md has no 'Known differences' section"
    keys = [e.key for e in allowlist.ALLOWED]
    assert len(keys) == len(set(keys))
    for e in allowlist.ALLOWED:
        aspects = e.aspect if isinstance(e.aspect, tuple) else (e.aspect,)
        assert aspects and all(a in compare.ASPECTS for a in aspects), e.key
        assert len(e.reason) > 40, e.key
        assert f"`{e.key}`" in section[1], f"{e.key} is not listed in docs/compatibility.md (Known differences)"


def test_allow_list_matching_and_stale_detection(monkeypatch):
    entry = allowlist.Allowed(key="k", reason="r", aspect="header", where="accept", case="POST *",
                              ours=("absent", "none"))
    monkeypatch.setattr(allowlist, "ALLOWED", (entry,))
    led = ledger.Ledger()
    d1 = Difference("POST /x", "header", "accept", "forwarded", "absent")
    d2 = Difference("POST /x", "header", "accept", "forwarded", "'*/*'")
    d3 = Difference("POST /x", "header", "accept", "forwarded", "none")
    header = frozenset({"header"})
    assert led.check("POST /x", [d1, d2, d3], header) == [d2]
    assert led.stale() == [] and led.counts["allow-listed differences"] == 2
    # its cases ran, it matched nothing: stale
    led = ledger.Ledger()
    led.check("POST /x", [d2], header)
    assert led.stale() == [entry]
    # its cases did not run (a -k selection, say), or ran without comparing its aspect: not stale
    led = ledger.Ledger()
    led.check("GET /y", [], header)
    led.check("POST /x", [], frozenset({"status", "body"}))
    assert led.stale() == []


def test_summary_counts_every_counter():
    led = ledger.Ledger()
    led.route("GET /a")
    led.route("GET /a")
    led.route("POST /b")
    led.count("bad-input cases", 3)
    led.count("metric families compared", 7)
    lines = led.summary_lines()
    for name in ledger.COUNTERS:
        assert any(line.startswith(name + ":") for line in lines), name
    assert "routes compared: 2" in lines and "bad-input cases: 3" in lines
    with pytest.raises(AssertionError):
        led.count("no such counter")


@pytest.mark.parametrize("entry,expected", [
    (("t1", "/v1/chat/completions", {"a": 1}), ("t1", "POST", "/v1/chat/completions", [], {"a": 1})),
    ({"id": "t2", "path": "/generate", "raw": b"{x", "headers": {"X-A": "1"}},
     ("t2", "POST", "/generate", [("X-A", "1")], b"{x")),
    ({"name": "t3", "route": "/v1/embeddings", "method": "PUT", "json": {"input": 1}},
     ("t3", "PUT", "/v1/embeddings", [], {"input": 1})),
    ({"name": "t5", "endpoint": "/v1/completions", "body": b'{"model":"mock-model"}', "content_type": None},
     ("t5", "POST", "/v1/completions", [("Content-Type", None)], b'{"model":"echo-model"}')),
    (SimpleNamespace(id="t4", path="/v1/messages", body={"m": 1}, method="POST", headers=None),
     ("t4", "POST", "/v1/messages", [], {"m": 1})),
])
def test_validation_entries_of_every_form_are_read(entry, expected):
    assert _from_entry(entry) == expected


def test_validation_entry_without_path_is_unreadable():
    with pytest.raises(ValueError):
        _from_entry({"id": "x", "body": {}})


def test_fallback_table_ids_are_unique():
    ids = [e[0] for e in FALLBACK]
    assert len(ids) == len(set(ids))


def test_aspects_compared_follow_the_answers():
    j = resp(body={"a": 1})
    t = resp(body=b"OK", ctype="text/plain")
    sse = resp(body=SSE_A, ctype="text/event-stream")
    assert compare.aspects_compared(j, j, False) == {"status", "content-type", "header", "body", "error"}
    assert "body-text" in compare.aspects_compared(t, t, False)
    assert "body-text" not in compare.aspects_compared(t, t, False, text_exact=False)
    streamed = compare.aspects_compared(sse, sse, False)
    assert "sse" in streamed and "body" not in streamed
    assert {"worker-request", "worker-header", "worker-body"} <= compare.aspects_compared(j, resp(500, {}), True)
