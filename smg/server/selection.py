"""Worker selection: one stage for the first attempt and every retry.

Rules:
- Candidates are asked for by model **and role**: ordinary requests see ``regular``
  workers only, never the prefill or decode halves of a disaggregated pair.
- When health checks and breakers exclude every verified worker of a model, the
  request is refused with 503 ``no_available_workers`` and ``Retry-After: 1`` (SMG's
  answer); with ``panic_routing`` the registry's panic set (``fallback``) is tried
  instead (health information lags reality). A model whose workers were never
  verified (all pending) gets 503 ``no_healthy_workers`` either way.
- A retry never goes to a worker in the exchange's ``excluded`` list (the workers
  that answered 500 to this request), and not back to the worker that just failed
  while another candidate exists.
- Token ids before selection: when the model's candidates are gRPC workers (the first
  candidate has a channel) and the policy reads the prompt (``needs_text``),
  ``prepare(ctx, worker)`` (smg/server/grpc_exchange.py ``routing_prompt``) renders and
  tokenizes the prompt into ``ctx.prompt`` first, so the policy routes on the token ids
  the engine's cache is keyed by; the exchange then reuses it. A prompt that cannot be
  made is left to the exchange to refuse.
- The model's metric label comes from a bounded set: a model some worker names
  explicitly, ``unknown`` when the request names none, ``other`` for anything else —
  a client inventing model strings cannot grow label sets or caches.
"""
from __future__ import annotations

from smg.server.filters import Reply

REGULAR = "regular"


NO_AVAILABLE = "All workers are unavailable (circuit breaker open or unhealthy)"
RETRY_AFTER_1 = [(b"retry-after", b"1")]


class Selector:
    __slots__ = ("registry", "policies", "panic", "prepare")

    def __init__(self, registry, policies, panic: bool = False, prepare=None) -> None:
        self.registry = registry
        self.policies = policies
        self.panic = panic
        self.prepare = prepare

    def _workers(self, model) -> list:
        registry = self.registry
        workers = registry.candidates(model, REGULAR)
        if not workers and self.panic:
            workers = registry.fallback(model, REGULAR)
        return workers

    def model_label(self, model) -> str:
        if model is None:
            return "unknown"
        return model if type(model) is str and self.registry.names(model) else "other"

    def first(self, conn, ctx):
        """The selection filter: picks the first attempt's worker into ``ctx``."""
        body = ctx.body
        model = body.get("model") if body is not None else None
        ctx.model = model
        registry = self.registry
        workers = registry.candidates(model, REGULAR)  # _workers(), inlined on the hot path
        if not workers and self.panic:
            workers = registry.fallback(model, REGULAR)
        if not workers:
            ctx.model_label = self.model_label(model)
            if model is not None and len(registry) and not registry.knows_model(model):
                return Reply(404, f"model '{model}' is not served by any worker", "model_not_found")
            if registry.fallback(model, REGULAR):
                return Reply(503, NO_AVAILABLE, "no_available_workers", RETRY_AFTER_1)
            return Reply(503, "no healthy worker is available", "no_healthy_workers")
        policy = ctx.policy = self.policies.get(model)
        # model_label(), inlined
        ctx.model_label = model if type(model) is str and registry.names(model) else \
            ("unknown" if model is None else "other")
        if workers[0].channel is not None and policy.needs_text and self.prepare is not None:
            self.prepare(ctx, workers[0])
        worker = policy.select(workers, ctx)
        if worker is None:
            return Reply(503, f"policy {policy.name} selected no worker", "no_worker_selected")
        ctx.worker = worker
        return None

    def _retry_set(self, ctx, failed, excluded) -> list:
        workers = self._workers(ctx.model)
        if excluded:
            workers = [w for w in workers if w not in excluded]
        if len(workers) > 1 and failed in workers:
            workers = [w for w in workers if w is not failed]
        return workers

    def again(self, ctx, failed, excluded=None):
        """A retry's worker (never one in ``excluded``, nor ``failed`` while another
        exists), or None."""
        workers = self._retry_set(ctx, failed, excluded)
        return ctx.policy.select(workers, ctx) if workers else None

    def has_other(self, ctx, excluded) -> bool:
        """Whether a candidate outside ``excluded`` exists right now (a retry after a
        500 can go somewhere)."""
        for w in self._workers(ctx.model):
            if w not in excluded:
                return True
        return False

    def any_worker(self, rotation: int):
        """A ready regular worker for model-less GETs (``/get_model_info``), in rotation."""
        workers = self.registry.candidates(None, REGULAR)
        return workers[rotation % len(workers)] if workers else None
