"""The Workers API (control plane): SMG's ``/workers`` resource and the legacy
``/add_worker`` / ``/remove_worker``.

Rules:
- POST/PUT/PATCH/DELETE answer 202: registration and draining run in the background
  (smg/workers/manager.py); POST also answers ``location`` (header and body).
- Worker ids are UUIDs (UUIDv7, minted by the manager). An id that is not a UUID is
  a 400, an unknown one a 404.
- Refusals use the control plane's own envelope, ``{"error": message, "code": CODE}``
  with SMG's codes (``BAD_REQUEST``, ``WORKER_NOT_FOUND``, ``WORKER_ALREADY_EXISTS``,
  ``WORKER_CREATE_IN_PROGRESS``), not the OpenAI one. A handler refuses by raising
  ``Refusal``; the ``_refusals`` wrapper answers it, so no handler returns sentinels.
- ``GET /workers`` lists registered workers (ready, not ready, failed, draining); one
  still registering (``pending``) is not listed but ``GET /workers/{id}`` shows it.
- ``api_key`` is write-only and never appears in an answer.
"""
from __future__ import annotations

import functools
import uuid
from urllib.parse import parse_qs

import orjson

from smg.workers.spec import WORKER_TYPES, SpecError, validate
from smg.workers.worker import PENDING, READY

BAD_REQUEST = "BAD_REQUEST"
WORKER_NOT_FOUND = "WORKER_NOT_FOUND"
WORKER_ALREADY_EXISTS = "WORKER_ALREADY_EXISTS"
WORKER_CREATE_IN_PROGRESS = "WORKER_CREATE_IN_PROGRESS"

ADD_QUEUED = "Worker addition queued for background processing"
UPDATE_QUEUED = "Worker update queued for background processing"
REMOVE_QUEUED = "Worker removal queued for background processing"


class Refusal(Exception):
    """A request the Workers API answers with an error (status, message, SMG code)."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def error_body(message: str, code: str) -> bytes:
    """The control plane's error envelope."""
    return orjson.dumps({"error": message, "code": code})


def _refusals(fn):
    @functools.wraps(fn)
    def handler(self, conn, ctx) -> None:
        try:
            fn(self, conn, ctx)
        except Refusal as r:
            ctx.error_code = r.code
            conn.reply(r.status, error_body(str(r), r.code))
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
            return orjson.loads(ctx.raw) if ctx.raw.strip() else None
        except orjson.JSONDecodeError as e:
            raise Refusal(400, f"JSON syntax error: Failed to parse the request body as JSON: {e}",
                          BAD_REQUEST) from None

    @staticmethod
    def _spec(obj, partial=False) -> dict:
        try:
            return validate({} if obj is None and partial else obj, partial)
        except SpecError as e:
            raise Refusal(400, f"Invalid JSON data: {e}", BAD_REQUEST) from None

    @staticmethod
    def _query(target: bytes) -> dict:
        q = target.partition(b"?")[2].decode("latin-1")
        return {k: v[0] for k, v in parse_qs(q).items()}

    def _worker(self, ctx):
        wid = ctx.path[len(b"/workers/"):].decode("latin-1")
        w = self.registry.get(wid)
        if w is not None:
            return w
        try:
            uuid.UUID(wid)
        except ValueError as e:
            raise Refusal(400, f"Invalid worker_id '{wid}' (expected UUID). Error: {e}", BAD_REQUEST) from None
        raise Refusal(404, f"Worker {wid} not found", WORKER_NOT_FOUND)

    @staticmethod
    def _accepted(conn, w, message: str, location: bool = False) -> None:
        doc = {"status": "accepted", "worker_id": w.id}
        headers = None
        if location:
            loc = f"/workers/{w.id}"
            doc.update(url=w.url, location=loc)
            headers = [(b"location", loc.encode())]
        doc["message"] = message
        conn.reply(202, orjson.dumps(doc), headers)

    # -- handlers --------------------------------------------------------------------------

    @_refusals
    def create(self, conn, ctx) -> None:
        self._register(conn, self._spec(self._body(ctx)))

    def _register(self, conn, spec: dict) -> None:
        url = spec["url"]
        for w in self.registry.at_address(url):
            if w.status == PENDING:
                raise Refusal(409, f"Worker creation already in progress for URL '{url}' with ID {w.id}. "
                                   f"Poll GET /workers/{w.id}.", WORKER_CREATE_IN_PROGRESS)
            raise Refusal(409, f"Worker already exists at URL '{url}' with ID {w.id}. Use PUT /workers/{w.id} "
                               f"to replace or PATCH /workers/{w.id} to update.", WORKER_ALREADY_EXISTS)
        w = self.manager.add(spec)
        self._accepted(conn, w, ADD_QUEUED, location=True)

    def list(self, conn, ctx) -> None:
        model = self._query(ctx.target).get("model")
        m = self.manager
        workers = [w for w in self.registry.all()
                   if w.status != PENDING and (model is None or model in w.models or not w.models)]
        by_type = dict.fromkeys(WORKER_TYPES, 0)
        for w in workers:
            by_type[w.worker_type] = by_type.get(w.worker_type, 0) + 1
        doc = {"workers": [m.info(w) for w in workers], "total": len(workers),
               "stats": {"prefill_count": by_type["prefill"], "decode_count": by_type["decode"],
                         "regular_count": by_type["regular"],
                         "total_workers": len(workers),
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
            raise Refusal(400, f"URL mismatch: worker has URL '{w.base_url}' but request body has '{spec['url']}'. "
                               "URL changes are not supported via PUT. Use DELETE + POST instead.", BAD_REQUEST)
        nw = self.manager.replace(w, spec)
        self._accepted(conn, nw, UPDATE_QUEUED)

    @_refusals
    def patch(self, conn, ctx) -> None:
        w = self._worker(ctx)
        self.manager.update(w, self._spec(self._body(ctx), partial=True))
        self._accepted(conn, w, UPDATE_QUEUED)

    @_refusals
    def delete(self, conn, ctx) -> None:
        w = self._worker(ctx)
        self.manager.remove(w.id)
        self._accepted(conn, w, REMOVE_QUEUED)

    @_refusals
    def legacy_add(self, conn, ctx) -> None:
        url = self._query(ctx.target).get("url")
        self._register(conn, self._spec({"url": url} if url else {}))

    @_refusals
    def legacy_remove(self, conn, ctx) -> None:
        url = (self._query(ctx.target).get("url") or "").rstrip("/")
        ws = self.registry.at_address(url)
        if not ws:
            raise Refusal(404, f"Worker with URL '{url}' not found", WORKER_NOT_FOUND)
        for w in ws:
            self.manager.remove(w.id)
        self._accepted(conn, ws[0], REMOVE_QUEUED)
