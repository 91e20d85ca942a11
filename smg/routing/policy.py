"""The routing policy interface.

A policy chooses one worker among the candidates the registry gives it. Policies are
per model (see smg/routing/policies.py). Stateless policies keep the no-op defaults.

``select(workers, request)``: ``workers`` is a non-empty list of READY workers for
the request's model; ``request`` offers ``headers`` (list of (lower-name, value)
bytes pairs), ``header(name)``, ``body`` (the parsed JSON object), ``path`` and
``routing_text()`` (the text prefix-matching policies use, built once and cached) and
``routing_tokens()`` (the prompt's token ids when the gateway tokenized it before
selection — gRPC workers, whose engines' caches are keyed by tokens — else None; a
policy that can route on tokens prefers them). Returns a
worker from the list, or None when the policy refuses to choose (the gateway then
answers 503).
"""
from __future__ import annotations


class Policy:
    name = "base"
    #: True when __init__ takes the gateway config (see policies.make_policy).
    takes_config = False
    #: True when select() reads request.routing_text() (lets the gateway skip building it).
    needs_text = False

    def select(self, workers: list, request) -> object | None:
        raise NotImplementedError

    def on_worker_added(self, worker) -> None:
        pass

    def on_worker_removed(self, worker) -> None:
        pass

    def on_complete(self, worker, ok: bool) -> None:
        pass

    def maintain(self, now: float) -> None:
        """Periodic upkeep; ``now`` is the gateway's monotonic clock in seconds."""
