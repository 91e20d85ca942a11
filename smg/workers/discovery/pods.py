"""Pod -> worker specs: which pods are workers, at which URLs, with which fields.

Rules:
1. Pure: a Pod object (the API's JSON) in, ``{url: spec}`` out.
2. A pod is a worker when its phase is Running, its Ready condition is True, it has a
   pod IP and no ``deletionTimestamp`` (graceful deletion takes it out at once).
3. Its URL is ``http://{podIP}:{port}`` (IPv6 in brackets), one worker per port of the
   ``smg.ai/worker-ports`` annotation (``"8000,8001"``, ``"8000 8001"`` or a JSON
   list), else the configured port. A bad annotation is logged and ignored.
4. ``sglang.ai/bootstrap-port`` gives ``bootstrap_port`` (PD prefill);
   ``smg.ai/kv-connector``/``smg.ai/kv-engine-id`` the KV fields. The spec also
   carries the pod's labels, ``pod`` ("namespace/name") and ``source`` "kubernetes".
"""
from __future__ import annotations

import ipaddress
import logging

import orjson

log = logging.getLogger("smg.workers.discovery")

ANN_WORKER_PORTS = "smg.ai/worker-ports"
ANN_BOOTSTRAP_PORT = "sglang.ai/bootstrap-port"
ANN_KV_CONNECTOR = "smg.ai/kv-connector"
ANN_KV_ENGINE_ID = "smg.ai/kv-engine-id"


def pod_key(pod: dict) -> str:
    """``namespace/name``: the pod's owner key in the routing set."""
    md = pod.get("metadata") or {}
    return f"{md.get('namespace', '')}/{md.get('name', '')}"


def pod_ready(pod: dict) -> bool:
    """Running, Ready condition True, has a pod IP, not being deleted."""
    md = pod.get("metadata") or {}
    st = pod.get("status") or {}
    if md.get("deletionTimestamp"):
        return False
    if st.get("phase") != "Running" or not st.get("podIP"):
        return False
    for c in st.get("conditions") or ():
        if isinstance(c, dict) and c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def _ports_annotation(value: str) -> list:
    value = value.strip()
    if value.startswith("["):
        items = orjson.loads(value)
        if not isinstance(items, list):
            raise ValueError("not a list")
    else:
        items = [p for p in value.replace(",", " ").split() if p]
    ports = []
    for p in items:
        n = int(p)
        if not 0 < n < 65536:
            raise ValueError(f"port {n} out of range")
        if n not in ports:
            ports.append(n)
    if not ports:
        raise ValueError("no ports")
    return ports


def pod_workers(pod: dict, port: int = 80, worker_type: str = "regular") -> dict:
    """The workers one pod provides: {url: spec}; empty when the pod is not a ready worker."""
    if not pod_ready(pod):
        return {}
    md = pod.get("metadata") or {}
    ann = md.get("annotations") or {}
    ip = pod["status"]["podIP"]
    try:
        host = f"[{ip}]" if ipaddress.ip_address(ip).version == 6 else ip
    except ValueError:
        host = ip
    ports = [port]
    if ANN_WORKER_PORTS in ann:
        try:
            ports = _ports_annotation(str(ann[ANN_WORKER_PORTS]))
        except (ValueError, TypeError, orjson.JSONDecodeError):
            log.warning("pod %s: ignoring bad %s annotation %r", pod_key(pod), ANN_WORKER_PORTS,
                        ann[ANN_WORKER_PORTS])
    base = {"models": [], "worker_type": worker_type,
            "labels": dict(md.get("labels") or {}), "source": "kubernetes",
            "pod": pod_key(pod)}
    if ANN_BOOTSTRAP_PORT in ann:
        try:
            base["bootstrap_port"] = int(ann[ANN_BOOTSTRAP_PORT])
        except (TypeError, ValueError):
            log.warning("pod %s: ignoring bad %s annotation", pod_key(pod), ANN_BOOTSTRAP_PORT)
    if ANN_KV_CONNECTOR in ann:
        base["kv_connector"] = str(ann[ANN_KV_CONNECTOR])
    if ANN_KV_ENGINE_ID in ann:
        base["kv_engine_id"] = str(ann[ANN_KV_ENGINE_ID])
    out = {}
    for p in ports:
        url = f"http://{host}:{p}"
        out[url] = {"url": url, **base}
    return out
