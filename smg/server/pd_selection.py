"""Selection in prefill-decode mode: a (prefill, decode) pair, or a regular worker.

Rules:
- The prefill policy (``--prefill-policy``, default ``--policy``) picks among the
  model's routable prefill workers and the decode policy (``--decode-policy``) among
  its decode workers, independently; each role has its own policy instances
  (``PolicyRegistry(role=...)``).
- A model with routable workers of both roles goes PD (``ctx.prefill`` set,
  ``ctx.worker`` the decode worker, ``ctx.policy`` the decode policy); otherwise, when
  it has routable regular workers, the request is an ordinary one (``ctx.prefill``
  None) and the regular selector answers. A model whose PD workers exist but lack one
  routable role, and that has no regular worker, is refused 503
  ``no_available_workers`` with ``Retry-After: 1``.
- ``again`` picks a retry's pair, avoiding each half that just failed while another
  worker of its role exists.
- ``ready()``: what ``/readiness`` needs in this mode: a routable regular worker, or a
  routable prefill and a routable decode worker serving one model.
"""
from __future__ import annotations

from smg.server.filters import Reply
from smg.server.selection import NO_AVAILABLE, REGULAR, RETRY_AFTER_1

PREFILL = "prefill"
DECODE = "decode"


class PdSelector:
    __slots__ = ("registry", "regular", "prefill_policies", "decode_policies")

    def __init__(self, registry, regular, prefill_policies, decode_policies) -> None:
        self.registry = registry
        self.regular = regular              # the Selector of ordinary requests
        self.prefill_policies = prefill_policies
        self.decode_policies = decode_policies

    def first(self, conn, ctx):
        """The selection filter in PD mode."""
        body = ctx.body
        model = body.get("model") if body is not None else None
        registry = self.registry
        prefills = registry.candidates(model, PREFILL)
        decodes = registry.candidates(model, DECODE)
        if not prefills or not decodes:
            ctx.prefill = None
            if not registry.candidates(model, REGULAR) and \
                    (registry.fallback(model, PREFILL) or registry.fallback(model, DECODE)):
                ctx.model = model
                ctx.model_label = self.regular.model_label(model)
                return Reply(503, NO_AVAILABLE, "no_available_workers", RETRY_AFTER_1)
            return self.regular.first(conn, ctx)
        ctx.model = model
        ctx.model_label = self.regular.model_label(model)
        ppol = self.prefill_policies.get(model)
        dpol = ctx.policy = self.decode_policies.get(model)
        p = ppol.select(prefills, ctx)
        d = dpol.select(decodes, ctx)
        if p is None or d is None:
            name = ppol.name if p is None else dpol.name
            return Reply(503, f"policy {name} selected no worker", "no_worker_selected")
        ctx.prefill = p
        ctx.worker = d
        return None

    def prefill_policy(self, model):
        return self.prefill_policies.get(model)

    def again(self, ctx, failed_prefill, failed_decode) -> tuple | None:
        """A retry's ``(prefill, decode)``, or None when a role has no routable worker."""
        model = ctx.model
        prefills = self._avoid(self.registry.candidates(model, PREFILL), failed_prefill)
        decodes = self._avoid(self.registry.candidates(model, DECODE), failed_decode)
        if not prefills or not decodes:
            return None
        p = self.prefill_policies.get(model).select(prefills, ctx)
        d = ctx.policy.select(decodes, ctx)
        return None if p is None or d is None else (p, d)

    @staticmethod
    def _avoid(workers: list, failed) -> list:
        if failed is not None and len(workers) > 1 and failed in workers:
            return [w for w in workers if w is not failed]
        return workers

    def ready(self) -> bool:
        registry = self.registry
        if registry.ready_count():
            return True
        decodes = registry.candidates(None, DECODE)
        for p in registry.candidates(None, PREFILL):
            for d in decodes:
                if not p.models or not d.models or set(p.models) & set(d.models):
                    return True
        return False
