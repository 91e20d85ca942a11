"""The address-guard stage of the Workers API routes that register a worker
(``POST /workers``, ``PUT /workers/{worker_id}``, ``POST /add_worker``): a worker URL
the guard refuses (smg/workers/addresses.py) is answered 400 ``invalid_worker_spec``
naming the url, before the handler registers anything.

Rules:
- Only those routes carry the stage (``for_endpoint``), and it looks only at their
  registering method; no other request pays anything.
- A missing or malformed url passes: the handler's spec validation answers it.
- A host name is looked up while the request waits in the filter chain (the verdict is
  the awaitable's result), so the loop never blocks on DNS; the lookup is bounded by
  the guard.
- The worker manager judges every worker again before its first probe (discovery and
  ``--worker-urls`` workers never pass this stage).
"""
from __future__ import annotations

from urllib.parse import parse_qs

import orjson

from smg.server.filters import Reply

# endpoint path -> the method of it that registers a worker
REGISTERING = {"/workers": b"POST", "/workers/{worker_id}": b"PUT", "/add_worker": b"POST"}
_CODE = "invalid_worker_spec"


def _url_of(ctx):
    if ctx.endpoint.path == "/add_worker":
        q = ctx.target.partition(b"?")[2].decode("latin-1")
        return (parse_qs(q).get("url") or [None])[0]
    try:
        body = orjson.loads(ctx.raw) if ctx.raw else None
    except orjson.JSONDecodeError:
        return None
    return body.get("url") if type(body) is dict else None


async def _after_lookup(guard, url: str):
    reason = await guard.check(url)
    return None if reason is None else Reply(400, reason, _CODE)


def for_endpoint(endpoint, guard):
    """The stage for ``endpoint``'s route, or None when it registers no worker."""
    method = REGISTERING.get(endpoint.path)
    if method is None or endpoint.provider != "workers_api":
        return None

    def worker_address(conn, ctx):
        if ctx.method != method:
            return None
        url = _url_of(ctx)
        if type(url) is not str or not url:
            return None
        reason = guard.refusal(url)
        if reason is not None:
            return Reply(400, reason, _CODE)
        if guard.needs_lookup(url):
            return _after_lookup(guard, url)
        return None

    return worker_address
