"""H2ServerConnection: the downstream HTTP/2 connection (h2c with prior knowledge, or
h2 chosen by ALPN over TLS), framed by the sans-I/O ``h2`` library.

Theory of operation: ``H2ServerConnection(site, transport, initial)`` takes the
transport over (``set_protocol``), sends the server's SETTINGS (from the settings:
``--http2-max-concurrent-streams``, ``--http2-initial-window-size``,
``--http2-max-frame-size``, ``--http2-max-header-list-size``) and serves ``initial``,
the bytes already read (the connection preface, when the HTTP/1.1 connection spotted
it). Each read passes the flood guard (smg/server/h2_guard.py), then one
``H2Connection.receive_data`` (HPACK through smg/server/h2_hpack.py, which also checks
the request fields that h2's inbound validation, switched off, would have); its events
drive the streams (smg/server/h2_stream.py), each a response sink of its own; all the
frames a read produced leave in one transport write. Frames produced outside a read
(an exchange relaying a worker's answer) are coalesced into one write per loop
iteration.

Rules:
- One stream's slowness never blocks another: response DATA waits per stream for its
  window (the stream's backlog, bounded by pausing its producer); when windows open
  (WINDOW_UPDATE, SETTINGS) or the transport drains (``resume_writing``) the pump
  sends the backlogs one frame per stream per round, round-robin.
- While the transport is write-paused, producers are paused and new heads and DATA
  wait in their streams, so a client that stops reading grows nothing but those
  bounded backlogs (at most ``--http2-max-concurrent-streams`` of them; a stream
  past that limit is a protocol error h2 ends the connection for); PING and SETTINGS
  ACKs are bounded by the guard's limits. Reading never stops, so a client blocked
  writing to the gateway can never deadlock against it.
- Floods end the connection with GOAWAY (ENHANCE_YOUR_CALM; FRAME_SIZE_ERROR for an
  over-long frame; h2's own code for protocol errors it detects, HPACK bombs among
  them) — counted by reason in ``smg_http2_goaway_total`` — and every open stream is
  aborted; the gateway goes on serving everyone else.
- Draining (``drain``, at shutdown): GOAWAY NO_ERROR naming the last stream taken;
  open streams finish (the gateway closes what is left when its grace period ends);
  newer streams are refused (RST_STREAM REFUSED_STREAM); the connection closes when
  the last stream ends. The GOAWAY is written as a frame of its own because h2 allows
  nothing more on a connection once it has sent one.
- A client GOAWAY, a FIN or the connection's loss aborts every stream (499 for those
  being answered): h2 sends nothing after a GOAWAY received, so open streams cannot be
  finished anyway.
- Timeouts come from the gateway's sweep (``check_timeouts``): a connection with no
  stream for ``--idle-connection-timeout-secs`` is closed (GOAWAY NO_ERROR); a header
  block left open past ``--header-read-timeout-secs`` ends the connection; request
  bodies follow the HTTP/1.1 rules (408); a response stream stuck for
  ``--http2-zero-window-timeout-secs`` is reset.
- PINGs are answered by h2 itself (in the same write as the read that carried them).
"""
from __future__ import annotations

import asyncio
import logging

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (ConnectionTerminated, DataReceived, RemoteSettingsChanged, RequestReceived,
                       StreamEnded, StreamReset, TrailersReceived, WindowUpdated)
from h2.exceptions import (DenialOfServiceError, FlowControlError, FrameTooLargeError, StreamClosedError,
                           StreamIDTooLowError, TooManyStreamsError)
from h2.exceptions import ProtocolError as H2ProtocolError
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame, RstStreamFrame

from smg.errors import ConfigError
from smg.server import h2_guard
from smg.server.h2_hpack import CheckedDecoder, MemoEncoder
from smg.server.h2_stream import H2Stream

log = logging.getLogger("smg.server.h2")

ROUND_BYTES = 65536   # the pump writes out after this many bytes of one round

# immutable: one configuration for every connection (bytes headers; no outbound
# validation: the gateway's own headers are lower-case and the worker's come from the
# HTTP/1.1 parser, which lower-cases names and refuses bad bytes; no inbound validation
# or normalization by h2: smg.server.h2_hpack.check_fields and
# smg.server.h2_stream.request_head apply the same rules at a fraction of the cost)
_CONFIG = H2Configuration(client_side=False, header_encoding=None, validate_outbound_headers=False,
                          normalize_outbound_headers=False, validate_inbound_headers=False,
                          normalize_inbound_headers=False)


class _Connection(H2Connection):
    """h2's connection, remembering fewer closed streams: h2 keeps how each closed
    stream ended (to tell late frames from protocol errors) for the last 65536 of them
    by default, megabytes per long-lived connection; frames legitimately crossing a
    close concern the last few hundred streams at most.

    ``_receive_frame`` is h2's (4.x) less its trace line, which formats every frame
    received (``repr`` of a frame serializes its body again) whether or not anything
    logs it: a twentieth of a small request's cost."""

    MAX_CLOSED_STREAMS = 4096

    def _receive_frame(self, frame) -> list:
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
        except StreamClosedError as e:
            # closed by RST_STREAM: a stream error (RST_STREAM back); otherwise a
            # connection error
            if self._stream_is_closed_by_reset(e.stream_id):
                f = RstStreamFrame(e.stream_id)
                f.error_code = e.error_code
                self._prepare_for_sending([f])
                return e._events
            raise
        except StreamIDTooLowError as e:
            # a stream already forgotten: closed by RST_STREAM is a stream error, by
            # END_STREAM a connection error (STREAM_CLOSED), implicitly a PROTOCOL_ERROR
            if self._stream_is_closed_by_reset(e.stream_id):
                f = RstStreamFrame(e.stream_id)
                f.error_code = ErrorCodes.STREAM_CLOSED
                self._prepare_for_sending([f])
                return []
            if self._stream_is_closed_by_end(e.stream_id):
                raise StreamClosedError(e.stream_id) from e
            raise
        self._prepare_for_sending(frames)
        return events


# GOAWAY reasons besides the guard's (smg_http2_goaway_total{reason})
PROTOCOL_ERROR = "protocol_error"
HEADER_LIST = "header_list"        # HPACK bomb: decoded header list over the limit
TOO_MANY_STREAMS = "too_many_streams"
FLOW_CONTROL = "flow_control"
HEADER_TIMEOUT = "header_timeout"
IDLE = "idle"
SHUTDOWN = "shutdown"

_MAX_WINDOW = 2**31 - 1
_MAX_FRAME = 2**24 - 1


def check_config(cfg) -> None:
    """Raises ConfigError for HTTP/2 settings RFC 9113 does not allow (the table has
    only minimums)."""
    if cfg.http2_initial_window_size > _MAX_WINDOW:
        raise ConfigError("--http2-initial-window-size", f"must be at most {_MAX_WINDOW}")
    if cfg.http2_max_frame_size > _MAX_FRAME:
        raise ConfigError("--http2-max-frame-size", f"must be at most {_MAX_FRAME}")


def _code_name(code) -> str:
    """A client's RST_STREAM error code as a bounded label ("cancel", "no_error", ...)."""
    return code.name.lower() if isinstance(code, ErrorCodes) else "other"


def _h2_reason(exc: H2ProtocolError) -> str:
    if isinstance(exc, DenialOfServiceError):
        return HEADER_LIST
    if isinstance(exc, TooManyStreamsError):
        return TOO_MANY_STREAMS
    if isinstance(exc, FlowControlError):
        return FLOW_CONTROL
    if isinstance(exc, FrameTooLargeError):
        return h2_guard.FRAME_SIZE
    return PROTOCOL_ERROR


class H2ServerConnection(asyncio.Protocol):
    protocol = "h2"

    __slots__ = ("site", "transport", "h2", "guard", "streams", "blocked", "closing", "goaway_id",
                 "write_paused", "in_read", "flush_handle", "loop", "idle_since", "stats", "_opened", "body_held",
                 "unacked", "ack_at",
                 "__weakref__")

    def __init__(self, site, transport, initial: bytes = b"") -> None:
        cfg = site.config
        self.site = site
        self.transport = transport
        self.loop = None            # the running loop, looked up at the first deferred flush
        conn = self.h2 = _Connection(_CONFIG)
        conn.encoder = MemoEncoder()
        conn.decoder = CheckedDecoder(cfg.http2_max_header_list_size)
        # the server's SETTINGS hold from the first frame on (the client may not exceed
        # them; the window is never below the RFC default, so a client that sends its
        # first request before reading them is never out of bounds)
        conn.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: cfg.http2_max_concurrent_streams,
            SettingCodes.INITIAL_WINDOW_SIZE: cfg.http2_initial_window_size,
            SettingCodes.MAX_FRAME_SIZE: cfg.http2_max_frame_size,
            SettingCodes.MAX_HEADER_LIST_SIZE: cfg.http2_max_header_list_size,
        })
        conn.max_inbound_frame_size = cfg.http2_max_frame_size
        conn.initiate_connection()
        if cfg.http2_initial_window_size > 65535:
            conn.increment_flow_control_window(cfg.http2_initial_window_size - 65535)
        now = site.now
        self.guard = h2_guard.FrameGuard(cfg.http2_max_frame_size, cfg.http2_max_header_list_size,
                                         cfg.http2_flood_window_secs, cfg.http2_max_resets_per_window,
                                         cfg.http2_max_pings_per_window, cfg.http2_max_settings_per_window, now)
        self.streams: dict = {}     # stream id -> H2Stream not yet over
        self.blocked: dict = {}     # stream id -> H2Stream with a backlog (insertion order = turn)
        self.closing = False
        self.goaway_id = -1         # last stream id named by a draining GOAWAY (-1: none sent)
        self.write_paused = False
        self.in_read = False        # inside data_received: its end writes everything out
        self.flush_handle = None
        self.idle_since = now
        self.body_held = 0          # request-body bytes its streams hold in the site's body budget
        self.unacked = 0            # request bytes taken in whose connection window is not given back yet
        self.ack_at = max(65535, cfg.http2_initial_window_size) // 4
        obs = site.observer
        self.stats = obs.metrics if obs is not None else None  # smg.observability.metrics.Metrics
        self._opened = self.stats.http2_streams.cell(()) if self.stats is not None else None
        site.connections.add(self)
        transport.set_protocol(self)
        if initial:
            self.data_received(initial)
        else:
            self._write_out()

    # -- what the gateway and the metrics read -------------------------------------------

    @property
    def answering(self) -> bool:
        """Some stream's request is being answered (``Site.inflight``)."""
        for st in self.streams.values():
            if st.answering:
                return True
        return False

    @property
    def stream_count(self) -> int:
        return len(self.streams)

    @property
    def peer(self) -> str | None:
        t = self.transport
        addr = t.get_extra_info("peername") if t is not None else None
        return addr[0] if type(addr) is tuple and addr and type(addr[0]) is str and addr[0] else None

    # -- asyncio callbacks ------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        reason = self.guard.feed(data, self.site.now)
        if reason is not None:
            self._shut(reason, ErrorCodes.FRAME_SIZE_ERROR if reason == h2_guard.FRAME_SIZE
                       else ErrorCodes.ENHANCE_YOUR_CALM)
            return
        try:
            events = self.h2.receive_data(data)
        except H2ProtocolError as e:
            # h2 has queued its GOAWAY (with the error's code) already
            log.info("HTTP/2 connection from %s ended: %s", self.peer, e)
            self._shut(_h2_reason(e), None)
            return
        self.in_read = True
        try:
            self._events(events)
        finally:
            self.in_read = False
        if not self.closing:
            if self.unacked >= self.ack_at:
                self._give_back()
            self._write_out()

    def _give_back(self) -> None:
        """One connection WINDOW_UPDATE for the request bytes taken in and not yet
        acknowledged. Batched up to a quarter of the connection's window: with h2's own
        manager (which acknowledges the other DATA frames, and waits for half a window)
        the client is never left without window."""
        n = self.unacked
        self.unacked = 0
        self.h2.increment_flow_control_window(n)

    def _events(self, events: list) -> None:
        streams = self.streams
        for ev in events:
            t = type(ev)
            if t is DataReceived:
                sid = ev.stream_id
                st = streams.get(sid)
                if st is not None:
                    st.on_data(ev.data)
                # the bytes are in the request buffer (or dropped): give the window back;
                # the last frame of a body reopens only the connection's window (the
                # stream's is no longer used), in one WINDOW_UPDATE for many (_give_back)
                if ev.stream_ended is None:
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, sid)
                else:
                    self.unacked += ev.flow_controlled_length
            elif t is RequestReceived:
                self._on_request(ev)
            elif t is StreamEnded:
                st = streams.get(ev.stream_id)
                if st is not None:
                    st.on_end()
            elif t is WindowUpdated or t is RemoteSettingsChanged:
                if self.blocked:
                    self._pump()
            elif t is StreamReset:
                st = streams.get(ev.stream_id)
                if st is not None:
                    self._count_reset("client", _code_name(ev.error_code))
                    st.on_reset()
            elif t is ConnectionTerminated:
                self._abort_streams()
                self.close()
                return
            elif t is TrailersReceived:
                # h2 validates no inbound headers (smg.server.h2_hpack): trailers carry
                # no pseudo-header fields (RFC 9113 §8.1); they are otherwise dropped
                for n, _ in ev.headers:
                    if n[:1] == b":":
                        self.malformed(f"pseudo-header field {n!r} in trailers")
                        return
            if self.closing:
                return

    def _on_request(self, ev) -> None:
        sid = ev.stream_id
        if self.goaway_id >= 0 and sid > self.goaway_id:
            self.reset_stream(sid, ErrorCodes.REFUSED_STREAM, "refused")
            return
        st = H2Stream(self, sid, self.site)
        self.streams[sid] = st
        if self._opened is not None:
            self._opened[0] += 1
        st.on_request(ev.headers, ev.stream_ended is not None)

    def eof_received(self):
        return False  # an HTTP/2 client that half-closes has left: close (connection_lost aborts)

    def connection_lost(self, exc) -> None:
        self.closing = True
        self.site.connections.discard(self)
        if self.flush_handle is not None:
            self.flush_handle.cancel()
            self.flush_handle = None
        self._abort_streams()

    def pause_writing(self) -> None:
        self.write_paused = True
        for st in list(self.streams.values()):
            st.sync_pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.closing:
            return
        if self.blocked:
            self._pump()
        for st in list(self.streams.values()):
            st.sync_pause()
        self._write_out()

    # -- what the streams call ----------------------------------------------------------

    def want_flush(self) -> None:
        """Frames are waiting in h2: written at the end of the read being handled, else
        once per loop iteration."""
        if self.in_read or self.flush_handle is not None or self.closing:
            return
        loop = self.loop
        if loop is None:
            loop = self.loop = asyncio.get_running_loop()
        self.flush_handle = loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self.flush_handle = None
        if not self.closing:
            self._write_out()

    def _write_out(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.transport.write(data)

    def malformed(self, why: str) -> None:
        """A request h2 framed but RFC 9113 calls malformed: the connection ends with
        GOAWAY PROTOCOL_ERROR, as when h2's own validation refused it."""
        log.info("HTTP/2 connection from %s ended: malformed request: %s", self.peer, why)
        self._shut(PROTOCOL_ERROR, ErrorCodes.PROTOCOL_ERROR)

    def block(self, st) -> None:
        """``st`` has response bytes waiting for window."""
        if st.sid not in self.blocked:
            self.blocked[st.sid] = st

    def reset_stream(self, sid: int, code, reason: str | None = None) -> None:
        """RST_STREAM ``code``; ``reason`` (a bounded word) counts it in
        ``smg_http2_stream_resets_total{side="gateway"}``."""
        try:
            self.h2.reset_stream(sid, code)
        except H2ProtocolError:
            return  # already closed in h2's view: nothing to send
        if reason is not None:
            self._count_reset("gateway", reason)
        self.want_flush()

    def stream_closed(self, st) -> None:
        """``st`` is over (ended, reset, or lost)."""
        sid = st.sid
        self.streams.pop(sid, None)
        self.blocked.pop(sid, None)
        if not self.streams:
            self.idle_since = self.site.now
            if self.goaway_id >= 0 and not self.closing:
                # draining and the last stream is done: what it wrote goes, then the close
                self.close()

    def _pump(self) -> None:
        """Sends backlogged DATA while windows and the transport allow: one frame per
        stream per round, each served stream going to the back of the line."""
        blocked = self.blocked
        while blocked and not self.write_paused and not self.closing:
            sent = 0
            for sid, st in list(blocked.items()):
                n = st.push(ROUND_BYTES)
                if n and sid in blocked:
                    del blocked[sid]
                    if st.pending():
                        blocked[sid] = st  # to the back of the line
                sent += n
                if sent >= ROUND_BYTES or self.closing:
                    break
            if not sent:
                return
            self._write_out()  # may pause writing, which ends the loop

    # -- ending -------------------------------------------------------------------------

    def drain(self) -> None:
        """Shutdown: GOAWAY NO_ERROR; open streams finish, then the connection closes."""
        if self.closing or self.goaway_id >= 0:
            return
        self.goaway_id = last = self.h2.highest_inbound_stream_id
        self._count_goaway(SHUTDOWN)
        self._write_out()
        self.transport.write(GoAwayFrame(stream_id=0, last_stream_id=last, error_code=0).serialize())
        if not self.streams:
            self.close()

    def close(self) -> None:
        """Ends the connection now: GOAWAY, every open stream aborted, transport closed."""
        if self.closing:
            return
        self._goaway(ErrorCodes.NO_ERROR)
        self._shut(None, None)

    def _goaway(self, code) -> None:
        """h2's GOAWAY; after a draining one, naming the same last stream (a GOAWAY may
        never raise the last stream id, RFC 9113 §6.8)."""
        last = self.goaway_id if self.goaway_id >= 0 else None
        try:
            self.h2.close_connection(code, last_stream_id=last)
        except H2ProtocolError:
            pass  # h2 is closed already (a GOAWAY crossed)

    def _shut(self, reason: str | None, code) -> None:
        """GOAWAY (``code``: h2 queued one already when None), streams aborted, closed."""
        if self.closing:
            return
        if reason is not None:
            self._count_goaway(reason)
            if code is not None:
                self._goaway(code)
        self.closing = True
        self._abort_streams()
        t = self.transport
        try:
            self._write_out()
        except Exception:  # the transport is gone already
            pass
        self.site.connections.discard(self)
        if t.get_write_buffer_size() and self.write_paused:
            t.abort()  # the client is not reading: do not wait for the GOAWAY to drain
        else:
            t.close()

    def _abort_streams(self) -> None:
        for st in list(self.streams.values()):
            st.on_reset()

    def _count_goaway(self, reason: str) -> None:
        if self.stats is not None:
            self.stats.http2_goaway.inc((reason,))

    def _count_reset(self, side: str, reason: str) -> None:
        if self.stats is not None:
            self.stats.http2_resets.inc((side, reason))

    # -- timeouts (called by the gateway sweep) ----------------------------------------

    def check_timeouts(self, now: float, cfg) -> None:
        if self.closing:
            return
        guard = self.guard
        if guard.in_header_block and now - guard.block_since > cfg.header_read_timeout_secs:
            self._shut(HEADER_TIMEOUT, ErrorCodes.ENHANCE_YOUR_CALM)
            return
        streams = self.streams
        if not streams:
            if now - self.idle_since > cfg.idle_connection_timeout_secs:
                self._count_goaway(IDLE)
                self.close()
            return
        for st in list(streams.values()):
            st.check_timeouts(now, cfg)
        if not self.closing:
            self._write_out()
