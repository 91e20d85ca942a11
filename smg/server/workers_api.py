"""The Workers API (control plane): SMG's ``/workers`` resource and the legacy
``/add_worker`` / ``/remove_worker``.

POST/PUT/PATCH/DELETE answer 202: registration and draining run in the background.
``api_key`` is write-only and never appears in an answer.
"""
from __future__ import annotations

from urllib.parse import parse_qs

import orjson

from smg.workers.spec import SpecError, validate
from smg.workers.worker import READY


class WorkersAPI:
    def __init__(self, gw) -> None:
        self.gw = gw

    def routes(self) -> dict:
        return {b"/workers": {b"GET": self.list, b"POST": self.create},
                b"/add_worker": {b"POST": self.legacy_add},
                b"/remove_worker": {b"POST": self.legacy_remove}}

    def prefix_routes(self) -> list:
        return [(b"/workers/", {b"GET": self.get, b"PUT": self.replace, b"PATCH": self.patch,
                                b"DELETE": self.delete})]

    # -- helpers -------------------------------------------------------------------------

    def _body(self, proto, body: bytes):
        try:
            return orjson.loads(body) if body else None
        except orjson.JSONDecodeError as e:
            proto.reply_error(400, f"request body is not valid JSON: {e}", code="invalid_json")
            return SpecError

    def _spec(self, proto, obj, partial=False):
        try:
            return validate(obj, partial)
        except SpecError as e:
            proto.reply_error(400, str(e), code="invalid_worker_spec")
            return None

    def _query(self, target: bytes) -> dict:
        q = target.partition(b"?")[2].decode("latin-1")
        return {k: v[0] for k, v in parse_qs(q).items()}

    def _worker(self, proto):
        wid = proto.path[len(b"/workers/"):].decode("latin-1")
        w = self.gw.registry.get(wid)
        if w is None:
            proto.reply_error(404, f"no worker with id {wid!r}", code="worker_not_found")
        return w

    def _accepted(self, proto, w, message: str) -> None:
        proto.respond(202, orjson.dumps({"status": "accepted", "worker_id": w.id, "url": w.url,
                                         "location": f"/workers/{w.id}", "message": message}),
                      [(b"location", f"/workers/{w.id}".encode())])

    # -- handlers --------------------------------------------------------------------------

    def create(self, proto, req, body: bytes) -> None:
        obj = self._body(proto, body)
        if obj is SpecError:
            return
        self._register(proto, self._spec(proto, obj))

    def _register(self, proto, spec: dict | None) -> None:
        """Registers a validated spec (None: the error was already answered)."""
        if spec is None:
            return
        if any(w.base_url == spec["url"] for w in self.gw.registry.all()):
            proto.reply_error(409, f"a worker with url {spec['url']} is already registered", code="worker_exists")
            return
        w = self.gw.workers.add(spec)
        self._accepted(proto, w, "worker registration started")

    def list(self, proto, req, body: bytes) -> None:
        model = self._query(req.target).get("model")
        m = self.gw.workers
        workers = [w for w in self.gw.registry.all() if model is None or model in w.models or not w.models]
        by_type = {"regular": 0, "prefill": 0, "decode": 0}
        for w in workers:
            by_type[w.worker_type] = by_type.get(w.worker_type, 0) + 1
        doc = {"workers": [m.info(w) for w in workers], "total": len(workers),
               "stats": {"total_workers": len(workers),
                         "healthy_workers": sum(1 for w in workers if w.status == READY),
                         "total_models": len({x for w in workers for x in w.models}),
                         "total_load": sum(w.inflight for w in workers), "by_type": by_type}}
        proto.respond(200, orjson.dumps(doc))

    def get(self, proto, req, body: bytes) -> None:
        w = self._worker(proto)
        if w is not None:
            proto.respond(200, orjson.dumps(self.gw.workers.info(w)))

    def replace(self, proto, req, body: bytes) -> None:
        w = self._worker(proto)
        if w is None:
            return
        obj = self._body(proto, body)
        if obj is SpecError:
            return
        spec = self._spec(proto, obj)
        if spec is None:
            return
        if spec["url"] != w.base_url:
            proto.reply_error(400, "url: PUT keeps the worker's url (register a new worker instead)",
                              code="invalid_worker_spec")
            return
        self.gw.workers.remove(w.id, drain=False)
        nw = self.gw.workers.add(spec, worker_id=w.id)
        self._accepted(proto, nw, "worker re-registration started")

    def patch(self, proto, req, body: bytes) -> None:
        w = self._worker(proto)
        if w is None:
            return
        obj = self._body(proto, body)
        if obj is SpecError:
            return
        spec = self._spec(proto, obj, partial=True)
        if spec is None:
            return
        key = spec.pop("api_key", None)
        if key is not None:
            w.api_key = key.encode()
        if "health" in spec:
            spec["health"] = {**(w.spec.get("health") or {}), **spec["health"]}
        w.spec.update(spec)
        self._accepted(proto, w, "worker updated")

    def delete(self, proto, req, body: bytes) -> None:
        w = self._worker(proto)
        if w is not None:
            self.gw.workers.remove(w.id)
            self._accepted(proto, w, "worker draining; it is removed when its requests finish")

    def legacy_add(self, proto, req, body: bytes) -> None:
        url = self._query(req.target).get("url")
        self._register(proto, self._spec(proto, {"url": url} if url else {}))

    def legacy_remove(self, proto, req, body: bytes) -> None:
        url = (self._query(req.target).get("url") or "").rstrip("/")
        ws = [w for w in self.gw.registry.all() if w.base_url == url]
        if not ws:
            proto.reply_error(404, f"no worker with url {url!r}", code="worker_not_found")
            return
        for w in ws:
            self.gw.workers.remove(w.id)
        self._accepted(proto, ws[0], "worker draining")
