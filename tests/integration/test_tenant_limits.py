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

import pytest

from smg.errors import ConfigError
from smg.testing.harness import GatewayHarness
from smg.testing.mock_worker import MockConfig
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


def gateway(tmp_path, workers=None, trust=False, **limits):
    settings = {}
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


# A short prompt reserves ~1 token; the mock answers with 500 tokens, so the tenant's
# 600 tokens/minute are nearly spent once the answer's usage settles. The next request
# (1200 characters: 300 tokens reserved) then fits only if the usage was not settled.
BIG_PROMPT = "y" * 1200


@pytest.mark.parametrize("stream, usage, second", [
    (True, True, 429),     # settled from the stream's usage event
    (False, None, 429),    # settled from the JSON body's usage
    (True, False, 200),    # no usage in the answer: the 1-token reservation stands
])
def test_tokens_per_minute_settled_from_usage_with_metrics_off(tmp_path, stream, usage, second):
    with gateway(tmp_path, workers=[MockConfig(worker_id="w1", num_chunks=500)], tpm=600, rpm=100,
                 disable_metrics=True) as h:
        status, _, body = post(h, chat("hi", stream=stream, usage=usage))
        assert status == 200
        if stream:
            assert body.rstrip().endswith(b"data: [DONE]")       # the client's answer is untouched
        s2 = post(h, chat(BIG_PROMPT))
        assert s2[0] == second
        _, tokens = tenant_state(h, "ip:127.0.0.1")
        if second == 429:
            assert_limited(*s2)
            assert tokens < 300                                  # the answer's ~530 tokens were charged
        else:
            assert tokens < 300                                  # the second answer's usage was charged


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
        assert post(h, chat("hi", model="big-1"), "red")[0] == 200          # the small rule's rpm is its own
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
