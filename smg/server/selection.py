"""Worker selection: one stage for the first attempt and every retry.

Rules:
- Candidates are asked for by model **and role**: ordinary requests see ``regular``
  workers only, never the prefill or decode halves of a disaggregated pair.
- When health checks and breakers exclude every worker of a model, the registry's
  panic set (``fallback``) is tried: health information lags reality, and trying
  beats refusing.
- A retry never goes back to the worker that just failed while another candidate
  exists.
- The model's metric label comes from a bounded set: a model some worker names
  explicitly, ``unknown`` when the request names none, ``other`` for anything else —
  a client inventing model strings cannot grow label sets or caches.
"""
from __future__ import annotations

from smg.server.filters import Reply

REGULAR = "regular"


class Selector:
    __slots__ = ("registry", "policies")

    def __init__(self, registry, policies) -> None:
        self.registry = registry
        self.policies = policies

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
        workers = registry.candidates(model, REGULAR) or registry.fallback(model, REGULAR)
        if not workers:
            ctx.model_label = self.model_label(model)
            if model is not None and len(registry) and not registry.knows_model(model):
                return Reply(404, f"model '{model}' is not served by any worker", "model_not_found")
            return Reply(503, "no healthy worker is available", "no_healthy_workers")
        policy = ctx.policy = self.policies.get(model)
        ctx.model_label = self.model_label(model)
        worker = policy.select(workers, ctx)
        if worker is None:
            return Reply(503, f"policy {policy.name} selected no worker", "no_worker_selected")
        ctx.worker = worker
        return None

    def again(self, ctx, failed):
        """A retry's worker (never ``failed`` while another exists), or None."""
        registry = self.registry
        model = ctx.model
        workers = registry.candidates(model, REGULAR) or registry.fallback(model, REGULAR)
        if len(workers) > 1 and failed in workers:
            workers = [w for w in workers if w is not failed]
        return ctx.policy.select(workers, ctx) if workers else None

    def any_worker(self, rotation: int):
        """A ready regular worker for model-less GETs (``/get_model_info``), in rotation."""
        workers = self.registry.candidates(None, REGULAR)
        return workers[rotation % len(workers)] if workers else None
