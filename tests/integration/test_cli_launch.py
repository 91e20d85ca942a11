"""SMG's own example command lines, run unchanged as ``smg-proxy launch ...`` against mock
workers (the help epilog's regular mode, the README's single worker and cache-aware lines,
policy options), each answered a chat request; and a not-yet flag refused at start-up."""
from __future__ import annotations

import subprocess
import sys
import urllib.request

import pytest

from tests.integration.test_cli import CHAT, free_port, post, smg_proxy, stop, wait_ready


@pytest.fixture
def mock_workers():
    started = []

    def start(n):
        for i in range(n):
            port = free_port()
            started.append((smg_proxy("mock-worker", "--port", str(port), "--worker-id", f"w{len(started)}"),
                            f"http://127.0.0.1:{port}"))
        return [url for _, url in started[-n:]]

    yield start
    for p, _ in started:
        stop(p)


def run_launch(*args):
    gp = free_port()
    g = smg_proxy("launch", "--host", "127.0.0.1", "--port", str(gp), *args)
    wait_ready(gp)
    return g, gp


def chat(gp, key=None, text="Hello!"):
    body = CHAT.replace(b"Hello!", text.encode())
    req = urllib.request.Request(f"http://127.0.0.1:{gp}/v1/chat/completions", data=body,
                                 headers={"content-type": "application/json",
                                          **({"X-SMG-Routing-Key": key} if key else {})})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
        return r.headers["x-mock-worker"]


def test_single_worker(mock_workers):
    (w,) = mock_workers(1)
    g, gp = run_launch("--worker-urls", w)  # smg --worker-urls http://localhost:8000
    try:
        status, headers, body = post(gp)
        assert status == 200 and headers["x-mock-worker"] == "w0" and body["object"] == "chat.completion"
    finally:
        assert stop(g)[0] == 0


def test_regular_mode_and_cache_aware_with_several_workers(mock_workers):
    w1, w2 = mock_workers(2)
    # python -m smg.launch_router --worker-urls http://worker1:8000 http://worker2:8000
    # smg --worker-urls http://gpu1:8000 http://gpu2:8000 --policy cache_aware
    g, gp = run_launch("--worker-urls", w1, w2, "--policy", "cache_aware")
    try:
        prompt = "a long shared system prompt " * 8
        first = chat(gp, text=prompt)
        assert all(chat(gp, text=prompt) == first for _ in range(4))  # the prefix stays where it is cached
    finally:
        assert stop(g)[0] == 0


def test_cache_aware_policy_options(mock_workers):
    urls = mock_workers(3)
    g, gp = run_launch("--worker-urls", *urls, "--policy", "cache_aware", "--cache-threshold", "0.5",
                       "--balance-abs-threshold", "32", "--balance-rel-threshold", "1.1",
                       "--eviction-interval-secs", "120", "--max-tree-size", "1000000",
                       "--block-size", "16", "--cache-index", "tree")
    try:
        assert chat(gp) in {"w0", "w1", "w2"}
    finally:
        assert stop(g)[0] == 0


def test_manual_policy_with_delegate_and_sticky_alias(mock_workers):
    urls = mock_workers(3)
    g, gp = run_launch("--worker-urls", *urls, "--policy", "manual", "--assignment-mode", "delegate",
                       "--sticky-key-idle-secs", "600")
    try:
        for key in ("alice", "bob", "carol"):
            first = chat(gp, key=key)
            assert all(chat(gp, key=key) == first for _ in range(3))
    finally:
        assert stop(g)[0] == 0


def test_passthrough_sends_everything_to_one_worker(mock_workers):
    urls = mock_workers(2)
    g, gp = run_launch("--worker-urls", *urls, "--policy", "passthrough")
    try:
        assert len({chat(gp, key=str(i)) for i in range(6)}) == 1
    finally:
        assert stop(g)[0] == 0


def test_a_long_smg_command_line_with_defaults_of_features_smg_lacks(mock_workers):
    urls = mock_workers(2)
    g, gp = run_launch(
        "--worker-urls", *urls, "--policy", "round_robin", "--log-level", "warn",
        "--retry-max-retries", "3", "--cb-failure-threshold", "5", "--health-check-interval-secs", "30",
        "--disable-worker-overload-protection", "--enable-igw", "--disable-tokenizer-autoload",
        "--history-backend", "memory", "--backend", "sglang", "--mesh-port", "39527",
        "--worker-startup-timeout-secs", "1800", "--no-remove-unhealthy-workers")
    try:
        assert {chat(gp) for _ in range(4)} == {"w0", "w1"}
    finally:
        assert stop(g)[0] == 0


def test_a_not_yet_flag_stops_start_up_with_one_line():
    r = subprocess.run([sys.executable, "-m", "smg", "launch", "--worker-urls", "http://127.0.0.1:9",
                        "--pd-disaggregation", "--prefill", "http://127.0.0.1:9", "9000",
                        "--decode", "http://127.0.0.1:9", "--prefill-selector", "role=prefill"],
                       capture_output=True, timeout=30)
    err = r.stderr.decode()
    assert r.returncode == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [
        "smg-proxy: --prefill-selector: not supported yet (Service Discovery (Kubernetes)); smg-proxy accepts "
        "it only at its default (empty)"]
