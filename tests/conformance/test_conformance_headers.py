"""Request headers of every kind, sent through both gateways to the echo worker: what was
forwarded (names, and the values of what the client sent) and how the answer differs.

Kinds: the forwarded allow-list (authorization, request and correlation ids, W3C trace
context), credentials a gateway might strip or keep (cookie, x-api-key), proxy and
client metadata (x-forwarded-for, user-agent, accept), OpenAI client headers,
custom headers, the gateway's own ``x-smg-*`` controls, the routing key, hop-by-hop
headers, and the request id (honoured, too long, absent).
"""
from __future__ import annotations

import pytest

from tests.conformance.case import Case, assert_same
from tests.conformance.rig import ECHO_MODEL

CHAT = {"model": ECHO_MODEL, "messages": [{"role": "user", "content": "which headers arrive?"}]}
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

HEADER_KINDS = {
    "authorization": [("Authorization", "Bearer sk-conformance-client")],
    "x-request-id honoured": [("X-Request-Id", "conf-request-0001")],
    "x-request-id too long": [("X-Request-Id", "r" * 200)],
    "x-request-id-suffixed": [("X-Request-Id-Parent", "conf-parent-0001")],
    "x-correlation-id": [("X-Correlation-Id", "conf-corr-0001")],
    "trace context": [("traceparent", TRACEPARENT), ("tracestate", "vendor=conformance")],
    "cookie": [("Cookie", "session=abc; theme=dark")],
    "x-api-key": [("X-Api-Key", "sk-ant-conformance")],
    "x-forwarded-for": [("X-Forwarded-For", "203.0.113.7, 198.51.100.2")],
    "forwarded and real ip": [("Forwarded", "for=203.0.113.7"), ("X-Real-Ip", "203.0.113.7")],
    "openai client headers": [("OpenAI-Organization", "org-conformance"), ("OpenAI-Project", "proj-conformance"),
                              ("OpenAI-Beta", "assistants=v2"), ("X-Stainless-Lang", "python")],
    "anthropic client headers": [("anthropic-version", "2023-06-01"), ("anthropic-beta", "tools-2024-04-04")],
    "user-agent and accept": [("User-Agent", "conformance/1.0"), ("Accept", "application/json")],
    "custom": [("X-Custom-Thing", "custom-value"), ("X-Another", "1")],
    "x-smg-routing-key": [("X-SMG-Routing-Key", "conf-session-42")],
    "x-smg-priority": [("X-SMG-Priority", "bulk")],
    "x-smg-tenant-id": [("X-SMG-Tenant-Id", "tenant-conformance")],
    "x-smg-target-worker": [("X-SMG-Target-Worker", "0")],
    "x-smg-other": [("X-SMG-Unknown-Control", "1")],
    "hop-by-hop": [("Connection", "keep-alive, X-Drop-Me"), ("X-Drop-Me", "1"), ("TE", "trailers"),
                   ("Proxy-Authorization", "Basic Zm9vOmJhcg=="), ("Upgrade", "h2c")],
}

CASES = [Case(f"headers: {name}", "POST", "/v1/chat/completions", headers=hdrs, body=CHAT, worker=True)
         for name, hdrs in HEADER_KINDS.items()]
CASES.append(Case("headers: streamed, with request id and routing key", "POST", "/v1/chat/completions",
                  headers=[("X-Request-Id", "conf-stream-0001"), ("X-SMG-Routing-Key", "conf-session-43")],
                  body={**CHAT, "stream": True}, worker=True))
CASES.append(Case("headers: request id on a gateway route", "GET", "/v1/models",
                  headers=[("X-Request-Id", "conf-models-0001")]))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_header_kind(rig, case):
    assert_same(rig, case)
