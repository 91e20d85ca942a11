"""smg's /metrics against the Rust SMG's after the same traffic (the oracle).

Both gateways run as processes in front of the same kind of mock workers (healthy
ones, one answering 500 that later recovers, one answering 400, one resetting
connections, one that is killed after registration), take the same requests
(non-streamed and streamed, an unknown model, unmatched routes, retries, a breaker
opening and readmitting), and the
expositions are compared with tests.cases.metrics_diff. The test passes when every
difference is on ``ALLOW`` below, each entry with its reason, and no entry about
families, types, help texts or label names is stale (label values of failed attempts
depend on which worker each retry reaches, so those entries may match nothing).
Skipped when the Rust binary is absent.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.cases.metrics_diff import EXTRA, HELP, LABEL_VALUES, MISSING, apply_allow_list, diff, url_map

RUST = Path(__file__).resolve().parents[2] / "bench" / ".venvs" / "smg-rust" / "bin" / "smg"

pytestmark = pytest.mark.skipif(not RUST.exists(), reason="the Rust SMG binary is not installed")

_LEFT_OUT = "a feature smg does not have (docs/compatibility.md, Metrics)"
# Reasons start with the key of the matching entry of tests/conformance/allowlist.py
# (listed in docs/compatibility.md, "Known differences") where the conformance suite
# sees the same difference; keep the two lists consistent.
ALLOW = {
    # families of features smg does not have
    ("smg_tokio_*", MISSING): "tokio-runtime-metrics: smg runs on uvloop",
    ("smg_allocator_*", MISSING): "allocator-metrics: smg uses CPython's allocator",
    ("smg_tokenizer_*", MISSING): "tokenizer-metrics: no tokenizer in smg's HTTP path",
    ("smg_detokenize_prefix_mismatch_total", MISSING): "tokenizer-metrics: no detokenizer in smg's HTTP path",
    ("smg_history_memory_records", MISSING): "history-storage-metrics: the memory backend's records are not exported yet",
    ("smg_worker_liveness_fallback_total", MISSING): "liveness-fallback-metric: no liveness tracker: " + _LEFT_OUT,
    ("smg_worker_overload_fallback_total", MISSING): "worker-overload-metrics: " + _LEFT_OUT,
    ("smg_worker_overload_shed_total", MISSING): "worker-overload-metrics: " + _LEFT_OUT,
    ("smg_router_request_body_path_total", MISSING):
        "request-body-path-metric: smg always buffers and parses the body",
    ("smg_router_upstream_send_retries_total", MISSING):
        "the upstream leg's resend of a dead pooled connection is not counted yet (smg/upstream)",
    # families smg has and SMG does not export on its HTTP path
    ("smg_router_ttft_seconds", EXTRA): "http-stream-timing-metrics: SMG fills it on its gRPC path only",
    ("smg_router_tpot_seconds", EXTRA): "as smg_router_ttft_seconds",
    ("smg_router_tokens_total", EXTRA): "as smg_router_ttft_seconds",
    ("smg_router_generation_duration_seconds", EXTRA): "as smg_router_ttft_seconds",
    ("smg_http2_*", EXTRA): "http2-listener-metrics: smg's own HTTP/2 listener families",
    ("smg_http_protocol_connections_active", EXTRA): "http2-listener-metrics: connections by protocol",
    ("smg_worker_connections_active", EXTRA): "worker-connections-metric: SMG exports no series on its HTTP path",
    ("smg_discovery_*", EXTRA): "discovery-metrics-always: SMG registers them only with discovery on",
    ("smg_worker_cb_transitions_total", LABEL_VALUES, "worker"):
        "smg retries a failed attempt on the same worker when no other serves the model, so a lone "
        "failing worker's breaker opens sooner (smg/server/selection.py); SMG does not retry then",
    # help texts
    ("smg_http_responses_total", HELP):
        "SMG 1.13's text describes 499/stream_error counting smg does not do; smg keeps SMG's shorter text",
    # label values decided by other parts of smg (error bodies and statuses)
    ("smg_http_responses_total", LABEL_VALUES, "error_code"):
        "gateway error codes are the error-format module's (smg/api/errors.py), not the metrics'",
    ("smg_http_responses_total", LABEL_VALUES, "status_code"):
        "a transport failure is answered 502 by smg, 500 by SMG (smg/server/exchange.py)",
    ("smg_router_upstream_responses_total", LABEL_VALUES, "error_code"):
        "as smg_http_responses_total error_code",
    ("smg_router_upstream_responses_total", LABEL_VALUES, "status_code"):
        "as smg_http_responses_total status_code",
}


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Procs:
    def __init__(self) -> None:
        self.procs: list = []

    def spawn(self, cmd: list) -> subprocess.Popen:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(p)
        return p

    def stop(self, p) -> None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)

    def close(self) -> None:
        for p in self.procs:
            self.stop(p)


def call(port: int, method: str, path: str, body=None, timeout: float = 10):
    data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
    r = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                               headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(r, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_for(fn, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if fn():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError("condition not met in time")


def chat(model: str, stream: bool = False) -> dict:
    d = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return dict(d, stream=True) if stream else d


# role -> (model, mock-worker flags). Each failure mode has a model of its own, so what a
# request meets does not depend on the order the gateways pick workers in; "flaky" and
# "good2" share one, for retries and the breaker.
ROLES = {
    "good": ("m-good", []),
    "flaky": ("m-pair", ["--fail-status", "500"]),
    "good2": ("m-pair", []),
    "invalid": ("m-invalid", ["--fail-status", "400"]),
    "reset": ("m-reset", ["--fail-mode", "reset"]),
    "down": ("m-down", []),
}


def run_scenario(rust: bool) -> tuple:
    """Runs the traffic against one gateway; returns (exposition, {worker URL: role})."""
    procs = Procs()
    try:
        ports = {r: free_port() for r in ROLES}
        workers = {r: procs.spawn([sys.executable, "-m", "smg", "mock-worker", "--port", str(ports[r]),
                                   "--worker-id", r, "--model", model, *extra])
                   for r, (model, extra) in ROLES.items()}
        for p in ports.values():
            wait_for(lambda p=p: call(p, "GET", "/health", timeout=2)[0] == 200)
        gw, prom = free_port(), free_port()
        args = ["--host", "127.0.0.1", "--port", str(gw), "--prometheus-host", "127.0.0.1",
                "--prometheus-port", str(prom), "--worker-urls", *(f"http://127.0.0.1:{p}" for p in ports.values()),
                "--policy", "round_robin", "--cb-failure-threshold", "2", "--cb-success-threshold", "1",
                "--cb-timeout-duration-secs", "1", "--retry-max-retries", "3", "--retry-initial-backoff-ms", "5",
                # probes and load polls once at start-up only: what they see of the stopped
                # worker would otherwise depend on timing
                "--health-check-interval-secs", "60", "--load-monitor-interval", "60"]
        procs.spawn([str(RUST), "launch", *args] if rust else [sys.executable, "-m", "smg", *args])
        wait_for(lambda: len(json.loads(call(gw, "GET", "/workers", timeout=2)[1]).get("workers", [])) == len(ROLES)
                 and call(gw, "GET", "/readiness", timeout=2)[0] == 200)
        time.sleep(1.0)
        procs.stop(workers["down"])          # registered, then gone: connections refused
        for _ in range(3):
            call(gw, "POST", "/v1/chat/completions", chat("m-good"))
            call(gw, "POST", "/v1/chat/completions", chat("m-good", stream=True))
        call(gw, "POST", "/v1/completions", {"model": "m-good", "prompt": "hi"})
        call(gw, "POST", "/v1/chat/completions", chat("m-invalid"))
        call(gw, "POST", "/v1/chat/completions", chat("m-reset"))
        call(gw, "POST", "/v1/chat/completions", chat("m-down"))
        call(gw, "POST", "/v1/chat/completions", chat("no-such-model"))
        call(gw, "POST", "/v1/nothing", chat("m-good"))
        call(gw, "GET", "/junk")
        call(gw, "GET", "/health")
        for _ in range(4):                   # flaky fails and is retried on good2; its breaker opens
            call(gw, "POST", "/v1/chat/completions", chat("m-pair"))
        # flaky recovers; after the breaker timeout, half-open lets it back in
        call(ports["flaky"], "POST", "/_mock/config", {"fail_status": None})
        time.sleep(1.5)
        for _ in range(4):
            call(gw, "POST", "/v1/chat/completions", chat("m-pair"))
        time.sleep(1.0)
        with urllib.request.urlopen(f"http://127.0.0.1:{prom}/metrics", timeout=5) as r:
            text = r.read().decode()
        return text, {f"http://127.0.0.1:{p}": r for r, p in ports.items()}
    finally:
        procs.close()


@pytest.fixture(scope="module")
def expositions():
    ours, our_roles = run_scenario(rust=False)
    ref, ref_roles = run_scenario(rust=True)
    return ours, ref, dict(our_roles, **ref_roles)


def test_breaker_readmission_happened_in_both(expositions):
    # the scenario is meaningful only if both gateways opened and re-closed the breaker
    for text in expositions[:2]:
        assert 'from="closed",to="open"' in text and 'from="half_open",to="closed"' in text


def test_diff_against_rust_smg_is_on_the_allow_list(expositions):
    ours, ref, roles = expositions
    diffs = diff(ours, ref, normalize=url_map(roles))
    unexplained, unused = apply_allow_list(diffs, ALLOW)
    assert not unexplained, "\n".join(str(d) for d in unexplained)
    stale = [k for k in unused if k[1] != LABEL_VALUES]
    assert not stale, f"stale allow-list entries: {stale}"
