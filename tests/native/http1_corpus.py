"""The HTTP/1.1 corpus shared by tests/native/test_http1.py and bench/micro.

Each Case is one connection's worth of bytes from one side: requests as a server reads
them, or responses as the gateway reads them from a worker (the first answering
``method``, any later ones GET). ``eof`` says whether the peer then closes.
``status`` pins our outcome: None when the bytes parse, else the status_hint of the
RemoteProtocolError both twins must raise. Whether h11 agrees is the test module's
business (its H11_DIFFERENCES lists the cases where it does not, with the reason).
"""

from __future__ import annotations

from dataclasses import dataclass

from smg.http1.parser_py import DEFAULT_MAX_HEAD_SIZE


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # "request" | "response"
    data: bytes
    status: int | None = None
    eof: bool = False
    method: bytes = b"GET"
    max_head_size: int = DEFAULT_MAX_HEAD_SIZE

    def __repr__(self) -> str:  # pytest ids stay short
        return self.id


def _req(id, data, status=None, **kw) -> Case:
    return Case(id, "request", data, status, **kw)


def _resp(id, data, status=None, **kw) -> Case:
    return Case(id, "response", data, status, **kw)


GET = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"

REALISTIC_BODY = (
    b'{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"system","content":'
    b'"You are a helpful assistant."},{"role":"user","content":"Write a haiku about HTTP '
    b'request smuggling, and explain each line in one sentence."}],"temperature":0.7,'
    b'"top_p":0.95,"max_tokens":512,"stream":true,"stream_options":{"include_usage":true},'
    b'"user":"user-1234","seed":42}'
)
REALISTIC_POST = (
    b"POST /v1/chat/completions HTTP/1.1\r\n"
    b"Host: gateway.internal:30000\r\n"
    b"User-Agent: OpenAI/Python 1.54.4\r\n"
    b"Accept: application/json\r\n"
    b"Accept-Encoding: gzip, deflate\r\n"
    b"Connection: keep-alive\r\n"
    b"Content-Type: application/json\r\n"
    b"Authorization: Bearer sk-proj-0123456789abcdefghijklmnopqrstuvwxyzABCDEF\r\n"
    b"X-Stainless-Lang: python\r\n"
    b"X-Stainless-Package-Version: 1.54.4\r\n"
    b"X-Stainless-OS: Linux\r\n"
    b"X-Stainless-Arch: x64\r\n"
    b"X-Stainless-Runtime: CPython\r\n"
    b"X-Stainless-Runtime-Version: 3.11.7\r\n"
    b"X-Stainless-Async: async:asyncio\r\n"
    b"X-Stainless-Retry-Count: 0\r\n"
    b"X-Request-Id: 7f3c2a9e-1b4d-4e8f-9a6b-2c5d8e1f0a3b\r\n"
    b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
    b"Content-Length: " + str(len(REALISTIC_BODY)).encode() + b"\r\n"
    b"\r\n" + REALISTIC_BODY
)


def _chunk(data: bytes, ext: bytes = b"") -> bytes:
    return b"%x%s\r\n%s\r\n" % (len(data), ext, data)


SSE_EVENT = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1731000000,'
    b'"model":"llama","choices":[{"index":0,"delta":{"content":"token"},"finish_reason":null}]}\n\n'
)
SSE_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
    + b"".join(_chunk(SSE_EVENT) for _ in range(100))
    + _chunk(b"data: [DONE]\n\n")
    + b"0\r\n\r\n"
)

BIG_BODY = bytes(range(256)) * 80  # 20 KiB, every byte value

REQUESTS = [
    # --- valid ------------------------------------------------------------------------
    _req("get-minimal", GET),
    _req("get-no-eof-needed-then-eof", GET, eof=True),
    _req(
        "get-realistic-headers",
        b"GET /v1/models?limit=10&after=m%201 HTTP/1.1\r\nHost: gw:8080\r\n"
        b"User-Agent: curl/8.5.0\r\nAccept: */*\r\nX-Empty:\r\nX-Spaces:   a b  \t\r\n"
        b"X-Obs-Text: caf\xc3\xa9 \xff\r\nCookie: a=1; b=2\r\n\r\n",
    ),
    _req("realistic-chat-post", REALISTIC_POST),
    _req("keepalive-two", GET + b"GET /2 HTTP/1.1\r\nHost: example.com\r\n\r\n", eof=True),
    _req(
        "pipelined-mixed",
        b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
        b"POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n"
        b"DELETE /d HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
    ),
    _req("pipelined-20", b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(20))),
    _req("http10-get", b"GET / HTTP/1.0\r\n\r\n", eof=True),
    _req("http10-keepalive-header", b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nHost: a\r\n\r\n"),
    _req("http10-post-cl", b"POST /x HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc", eof=True),
    _req("connection-close", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", eof=True),
    _req(
        "connection-close-in-list",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n"
        b"connection:  CLOSE \r\n\r\n",
    ),
    _req(
        "connection-closed-token-not-close",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n" + GET,
    ),
    _req(
        "expect-100-continue",
        b"POST /v1/completions HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
        b"Content-Length: 4\r\n\r\nbody",
    ),
    _req(
        "expect-100-continue-case-and-list",
        b"PUT /x HTTP/1.1\r\nHost: a\r\nExpect: foo, 100-Continue\r\nContent-Length: 1\r\n\r\nz",
    ),
    _req(
        "expect-100-continue-http10",
        b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nz",
    ),
    _req("expect-other", b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n"),
    _req("lf-only-lines", b"GET / HTTP/1.1\nHost: a\nX: y\n\n"),
    _req("mixed-crlf-lf", b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\n"),
    _req("post-cl", b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world"),
    _req("post-cl-zero", b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"),
    _req(
        "post-cl-leading-zeros", b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 0003\r\n\r\nabc"
    ),
    _req(
        "post-big-body",
        b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s" % (len(BIG_BODY), BIG_BODY),
    ),
    _req(
        "cl-duplicate-identical",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello",
    ),
    _req(
        "cl-list-identical", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 , 5,5\r\n\r\nhello"
    ),
    _req(
        "chunked-basic",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n",
    ),
    _req(
        "chunked-uppercase-hex-and-te-case",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ChUnKeD\r\n\r\n"
        b"A\r\n0123456789\r\n00000a\r\nabcdefghij\r\n000\r\n\r\n",
    ),
    _req(
        "chunked-extensions",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'4;name=value;flag;q="quoted \\" string;="\r\nwiki\r\n'
        b'5;ext=""\r\npedia\r\n0;last=1\r\n\r\n',
    ),
    _req(
        "chunked-trailing-ows",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3 \t\r\nabc\r\n0 \r\n\r\n",
    ),
    _req(
        "chunked-trailers",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
        b"3\r\nabc\r\n0\r\nX-Checksum: 123\r\nX-Other:  v w \r\n\r\n",
    ),
    _req(
        "chunked-trailers-lf",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\n\n" + GET,
    ),
    _req(
        "chunked-empty",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    _req(
        "chunked-big",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        + _chunk(BIG_BODY[:9000])
        + _chunk(BIG_BODY[9000:], b";x=y")
        + b"0\r\n\r\n",
    ),
    # absolute-form (RFC 9112 §3.2.2: a server MUST accept it); the target is passed on
    # as received (the server normalises it; the Host it must then ignore is still
    # required of an HTTP/1.1 request, §3.2)
    _req(
        "absolute-form-target",
        b"GET http://example.com:80/a?b=c HTTP/1.1\r\nHost: example.com\r\n\r\n",
    ),
    _req(
        "absolute-form-https-post",
        b"POST https://api.example.com/v1/chat/completions?x=1 HTTP/1.1\r\n"
        b"Host: api.example.com\r\nContent-Length: 2\r\n\r\n{}",
    ),
    _req(
        "absolute-form-host-differs",
        b"GET http://a.example/x HTTP/1.1\r\nHost: b.example\r\n\r\n",
    ),
    _req("absolute-form-no-path", b"GET HTTP://EXAMPLE.COM HTTP/1.1\r\nHost: example.com\r\n\r\n"),
    _req(
        "absolute-form-ipv6-userinfo",
        b"GET http://user@[::1]:8080/p%20q?r#s HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
    ),
    _req("absolute-form-http10-no-host", b"GET http://example.com/ HTTP/1.0\r\n\r\n", eof=True),
    _req(
        "absolute-form-pipelined",
        b"GET http://example.com/1 HTTP/1.1\r\nHost: example.com\r\n\r\n" + GET
        + b"DELETE http://h/2 HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nz",
    ),
    # empty lines before a request-line are ignored (RFC 9112 §2.2), and count towards
    # that head's max_head_size
    _req("leading-crlf", b"\r\n" + GET),
    _req("leading-lf", b"\n" + GET),
    _req("leading-empty-lines-mixed", b"\r\n\n\r\n\n" + GET, eof=True),
    _req("empty-line-only", b"\r\n\r\n"),
    _req("empty-lines-then-eof", b"\r\n\n", eof=True),
    _req("crlf-between-requests", GET + b"\r\n" + GET),
    _req(
        "crlf-after-post-body",
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\r\n" + GET,
    ),
    _req(
        "crlf-after-chunked-body",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nhi\r\n0\r\n\r\n\r\n\n" + GET,
    ),
    _req(
        "leading-empty-lines-at-limit",
        b"\n" + b"\r\n" * 18 + GET.replace(b"example.com", b"a"),
        max_head_size=64,
    ),
    _req(
        "empty-lines-count-per-request",
        (b"\n" + b"\r\n" * 18 + GET.replace(b"example.com", b"a")) * 3,
        max_head_size=64,
    ),
    _req("asterisk-options", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
    _req("token-method", b"M-SEARCH! * HTTP/1.1\r\nHost: a\r\n\r\n"),
    _req(
        "many-headers",
        b"GET / HTTP/1.1\r\nHost: a\r\n"
        + b"".join(b"X-H%d: value number %d\r\n" % (i, i) for i in range(100))
        + b"\r\n",
    ),
    _req(
        "head-at-limit",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"p" * (1024 - 36) + b"\r\n\r\n",
        max_head_size=1024,
    ),
    _req("partial-head", b"GET / HTTP/1.1\r\nHost: a\r\n"),
    _req("partial-cl-body", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc"),
    _req(
        "partial-chunked-body",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    ),
    _req(
        "partial-chunk-crlf",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r",
    ),
    _req(
        "partial-trailers",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\r\n",
    ),
    _req("eof-between-messages", GET + GET, eof=True),
    _req(
        "bytes-after-connection-close",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" + GET,
        eof=True,
    ),
    _req("bytes-after-http10", b"GET / HTTP/1.0\r\n\r\n" + b"garbage\r\n\r\n"),
    _req(
        "chunk-ext-bws",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3 ; a = b ;c\r\nabc\r\n0\r\n\r\n",
    ),
    # --- invalid: framing / smuggling ---------------------------------------------------
    _req(
        "cl-and-te",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    _req(
        "te-and-cl",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 5\r\n\r\n0\r\n\r\n",
        400,
    ),
    _req(
        "cl-conflicting-fields",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        400,
    ),
    _req(
        "cl-conflicting-list",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!",
        400,
    ),
    _req(
        "cl-same-number-different-bytes",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 05\r\n\r\nhello",
        400,
    ),
    _req(
        "cl-empty-list-item", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,\r\n\r\nhello", 400
    ),
    _req("cl-not-a-number", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", 400),
    _req("cl-negative", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
    _req("cl-plus-sign", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", 400),
    _req("cl-empty", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400),
    _req(
        "cl-19-digits",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000000000000000\r\n\r\n",
        400,
    ),
    _req("te-gzip", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    _req(
        "te-gzip-chunked",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        501,
    ),
    _req(
        "te-chunked-twice-in-list",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        501,
    ),
    _req(
        "te-two-fields",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    _req("te-empty", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", 501),
    # RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 is faulty framing
    _req(
        "chunked-http10",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        400,
        eof=True,
    ),
    _req(
        "chunked-http10-keepalive",
        b"POST / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n"
        b"transfer-encoding: CHUNKED\r\n\r\n0\r\n\r\n",
        400,
    ),
    _req("chunked-http10-head-only", b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    _req(
        "chunked-http10-second-request",
        GET + b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    _req("te-gzip-http10", b"POST / HTTP/1.0\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    _req(
        "chunk-size-not-hex",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
    ),
    _req(
        "chunk-size-negative",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    _req(
        "chunk-size-empty",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
        400,
    ),
    _req(
        "chunk-size-0x-prefix",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0x5\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    _req(
        "chunk-size-17-hex-digits",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
        400,
    ),
    # sizes past 2**63 - 1 (sixteen f: 2**64 - 1) fail at once, with or without the CRLF
    _req(
        "chunk-size-16-f",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
        400,
    ),
    _req(
        "chunk-size-16-f-incomplete",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff",
        400,
    ),
    _req(
        "chunk-size-2-63",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n8000000000000000;a\r\n",
        400,
    ),
    _req(
        "chunk-size-2-63-incomplete",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n8000000000000000",
        400,
    ),
    _req(
        "chunk-size-max",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n7FFFFFFFFFFFFFFF\r\nhello",
    ),
    _req(
        "chunk-size-max-incomplete",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n7fffffffffffffff",
    ),
    _req(
        "chunk-size-16-digits-leading-zeros",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"000000000000000a\r\n0123456789\r\n0000000000000000\r\n\r\n",
    ),
    _req(
        "chunk-size-17-hex-digits-incomplete",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000001",
        400,
    ),
    # other chunk lines that can no longer be valid fail before their LF
    _req(
        "chunk-size-not-hex-incomplete",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nz",
        400,
    ),
    _req(
        "chunk-size-bad-byte-incomplete",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5x",
        400,
    ),
    _req(
        "chunk-line-bare-cr-incomplete",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\rc",
        400,
    ),
    _req(
        "chunk-line-valid-incomplete",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 \t; a = \"x\\\r",
    ),
    _req(
        "chunk-size-lf-only",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        400,
    ),
    _req(
        "chunk-data-missing-crlf",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        400,
    ),
    _req(
        "chunk-data-too-long",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n",
        400,
    ),
    _req(
        "chunk-ext-no-name",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;=x\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    _req(
        "chunk-ext-bad-value",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;a=b@c\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    _req(
        "chunk-ext-unterminated-quote",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'3;a="bc\r\nabc\r\n0\r\n\r\n',
        400,
    ),
    _req(
        "chunk-ext-bare-cr",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;a=b\rc\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    _req(
        "chunk-line-too-long",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;a=" + b"x" * 2000 + b"\r\nabc\r\n0\r\n\r\n",
        400,
        max_head_size=1024,
    ),
    _req(
        "trailer-too-long",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\nX-T: " + b"t" * 2000 + b"\r\n\r\n",
        431,
        max_head_size=1024,
    ),
    _req(
        "trailer-obs-fold",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\nX-T: a\r\n b\r\n\r\n",
        400,
    ),
    _req(
        "trailer-bare-cr-incomplete",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\rb",
        400,
    ),
    _req(
        "trailer-bare-cr-at-limit",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\nX: " + b"t" * 60 + b"\rb" + b"t" * 40,
        400,
        max_head_size=64,
    ),
    _req(
        "trailer-bare-cr-past-limit",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\nX: " + b"t" * 61 + b"\rb" + b"t" * 40 + b"\r\n\r\n",
        431,
        max_head_size=64,
    ),
    _req(
        "trailer-bad-line",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\nno colon here\r\n\r\n",
        400,
    ),
    # --- invalid: head ----------------------------------------------------------------
    _req("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n  b\r\n\r\n", 400),
    _req("obs-fold-tab", b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n\tb\r\n\r\n", 400),
    _req("obs-fold-first-line", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),
    _req("bare-cr-in-value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
    _req("bare-cr-line-end", b"GET / HTTP/1.1\rHost: a\r\n\r\n", 400),
    _req("bare-cr-in-request-line", b"GET /\r HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    _req("cr-cr-lf", b"GET / HTTP/1.1\r\r\nHost: a\r\n\r\n", 400),
    # a bare CR fails as soon as the byte after it arrives, not when the head is complete
    _req("bare-cr-line-end-incomplete", b"GET / HTTP/1.1\rHost: a\r\n", 400),
    _req("bare-cr-header-end-incomplete", b"GET / HTTP/1.1\r\nHost: a\rX-A: b\r\n", 400),
    _req("bare-cr-in-value-incomplete", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb", 400),
    _req("bare-cr-after-lf-incomplete", b"GET / HTTP/1.1\r\nHost: a\r\n\rX", 400),
    _req("cr-at-end-incomplete", b"GET / HTTP/1.1\r\nHost: a\r"),
    _req("lf-cr-at-end-incomplete", b"GET / HTTP/1.1\r\nHost: a\r\n\r"),
    _req("leading-cr-then-eof", b"\r", 400, eof=True),
    _req("leading-cr-not-lf", b"\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    _req("leading-crlf-then-cr-not-lf", b"\r\n\r\n\r ", 400),
    # ... and against the size limit, errors come in byte order: the CR is the 64th byte
    # (the last allowed; its next byte is the first past the limit) -> 400; the CR is the
    # 65th byte -> 431
    _req(
        "bare-cr-at-limit",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 35 + b"\rw" + b"x" * 40,
        400,
        max_head_size=64,
    ),
    _req(
        "bare-cr-at-limit-complete",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 35 + b"\rw" + b"x" * 40 + b"\r\n\r\n",
        400,
        max_head_size=64,
    ),
    _req(
        "bare-cr-past-limit",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 36 + b"\rw" + b"x" * 40,
        431,
        max_head_size=64,
    ),
    _req(
        "bare-cr-past-limit-complete",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 36 + b"\rw" + b"x" * 40 + b"\r\n\r\n",
        431,
        max_head_size=64,
    ),
    _req(
        "bare-cr-at-limit-after-empty-lines",
        b"\r\n" * 5 + b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 25 + b"\rw" + b"x" * 40,
        400,
        max_head_size=64,
    ),
    _req(
        "bare-cr-past-limit-after-empty-lines",
        b"\r\n" * 5 + b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 26 + b"\rw" + b"x" * 40,
        431,
        max_head_size=64,
    ),
    _req("ctl-in-value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 400),
    _req("del-in-value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", 400),
    _req("nul-in-value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
    _req("vt-in-value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x0bb\r\n\r\n", 400),
    _req("ctl-in-name", b"GET / HTTP/1.1\r\nHost: a\r\nX\x01Y: a\r\n\r\n", 400),
    _req("space-before-colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    _req("empty-header-name", b"GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n", 400),
    _req("header-without-colon", b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400),
    _req("non-token-name", b"GET / HTTP/1.1\r\nHost: a\r\nX(y): v\r\n\r\n", 400),
    _req(
        "head-too-long", b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n", 431
    ),
    _req(
        "head-too-long-small-limit",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"p" * (1025 - 36) + b"\r\n\r\n",
        431,
        max_head_size=1024,
    ),
    _req("request-line-too-long-incomplete", b"GET /" + b"a" * 20000, 431),
    _req("missing-host", b"GET / HTTP/1.1\r\nUser-Agent: x\r\n\r\n", 400),
    _req("two-hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    _req("two-hosts-http10", b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", 400),
    _req("version-2-0", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    _req("version-1-2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
    _req("version-0-9", b"GET / HTTP/0.9\r\n\r\n", 505),
    _req("version-missing", b"GET /\r\nHost: a\r\n\r\n", 400),
    _req("version-lowercase", b"GET / http/1.1\r\nHost: a\r\n\r\n", 400),
    _req("version-two-digit-major", b"GET / HTTP/11.1\r\nHost: a\r\n\r\n", 400),
    _req("version-no-minor", b"GET / HTTP/1\r\nHost: a\r\n\r\n", 400),
    _req("request-line-double-space", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    _req("request-line-trailing-space", b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
    _req("method-not-token", b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    _req("target-with-ctl", b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    _req("target-obs-text", b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    _req(
        "tls-client-hello",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",
        400,
    ),
    _req("bad-second-request", GET + b"BAD\r\n\r\n", 400),
    _req(
        "tls-client-hello-incomplete",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\xab" * 64,
        400,
    ),
    _req("leading-space", b" GET / HTTP/1.1\r\nHost: a\r\n", 400),
    _req("leading-crlf-then-space", b"\r\n GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    _req("leading-crlf-then-tls", b"\r\n\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
    _req(
        "leading-empty-lines-over-limit",
        b"\n\n" + b"\r\n" * 18 + GET.replace(b"example.com", b"a"),
        431,
        max_head_size=64,
    ),
    _req("leading-empty-lines-flood", b"\r\n" * (DEFAULT_MAX_HEAD_SIZE // 2 + 1), 431),
    # several faults at once: the one reported (so the status) is h11's choice
    _req(
        "te-gzip-then-malformed-line",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nbad line\r\n\r\n",
        400,
    ),
    _req(
        "te-gzip-then-cl-conflict",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nContent-Length: 1, 2\r\n\r\n",
        501,
    ),
    _req(
        "bad-version-and-te-gzip",
        b"POST / HTTP/2.0\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        501,
    ),
    _req("bad-version-and-two-hosts", b"GET / HTTP/2.0\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    _req("bad-version-and-malformed-line", b"GET / HTTP/3.0\r\nHost: a\r\nno colon\r\n\r\n", 400),
    # --- invalid: connection closes mid-message ----------------------------------------
    _req("eof-mid-head", b"GET / HTTP/1.1\r\nHost: a\r\n", 400, eof=True),
    _req(
        "eof-mid-cl-body",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc",
        400,
        eof=True,
    ),
    _req(
        "eof-mid-chunked",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        400,
        eof=True,
    ),
    _req(
        "eof-mid-trailers",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\r\n",
        400,
        eof=True,
    ),
]

RESPONSES = [
    # --- valid ------------------------------------------------------------------------
    _resp(
        "resp-200-cl",
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b'Content-Length: 13\r\n\r\n{"ok": true}\n',
    ),
    _resp(
        "resp-200-chunked-ext-trailers",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;a=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Usage: 42\r\n\r\n",
    ),
    _resp("resp-sse-stream", SSE_RESPONSE),
    _resp(
        "resp-keepalive-three",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
        eof=True,
    ),
    _resp(
        "resp-204-then-200",
        b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
    ),
    _resp(
        "resp-204-with-cl",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
    ),
    _resp(
        "resp-304-with-cl",
        b'HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\nETag: "x"\r\n\r\n'
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
    ),
    _resp(
        "resp-head-cl",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
        method=b"HEAD",
    ),
    _resp(
        "resp-head-chunked",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        method=b"HEAD",
    ),
    _resp(
        "resp-100-continue",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ),
    _resp(
        "resp-103-early-hints-twice",
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    ),
    _resp(
        "resp-1xx-to-head",
        b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
        method=b"HEAD",
    ),
    _resp(
        "resp-until-close",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nbody until close",
        eof=True,
    ),
    _resp("resp-until-close-empty", b"HTTP/1.1 200 OK\r\n\r\n", eof=True),
    _resp("resp-until-close-no-eof", b"HTTP/1.1 200 OK\r\n\r\nsome body"),
    _resp("resp-http10-until-close", b"HTTP/1.0 200 OK\r\n\r\nold school", eof=True),
    _resp("resp-http10-cl", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi", eof=True),
    _resp(
        "resp-connection-close-cl",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi",
        eof=True,
    ),
    _resp("resp-no-reason", b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"),
    _resp("resp-empty-reason", b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n"),
    _resp(
        "resp-reason-spaces-obs-text",
        b"HTTP/1.1 404 Not  Found \xe9\t\r\nContent-Length: 0\r\n\r\n",
    ),
    _resp("resp-status-999", b"HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n"),
    _resp("resp-lf-only", b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"),
    _resp(
        "resp-big-cl",
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BIG_BODY), BIG_BODY),
    ),
    _resp("resp-partial-head", b"HTTP/1.1 200 OK\r\nContent-"),
    _resp("resp-partial-body", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
    _resp(
        "resp-http10-chunked",
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        eof=True,
    ),
    _resp(
        "resp-chunk-size-max",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7fffffffffffffff\r\ndata",
    ),
    _resp("resp-cr-at-end-incomplete", b"HTTP/1.1 200 OK\r\nX: a\r"),
    _resp(
        "resp-bytes-after-close",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi"
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        eof=True,
    ),
    # --- invalid (every ResponseParser error carries 502) --------------------------------
    _resp(
        "resp-cl-and-te",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        502,
    ),
    _resp(
        "resp-cl-conflicting",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        502,
    ),
    _resp("resp-cl-bad", b"HTTP/1.1 200 OK\r\nContent-Length: 3x\r\n\r\nabc", 502),
    _resp("resp-te-gzip", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 502),
    _resp(
        "resp-bad-chunk-size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n", 502
    ),
    _resp(
        "resp-chunk-missing-crlf",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
        502,
    ),
    _resp("resp-status-2-digits", b"HTTP/1.1 20 OK\r\n\r\n", 502),
    _resp("resp-status-4-digits", b"HTTP/1.1 2000 OK\r\n\r\n", 502),
    _resp("resp-status-099", b"HTTP/1.1 099 Low\r\n\r\n", 502),
    _resp(
        "resp-101-switching",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        502,
    ),
    _resp("resp-version-2-0", b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", 502),
    _resp("resp-version-bad", b"HTTP/1.x 200 OK\r\n\r\n", 502),
    _resp("resp-not-http", b"ICY 200 OK\r\n\r\n", 502),
    _resp("resp-leading-crlf", b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 502),
    _resp("resp-leading-lf", b"\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 502),
    _resp(
        "resp-chunk-size-16-f",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
        502,
    ),
    _resp(
        "resp-chunk-size-16-f-incomplete",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nffffffffffffffff",
        502,
    ),
    _resp(
        "resp-chunk-line-bare-cr-incomplete",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r;",
        502,
    ),
    _resp("resp-bare-cr-line-end-incomplete", b"HTTP/1.1 200 OK\rContent-Length: 0\r\n", 502),
    _resp("resp-bare-cr-in-value-incomplete", b"HTTP/1.1 200 OK\r\nX: a\rb", 502),
    _resp(
        "resp-trailer-bare-cr-incomplete",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Usage: 1\r2",
        502,
    ),
    _resp("resp-binary-incomplete", b"\x00\x01\x02", 502),
    _resp("resp-obs-fold", b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n", 502),
    _resp("resp-ctl-in-reason", b"HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n", 502),
    _resp("resp-ctl-in-value", b"HTTP/1.1 200 OK\r\nX: \x1b[31m\r\nContent-Length: 0\r\n\r\n", 502),
    _resp("resp-bare-cr", b"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n", 502),
    _resp("resp-head-too-long-incomplete", b"HTTP/1.1 200 OK\r\nX: " + b"x" * 20000, 502),
    _resp("resp-head-too-long", b"HTTP/1.1 200 OK\r\nX: " + b"x" * 20000 + b"\r\n\r\n", 502),
    _resp("resp-eof-mid-head", b"HTTP/1.1 200 OK\r\n", 502, eof=True),
    _resp(
        "resp-eof-mid-cl-body", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 502, eof=True
    ),
    _resp(
        "resp-eof-mid-chunked",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        502,
        eof=True,
    ),
    _resp("resp-eof-after-1xx", b"HTTP/1.1 100 Continue\r\n\r\n", 502, eof=True),
]

CORPUS = REQUESTS + RESPONSES
BY_ID = {case.id: case for case in CORPUS}
assert len(BY_ID) == len(CORPUS), "duplicate corpus ids"
assert len(BY_ID["head-at-limit"].data) == 1024
assert len(BY_ID["head-too-long-small-limit"].data) == 1025
assert len(BY_ID["leading-empty-lines-at-limit"].data) == 64
assert len(BY_ID["leading-empty-lines-over-limit"].data) == 65
# the bare CR is the 64th byte of the message (empty lines included), or the 65th
for _id, _at in (("bare-cr-at-limit", 63), ("bare-cr-at-limit-complete", 63),
                 ("bare-cr-at-limit-after-empty-lines", 63), ("bare-cr-past-limit", 64),
                 ("bare-cr-past-limit-complete", 64),
                 ("bare-cr-past-limit-after-empty-lines", 64)):
    assert BY_ID[_id].data.index(b"\rw") == _at, _id
_TRAILERS_AT = len(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n")
assert BY_ID["trailer-bare-cr-at-limit"].data.index(b"\rb") - _TRAILERS_AT == 63
assert BY_ID["trailer-bare-cr-past-limit"].data.index(b"\rb") - _TRAILERS_AT == 64
