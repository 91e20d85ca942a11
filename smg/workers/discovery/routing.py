"""The routing set: the discovered workers, keyed by URL, each with an owner (file
discovery: the manifest; Kubernetes: the pod), reported through the callbacks.

Rules:
1. Pure: no I/O, no clock; sources tell it what an owner provides now, it works out
   the difference.
2. Only differences go out: a URL that appears is ``on_add(spec)``, one that goes is
   ``on_remove(url)``, one whose spec changed is ``on_remove(url)`` then
   ``on_add(new_spec)``; an unchanged spec is not reported again. No URL is added
   twice or removed unless added.
3. A URL provided by two owners belongs to the last that claimed it; the other
   owner dropping it later does not remove it.
4. A callback that raises is logged and does not stop the diffing.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("smg.workers.discovery")

OnAdd = Callable[[dict], None]
OnRemove = Callable[[str], None]


class Routing:
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
