"""Tenant resolution and tenant rate limits, sans I/O: the YAML file's validation, the
model-rule matcher, the reserve/settle engine (time is an argument), its bounded state,
the filter's verdicts and end hook, and the resolver's four key forms."""
from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smg.admission.tenant_limits import (
    DEFAULT_OUTPUT_TOKENS, ERROR_CODE, MAX_PER_MINUTE, Denied, Reservation, TenantLimits, TenantRateLimit, build,
    canonical_key, estimate_tokens, load_policies, output_ceiling, parse_policies,
)
from smg.admission.tenants import MAX_TENANT_ID_BYTES, TenantResolver, needs_tenant
from smg.admission.token_bucket import TokenBucketsC, TokenBucketsPy
from smg.config.load import build_config
from smg.errors import ConfigError
from smg.server.context import RequestContext
from smg.server.endpoints import ENDPOINTS
from smg.server.filters import Reply
from smg.server.handlers import parse_body

import orjson

BUCKETS = [pytest.param(TokenBucketsPy, id="py")]
if TokenBucketsC is not None:
    BUCKETS.append(pytest.param(TokenBucketsC, id="c"))

_EP = {e.path: e for e in ENDPOINTS}


def policies(default=None, tenants=(), trust=True):
    doc = {"default_policy": default or {"tokens_per_minute": 600, "requests_per_minute": 60}}
    if tenants:
        doc["tenants"] = list(tenants)
    return parse_policies(doc, trust)


def rule(rule_id, kind, value, rpm=60, tpm=600):
    return {"rule_id": rule_id, "matcher": {"type": kind, "value": value}, "requests_per_minute": rpm,
            "tokens_per_minute": tpm}


# -- the YAML file ----------------------------------------------------------------------

GOOD = """
default_policy:
  tokens_per_minute: 1000
  requests_per_minute: 60
  model_rules:
    - rule_id: big
      matcher: {type: prefix, value: "llama-70b"}
      tokens_per_minute: 100
      requests_per_minute: 5
tenants:
  - tenant_key: "auth:team-red"
    tokens_per_minute: 5000
    requests_per_minute: 300
  - tenant_key: "ip:::0001"
    tokens_per_minute: 10
    requests_per_minute: 1
"""


def test_a_valid_file_loads_with_smg_semantics(tmp_path):
    f = tmp_path / "limits.yaml"
    f.write_text(GOOD)
    ps = load_policies(str(f), trust_header=False)
    assert (ps.default.rpm, ps.default.tpm) == (60, 1000)
    assert ps.policy_for("auth:team-red").tpm == 5000
    assert ps.policy_for("ip:::1").rpm == 1            # addresses are normalized to what resolution yields
    assert ps.policy_for("auth:someone-else") is ps.default
    assert ps.default.match("llama-70b-chat").rule_id == "big"
    assert ps.default.match("llama-8b") is None and ps.policy_for("auth:team-red").match("llama-70b") is None


BAD = [
    ("", "default_policy is required"),
    ("- a list\n", "expected a mapping"),
    ("default_policy: {tokens_per_minute: 1, requests_per_minute: 1}\nextra: 1\n", "extra: unknown key"),
    ("tenants: []\n", "default_policy: missing"),
    ("default_policy: {tokens_per_minute: 0, requests_per_minute: 1}\n", "default_policy.tokens_per_minute: must be"),
    ("default_policy: {tokens_per_minute: 10, requests_per_minute: true}\n",
     "default_policy.requests_per_minute: must be"),
    ("default_policy: {tokens_per_minute: 1.5, requests_per_minute: 1}\n", "default_policy.tokens_per_minute"),
    (f"default_policy: {{tokens_per_minute: {MAX_PER_MINUTE + 1}, requests_per_minute: 1}}\n",
     "default_policy.tokens_per_minute"),
    ("default_policy: {requests_per_minute: 1}\n", "default_policy.tokens_per_minute: missing"),
    ("default_policy: {tokens_per_minute: 1, requests_per_minute: 1, tenant_key: 'auth:x'}\n",
     "default_policy.tenant_key"),
    ("default_policy: {tokens_per_minute: 1, requests_per_minute: 1, burst: 2}\n",
     "default_policy.burst: unknown key"),
    ("default_policy: {tokens_per_minute: 1, requests_per_minute: 1}\ntenants: {a: 1}\n", "tenants: expected a list"),
    ("default_policy: {tokens_per_minute: 1, requests_per_minute: 1}\n"
     "tenants: [{tokens_per_minute: 1, requests_per_minute: 1}]\n", "tenants[0].tenant_key: missing"),
    ("default_policy: {tokens_per_minute: 1, requests_per_minute: 1}\n"
     "tenants: [{tenant_key: team-red, tokens_per_minute: 1, requests_per_minute: 1}]\n",
     "tenants[0].tenant_key: 'team-red' is not a tenant key"),
    ("default_policy: {tokens_per_minute: 1, requests_per_minute: 1}\n"
     "tenants: [{tenant_key: 'ip:10.0.0.300', tokens_per_minute: 1, requests_per_minute: 1}]\n",
     "is not an IP address"),
    ("default_policy: {tokens_per_minute: 1, requests_per_minute: 1}\n"
     "tenants: [{tenant_key: 'header:team-red', tokens_per_minute: 1, requests_per_minute: 1}]\n",
     "needs --trust-tenant-header"),
    ("default_policy: {tokens_per_minute: 1, requests_per_minute: 1}\n"
     "tenants: [{tenant_key: 'auth:a', tokens_per_minute: 1, requests_per_minute: 1},"
     " {tenant_key: 'auth:a', tokens_per_minute: 2, requests_per_minute: 2}]\n",
     "tenants[1].tenant_key: duplicate tenant_key 'auth:a'"),
    ("default_policy: {tokens_per_minute: 1, requests_per_minute: 1, model_rules: {a: 1}}\n",
     "default_policy.model_rules: expected a list"),
    ("default_policy: {tokens_per_minute: 1, requests_per_minute: 1, model_rules: [{rule_id: 'bad id',"
     " matcher: {type: exact, value: m}, tokens_per_minute: 1, requests_per_minute: 1}]}\n",
     "default_policy.model_rules[0].rule_id: must match"),
    ("default_policy: {tokens_per_minute: 1, requests_per_minute: 1, model_rules: [{rule_id: r,"
     " matcher: {type: regex, value: m}, tokens_per_minute: 1, requests_per_minute: 1}]}\n",
     "default_policy.model_rules[0].matcher.type: must be exact or prefix"),
    ("default_policy: {tokens_per_minute: 1, requests_per_minute: 1, model_rules: [{rule_id: r,"
     " matcher: {type: exact, value: ''}, tokens_per_minute: 1, requests_per_minute: 1}]}\n",
     "default_policy.model_rules[0].matcher.value: must be a non-empty string"),
    ("default_policy: {tokens_per_minute: 1, requests_per_minute: 1, model_rules: [{rule_id: r,"
     " tokens_per_minute: 1, requests_per_minute: 1}]}\n", "default_policy.model_rules[0].matcher: missing"),
    ("default_policy: {tokens_per_minute: 1, requests_per_minute: 1, model_rules: [{rule_id: r,"
     " matcher: {type: exact, value: m, x: 1}, tokens_per_minute: 1, requests_per_minute: 1}]}\n",
     "default_policy.model_rules[0].matcher.x: unknown key"),
    ("default_policy: {tokens_per_minute: 1, requests_per_minute: 1, model_rules: ["
     "{rule_id: a, matcher: {type: exact, value: m}, tokens_per_minute: 1, requests_per_minute: 1},"
     "{rule_id: a, matcher: {type: exact, value: n}, tokens_per_minute: 1, requests_per_minute: 1}]}\n",
     "default_policy.model_rules[1].rule_id: duplicate rule_id 'a'"),
    ("default_policy: {tokens_per_minute: 1, requests_per_minute: 1, model_rules: ["
     "{rule_id: a, matcher: {type: prefix, value: m}, tokens_per_minute: 1, requests_per_minute: 1},"
     "{rule_id: b, matcher: {type: prefix, value: m}, tokens_per_minute: 1, requests_per_minute: 1}]}\n",
     "default_policy.model_rules[1].matcher: prefix 'm' duplicates rule 'a'"),
    ("default_policy: {tokens_per_minute: 1, requests_per_minute: 1, model_rules: [{rule_id: r,"
     " matcher: {type: exact, value: m}, tokens_per_minute: 1, requests_per_minute: 0}]}\n",
     "default_policy.model_rules[0].requests_per_minute: must be"),
    ("default_policy: [unclosed\n", "is not valid YAML"),
]


@pytest.mark.parametrize("text, message", BAD)
def test_a_bad_file_is_refused_naming_the_key(tmp_path, text, message):
    f = tmp_path / "limits.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_policies(str(f), trust_header=False)
    assert e.value.key == "--tenant-rate-limit-config"
    assert str(f) in str(e.value) and message in str(e.value)


def test_an_unreadable_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_policies(str(tmp_path / "missing.yaml"), trust_header=False)


def test_exact_and_prefix_of_the_same_value_may_coexist():
    ps = policies({"tokens_per_minute": 1, "requests_per_minute": 1,
                   "model_rules": [rule("p", "prefix", "gpt-4"), rule("e", "exact", "gpt-4"),
                                   rule("longer", "prefix", "gpt-4o")]})
    m = ps.default.match
    assert m("gpt-4").rule_id == "e"                 # exact beats prefix
    assert m("gpt-4o-mini").rule_id == "longer"      # the longest prefix wins
    assert m("gpt-4-turbo").rule_id == "p"
    assert m("gpt-3") is None and m(None) is None


@pytest.mark.parametrize("key, trust, expect", [
    ("anonymous", False, "anonymous"), ("auth:x", False, "auth:x"), ("ip:127.0.0.1", False, "ip:127.0.0.1"),
    ("ip:0:0:0:0:0:0:0:1", False, "ip:::1"), ("header:team", True, "header:team"),
])
def test_canonical_keys(key, trust, expect):
    assert canonical_key(key, trust) == expect


@pytest.mark.parametrize("key", ["auth:", "header:", "header:a b", "header:" + "x" * (MAX_TENANT_ID_BYTES + 1),
                                 "ip:", "tenant:x", 7, "Anonymous"])
def test_non_canonical_keys_are_refused(key):
    with pytest.raises(ValueError):
        canonical_key(key, True)


# -- the engine -------------------------------------------------------------------------


@pytest.mark.parametrize("buckets", BUCKETS)
def test_requests_per_minute_then_retry_after(buckets):
    lim = TenantLimits(policies({"tokens_per_minute": 600, "requests_per_minute": 3}), 8, buckets)
    assert all(type(lim.reserve("auth:a", None, 1, 100.0)) is Reservation for _ in range(3))
    d = lim.reserve("auth:a", None, 1, 100.0)
    assert type(d) is Denied and d.retry_after == 20          # 3/min: one request back every 20 s
    assert type(lim.reserve("auth:b", None, 1, 100.0)) is Reservation   # another tenant: its own buckets
    assert lim.reserve("auth:a", None, 1, 110.0).retry_after == 10
    assert type(lim.reserve("auth:a", None, 1, 120.0)) is Reservation


@pytest.mark.parametrize("buckets", BUCKETS)
def test_tokens_per_minute_all_or_nothing(buckets):
    lim = TenantLimits(policies({"tokens_per_minute": 600, "requests_per_minute": 60}), 8, buckets)
    assert type(lim.reserve("auth:a", None, 500, 0.0)) is Reservation
    d = lim.reserve("auth:a", None, 200, 0.0)
    assert d.retry_after == 10                                  # 100 short at 10 tokens/s
    assert lim.available("auth:a", 0.0) == (59.0, 100.0)        # the refused request took nothing
    never = lim.reserve("auth:a", None, 601, 0.0)
    assert type(never) is Denied and never.retry_after == 0     # more than a minute's tokens: never fits


@pytest.mark.parametrize("buckets", BUCKETS)
def test_a_model_rule_layers_on_the_tenant_limits(buckets):
    ps = policies({"tokens_per_minute": 1000, "requests_per_minute": 3,
                   "model_rules": [rule("big", "prefix", "big-", rpm=1, tpm=100)]})
    lim = TenantLimits(ps, 8, buckets)
    assert lim.reserve("auth:a", "big-1", 10, 0.0).slots.__len__() == 2
    d = lim.reserve("auth:a", "big-2", 10, 0.0)
    assert d.retry_after == 60                                  # the rule's 1/min
    assert lim.available("auth:a", 0.0) == (2.0, 990.0)         # global untouched by the refusal
    assert type(lim.reserve("auth:a", "small", 10, 0.0)) is Reservation
    assert type(lim.reserve("auth:a", "small", 10, 0.0)) is Reservation
    # the rule's requests count against the tenant's global limit too
    assert lim.reserve("auth:a", "small", 10, 0.0).retry_after == 20
    assert lim.available("auth:a", 0.0, "big") == (0.0, 90.0)


@pytest.mark.parametrize("buckets", BUCKETS)
def test_a_rule_refusal_gives_back_the_global_charge(buckets):
    ps = policies({"tokens_per_minute": 1000, "requests_per_minute": 10,
                   "model_rules": [rule("m", "exact", "m", rpm=10, tpm=50)]})
    lim = TenantLimits(ps, 8, buckets)
    assert type(lim.reserve("auth:a", "m", 60, 0.0)) is Denied
    assert lim.available("auth:a", 0.0) == (10.0, 1000.0)
    assert lim.available("auth:a", 0.0, "m") == (10.0, 50.0)


@pytest.mark.parametrize("buckets", BUCKETS)
def test_settle_refunds_and_charges_into_debt(buckets):
    lim = TenantLimits(policies({"tokens_per_minute": 600, "requests_per_minute": 60}), 8, buckets)
    r = lim.reserve("auth:a", None, 100, 0.0)
    lim.settle(r, 30, 0.0)
    assert lim.available("auth:a", 0.0)[1] == 570.0             # 70 given back
    r = lim.reserve("auth:a", None, 100, 0.0)                   # 470 left
    lim.settle(r, 670, 0.0)                                     # 570 more than reserved
    assert lim.available("auth:a", 0.0)[1] == pytest.approx(-100.0)
    d = lim.reserve("auth:a", None, 0, 0.0)
    assert type(d) is Denied and d.retry_after == 10            # debt: nothing, not even 0 tokens
    assert lim.reserve("auth:a", None, 50, 5.0).retry_after == 10  # 50 paid, 50 owed + 50 wanted
    assert type(lim.reserve("auth:a", None, 0, 10.0)) is Reservation
    # a refund pays debt first
    r = lim.reserve("auth:a", None, 0, 10.0)
    lim.settle(r, 200, 10.0)
    assert lim.available("auth:a", 10.0)[1] == pytest.approx(-200.0)
    lim.settle(Reservation(r.tenant, r.slots, 300), 0, 10.0)
    assert lim.available("auth:a", 10.0)[1] == pytest.approx(100.0)


@pytest.mark.parametrize("buckets", BUCKETS)
def test_debt_then_idle_recovers_as_a_signed_level(buckets):
    """A bucket in debt that stays idle longer than a minute ends up full, as SMG's
    signed level does (the debt widens the bucket meanwhile, so no refill is lost)."""
    lim = TenantLimits(policies({"tokens_per_minute": 600, "requests_per_minute": 60}), 8, buckets)
    r = lim.reserve("auth:a", None, 600, 0.0)
    lim.settle(r, 900, 0.0)                                     # -300
    assert lim.available("auth:a", 20.0)[1] == pytest.approx(-100.0)
    assert lim.available("auth:a", 200.0)[1] == pytest.approx(600.0)


class _SignedLevel:
    """SMG's arithmetic (a float level, refilled to capacity, may go negative)."""

    def __init__(self, cap):
        self.cap = cap
        self.level = cap
        self.t = None

    def refill(self, now):
        if self.t is not None and now > self.t:
            self.level = min(self.cap, self.level + (now - self.t) * self.cap / 60.0)
        if self.t is None or now > self.t:
            self.t = now

    def reserve(self, n, now):
        self.refill(now)
        # 1e-9: the float model's own rounding (127.99999999999999 for 128); the engine's
        # fixed point is exact there
        if self.level + 1e-9 >= n and not (n == 0 and self.level < 0):
            self.level -= n
            return True
        return False

    def settle(self, delta, now):
        self.refill(now)
        self.level = min(self.cap, self.level - delta)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["reserve", "settle", "look"]), st.integers(0, 90),
                          st.integers(0, 1500)), max_size=40))
def test_the_engine_keeps_smg_signed_level_arithmetic(ops):
    cap = 600
    lim = TenantLimits(policies({"tokens_per_minute": cap, "requests_per_minute": MAX_PER_MINUTE}), 4,
                       TokenBucketsPy)
    model = _SignedLevel(cap)
    now = 0.0
    held = [lim.reserve("auth:a", None, 0, now)]
    assert model.reserve(0, now)
    for op, dt, n in ops:
        now += dt / 10.0
        if op == "reserve":
            r = lim.reserve("auth:a", None, n, now)
            assert (type(r) is Reservation) == model.reserve(n, now), (now, n, model.level)
            if type(r) is Reservation:
                held.append(r)
        elif op == "settle" and held:
            r = held.pop(0)
            lim.settle(r, n, now)
            model.settle(n - r.tokens, now)
        model.refill(now)
        assert lim.available("auth:a", now)[1] == pytest.approx(model.level, abs=1e-3)


@pytest.mark.parametrize("buckets", BUCKETS)
def test_tenant_state_is_bounded_and_least_recently_seen_goes_first(buckets):
    ps = policies({"tokens_per_minute": 600, "requests_per_minute": 2,
                   "model_rules": [rule("r1", "exact", "m1"), rule("r2", "exact", "m2")]})
    lim = TenantLimits(ps, 100, buckets)
    slots = lim.slots
    for i in range(10_000):
        lim.reserve(f"header:t{i}", "m1" if i % 2 else None, 1, 0.0)
    assert len(lim) == 100 and lim.slots == slots and lim.evictions == 9_900
    assert set(lim.tenants) == {f"header:t{i}" for i in range(9_900, 10_000)}
    # every slot is free or held by a tracked tenant: eviction leaks none
    assert len(lim.free) + sum(1 + len(t.rules or ()) for t in lim.tenants.values()) == slots
    # an evicted tenant starts over with full buckets
    assert lim.available("header:t0", 0.0) is None
    assert type(lim.reserve("header:t0", None, 1, 0.0)) is Reservation
    assert lim.available("header:t0", 0.0) == (1.0, 599.0)


@pytest.mark.parametrize("buckets", BUCKETS)
def test_a_recently_seen_tenant_keeps_its_state(buckets):
    lim = TenantLimits(policies({"tokens_per_minute": 600, "requests_per_minute": 1}), 3, buckets)
    lim.reserve("auth:keep", None, 1, 0.0)
    for i in range(50):
        lim.reserve(f"ip:10.0.0.{i}", None, 1, 0.0)
        assert type(lim.reserve("auth:keep", None, 1, 0.0)) is Denied   # seen again: kept, still limited
    assert len(lim) == 3 and "auth:keep" in lim.tenants


@pytest.mark.parametrize("buckets", BUCKETS)
def test_settling_an_evicted_tenant_leaves_the_new_owner_alone(buckets):
    lim = TenantLimits(policies({"tokens_per_minute": 600, "requests_per_minute": 60}), 1, buckets)
    r = lim.reserve("auth:old", None, 10, 0.0)
    lim.reserve("auth:new", None, 10, 0.0)                      # evicts auth:old, takes its slot
    lim.settle(r, 500, 0.0)
    assert lim.available("auth:new", 0.0) == (59.0, 590.0)


# -- the filter and its end hook ---------------------------------------------------------


class _Conn:
    def __init__(self, peer="127.0.0.1"):
        self.peer = peer


class _Scanner:
    def __init__(self, usage):
        self._usage = usage

    def usage(self):
        return self._usage


def _ctx(path="/v1/chat/completions", body=None, headers=(), raw=None):
    ctx = RequestContext(b"POST", path.encode(), path.encode(), list(headers), _EP[path], 0.0)
    ctx.raw = raw if raw is not None else orjson.dumps(body)
    return ctx


def _chat(text, model="m"):
    return {"model": model, "messages": [{"role": "user", "content": text}]}


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _filter(default, tenants=(), max_tenants=16):
    clock = _Clock()
    parsed = []

    def parse(conn, ctx):
        parsed.append(ctx)
        return parse_body(conn, ctx)

    f = TenantRateLimit(TenantLimits(policies(default, tenants), max_tenants), clock, parse, Reply)
    return f, clock, parsed


def _end(ctx):
    hooks = ctx.end_hooks()
    ctx.on_end = None
    for fn in hooks:
        fn(ctx)


def test_the_filter_parses_once_reserves_and_refuses_with_smg_code():
    f, clock, parsed = _filter({"tokens_per_minute": 600, "requests_per_minute": 1})
    ctx = _ctx(body=_chat("x" * 40))
    ctx.tenant = "auth:a"
    assert f(_Conn(), ctx) is None and parsed == [ctx] and ctx.body["model"] == "m"
    assert parse_body(_Conn(), ctx) is None and len(ctx.end_hooks()) == 1
    ctx2 = _ctx(body=_chat("y"))
    ctx2.tenant = "auth:a"
    v = f(_Conn(), ctx2)
    assert type(v) is Reply and v.status == 429 and v.code == ERROR_CODE
    assert v.headers == [(b"retry-after", b"60")]
    assert ctx2.on_end is None                                  # a refused request holds nothing


def test_a_request_that_never_fits_gets_no_retry_after():
    f, _, _ = _filter({"tokens_per_minute": 5, "requests_per_minute": 10})
    ctx = _ctx(body=_chat("z" * 100))
    v = f(_Conn(), ctx)
    assert type(v) is Reply and v.status == 429 and v.headers is None


def test_malformed_bodies_get_the_validation_error_first():
    f, _, _ = _filter({"tokens_per_minute": 600, "requests_per_minute": 10})
    v = f(_Conn(), _ctx(raw=b"{nope"))
    assert type(v) is Reply and v.status == 400 and v.code == "invalid_json"
    assert f.limits.tenants == {}                               # nothing reserved


class _Worker:
    url = "http://127.0.0.1:9"


def _served(ctx):
    ctx.worker = _Worker()          # selection chose a worker (the request was served)
    return ctx


class _Stream:
    """What a scanner tells of a stream that carried no usage."""

    def __init__(self, data_events, done=True):
        self.data_events = data_events
        self.done = done

    def usage(self):
        return None


def test_the_reservation_is_the_prompt_plus_the_output_ceiling():
    f, clock, _ = _filter({"tokens_per_minute": 100000, "requests_per_minute": 60})
    ctx = _ctx(body=dict(_chat("a" * 40), max_tokens=50, n=2))    # 10 + 2 x 50
    f(_Conn(), ctx)
    (res,) = ctx.end_hooks()
    assert (res.tokens, res.prompt, res.ceiling) == (110, 10, 100)
    assert f.limits.available("anonymous", 0.0)[1] == 100000 - 110
    ctx = _ctx(body=dict(_chat("a" * 40), max_tokens=50, max_completion_tokens=7))  # the newer field wins
    f(_Conn(), ctx)
    assert ctx.end_hooks()[0].tokens == 17
    ctx = _ctx(body=_chat("a" * 40))                                # no limit named: the bounded default
    f(_Conn(), ctx)
    (res,) = ctx.end_hooks()
    assert (res.tokens, res.ceiling) == (10 + DEFAULT_OUTPUT_TOKENS, None)
    ctx = _ctx("/v1/embeddings", {"model": "m", "input": "a" * 40})  # no output: the prompt alone
    f(_Conn(), ctx)
    assert ctx.end_hooks()[0].tokens == 10


def test_a_reservation_above_the_minute_is_capped_and_waits_for_a_full_bucket():
    f, clock, _ = _filter({"tokens_per_minute": 600, "requests_per_minute": 60})
    a = _ctx(body=dict(_chat("a" * 40), max_tokens=5000))
    assert f(_Conn(), a) is None and a.end_hooks()[0].tokens == 600   # servable: the whole minute
    b = _ctx(body=dict(_chat("b" * 40), max_tokens=5000))
    v = f(_Conn(), b)
    assert type(v) is Reply and v.headers == [(b"retry-after", b"60")]  # it waits for a full bucket
    never = _ctx(body=_chat("c" * 2404))                               # the prompt alone exceeds the minute
    assert f(_Conn(), never) is f.never


def test_the_end_hook_settles_from_streamed_usage():
    f, clock, _ = _filter({"tokens_per_minute": 6000, "requests_per_minute": 60})
    ctx = _served(_ctx(body=dict(_chat("a" * 40), max_tokens=100)))   # 10 + 100 reserved
    ctx.tenant = "auth:a"
    f(_Conn(), ctx)
    assert f.limits.available("auth:a", 0.0)[1] == 5890.0
    ctx.scanner = _Scanner((12, 300))
    _end(ctx)
    assert f.limits.available("auth:a", 0.0)[1] == 5688.0 and f.settled == 1
    _end(ctx)                                                   # runs once
    assert f.limits.available("auth:a", 0.0)[1] == 5688.0


def test_a_stream_without_usage_is_charged_its_relayed_events():
    f, clock, _ = _filter({"tokens_per_minute": 6000, "requests_per_minute": 60})
    ctx = _served(_ctx(body=_chat("a" * 40)))                   # 10 + 1024 reserved
    f(_Conn(), ctx)
    ctx.scanner = _Stream(501)                                  # 500 events, then [DONE]
    _end(ctx)
    assert f.limits.available("anonymous", 0.0)[1] == 6000 - 510 and f.counted == 1
    ctx = _served(_ctx(body=dict(_chat("a" * 40), max_tokens=20)))
    f(_Conn(), ctx)
    ctx.scanner = _Stream(23, done=False)                       # role and finish chunks: at most max_tokens
    _end(ctx)
    assert f.limits.available("anonymous", 0.0)[1] == 6000 - 510 - 30
    ctx = _served(_ctx(body=_chat("a" * 40)))
    f(_Conn(), ctx)
    ctx.scanner = _Stream(2000)                                 # longer than the default: charged in full
    _end(ctx)
    assert f.limits.available("anonymous", 0.0)[1] == 6000 - 510 - 30 - 2009


def test_the_end_hook_settles_from_a_kept_body_or_keeps_the_reservation():
    f, clock, _ = _filter({"tokens_per_minute": 600, "requests_per_minute": 60})
    ctx = _served(_ctx(body=dict(_chat("a" * 40), max_tokens=5)))
    f(_Conn(), ctx)
    ctx.body_parts = [b'{"choices":[],"usage":{"prompt_tokens":', b'3,"completion_tokens":2}}']
    _end(ctx)
    assert f.limits.available("anonymous", 0.0)[1] == 595.0
    ctx = _served(_ctx(body=dict(_chat("b" * 40), max_tokens=5)))
    f(_Conn(), ctx)
    ctx.status = 499                                            # client gone, no usage: reservation stands
    _end(ctx)
    assert f.limits.available("anonymous", 0.0)[1] == 580.0 and f.unsettled == 1


@pytest.mark.parametrize("code", ["admission_queue_full", "queue_timeout", "scheduler_queue_full",
                                  "scheduler_queue_timeout", "scheduler_preempted", None])
def test_a_request_no_worker_served_is_refunded_in_full(code):
    f, clock, _ = _filter({"tokens_per_minute": 600, "requests_per_minute": 2})
    ctx = _ctx(body=dict(_chat("a" * 40), max_tokens=90))
    assert f(_Conn(), ctx) is None
    assert f.limits.available("anonymous", 0.0) == (1.0, 500.0)
    ctx.error_code = code                                       # None: the client left while queued
    if code == "scheduler_preempted":
        _served(ctx)                                            # preempted after selection, before a byte
    ctx.scanner = _Stream(40)                                   # (a preempted stream relayed nothing)
    _end(ctx)
    assert f.limits.available("anonymous", 0.0) == (2.0, 600.0) and f.refunded == 1
    small = dict(_chat("x"), max_tokens=299)
    assert [f(_Conn(), _ctx(body=small)) for _ in range(2)] == [None, None]   # the minute is whole


@pytest.mark.parametrize("path, body, expect", [
    ("/v1/chat/completions", _chat("x"), (DEFAULT_OUTPUT_TOKENS, False)),
    ("/v1/chat/completions", dict(_chat("x"), max_tokens=0), (0, True)),
    ("/v1/chat/completions", dict(_chat("x"), max_tokens=True), (DEFAULT_OUTPUT_TOKENS, False)),  # not a count
    ("/v1/chat/completions", dict(_chat("x"), max_completion_tokens=9, n=3), (27, True)),
    ("/v1/completions", {"model": "m", "prompt": "p"}, (16, False)),
    ("/v1/completions", {"model": "m", "prompt": ["p", "q"], "max_tokens": 5, "n": 2, "best_of": 3}, (30, True)),
    ("/v1/completions", {"model": "m", "prompt": [1, 2, 3], "max_tokens": 5}, (5, True)),   # token ids: one prompt
    ("/generate", {"text": "t"}, (128, False)),
    ("/generate", {"text": ["a", "b"], "sampling_params": {"max_new_tokens": 7, "n": 2}}, (28, True)),
    ("/generate", {"input_ids": [[1], [2], [3]], "sampling_params": {"max_new_tokens": 4}}, (12, True)),
    ("/v1/messages", {"model": "m", "max_tokens": 64, "messages": []}, (64, True)),
    ("/v1/embeddings", {"model": "m", "input": "x"}, (0, False)),
])
def test_output_ceiling_per_api(path, body, expect):
    ctx = _ctx(path, body)
    ctx.body = body
    assert output_ceiling(ctx) == expect


@pytest.mark.parametrize("path, body, expect", [
    ("/v1/chat/completions", _chat("abcde"), 2),                # ceil(5 / 4)
    ("/v1/chat/completions", _chat(""), 0),
    ("/v1/completions", {"prompt": "a" * 8}, 2),
    ("/generate", {"input_ids": [1, 2, 3]}, 3),
    ("/generate", {"input_ids": [[1, 2], [3, 4, 5]]}, 5),
    ("/generate", {"text": "abcd", "input_ids": [1, 2, 3, 4, 5]}, 1),
    ("/v1/messages", {"system": "abc", "messages": [{"role": "user", "content": "defg"}]}, 2),
])
def test_estimate_tokens(path, body, expect):
    ctx = _ctx(path, body)
    ctx.body = body
    assert estimate_tokens(ctx) == expect


_TEXTS = st.one_of(st.text(max_size=12), st.none(), st.integers(),
                   st.lists(st.one_of(st.text(max_size=6), st.fixed_dictionaries({"text": st.text(max_size=6)}),
                                      st.fixed_dictionaries({"type": st.just("image")}), st.integers()),
                            max_size=4))


_LIMITS = st.one_of(st.none(), st.integers(-2, 5000), st.booleans(), st.text(max_size=2))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.fixed_dictionaries({"role": st.just("user"), "content": _TEXTS}), st.integers()),
                max_size=5),
       st.one_of(st.none(), _TEXTS), _LIMITS, _LIMITS, _LIMITS)
def test_the_chat_estimate_counts_the_routing_text_without_building_it(messages, system, mt, mct, n):
    from smg.admission.tenant_limits import _chat_size
    from smg.routing.text import chat_text

    body = {"model": "m", "messages": messages}
    for k, v in (("system", system), ("max_tokens", mt), ("max_completion_tokens", mct), ("n", n)):
        if v is not None:
            body[k] = v
    for path in ("/v1/chat/completions", "/v1/messages"):
        ctx = _ctx(path, body, raw=b"{}")
        ctx.body = body
        assert estimate_tokens(ctx) == (len(chat_text(body)) + 3) // 4
        assert ctx._text is None                                   # nothing built for routing to find stale
    ctx = _ctx("/v1/chat/completions", body, raw=b"{}")
    ctx.body = body
    out, explicit = output_ceiling(ctx)
    # the filter's one-call sizing of a chat agrees with the two public functions
    assert _chat_size(body) == (estimate_tokens(ctx), out, out if explicit else None)


def test_build_requires_a_file_and_warns_about_an_unused_one(tmp_path, caplog):
    with pytest.raises(ConfigError) as e:
        build(build_config({"tenant_rate_limit_enabled": True}), _Clock(), parse_body, Reply)
    assert e.value.key == "--tenant-rate-limit-config"
    with caplog.at_level(logging.WARNING, "smg.tenant_limits"):
        assert build(build_config({"tenant_rate_limit_config": "x.yaml"}), _Clock(), parse_body, Reply) is None
    assert "not used without --tenant-rate-limit-enabled" in caplog.text
    f = tmp_path / "l.yaml"
    f.write_text(GOOD)
    flt = build(build_config({"tenant_rate_limit_enabled": True, "tenant_rate_limit_config": str(f),
                              "tenant_rate_limit_max_tenants": 7}), _Clock(), parse_body, Reply)
    assert flt.limits.max_tenants == 7 and flt.limits.policies.policy_for("auth:team-red").tpm == 5000


# -- tenant resolution ------------------------------------------------------------------


class _Principal:
    def __init__(self, tenant_id):
        self.tenant_id = tenant_id


def _resolve(resolver, principal=None, headers=(), peer="10.1.2.3"):
    ctx = _ctx(body={})
    ctx.headers = list(headers)
    ctx.principal = principal
    v = resolver(_Conn(peer), ctx)
    return v if v is not None else ctx.tenant


def test_resolution_order_principal_header_ip_anonymous():
    trusted = TenantResolver(True, "X-SMG-Tenant-Id", Reply)
    hdr = [(b"x-smg-tenant-id", b" team-red ")]
    assert _resolve(trusted, _Principal("blue"), hdr) == "auth:blue"
    assert _resolve(trusted, _Principal(None), hdr) == "header:team-red"   # a key without a tenant
    assert _resolve(trusted, None, hdr) == "header:team-red"
    assert _resolve(trusted, None, [(b"x-smg-tenant-id", b"  ")]) == "ip:10.1.2.3"   # blank: absent
    assert _resolve(trusted, None, [(b"x-other", b"team")]) == "ip:10.1.2.3"
    assert _resolve(trusted, None, (), peer="::1") == "ip:::1"
    assert _resolve(trusted, None, (), peer=None) == "anonymous"


def test_an_untrusted_header_is_never_read():
    untrusted = TenantResolver(False, "x-smg-tenant-id", Reply)
    assert _resolve(untrusted, None, [(b"x-smg-tenant-id", b"team-red")]) == "ip:10.1.2.3"
    assert _resolve(untrusted, None, [(b"x-smg-tenant-id", b"\xff" * 999)]) == "ip:10.1.2.3"


def test_a_custom_header_name():
    r = TenantResolver(True, "X-Team", Reply)
    assert _resolve(r, None, [(b"x-smg-tenant-id", b"a"), (b"x-team", b"b")]) == "header:b"


@pytest.mark.parametrize("value", [b"x" * (MAX_TENANT_ID_BYTES + 1), b"caf\xc3\xa9", b"a b"])
def test_a_trusted_header_that_is_no_tenant_id_is_a_400(value):
    v = _resolve(TenantResolver(True, "x-smg-tenant-id", Reply), None, [(b"x-smg-tenant-id", value)])
    assert type(v) is Reply and v.status == 400 and "x-smg-tenant-id" in v.message


@pytest.mark.parametrize("name", ["", "bad header", "x:y"])
def test_a_bad_header_name_is_a_config_error(name):
    with pytest.raises(ConfigError) as e:
        TenantResolver(True, name, Reply)
    assert e.value.key == "--tenant-header-name"


def test_the_resolver_is_needed_only_when_something_reads_the_tenant():
    assert not needs_tenant(build_config({}))
    assert not needs_tenant(build_config({"trust_tenant_header": True}))
    assert needs_tenant(build_config({"tenant_rate_limit_enabled": True}))
    assert needs_tenant(build_config({"priority_scheduler_enabled": True}))


def test_a_principal_of_the_auth_layer_resolves_to_its_tenant_key():
    from smg.auth.principal import VIA_API_KEY, VIA_TENANT_KEY, Principal

    r = TenantResolver(True, "x-smg-tenant-id", Reply)
    hdr = [(b"x-smg-tenant-id", b"team-red")]
    assert _resolve(r, Principal("k1", None, "user", VIA_TENANT_KEY, tenant_id="blue"), hdr) == "auth:blue"
    assert _resolve(r, Principal("k2", None, "user", VIA_API_KEY, tenant_id="ab12"), hdr) == "auth:ab12"
    assert _resolve(r, Principal("admin", None, "admin", "jwt"), hdr) == "header:team-red"


def test_the_resolver_from_config_reports_unused_tenant_settings(caplog):
    with caplog.at_level(logging.WARNING, "smg.tenants"):
        assert TenantResolver.from_config(build_config({}), Reply) is None
        assert caplog.text == ""
        assert TenantResolver.from_config(build_config({"trust_tenant_header": True}), Reply) is None
        assert "--trust-tenant-header has no effect" in caplog.text
        caplog.clear()
        r = TenantResolver.from_config(build_config({"tenant_rate_limit_enabled": True,
                                                     "tenant_header_name": "x-team"}), Reply)
        assert r is not None and not r.trust and "x-team is not read without --trust-tenant-header" in caplog.text
    with pytest.raises(ConfigError):
        TenantResolver.from_config(build_config({"tenant_header_name": "no good"}), Reply)
