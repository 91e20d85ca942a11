"""Pure-Python twin of smg/_native/http1.pyx: HTTP/1.1 request and response parsers.

Theory of operation: ``feed(data)`` appends to a receive buffer and runs the state
machine as far as the bytes allow, returning every event completed (a batch: one call
per network read). Bad input raises ``smg.errors.RemoteProtocolError`` carrying the
status a server should answer with, and the parser enters the ERROR state, after which
every ``feed`` raises again. Any other exception from ``feed`` is a bug.

Rules kept (RFC 9112; differences from h11, the reference oracle, are marked *; the
test module tests/native/test_http1.py lists each one as it shows on its corpus):
- A line ends in CRLF or a bare LF (RFC 9112 §2.2 MAY); a CR anywhere else is an error,
  raised as soon as the byte after the CR arrives (not when the head is complete: a
  client that sent one is not waited for until its timeout).
- * A RequestParser ignores empty lines (CRLF or LF) before a request-line (RFC 9112
  §2.2: a server "SHOULD ignore at least one empty line (CRLF) received prior to the
  request-line"), including between pipelined requests. They count towards the next
  head's ``max_head_size``, so a peer streaming CRLFs gets a 431 after that many bytes.
  h11 rejects them (400). A ResponseParser does not skip them (§2.2 speaks of
  servers; a worker sending them is broken): 502.
- * Every limit holds however the bytes are split between ``feed`` calls: the head
  (request/status line + headers + blank line), a chunk-size line and a trailer
  section may each be at most ``max_head_size`` bytes, complete or not. h11 only
  limits an *incomplete* event, so it accepts a big head that arrives in one read
  and rejects the same head sent in small pieces.
- Request errors carry 400 unless said (431 oversized head or trailers, 501
  Transfer-Encoding, 505 version). When a message has several faults, the one
  reported is h11's choice: a head that starts with a byte below 0x21 fails at once
  (h11's early check for TLS or binary garbage on the port), then the request/status
  line's syntax, then every header line's syntax, then the fields' meaning in order,
  then Host, and the version last (505 is for an otherwise well-formed request).
  A bare CR and the size limit are reported in byte order, so that the split cannot
  change the outcome: a bare CR within ``max_head_size`` bytes is a 400 even in a head
  that is also too big (its next byte may be the first one past the limit); a bare CR
  past the limit, a 431.
- * Every ResponseParser error carries 502 (RFC 9112 §6.3: a proxy that receives an
  invalid response "MUST ... send a 502 (Bad Gateway) response to the client"; §5.2
  says the same of obs-fold). h11 uses its request-side statuses (400/431/501).
- * obs-fold (a header line starting with SP/HTAB) is rejected (RFC 9112 §5.2 allows a
  server to reject it with 400, a gateway to discard the response with 502); h11
  unfolds it.
- * Content-Length together with Transfer-Encoding is rejected (RFC 9112 §6.1: such a
  message "ought to be handled as an error"; it is the classic smuggling vector); h11
  lets chunked win.
- Conflicting Content-Length values are rejected, both inside one field (``5, 6``) and
  across fields; identical repeats (byte for byte, as h11 compares them) are kept once
  (RFC 9112 §6.3 item 5).
- Transfer-Encoding other than exactly ``chunked`` → 501 (RFC 9112 §6.1).
- * An HTTP/1.0 request with ``Transfer-Encoding: chunked`` → 400 (RFC 9112 §6.1: a
  server that receives TE in an HTTP/1.0 message "MUST treat the message as if the
  framing is faulty"; nginx refuses it too); h11 reads it as chunked. (Any other TE
  is the 501 above, found first.) A ResponseParser still accepts an HTTP/1.0 chunked
  response, as h11 does: HTTP/1.0 never keeps the worker connection alive, so its
  framing cannot desynchronise a later exchange.
- * Chunk extensions must be ``;name[=value]`` with token names and token or
  quoted-string values, with optional BWS around ``;`` and ``=`` (RFC 9112 §7.1.1);
  h11 accepts anything after ``;`` but no whitespace before it.
- * Chunk sizes are at most 16 hex digits (leading zeros included) and at most
  ``MAX_CHUNK_SIZE`` = 2**63 - 1, the largest length a signed 64-bit integer holds
  (nginx's limit too: its off_t maximum); Content-Length is at most 18 decimal digits
  (the native twin stores both in 64-bit integers); h11 allows 20 digits of each.
- * A chunk line fails as soon as it can no longer be valid, not when its LF arrives:
  a first byte that is not HEXDIG, a 17th digit, a size past ``MAX_CHUNK_SIZE``, a
  byte after the size other than OWS, ``;`` or CR, or a bare CR. (So sixteen ``f``
  are a 400 at once; h11 waits for the line, then for 2**64 - 1 bytes.)
- * Control characters (other than HTAB) in header names, values and the reason
  phrase are rejected (RFC 9110 §5.5: field-vchar is VCHAR / obs-text, other CTLs are
  invalid; RFC 9112 §4: reason-phrase is HTAB / SP / VCHAR / obs-text); h11 lets
  every CTL but NUL and whitespace through.
- * Only HTTP/1.0 and HTTP/1.1 are accepted; any other version → 505 (RFC 9110
  §15.6.6); h11 takes any ``DIGIT.DIGIT``. (RFC 9110 §2.5 says a 1.x with x > 1
  SHOULD be read as 1.1; no such version exists, and refusing it is the safer side.)
- HTTP/1.1 requests need a Host header, and no request may carry two (RFC 9112 §3.2).
- A response's ``feed_eof`` after a 1xx and before the final response is an error:
  the exchange is unfinished.
- ``expect_continue`` is set when an HTTP/1.1 request's Expect list (RFC 9110 §10.1.1,
  ``#expectation``, case-insensitive) holds ``100-continue``.
- * After a message that ends the connection (``Connection: close`` or HTTP/1.0),
  further bytes are ignored: the connection is going to be closed, and RFC 9112 §9.6
  says a server that sends "close" "MUST NOT process any further requests received on
  that connection". h11 raises on them instead.
"""
from __future__ import annotations

import re

from smg.errors import RemoteProtocolError
from smg.http1.events import (
    Data,
    EndOfMessage,
    InformationalResponse,
    Request,
    Response,
)

# 16 KiB, the same default as h11's max_incomplete_event_size (it cites node.js' 80 KiB,
# tomcat's 8 KiB, IIS' 16 KiB and Apache's 8 KiB per line as precedents).
DEFAULT_MAX_HEAD_SIZE = 16 * 1024

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/(\d\.\d)\Z")
_STATUS_LINE = re.compile(rb"HTTP/(\d\.\d) ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*))?\Z")
_HEADER = re.compile(rb"(" + _TOKEN + rb"):[ \t]*((?:[\x21-\x7e\x80-\xff](?:[\x20\x21-\x7e\x80-\xff\t]*[\x21-\x7e\x80-\xff])?)?)[ \t]*\Z")
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,16})((?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN
    + rb'|"(?:[\t\x20\x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t\x20-\x7e\x80-\xff])*"))?)*)[ \t]*\Z'
)
_CONTENT_LENGTH = re.compile(rb"[0-9]{1,18}\Z")
_HEX_DIGITS = re.compile(rb"[0-9A-Fa-f]*")

# The largest chunk-size accepted: 2**63 - 1 (see the module docstring).
MAX_CHUNK_SIZE = 2**63 - 1

# Parser states (mirrored as a cdef enum in the native twin).
H1_HEAD = 0
H1_BODY_LENGTH = 1
H1_CHUNK_SIZE = 2
H1_CHUNK_DATA = 3
H1_CHUNK_DATA_END = 4
H1_TRAILERS = 5
H1_BODY_UNTIL_CLOSE = 6
H1_CLOSED = 7
H1_ERROR = 8


def _find_head_end(buf: bytearray, start: int) -> int:
    """Index just past the blank line ending a head, or -1."""
    i = buf.find(b"\n", start)
    while i != -1:
        j = i + 1
        if j < len(buf) and buf[j] == 0x0A:
            return j + 1
        if j + 1 < len(buf) and buf[j] == 0x0D and buf[j + 1] == 0x0A:
            return j + 2
        if j >= len(buf) or (j + 1 >= len(buf) and buf[j] == 0x0D):
            return -1
        i = buf.find(b"\n", j)
    return -1


def _find_section_end(buf: bytearray, start: int) -> int:
    """Like ``_find_head_end``, but the section may be empty (trailers after ``0``)."""
    if len(buf) > start:
        if buf[start] == 0x0A:
            return start + 1
        if buf[start] == 0x0D:
            if len(buf) == start + 1:
                return -1
            if buf[start + 1] == 0x0A:
                return start + 2
    return _find_head_end(buf, start)


def _bare_cr(buf: bytearray, start: int, stop: int) -> bool:
    """A CR followed by a byte other than LF in ``buf[start:stop]``? A CR at ``stop - 1``
    is undecided (its next byte has not arrived, or lies past a limit)."""
    i = buf.find(b"\r", start, stop)
    while i != -1:
        if i + 1 >= stop:
            return False
        if buf[i + 1] != 0x0A:
            return True
        i = buf.find(b"\r", i + 2, stop)
    return False


def _chunk_prefix_bad(line: bytes) -> bool:
    """``line`` (not empty, no LF yet) starts a chunk line: is no complete line valid any
    more? (The size part of ``_CHUNK_LINE``, and no bare CR.)"""
    m = _HEX_DIGITS.match(line)  # always matches (maybe nothing)
    digits = m.end() if m is not None else 0
    if digits == 0 or digits > 16 or int(line[:digits], 16) > MAX_CHUNK_SIZE:
        return True
    if digits < len(line) and line[digits] not in b" \t;\r":
        return True
    cr = line.find(b"\r")
    return cr != -1 and cr + 1 < len(line)


def _split_lines(head: bytes) -> list:
    lines = head.split(b"\n")
    out = []
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]
        if b"\r" in line:
            raise RemoteProtocolError("bare CR in message head")
        out.append(line)
    # the head ends with an empty line (and the split leaves one more empty item)
    while out and out[-1] == b"":
        out.pop()
    return out


def _parse_headers(lines: list) -> tuple:
    """Returns (headers, content_length or None, chunked, connection tokens, host count,
    expect 100-continue).

    Every line's syntax is checked before any field's meaning (h11's order), so a
    malformed line is a 400 even when an earlier field would have been a 501.
    """
    matches = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise RemoteProtocolError("obsolete line folding is not accepted")
        m = _HEADER.match(line)
        if m is None:
            raise RemoteProtocolError("malformed header line")
        matches.append(m)
    headers = []
    content_length = None
    chunked = False
    saw_te = False
    connection = b""
    hosts = 0
    expect = False
    for m in matches:
        name = m.group(1).lower()
        value = m.group(2)
        if name == b"content-length":
            values = {v.strip() for v in value.split(b",")}
            if len(values) != 1:
                raise RemoteProtocolError("conflicting Content-Length headers")
            v = values.pop()
            if _CONTENT_LENGTH.match(v) is None:
                raise RemoteProtocolError("bad Content-Length")
            if content_length is None:
                content_length = v
                headers.append((name, v))
            elif content_length != v:
                raise RemoteProtocolError("conflicting Content-Length headers")
            continue
        if name == b"transfer-encoding":
            if saw_te:
                raise RemoteProtocolError("multiple Transfer-Encoding headers", 501)
            if value.lower() != b"chunked":
                raise RemoteProtocolError("only Transfer-Encoding: chunked is supported", 501)
            saw_te = chunked = True
            value = b"chunked"
        elif name == b"connection":
            connection = connection + b"," + value.lower() if connection else value.lower()
        elif name == b"host":
            hosts += 1
        elif name == b"expect":
            expect = expect or b"100-continue" in [t.strip() for t in value.lower().split(b",")]
        headers.append((name, value))
    if chunked and content_length is not None:
        raise RemoteProtocolError("both Content-Length and Transfer-Encoding present")
    length = None if content_length is None else int(content_length)
    return headers, length, chunked, connection, hosts, expect


def _has_close(connection: bytes) -> bool:
    return connection != b"" and b"close" in [t.strip() for t in connection.split(b",")]


class _Parser:
    __slots__ = ("_buf", "_interim", "_keep_alive", "_max_head_size", "_remaining", "_skipped",
                 "_state")
    # the status every error carries (ResponseParser), or None to keep each error's own
    _error_status: int | None = None
    # the status of "connection closed in the middle of a message"
    _eof_status: int = 400
    # empty lines before a head are ignored (RequestParser, RFC 9112 §2.2)
    _skip_empty_lines = False

    def __init__(self, max_head_size: int = DEFAULT_MAX_HEAD_SIZE) -> None:
        self._buf = bytearray()
        self._state = H1_HEAD
        self._remaining = 0
        # empty-line bytes skipped before the head being read; they count towards
        # max_head_size, and are reset only when a head completes
        self._skipped = 0
        self._max_head_size = max_head_size
        self._keep_alive = True
        # a 1xx response was read and the final response is still due
        self._interim = False

    @property
    def state(self) -> int:
        return self._state

    @property
    def buffered(self) -> int:
        """Bytes received but not yet turned into events (e.g. an incomplete head)."""
        return len(self._buf)

    def feed(self, data) -> list:
        """Consume bytes; returns the events completed by them.

        Raises:
            RemoteProtocolError: the bytes break HTTP/1.1 (also on every call after).
        """
        state = self._state
        if state == H1_ERROR:
            raise RemoteProtocolError(
                "can't receive data after a protocol error", self._error_status)
        if state == H1_CLOSED:
            return []
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("feed() takes bytes-like data")
        self._buf += data
        events: list = []
        try:
            self._run(events)
        except BaseException as exc:
            # any exception leaves the parser in ERROR (as h11's next_event does)
            self._state = H1_ERROR
            self._buf = bytearray()
            if self._error_status is not None and isinstance(exc, RemoteProtocolError):
                exc.status_hint = self._error_status
            raise
        return events

    def feed_eof(self) -> list:
        """The peer closed the connection.

        Returns:
            [EndOfMessage] for a body delimited by close; [] between messages.
        Raises:
            RemoteProtocolError: the connection closed in the middle of a message
                (for a response, that includes after a 1xx: the final one is due).
        """
        state = self._state
        if state == H1_BODY_UNTIL_CLOSE:
            self._state = H1_CLOSED
            return [EndOfMessage([])]
        if state == H1_CLOSED or (state == H1_HEAD and not self._buf and not self._interim):
            self._state = H1_CLOSED
            return []
        self._state = H1_ERROR
        self._buf = bytearray()
        raise RemoteProtocolError("connection closed in the middle of a message", self._eof_status)

    def _head_too_big(self) -> RemoteProtocolError:
        raise NotImplementedError

    def _on_head(self, lines: list, events: list) -> None:
        raise NotImplementedError

    def _run(self, events: list) -> None:
        buf = self._buf
        pos = 0
        n = len(buf)
        while pos < n or self._state in (H1_BODY_LENGTH,) and self._remaining == 0:
            state = self._state
            if state == H1_HEAD:
                c = buf[pos]
                if c < 0x21:
                    # h11's early check: no head starts with a CTL or SP, so a TLS
                    # handshake (0x16) or other binary garbage on the port fails at once,
                    # not at 431 ...
                    if not self._skip_empty_lines or c not in (0x0A, 0x0D):
                        raise RemoteProtocolError("illegal first byte of a message head")
                    # ... but a request may follow empty lines (RFC 9112 §2.2), which
                    # count towards the head's limit
                    if c == 0x0A:
                        take = 1
                    elif n - pos < 2:
                        break  # a CR: whether an LF follows is still to come
                    elif buf[pos + 1] == 0x0A:
                        take = 2
                    else:
                        raise RemoteProtocolError("bare CR in message head")
                    pos += take
                    self._skipped += take
                    if self._skipped > self._max_head_size:
                        raise self._head_too_big()
                    continue
                # errors come in byte order: a bare CR within the limit is a 400 (its
                # next byte may be the first past it), a bare CR past it loses to the 431
                limit = self._max_head_size - self._skipped
                end = _find_head_end(buf, pos)
                if end == -1:
                    if _bare_cr(buf, pos, min(n, pos + limit + 1)):
                        raise RemoteProtocolError("bare CR in message head")
                    if n - pos > limit:
                        raise self._head_too_big()
                    break
                if end - pos > limit:
                    if _bare_cr(buf, pos, pos + limit + 1):
                        raise RemoteProtocolError("bare CR in message head")
                    raise self._head_too_big()
                lines = _split_lines(bytes(buf[pos:end]))
                pos = end
                self._skipped = 0
                if not lines:
                    raise RemoteProtocolError("empty line where a message head was expected")
                self._on_head(lines, events)
            elif state == H1_BODY_LENGTH:
                take = min(self._remaining, n - pos)
                if take:
                    events.append(Data(bytes(buf[pos:pos + take])))
                    pos += take
                    self._remaining -= take
                if self._remaining == 0:
                    self._end_message(events, [])
                else:
                    break
            elif state == H1_CHUNK_SIZE:
                nl = buf.find(b"\n", pos)
                if nl == -1:
                    if n - pos > self._max_head_size:
                        raise RemoteProtocolError("chunk header too long")
                    # no waiting for the LF of a line that can no longer be valid
                    if _chunk_prefix_bad(bytes(buf[pos:n])):
                        raise RemoteProtocolError("malformed chunk header")
                    break
                if nl + 1 - pos > self._max_head_size:
                    raise RemoteProtocolError("chunk header too long")
                if nl == pos or buf[nl - 1] != 0x0D:
                    raise RemoteProtocolError("chunk header must end in CRLF")
                m = _CHUNK_LINE.match(bytes(buf[pos:nl - 1]))
                if m is None:
                    raise RemoteProtocolError("malformed chunk header")
                pos = nl + 1
                size = int(m.group(1), 16)
                if size > MAX_CHUNK_SIZE:
                    raise RemoteProtocolError("malformed chunk header")
                if size == 0:
                    self._state = H1_TRAILERS
                else:
                    self._remaining = size
                    self._state = H1_CHUNK_DATA
            elif state == H1_CHUNK_DATA:
                take = min(self._remaining, n - pos)
                events.append(Data(bytes(buf[pos:pos + take])))
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = H1_CHUNK_DATA_END
            elif state == H1_CHUNK_DATA_END:
                if n - pos < 2:
                    if buf[pos] != 0x0D:
                        raise RemoteProtocolError("missing CRLF after chunk data")
                    break
                if buf[pos] != 0x0D or buf[pos + 1] != 0x0A:
                    raise RemoteProtocolError("missing CRLF after chunk data")
                pos += 2
                self._state = H1_CHUNK_SIZE
            elif state == H1_TRAILERS:
                # the trailer section is taken whole, like a head
                # (bare CR and the limit in byte order, as for a head)
                limit = self._max_head_size
                end = _find_section_end(buf, pos)
                if end == -1:
                    if _bare_cr(buf, pos, min(n, pos + limit + 1)):
                        raise RemoteProtocolError("bare CR in message head")
                    if n - pos > limit:
                        raise RemoteProtocolError("trailers too long", 431)
                    break
                if end - pos > limit:
                    if _bare_cr(buf, pos, pos + limit + 1):
                        raise RemoteProtocolError("bare CR in message head")
                    raise RemoteProtocolError("trailers too long", 431)
                lines = _split_lines(bytes(buf[pos:end]))
                pos = end
                trailers = _parse_headers(lines)[0] if lines else []
                self._end_message(events, trailers)
            elif state == H1_BODY_UNTIL_CLOSE:
                events.append(Data(bytes(buf[pos:n])))
                pos = n
            else:  # H1_CLOSED: leftover bytes after a closing message are ignored
                pos = n
                break
        del buf[:pos]

    def _end_message(self, events: list, trailers: list) -> None:
        events.append(EndOfMessage(trailers))
        self._state = H1_HEAD if self._keep_alive else H1_CLOSED


class RequestParser(_Parser):
    """Parses the requests a client sends (pipelined requests come out in order)."""

    __slots__ = ()
    _eof_status = 400
    _skip_empty_lines = True

    def _head_too_big(self) -> RemoteProtocolError:
        return RemoteProtocolError("request head too large", 431)

    def _on_head(self, lines: list, events: list) -> None:
        m = _REQUEST_LINE.match(lines[0])
        if m is None:
            raise RemoteProtocolError("malformed request line")
        method, target, version = m.groups()
        headers, content_length, chunked, connection, hosts, expect = _parse_headers(lines[1:])
        # RFC 9112 §3.2: 400 for an HTTP/1.1 request without Host and for *any* request
        # with more than one
        if hosts > 1:
            raise RemoteProtocolError("multiple Host headers")
        if version == b"1.1" and hosts == 0:
            raise RemoteProtocolError("missing Host header")
        # RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message is faulty framing
        if version == b"1.0" and chunked:
            raise RemoteProtocolError("Transfer-Encoding in an HTTP/1.0 request")
        # last: 505 is for an otherwise well-formed request (and h11, which takes any
        # version, then reports the same error we do for the rest)
        if version not in (b"1.1", b"1.0"):
            raise RemoteProtocolError("unsupported HTTP version", 505)
        keep_alive = version == b"1.1" and not _has_close(connection)
        self._keep_alive = keep_alive
        if chunked:
            cl = -1
            self._state = H1_CHUNK_SIZE
        else:
            cl = content_length or 0
            self._remaining = cl
            self._state = H1_BODY_LENGTH
        events.append(Request(method, target, version, headers, cl, chunked, keep_alive,
                              version == b"1.1" and expect))


class ResponseParser(_Parser):
    """Parses the responses a worker sends back.

    Call ``set_request_method`` before each response if the request was HEAD.
    """

    __slots__ = ("_head_request",)
    _eof_status = 502
    _error_status = 502

    def __init__(self, max_head_size: int = DEFAULT_MAX_HEAD_SIZE) -> None:
        super().__init__(max_head_size)
        self._head_request = False

    def set_request_method(self, method: bytes) -> None:
        self._head_request = method == b"HEAD"

    def _head_too_big(self) -> RemoteProtocolError:
        return RemoteProtocolError("response head too large", 502)

    def _on_head(self, lines: list, events: list) -> None:
        m = _STATUS_LINE.match(lines[0])
        if m is None:
            raise RemoteProtocolError("malformed status line")
        version, status, reason = m.groups()
        status_code = int(status)
        headers, content_length, chunked, connection, _, _ = _parse_headers(lines[1:])
        if version not in (b"1.1", b"1.0"):
            raise RemoteProtocolError("unsupported HTTP version", 505)
        if status_code < 200:
            if status_code == 101:
                raise RemoteProtocolError("protocol upgrade is not supported", 502)
            if status_code < 100:
                raise RemoteProtocolError("status code below 100")
            self._interim = True
            events.append(InformationalResponse(status_code, reason or b"", version, headers))
            return
        keep_alive = version == b"1.1" and not _has_close(connection)
        if self._head_request or status_code in (204, 304):
            cl = 0
            chunked = False
            self._remaining = 0
            self._state = H1_BODY_LENGTH
        elif chunked:
            cl = -1
            self._state = H1_CHUNK_SIZE
        elif content_length is not None:
            cl = content_length
            self._remaining = cl
            self._state = H1_BODY_LENGTH
        else:
            cl = -1
            keep_alive = False
            self._state = H1_BODY_UNTIL_CLOSE
        self._keep_alive = keep_alive
        self._head_request = False
        self._interim = False
        events.append(
            Response(status_code, reason or b"", version, headers, cl, chunked, keep_alive))
