"""State that client input could grow stays bounded: model strings a client invents
create no candidate-cache entry, no metrics shape and no label value (the in-memory
request path of smg.testing.pathbench, no sockets)."""
from __future__ import annotations

import orjson

from smg.observability.metrics import exposition
from smg.testing.pathbench import RESPONSE, PathBench


def chat(model: str) -> bytes:
    body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))


def send(pb: PathBench, raw: bytes, answer: bytes | None) -> bytes:
    pb.client.out.clear()
    pb.proto.data_received(raw)
    if answer is not None and pb.conn.owner is not None:
        pb.conn.data_received(answer)
    out = b"".join(pb.client.out)
    pb.conn.transport.out.clear()
    return out


def model_labels(pb: PathBench) -> set:
    text = exposition(pb.gw.metrics.registry()).decode()
    labels = set()
    for line in text.splitlines():
        if line.startswith("smg_router_requests_total{"):
            labels.add(line.split('model="', 1)[1].split('"', 1)[0])
    return labels


def test_unknown_models_with_a_wildcard_worker_share_one_label():
    pb = PathBench(metrics=True, access_log=True)
    pb.gw.registry.set_models(pb.worker, (), [])     # a worker that accepts any model
    for i in range(1000):
        out = send(pb, chat(f"invented-{i}"), RESPONSE)
        assert out.startswith(b"HTTP/1.1 200"), out[:100]
    assert len(pb.gw.observer.shapes) <= 2
    assert model_labels(pb) == {"other"}
    assert len(pb.gw.registry._candidates) <= 4
    pb.close()


def test_unknown_models_without_a_wildcard_answer_404_and_grow_nothing():
    pb = PathBench(metrics=True, access_log=False)
    send(pb, chat("mock-model"), RESPONSE)
    for i in range(1000):
        out = send(pb, chat(f"invented-{i}"), None)
        assert out.startswith(b"HTTP/1.1 404") and b"model_not_found" in out
    assert len(pb.gw.observer.shapes) == 2            # the 200 and the 404 shapes
    assert len(pb.gw.registry._candidates) <= 4
    assert model_labels(pb) == {"mock-model", "other"}  # every unknown model shares "other"
    pb.close()


def test_random_paths_and_methods_share_the_unmatched_shape():
    pb = PathBench(metrics=True, access_log=True)
    for i in range(300):
        out = send(pb, b"GET /nope/%d HTTP/1.1\r\nhost: gw\r\n\r\n" % i, None)
        assert out.startswith(b"HTTP/1.1 404")
        out = send(pb, b"BREW%d /v1/models HTTP/1.1\r\nhost: gw\r\n\r\n" % i, None)
        assert out.startswith(b"HTTP/1.1 405")
    assert len(pb.gw.observer.shapes) == 2
    pb.close()
