"""The recording worker (smg.testing.echo_worker) over real loopback sockets.

Each test runs one worker in a uvloop-free ``asyncio.run`` with a hard timeout and
talks to it with a blocking client in a thread, every call bounded.
"""
from __future__ import annotations

import asyncio
import json
from collections import deque
import os
import subprocess
import sys

import pytest

from smg.testing import echo_worker
from smg.testing.echo_worker import EchoWorker
from smg.testing.mock_worker import MockConfig
from tests.conformance.client import request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def with_echo(test, timeout: float = 20.0):
    """Runs the blocking ``test(worker)`` in a thread against a fresh worker."""

    async def main():
        worker = await EchoWorker(MockConfig(model="echo-model")).start()
        try:
            return await asyncio.to_thread(test, worker)
        finally:
            await worker.stop()

    async def bounded():
        return await asyncio.wait_for(main(), timeout)

    return asyncio.run(bounded())


def test_records_every_request_with_headers_and_body():
    def test(w):
        body = {"model": "echo-model", "messages": [{"role": "user", "content": "hé"}]}
        r = request(w.port, "POST", "/v1/chat/completions?x=1",
                    headers=[("X-Custom", "a"), ("X-Custom", "b"), ("Authorization", "Bearer k")], body=body)
        assert r.status == 200 and r.json()["object"] == "chat.completion"
        request(w.port, "GET", "/health")
        got = request(w.port, "GET", "/_received").json()
        recs = got["records"]
        assert [x["target"] for x in recs] == ["/v1/chat/completions?x=1", "/health"]
        assert got["last"] == 2 and [x["seq"] for x in recs] == [1, 2]
        first = recs[0]
        assert first["method"] == "POST"
        assert [v for n, v in first["headers"] if n == "x-custom"] == ["a", "b"]  # order and duplicates kept
        assert ("authorization", "Bearer k") in [tuple(h) for h in first["headers"]]
        assert json.loads(first["body"]) == body
    with_echo(test)


def test_answers_like_the_mock_worker_streams_included():
    def test(w):
        r = request(w.port, "POST", "/v1/chat/completions",
                    body={"model": "echo-model", "stream": True, "messages": [{"role": "user", "content": "x"}]})
        assert r.media_type() == "text/event-stream"
        assert r.body.rstrip().endswith(b"data: [DONE]")
        assert request(w.port, "GET", "/v1/models").json()["data"][0]["id"] == "echo-model"
    with_echo(test)


def test_after_returns_only_newer_records_and_side_door_is_not_recorded():
    def test(w):
        request(w.port, "GET", "/v1/models")
        mark = request(w.port, "GET", "/_received?after=999").json()["last"]
        assert mark == 1
        request(w.port, "POST", "/v1/embeddings", body={"model": "echo-model", "input": "x"})
        request(w.port, "GET", "/_mock/stats")
        newer = request(w.port, "GET", f"/_received?after={mark}").json()
        assert [x["target"] for x in newer["records"]] == ["/v1/embeddings"]
        assert newer["last"] == 2
        assert request(w.port, "GET", "/_received?after=junk").json()["records"][0]["seq"] == 1
    with_echo(test)


def test_delete_forgets_records_but_sequence_keeps_counting():
    def test(w):
        request(w.port, "GET", "/health")
        assert request(w.port, "DELETE", "/_received").json() == {"cleared": True, "last": 1}
        assert request(w.port, "GET", "/_received").json() == {"records": [], "last": 1}
        request(w.port, "GET", "/health")
        assert [x["seq"] for x in request(w.port, "GET", "/_received").json()["records"]] == [2]
        r = request(w.port, "POST", "/_received", body={})
        assert r.status == 405 and r.header("allow") == "DELETE, GET"
    with_echo(test)


def test_record_count_is_bounded():
    def test(w):
        w.records = deque(maxlen=3)
        for _ in range(5):
            request(w.port, "GET", "/health")
        got = request(w.port, "GET", "/_received").json()
        assert [x["seq"] for x in got["records"]] == [3, 4, 5] and got["last"] == 5
    with_echo(test)


def test_command_prints_listening_line_and_exits_on_sigterm():
    proc = subprocess.Popen([sys.executable, "-m", "smg.testing.echo_worker", "--port", "0", "--model", "m1"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line and "(m1)" in line
        proc.terminate()
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


@pytest.mark.parametrize("target,after", [(b"/_received", 0), (b"/_received?after=7", 7),
                                          (b"/_received?x=1&after=3", 3), (b"/_received?after=", 0)])
def test_after_parsing(target, after):
    assert echo_worker._after(target) == after
