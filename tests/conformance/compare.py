"""How two answers to the same request are compared: the differences the suite reports.

Rules:
- A ``Difference`` is (case, aspect, where, rust, ours): ``aspect`` names what was
  compared (``ASPECTS``), ``where`` the place inside it (a JSON path with list indexes
  folded to ``[]``, a header name, an SSE position), ``rust``/``ours`` short readable
  descriptions. The allow-list (allowlist.py) matches on case, aspect and where.
- Values that differ on every request (ids, timestamps, generated text) are compared
  by type only; what a client branches on is compared by value: the status, the media
  type, ``error.code``/``error.type``/``error.param`` (``code`` also in the Workers
  API's ``{"error": "...", "code": "..."}`` form), ``x-smg-error-code``, the
  ``Allow`` methods, an echoed ``x-request-id``, SSE framing (event names, ``[DONE]``).
- Numbers are one type (``number``): JSON does not tell 1 from 1.0 apart for a client.
- What reached the worker is compared per request: method, target, forwarded header
  names (minus the transport headers each HTTP client sets for itself, ``TRANSPORT``),
  the values of the headers the client sent, and the JSON body (keys and values).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable

from tests.conformance.client import Response

ASPECTS = ("status", "content-type", "body", "body-text", "error", "header", "sse",
           "worker-request", "worker-header", "worker-body", "metric")

# Set by each HTTP client for its own connection; whether a gateway sends them says
# nothing about what it forwards.
TRANSPORT = frozenset({"host", "content-length", "connection", "transfer-encoding", "keep-alive"})

_ABSENT = object()

POSITION = re.compile(r" at line \d+ column \d+$")  # a JSON decoder's error position

REQUEST_ID = re.compile(r"^([A-Za-z]+[-_])([A-Za-z0-9]+)$")


@dataclass(frozen=True)
class Difference:
    case: str
    aspect: str
    where: str
    rust: str
    ours: str

    def __str__(self) -> str:
        return f"[{self.aspect}] {self.where}: rust={self.rust} ours={self.ours}"


def kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _by_url(items: list) -> list:
    """Objects that carry a ``url`` (workers) in URL order: list order is not part of
    either gateway's contract (the Rust SMG lists workers in hash-map order)."""
    if items and all(type(i) is dict and type(i.get("url")) is str for i in items):
        return sorted(items, key=lambda i: i["url"])
    return items


def json_shape_diffs(a: Any, b: Any, where: str = "$") -> list:
    """(where, rust, ours) for every place where the two JSON values differ in shape:
    type, key set, empty versus non-empty list. Lists are compared element by element
    up to the shorter one (lists of workers paired by ``url``); the paths fold indexes to ``[]`` and repeats are dropped."""
    out: list = []
    seen: set = set()

    def add(w: str, ra: str, ob: str) -> None:
        if (w, ra, ob) not in seen:
            seen.add((w, ra, ob))
            out.append((w, ra, ob))

    def walk(x: Any, y: Any, w: str) -> None:
        kx, ky = kind(x), kind(y)
        if kx != ky:
            add(w, kx, ky)
            return
        if kx == "object":
            for k in sorted(set(x) | set(y)):
                if k not in y:
                    add(f"{w}.{k}", kind(x[k]), "absent")
                elif k not in x:
                    add(f"{w}.{k}", "absent", kind(y[k]))
                else:
                    walk(x[k], y[k], f"{w}.{k}")
        elif kx == "list":
            if bool(x) != bool(y):
                add(f"{w}[]", f"{len(x)} items", f"{len(y)} items")
            x, y = _by_url(x), _by_url(y)
            for i in range(min(len(x), len(y))):
                walk(x[i], y[i], f"{w}[]")

    walk(a, b, where)
    return out


def json_value_diffs(a: Any, b: Any, where: str = "$") -> list:
    """(where, rust, ours) for every leaf or key where two JSON values are not equal."""
    out: list = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in b:
                out.append((f"{where}.{k}", _short(a[k]), "absent"))
            elif k not in a:
                out.append((f"{where}.{k}", "absent", _short(b[k])))
            else:
                out.extend(json_value_diffs(a[k], b[k], f"{where}.{k}"))
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for x, y in zip(a, b):
            out.extend(json_value_diffs(x, y, f"{where}[]"))
    elif a != b or kind(a) != kind(b):
        out.append((where, _short(a), _short(b)))
    return out


def _short(v: Any, n: int = 80) -> str:
    s = json.dumps(v) if not isinstance(v, str) else repr(v)
    return s if len(s) <= n else s[:n] + "..."


def _value(v: Any) -> str:
    return "absent" if v is _ABSENT else json.dumps(v)


def _is_error(j: Any) -> bool:
    return isinstance(j, dict) and "error" in j


def _error_field(j: Any, f: str) -> Any:
    """``f`` of an error body: ``{"error": {"code": ...}}`` (OpenAI form) or, for
    ``code``, ``{"error": "message", "code": ...}`` (the Workers API's form)."""
    if not isinstance(j, dict):
        return _ABSENT
    err = j.get("error", _ABSENT)
    if isinstance(err, dict):
        return err.get(f, _ABSENT)
    return j.get(f, _ABSENT) if f == "code" else _ABSENT


def _summary(r: Response) -> str:
    """What kind of answer ``r`` is, in a few words (its error code, or its keys)."""
    j = _json(r.body)
    if isinstance(j, dict):
        err = j.get("error")
        if isinstance(err, dict):
            return f"error {err.get('code', err.get('type'))!r}"
        return "object " + ",".join(sorted(j)[:8])
    if j is not None:
        return kind(j)
    return f"{r.media_type() or 'no content-type'} {_short(r.text(), 40)}"


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def parse_sse(body: bytes) -> list:
    """The events of an SSE body as (event name or "", data kind, parsed data)."""
    events = []
    for block in re.split(rb"\r?\n\r?\n", body):
        if not block.strip():
            continue
        name, data = "", []
        comment_only = True
        for line in block.splitlines():
            if line.startswith(b":"):
                continue
            comment_only = False
            field, _, value = line.partition(b":")
            value = value[1:] if value.startswith(b" ") else value
            if field == b"event":
                name = value.decode("utf-8", "replace")
            elif field == b"data":
                data.append(value)
        if comment_only:
            continue
        raw = b"\n".join(data)
        if raw == b"[DONE]":
            events.append((name, "[DONE]", None))
        else:
            obj = _json(raw)
            events.append((name, "json" if obj is not None else "text", obj))
    return events


def request_id_format(value: str | None) -> str:
    if value is None:
        return "absent"
    m = REQUEST_ID.match(value)
    if not m:
        return f"other(len {len(value)})"
    return f"{m.group(1)}<{len(m.group(2))} alnum>"


def compare_responses(case: str, r: Response, o: Response, *, sent_request_id: str | None = None,
                      worker_urls: Iterable = (), text_exact: bool = True) -> list:
    """Every difference between the Rust answer ``r`` and ours ``o`` to the same request."""
    diffs: list = []

    def d(aspect: str, where: str, rv: Any, ov: Any) -> None:
        diffs.append(Difference(case, aspect, where, str(rv), str(ov)))

    if r.status != o.status:
        d("status", "status", r.status, o.status)
    if r.media_type() != o.media_type():
        d("content-type", "content-type", r.media_type() or "absent", o.media_type() or "absent")

    # headers a client acts on
    rid_r, rid_o = r.header("x-request-id"), o.header("x-request-id")
    if sent_request_id is not None and sent_request_id in (rid_r, rid_o):
        if rid_r != rid_o:
            d("header", "x-request-id", rid_r, rid_o)
    elif request_id_format(rid_r) != request_id_format(rid_o):
        d("header", "x-request-id", request_id_format(rid_r), request_id_format(rid_o))
    urls = set(worker_urls)

    def routed(v: str | None) -> str:
        if v is None:
            return "absent"
        return "a worker url" if v in urls else f"other: {v}"

    if routed(r.header("x-smg-routed-worker-id")) != routed(o.header("x-smg-routed-worker-id")):
        d("header", "x-smg-routed-worker-id", routed(r.header("x-smg-routed-worker-id")),
          routed(o.header("x-smg-routed-worker-id")))
    for name in ("x-smg-error-code", "retry-after", "www-authenticate"):
        if r.header(name) != o.header(name):
            d("header", name, r.header(name) or "absent", o.header(name) or "absent")
    allow_r = sorted(m.strip() for m in (r.header("allow") or "").split(",") if m.strip())
    allow_o = sorted(m.strip() for m in (o.header("allow") or "").split(",") if m.strip())
    if allow_r != allow_o:
        d("header", "allow", ",".join(allow_r) or "absent", ",".join(allow_o) or "absent")

    # the body
    if r.status != o.status:
        # two different answers (say an error and a success): one line, not one per key
        if _summary(r) != _summary(o):
            d("body", "$", _summary(r), _summary(o))
        return diffs
    if r.media_type() == "text/event-stream" and o.media_type() == "text/event-stream":
        diffs.extend(compare_sse(case, r.body, o.body))
        return diffs
    jr, jo = _json(r.body), _json(o.body)
    if jr is not None and jo is not None:
        by_value = set()
        if _is_error(jr) or _is_error(jo):
            ca, cb = _error_field(jr, "code"), _error_field(jo, "code")
            if ca != cb or kind(ca) != kind(cb):
                d("error", "error.code", _value(ca), _value(cb))
            for f in ("type", "param"):
                va, vb = _error_field(jr, f), _error_field(jo, f)
                if va != vb or kind(va) != kind(vb):
                    d("error", f"error.{f}", _value(va), _value(vb))
            by_value = {"$.code", "$.error", "$.error.code", "$.error.type", "$.error.param"}
        for w, rv, ov in json_shape_diffs(jr, jo):
            if w not in by_value:
                d("body", w, rv, ov)
    elif (jr is None) != (jo is None):
        d("body", "$", "json" if jr is not None else f"text {_short(r.text())}",
          "json" if jo is not None else f"text {_short(o.text())}")
    elif text_exact and r.body != o.body:
        tr, to = r.text(), o.text()
        if POSITION.sub("", tr) == POSITION.sub("", to):
            # the same refusal, one side naming where in the body the decoder stopped
            pr, po = POSITION.search(tr), POSITION.search(to)
            d("body-text", "$ position", pr.group(0).strip() if pr else "none", po.group(0).strip() if po else "none")
        else:
            d("body-text", "$", _short(tr), _short(to))
    return diffs


def compare_sse(case: str, rb: bytes, ob: bytes) -> list:
    er, eo = parse_sse(rb), parse_sse(ob)
    diffs = []
    frame_r = [(n, k) for n, k, _ in er]
    frame_o = [(n, k) for n, k, _ in eo]
    if frame_r != frame_o:
        diffs.append(Difference(case, "sse", "framing", _frames(frame_r), _frames(frame_o)))
    for i, ((nr, kr, dr), (no, ko, do)) in enumerate(zip(er, eo)):
        if kr == ko == "json":
            for w, rv, ov in json_shape_diffs(dr, do, f"event[{nr or 'message'}]"):
                diffs.append(Difference(case, "sse", w, rv, ov))
    # one report per place is enough
    out, seen = [], set()
    for x in diffs:
        if (x.where, x.rust, x.ours) not in seen:
            seen.add((x.where, x.rust, x.ours))
            out.append(x)
    return out


def _frames(frames: list) -> str:
    if not frames:
        return "no events"
    parts: list = []
    for f in frames:
        label = f"{f[0] or 'data'}:{f[1]}"
        if parts and parts[-1][0] == label:
            parts[-1][1] += 1
        else:
            parts.append([label, 1])
    return " ".join(f"{label}x{n}" if n > 1 else label for label, n in parts)


def aspects_compared(r: Response, o: Response, worker: bool, text_exact: bool = True) -> frozenset:
    """The aspects ``compare_responses`` (and, with ``worker``, ``compare_worker_requests``)
    can report for this pair of answers: what an allow-list entry needs to have been looked at."""
    out = {"status", "content-type", "header"}
    if r.status == o.status:
        if r.media_type() == o.media_type() == "text/event-stream":
            out.add("sse")
        else:
            out.update(("body", "error"))
            if text_exact and _json(r.body) is None and _json(o.body) is None:
                out.add("body-text")
    else:
        out.add("body")
    if worker:
        out.update(("worker-request", "worker-header", "worker-body"))
    return frozenset(out)


def compare_worker_requests(case: str, rr: list, orr: list, sent: list, sent_body: Any = None) -> list:
    """Differences between what reached the worker through Rust (``rr``) and through
    ours (``orr``), both lists of echo-worker records; ``sent``: the client's headers,
    ``sent_body``: the client's body (parsed). When ours forwarded the client's body
    unchanged, every body difference is reported with ``ours="as sent"`` (the other
    gateway changed it); otherwise so is a top-level key only ours forwarded, with the
    value the client sent."""
    diffs: list = []
    if len(rr) != len(orr):
        diffs.append(Difference(case, "worker-request", "count", str(len(rr)), str(len(orr))))
    sent_values = {n.lower(): v for n, v in sent}
    for a, b in zip(rr, orr):
        if (a["method"], a["target"]) != (b["method"], b["target"]):
            diffs.append(Difference(case, "worker-request", "request line", f"{a['method']} {a['target']}",
                                    f"{b['method']} {b['target']}"))
        ha = {n: v for n, v in a["headers"]}
        hb = {n: v for n, v in b["headers"]}
        for name in sorted((set(ha) | set(hb)) - TRANSPORT):
            if name not in hb:
                diffs.append(Difference(case, "worker-header", name, "forwarded", "absent"))
            elif name not in ha:
                diffs.append(Difference(case, "worker-header", name, "absent", "forwarded"))
            elif name in sent_values and sent_values[name] in (ha[name], hb[name]):
                if ha[name] != hb[name]:
                    diffs.append(Difference(case, "worker-header", name, _short(ha[name]), _short(hb[name])))
            elif name == "x-request-id" and request_id_format(ha[name]) != request_id_format(hb[name]):
                diffs.append(Difference(case, "worker-header", name, request_id_format(ha[name]),
                                        request_id_format(hb[name])))
        ja, jb = _json(a["body"].encode()), _json(b["body"].encode())
        if ja is not None and jb is not None:
            verbatim = isinstance(sent_body, dict) and jb == sent_body  # ours forwarded exactly what was sent
            for w, rv, ov in json_value_diffs(ja, jb):
                if verbatim:
                    ov = "as sent"
                elif rv == "absent" and isinstance(sent_body, dict) and isinstance(jb, dict) and \
                        w.count(".") == 1 and w[2:] in sent_body and sent_body[w[2:]] == jb.get(w[2:]):
                    ov = "as sent"
                diffs.append(Difference(case, "worker-body", w, rv, ov))
        elif a["body"] != b["body"]:
            diffs.append(Difference(case, "worker-body", "$", _short(a["body"]), _short(b["body"])))
    return diffs
