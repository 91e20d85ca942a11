"""The discovery manifest (SMG 1.13 ``--discovery-file``): parsing and validation.

A manifest is JSON: a list of worker entries, or ``{"workers": [...]}``. An entry is
a WorkerSpec-like object with a ``url``, or a bare URL string.

Rules:
1. Pure: bytes in, ``{url: spec}`` out, or ``ValueError`` naming what is wrong.
2. A URL is normalized (surrounding space and trailing ``/`` removed) and must look
   like ``scheme://host[:port]``.
3. Defaults are filled: ``models`` [] (any model), ``worker_type`` "regular",
   ``labels`` {}, ``source`` "file". Other fields pass through untouched (the
   gateway validates them as a WorkerSpec when it registers the worker).
4. A URL listed twice keeps its last entry.
"""
from __future__ import annotations

from urllib.parse import urlsplit

import orjson

from smg.workers.spec import WORKER_TYPES


def normalize_spec(obj, source: str = "file") -> dict:
    """Validates one WorkerSpec-like entry and fills the defaults.

    Raises:
        ValueError: not an object with a string ``url`` (or a URL string), or a bad field.
    """
    if isinstance(obj, str):
        obj = {"url": obj}
    if not isinstance(obj, dict):
        raise ValueError("a worker entry must be an object or a URL string")
    url = obj.get("url")
    if not isinstance(url, str) or not url.strip():
        raise ValueError("a worker entry needs a 'url' string")
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        raise ValueError(f"worker url {url!r} must look like scheme://host:port")
    spec = dict(obj)
    spec["url"] = url
    models = spec.get("models", [])
    if models is None:
        models = []
    if not isinstance(models, list):
        raise ValueError(f"{url}: 'models' must be a list")
    spec["models"] = models
    wt = spec.get("worker_type") or "regular"
    if wt not in WORKER_TYPES:
        raise ValueError(f"{url}: worker_type must be one of {', '.join(WORKER_TYPES)}")
    spec["worker_type"] = wt
    labels = spec.get("labels")
    if labels is None:
        labels = {}
    if not isinstance(labels, dict):
        raise ValueError(f"{url}: 'labels' must be an object")
    spec["labels"] = labels
    spec.setdefault("source", source)
    return spec


def parse_manifest(data: bytes) -> dict:
    """Parses a discovery manifest.

    Returns:
        {url: spec}; a URL listed twice keeps its last entry.
    Raises:
        ValueError: not JSON, or not a list / ``{"workers": [...]}`` of valid entries.
    """
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"manifest is not JSON: {e}") from None
    if isinstance(obj, dict):
        obj = obj.get("workers")
    if not isinstance(obj, list):
        raise ValueError("manifest must be a list of workers or {\"workers\": [...]}")
    out: dict = {}
    for item in obj:
        spec = normalize_spec(item, "file")
        out[spec["url"]] = spec
    return out
