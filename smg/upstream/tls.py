"""The client TLS context for ``https://`` workers (SMG's ``--ca-cert-paths``,
``--client-cert-path``, ``--client-key-path``).

``WorkerTLS`` holds it for one gateway; every connection to an https worker — the
request pool (smg/upstream/pool.py), registration, health and load probes (through
smg.upstream.client's ``ssl=`` argument) — uses this one context.

Rules:
- Trust is the system store plus every ``--ca-cert-paths`` entry (a PEM file, or a
  directory of hashed certificates); certificates and host names are verified (the
  worker URL's host is checked against the certificate, an IP literal against its
  IP addresses).
- ``--client-cert-path`` and ``--client-key-path`` go together (mutual TLS): one
  without the other is a ``ConfigError``, never silently ignored.
- ALPN offers ``http/1.1`` only: that is what smg speaks to workers.
- The context is built once. With TLS material configured it is built at start-up,
  so a bad file is an error before any worker is tried; without, on first use (the
  system store takes tens of milliseconds to load, and most gateways have no https
  worker).
"""
from __future__ import annotations

import os
import ssl

from smg.errors import ConfigError

HTTP11 = "http/1.1"


def client_context(ca_paths=(), cert_path: str = "", key_path: str = "") -> ssl.SSLContext:
    """A verifying client context: system roots + ``ca_paths``, optional client certificate.

    Raises:
        ConfigError: naming the flag whose file does not load.
    """
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    for p in ca_paths:
        try:
            if os.path.isdir(p):
                ctx.load_verify_locations(capath=p)
            else:
                ctx.load_verify_locations(cafile=p)
        except (OSError, ValueError) as e:
            raise ConfigError("--ca-cert-paths", f"cannot load CA certificates from {p}: "
                                                 f"{getattr(e, 'strerror', None) or e}") from None
    if cert_path or key_path:
        if not cert_path:
            raise ConfigError("--client-key-path", "needs --client-cert-path")
        if not key_path:
            raise ConfigError("--client-cert-path", "needs --client-key-path")
        try:
            ctx.load_cert_chain(cert_path, key_path)
        except OSError as e:
            raise ConfigError("--client-cert-path", f"cannot load the client certificate {cert_path} with key "
                                                    f"{key_path}: {getattr(e, 'reason', None) or e}") from None
    ctx.set_alpn_protocols([HTTP11])
    return ctx


class WorkerTLS:
    """The one client context of a gateway's connections to https workers."""

    __slots__ = ("ca_paths", "cert_path", "key_path", "_context")

    def __init__(self, ca_paths=(), cert_path: str = "", key_path: str = "") -> None:
        self.ca_paths = tuple(ca_paths)
        self.cert_path = cert_path
        self.key_path = key_path
        self._context: ssl.SSLContext | None = None
        if self.ca_paths or cert_path or key_path:
            self._context = client_context(self.ca_paths, cert_path, key_path)

    @classmethod
    def from_config(cls, cfg) -> WorkerTLS:
        """Raises ConfigError for material that does not load (see ``client_context``)."""
        return cls(cfg.ca_cert_paths, cfg.client_cert_path, cfg.client_key_path)

    @property
    def context(self) -> ssl.SSLContext:
        ctx = self._context
        if ctx is None:
            ctx = self._context = client_context()
        return ctx

    def for_url(self, url: str) -> ssl.SSLContext | None:
        """The context for ``url`` if it is an ``https://`` one, else None."""
        return self.context if url[:8].lower() == "https://" else None
