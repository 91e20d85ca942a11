"""smg-proxy as users run it: demo mode (only without any worker source), discovery
sources, flags, config file, SIGTERM."""
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from smg.testing.fake_kube import FakeKube

CHAT = b'{"model":"mock-model","messages":[{"role":"user","content":"Hello!"}]}'


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def smg_proxy(*args, **kw):
    if args[:1] != ("mock-worker",):
        args = args + ("--prometheus-port", "0")  # tests never take the fixed metrics port
    return subprocess.Popen([sys.executable, "-m", "smg", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kw)


def wait_ready(port, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readiness", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("gateway never became ready")


def get_json(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.loads(r.read())


def post(port, body=CHAT):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, dict(r.headers), json.loads(r.read())


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        out, err = p.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    return p.returncode, out.decode(), err.decode()


def test_demo_mode_routes_to_builtin_mock_workers():
    port = free_port()
    p = smg_proxy("--host", "127.0.0.1", "--port", str(port))
    try:
        wait_ready(port)
        # the default policy is cache_aware: distinct prompts spread over both idle workers,
        # and a repeated prompt stays where its prefix is cached
        prompts = [b"alpha", b"bravo", b"charlie", b"delta"]
        workers = [post(port, b'{"model":"mock-model","messages":[{"role":"user","content":"%s"}]}' % p)[1]
                   ["x-mock-worker"] for p in prompts]
        assert set(workers) == {"mock-1", "mock-2"}
        again = post(port, b'{"model":"mock-model","messages":[{"role":"user","content":"alpha"}]}')
        assert again[1]["x-mock-worker"] == workers[0]
    finally:
        code, _, err = stop(p)
    assert code == 0
    assert "demo mode" in err and f"curl http://127.0.0.1:{port}/v1/chat/completions" in err


def test_worker_urls_space_separated_and_mock_worker_subcommand():
    wp1, wp2, gp = free_port(), free_port(), free_port()
    w1 = smg_proxy("mock-worker", "--port", str(wp1), "--worker-id", "one")
    w2 = smg_proxy("mock-worker", "--port", str(wp2), "--worker-id", "two")
    g = smg_proxy("--host", "127.0.0.1", "--port", str(gp), "--worker-urls",
                  f"http://127.0.0.1:{wp1}", f"http://127.0.0.1:{wp2}", "--policy", "round_robin")
    try:
        wait_ready(gp)
        seq = [post(gp)[1]["x-mock-worker"] for _ in range(4)]
        assert set(seq) == {"one", "two"} and all(a != b for a, b in zip(seq, seq[1:]))  # alternates
    finally:
        code, _, _ = stop(g)
        stop(w1)
        stop(w2)
    assert code == 0


@pytest.mark.parametrize("args, needle", [
    (["--policy", "fastest"], "--policy"),
    (["--port", "abc"], "--port"),
    (["--worker-urls", "ftp://x"], "--worker-urls"),
    (["--request-timeout-secs", "-1"], "--request-timeout-secs"),
    (["--no-such-flag"], "--no-such-flag"),
])
def test_bad_flags_fail_at_start_naming_the_flag(args, needle):
    r = subprocess.run([sys.executable, "-m", "smg", *args], capture_output=True, timeout=20)
    assert r.returncode == 2
    assert needle in r.stderr.decode()


def test_config_file(tmp_path):
    gp = free_port()
    cfg = tmp_path / "smg.yaml"
    cfg.write_text(f"host: 127.0.0.1\nport: {gp}\npolicy: random\nmax-payload-size: 100\nprometheus_port: 0\n")
    p = smg_proxy("--config", str(cfg))
    try:
        wait_ready(gp)
        with pytest.raises(urllib.error.HTTPError) as e:
            post(gp, CHAT + b" " * 200)
        assert e.value.code == 413
    finally:
        assert stop(p)[0] == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy: round_robin\nmax_payload_size: lots\n")
    r = subprocess.run([sys.executable, "-m", "smg", "--config", str(bad)], capture_output=True, timeout=20)
    assert r.returncode == 2 and "max_payload_size" in r.stderr.decode()
    bad.write_text("polcy: round_robin\n")
    r = subprocess.run([sys.executable, "-m", "smg", "--config", str(bad)], capture_output=True, timeout=20)
    assert r.returncode == 2 and "polcy" in r.stderr.decode() and "unknown setting" in r.stderr.decode()


def _started_mock_worker(worker_id):
    port = free_port()
    w = smg_proxy("mock-worker", "--port", str(port), "--worker-id", worker_id)
    return w, f"http://127.0.0.1:{port}"


def _assert_only_worker(gp, url, worker_id):
    listed = get_json(gp, "/workers")
    assert [w["url"] for w in listed["workers"]] == [url]
    assert {post(gp)[1]["x-mock-worker"] for _ in range(3)} == {worker_id}


def test_discovery_file_is_a_worker_source_no_demo_mode(tmp_path):
    w, url = _started_mock_worker("from-file")
    manifest = tmp_path / "workers.json"
    manifest.write_text(json.dumps({"workers": [{"url": url}]}))
    gp = free_port()
    g = smg_proxy("--host", "127.0.0.1", "--port", str(gp), "--discovery-file", str(manifest))
    try:
        wait_ready(gp)
        _assert_only_worker(gp, url, "from-file")
    finally:
        code, _, err = stop(g)
        stop(w)
    assert code == 0
    assert "demo mode" not in err and "built-in mock workers" not in err


class _LoopThread:
    """An asyncio loop in a thread, for a FakeKube the CLI subprocess can reach."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout=10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn):
        async def on_loop():
            return fn()
        return self.run(on_loop())

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_service_discovery_is_a_worker_source_no_demo_mode(tmp_path):
    w, url = _started_mock_worker("from-pod")
    port = int(url.rsplit(":", 1)[1])
    lt = _LoopThread()
    kube = FakeKube(token="tok")
    try:
        lt.run(kube.start())
        lt.call(lambda: kube.add_pod("p0", labels={"app": "llm"}, ip="127.0.0.1"))
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: t\n"
            f"clusters: [{{name: c, cluster: {{server: '{kube.url}'}}}}]\n"
            "users: [{name: u, user: {token: tok}}]\n"
            "contexts: [{name: t, context: {cluster: c, user: u}}]\n")
        gp = free_port()
        g = smg_proxy("--host", "127.0.0.1", "--port", str(gp), "--service-discovery", "--selector", "app=llm",
                      "--service-discovery-port", str(port), "--kubeconfig", str(kubeconfig),
                      env={k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"})
        try:
            wait_ready(gp)
            _assert_only_worker(gp, url, "from-pod")
        finally:
            code, _, err = stop(g)
        assert code == 0
        assert "demo mode" not in err and "built-in mock workers" not in err
        assert kube.list_requests >= 1
    finally:
        lt.run(kube.stop())
        lt.close()
        stop(w)
