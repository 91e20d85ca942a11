"""smg/server/reload.py and what a reload applies in place: which settings may change at
run time, the refusal naming every other one, TLS not turned on or off, and cache_aware
re-reading its parameters with its tree kept."""
from __future__ import annotations

import pytest

from smg.config.load import build_config
from smg.routing.cache_aware import CacheAwarePolicy
from smg.routing.policies import PolicyRegistry
from smg.server.reload import BREAKER, KEYS, RETRY, RUNTIME, ReloadRefused, plan
from smg.workers.registry import WorkerRegistry
from smg.workers.worker import Worker
from tests.unit.test_policies import Req


def cfg(**kw):
    return build_config(kw)


def test_runtime_changes_are_listed_in_table_order():
    old = cfg(worker_urls=["http://a:1"])
    new = cfg(worker_urls=["http://a:1", "http://b:1"], cache_threshold=0.7, max_tree_size=1000)
    assert plan(old, new, tls_on=False) == ["worker_urls", "cache_threshold", "max_tree_size"]
    assert plan(old, old, tls_on=False) == []


def test_fixed_settings_refuse_the_whole_reload_by_flag():
    old = cfg()
    with pytest.raises(ReloadRefused, match=r"^--port cannot change at run time \(restart smg-proxy to change it\)"):
        plan(old, cfg(port=1, worker_urls=["http://b:1"]), tls_on=False)
    with pytest.raises(ReloadRefused, match=r"^--policy, --api-key cannot change .* change them\)"):
        plan(old, cfg(policy="random", api_key="k"), tls_on=False)


def test_tls_cannot_be_turned_on_or_off():
    old = cfg(tls_cert_path="/c.pem", tls_key_path="/k.pem")
    with pytest.raises(ReloadRefused, match="TLS cannot be turned off"):
        plan(old, cfg(), tls_on=True)
    with pytest.raises(ReloadRefused, match="TLS cannot be turned on"):
        plan(cfg(), old, tls_on=False)
    with pytest.raises(ReloadRefused, match="client-certificate checks cannot be turned on"):
        plan(old, cfg(tls_cert_path="/c.pem", tls_key_path="/k.pem", tls_client_ca_path="/ca.pem"), tls_on=True)
    assert plan(old, cfg(tls_cert_path="/c2.pem", tls_key_path="/k2.pem"), tls_on=True) == \
        ["tls_cert_path", "tls_key_path"]


def test_every_runtime_setting_has_a_reader_that_takes_it():
    assert set(CacheAwarePolicy.SETTINGS) <= RUNTIME
    assert RUNTIME - set(CacheAwarePolicy.SETTINGS) - set(RETRY) - set(BREAKER) - set(KEYS) == {
        "worker_urls", "tls_cert_path", "tls_key_path", "tls_client_ca_path", "health_check_interval_secs"}
    cfg_keys = {n for n in RUNTIME}
    assert cfg_keys <= set(cfg().values)  # every name is a setting


TEXT = "a conversation about the weather " * 4


def test_cache_aware_reconfigured_in_place_keeps_its_tree():
    reg = WorkerRegistry()
    policies = PolicyRegistry(reg, "cache_aware", cfg())
    for i in range(2):
        reg.add(Worker(f"http://w{i}:1", worker_id=f"w{i}"))
    p = policies.get(None)
    workers = reg.all()
    first = p.select(workers, Req(TEXT))
    first.processed += 5  # the other worker is now the idle choice for a prompt with no match
    assert p.select(workers, Req(TEXT)) is first
    nodes = p.tree.mem_size()
    policies.reconfigure(cfg(cache_threshold=0.9, balance_abs_threshold=3, max_tree_size=4096))
    assert policies.get(None) is p and p.cache_threshold == 0.9 and p.abs_threshold == 3
    assert p.max_tree_size == 4096 and p.tree.mem_size() == nodes
    assert p.select(workers, Req(TEXT)) is first  # the prefix is still where it was


def test_auth_rekeying_checks_first_then_rotates_in_place():
    from smg.auth import Auth
    from smg.errors import ConfigError
    from smg.server.filters import Reply

    auth = Auth(cfg(tenant_api_key=["acme:old-key"], control_plane_api_keys=["a:ops:admin:root-1"]), Reply)
    data, control = auth.data, auth.control
    assert data.keys.lookup(b"old-key") is not None
    apply = auth.rekeying(cfg(tenant_api_key=["acme:new-key", "beta:b-key"],
                              control_plane_api_keys=["a:ops:admin:root-2"]))
    assert data.keys.lookup(b"old-key") is not None  # nothing changes before apply()
    apply()
    assert auth.data is data and auth.control is control  # the filters in the chains, rekeyed
    assert data.keys.lookup(b"old-key") is None and data.keys.lookup(b"b-key").tenant_id == "beta"
    assert control.keys.lookup(b"root-2") is not None and control.keys.lookup(b"root-1") is None
    assert auth.tenant_keys == 2
    with pytest.raises(ConfigError, match="--tenant-api-key: data-plane keys cannot be turned on or off"):
        auth.rekeying(cfg(control_plane_api_keys=["a:ops:admin:root-2"]))
    with pytest.raises(ConfigError, match="--control-plane-api-keys"):
        auth.rekeying(cfg(tenant_api_key=["acme:new-key"]))
    with pytest.raises(ConfigError):
        auth.rekeying(cfg(tenant_api_key=["no-colon"], control_plane_api_keys=["a:ops:admin:root-2"]))
