"""Service discovery: where workers come from when nobody POSTs them to ``/workers``.

Two sources, both reporting *differences* through two callbacks:

- ``on_add(spec)``: a worker appeared. ``spec`` is a WorkerSpec-like dict: ``url``
  (no trailing slash), ``models`` (list; empty = wildcard), ``worker_type``
  (regular|prefill|decode|encode), ``labels`` (dict), plus any other WorkerSpec field
  the source knows (``bootstrap_port``, ``kv_connector``, ``kv_engine_id``, ...) and
  ``source`` ("file" or "kubernetes").
- ``on_remove(url)``: that worker went away (pod deleted, not ready, dropped from
  the manifest).

A worker whose spec changes (a new bootstrap port, other models) is reported as
``on_remove(url)`` then ``on_add(new_spec)``. Callbacks are plain functions run on
the loop; they must not block (the gateway queues registration jobs, as SMG does).

Rules:
1. The diffing is sans-I/O: ``parse_manifest``, ``pod_workers``, ``match_selector``
   and the ``_Routing`` set are pure; the classes around them only fetch and wait.
2. A source that cannot be read keeps its last good state: a half-written manifest
   or an API-server outage must not deregister the whole fleet.
3. Every loop is bounded: reconnects back off exponentially (1 s -> 60 s, SMG's mesh
   and kube-rs watcher use the same doubling) and every read has a timeout.

File discovery (SMG 1.13 ``--discovery-file``): a JSON manifest, either a list of
specs or ``{"workers": [...]}``; an entry may also be a bare URL string. It is re-read
every ``--discovery-check-interval-secs`` (30) and diffed when its content changed.

Kubernetes discovery (SMG ``--service-discovery``): list then watch Pods through the
API server's REST API (``/api/v1/namespaces/{ns}/pods`` or cluster-wide
``/api/v1/pods``, ``labelSelector`` from ``--selector k=v ...``). A pod is a worker
when its phase is Running, its Ready condition is True, it has a pod IP and no
``deletionTimestamp``; its URL is ``http://{podIP}:{port}`` with the port from the
``smg.ai/worker-ports`` annotation (one worker per port) or
``--service-discovery-port``. ``sglang.ai/bootstrap-port`` gives ``bootstrap_port``
(PD prefill), ``smg.ai/kv-connector``/``smg.ai/kv-engine-id`` the KV fields. The watch
resumes from the last ``resourceVersion``; ``410 Gone`` (as an HTTP status or as an
``ERROR`` event) means that version was compacted away, so the pods are listed again
and the routing set is diffed against the list.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import logging
import os
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit

import orjson

from smg.errors import ConfigError, RemoteProtocolError, SmgError, UpstreamError
from smg.http1.events import Data, EndOfMessage, Response
from smg.http1.parser import ResponseParser
from smg.workers.background import Background

log = logging.getLogger("smg.workers.discovery")

WORKER_TYPES = ("regular", "prefill", "decode", "encode")

OnAdd = Callable[[dict], None]
OnRemove = Callable[[str], None]


# -- worker specs and the routing set (pure)

def normalize_spec(obj, source: str = "file") -> dict:
    """Validates one WorkerSpec-like entry and fills the defaults.

    Raises:
        ValueError: not an object with a string ``url`` (or a URL string), or a bad field.
    """
    if isinstance(obj, str):
        obj = {"url": obj}
    if not isinstance(obj, dict):
        raise ValueError("a worker entry must be an object or a URL string")
    url = obj.get("url")
    if not isinstance(url, str) or not url.strip():
        raise ValueError("a worker entry needs a 'url' string")
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        raise ValueError(f"worker url {url!r} must look like scheme://host:port")
    spec = dict(obj)
    spec["url"] = url
    models = spec.get("models", [])
    if models is None:
        models = []
    if not isinstance(models, list):
        raise ValueError(f"{url}: 'models' must be a list")
    spec["models"] = models
    wt = spec.get("worker_type") or "regular"
    if wt not in WORKER_TYPES:
        raise ValueError(f"{url}: worker_type must be one of {', '.join(WORKER_TYPES)}")
    spec["worker_type"] = wt
    labels = spec.get("labels")
    if labels is None:
        labels = {}
    if not isinstance(labels, dict):
        raise ValueError(f"{url}: 'labels' must be an object")
    spec["labels"] = labels
    spec.setdefault("source", source)
    return spec


def parse_manifest(data: bytes) -> dict:
    """Parses a discovery manifest.

    Returns:
        {url: spec}; a URL listed twice keeps its last entry.
    Raises:
        ValueError: not JSON, or not a list / ``{"workers": [...]}`` of valid entries.
    """
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"manifest is not JSON: {e}") from None
    if isinstance(obj, dict):
        obj = obj.get("workers")
    if not isinstance(obj, list):
        raise ValueError("manifest must be a list of workers or {\"workers\": [...]}")
    out: dict = {}
    for item in obj:
        spec = normalize_spec(item, "file")
        out[spec["url"]] = spec
    return out


class _Routing:
    """The set of discovered workers, keyed by URL, with an owner (file: the
    manifest; Kubernetes: the pod). Changes go out through the callbacks."""

    def __init__(self, on_add: OnAdd, on_remove: OnRemove) -> None:
        self.on_add = on_add
        self.on_remove = on_remove
        self.specs: dict = {}     # url -> spec
        self.owner: dict = {}     # url -> owner key
        self.owned: dict = {}     # owner key -> {url: spec}

    def set_owner(self, key: str, specs: dict) -> None:
        """``key`` now provides exactly ``specs`` ({url: spec})."""
        old = self.owned.pop(key, {})
        if specs:
            self.owned[key] = specs
        for url in old:
            if url not in specs and self.owner.get(url) == key:
                del self.owner[url]
                del self.specs[url]
                self._emit_remove(url)
        for url, spec in specs.items():
            cur = self.specs.get(url)
            self.owner[url] = key
            if cur == spec:
                continue
            if cur is not None:
                self._emit_remove(url)
            self.specs[url] = spec
            self._emit_add(spec)

    def replace_all(self, owners: dict) -> None:
        """Makes the owners exactly ``owners`` ({key: {url: spec}}) (a re-list)."""
        for key in list(self.owned):
            if key not in owners:
                self.set_owner(key, {})
        for key, specs in owners.items():
            self.set_owner(key, specs)

    def _emit_add(self, spec: dict) -> None:
        try:
            self.on_add(spec)
        except Exception:  # a callback bug must not kill discovery
            log.exception("discovery on_add(%s) failed", spec.get("url"))

    def _emit_remove(self, url: str) -> None:
        try:
            self.on_remove(url)
        except Exception:
            log.exception("discovery on_remove(%s) failed", url)


# -- file discovery

class FileDiscovery(Background):
    """Workers from a JSON manifest, re-read on change and every ``interval`` seconds.

    ``check()`` is synchronous and returns True when the manifest was (re)applied.
    ``on_sync(seconds)`` hears how long each read of the manifest took to read and apply.
    """

    source = "file"

    def __init__(self, path: str, on_add: OnAdd, on_remove: OnRemove, *, interval: float = 30.0,
                 sleep: Callable = asyncio.sleep, on_sync: Callable | None = None) -> None:
        if interval <= 0:
            raise ValueError("discovery check interval must be positive")
        self.path = path
        self.interval = interval
        self._sleep = sleep
        self._routing = _Routing(on_add, on_remove)
        self._on_sync = on_sync
        self._stat: tuple | None = None
        self._digest: bytes | None = None
        self.errors = 0
        self.last_error: str | None = None
        self._task: asyncio.Task | None = None

    @property
    def workers(self) -> dict:
        """{url: spec} of the workers the manifest currently lists."""
        return dict(self._routing.specs)

    def check(self, force: bool = False) -> bool:
        """Reads the manifest if it may have changed and applies the difference.

        The file is stat'ed every call and read when its mtime/size changed (or
        ``force``); the content hash decides whether anything is applied, so an
        edit that keeps mtime and size is still seen on the next forced read
        (``run`` forces one every interval). A missing or invalid file keeps the
        current workers.
        """
        try:
            st = os.stat(self.path)
        except OSError as e:
            self._error(f"cannot stat {self.path}: {e.strerror or e}")
            return False
        sig = (st.st_mtime_ns, st.st_size, st.st_ino)
        if not force and sig == self._stat:
            return False
        t0 = time.monotonic()
        try:
            return self._read_and_apply(sig)
        finally:
            if self._on_sync is not None:
                self._on_sync(time.monotonic() - t0)

    def _read_and_apply(self, sig: tuple) -> bool:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError as e:
            self._error(f"cannot read {self.path}: {e.strerror or e}")
            return False
        self._stat = sig
        digest = hashlib.sha256(data).digest()
        if digest == self._digest:
            return False
        try:
            specs = parse_manifest(data)
        except ValueError as e:
            self._error(f"{self.path}: {e}")
            return False
        self._digest = digest
        self.last_error = None
        self._routing.set_owner("manifest", specs)
        return True

    def _error(self, msg: str) -> None:
        self.errors += 1
        if msg != self.last_error:
            log.warning("file discovery: %s (keeping %d workers)", msg, len(self._routing.specs))
        self.last_error = msg

    async def run(self, rounds: int | None = None) -> None:
        """Checks now, then every ``interval`` (until cancelled, or ``rounds`` checks)."""
        n = 0
        while rounds is None or n < rounds:
            self.check(force=True)
            n += 1
            if rounds is not None and n >= rounds:
                break
            await self._sleep(self.interval)


# -- Kubernetes: selectors and pods (pure)

ANN_WORKER_PORTS = "smg.ai/worker-ports"
ANN_BOOTSTRAP_PORT = "sglang.ai/bootstrap-port"
ANN_KV_CONNECTOR = "smg.ai/kv-connector"
ANN_KV_ENGINE_ID = "smg.ai/kv-engine-id"


def selector_string(selector) -> str:
    """``["app=sglang", "role=worker"]``, ``{"app": "sglang"}`` or ``"app=sglang,role=worker"``
    -> the ``labelSelector`` query value."""
    if not selector:
        return ""
    if isinstance(selector, dict):
        return ",".join(f"{k}={v}" for k, v in selector.items())
    if isinstance(selector, str):
        selector = [selector]
    parts = []
    for item in selector:
        parts.extend(_split_top(item))
    return ",".join(parts)


def _split_top(s: str) -> list:
    """Splits a selector on the commas outside parentheses (``env in (a,b)`` stays whole)."""
    out, depth, cur = [], 0, []
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    return [p for p in out if p]


def _parse_requirement(req: str) -> tuple:
    if "!=" in req:
        k, v = req.split("!=", 1)
        return ("!=", k.strip(), v.strip())
    if "==" in req:
        k, v = req.split("==", 1)
        return ("=", k.strip(), v.strip())
    if "=" in req:
        k, v = req.split("=", 1)
        return ("=", k.strip(), v.strip())
    if req.startswith("!"):
        return ("!", req[1:].strip(), None)
    return ("exists", req.strip(), None)


def parse_selector(selector) -> list:
    """Equality-based label selector -> requirements. Set-based (``in``/``notin``)
    selectors are passed to the API server as they are and not checked client-side.

    Raises:
        ValueError: an empty key.
    """
    out = []
    for req in _split_top(selector_string(selector)):
        if " in " in req or " notin " in req or "(" in req:
            continue
        op, k, v = _parse_requirement(req)
        if not k:
            raise ValueError(f"bad label selector requirement {req!r}")
        out.append((op, k, v))
    return out


def match_selector(labels: dict | None, requirements: list) -> bool:
    labels = labels or {}
    for op, k, v in requirements:
        if op == "=" and labels.get(k) != v:
            return False
        if op == "!=" and labels.get(k) == v:
            return False
        if op == "exists" and k not in labels:
            return False
        if op == "!" and k in labels:
            return False
    return True


def pod_key(pod: dict) -> str:
    md = pod.get("metadata") or {}
    return f"{md.get('namespace', '')}/{md.get('name', '')}"


def pod_ready(pod: dict) -> bool:
    """Running, Ready condition True, has a pod IP, not being deleted."""
    md = pod.get("metadata") or {}
    st = pod.get("status") or {}
    if md.get("deletionTimestamp"):
        return False
    if st.get("phase") != "Running" or not st.get("podIP"):
        return False
    for c in st.get("conditions") or ():
        if isinstance(c, dict) and c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def _ports_annotation(value: str) -> list:
    value = value.strip()
    if value.startswith("["):
        items = orjson.loads(value)
        if not isinstance(items, list):
            raise ValueError("not a list")
    else:
        items = [p for p in value.replace(",", " ").split() if p]
    ports = []
    for p in items:
        n = int(p)
        if not 0 < n < 65536:
            raise ValueError(f"port {n} out of range")
        if n not in ports:
            ports.append(n)
    if not ports:
        raise ValueError("no ports")
    return ports


def pod_workers(pod: dict, port: int = 80, worker_type: str = "regular") -> dict:
    """The workers one pod provides: {url: spec}; empty when the pod is not a ready worker."""
    if not pod_ready(pod):
        return {}
    md = pod.get("metadata") or {}
    ann = md.get("annotations") or {}
    ip = pod["status"]["podIP"]
    try:
        host = f"[{ip}]" if ipaddress.ip_address(ip).version == 6 else ip
    except ValueError:
        host = ip
    ports = [port]
    if ANN_WORKER_PORTS in ann:
        try:
            ports = _ports_annotation(str(ann[ANN_WORKER_PORTS]))
        except (ValueError, TypeError, orjson.JSONDecodeError):
            log.warning("pod %s: ignoring bad %s annotation %r", pod_key(pod), ANN_WORKER_PORTS,
                        ann[ANN_WORKER_PORTS])
    base = {"models": [], "worker_type": worker_type,
            "labels": dict(md.get("labels") or {}), "source": "kubernetes",
            "pod": pod_key(pod)}
    if ANN_BOOTSTRAP_PORT in ann:
        try:
            base["bootstrap_port"] = int(ann[ANN_BOOTSTRAP_PORT])
        except (TypeError, ValueError):
            log.warning("pod %s: ignoring bad %s annotation", pod_key(pod), ANN_BOOTSTRAP_PORT)
    if ANN_KV_CONNECTOR in ann:
        base["kv_connector"] = str(ann[ANN_KV_CONNECTOR])
    if ANN_KV_ENGINE_ID in ann:
        base["kv_engine_id"] = str(ann[ANN_KV_ENGINE_ID])
    out = {}
    for p in ports:
        url = f"http://{host}:{p}"
        out[url] = {"url": url, **base}
    return out


# -- Kubernetes: API access

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class KubeError(SmgError):
    """The API server answered with an error (``status`` is its HTTP status)."""

    def __init__(self, msg: str, status: int = 0) -> None:
        super().__init__(msg)
        self.status = status


class KubeGone(KubeError):
    """410 Gone: the resourceVersion we watch from was compacted; list again."""

    def __init__(self, msg: str = "resource version too old") -> None:
        super().__init__(msg, 410)


@dataclass
class KubeConfig:
    """How to reach the API server.

    ``token_file`` is re-read on every request: in-cluster service-account tokens are
    rotated by the kubelet (bound tokens expire after an hour).
    """

    server: str
    token: str | None = None
    token_file: str | None = None
    ca_file: str | None = None
    ca_data: str | None = None            # PEM text
    insecure: bool = False                # insecure-skip-tls-verify
    client_cert_data: bytes | None = None  # PEM (kubeconfig client-certificate[-data])
    client_key_data: bytes | None = None
    namespace: str | None = None          # the pod's / context's namespace (informational)

    @classmethod
    def in_cluster(cls, environ: dict | None = None, sa_dir: str = SA_DIR) -> KubeConfig:
        """From ``KUBERNETES_SERVICE_HOST/PORT`` and the mounted service account.

        Raises:
            ConfigError: not running in a pod.
        """
        env = os.environ if environ is None else environ
        host = env.get("KUBERNETES_SERVICE_HOST")
        if not host:
            raise ConfigError("service_discovery", "KUBERNETES_SERVICE_HOST is not set (not in a pod?)")
        port = env.get("KUBERNETES_SERVICE_PORT", "443")
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        token_file = os.path.join(sa_dir, "token")
        if not os.path.exists(token_file):
            raise ConfigError("service_discovery", f"no service-account token at {token_file}")
        ca = os.path.join(sa_dir, "ca.crt")
        ns = None
        try:
            with open(os.path.join(sa_dir, "namespace")) as f:
                ns = f.read().strip() or None
        except OSError:
            pass
        return cls(server=f"https://{host}:{port}", token_file=token_file,
                   ca_file=ca if os.path.exists(ca) else None, namespace=ns)

    @classmethod
    def from_kubeconfig(cls, path: str | None = None, context: str | None = None) -> KubeConfig:
        """From a kubeconfig (``path``, else ``$KUBECONFIG``'s first entry, else
        ``~/.kube/config``): the context's cluster server, CA and user token or client
        certificate. ``exec``/``auth-provider`` users are not supported.

        Raises:
            ConfigError: unreadable file, missing context/cluster/user.
        """
        import yaml

        if path is None:
            env = os.environ.get("KUBECONFIG")
            path = env.split(os.pathsep)[0] if env else os.path.expanduser("~/.kube/config")
        try:
            with open(path, "rb") as f:
                doc = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError("kubeconfig", f"cannot read {path}: {e}") from None
        base = os.path.dirname(os.path.abspath(path))

        def named(section: str, name: str | None) -> dict:
            for item in doc.get(section) or ():
                if isinstance(item, dict) and item.get("name") == name:
                    return item.get(section[:-1]) or {}
            raise ConfigError("kubeconfig", f"{path}: no {section[:-1]} named {name!r}")

        def rel(p: str | None) -> str | None:
            return None if p is None else (p if os.path.isabs(p) else os.path.join(base, p))

        def b64(v: str | None) -> bytes | None:
            return None if v is None else base64.b64decode(v)

        def read(p: str | None) -> bytes | None:
            if p is None:
                return None
            with open(p, "rb") as f:
                return f.read()

        ctx_name = context or doc.get("current-context")
        ctx = named("contexts", ctx_name)
        cluster = named("clusters", ctx.get("cluster"))
        user = named("users", ctx.get("user")) if ctx.get("user") else {}
        server = cluster.get("server")
        if not server:
            raise ConfigError("kubeconfig", f"{path}: cluster {ctx.get('cluster')!r} has no server")
        if "exec" in user or "auth-provider" in user:
            raise ConfigError("kubeconfig", f"{path}: exec/auth-provider users are not supported; "
                                            "use a token or a client certificate")
        ca_data = b64(cluster.get("certificate-authority-data"))
        try:
            cert = b64(user.get("client-certificate-data")) or read(rel(user.get("client-certificate")))
            key = b64(user.get("client-key-data")) or read(rel(user.get("client-key")))
        except OSError as e:
            raise ConfigError("kubeconfig", f"{path}: {e}") from None
        return cls(server=server.rstrip("/"), token=user.get("token"), token_file=rel(user.get("tokenFile")),
                   ca_file=rel(cluster.get("certificate-authority")),
                   ca_data=ca_data.decode() if ca_data else None,
                   insecure=bool(cluster.get("insecure-skip-tls-verify")),
                   client_cert_data=cert, client_key_data=key, namespace=ctx.get("namespace"))

    @classmethod
    def auto(cls, kubeconfig: str | None = None) -> KubeConfig:
        """In-cluster when running in a pod (and no kubeconfig given), else a kubeconfig."""
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            return cls.in_cluster()
        return cls.from_kubeconfig(kubeconfig)

    def bearer(self) -> str | None:
        if self.token_file:
            try:
                with open(self.token_file) as f:
                    return f.read().strip() or None
            except OSError as e:
                raise KubeError(f"cannot read token {self.token_file}: {e.strerror or e}") from None
        return self.token

    def ssl_context(self) -> ssl.SSLContext | None:
        """None for ``http://`` servers (tests); else a verifying client context."""
        if not self.server.startswith("https://"):
            return None
        ctx = ssl.create_default_context(cafile=self.ca_file, cadata=self.ca_data)
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.client_cert_data and self.client_key_data:
            # load_cert_chain only takes paths: write both to a private temp dir briefly.
            with tempfile.TemporaryDirectory(prefix="smg-kube-") as d:
                cp, kp = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
                for p, data in ((cp, self.client_cert_data), (kp, self.client_key_data)):
                    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                ctx.load_cert_chain(cp, kp)
        return ctx


# Limits for the control-plane client.
MAX_LIST_BYTES = 256 * 1024 * 1024  # a PodList of ~50k pods; beyond that something is wrong
MAX_EVENT_LINE = 16 * 1024 * 1024   # one watch event (one pod object) as a JSON line
_READ_SIZE = 65536


class _Response:
    """One HTTP/1.1 response read through smg's own ResponseParser (one request per
    connection, ``Connection: close``)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = ResponseParser(65536)
        self.status = 0
        self.headers: list = []
        self._pending: list = []
        self.ended = False

    async def _fill(self, timeout: float) -> None:
        data = await asyncio.wait_for(self.reader.read(_READ_SIZE), timeout)
        try:
            self._pending.extend(self.parser.feed(data) if data else self.parser.feed_eof())
        except RemoteProtocolError as e:
            raise UpstreamError(f"kubernetes API: malformed response: {e}") from None
        if not data and not self._pending:
            raise UpstreamError("kubernetes API closed the connection")

    async def read_head(self, timeout: float) -> None:
        while True:
            while self._pending:
                ev = self._pending.pop(0)
                if type(ev) is Response:
                    self.status = ev.status_code
                    self.headers = ev.headers
                    return
            await self._fill(timeout)

    async def next_data(self, timeout: float) -> bytes | None:
        """The next body piece, or None at the end of the body."""
        while not self.ended:
            while self._pending:
                ev = self._pending.pop(0)
                if type(ev) is Data:
                    return ev.data
                if type(ev) is EndOfMessage:
                    self.ended = True
                    return None
            await self._fill(timeout)
        return None

    async def read_body(self, timeout: float, limit: int = MAX_LIST_BYTES) -> bytes:
        parts, size = [], 0
        while (piece := await self.next_data(timeout)) is not None:
            size += len(piece)
            if size > limit:
                raise UpstreamError("kubernetes API response too large")
            parts.append(piece)
        return b"".join(parts)

    async def lines(self, timeout: float, limit: int = MAX_EVENT_LINE):
        """Yields the body's newline-terminated lines (a watch stream)."""
        buf = bytearray()
        while (piece := await self.next_data(timeout)) is not None:
            scan = len(buf)
            buf += piece
            start = 0
            while (i := buf.find(b"\n", scan)) >= 0:
                line = bytes(buf[start:i])
                start = scan = i + 1
                if line.strip():
                    yield line
            if start:
                del buf[:start]
            if len(buf) > limit:
                raise UpstreamError("kubernetes watch event too large")
        if buf.strip():
            yield bytes(buf)

    def close(self) -> None:
        self.writer.close()


class KubeClient:
    """GETs against the API server over plain asyncio streams (control plane only)."""

    def __init__(self, config: KubeConfig, *, connect_timeout: float = 10.0) -> None:
        self.config = config
        self.connect_timeout = connect_timeout
        parts = urlsplit(config.server)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("kubernetes", f"bad API server URL {config.server!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.netloc = parts.netloc
        self.prefix = parts.path.rstrip("/")
        self._ssl = config.ssl_context()

    async def open(self, path: str, timeout: float) -> _Response:
        """Sends ``GET path`` and reads the response head.

        Raises:
            UpstreamError: connect/TLS failure, timeout or malformed response.
            KubeError: the bearer token file cannot be read.
        """
        token = self.config.bearer()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=self._ssl,
                                        server_hostname=self.host if self._ssl else None,
                                        limit=_READ_SIZE),
                self.connect_timeout)
        except (OSError, ssl.SSLError, asyncio.TimeoutError) as e:
            raise UpstreamError(f"kubernetes API {self.netloc}: cannot connect: {e}") from None
        head = [f"GET {self.prefix}{path} HTTP/1.1", f"Host: {self.netloc}",
                "Accept: application/json", "User-Agent: smg-discovery", "Connection: close"]
        if token:
            head.append(f"Authorization: Bearer {token}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        resp = _Response(reader, writer)
        try:
            await resp.read_head(timeout)
        except asyncio.TimeoutError:
            resp.close()
            raise UpstreamError(f"kubernetes API {self.netloc}: timed out") from None
        except BaseException:
            resp.close()
            raise
        return resp

    async def get_json(self, path: str, timeout: float):
        """GET returning parsed JSON.

        Raises:
            KubeGone: 410. KubeError: another non-2xx status. UpstreamError: I/O.
        """
        resp = await self.open(path, timeout)
        try:
            body = await resp.read_body(timeout)
        except asyncio.TimeoutError:
            raise UpstreamError(f"kubernetes API {self.netloc}: timed out") from None
        finally:
            resp.close()
        if resp.status == 410:
            raise KubeGone()
        if not 200 <= resp.status < 300:
            raise KubeError(f"GET {path}: {resp.status} {_status_message(body)}", resp.status)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"GET {path}: not JSON") from None


def _status_message(body: bytes) -> str:
    try:
        obj = orjson.loads(body)
        if isinstance(obj, dict) and obj.get("message"):
            return str(obj["message"])
    except orjson.JSONDecodeError:
        pass
    return body[:200].decode("utf-8", "replace")


# -- Kubernetes discovery

class KubeDiscovery(Background):
    """Keeps the routing set equal to the ready pods matching ``selector``.

    One instance watches one selector and gives its workers ``worker_type``; for PD,
    run one per role (``--prefill-selector``, ``--decode-selector``).
    ``namespace=None`` watches the whole cluster. ``on_sync(seconds)`` hears how long
    each successful list-and-apply took.
    """

    source = "kubernetes"

    def __init__(self, config: KubeConfig, on_add: OnAdd, on_remove: OnRemove, *, selector=(),
                 namespace: str | None = None, port: int = 80, worker_type: str = "regular",
                 watch_timeout: int = 300, request_timeout: float = 30.0, initial_backoff: float = 1.0,
                 max_backoff: float = 60.0, sleep: Callable = asyncio.sleep,
                 client: KubeClient | None = None, on_sync: Callable | None = None) -> None:
        if worker_type not in WORKER_TYPES:
            raise ValueError(f"worker_type must be one of {', '.join(WORKER_TYPES)}")
        self.client = client or KubeClient(config)
        self.selector = selector_string(selector)
        self._requirements = parse_selector(self.selector)
        self.namespace = namespace
        self.port = port
        self.worker_type = worker_type
        self.watch_timeout = watch_timeout
        self.request_timeout = request_timeout
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._routing = _Routing(on_add, on_remove)
        self._on_sync = on_sync
        self.resource_version: str | None = None
        # counters (tests, metrics)
        self.lists = 0
        self.watches = 0
        self.gone = 0
        self.errors = 0
        self.synced = asyncio.Event()
        self._established = False  # the current watch got a 200 head
        self._task: asyncio.Task | None = None

    @property
    def workers(self) -> dict:
        """{url: spec}: the current routing set."""
        return dict(self._routing.specs)

    def _path(self, **query) -> str:
        base = (f"/api/v1/namespaces/{quote(self.namespace, safe='')}/pods" if self.namespace
                else "/api/v1/pods")
        q = {}
        if self.selector:
            q["labelSelector"] = self.selector
        q.update({k: v for k, v in query.items() if v is not None})
        return base + ("?" + urlencode(q) if q else "")

    def _specs(self, pod: dict) -> dict:
        if not match_selector((pod.get("metadata") or {}).get("labels"), self._requirements):
            return {}
        return pod_workers(pod, self.port, self.worker_type)

    async def sync(self) -> int:
        """Lists the pods and makes the routing set match. Returns the pod count.

        Raises:
            KubeError, UpstreamError: the list failed (the routing set is unchanged).
        """
        self.lists += 1
        t0 = time.monotonic()
        obj = await self.client.get_json(self._path(), self.request_timeout)
        if not isinstance(obj, dict) or not isinstance(obj.get("items"), list):
            raise UpstreamError("pod list: no 'items'")
        owners = {}
        for pod in obj["items"]:
            if isinstance(pod, dict):
                owners[pod_key(pod)] = self._specs(pod)
        self._routing.replace_all(owners)
        self.resource_version = str((obj.get("metadata") or {}).get("resourceVersion") or "") or None
        self.synced.set()
        if self._on_sync is not None:
            self._on_sync(time.monotonic() - t0)
        return len(obj["items"])

    def apply_event(self, event: dict) -> None:
        """Applies one watch event.

        Raises:
            KubeGone: an ERROR event with code 410.
            KubeError: another ERROR event.
        """
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            code = obj.get("code") if isinstance(obj, dict) else None
            if code == 410:
                raise KubeGone(str(obj.get("message") or "resource version too old"))
            raise KubeError(f"watch error: {obj.get('message') if isinstance(obj, dict) else obj}",
                            code or 0)
        if not isinstance(obj, dict):
            return
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED"):
            self._routing.set_owner(pod_key(obj), self._specs(obj))
        elif kind == "DELETED":
            self._routing.set_owner(pod_key(obj), {})
        elif kind != "BOOKMARK":
            log.debug("kubernetes watch: ignoring event type %r", kind)
        if rv:
            self.resource_version = str(rv)

    async def watch_once(self) -> int:
        """One watch request from ``resource_version`` until the server ends it.

        Returns:
            The number of events received.
        Raises:
            KubeGone: 410 (HTTP status or ERROR event). KubeError, UpstreamError.
        """
        self.watches += 1
        path = self._path(watch="1", resourceVersion=self.resource_version, allowWatchBookmarks="true",
                          timeoutSeconds=str(self.watch_timeout))
        resp = await self.client.open(path, self.request_timeout)
        n = 0
        try:
            if resp.status == 410:
                raise KubeGone()
            if not 200 <= resp.status < 300:
                body = await resp.read_body(self.request_timeout, 65536)
                raise KubeError(f"watch: {resp.status} {_status_message(body)}", resp.status)
            self._established = True
            # The server ends the watch after timeoutSeconds; allow some slack before
            # deciding the connection is dead.
            idle = self.watch_timeout + 30.0
            async for line in resp.lines(idle):
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError:
                    raise UpstreamError("watch: an event is not JSON") from None
                if isinstance(event, dict):
                    n += 1
                    self.apply_event(event)
        except asyncio.TimeoutError:
            raise UpstreamError("watch: no data within the idle timeout") from None
        finally:
            resp.close()
        return n

    async def run(self, cycles: int | None = None) -> None:
        """List, then watch; re-watch when a watch ends, re-list on 410, back off on
        errors. Runs until cancelled (or for ``cycles`` watch attempts, for tests)."""
        backoff = self.initial_backoff
        gone_streak = 0  # 410s in a row without a watch that ended normally
        n = 0
        while cycles is None or n < cycles:
            n += 1
            started = time.monotonic()
            listing = self.resource_version is None
            self._established = False
            try:
                if listing:
                    await self.sync()
                    listing = False
                await self.watch_once()
                backoff = self.initial_backoff
                gone_streak = 0
                if time.monotonic() - started >= 1.0:
                    continue  # a normal end (server timeout): watch again at once
                # The server ended the watch almost at once: pause briefly (no
                # doubling) so such a server cannot make us spin.
                delay = self.initial_backoff
            except KubeGone as e:
                if not listing:
                    self.gone += 1
                    gone_streak += 1
                    self.resource_version = None
                    log.info("kubernetes watch: resource version expired, listing again")
                    if gone_streak == 1:
                        continue  # re-list at once
                    # 410 right after a fresh list: something is off; back off.
                else:
                    # a 410 answering the list itself: back off like any other error
                    self.errors += 1
                    log.warning("kubernetes discovery: list: %s (retrying in %.1fs)", e, backoff)
                delay, backoff = backoff, min(backoff * 2, self.max_backoff)
            except (KubeError, UpstreamError) as e:
                self.errors += 1
                if self._established:
                    backoff = self.initial_backoff  # the stream worked: a fresh failure
                log.warning("kubernetes discovery: %s (retrying in %.1fs)", e, backoff)
                delay, backoff = backoff, min(backoff * 2, self.max_backoff)
            await self._sleep(delay)
