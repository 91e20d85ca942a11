"""KubeClient: GET and watch requests against the Kubernetes API server, through the
control-plane client (smg.upstream.client).

Rules:
1. No HTTP here: connections, TLS, parsing and timeouts are the control-plane
   client's; this module adds the API server's URL prefix, the bearer token (read
   afresh per request) and the TLS context (built once from the KubeConfig).
2. Statuses become errors: 410 -> ``KubeGone``, another non-2xx -> ``KubeError``
   carrying the status and the ``Status`` object's message; I/O failures stay
   ``UpstreamError``.
3. Bodies are bounded: a list at ``MAX_LIST_BYTES``, a watch event (one line) at
   ``MAX_EVENT_LINE``.
"""
from __future__ import annotations

from urllib.parse import urlsplit

import orjson

from smg.errors import ConfigError, UpstreamError
from smg.upstream import client
from smg.workers.discovery.errors import KubeError, KubeGone
from smg.workers.discovery.kubeconfig import KubeConfig

MAX_LIST_BYTES = 256 * 1024 * 1024  # a PodList of ~50k pods; beyond that something is wrong
MAX_EVENT_LINE = 16 * 1024 * 1024   # one watch event (one pod object) as a JSON line
MAX_ERROR_BODY = 65536

_HEADERS = (("accept", "application/json"), ("user-agent", "smg-discovery"))


def status_message(body: bytes) -> str:
    """The ``message`` of a ``Status`` body, else the body's start."""
    try:
        obj = orjson.loads(body)
        if isinstance(obj, dict) and obj.get("message"):
            return str(obj["message"])
    except orjson.JSONDecodeError:
        pass
    return body[:200].decode("utf-8", "replace")


class KubeClient:
    """The API server of one KubeConfig."""

    def __init__(self, config: KubeConfig, *, connect_timeout: float = 10.0) -> None:
        self.config = config
        self.connect_timeout = connect_timeout
        parts = urlsplit(config.server)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("kubernetes", f"bad API server URL {config.server!r}")
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.netloc = parts.netloc
        self.prefix = parts.path.rstrip("/")
        self._ssl = config.ssl_context()

    async def open(self, path: str, timeout: float) -> client.Stream:
        """Sends ``GET path``; returns the response with its head read (the caller
        closes it).

        Raises:
            UpstreamError: connect/TLS failure, timeout or malformed response.
            KubeError: the bearer token file cannot be read.
        """
        token = self.config.bearer()
        return await client.stream(self.origin, "GET", self.prefix + path, headers=_HEADERS, timeout=timeout,
                                   ssl=self._ssl, bearer=token, connect_timeout=self.connect_timeout)

    async def get_json(self, path: str, timeout: float):
        """GET returning parsed JSON.

        Raises:
            KubeGone: 410. KubeError: another non-2xx status. UpstreamError: I/O.
        """
        async with await self.open(path, timeout) as resp:
            ok = 200 <= resp.status < 300
            body = await resp.read(MAX_LIST_BYTES if ok else MAX_ERROR_BODY, timeout)
        if resp.status == 410:
            raise KubeGone()
        if not ok:
            raise KubeError(f"GET {path}: {resp.status} {status_message(body)}", resp.status)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"GET {path}: not JSON") from None

    async def raise_for_status(self, resp: client.Stream, what: str, timeout: float) -> None:
        """For a streamed response: KubeGone on 410, KubeError (with the body's
        message) on another non-2xx; nothing on 2xx."""
        if resp.status == 410:
            raise KubeGone()
        if not 200 <= resp.status < 300:
            body = await resp.read(MAX_ERROR_BODY, timeout)
            raise KubeError(f"{what}: {resp.status} {status_message(body)}", resp.status)
