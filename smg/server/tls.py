"""The listener's TLS: its ``SSLContext``, ALPN, client-certificate checks, reloads.

``ServerTLS.from_config(cfg)`` reads ``--tls-cert-path`` / ``--tls-key-path`` (and
``--tls-client-ca-path``); ``context`` is what the API listener is created with.
``server_context`` builds one context from PEM files (the mock worker uses it too).

Rules:
- ALPN offers ``h2`` then ``http/1.1`` (the server's order wins, RFC 7301 §3.2), and
  ``h2`` only when smg/server/h2_connection.py can be imported: a client is never
  promised a protocol nobody here speaks. A client that does not use ALPN gets
  HTTP/1.1.
- TLS 1.2 or newer, no renegotiation (RFC 9113 §9.2 asks both of an h2 server, and
  HTTP/1.1 loses nothing by it); ciphers are the ``ssl`` module's defaults.
- With ``--tls-client-ca-path`` a client must present a certificate chaining to
  that CA, or its handshake fails (mutual TLS on the data plane).
- ``reload()`` (SIGHUP, or ``Gateway.reload_tls()``) re-reads the files into a new,
  complete context; only when that succeeds is it used, and only for handshakes
  that start afterwards: connections already open keep the certificate they were
  opened with. A file that is missing, unreadable, not PEM, or a key that does not
  match the certificate leaves the current certificate in place and is logged as
  an error. The listener's context cannot be swapped under a running server, so
  every context carries an SNI callback (called for every ClientHello, with or
  without a server name) that moves the new handshake onto the current context.
- Every failure to build the first context is a ``ConfigError`` naming the flag.
"""
from __future__ import annotations

import logging
import ssl

from smg.errors import ConfigError

log = logging.getLogger("smg.server.tls")

H2 = "h2"
HTTP11 = "http/1.1"


def h2_available() -> bool:
    """Whether the HTTP/2 server connection (smg/server/h2_connection.py) can be imported."""
    try:
        from smg.server import h2_connection  # noqa: F401
    except ImportError:
        return False
    return True


def alpn_protocols() -> list:
    """The ALPN list the listener offers, in preference order."""
    return [H2, HTTP11] if h2_available() else [HTTP11]


def server_context(cert_path: str, key_path: str, client_ca_path: str = "",
                   alpn: list | tuple | None = None) -> ssl.SSLContext:
    """A server context serving the PEM chain ``cert_path`` with key ``key_path``.

    ``client_ca_path`` (PEM file of CA certificates), when given, makes a client
    certificate chaining to it required. ``alpn`` defaults to ``alpn_protocols()``.

    Raises:
        OSError: a file cannot be read. ssl.SSLError: not PEM, or key and
        certificate do not match.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    ctx.load_cert_chain(cert_path, key_path)
    if client_ca_path:
        ctx.load_verify_locations(cafile=client_ca_path)
        ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(list(alpn if alpn is not None else alpn_protocols()))
    return ctx


# What OpenSSL says when load_cert_chain refuses a file, in words
_REASONS = (("KEY_VALUES_MISMATCH", "the key does not match the certificate"),
            ("PEM lib", "not a PEM certificate chain and key"), ("NO_START_LINE", "not PEM"))


def _describe(e: Exception) -> str:
    if isinstance(e, ssl.SSLError):
        text = f"{e.reason} {e}"
        for needle, words in _REASONS:
            if needle in text:
                return words
        return e.reason or str(e)
    if isinstance(e, OSError):
        return f"{e.filename or ''}: {e.strerror or e}".lstrip(": ")
    return str(e)


def _loads_as_ca(path: str) -> bool:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=path)
    except (OSError, ValueError):
        return False
    return True


class ServerTLS:
    """The listener's TLS material, reloadable.

    Attributes:
        context: the context the listener was created with (never replaced).
        current: the context new handshakes use (``context`` until a reload).
        reloads: successful reloads so far.
    """

    def __init__(self, cert_path: str, key_path: str, client_ca_path: str = "") -> None:
        self.cert_path = cert_path
        self.key_path = key_path
        self.client_ca_path = client_ca_path
        self.alpn = alpn_protocols()
        try:
            self.context = self._build()
        except OSError as e:  # ssl.SSLError is an OSError too
            if client_ca_path and not _loads_as_ca(client_ca_path):
                raise ConfigError("--tls-client-ca-path",
                                  f"cannot load CA certificates from {client_ca_path}") from None
            raise ConfigError("--tls-cert-path", f"cannot load the TLS certificate {cert_path} with key "
                                                 f"{key_path}: {_describe(e)}") from None
        self.current = self.context
        self.reloads = 0

    @classmethod
    def from_config(cls, cfg) -> ServerTLS | None:
        """The listener's TLS, or None when ``--tls-cert-path`` is not set.

        Raises:
            ConfigError: only one of certificate and key given, a client CA without
            TLS, or material that does not load.
        """
        cert, key, ca = cfg.tls_cert_path, cfg.tls_key_path, cfg.tls_client_ca_path
        if not cert and not key:
            if ca:
                raise ConfigError("--tls-client-ca-path", "needs --tls-cert-path and --tls-key-path")
            return None
        if not cert:
            raise ConfigError("--tls-key-path", "needs --tls-cert-path")
        if not key:
            raise ConfigError("--tls-cert-path", "needs --tls-key-path")
        return cls(cert, key, ca)

    @property
    def verifies_clients(self) -> bool:
        return bool(self.client_ca_path)

    def _build(self) -> ssl.SSLContext:
        ctx = server_context(self.cert_path, self.key_path, self.client_ca_path, self.alpn)
        ctx.sni_callback = self._pick
        return ctx

    def _pick(self, sslobj, server_name, ctx) -> None:
        # OpenSSL's servername callback: runs inside every handshake, before the
        # certificate is chosen. Moving the connection to another SSL_CTX here gives
        # it that context's chain, verify store and CA list.
        cur = self.current
        if cur is not ctx:
            sslobj.context = cur
        return None

    def reload_from(self, cert_path: str, key_path: str, client_ca_path: str = "") -> bool:
        """``reload`` from these files (a re-read configuration may name new ones); when
        they do not load, the current files and certificate stay. Never raises."""
        old = self.cert_path, self.key_path, self.client_ca_path
        self.cert_path, self.key_path, self.client_ca_path = cert_path, key_path, client_ca_path
        if self.reload():
            return True
        self.cert_path, self.key_path, self.client_ca_path = old
        return False

    def reload(self) -> bool:
        """Re-reads certificate, key (and client CA) for new handshakes.

        Returns:
            True if the new material is in use; False if it failed to load (logged
            as an error; the previous certificate stays in use). Never raises.
        """
        try:
            ctx = self._build()
        except Exception as e:  # a bad file must never take the listener down
            log.error("TLS reload failed, keeping the current certificate: %s (%s, %s)",
                      _describe(e), self.cert_path, self.key_path)
            return False
        self.current = ctx
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.cert_path)
        return True
