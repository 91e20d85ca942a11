"""RequestContext: one per request, created when its head arrives, handed down the
pipeline (filters → selection → exchange → sink) and read by the observer when the
request ends.

Rules:
- Per-request facts live here and nowhere else: not on the connection (which only
  frames bytes) and not on the exchange (which only drives attempts). The observer
  records from the context alone (``Observer.request_done(ctx)``).
- Fields are written by the stage that learns them: the protocol (method, path,
  target, headers, endpoint, t0, keep-alive), the request-id filter (``rid``), body
  parsing (``body``), auth and tenant filters (``principal``, ``tenant``), selection
  (``model``, ``model_label``, ``policy``, ``worker``), the exchange and its response
  transforms (``upstream_status``, ``is_sse``, ``scanner``, ``body_parts``,
  ``bytes_out``, ``error_type``), the sink (``status``).
- A filter that holds something for the request's lifetime (an admission permit, a
  rate-limit reservation) adds a callable to ``on_end`` (``add_end_hook``); the sink
  runs the hooks exactly once when the request ends — answered, failed, or abandoned by
  the client — before the observer records it (``Site.request_ended``).
- The context is also what a routing policy sees of the request (the interface in
  smg/routing/policy.py: ``headers``, ``header()``, ``body``, ``path``,
  ``routing_text()``), so selection allocates nothing more.
"""
from __future__ import annotations


class RequestContext:
    __slots__ = (
        # the request as received
        "method", "target", "path", "headers", "endpoint", "family", "keep_alive", "http11", "t0",
        "raw", "body", "rid", "span",
        # filled by later filters (auth, tenant): None until then
        "principal", "tenant",
        # callables run once when the request ends, however it ends (permits, settlements)
        "on_end",
        # selection
        "model", "model_label", "policy", "worker", "attempts",
        # the answer
        "status", "error_code", "upstream_status", "error_type", "is_sse", "scanner", "body_parts",
        "bytes_out", "dispatch_t", "_text",
        # the prepared prompt (smg/text/prompt.py) when it was made before selection
        "prompt",
        # prefill-decode mode: the pair's prefill worker (None: an ordinary request); set
        # by the PD selection filter, the only stage in that mode's chain that reads it
        "prefill",
        # a policy's decision, said in words (--route-explain); set only then, so it is
        # read with getattr and costs nothing per request otherwise
        "explain",
        # the Responses API's turn (smg/responses/turn.py) on /v1/responses
        "turn",
    )

    def __init__(self, method: bytes, target: bytes, path: bytes, headers: list, endpoint, t0: float) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.headers = headers
        self.endpoint = endpoint
        self.family = endpoint.family
        self.keep_alive = True
        self.http11 = True
        self.t0 = t0
        self.raw = b""
        self.body = None
        self.rid = b""
        self.span = None
        self.principal = None
        self.tenant = None
        self.on_end = None
        self.model = None
        self.model_label = ""
        self.policy = None
        self.worker = None
        self.attempts = 0
        self.status = 0
        self.error_code = None
        self.upstream_status = 0
        self.error_type = None
        self.is_sse = False
        self.scanner = None
        self.body_parts = None
        self.bytes_out = 0
        self.dispatch_t = 0.0
        self._text = None
        self.prompt = None
        self.turn = None

    def add_end_hook(self, fn) -> None:
        """``fn(ctx)`` runs once when the request ends, whatever way it ends. Hooks run in
        the order they were added. ``on_end`` holds the one hook itself (the common
        case: no list per request), or a list once there are several."""
        hooks = self.on_end
        if hooks is None:
            self.on_end = fn
        elif type(hooks) is list:
            hooks.append(fn)
        else:
            self.on_end = [hooks, fn]

    def end_hooks(self) -> tuple:
        """The hooks waiting for the request's end, in order (for inspection and tests)."""
        hooks = self.on_end
        if hooks is None:
            return ()
        return tuple(hooks) if type(hooks) is list else (hooks,)

    # -- what a routing policy reads (smg/routing/policy.py) -----------------------------

    def routing_text(self) -> str:
        t = self._text
        if t is None:
            fn = self.endpoint.text
            t = self._text = fn(self.body) if fn is not None and self.body is not None else ""
        return t

    def routing_tokens(self):
        p = self.prompt
        return p.ids if p is not None else None

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def __repr__(self) -> str:
        return f"RequestContext({self.method!r} {self.path!r} rid={self.rid!r} status={self.status})"
