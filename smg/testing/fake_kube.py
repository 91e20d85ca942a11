"""A fake Kubernetes API server (Pods only) on 127.0.0.1, for discovery tests.

Serves, one request per connection (``Connection: close``):

- ``GET /api/v1/namespaces/{ns}/pods`` and ``GET /api/v1/pods``: a PodList filtered by
  namespace and ``labelSelector`` (equality requirements), with
  ``metadata.resourceVersion`` set to the current version.
- the same with ``?watch=1``: a chunked stream of JSON lines
  ``{"type": "ADDED|MODIFIED|DELETED|BOOKMARK|ERROR", "object": ...}``. With a
  ``resourceVersion`` the stream first replays every change after it (from the
  history); without one it starts with a synthetic ``ADDED`` per matching pod, as the
  real API server does. As with a real label-selector watch, a pod that stops
  matching is sent as ``DELETED`` and one that starts matching as ``ADDED``.
  ``timeoutSeconds`` ends the stream.

Pods change through ``add_pod``/``modify_pod``/``set_ready``/``mark_deleting``/
``delete_pod``; every change bumps the resource version and goes to open watches.
Failure injection: ``end_watches()`` ends every open watch normally; ``compact()``
makes every version up to now "too old", so a watch from one gets 410 (as an ``ERROR``
event, like a real API server, or as an HTTP 410 with ``gone_as_status``);
``gone_watches()`` sends open watches an ``ERROR`` 410 event and ends them;
``fail_next(n, status)`` answers the next ``n`` requests with ``status``. With
``token`` set, requests without ``Authorization: Bearer <token>`` get 401.
``split_chunks`` sends each event line in two chunks (exercises line reassembly).
With ``ssl`` (a server ``ssl.SSLContext``) it serves ``https://`` (``url`` says which).
"""
from __future__ import annotations

import asyncio
import copy
import ssl as _ssl
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from smg.workers.discovery.selector import match_selector, parse_selector

__all__ = ["FakeKube", "make_pod"]

_HEAD_LIMIT = 64 * 1024


def make_pod(name: str, *, namespace: str = "default", labels: dict | None = None,
             annotations: dict | None = None, ip: str | None = "10.0.0.1", phase: str = "Running",
             ready: bool = True) -> dict:
    status: dict = {"phase": phase,
                    "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if ip:
        status["podIP"] = ip
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{namespace}-{name}",
                         "labels": dict(labels or {}), "annotations": dict(annotations or {})},
            "status": status}


class _Watch:
    def __init__(self, namespace: str | None, requirements: list) -> None:
        self.namespace = namespace
        self.requirements = requirements
        self.queue: asyncio.Queue = asyncio.Queue()
        self.visible: set = set()

    def matches(self, pod: dict) -> bool:
        md = pod["metadata"]
        if self.namespace is not None and md["namespace"] != self.namespace:
            return False
        return match_selector(md.get("labels"), self.requirements)

    def translate(self, kind: str, pod: dict) -> dict | None:
        """The event this watcher sees for a change (label-selector semantics)."""
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        if kind == "DELETED":
            if key in self.visible:
                self.visible.discard(key)
                return {"type": "DELETED", "object": pod}
            return None
        if self.matches(pod):
            t = "MODIFIED" if key in self.visible else "ADDED"
            self.visible.add(key)
            return {"type": t, "object": pod}
        if key in self.visible:
            self.visible.discard(key)
            return {"type": "DELETED", "object": pod}
        return None


class FakeKube:
    def __init__(self, *, token: str | None = None, gone_as_status: bool = False,
                 split_chunks: bool = False, ssl: _ssl.SSLContext | None = None) -> None:
        self.token = token
        self.ssl = ssl
        self.gone_as_status = gone_as_status
        self.split_chunks = split_chunks
        self.rv = 100
        self.compacted_rv = 0
        self.pods: dict = {}          # (ns, name) -> pod
        self.history: list = []       # (rv, type, pod copy)
        self.requests: list = []      # (path, query dict, is_watch)
        self.list_requests = 0
        self.watch_requests = 0
        self._watches: set = set()
        self._fail: list = []         # statuses for the next requests
        self._server: asyncio.AbstractServer | None = None
        self._conns: set = set()
        self.host = "127.0.0.1"
        self.port = 0
        self.scheme = "http"

    # -- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0,
                    ssl: _ssl.SSLContext | None = None) -> FakeKube:
        """Listens on ``host:port`` (0: any free port); ``ssl`` overrides the constructor's."""
        ssl = ssl if ssl is not None else self.ssl
        self._server = await asyncio.start_server(self._handle, host, port, ssl=ssl)
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]
        self.scheme = "https" if ssl else "http"
        return self

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    async def stop(self) -> None:
        for w in list(self._watches):
            w.queue.put_nowait(None)
        if self._server is not None:
            self._server.close()
            for t in list(self._conns):
                t.cancel()
            if self._conns:
                await asyncio.wait(list(self._conns), timeout=5)
            await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def __aenter__(self) -> FakeKube:
        if self._server is None:
            await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    # -- state changes

    def _record(self, kind: str, pod: dict) -> dict:
        self.rv += 1
        pod["metadata"]["resourceVersion"] = str(self.rv)
        snap = copy.deepcopy(pod)
        self.history.append((self.rv, kind, snap))
        for w in list(self._watches):
            w.queue.put_nowait((kind, snap))
        return snap

    def add_pod(self, name: str, **kw) -> dict:
        pod = make_pod(name, **kw)
        key = (pod["metadata"]["namespace"], name)
        if key in self.pods:
            raise ValueError(f"pod {key} exists")
        self.pods[key] = pod
        return self._record("ADDED", pod)

    def modify_pod(self, name: str, namespace: str = "default", *, labels: dict | None = None,
                   annotations: dict | None = None, ip: str | None = None, phase: str | None = None,
                   ready: bool | None = None) -> dict:
        pod = self.pods[(namespace, name)]
        md, st = pod["metadata"], pod["status"]
        if labels is not None:
            md["labels"] = dict(labels)
        if annotations is not None:
            md["annotations"] = dict(annotations)
        if ip is not None:
            st["podIP"] = ip
        if phase is not None:
            st["phase"] = phase
        if ready is not None:
            st["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
        return self._record("MODIFIED", pod)

    def set_ready(self, name: str, ready: bool, namespace: str = "default") -> dict:
        return self.modify_pod(name, namespace, ready=ready)

    def mark_deleting(self, name: str, namespace: str = "default") -> dict:
        """Graceful deletion starts: ``deletionTimestamp`` set (a MODIFIED event)."""
        pod = self.pods[(namespace, name)]
        pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        return self._record("MODIFIED", pod)

    def delete_pod(self, name: str, namespace: str = "default") -> dict:
        pod = self.pods.pop((namespace, name))
        return self._record("DELETED", pod)

    # -- failure injection

    def end_watches(self) -> int:
        """Ends every open watch stream normally. Returns how many."""
        for w in list(self._watches):
            w.queue.put_nowait(None)
        return len(self._watches)

    def compact(self) -> None:
        """Versions up to the current one become too old to watch from."""
        self.compacted_rv = self.rv

    def gone_watches(self) -> int:
        """Sends every open watch an ERROR 410 event, then ends it."""
        for w in list(self._watches):
            w.queue.put_nowait(("ERROR", _gone_status()))
            w.queue.put_nowait(None)
        return len(self._watches)

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        self._fail.extend([status] * n)

    @property
    def active_watches(self) -> int:
        return len(self._watches)

    async def wait_watches(self, n: int = 1, timeout: float = 5.0) -> None:
        """Waits until at least ``n`` watch streams are open."""
        async with asyncio.timeout(timeout):
            while len(self._watches) < n:
                await asyncio.sleep(0.005)

    # -- HTTP

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._conns.add(task)
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > _HEAD_LIMIT:
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for ln in lines[1:]:
                if ":" in ln:
                    k, v = ln.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            await self._route(method, target, headers, writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, TimeoutError,
                ValueError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._conns.discard(task)
            writer.close()

    async def _respond(self, writer, status: int, obj) -> None:
        body = orjson.dumps(obj)
        reason = {200: "OK", 401: "Unauthorized", 404: "Not Found", 410: "Gone"}.get(status, "Error")
        writer.write(f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
                     f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body)
        await writer.drain()

    async def _route(self, method: str, target: str, headers: dict, writer) -> None:
        parts = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        watch = query.get("watch") in ("1", "true")
        self.requests.append((parts.path, query, watch))
        if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
            await self._respond(writer, 401, _status(401, "Unauthorized", "Unauthorized"))
            return
        if self._fail:
            status = self._fail.pop(0)
            await self._respond(writer, status, _status(status, "Injected", f"injected {status}"))
            return
        segs = [unquote(s) for s in parts.path.strip("/").split("/")]
        if method != "GET":
            await self._respond(writer, 405, _status(405, "MethodNotAllowed", "only GET"))
            return
        if segs == ["api", "v1", "pods"]:
            ns = None
        elif len(segs) == 5 and segs[:3] == ["api", "v1", "namespaces"] and segs[4] == "pods":
            ns = segs[3]
        else:
            await self._respond(writer, 404, _status(404, "NotFound", f"{parts.path} not found"))
            return
        try:
            requirements = parse_selector(query.get("labelSelector", ""))
        except ValueError as e:
            await self._respond(writer, 400, _status(400, "BadRequest", str(e)))
            return
        if watch:
            await self._watch(writer, ns, requirements, query)
        else:
            self.list_requests += 1
            w = _Watch(ns, requirements)
            items = [copy.deepcopy(p) for p in self.pods.values() if w.matches(p)]
            await self._respond(writer, 200, {"kind": "PodList", "apiVersion": "v1",
                                              "metadata": {"resourceVersion": str(self.rv)}, "items": items})

    async def _send(self, writer, event: dict) -> None:
        line = orjson.dumps(event) + b"\n"
        pieces = [line[: len(line) // 2], line[len(line) // 2:]] if self.split_chunks else [line]
        for p in pieces:
            writer.write(b"%x\r\n%s\r\n" % (len(p), p))
        await writer.drain()

    def _state_at(self, rv: int) -> dict:
        state: dict = {}
        for at, kind, pod in self.history:
            if at > rv:
                break
            key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
            if kind == "DELETED":
                state.pop(key, None)
            else:
                state[key] = pod
        return state

    async def _watch(self, writer, ns: str | None, requirements: list, query: dict) -> None:
        self.watch_requests += 1
        rv_param = query.get("resourceVersion") or None
        rv = None
        if rv_param is not None and rv_param != "0":
            try:
                rv = int(rv_param)
            except ValueError:
                await self._respond(writer, 400, _status(400, "BadRequest", "bad resourceVersion"))
                return
        if rv is not None and rv < self.compacted_rv and self.gone_as_status:
            await self._respond(writer, 410, _gone_status())
            return
        timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        w = _Watch(ns, requirements)
        # Register and snapshot together (no await in between): later changes reach
        # this watch through its queue only, never twice.
        self._watches.add(w)
        history = list(self.history)
        current = [copy.deepcopy(p) for p in self.pods.values()]
        try:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n")
            if rv is not None and rv < self.compacted_rv:
                await self._send(writer, {"type": "ERROR", "object": _gone_status()})
            else:
                if rv is None:
                    for pod in current:
                        ev = w.translate("ADDED", pod)
                        if ev:
                            await self._send(writer, ev)
                else:
                    w.visible = {k for k, p in self._state_at(rv).items() if w.matches(p)}
                    for at, kind, pod in history:
                        if at > rv:
                            ev = w.translate(kind, pod)
                            if ev:
                                await self._send(writer, ev)
                loop = asyncio.get_running_loop()
                deadline = None if timeout is None else loop.time() + timeout
                while True:
                    wait = None if deadline is None else deadline - loop.time()
                    if wait is not None and wait <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(w.queue.get(), wait)
                    except TimeoutError:
                        break
                    if item is None:
                        break
                    kind, obj = item
                    ev = {"type": "ERROR", "object": obj} if kind == "ERROR" else w.translate(kind, obj)
                    if ev:
                        await self._send(writer, ev)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        finally:
            self._watches.discard(w)


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def _gone_status() -> dict:
    return _status(410, "Expired", "too old resource version")
