"""Tenant resolution and tenant rate limits through the running gateway (real sockets on
127.0.0.1, mock workers): requests/minute and tokens/minute per tenant and per model
rule, settled from the answer's usage (streamed or not, with metrics off), trusted and
untrusted tenant headers, bounded state under 10,000 distinct tenants, and a bad limits
file refused at start-up."""
from __future__ import annotations

import http.client
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from smg.errors import ConfigError
from smg.testing.harness import GatewayHarness
from smg.testing.mock_worker import MockConfig
from tests.helpers import wait_for
from tests.integration import rawhttp

LIMITS = """
default_policy:
  tokens_per_minute: {tpm}
  requests_per_minute: {rpm}
  model_rules: {rules}
tenants: {tenants}
"""


def limits_file(tmp_path, tpm=100000, rpm=100, rules="[]", tenants="[]"):
    f = tmp_path / "tenant-limits.yaml"
    f.write_text(LIMITS.format(tpm=tpm, rpm=rpm, rules=rules, tenants=tenants))
    return str(f)


def gateway(tmp_path, workers=None, trust=False, settings=None, **limits):
    settings = dict(settings or {})
    if trust:
        settings["trust_tenant_header"] = True
    for k in ("disable_metrics", "tenant_rate_limit_max_tenants"):
        if k in limits:
            settings[k] = limits.pop(k)
    return GatewayHarness(workers=workers or [MockConfig(worker_id="w1")], tenant_rate_limit_enabled=True,
                          tenant_rate_limit_config=limits_file(tmp_path, **limits), **settings)


def post(h, body, tenant=None, path="/v1/chat/completions"):
    conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=10)
    headers = {"content-type": "application/json"}
    if tenant is not None:
        headers["x-smg-tenant-id"] = tenant
    try:
        conn.request("POST", path, json.dumps(body), headers)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def chat(text="hi", model="mock-model", stream=False, usage=None):
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    if stream:
        body["stream"] = True
        if usage is not None:
            body["stream_options"] = {"include_usage": usage}
    return body


def assert_limited(status, headers, body, retry_after=True):
    assert status == 429
    err = json.loads(body)["error"]
    assert err["code"] == "tenant_rate_limit_exceeded" and err["type"] == "rate_limit_error"
    assert headers["x-request-id"]
    if retry_after:
        assert 1 <= int(headers["retry-after"]) <= 60
    else:
        assert "retry-after" not in headers


def served(worker) -> int:
    return worker.stats.paths.get("/v1/chat/completions", 0)


def tenant_state(h, key):
    limits = h.gw.tenant_limits.limits
    return h.on_loop(lambda: limits.available(key, h.gw.site.now))


def test_requests_per_minute_per_trusted_tenant(tmp_path):
    tenants = '[{tenant_key: "header:gold", tokens_per_minute: 100000, requests_per_minute: 4}]'
    with gateway(tmp_path, trust=True, rpm=2, tenants=tenants) as h:
        assert [post(h, chat(), "red")[0] for _ in range(2)] == [200, 200]
        assert_limited(*post(h, chat(), "red"))
        assert post(h, chat(), "blue")[0] == 200                 # another tenant, its own minute
        assert [post(h, chat(), "gold")[0] for _ in range(4)] == [200] * 4   # its own policy
        assert_limited(*post(h, chat(), "gold"))
        assert served(h.workers[0]) == 7                  # refused requests never reached it
        assert sorted(h.gw.tenant_limits.limits.tenants) == ["header:blue", "header:gold", "header:red"]


def test_an_untrusted_header_does_not_choose_the_tenant(tmp_path):
    with gateway(tmp_path, trust=False, rpm=1) as h:
        assert post(h, chat(), "red")[0] == 200
        assert_limited(*post(h, chat(), "blue"))                 # same client address, same tenant
        assert list(h.gw.tenant_limits.limits.tenants) == ["ip:127.0.0.1"]


def test_a_trusted_header_that_is_no_tenant_id_is_refused(tmp_path):
    with gateway(tmp_path, trust=True) as h:
        status, headers, body = post(h, chat(), "x" * 300)
        assert status == 400 and "x-smg-tenant-id" in json.loads(body)["error"]["message"]
        assert served(h.workers[0]) == 0


# The mock answers with 500 tokens; a chat that names no max_tokens reserves its prompt
# plus 1024 output tokens, capped at the tenant's 600 tokens/minute (the whole minute).
# When the answer ends the charge is trued up to what it used (~500 + the prompt), so
# ~100 tokens are left; the reservation kept would leave 0, the prompt alone ~599.
BIG_PROMPT = "y" * 1200


@pytest.mark.parametrize("path, body, how", [
    ("/v1/chat/completions", chat("hi", stream=True, usage=True), "settled"),    # the stream's usage event
    ("/v1/chat/completions", chat("hi"), "settled"),                            # the JSON body's usage
    ("/v1/chat/completions", chat("hi", stream=True, usage=False), "counted"),  # no usage: its 502 events
    ("/v1/chat/completions", chat("hi", stream=True), "counted"),               # include_usage absent
    ("/v1/messages", dict(chat("hi", stream=True), max_tokens=4096), "counted"),  # last event carries none
])
def test_tokens_per_minute_settled_from_the_answer_with_metrics_off(tmp_path, path, body, how):
    with gateway(tmp_path, workers=[MockConfig(worker_id="w1", num_chunks=500)], tpm=600, rpm=100,
                 disable_metrics=True) as h:
        status, _, answer = post(h, body, path=path)
        assert status == 200
        if body.get("stream") and path == "/v1/chat/completions":
            assert answer.rstrip().endswith(b"data: [DONE]")     # the client's answer is untouched
        _, tokens = tenant_state(h, "ip:127.0.0.1")
        assert 50 <= tokens <= 130, tokens                      # ~500 output tokens charged, no more
        assert h.on_loop(lambda: getattr(h.gw.tenant_limits, how)) == 1
        assert_limited(*post(h, chat(BIG_PROMPT)))               # 300 + 1024 (capped: 600) does not fit
        assert h.workers[0].stats.paths.get(path) == 1 and served(h.workers[0]) == (path != "/v1/messages")


@pytest.mark.parametrize("queue", [{"queue_size": 0}, {"queue_size": 1, "queue_timeout_secs": 0.3}])
def test_a_request_refused_by_admission_is_not_charged_to_its_tenant(tmp_path, queue):
    # one slot, taken by a slow request: the next is refused by admission (429 at once,
    # or 408 after its queue timeout) and its tenant gets its request and tokens back
    settings = {"max_concurrent_requests": 1, **queue}
    body = dict(chat("hi"), max_tokens=10)
    with gateway(tmp_path, workers=[MockConfig(worker_id="w1", ttft=1.0)], tpm=100000, rpm=2,
                 settings=settings) as h:
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(post, h, body)
            assert wait_for(lambda: served(h.workers[0]) == 1)
            st, _, answer = post(h, body)
            expect = (429, "admission_queue_full") if queue["queue_size"] == 0 else (408, "queue_timeout")
            assert (st, json.loads(answer)["error"]["code"]) == expect
            requests, _ = tenant_state(h, "ip:127.0.0.1")
            assert 0.9 <= requests < 1.1                      # only the slow one holds its request
            assert h.on_loop(lambda: h.gw.tenant_limits.refunded) == 1
            assert slow.result(10)[0] == 200
        assert post(h, body)[0] == 200                        # the refused one did not spend the minute
        assert_limited(*post(h, body))                        # two served: the minute is spent
        assert served(h.workers[0]) == 2


def test_a_model_rule_is_layered_on_the_tenant_limits(tmp_path):
    rules = ('[{rule_id: big, matcher: {type: prefix, value: "big-"}, tokens_per_minute: 600,'
             ' requests_per_minute: 100},'
             ' {rule_id: tiny, matcher: {type: exact, value: "small"}, tokens_per_minute: 100000,'
             ' requests_per_minute: 1}]')
    workers = [MockConfig(worker_id="big", model="big-1", num_chunks=500), MockConfig(worker_id="small",
                                                                                      model="small")]
    with gateway(tmp_path, workers=workers, trust=True, tpm=100000, rpm=100, rules=rules) as h:
        # tokens per minute of the rule, settled from the streamed usage
        assert post(h, chat("hi", model="big-1", stream=True, usage=True), "red")[0] == 200
        assert_limited(*post(h, chat(BIG_PROMPT, model="big-1"), "red"))
        assert post(h, chat(BIG_PROMPT, model="small"), "red")[0] == 200    # the tenant's global limit has room
        assert post(h, chat(BIG_PROMPT, model="big-1"), "blue")[0] == 200   # another tenant's own rule scope
        # requests per minute of the exact rule
        assert_limited(*post(h, chat("hi", model="small"), "red"))
        small_answer = dict(chat("hi", model="big-1"), max_tokens=8)         # 9 tokens: fits the big rule's rest
        assert post(h, small_answer, "red")[0] == 200                        # the small rule's rpm is its own
        assert served(h.workers[0]) == 3 and served(h.workers[1]) == 1


def test_tenant_state_stays_bounded_under_10000_distinct_tenants(tmp_path):
    # 1 token per minute: every request (3 tokens) is refused without Retry-After (it
    # never fits) but still makes its tenant tracked
    with gateway(tmp_path, trust=True, tpm=1, rpm=1000, tenant_rate_limit_max_tenants=500) as h:
        limits = h.gw.tenant_limits.limits
        slots = limits.slots
        body = json.dumps(chat("hello world!")).encode()
        seen = 0
        with rawhttp.connect(h.port, timeout=30) as s:
            for batch in range(100):
                raw = b"".join(
                    b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
                    b"x-smg-tenant-id: t%d\r\ncontent-length: %d\r\n\r\n%s" % (batch * 100 + i, len(body), body)
                    for i in range(100))
                s.sendall(raw)
                for status, headers, answer in rawhttp.read_responses(s, 100, ["POST"] * 100):
                    assert_limited(status, headers, answer, retry_after=False)
                    seen += 1
        assert seen == 10_000
        tracked, evictions, free = h.on_loop(lambda: (len(limits), limits.evictions, len(limits.free)))
        assert tracked == 500 and evictions == 9_500 and free == slots - 500 and limits.slots == slots
        assert h.on_loop(lambda: set(limits.tenants)) == {f"header:t{i}" for i in range(9_500, 10_000)}
        assert served(h.workers[0]) == 0


BAD_FILES = [
    ("default_policy: [unclosed\n", "is not valid YAML"),
    ("default_policy: {tokens_per_minute: 0, requests_per_minute: 1}\n", "default_policy.tokens_per_minute"),
    ("default_policy: {tokens_per_minute: 1, requests_per_minute: 1}\n"
     "tenants: [{tenant_key: 'header:red', tokens_per_minute: 1, requests_per_minute: 1}]\n",
     "tenants[0].tenant_key: 'header:red' needs --trust-tenant-header"),
]


@pytest.mark.parametrize("text, message", BAD_FILES)
def test_a_bad_limits_file_is_refused_at_start_up(tmp_path, text, message):
    f = tmp_path / "limits.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        with GatewayHarness(tenant_rate_limit_enabled=True, tenant_rate_limit_config=str(f)):
            pass
    assert e.value.key == "--tenant-rate-limit-config" and message in str(e.value)


def test_enabled_without_a_file_is_refused_at_start_up():
    with pytest.raises(ConfigError, match="required with --tenant-rate-limit-enabled"):
        with GatewayHarness(tenant_rate_limit_enabled=True):
            pass


def test_smg_proxy_exits_with_the_error_on_a_bad_limits_file(tmp_path):
    f = tmp_path / "limits.yaml"
    f.write_text("default_policy: {tokens_per_minute: 10, requests_per_minute: 1, burst: 3}\n")
    p = subprocess.run([sys.executable, "-m", "smg", "--host", "127.0.0.1", "--port", "0", "--prometheus-port", "0",
                        "--worker-urls", "http://127.0.0.1:9", "--tenant-rate-limit-enabled",
                        "--tenant-rate-limit-config", str(f)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "--tenant-rate-limit-config" in p.stderr and "default_policy.burst: unknown key" in p.stderr
    assert "Traceback" not in p.stderr
