"""KubeDiscovery: the routing set kept equal to the ready pods matching a selector
(SMG ``--service-discovery``), by list then watch.

Pods come from ``/api/v1/namespaces/{ns}/pods`` (or cluster-wide ``/api/v1/pods``)
with ``labelSelector``; which pods are workers, and at which URLs, is pods.py.

Rules:
1. ``sync()`` lists and replaces the routing set by the list's diff;
   ``apply_event()`` applies one watch event (pure); ``watch_once()`` is one watch
   request; ``run()`` is the loop around them. Only ``run()`` sleeps.
2. The watch resumes from the last ``resourceVersion`` seen (list, event or
   bookmark). ``410 Gone`` (as an HTTP status or as an ``ERROR`` event) means that
   version was compacted away: list again at once and diff; a 410 right after a
   fresh list backs off like an error.
3. An API-server outage keeps the last routing set: errors never remove workers.
4. Bounded: errors back off exponentially (``initial_backoff`` 1 s doubling to
   ``max_backoff`` 60 s, reset once a watch is established); a watch that ends
   normally but almost at once waits ``initial_backoff`` (a misbehaving server
   cannot make us spin); a watch silent for ``watch_timeout`` + 30 s is dead.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from urllib.parse import quote, urlencode

import orjson

from smg.errors import UpstreamError
from smg.workers.background import Background
from smg.workers.discovery.errors import KubeError, KubeGone
from smg.workers.discovery.kubeapi import MAX_EVENT_LINE, KubeClient
from smg.workers.discovery.kubeconfig import KubeConfig
from smg.workers.discovery.pods import pod_key, pod_workers
from smg.workers.discovery.routing import OnAdd, OnRemove, Routing
from smg.workers.discovery.selector import match_selector, parse_selector, selector_string
from smg.workers.spec import WORKER_TYPES

log = logging.getLogger("smg.workers.discovery")

WATCH_SLACK = 30.0  # seconds past timeoutSeconds before a silent watch counts as dead


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
        self._routing = Routing(on_add, on_remove)
        self._on_sync = on_sync
        self.resource_version: str | None = None
        # counters (tests, metrics)
        self.lists = 0
        self.watches = 0
        self.gone = 0
        self.errors = 0
        self.synced = asyncio.Event()
        self._established = False  # the current watch got a 2xx head
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
        n = 0
        async with await self.client.open(path, self.request_timeout) as resp:
            await self.client.raise_for_status(resp, "watch", self.request_timeout)
            self._established = True
            # The server ends the watch after timeoutSeconds; allow some slack before
            # deciding the connection is dead.
            async for line in resp.lines(self.watch_timeout + WATCH_SLACK, MAX_EVENT_LINE):
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError:
                    raise UpstreamError("watch: an event is not JSON") from None
                if isinstance(event, dict):
                    n += 1
                    self.apply_event(event)
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
