"""One conformance case: a request sent to both gateways, the answers and worker records compared.

Rules:
- The request goes to the Rust SMG first, then to smg-proxy, never both at once, so
  the echo worker's records since a mark belong to the one request in flight.
- Records of the gateways' own background traffic (health checks, load polls) are
  left out by path (``BACKGROUND``) unless the case's own path is one of them.
- ``run`` records the case in the ledger and returns the differences that are not
  allow-listed; ``assert_same`` fails the test with all of them listed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tests.conformance.client import Response
from tests.conformance.compare import aspects_compared, compare_responses, compare_worker_requests
from tests.conformance.ledger import LEDGER, fail_message

BACKGROUND = frozenset({"/health", "/metrics", "/v1/loads", "/server_info", "/model_info", "/v1/models",
                        "/version", "/get_server_info", "/get_model_info"})


@dataclass
class Case:
    id: str
    method: str
    path: str
    headers: list = field(default_factory=list)
    body: Any = None
    route: str | None = None  # "METHOD /template" counted as a route; None: not a route case
    worker: bool = False      # compare what reached the echo worker
    text_exact: bool = True   # compare non-JSON bodies byte for byte
    paths: dict | None = None  # per gateway ("rust"/"ours") when they differ (a worker's own id)

    def sent_request_id(self) -> str | None:
        for n, v in self.headers:
            if n.lower() == "x-request-id":
                return v
        return None


@dataclass
class Outcome:
    rust: Response
    ours: Response
    rust_records: list
    ours_records: list
    diffs: list
    aspects: frozenset  # what was compared (ledger: which allow-list entries were exercised)


def _parsed(body: Any) -> Any:
    if isinstance(body, (bytes, str)):
        try:
            return json.loads(body)
        except ValueError:
            return None
    return body


def _records(rig, mark: int, path: str) -> list:
    bare = path.split("?", 1)[0]
    return [r for r in rig.echo_since(mark)
            if r["target"].split("?", 1)[0] not in BACKGROUND or r["target"].split("?", 1)[0] == bare]


def send(rig, case: Case) -> Outcome:
    """Sends ``case`` to both gateways and compares; nothing is recorded in the ledger."""
    headers = list(case.headers)
    if isinstance(case.body, (bytes, str)) and not any(n.lower() == "content-type" for n, _ in headers):
        headers.append(("Content-Type", "application/json"))  # a bad JSON body, not a missing header
    out = []
    for gw in (rig.rust, rig.ours):
        path = case.paths[gw.name] if case.paths else case.path
        mark = rig.echo_mark() if case.worker else 0
        resp = gw.call(case.method, path, headers=headers, body=case.body)
        recs = _records(rig, mark, path) if case.worker else []
        out.append((resp, recs))
    (r, rr), (o, orr) = out
    diffs = compare_responses(case.id, r, o, sent_request_id=case.sent_request_id(),
                              worker_urls=(rig.mock_url, rig.echo_url, rig.extra_url),
                              text_exact=case.text_exact)
    if case.worker:
        diffs += compare_worker_requests(case.id, rr, orr, case.headers, _parsed(case.body))
    return Outcome(r, o, rr, orr, diffs, aspects_compared(r, o, case.worker, case.text_exact))


def run(rig, case: Case) -> Outcome:
    """Sends, compares, records the case in the ledger; ``outcome.diffs`` are the
    differences left after the allow-list."""
    outcome = send(rig, case)
    if case.route:
        LEDGER.route(case.route)
    outcome.diffs = LEDGER.check(case.id, outcome.diffs, outcome.aspects)
    return outcome


def assert_same(rig, case: Case) -> Outcome:
    outcome = run(rig, case)
    assert not outcome.diffs, fail_message(case.id, outcome.diffs)
    return outcome
