"""Service discovery: manifest files, pod rules, and Kubernetes list/watch against fake_kube."""
from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import os

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smg.errors import ConfigError, UpstreamError
from smg.testing.fake_kube import FakeKube, make_pod
from smg.upstream import client
from smg.workers import discovery as D
from smg.workers.discovery import (
    FileDiscovery,
    KubeConfig,
    KubeDiscovery,
    KubeError,
    KubeGone,
)


def run(coro, timeout: float = 15.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def eventually(cond, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


class Sink:
    """Collects callbacks and keeps the routing set they imply."""

    def __init__(self) -> None:
        self.events: list = []
        self.urls: dict = {}

    def add(self, spec: dict) -> None:
        assert spec["url"] not in self.urls, f"double add {spec['url']}"
        self.events.append(("add", spec["url"]))
        self.urls[spec["url"]] = spec

    def remove(self, url: str) -> None:
        assert url in self.urls, f"remove of unknown {url}"
        self.events.append(("remove", url))
        del self.urls[url]


# -- specs and manifests

def test_normalize_spec():
    s = D.normalize_spec({"url": "http://10.0.0.1:8000/", "labels": {"a": "b"}, "priority": 7})
    assert s == {"url": "http://10.0.0.1:8000", "models": [], "worker_type": "regular",
                 "labels": {"a": "b"}, "priority": 7, "source": "file"}
    assert D.normalize_spec("http://h:1")["url"] == "http://h:1"
    for bad in ({}, {"url": 3}, {"url": "nohost"}, {"url": "http://h:1", "models": "m"},
                {"url": "http://h:1", "worker_type": "boss"}, {"url": "http://h:1", "labels": []}, 5):
        with pytest.raises(ValueError):
            D.normalize_spec(bad)


def test_parse_manifest_shapes():
    a = D.parse_manifest(b'[{"url": "http://a:1", "models": ["m"]}, "http://b:2"]')
    b = D.parse_manifest(b'{"workers": [{"url": "http://a:1", "models": ["m"]}, "http://b:2"]}')
    assert a == b and set(a) == {"http://a:1", "http://b:2"}
    assert D.parse_manifest(b'[{"url": "http://a:1", "models": ["x"]}, {"url": "http://a:1/", "models": ["y"]}]') \
        ["http://a:1"]["models"] == ["y"]
    for bad in (b"nope", b"{}", b'{"workers": 1}', b"[1]"):
        with pytest.raises(ValueError):
            D.parse_manifest(bad)


def write(path, obj) -> None:
    tmp = str(path) + ".tmp"
    with open(tmp, "wb") as f:
        f.write(orjson.dumps(obj))
    os.replace(tmp, path)


def test_file_discovery_diffs(tmp_path):
    path = tmp_path / "workers.json"
    write(path, [{"url": "http://a:1", "models": ["m"]}, {"url": "http://b:1"}])
    sink = Sink()
    fd = FileDiscovery(str(path), sink.add, sink.remove, interval=30)
    assert fd.check() is True
    assert set(sink.urls) == {"http://a:1", "http://b:1"}
    assert fd.check() is False            # unchanged stat: nothing read
    assert fd.check(force=True) is False  # same content: nothing applied
    sink.events.clear()
    # b removed, c added, a changed models -> remove + add
    write(path, {"workers": [{"url": "http://a:1", "models": ["m", "n"]}, {"url": "http://c:1"}]})
    assert fd.check(force=True) is True
    assert sorted(sink.events) == sorted([("remove", "http://b:1"), ("remove", "http://a:1"),
                                          ("add", "http://a:1"), ("add", "http://c:1")])
    assert sink.urls["http://a:1"]["models"] == ["m", "n"]
    assert set(fd.workers) == {"http://a:1", "http://c:1"}


def test_file_discovery_keeps_state_on_errors(tmp_path):
    path = tmp_path / "workers.json"
    write(path, ["http://a:1"])
    sink = Sink()
    fd = FileDiscovery(str(path), sink.add, sink.remove)
    fd.check()
    path.write_bytes(b'[{"url": "http://a:1"')     # half-written
    assert fd.check(force=True) is False
    assert set(sink.urls) == {"http://a:1"} and fd.errors == 1 and fd.last_error
    os.remove(path)
    assert fd.check(force=True) is False
    assert set(sink.urls) == {"http://a:1"} and fd.errors == 2
    write(path, [])
    assert fd.check(force=True) is True
    assert sink.urls == {} and fd.last_error is None


def test_file_discovery_same_mtime_content_change(tmp_path):
    path = tmp_path / "w.json"
    write(path, ["http://a:1"])
    st0 = os.stat(path)
    sink = Sink()
    fd = FileDiscovery(str(path), sink.add, sink.remove)
    fd.check()
    path.write_bytes(b'["http://b:1"]')            # same size
    os.utime(path, ns=(st0.st_atime_ns, st0.st_mtime_ns))
    fd.check()  # stat may look unchanged; the periodic forced read still sees it
    fd.check(force=True)
    assert set(sink.urls) == {"http://b:1"}


def test_file_discovery_run_rounds(tmp_path):
    path = tmp_path / "w.json"
    write(path, ["http://a:1"])
    sink = Sink()
    slept = []

    async def sleep(d):
        slept.append(d)
        write(path, ["http://a:1", f"http://n{len(slept)}:1"])

    fd = FileDiscovery(str(path), sink.add, sink.remove, interval=5, sleep=sleep)
    run(fd.run(rounds=3))
    assert slept == [5, 5]
    assert set(sink.urls) == {"http://a:1", "http://n2:1"}


def test_callback_exception_does_not_break_diffing(tmp_path):
    path = tmp_path / "w.json"
    write(path, ["http://a:1", "http://b:1"])
    seen = []

    def add(spec):
        seen.append(spec["url"])
        raise RuntimeError("gateway bug")

    fd = FileDiscovery(str(path), add, lambda url: None)
    fd.check()
    assert sorted(seen) == ["http://a:1", "http://b:1"]
    assert set(fd.workers) == {"http://a:1", "http://b:1"}


# -- pods and selectors

def test_pod_ready_rules():
    assert D.pod_ready(make_pod("a"))
    assert not D.pod_ready(make_pod("a", ready=False))
    assert not D.pod_ready(make_pod("a", phase="Pending"))
    assert not D.pod_ready(make_pod("a", ip=None))
    p = make_pod("a")
    p["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert not D.pod_ready(p)
    p = make_pod("a")
    p["status"]["conditions"] = []
    assert not D.pod_ready(p)


def test_pod_workers_urls_and_annotations():
    p = make_pod("a", ip="10.1.2.3", labels={"app": "x"},
                 annotations={D.ANN_BOOTSTRAP_PORT: "8998", D.ANN_KV_CONNECTOR: "nixl", D.ANN_KV_ENGINE_ID: "e1"})
    (url, spec), = D.pod_workers(p, 8000, "prefill").items()
    assert url == "http://10.1.2.3:8000"
    assert spec["worker_type"] == "prefill" and spec["bootstrap_port"] == 8998
    assert spec["kv_connector"] == "nixl" and spec["kv_engine_id"] == "e1"
    assert spec["labels"] == {"app": "x"} and spec["pod"] == "default/a" and spec["source"] == "kubernetes"
    multi = make_pod("b", ip="10.0.0.9", annotations={D.ANN_WORKER_PORTS: "8000, 8001 8001"})
    assert list(D.pod_workers(multi, 80)) == ["http://10.0.0.9:8000", "http://10.0.0.9:8001"]
    js = make_pod("c", ip="10.0.0.9", annotations={D.ANN_WORKER_PORTS: "[9000, 9001]"})
    assert list(D.pod_workers(js, 80)) == ["http://10.0.0.9:9000", "http://10.0.0.9:9001"]
    bad = make_pod("d", ip="10.0.0.9", annotations={D.ANN_WORKER_PORTS: "http", D.ANN_BOOTSTRAP_PORT: "x"})
    (url, spec), = D.pod_workers(bad, 80).items()
    assert url == "http://10.0.0.9:80" and "bootstrap_port" not in spec
    v6 = make_pod("e", ip="fd00::5")
    assert list(D.pod_workers(v6, 8000)) == ["http://[fd00::5]:8000"]
    assert D.pod_workers(make_pod("f", ready=False)) == {}


def test_selectors():
    assert D.selector_string(["app=sglang", "role=w"]) == "app=sglang,role=w"
    assert D.selector_string({"app": "sglang"}) == "app=sglang"
    assert D.selector_string("a=b, c=d") == "a=b,c=d"
    assert D.selector_string(()) == ""
    reqs = D.parse_selector(["app=sg", "tier!=cpu", "gpu", "!spot", "env in (a,b)"])
    assert D.match_selector({"app": "sg", "gpu": "1"}, reqs)
    assert not D.match_selector({"app": "sg", "gpu": "1", "tier": "cpu"}, reqs)
    assert not D.match_selector({"app": "sg"}, reqs)
    assert not D.match_selector({"app": "sg", "gpu": "", "spot": "y"}, reqs)
    assert D.match_selector(None, [])
    with pytest.raises(ValueError):
        D.parse_selector(["=x"])


# -- Routing: any sequence of owner updates keeps callbacks consistent

@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["p1", "p2", "p3"]),
                          st.dictionaries(st.sampled_from(["http://a:1", "http://b:1", "http://c:1"]),
                                          st.integers(0, 2), max_size=3)), max_size=30))
def test_routing_callbacks_consistent(updates):
    sink = Sink()  # asserts no double add and no unknown remove
    r = D.Routing(sink.add, sink.remove)
    for owner, urls in updates:
        r.set_owner(owner, {u: {"url": u, "v": v} for u, v in urls.items()})
        assert sink.urls == r.specs
        # every active url is provided by its recorded owner
        for u, o in r.owner.items():
            assert u in r.owned[o]
    r.replace_all({})
    assert sink.urls == {} and r.specs == {}


# -- Kubernetes against fake_kube

def make_discovery(fk: FakeKube, sink: Sink, **kw) -> KubeDiscovery:
    kw.setdefault("selector", ["app=sglang"])
    kw.setdefault("namespace", "default")
    kw.setdefault("port", 8000)
    return KubeDiscovery(KubeConfig(server=fk.url, token=kw.pop("token", None)), sink.add, sink.remove,
                         sleep=lambda d: asyncio.sleep(0.01), initial_backoff=0.01, max_backoff=0.05, **kw)


def test_kube_pods_appear_ready_and_deleted():
    async def main():
        async with FakeKube() as fk:
            fk.add_pod("w1", labels={"app": "sglang"}, ip="10.0.0.1")
            fk.add_pod("other", labels={"app": "nginx"}, ip="10.0.0.50")
            fk.add_pod("elsewhere", namespace="prod", labels={"app": "sglang"}, ip="10.0.0.60")
            sink = Sink()
            d = make_discovery(fk, sink)
            task = d.start()
            await fk.wait_watches(1)
            assert set(sink.urls) == {"http://10.0.0.1:8000"}
            # a pod appears, not ready yet: not routable
            fk.add_pod("w2", labels={"app": "sglang"}, ip="10.0.0.2", ready=False)
            fk.add_pod("w3", labels={"app": "sglang"}, ip="10.0.0.3", phase="Pending", ready=False)
            await asyncio.sleep(0.05)
            assert set(sink.urls) == {"http://10.0.0.1:8000"}
            # turns ready
            fk.set_ready("w2", True)
            await eventually(lambda: "http://10.0.0.2:8000" in sink.urls)
            # graceful deletion: deletionTimestamp removes it before the pod is gone
            fk.mark_deleting("w1")
            await eventually(lambda: "http://10.0.0.1:8000" not in sink.urls)
            fk.delete_pod("w1")
            # readiness lost
            fk.set_ready("w2", False)
            await eventually(lambda: sink.urls == {})
            # a label change makes a pod match / stop matching
            fk.modify_pod("other", labels={"app": "sglang"})
            await eventually(lambda: set(sink.urls) == {"http://10.0.0.50:8000"})
            fk.modify_pod("other", labels={"app": "nginx"})
            await eventually(lambda: sink.urls == {})
            # pod IP change on the same pod: old URL out, new URL in
            fk.set_ready("w2", True)
            await eventually(lambda: set(sink.urls) == {"http://10.0.0.2:8000"})
            fk.modify_pod("w2", ip="10.0.0.22")
            await eventually(lambda: set(sink.urls) == {"http://10.0.0.22:8000"})
            assert d.lists == 1 and d.errors == 0
            assert sink.urls == d.workers
            await d.stop()
            assert task.done()

    run(main())


def test_kube_cluster_wide_and_bootstrap_annotation():
    async def main():
        async with FakeKube() as fk:
            fk.add_pod("p", namespace="a", labels={"app": "sglang", "role": "prefill"}, ip="10.0.1.1",
                       annotations={D.ANN_BOOTSTRAP_PORT: "9000"})
            fk.add_pod("q", namespace="b", labels={"app": "sglang", "role": "decode"}, ip="10.0.1.2")
            sink = Sink()
            d = make_discovery(fk, sink, namespace=None, selector=["app=sglang", "role=prefill"],
                               worker_type="prefill")
            d.start()
            await fk.wait_watches(1)
            assert list(sink.urls) == ["http://10.0.1.1:8000"]
            spec = sink.urls["http://10.0.1.1:8000"]
            assert spec["worker_type"] == "prefill" and spec["bootstrap_port"] == 9000 and spec["pod"] == "a/p"
            assert fk.requests[0][0] == "/api/v1/pods"
            assert fk.requests[0][1]["labelSelector"] == "app=sglang,role=prefill"
            # an annotation change re-registers the worker
            fk.modify_pod("p", "a", annotations={D.ANN_BOOTSTRAP_PORT: "9001"})
            await eventually(lambda: sink.urls["http://10.0.1.1:8000"]["bootstrap_port"] == 9001)
            assert sink.events[-2:] == [("remove", "http://10.0.1.1:8000"), ("add", "http://10.0.1.1:8000")]
            await d.stop()

    run(main())


def test_kube_watch_reconnect_resumes_from_resource_version():
    async def main():
        async with FakeKube(split_chunks=True) as fk:
            fk.add_pod("w1", labels={"app": "sglang"}, ip="10.0.0.1")
            sink = Sink()
            d = make_discovery(fk, sink)
            d.start()
            await fk.wait_watches(1)
            for i in range(3):
                fk.end_watches()
                fk.add_pod(f"n{i}", labels={"app": "sglang"}, ip=f"10.0.2.{i}")
                await eventually(lambda i=i: fk.active_watches == 1 and len(sink.urls) == i + 2)
            assert d.lists == 1                # never re-listed
            assert d.watches >= 4
            watch_rvs = [q.get("resourceVersion") for _, q, w in fk.requests if w]
            assert all(watch_rvs) and watch_rvs == sorted(watch_rvs, key=int)
            await d.stop()

    run(main())


def test_kube_gone_event_triggers_relist_and_diff():
    async def main():
        async with FakeKube() as fk:
            fk.add_pod("w1", labels={"app": "sglang"}, ip="10.0.0.1")
            fk.add_pod("w2", labels={"app": "sglang"}, ip="10.0.0.2")
            sink = Sink()
            d = make_discovery(fk, sink)
            d.start()
            await fk.wait_watches(1)
            assert len(sink.urls) == 2
            fk.gone_watches()
            await eventually(lambda: d.gone == 1 and d.lists == 2 and fk.active_watches == 1)
            assert len(sink.urls) == 2
            assert [e for e in sink.events if e[0] == "remove"] == []  # relist diffed, no churn
            await d.stop()

    run(main())


def test_kube_compacted_history_relists():
    async def main():
        async with FakeKube() as fk:
            fk.add_pod("w1", labels={"app": "sglang"}, ip="10.0.0.1")
            fk.add_pod("w2", labels={"app": "sglang"}, ip="10.0.0.2")
            sink = Sink()
            d = make_discovery(fk, sink)
            await d.sync()
            assert len(sink.urls) == 2
            # while we are not watching: w1 deleted, w3 added, history compacted away
            fk.delete_pod("w1")
            fk.add_pod("w3", labels={"app": "sglang"}, ip="10.0.0.3")
            fk.compact()
            with pytest.raises(KubeGone):
                await d.watch_once()
            # run() handles it: relist, diff (w1 out, w3 in), then watch
            d.start()
            await eventually(lambda: set(sink.urls) == {"http://10.0.0.2:8000", "http://10.0.0.3:8000"})
            await fk.wait_watches(1)
            assert d.gone == 1 and d.lists == 2
            assert ("remove", "http://10.0.0.1:8000") in sink.events
            await d.stop()

    run(main())


def test_kube_gone_as_http_status():
    async def main():
        async with FakeKube(gone_as_status=True) as fk:
            fk.add_pod("w1", labels={"app": "sglang"}, ip="10.0.0.1")
            sink = Sink()
            d = make_discovery(fk, sink)
            await d.sync()
            fk.add_pod("w2", labels={"app": "sglang"}, ip="10.0.0.2")
            fk.compact()
            fk.add_pod("w3", labels={"app": "sglang"}, ip="10.0.0.3")
            with pytest.raises(KubeGone):
                await d.watch_once()
            d.resource_version = None
            d.start()
            await eventually(lambda: len(sink.urls) == 3)
            await d.stop()

    run(main())


def test_kube_errors_back_off_and_recover():
    async def main():
        async with FakeKube() as fk:
            fk.add_pod("w1", labels={"app": "sglang"}, ip="10.0.0.1")
            sink = Sink()
            slept = []

            async def sleep(dt):
                slept.append(dt)
                await asyncio.sleep(0.001)

            d = KubeDiscovery(KubeConfig(server=fk.url), sink.add, sink.remove, selector="app=sglang",
                              namespace="default", port=8000, sleep=sleep, initial_backoff=1.0, max_backoff=4.0)
            fk.fail_next(4, 500)   # list fails 4 times
            d.start()
            await fk.wait_watches(1)
            assert slept == [1.0, 2.0, 4.0, 4.0]     # doubling, capped
            assert d.errors == 4 and set(sink.urls) == {"http://10.0.0.1:8000"}
            fk.fail_next(1, 500)   # the next watch fails; routing set is kept meanwhile
            fk.end_watches()
            await eventually(lambda: d.errors == 5 and fk.active_watches == 1)
            assert set(sink.urls) == {"http://10.0.0.1:8000"}
            assert slept[-1] == 1.0                  # backoff was reset by the good watch
            await d.stop()

    run(main())


def test_kube_unreachable_server_is_bounded():
    async def main():
        fk = await FakeKube().start()
        url = fk.url
        await fk.stop()                              # nothing listens there now
        sink = Sink()
        d = KubeDiscovery(KubeConfig(server=url), sink.add, sink.remove, sleep=lambda s: asyncio.sleep(0))
        await d.run(cycles=3)
        assert d.errors == 3 and d.lists == 3 and sink.urls == {}

    run(main())


def test_kube_token_required():
    async def main():
        async with FakeKube(token="good") as fk:
            fk.add_pod("w1", labels={"app": "sglang"}, ip="10.0.0.1")
            sink = Sink()
            bad = make_discovery(fk, sink, token="bad")
            with pytest.raises(KubeError) as ei:
                await bad.sync()
            assert ei.value.status == 401
            good = make_discovery(fk, sink, token="good")
            await good.sync()
            assert len(sink.urls) == 1

    run(main())


def test_kube_token_file_reread(tmp_path):
    async def main():
        tok = tmp_path / "token"
        tok.write_text("t1\n")
        async with FakeKube(token="t1") as fk:
            fk.add_pod("w1", labels={"app": "sglang"}, ip="10.0.0.1")
            sink = Sink()
            d = KubeDiscovery(KubeConfig(server=fk.url, token_file=str(tok)), sink.add, sink.remove,
                              selector="app=sglang")
            await d.sync()
            fk.token = "t2"
            tok.write_text("t2")   # rotated by the kubelet
            await d.sync()
            assert d.lists == 2 and len(sink.urls) == 1

    run(main())


def test_kube_watch_error_event_not_gone():
    sink = Sink()
    d = KubeDiscovery(KubeConfig(server="http://127.0.0.1:1"), sink.add, sink.remove)
    with pytest.raises(KubeError) as ei:
        d.apply_event({"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "boom"}})
    assert not isinstance(ei.value, KubeGone) and ei.value.status == 500
    with pytest.raises(KubeGone):
        d.apply_event({"type": "ERROR", "object": {"code": 410}})
    d.apply_event({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "77"}}})
    assert d.resource_version == "77" and sink.urls == {}


def test_kube_bad_json_line_is_an_error():
    async def main():
        async def handle(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\n{oops\n\r\n0\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            d = KubeDiscovery(KubeConfig(server=f"http://127.0.0.1:{port}"), lambda s: None, lambda u: None)
            d.resource_version = "1"
            with pytest.raises(UpstreamError):
                await d.watch_once()
        finally:
            server.close()
            await server.wait_closed()

    run(main())


# -- TLS and configuration

def _make_ca_and_cert(tmp_path):
    """A CA, a server certificate for 127.0.0.1 (tls.crt/tls.key) and a client
    certificate (client.crt/client.key), all PEM files in ``tmp_path``; returns the CA PEM."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    pem = serialization.Encoding.PEM
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-kube-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def issue(name: str, serial: int, usage, san=None) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
             .issuer_name(ca_name).public_key(key.public_key()).serial_number(serial)
             .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if san is not None:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = b.sign(ca_key, hashes.SHA256())
        stem = "tls" if usage == ExtendedKeyUsageOID.SERVER_AUTH else "client"
        (tmp_path / f"{stem}.crt").write_bytes(cert.public_bytes(pem))
        (tmp_path / f"{stem}.key").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                                 serialization.NoEncryption()))

    issue("kube", 2, ExtendedKeyUsageOID.SERVER_AUTH, [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    issue("system:smg", 3, ExtendedKeyUsageOID.CLIENT_AUTH)
    ca_pem = ca.public_bytes(pem)
    (tmp_path / "ca.crt").write_bytes(ca_pem)
    return ca_pem


def _server_tls(tmp_path, require_client_cert: bool = False):
    import ssl
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    if require_client_cert:
        sctx.verify_mode = ssl.CERT_REQUIRED
        sctx.load_verify_locations(tmp_path / "ca.crt")
    return sctx


def test_kube_https_with_ca(tmp_path):
    ca_pem = _make_ca_and_cert(tmp_path)

    async def main():
        async with FakeKube(token="tok", ssl=_server_tls(tmp_path)) as fk:
            assert fk.url.startswith("https://127.0.0.1:")
            fk.add_pod("w1", labels={"app": "sglang"}, ip="10.0.0.1")
            sink = Sink()
            cfg = KubeConfig(server=fk.url, token="tok", ca_file=str(tmp_path / "ca.crt"))
            d = KubeDiscovery(cfg, sink.add, sink.remove, selector="app=sglang", port=8000,
                              sleep=lambda s: asyncio.sleep(0.01))
            d.start()
            await fk.wait_watches(1)
            fk.add_pod("w2", labels={"app": "sglang"}, ip="10.0.0.2")
            await eventually(lambda: len(sink.urls) == 2)
            await d.stop()
            # without the CA the handshake fails verification (an error, no workers)
            sink2 = Sink()
            bad = KubeDiscovery(KubeConfig(server=fk.url, token="tok"), sink2.add, sink2.remove)
            with pytest.raises(UpstreamError):
                await bad.sync()
            # kubeconfig with inline CA data and a token
            kc = tmp_path / "kubeconfig"
            kc.write_text(f"""
apiVersion: v1
kind: Config
current-context: test
contexts:
- name: test
  context: {{cluster: fake, user: me, namespace: default}}
clusters:
- name: fake
  cluster:
    server: {fk.url}
    certificate-authority-data: {base64.b64encode(ca_pem).decode()}
users:
- name: me
  user: {{token: tok}}
""")
            cfg3 = KubeConfig.from_kubeconfig(str(kc))
            assert cfg3.namespace == "default" and cfg3.token == "tok"
            sink3 = Sink()
            d3 = KubeDiscovery(cfg3, sink3.add, sink3.remove, selector="app=sglang", namespace=cfg3.namespace)
            await d3.sync()
            assert len(sink3.urls) == 2

    run(main())


def test_kubeconfig_errors_and_options(tmp_path):
    kc = tmp_path / "config"
    kc.write_text("""
current-context: a
contexts:
- {name: a, context: {cluster: c, user: u}}
- {name: b, context: {cluster: missing, user: u}}
- {name: e, context: {cluster: c, user: x}}
clusters:
- {name: c, cluster: {server: "https://10.0.0.1:6443/", insecure-skip-tls-verify: true, certificate-authority: ca.pem}}
users:
- {name: u, user: {tokenFile: tok}}
- {name: x, user: {exec: {command: aws}}}
""")
    cfg = KubeConfig.from_kubeconfig(str(kc))
    assert cfg.server == "https://10.0.0.1:6443" and cfg.insecure
    assert cfg.token_file == str(tmp_path / "tok") and cfg.ca_file == str(tmp_path / "ca.pem")
    with pytest.raises(ConfigError):
        KubeConfig.from_kubeconfig(str(kc), context="b")
    with pytest.raises(ConfigError):
        KubeConfig.from_kubeconfig(str(kc), context="e")
    with pytest.raises(ConfigError):
        KubeConfig.from_kubeconfig(str(tmp_path / "nope"))
    with pytest.raises(KubeError):
        cfg.bearer()  # token file missing
    assert KubeConfig(server="http://127.0.0.1:1").ssl_context() is None


def test_in_cluster_config(tmp_path):
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("sa-token\n")
    (sa / "namespace").write_text("inference")
    cfg = KubeConfig.in_cluster({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"},
                                str(sa))
    assert cfg.server == "https://10.96.0.1:443" and cfg.bearer() == "sa-token"
    assert cfg.namespace == "inference" and cfg.ca_file is None
    v6 = KubeConfig.in_cluster({"KUBERNETES_SERVICE_HOST": "fd00::1"}, str(sa))
    assert v6.server == "https://[fd00::1]:443"
    with pytest.raises(ConfigError):
        KubeConfig.in_cluster({}, str(sa))
    with pytest.raises(ConfigError):
        KubeConfig.in_cluster({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, str(tmp_path / "none"))


def test_fake_kube_list_and_selector_filtering():
    async def main():
        async with FakeKube() as fk:
            fk.add_pod("a", labels={"app": "x"})
            fk.add_pod("b", labels={"app": "y"}, namespace="other")
            from smg.workers.discovery import KubeClient
            c = KubeClient(KubeConfig(server=fk.url))
            all_pods = await c.get_json("/api/v1/pods", 5)
            assert [p["metadata"]["name"] for p in all_pods["items"]] == ["a", "b"]
            assert all_pods["metadata"]["resourceVersion"] == str(fk.rv)
            ns = await c.get_json("/api/v1/namespaces/other/pods", 5)
            assert [p["metadata"]["name"] for p in ns["items"]] == ["b"]
            sel = await c.get_json("/api/v1/pods?labelSelector=app%3Dx", 5)
            assert [p["metadata"]["name"] for p in sel["items"]] == ["a"]
            with pytest.raises(KubeError) as ei:
                await c.get_json("/api/v1/services", 5)
            assert ei.value.status == 404

    run(main())


def test_kube_repeated_gone_backs_off():
    async def main():
        async with FakeKube() as fk:
            fk.add_pod("w1", labels={"app": "sglang"}, ip="10.0.0.1")
            slept = []

            async def sleep(dt):
                slept.append(dt)
                await asyncio.sleep(0)

            sink = Sink()
            d = KubeDiscovery(KubeConfig(server=fk.url), sink.add, sink.remove, selector="app=sglang",
                              sleep=sleep, initial_backoff=1.0, max_backoff=8.0)
            fk.gone_as_status = True
            fk.compacted_rv = 10**9          # every watch version is "too old"
            await d.run(cycles=6)
            # the first 410 re-lists at once; 410s right after fresh lists back off
            assert d.gone == 6 and d.lists == 6
            assert slept == [1.0, 2.0, 4.0, 8.0, 8.0]
            assert len(sink.urls) == 1       # the routing set stays
    run(main())


# -- the control-plane client (smg.upstream.client): list + watch, plain and TLS

async def _watch_events(stream, n: int) -> list:
    lines = stream.lines(idle=5)
    return [orjson.loads(await anext(lines)) for _ in range(n)]


def test_client_list_and_watch_plain_http():
    async def main():
        async with FakeKube(token="tok", split_chunks=True) as fk:
            fk.add_pod("a", labels={"app": "x"})
            status, headers, body = await client.request(fk.url, "GET", "/api/v1/pods", bearer="tok")
            assert status == 200 and (b"content-type", b"application/json") in headers
            listed = orjson.loads(body)
            assert [p["metadata"]["name"] for p in listed["items"]] == ["a"]
            assert (await client.request(fk.url, "GET", "/api/v1/pods"))[0] == 401   # no token
            assert await client.get_json(fk.url, "/api/v1/pods", bearer="tok") == listed
            rv = listed["metadata"]["resourceVersion"]
            async with await client.stream(fk.url, "GET", f"/api/v1/pods?watch=1&resourceVersion={rv}",
                                           bearer="tok") as s:
                assert s.status == 200 and s.header(b"transfer-encoding") == b"chunked"
                fk.add_pod("b", labels={"app": "x"})
                fk.delete_pod("a")
                evs = await _watch_events(s, 2)
                assert [(e["type"], e["object"]["metadata"]["name"]) for e in evs] == [("ADDED", "b"),
                                                                                     ("DELETED", "a")]
                fk.end_watches()
                assert await s.next_data(5) is None and s.ended    # the chunked body ended cleanly
            assert fk.requests[-1][1]["resourceVersion"] == rv

    run(main())


def test_client_list_and_watch_over_tls(tmp_path):
    ca_pem = _make_ca_and_cert(tmp_path)

    async def main():
        async with FakeKube(token="tok", ssl=_server_tls(tmp_path)) as fk:
            assert fk.url.startswith("https://")
            fk.add_pod("a", labels={"app": "x"})
            tls = client.tls_context(ca_file=str(tmp_path / "ca.crt"))
            status, _, body = await client.request(fk.url, "GET", "/api/v1/pods", bearer="tok", ssl=tls)
            assert status == 200 and orjson.loads(body)["items"][0]["metadata"]["name"] == "a"
            async with await client.stream(fk.url, "GET", "/api/v1/pods?watch=1", bearer="tok", ssl=tls) as s:
                (first,) = await _watch_events(s, 1)         # the synthetic ADDED of a watch without rv
                assert first["type"] == "ADDED"
                fk.set_ready("a", False)
                (ev,) = await _watch_events(s, 1)
                assert ev["type"] == "MODIFIED" and ev["object"]["status"]["conditions"][0]["status"] == "False"
            # CA given as PEM data (text or bytes) instead of a file
            for data in (ca_pem, ca_pem.decode()):
                ctx = client.tls_context(ca_data=data)
                assert (await client.request(fk.url, "GET", "/api/v1/pods", bearer="tok", ssl=ctx))[0] == 200
            # no CA: the default context does not trust the server
            with pytest.raises(UpstreamError):
                await client.request(fk.url, "GET", "/api/v1/pods", bearer="tok")
            with pytest.raises(UpstreamError):
                await client.stream(fk.url, "GET", "/api/v1/pods?watch=1", bearer="tok")
            # insecure-skip-tls-verify
            insecure = client.tls_context(insecure=True)
            assert (await client.request(fk.url, "GET", "/api/v1/pods", bearer="tok", ssl=insecure))[0] == 200

    run(main())


def test_client_certificate_auth_and_kubeconfig(tmp_path):
    _make_ca_and_cert(tmp_path)

    async def main():
        async with FakeKube(ssl=_server_tls(tmp_path, require_client_cert=True)) as fk:
            fk.add_pod("w1", labels={"app": "sglang"}, ip="10.0.0.1")
            no_cert = client.tls_context(ca_file=str(tmp_path / "ca.crt"))
            with pytest.raises(UpstreamError):
                await client.request(fk.url, "GET", "/api/v1/pods", ssl=no_cert)
            files = client.tls_context(ca_file=str(tmp_path / "ca.crt"), cert_file=str(tmp_path / "client.crt"),
                                       key_file=str(tmp_path / "client.key"))
            assert (await client.request(fk.url, "GET", "/api/v1/pods", ssl=files))[0] == 200
            # a kubeconfig user with inline client-certificate-data, the CA as a relative path
            cert, key = (base64.b64encode((tmp_path / n).read_bytes()).decode() for n in ("client.crt", "client.key"))
            kc = tmp_path / "kubeconfig"
            kc.write_text(f"""
current-context: t
contexts: [{{name: t, context: {{cluster: c, user: u}}}}]
clusters: [{{name: c, cluster: {{server: "{fk.url}", certificate-authority: ca.crt}}}}]
users: [{{name: u, user: {{client-certificate-data: {cert}, client-key-data: {key}}}}}]
""")
            cfg = KubeConfig.from_kubeconfig(str(kc))
            sink = Sink()
            d = KubeDiscovery(cfg, sink.add, sink.remove, selector="app=sglang", port=8000,
                              sleep=lambda s: asyncio.sleep(0.01))
            d.start()
            await fk.wait_watches(1)
            fk.add_pod("w2", labels={"app": "sglang"}, ip="10.0.0.2")
            await eventually(lambda: set(sink.urls) == {"http://10.0.0.1:8000", "http://10.0.0.2:8000"})
            assert d.errors == 0
            await d.stop()

    run(main())


def test_client_bodies_limits_timeouts_and_bad_responses():
    big = os.urandom(3 * client.HIGH_WATER)
    release = asyncio.Event()

    async def handle(reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1]
            if target == b"/big":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(big))
                if not head.startswith(b"HEAD "):
                    writer.write(big)
            elif target == b"/lines":
                writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                             b"3\r\na\n\n\r\n4\r\nbb\nc\r\n2\r\ncc\r\n0\r\n\r\n")
            elif target == b"/long":
                writer.write(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 100)
            elif target == b"/cut":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
            elif target == b"/bad":
                writer.write(b"NOT HTTP AT ALL\r\n\r\n")
            elif target == b"/head-only":
                writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                await writer.drain()
                await release.wait()
            else:  # /hang: never answers
                await release.wait()
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            status, _, body = await client.request(url, "GET", "/big", timeout=10)
            assert status == 200 and body == big
            # a stream reads ahead only so far: reading pauses until the consumer catches up
            async with await client.stream(url, "GET", "/big") as s:
                await eventually(lambda: s._reader.paused)
                assert await s.read(idle=5) == big
            with pytest.raises(UpstreamError):
                await client.request(url, "GET", "/big", limit=1024)
            status, headers, body = await client.request(url, "HEAD", "/big")
            assert status == 200 and body == b"" and (b"content-length", b"%d" % len(big)) in headers
            async with await client.stream(url, "GET", "/lines") as s:
                assert [line async for line in s.lines(idle=5)] == [b"a", b"bb", b"ccc"]
            async with await client.stream(url, "GET", "/long") as s:
                with pytest.raises(UpstreamError):
                    async for _ in s.lines(idle=5, limit=10):
                        pass
            for path in ("/cut", "/bad"):
                with pytest.raises(UpstreamError):
                    await client.request(url, "GET", path)
            with pytest.raises(UpstreamError) as ei:
                await client.request(url, "GET", "/hang", timeout=0.2)
            assert ei.value.status_hint == 504
            with pytest.raises(UpstreamError) as ei:
                await client.stream(url, "GET", "/hang", timeout=0.2)
            assert ei.value.status_hint == 504
            async with await client.stream(url, "GET", "/head-only") as s:
                with pytest.raises(UpstreamError) as ei:
                    await s.next_data(idle=0.2)
                assert ei.value.status_hint == 504
            with pytest.raises(UpstreamError):
                await client.request("ftp://127.0.0.1:1", "GET", "/")
        finally:
            release.set()
            server.close()
            await server.wait_closed()

    run(main())
