"""Service discovery: where workers come from when nobody POSTs them to ``/workers``.

Two sources, FileDiscovery (``--discovery-file``, file.py) and KubeDiscovery
(``--service-discovery``, kube.py), both reporting *differences* through two
callbacks:

- ``on_add(spec)``: a worker appeared. ``spec`` is a WorkerSpec-like dict: ``url``
  (no trailing slash), ``models`` (list; empty = wildcard), ``worker_type``
  (regular|prefill|decode|encode), ``labels`` (dict), plus any other WorkerSpec field
  the source knows (``bootstrap_port``, ``kv_connector``, ``kv_engine_id``, ...) and
  ``source`` ("file" or "kubernetes").
- ``on_remove(url)``: that worker went away (pod deleted, not ready, dropped from
  the manifest).

A worker whose spec changes (a new bootstrap port, other models) is reported as
``on_remove(url)`` then ``on_add(new_spec)``. Callbacks are plain functions run on
the loop; they must not block (the gateway queues registration jobs, as SMG does).

Rules:
1. The deciding is sans-I/O: the manifest (manifest.py), selectors (selector.py),
   pod rules (pods.py) and the routing set's diffing (routing.py) are pure; the
   sources around them only fetch and wait.
2. A source that cannot be read keeps its last good state: a half-written manifest
   or an API-server outage must not deregister the whole fleet.
3. Every loop is bounded: reconnects back off exponentially (1 s -> 60 s, SMG's mesh
   and kube-rs watcher use the same doubling) and every read has a timeout.
4. The Kubernetes API is reached through smg's one control-plane HTTP client
   (smg.upstream.client, via kubeapi.py); configuration is kubeconfig.py.

This package's names are re-exported here; import them from ``smg.workers.discovery``.
"""
from smg.workers.discovery.errors import KubeError, KubeGone
from smg.workers.discovery.file import FileDiscovery
from smg.workers.discovery.kube import KubeDiscovery
from smg.workers.discovery.kubeapi import MAX_EVENT_LINE, MAX_LIST_BYTES, KubeClient
from smg.workers.discovery.kubeconfig import SA_DIR, KubeConfig
from smg.workers.discovery.manifest import normalize_spec, parse_manifest
from smg.workers.discovery.pods import (
    ANN_BOOTSTRAP_PORT,
    ANN_KV_CONNECTOR,
    ANN_KV_ENGINE_ID,
    ANN_WORKER_PORTS,
    pod_key,
    pod_ready,
    pod_workers,
)
from smg.workers.discovery.routing import OnAdd, OnRemove, Routing
from smg.workers.discovery.selector import match_selector, parse_selector, selector_string

__all__ = [
    "ANN_BOOTSTRAP_PORT", "ANN_KV_CONNECTOR", "ANN_KV_ENGINE_ID", "ANN_WORKER_PORTS", "MAX_EVENT_LINE",
    "MAX_LIST_BYTES", "SA_DIR", "FileDiscovery", "KubeClient", "KubeConfig", "KubeDiscovery", "KubeError",
    "KubeGone", "OnAdd", "OnRemove", "Routing", "match_selector", "normalize_spec", "parse_manifest",
    "parse_selector", "pod_key", "pod_ready", "pod_workers", "selector_string",
]
