"""The Workers API (control plane): SMG's ``/workers`` resource and the legacy
``/add_worker`` / ``/remove_worker``.

POST/PUT/PATCH/DELETE answer 202: registration and draining run in the background.
``api_key`` is write-only and never appears in an answer. A handler refuses a request
by raising ``Refusal``; the ``_refusals`` wrapper answers it as an error in the API
format, so no handler returns sentinels.
"""
from __future__ import annotations

import functools
from urllib.parse import parse_qs

import orjson

from smg.workers.spec import WORKER_TYPES, SpecError, validate
from smg.workers.worker import READY


class Refusal(Exception):
    """A request the Workers API answers with an error (status, message, SMG code)."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _refusals(fn):
    @functools.wraps(fn)
    def handler(self, conn, ctx) -> None:
        try:
            fn(self, conn, ctx)
        except Refusal as r:
            conn.reply_error(r.status, str(r), code=r.code)
    return handler


class WorkersAPI:
    """Handlers of the Workers API rows of the endpoint table (smg/server/endpoints.py)."""

    def __init__(self, registry, manager) -> None:
        self.registry = registry
        self.manager = manager

    # -- helpers -------------------------------------------------------------------------

    @staticmethod
    def _body(ctx):
        try:
            return orjson.loads(ctx.raw) if ctx.raw else None
        except orjson.JSONDecodeError as e:
            raise Refusal(400, f"request body is not valid JSON: {e}", "invalid_json") from None

    @staticmethod
    def _spec(obj, partial=False) -> dict:
        try:
            return validate(obj, partial)
        except SpecError as e:
            raise Refusal(400, str(e), "invalid_worker_spec") from None

    @staticmethod
    def _query(target: bytes) -> dict:
        q = target.partition(b"?")[2].decode("latin-1")
        return {k: v[0] for k, v in parse_qs(q).items()}

    def _worker(self, ctx):
        wid = ctx.path[len(b"/workers/"):].decode("latin-1")
        w = self.registry.get(wid)
        if w is None:
            raise Refusal(404, f"no worker with id {wid!r}", "worker_not_found")
        return w

    @staticmethod
    def _accepted(conn, w, message: str) -> None:
        conn.reply(202, orjson.dumps({"status": "accepted", "worker_id": w.id, "url": w.url,
                                      "location": f"/workers/{w.id}", "message": message}),
                   [(b"location", f"/workers/{w.id}".encode())])

    # -- handlers --------------------------------------------------------------------------

    @_refusals
    def create(self, conn, ctx) -> None:
        self._register(conn, self._spec(self._body(ctx)))

    def _register(self, conn, spec: dict) -> None:
        if self.registry.at_address(spec["url"]):
            raise Refusal(409, f"a worker with url {spec['url']} is already registered", "worker_exists")
        w = self.manager.add(spec)
        self._accepted(conn, w, "worker registration started")

    def list(self, conn, ctx) -> None:
        model = self._query(ctx.target).get("model")
        m = self.manager
        workers = [w for w in self.registry.all() if model is None or model in w.models or not w.models]
        by_type = dict.fromkeys(WORKER_TYPES, 0)
        for w in workers:
            by_type[w.worker_type] = by_type.get(w.worker_type, 0) + 1
        doc = {"workers": [m.info(w) for w in workers], "total": len(workers),
               "stats": {"total_workers": len(workers),
                         "healthy_workers": sum(1 for w in workers if w.status == READY),
                         "total_models": len({x for w in workers for x in w.models}),
                         "total_load": sum(w.inflight for w in workers), "by_type": by_type}}
        conn.reply(200, orjson.dumps(doc))

    @_refusals
    def get(self, conn, ctx) -> None:
        conn.reply(200, orjson.dumps(self.manager.info(self._worker(ctx))))

    @_refusals
    def replace(self, conn, ctx) -> None:
        w = self._worker(ctx)
        spec = self._spec(self._body(ctx))
        if spec["url"] != w.base_url:
            raise Refusal(400, "url: PUT keeps the worker's url (register a new worker instead)",
                          "invalid_worker_spec")
        self.manager.remove(w.id, drain=False)
        nw = self.manager.add(spec, worker_id=w.id)
        self._accepted(conn, nw, "worker re-registration started")

    @_refusals
    def patch(self, conn, ctx) -> None:
        w = self._worker(ctx)
        spec = self._spec(self._body(ctx), partial=True)
        key = spec.pop("api_key", None)
        if key is not None:
            w.api_key = key.encode()
        if "health" in spec:
            spec["health"] = {**(w.spec.get("health") or {}), **spec["health"]}
        w.spec.update(spec)
        self._accepted(conn, w, "worker updated")

    @_refusals
    def delete(self, conn, ctx) -> None:
        w = self._worker(ctx)
        self.manager.remove(w.id)
        self._accepted(conn, w, "worker draining; it is removed when its requests finish")

    @_refusals
    def legacy_add(self, conn, ctx) -> None:
        url = self._query(ctx.target).get("url")
        self._register(conn, self._spec({"url": url} if url else {}))

    @_refusals
    def legacy_remove(self, conn, ctx) -> None:
        url = (self._query(ctx.target).get("url") or "").rstrip("/")
        ws = self.registry.at_address(url)
        if not ws:
            raise Refusal(404, f"no worker with url {url!r}", "worker_not_found")
        for w in ws:
            self.manager.remove(w.id)
        self._accepted(conn, ws[0], "worker draining")
