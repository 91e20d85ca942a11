"""The forwarding decision and the request head built from it (no sockets)."""
from __future__ import annotations

import uuid

import pytest

from smg.errors import ConfigError
from smg.upstream import forwarding as F
from smg.upstream.forwarding import Forwarding
from smg.upstream.http1_leg import request_head
from smg.workers.worker import Worker

CLIENT = [(b"authorization", b"Bearer c"), (b"x-request-id", b"r1"), (b"x-request-id-a", b"a"),
          (b"x-correlation-id", b"c1"), (b"traceparent", b"tp"), (b"tracestate", b"ts"),
          (b"x-smg-routing-key", b"k"), (b"anthropic-version", b"v"), (b"cookie", b"x=y"),
          (b"x-api-key", b"xk"), (b"x-forwarded-for", b"1.2.3.4"), (b"openai-organization", b"o"),
          (b"x-smg-priority", b"bulk"), (b"x-custom", b"1"), (b"content-type", b"text/plain"),
          (b"accept-encoding", b"gzip"), (b"connection", b"keep-alive")]


def names(head: bytes) -> list:
    lines = head.split(b"\r\n")[1:]
    return [ln.split(b":", 1)[0] for ln in lines if ln]


def value(head: bytes, name: bytes):
    for ln in head.split(b"\r\n")[1:]:
        n, _, v = ln.partition(b": ")
        if n == name:
            return v
    return None


def test_default_is_smg_s_allow_list_plus_what_the_gateway_sets():
    head = request_head(b"POST", b"/v1/chat/completions", Worker("http://w:1"), CLIENT, 7)
    assert names(head) == [b"host", b"content-type", b"content-length", b"authorization", b"x-request-id",
                           b"x-request-id-a", b"x-correlation-id", b"traceparent", b"tracestate",
                           b"x-smg-routing-key", b"anthropic-version"]
    assert value(head, b"content-type") == b"application/json" and value(head, b"host") == b"w:1"
    assert head.endswith(b"\r\n\r\n") and head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")


def test_a_get_carries_no_body_headers_and_no_id_unless_minted():
    head = request_head(b"GET", b"/get_model_info", Worker("http://w:1"), [], 0)
    assert names(head) == [b"host"]
    minted = request_head(b"GET", b"/x", Worker("http://w:1"), [], 0, fwd=Forwarding(request_id="uuid4"))
    assert uuid.UUID(value(minted, b"x-request-id").decode()).version == 4
    kept = request_head(b"GET", b"/x", Worker("http://w:1"), [(b"x-request-id", b"mine")], 0,
                        fwd=Forwarding(request_id="uuid4"))
    assert names(kept).count(b"x-request-id") == 1 and value(kept, b"x-request-id") == b"mine"


def test_trace_worker_key_and_consumed_credential_replace_the_client_s():
    w = Worker("http://w:1")
    w.api_key = b"sk-w"
    head = request_head(b"POST", b"/x", w, CLIENT, 2, trace=[(b"traceparent", b"gw")])
    assert names(head).count(b"authorization") == 1 and value(head, b"authorization") == b"Bearer sk-w"
    assert value(head, b"traceparent") == b"gw" and value(head, b"tracestate") is None
    head = request_head(b"POST", b"/x", Worker("http://w:1"), CLIENT, 2, drop=b"authorization")
    assert value(head, b"authorization") is None and value(head, b"x-request-id") == b"r1"


def test_extra_names_and_prefixes_widen_it():
    fwd = Forwarding(("X-Custom", "openai-*"))
    head = request_head(b"POST", b"/x", Worker("http://w:1"), CLIENT, 2, fwd=fwd)
    assert b"x-custom" in names(head) and b"openai-organization" in names(head) and b"cookie" not in names(head)
    assert "x-custom" in fwd.describe() and "openai-*" in fwd.describe()


def test_forward_all_keeps_end_to_end_headers_and_the_client_s_content_type():
    head = request_head(b"POST", b"/x", Worker("http://w:1"), CLIENT, 2, fwd=Forwarding(forward_all=True))
    n = names(head)
    assert b"cookie" in n and b"x-custom" in n and b"connection" not in n
    assert n.count(b"content-type") == 1 and value(head, b"content-type") == b"text/plain"


@pytest.mark.parametrize("bad", ["host", "content-length", "transfer-encoding", "bad name", "", "*", "x:y"])
def test_names_that_cannot_be_forwarded_are_refused(bad):
    with pytest.raises(ConfigError):
        Forwarding((bad,))


def test_unknown_request_id_mode_is_refused():
    with pytest.raises(ConfigError):
        Forwarding(request_id="gateway")


def test_the_verdict_cache_is_bounded():
    fwd = Forwarding()
    headers = [(b"x-n%d" % i, b"v") for i in range(F._VERDICT_MAX + 50)]
    request_head(b"POST", b"/x", Worker("http://w:1"), headers, 2, fwd=fwd)
    assert len(fwd.verdict) == F._VERDICT_MAX
    assert fwd.classify(b"x-request-id-zzz") == F.FORWARD and fwd.classify(b"x-n999999") == F.DROP


def test_the_client_s_request_id_is_replaced_by_the_request_s_once():
    # an invalid client id (too long) was replaced by the gateway's: that one goes upstream
    hdrs = [(b"x-request-id", b"r" * 200), (b"x-request-id", b"dup")]
    for fwd in (Forwarding(), Forwarding(forward_all=True)):
        head = request_head(b"POST", b"/x", Worker("http://w:1"), hdrs, 2, fwd=fwd, rid=b"chatcmpl-abc")
        assert names(head).count(b"x-request-id") == 1 and value(head, b"x-request-id") == b"chatcmpl-abc"
    head = request_head(b"POST", b"/x", Worker("http://w:1"), [], 2, rid=b"chatcmpl-abc")
    assert value(head, b"x-request-id") is None
