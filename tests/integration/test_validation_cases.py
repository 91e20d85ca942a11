"""The recorded table of SMG's answers to bad request bodies (tests/cases/validation_cases.py),
replayed against a real gateway in front of a mock worker: same status, same error format,
same ``code`` and ``param``; a refused request never reaches the worker, an accepted one
does."""
from __future__ import annotations

import http.client
import json

import pytest

from smg.testing.harness import GatewayHarness
from smg.testing.mock_worker import MockConfig
from tests.cases.validation_cases import CASES
from tests.helpers import wait_for


@pytest.fixture(scope="module")
def gw():
    with GatewayHarness(workers=[MockConfig(worker_id="w1")], policy="round_robin") as h:
        yield h


def _post(port: int, path: str, body: bytes, content_type: str | None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("POST", path, body=body, headers={} if content_type is None else {"content-type": content_type})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def _seen(worker, path: str) -> int:
    return worker.stats.paths.get(path, 0)


# Cases where smg deliberately answers otherwise, with the reason.
DEVIATIONS = {
    # a body without Content-Type is read as JSON (SMG refuses it: 400 json_parse_error,
    # or 415 on the plain routes); smg/api/validate module rules
    c["name"]: "no Content-Type is taken as JSON" for c in CASES if c["content_type"] is None
}


def test_deviations_are_accepted_requests(gw):
    """A request without Content-Type reaches the worker as if it named JSON."""
    worker = gw.workers[0]
    for c in CASES:
        if c["name"] in DEVIATIONS and c["endpoint"] == "/v1/chat/completions":
            before = _seen(worker, c["endpoint"])
            status, _, _ = _post(gw.port, c["endpoint"], c["body"], None)
            assert status == 200
            assert wait_for(lambda: _seen(worker, c["endpoint"]) == before + 1, timeout=5)


@pytest.mark.parametrize("case", [c for c in CASES if c["name"] not in DEVIATIONS],
                         ids=[c["name"] for c in CASES if c["name"] not in DEVIATIONS])
def test_case(gw, case):
    worker = gw.workers[0]
    before = _seen(worker, case["endpoint"])
    status, headers, body = _post(gw.port, case["endpoint"], case["body"], case["content_type"])
    fmt = case["format"]
    if fmt == "worker":
        # accepted and forwarded: the answer is the worker's own
        assert wait_for(lambda: _seen(worker, case["endpoint"]) == before + 1, timeout=5), (status, body)
        return
    assert status == case["status"], body
    assert _seen(worker, case["endpoint"]) == before, "a refused request reached the worker"
    if fmt == "plain":
        assert headers["content-type"].startswith("text/plain")
        assert body
        return
    assert headers["content-type"] == "application/json"
    if status == 400:  # only the relay's own Messages checks name their code in a header
        assert headers.get("x-smg-error-code") == case.get("error_code_header"), headers
    doc = json.loads(body)
    if fmt == "anthropic":
        assert doc["type"] == "error" and set(doc["error"]) == {"type", "message"}
        assert doc["error"]["message"]
        assert doc["request_id"] == headers["x-request-id"]
        return
    err = doc["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert (err["code"], err["param"]) == (case["code"], case["param"])
