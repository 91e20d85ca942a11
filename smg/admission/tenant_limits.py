"""Tenant rate limits: requests per minute and tokens per minute, per tenant and per
model rule, reserved when a request is admitted and settled when it ends (SMG's
``--tenant-rate-limit-enabled --tenant-rate-limit-config <yaml>``).

The YAML file (SMG's shape, every key checked)::

    default_policy:                  # every tenant not listed below
      tokens_per_minute: 100000
      requests_per_minute: 600
      model_rules: []                # optional
    tenants:                         # optional
      - tenant_key: "auth:team-red"  # auth:<id> | header:<value> | ip:<address> | anonymous
        tokens_per_minute: 500000
        requests_per_minute: 3000
        model_rules:
          - rule_id: big-models      # [A-Za-z0-9._-]+, unique in its policy
            matcher: {type: prefix, value: "llama-70b"}   # exact | prefix
            tokens_per_minute: 50000
            requests_per_minute: 100

Rules:
- Validation is SMG's, at start-up: unknown keys, a limit that is not a whole number
  from 1 to ``MAX_PER_MINUTE``, a ``tenant_key`` on the default policy or missing on a
  tenant, a key not in canonical form, a duplicate tenant, rule id or matcher, an empty
  matcher value are refused with a ``ConfigError`` naming the file and the key path
  (``tenants[1].model_rules[0].matcher.type``). ``header:`` tenants need
  ``--trust-tenant-header`` (they could never be resolved otherwise).
- Scopes: a tenant's global limits, and at most one model rule of its policy (an exact
  matcher beats a prefix, the longest prefix wins, rules never stack) with its own
  buckets. Every tenant has its own buckets, the default policy's included.
- Reserve, once per request before it is dispatched (retries reuse it): one request
  and the request's tokens on every scope that applies — all of them admit, or nothing
  is taken. The tokens are the prompt estimate (SMG's: the prompt's characters / 4,
  rounded up; ``/generate`` ``input_ids``: one token each) plus, on a generative
  endpoint, the most output the request allows (``output_ceiling``): chat
  ``max_completion_tokens``, else ``max_tokens``; completions ``max_tokens``; messages
  ``max_tokens``; ``/generate`` ``sampling_params.max_new_tokens``; times the number of
  choices (``n``, completions' ``best_of``, a ``/generate`` batch). A request that names
  none is reserved its API's own default: 16 for completions (OpenAI's), 128 for
  ``/generate`` (SGLang's), and ``DEFAULT_OUTPUT_TOKENS`` (1024) for chat and
  messages, whose engines default to "up to the context length" — a ceiling no
  reservation can hold. The reservation is capped at the smallest tokens-per-minute of
  its scopes (when the prompt alone fits): a request asking for more output than a
  minute holds waits for a full bucket instead of never being served, and what it
  really used is charged when it ends.
- Settle, once when the request ends (an end hook), in this order:
  1. never served — no worker was selected for it (the gateway's admission refused it:
     429 ``admission_queue_full``/``scheduler_queue_full``, 408 ``queue_timeout``, the
     client left while it queued, no worker for its model) or the scheduler preempted
     it before its first byte (503 ``scheduler_preempted``): the request and its tokens
     are given back in full;
  2. the answer's usage (input + output tokens, a JSON body or the stream's last
     event): the difference with the reservation is refunded or charged;
  3. a streamed answer without usage (``stream_options.include_usage`` unset, an
     Anthropic stream, a client gone mid-stream): the prompt estimate plus one output
     token per data event the gateway relayed (``[DONE]`` excluded; engines send one
     decode step per event), at most the request's own explicit ceiling;
  4. nothing known (a worker error, a client gone before the answer, an answer too
     large to keep, a stream no longer observed): the reservation stands, as SMG's
     ``close_reserved_only``/``abandon`` keep it.
  A charge beyond what the bucket holds is debt: the scope admits nothing until refill
  has paid it (the bucket's capacity is raised by the debt meanwhile, so the arithmetic
  is that of SMG's signed level, which can go below zero but never above capacity).
- Denied: 429 ``tenant_rate_limit_exceeded`` with ``Retry-After``, the whole seconds
  (at least 1) until every denying scope has room; omitted when the request can never
  fit (its tokens exceed a scope's tokens per minute).
- Bounded: at most ``max_tenants`` tenants are tracked (``--tenant-rate-limit-max-
  tenants``); a new one evicts the least recently seen, whose buckets start full when
  it comes back. The bucket tables are allocated once (one slot per tracked scope), so
  client-chosen tenant keys (headers, addresses) cannot grow memory.
- Memory, when on: two bucket tables of ``slots`` entries (40 bytes each, native),
  allocated at start-up, and per tracked tenant its record and key (well under 1 KiB:
  a header id is at most 256 bytes). Off, nothing is built and no stage is in a chain.
- Sans-I/O: ``TenantLimits`` takes the time as an argument; the filter reads the
  injected clock and the request context.
"""
from __future__ import annotations

import ipaddress
import logging
import math
import re
from collections import OrderedDict

import yaml

from smg.admission.tenants import ANONYMOUS, AUTH, HEADER, IP, KEY_FORMS, MAX_TENANT_ID_BYTES
from smg.admission.token_bucket import MAX_CAPACITY, MAX_REFILL_PER_SEC, TokenBuckets
from smg.errors import ConfigError
from smg.routing.text import chat_text
from smg.streaming.sse import usage_counts

log = logging.getLogger("smg.tenant_limits")

FLAG = "--tenant-rate-limit-config"
ERROR_CODE = "tenant_rate_limit_exceeded"          # SMG's rejection code
ERROR_MESSAGE = "Tenant rate limit exceeded for this request"  # SMG's message

# The token buckets refill at most MAX_REFILL_PER_SEC tokens/s; a per-minute limit is
# refilled at limit/60 per second, so 60 times that is the largest limit they can hold
# (540 M per minute, far above any deployment; SMG's u32 field would allow 4.29 G).
MAX_PER_MINUTE = int(MAX_REFILL_PER_SEC * 60)
# Debt of one scope is capped so that capacity + debt stays within the buckets' limit
# (usage counts come from workers and can be up to 18 digits long).
_MAX_DEBT = MAX_CAPACITY / 2
_EPSILON = 1e-6  # one micro-token, the buckets' resolution

_RULE_ID = re.compile(r"[A-Za-z0-9._-]+\Z")
_POLICY_KEYS = ("tokens_per_minute", "requests_per_minute", "model_rules")
_RULE_KEYS = ("rule_id", "matcher", "tokens_per_minute", "requests_per_minute")
MATCHER_TYPES = ("exact", "prefix")


# -- the policy set (parsed and validated once) -----------------------------------------


class Rule:
    """A model rule: its own limits for models its matcher takes."""

    __slots__ = ("rule_id", "index", "rpm", "tpm")

    def __init__(self, rule_id: str, index: int, rpm: int, tpm: int) -> None:
        self.rule_id = rule_id
        self.index = index   # position in its policy (0..), the tenant's slot for it
        self.rpm = rpm
        self.tpm = tpm

    def __repr__(self) -> str:
        return f"Rule({self.rule_id!r}, rpm={self.rpm}, tpm={self.tpm})"


class Policy:
    """A tenant's (or the default) limits and model rules."""

    __slots__ = ("label", "rpm", "tpm", "rules", "exact", "prefixes")

    def __init__(self, label: str, rpm: int, tpm: int, rules: list, exact: dict, prefixes: list) -> None:
        self.label = label
        self.rpm = rpm
        self.tpm = tpm
        self.rules = rules          # [Rule], in file order
        self.exact = exact          # model -> Rule
        self.prefixes = prefixes    # [(prefix, Rule)], longest first

    def match(self, model: str | None) -> Rule | None:
        """The one rule for ``model``: exact beats prefix, the longest prefix wins."""
        if model is None or not self.rules:
            return None
        r = self.exact.get(model)
        if r is not None:
            return r
        for prefix, rule in self.prefixes:
            if model.startswith(prefix):
                return rule
        return None


class PolicySet:
    __slots__ = ("default", "tenants", "max_rules")

    def __init__(self, default: Policy, tenants: dict) -> None:
        self.default = default
        self.tenants = tenants      # canonical tenant key -> Policy
        self.max_rules = max([len(default.rules)] + [len(p.rules) for p in tenants.values()])

    def policy_for(self, tenant: str) -> Policy:
        return self.tenants.get(tenant, self.default)


class _Invalid(Exception):
    def __init__(self, where: str, msg: str) -> None:
        super().__init__(f"{where}: {msg}" if where else msg)


def _mapping(value, where: str, keys: tuple) -> dict:
    if not isinstance(value, dict):
        raise _Invalid(where, f"expected a mapping, got {value!r}")
    for k in value:
        if k not in keys:
            raise _Invalid(f"{where}.{k}" if where else str(k),
                           f"unknown key (expected one of {', '.join(keys)})")
    return value


def _limit(spec: dict, name: str, where: str) -> int:
    if name not in spec:
        raise _Invalid(f"{where}.{name}", "missing")
    v = spec[name]
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_PER_MINUTE:
        raise _Invalid(f"{where}.{name}", f"must be a whole number from 1 to {MAX_PER_MINUTE}, got {v!r}")
    return v


def canonical_key(key, trust_header: bool) -> str:
    """``key`` in the form tenant resolution produces (``ip:`` addresses normalized).

    Raises:
        ValueError: not one of the canonical forms, or a ``header:`` key without a
            trusted header.
    """
    if not isinstance(key, str):
        raise ValueError(f"must be a string, got {key!r}")
    if key == ANONYMOUS:
        return key
    if key.startswith(AUTH) and len(key) > len(AUTH):
        return key
    if key.startswith(HEADER):
        v = key[len(HEADER):]
        if not 1 <= len(v) <= MAX_TENANT_ID_BYTES or not all(0x21 <= ord(c) <= 0x7E for c in v):
            raise ValueError(f"{key!r}: a header tenant is 1 to {MAX_TENANT_ID_BYTES} visible ASCII characters")
        if not trust_header:
            raise ValueError(f"{key!r} needs --trust-tenant-header (header tenants are never resolved without it)")
        return key
    if key.startswith(IP):
        try:
            return IP + str(ipaddress.ip_address(key[len(IP):]))
        except ValueError:
            raise ValueError(f"{key!r}: {key[len(IP):]!r} is not an IP address") from None
    raise ValueError(f"{key!r} is not a tenant key ({', '.join(KEY_FORMS)})")


def _policy(spec, where: str, label: str) -> Policy:
    rpm = _limit(spec, "requests_per_minute", where)
    tpm = _limit(spec, "tokens_per_minute", where)
    raw_rules = spec.get("model_rules")
    if raw_rules is None:
        raw_rules = []
    if not isinstance(raw_rules, list):
        raise _Invalid(f"{where}.model_rules", f"expected a list, got {raw_rules!r}")
    rules: list = []
    exact: dict = {}
    prefixes: dict = {}
    ids = set()
    for i, r in enumerate(raw_rules):
        rw = f"{where}.model_rules[{i}]"
        _mapping(r, rw, _RULE_KEYS)
        rid = r.get("rule_id")
        if not isinstance(rid, str) or not _RULE_ID.match(rid):
            raise _Invalid(f"{rw}.rule_id", f"must match [A-Za-z0-9._-]+, got {rid!r}")
        if rid in ids:
            raise _Invalid(f"{rw}.rule_id", f"duplicate rule_id {rid!r}")
        ids.add(rid)
        if "matcher" not in r:
            raise _Invalid(f"{rw}.matcher", "missing")
        m = _mapping(r["matcher"], f"{rw}.matcher", ("type", "value"))
        kind = m.get("type")
        if kind not in MATCHER_TYPES:
            raise _Invalid(f"{rw}.matcher.type", f"must be exact or prefix, got {kind!r}")
        value = m.get("value")
        if not isinstance(value, str) or not value:
            raise _Invalid(f"{rw}.matcher.value", f"must be a non-empty string, got {value!r}")
        rule = Rule(rid, len(rules), _limit(r, "requests_per_minute", rw), _limit(r, "tokens_per_minute", rw))
        table = exact if kind == "exact" else prefixes
        other = table.get(value)
        if other is not None:
            raise _Invalid(f"{rw}.matcher", f"{kind} {value!r} duplicates rule {other.rule_id!r}")
        table[value] = rule
        rules.append(rule)
    ordered = sorted(prefixes.items(), key=lambda kv: -len(kv[0]))
    return Policy(label, rpm, tpm, rules, exact, ordered)


def parse_policies(data, trust_header: bool) -> PolicySet:
    """The policy set of a parsed YAML document.

    Raises:
        ValueError: naming the key path of the first problem.
    """
    try:
        if data is None:
            raise _Invalid("", "the file is empty (default_policy is required)")
        _mapping(data, "", ("default_policy", "tenants"))
        if "default_policy" not in data:
            raise _Invalid("default_policy", "missing")
        dspec = _mapping(data["default_policy"], "default_policy", _POLICY_KEYS + ("tenant_key",))
        if "tenant_key" in dspec:
            raise _Invalid("default_policy.tenant_key", "the default policy applies to every tenant not listed; "
                                                         "it has no tenant_key")
        default = _policy(dspec, "default_policy", "default")
        tenants: dict = {}
        raw = data.get("tenants")
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            raise _Invalid("tenants", f"expected a list, got {raw!r}")
        for i, spec in enumerate(raw):
            where = f"tenants[{i}]"
            _mapping(spec, where, ("tenant_key",) + _POLICY_KEYS)
            if "tenant_key" not in spec:
                raise _Invalid(f"{where}.tenant_key", "missing")
            try:
                key = canonical_key(spec["tenant_key"], trust_header)
            except ValueError as e:
                raise _Invalid(f"{where}.tenant_key", str(e)) from None
            if key in tenants:
                raise _Invalid(f"{where}.tenant_key", f"duplicate tenant_key {key!r}")
            tenants[key] = _policy(spec, where, key)
    except _Invalid as e:
        raise ValueError(str(e)) from None
    return PolicySet(default, tenants)


def load_policies(path: str, trust_header: bool) -> PolicySet:
    """Reads and validates the tenant rate-limit file.

    Raises:
        ConfigError: (``--tenant-rate-limit-config``) unreadable, not YAML, or invalid,
            naming the file and the key path.
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(FLAG, f"cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(FLAG, f"{path} is not valid YAML: {e}") from None
    try:
        return parse_policies(data, trust_header)
    except ValueError as e:
        raise ConfigError(FLAG, f"{path}: {e}") from None


# -- the reserve/settle engine ----------------------------------------------------------


class _Tenant:
    __slots__ = ("key", "policy", "slot", "only", "rules", "alive")

    def __init__(self, key: str, policy: Policy, slot: int) -> None:
        self.key = key
        self.policy = policy
        self.slot = slot            # the tenant-global scope's slot
        self.only = (slot,)         # the scopes of a request no rule matches (made once)
        self.rules: dict | None = None  # rule index -> slot, made when a rule first applies
        self.alive = True           # False once evicted: its slots belong to others


class Reservation:
    """What one admitted request holds; called as its end hook (``ctx.add_end_hook``)."""

    __slots__ = ("tenant", "slots", "tokens", "prompt", "ceiling", "owner")

    def __init__(self, tenant: _Tenant, slots: tuple, tokens: int, prompt: int = -1,
                 ceiling: int | None = None) -> None:
        self.tenant = tenant
        self.slots = slots          # scopes charged: (global,) or (global, rule)
        self.tokens = tokens        # tokens reserved on each (prompt estimate + output, capped)
        self.prompt = tokens if prompt < 0 else prompt  # of which the prompt estimate
        self.ceiling = ceiling      # the request's own output limit (None: it named none)
        self.owner = None           # the filter that settles it

    def __call__(self, ctx) -> None:
        owner = self.owner
        if owner is not None:
            self.owner = None
            owner.ended(self, ctx)

    def __repr__(self) -> str:
        return f"Reservation({self.tenant.key!r}, slots={self.slots}, tokens={self.tokens})"


class Denied:
    """A refused reservation: ``retry_after`` whole seconds (0: the request never fits)."""

    __slots__ = ("retry_after",)

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"Denied(retry_after={self.retry_after})"


class TenantLimits:
    """Per-tenant buckets (requests and tokens per minute) in fixed tables.

    ``reserve(tenant, model, tokens, now)`` returns a ``Reservation`` or a ``Denied``;
    ``settle(reservation, used_tokens, now)`` trues the tokens up from the answer's
    usage. ``now``: seconds of a monotonic clock.
    """

    __slots__ = ("policies", "max_tenants", "tenants", "free", "requests", "tokens", "debt", "tcap", "rate",
                 "evictions")

    def __init__(self, policies: PolicySet, max_tenants: int, buckets=TokenBuckets) -> None:
        if max_tenants < 1:
            raise ValueError(f"max_tenants must be >= 1, got {max_tenants!r}")
        self.policies = policies
        self.max_tenants = max_tenants
        # one slot per tracked scope: each tenant's global one, and room for one model
        # rule scope per tenant on average when any policy has rules (a tenant using
        # more of them evicts others sooner); never fewer than one tenant's worst case
        per = 2 if policies.max_rules else 1
        n = max(max_tenants * per, 1 + policies.max_rules)
        self.requests = buckets(n, 0.0, 0.0)
        self.tokens = buckets(n, 0.0, 0.0)
        self.debt = [0.0] * n        # tokens owed beyond an empty bucket, per slot
        self.tcap = [0.0] * n        # a slot's tokens per minute (its bucket holds tcap + debt)
        self.rate = [0.0] * n        # its refill, tokens per second
        self.free = list(range(n - 1, -1, -1))
        self.tenants: OrderedDict = OrderedDict()  # key -> _Tenant, least recently seen first
        self.evictions = 0

    # -- tracking --------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.tenants)

    @property
    def slots(self) -> int:
        return len(self.debt)

    def _evict_one(self, keep: _Tenant | None) -> bool:
        tenants = self.tenants
        if not tenants:
            return False
        key, t = next(iter(tenants.items()))
        if t is keep:
            return False
        del tenants[key]
        t.alive = False
        self.free.append(t.slot)
        if t.rules:
            self.free.extend(t.rules.values())
        self.evictions += 1
        return True

    def _slot(self, rpm: int, tpm: int, keep: _Tenant | None) -> int:
        free = self.free
        while not free:
            if not self._evict_one(keep):
                raise RuntimeError("tenant limits: no slot free (a bug: the pool holds one tenant's scopes)")
        s = free.pop()
        self.requests.configure(s, rpm, rpm / 60.0)
        self.requests.reset(s)
        self.tokens.configure(s, tpm, tpm / 60.0)
        self.tokens.reset(s)
        self.debt[s] = 0.0
        self.tcap[s] = float(tpm)
        self.rate[s] = tpm / 60.0
        return s

    def _track(self, key: str) -> _Tenant:
        if len(self.tenants) >= self.max_tenants:
            self._evict_one(None)
        policy = self.policies.policy_for(key)
        t = _Tenant(key, policy, self._slot(policy.rpm, policy.tpm, None))
        self.tenants[key] = t
        return t

    def _rule_slot(self, t: _Tenant, rule: Rule) -> int:
        rules = t.rules
        if rules is None:
            rules = t.rules = {}
        s = rules.get(rule.index)
        if s is None:
            s = rules[rule.index] = self._slot(rule.rpm, rule.tpm, t)
        return s

    # -- debt --------------------------------------------------------------------------

    def _set_debt(self, s: int, d: float) -> None:
        if d < _EPSILON:
            d = 0.0
        elif d > _MAX_DEBT:
            d = _MAX_DEBT
        self.debt[s] = d
        self.tokens.configure(s, self.tcap[s] + d, self.rate[s])

    def _pay(self, s: int, now: float) -> bool:
        """Pays a slot's debt from what has refilled; True when none is left."""
        d = self.debt[s]
        tokens = self.tokens
        avail = tokens.available(s, now)
        if avail > 0.0:
            take = avail if avail < d else d
            if tokens.try_acquire(s, now, take):
                d -= take
                self._set_debt(s, d)
        return self.debt[s] == 0.0

    # -- reserve -----------------------------------------------------------------------

    def _acquire(self, s: int, n: int, now: float) -> bool:
        if self.debt[s] and not self._pay(s, now):
            return False
        return self.requests.try_acquire_pair(self.tokens, s, now, 1.0, n)

    def _undo(self, s: int, n: int) -> None:
        self.requests.release(s, 1.0)
        self.tokens.release(s, n)

    def _wait(self, s: int, n: int, now: float) -> float:
        """Seconds until slot ``s`` admits a request of ``n`` tokens (inf: never)."""
        w = self.requests.wait_time(s, now, 1.0)
        # in debt the bucket holds up to tcap + debt, so this is finite iff n <= tcap
        tw = self.tokens.wait_time(s, now, n + self.debt[s])
        return w if w > tw else tw

    def reserve(self, tenant: str, model: str | None, tokens: int, now: float, out: int = 0,
                ceiling: int | None = None):
        """Takes one request and ``tokens`` + ``out`` (the prompt estimate and the output
        allowed) on every scope of ``tenant`` (and of the rule ``model`` matches), or
        nothing. When the prompt fits a scope's minute but the sum does not, the sum is
        capped at the smallest minute of the scopes. ``ceiling``: the request's own
        output limit, kept for settlement (None: it named none).

        Returns:
            a ``Reservation``, or a ``Denied`` with the Retry-After seconds.
        """
        t = self.tenants.get(tenant)
        if t is None:
            t = self._track(tenant)
        else:
            self.tenants.move_to_end(tenant)
        g = t.slot
        policy = t.policy
        rule = policy.match(model) if policy.rules else None
        n = tokens + out
        if rule is None:
            if out:
                cap = self.tcap[g]
                if n > cap >= tokens:
                    n = int(cap)
            if not self.debt[g]:   # _acquire inline (the hot path): one native decision
                if self.requests.try_acquire_pair(self.tokens, g, now, 1.0, n):
                    return Reservation(t, t.only, n, tokens, ceiling)
            elif self._acquire(g, n, now):
                return Reservation(t, t.only, n, tokens, ceiling)
            return Denied(_seconds(self._wait(g, n, now)))
        r = self._rule_slot(t, rule)
        if out:
            cap = self.tcap[g] if self.tcap[g] < self.tcap[r] else self.tcap[r]
            if n > cap >= tokens:
                n = int(cap)
        if self._acquire(g, n, now):
            if self._acquire(r, n, now):
                return Reservation(t, (g, r), n, tokens, ceiling)
            self._undo(g, n)
        wg = self._wait(g, n, now)
        wr = self._wait(r, n, now)
        return Denied(_seconds(wg if wg > wr else wr))

    def refund(self, res: Reservation, now: float) -> None:
        """Gives back all a reservation took (its request and its tokens): the request
        was never served. A tenant evicted meanwhile is not touched."""
        if not res.tenant.alive:
            return
        for s in res.slots:
            self.requests.release(s, 1.0)
        self.settle(res, 0, now)

    # -- settle ------------------------------------------------------------------------

    def settle(self, res: Reservation, used: int, now: float) -> None:
        """The request used ``used`` tokens in all (input + output): refund what was
        reserved beyond that, or charge the rest (as debt beyond an empty bucket). A
        tenant evicted meanwhile is not touched (its slots are someone else's)."""
        t = res.tenant
        if not t.alive:
            return
        delta = used - res.tokens
        if not delta:
            return
        tokens = self.tokens
        slots = res.slots
        if delta < 0 and len(slots) == 1 and not self.debt[slots[0]]:
            tokens.release(slots[0], -delta)   # the common case: a refund, no debt
            return
        for s in slots:
            if self.debt[s]:
                self._pay(s, now)
            if delta > 0:
                extra = float(delta)
                if not self.debt[s]:
                    avail = tokens.available(s, now)
                    take = avail if avail < extra else extra
                    if take > 0.0 and tokens.try_acquire(s, now, take):
                        extra -= take
                if extra >= _EPSILON:
                    self._set_debt(s, self.debt[s] + extra)
            else:
                back = float(-delta)
                d = self.debt[s]
                if d:
                    p = d if d < back else back
                    back -= p
                    self._set_debt(s, d - p)
                if back >= _EPSILON:
                    tokens.release(s, back)

    # -- introspection (tests, debugging) ------------------------------------------

    def available(self, tenant: str, now: float, rule_id: str | None = None) -> tuple | None:
        """(requests, tokens) a tracked tenant's scope has now (tokens negative while in
        debt), or None when the tenant (or that rule's scope) is not tracked."""
        t = self.tenants.get(tenant)
        if t is None:
            return None
        s = t.slot
        if rule_id is not None:
            idx = next((r.index for r in t.policy.rules if r.rule_id == rule_id), None)
            s = (t.rules or {}).get(idx)
            if s is None:
                return None
        if self.debt[s]:
            self._pay(s, now)
        return self.requests.available(s, now), self.tokens.available(s, now) - self.debt[s]


def _seconds(wait: float) -> int:
    """Retry-After for a wait: whole seconds, at least 1; 0 (omitted) when never."""
    if wait == math.inf or wait != wait:
        return 0
    return max(1, math.ceil(wait))


# -- the request-path filter ------------------------------------------------------------


def estimate_tokens(ctx) -> int:
    """Input tokens reserved for a request: ``/generate`` ``input_ids`` count one each,
    otherwise the routing text's characters / 4, rounded up (a chat's is counted
    without being built: the texts' lengths and the spaces that would join them)."""
    body = ctx.body
    if ctx.endpoint.text is chat_text and ctx._text is None:
        return (_chat_chars(body) + 3) // 4
    if "text" not in body:
        ids = body.get("input_ids")
        if type(ids) is list:
            if ids and type(ids[0]) is list:
                return sum(len(x) for x in ids if type(x) is list)
            return len(ids)
    return (len(ctx.routing_text()) + 3) // 4


def _content_chars(content) -> int:
    if type(content) is str:
        return len(content)
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        n = k = 0
        for p in content:
            if isinstance(p, str):
                n += len(p)
                k += 1
            elif isinstance(p, dict):
                t = p.get("text")
                if isinstance(t, str):
                    n += len(t)
                    k += 1
        return n + k - 1 if k else 0
    return 0


def _chat_chars(body: dict) -> int:
    """``len(smg.routing.text.chat_text(body))`` without making the string."""
    msgs = body.get("messages")
    if type(msgs) is not list:
        return 0
    n = k = 0
    system = body.get("system")
    if system is not None:
        n = _content_chars(system)
        k = 1
    for m in msgs:
        if type(m) is dict:
            c = m.get("content")
            t = len(c) if type(c) is str else _content_chars(c)
            if t:
                n += t
                k += 1
    return n + k - 1 if k else 0


# Output tokens reserved for a chat or messages request that names no limit: its engine
# would generate up to the context length, which no reservation can hold. 1024 covers
# most chat answers; a longer one is charged in full when it ends (usage, or the
# stream's events), as debt when the bucket is short.
DEFAULT_OUTPUT_TOKENS = 1024
COMPLETIONS_DEFAULT_MAX_TOKENS = 16      # OpenAI's (and vLLM's, SGLang's) for /v1/completions
GENERATE_DEFAULT_MAX_NEW_TOKENS = 128    # SGLang's sampling_params default


def _count(v) -> int | None:
    """A whole number >= 0 given for a limit, else None (absent or not a count)."""
    return v if type(v) is int and v >= 0 else None


def _choices(v) -> int:
    return v if type(v) is int and v > 1 else 1


def output_ceiling(ctx) -> tuple:
    """``(tokens, explicit)``: the most output tokens the request allows, all choices
    included, and whether the request named its limit (False: its API's default)."""
    body = ctx.body
    label = ctx.endpoint.label
    if label == "chat":
        m = _count(body.get("max_completion_tokens"))
        if m is None:
            m = _count(body.get("max_tokens"))
        n = _choices(body.get("n"))
        if m is None:
            return DEFAULT_OUTPUT_TOKENS * n, False
        return m * n, True
    if label == "messages":
        m = _count(body.get("max_tokens"))
        return (DEFAULT_OUTPUT_TOKENS, False) if m is None else (m, True)
    if label == "completions":
        m = _count(body.get("max_tokens"))
        n = _choices(body.get("n"))
        b = _choices(body.get("best_of"))
        n = b if b > n else n
        prompt = body.get("prompt")
        if type(prompt) is list and prompt and type(prompt[0]) is not int:
            n *= len(prompt)         # a batch of prompts (a list of token ids is one prompt)
        return (COMPLETIONS_DEFAULT_MAX_TOKENS * n, False) if m is None else (m * n, True)
    if label == "generate":
        sp = body.get("sampling_params")
        m = n = None
        if type(sp) is dict:
            m = _count(sp.get("max_new_tokens"))
            n = sp.get("n")
        batch = _choices(n)
        text = body.get("text")
        if type(text) is list:
            batch *= max(len(text), 1)
        elif text is None:
            ids = body.get("input_ids")
            if type(ids) is list and ids and type(ids[0]) is list:
                batch *= len(ids)
        return (GENERATE_DEFAULT_MAX_NEW_TOKENS * batch, False) if m is None else (m * batch, True)
    return 0, False


def _chat_size(body: dict) -> tuple:
    """``(prompt estimate, output tokens, explicit ceiling or None)`` of a chat
    completion: ``estimate_tokens`` and ``output_ceiling`` for the chat endpoint, in one
    call (the hot path)."""
    msgs = body.get("messages")
    chars = 0
    if type(msgs) is list:
        k = 0
        system = body.get("system")
        if system is not None:
            chars = _content_chars(system)
            k = 1
        for m in msgs:
            if type(m) is dict:
                c = m.get("content")
                t = len(c) if type(c) is str else _content_chars(c)
                if t:
                    chars += t
                    k += 1
        if k:
            chars += k - 1
    m = body.get("max_completion_tokens")
    if type(m) is not int or m < 0:
        m = body.get("max_tokens")
    n = body.get("n")
    n = n if type(n) is int and n > 1 else 1
    if type(m) is int and m >= 0:
        return (chars + 3) // 4, m * n, m * n
    return (chars + 3) // 4, DEFAULT_OUTPUT_TOKENS * n, None


def _usage(ctx) -> tuple | None:
    sc = ctx.scanner
    if sc is not None:
        return sc.usage()
    parts = ctx.body_parts
    if parts:
        return usage_counts(parts[0] if len(parts) == 1 else b"".join(parts))
    return None


# Answers the gateway gave a request no worker served (settlement rule 1): admission's
# refusals reach the end hook with no worker selected; a preempted request had one.
PREEMPTED = "scheduler_preempted"


class TenantRateLimit:
    """The rate-limit filter (after tenant resolution, before admission and validation).

    ``parse(conn, ctx)`` is the validation filter (``smg.server.handlers.parse_body``):
    the model and the prompt are in the body, so it is parsed here once and validation
    reuses it. ``clock()``: seconds, monotonic (the gateway's coarse loop clock).
    ``reply(status, message, code, headers)``: the pipeline's error verdict
    (smg.server.filters.Reply; this layer does not import the server's).
    Counters, by settlement rule: ``refunded`` (1), ``settled`` (2), ``counted`` (3),
    ``unsettled`` (4).
    """

    __slots__ = ("limits", "clock", "parse", "reply", "never", "settled", "counted", "unsettled", "refunded")

    def __init__(self, limits: TenantLimits, clock, parse, reply) -> None:
        self.limits = limits
        self.clock = clock
        self.parse = parse
        self.reply = reply
        self.never = reply(429, ERROR_MESSAGE, ERROR_CODE, None)   # no Retry-After: it never fits
        self.settled = 0            # reservations trued up from usage
        self.counted = 0            # ... from the data events of a stream without usage
        self.unsettled = 0          # reservations kept as reserved (nothing known)
        self.refunded = 0           # reservations given back (never served)

    def __call__(self, conn, ctx):
        body = ctx.body
        if body is None:
            v = self.parse(conn, ctx)
            if v is not None:
                return v
            body = ctx.body
        model = body.get("model")
        if type(model) is not str:
            model = None
        ep = ctx.endpoint
        if ep.text is chat_text and ep.label == "chat" and ctx._text is None:
            # a chat completion (nearly every request), sized in one call
            prompt, out, ceiling = _chat_size(body)
            r = self.limits.reserve(ctx.tenant or ANONYMOUS, model, prompt, self.clock(), out, ceiling)
        elif ep.generative:
            out, explicit = output_ceiling(ctx)
            r = self.limits.reserve(ctx.tenant or ANONYMOUS, model, estimate_tokens(ctx), self.clock(), out,
                                    out if explicit else None)
        else:
            r = self.limits.reserve(ctx.tenant or ANONYMOUS, model, estimate_tokens(ctx), self.clock())
        if type(r) is Denied:
            secs = r.retry_after
            return self.reply(429, ERROR_MESSAGE, ERROR_CODE, [(b"retry-after", b"%d" % secs)]) if secs else self.never
        r.owner = self
        if ctx.on_end is None:   # ctx.add_end_hook inline: this is the first stage to hold one
            ctx.on_end = r
        else:
            ctx.add_end_hook(r)
        return None

    def ended(self, res: Reservation, ctx) -> None:
        """The request ended: refund, settle from its usage or its stream, or keep the
        reservation (the module's settlement rules, in order)."""
        if ctx.worker is None or ctx.error_code == PREEMPTED:
            self.refunded += 1
            self.limits.refund(res, self.clock())
            return
        sc = ctx.scanner
        try:
            if sc is not None:
                u = sc.usage()
            else:
                parts = ctx.body_parts
                u = usage_counts(parts[0] if len(parts) == 1 else b"".join(parts)) if parts else None
        except (TypeError, ValueError):
            u = None
        if u is not None:
            self.settled += 1
            self.limits.settle(res, u[0] + u[1], self.clock())
            return
        if sc is not None:
            out = sc.data_events - (1 if sc.done else 0)
            cap = res.ceiling
            if cap is not None and out > cap:
                out = cap
            self.counted += 1
            self.limits.settle(res, res.prompt + out, self.clock())
            return
        self.unsettled += 1


def build(config, clock, parse, reply) -> TenantRateLimit | None:
    """The filter for ``config``, or None when tenant rate limits are off.

    Raises:
        ConfigError: the limits are on without a file, or the file is invalid.
    """
    path = config.tenant_rate_limit_config
    if not config.tenant_rate_limit_enabled:
        if path:
            log.warning("%s %s is not used without --tenant-rate-limit-enabled", FLAG, path)
        return None
    if not path:
        raise ConfigError(FLAG, "required with --tenant-rate-limit-enabled")
    policies = load_policies(path, config.trust_tenant_header)
    return TenantRateLimit(TenantLimits(policies, config.tenant_rate_limit_max_tenants), clock, parse, reply)
