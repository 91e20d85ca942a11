"""The Prometheus families of both gateways after the same traffic: names, types, label
names and label values (help texts are not compared: no dashboard or alert reads them).

The expositions are compared by the shared ``tests/cases/metrics_diff.py`` when it is
there, else by the small comparison below (names, types, label names). The traffic
is sent here first, so the families it creates exist whatever ran before.
"""
from __future__ import annotations

import importlib

from tests.conformance.case import Case, send
from tests.conformance.compare import Difference
from tests.conformance.ledger import LEDGER, fail_message
from tests.conformance.rig import ECHO_MODEL, MOCK_MODEL

TRAFFIC = [
    Case("metrics traffic: chat", "POST", "/v1/chat/completions",
         body={"model": MOCK_MODEL, "messages": [{"role": "user", "content": "count me"}]}),
    Case("metrics traffic: stream", "POST", "/v1/chat/completions",
         body={"model": ECHO_MODEL, "stream": True, "messages": [{"role": "user", "content": "count me"}]}),
    Case("metrics traffic: completion", "POST", "/v1/completions",
         body={"model": MOCK_MODEL, "prompt": "count me", "max_tokens": 4}),
    Case("metrics traffic: bad request", "POST", "/v1/chat/completions", body=b"{nope"),
    Case("metrics traffic: unknown path", "GET", "/no/such/path"),
    Case("metrics traffic: models", "GET", "/v1/models"),
]


def _families_fallback(text: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families
    out = {}
    for fam in text_string_to_metric_families(text):
        name = fam.name + "_total" if fam.type == "counter" and not fam.name.endswith("_total") else fam.name
        labels = set()
        for s in fam.samples:
            labels.update(k for k in s.labels if k != "le")
        out[name] = (fam.type, frozenset(labels))
    return out


def metric_differences(ours: str, rust: str) -> tuple:
    """(Differences, number of families compared)."""
    try:
        md = importlib.import_module("tests.cases.metrics_diff")
    except ModuleNotFoundError as e:
        if e.name not in ("tests.cases.metrics_diff", "tests.cases"):
            raise
        md = None
    out = []
    if md is not None:
        names = set(md.families(ours)) | set(md.families(rust))
        for x in md.diff(ours, rust, compare_help=False):
            where = f"{x.family} {x.kind}" + (f" {x.label}" if x.label else "")
            if x.kind == md.MISSING:
                r, o = "present", "absent"
            elif x.kind == md.EXTRA:
                r, o = "absent", "present"
            else:
                r, o = str(list(x.reference)), str(list(x.ours))
            out.append(Difference("metrics", "metric", where, r, o))
        return out, len(names)
    fo, fr = _families_fallback(ours), _families_fallback(rust)
    for name in sorted(set(fo) | set(fr)):
        if name not in fo:
            out.append(Difference("metrics", "metric", f"{name} missing", "present", "absent"))
        elif name not in fr:
            out.append(Difference("metrics", "metric", f"{name} extra", "absent", "present"))
        else:
            if fo[name][0] != fr[name][0]:
                out.append(Difference("metrics", "metric", f"{name} type", fr[name][0], fo[name][0]))
            if fo[name][1] != fr[name][1]:
                out.append(Difference("metrics", "metric", f"{name} label_names", str(sorted(fr[name][1])),
                                      str(sorted(fo[name][1]))))
    return out, len(set(fo) | set(fr))


def test_metric_families(rig):
    for case in TRAFFIC:
        send(rig, case)
    diffs, n = metric_differences(rig.ours.metrics_text(), rig.rust.metrics_text())
    LEDGER.count("metric families compared", n)
    left = LEDGER.check("metrics", diffs, frozenset({"metric"}))
    assert not left, fail_message("metrics", left)
