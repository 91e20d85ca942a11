"""The worker-address guard (smg/workers/addresses.py): metadata and link-local
addresses refused in every spelling, the allow-list, the bounded lookup, and the
worker manager refusing such workers before any probe reaches them."""
from __future__ import annotations

import asyncio

import pytest

from smg.config.load import build_config
from smg.errors import ConfigError
from smg.workers import events as E
from smg.workers.addresses import AddressGuard
from smg.workers.manager import WorkerManager
from smg.workers.registry import WorkerRegistry
from smg.workers.spec import validate

REFUSED = [
    "http://169.254.169.254/", "http://169.254.169.254:80/latest/meta-data/", "http://169.254.170.2/v2/credentials",
    "http://169.254.0.23", "https://169.254.1.1:8443",
    # the same address in the spellings a resolver accepts
    "http://2852039166/", "http://0xa9fea9fe/", "http://0251.0376.0251.0376/", "http://169.254.43518/",
    "http://[::ffff:169.254.169.254]/", "http://[::ffff:a9fe:a9fe]/", "http://[::a9fe:a9fe]/",
    "http://[64:ff9b::a9fe:a9fe]/", "http://[2002:a9fe:a9fe::1]/",
    # IPv6 link-local and the metadata endpoints outside link-local
    "http://[fe80::1]:8000", "http://[fe80::1%25eth0]:8000", "http://[fd00:ec2::254]/",
    "http://100.100.100.200/", "http://168.63.129.16/",
    # the metadata names, as written
    "http://metadata.google.internal/", "http://METADATA.Google.Internal./", "http://metadata.goog",
    "http://metadata/computeMetadata/v1/", "http://instance-data/latest", "http://instance-data.ec2.internal",
]
ALLOWED = [
    "http://127.0.0.1:8000", "http://[::1]:8000", "http://10.0.0.5:8000", "http://192.168.1.7", "http://172.16.0.1",
    "http://100.64.0.1", "http://100.100.100.201", "http://[fd00::1]:8000", "http://[fd00:ec2::253]/",
    "http://169.255.0.1", "http://168.63.129.17", "http://1.2.3.4", "http://[::ffff:10.0.0.1]/",
]


@pytest.mark.parametrize("url", REFUSED)
def test_metadata_and_link_local_addresses_are_refused(url):
    reason = AddressGuard().refusal(url)
    assert reason is not None and reason.startswith(f"url: {url!r} is refused")
    assert "--worker-allowed-addresses" in reason


@pytest.mark.parametrize("url", ALLOWED)
def test_worker_networks_stay_allowed(url):
    g = AddressGuard()
    assert g.refusal(url) is None and not g.needs_lookup(url)


def test_names_need_a_lookup_and_nonsense_passes_to_spec_validation():
    g = AddressGuard()
    assert g.refusal("http://gpu1.internal:8000") is None and g.needs_lookup("http://gpu1.internal:8000")
    assert not g.needs_lookup("http://metadata.google.internal")  # judged as written
    for bad in ("not a url", "http://", "http://[::1", ""):
        assert g.refusal(bad) is None and not g.needs_lookup(bad)


def test_the_allow_list_admits_what_it_names():
    g = AddressGuard(["169.254.169.254", "fe80::/64", "metadata.google.internal."])
    assert g.refusal("http://169.254.169.254/") is None
    assert g.refusal("http://[::ffff:169.254.169.254]/") is None  # the same address, mapped
    assert g.refusal("http://2852039166/") is None
    assert g.refusal("http://169.254.169.253/") is not None       # a neighbour is not
    assert g.refusal("http://[fe80::1]/") is None and g.refusal("http://[fe80:0:0:1::1]/") is not None
    assert g.refusal("http://metadata.google.internal/") is None and g.refusal("http://metadata.goog/") is not None
    wide = AddressGuard(["169.254.0.0/16"])
    assert wide.refusal("http://169.254.170.2/") is None and wide.refusal("http://100.100.100.200/") is not None


@pytest.mark.parametrize("entry", ["http://169.254.169.254/", "a b", "", "10.0.0.0/33/1", "bücher.example"])
def test_a_bad_allow_list_entry_names_the_flag(entry):
    with pytest.raises(ConfigError) as e:
        AddressGuard.from_config(build_config({"worker_allowed_addresses": [entry]}))
    assert e.value.key == "--worker-allowed-addresses"


# -- the lookup ------------------------------------------------------------------------


def resolver(answers: dict, calls: list):
    async def resolve(host, port):
        calls.append((host, port))
        a = answers[host]
        if isinstance(a, BaseException):
            raise a
        if a == "hang":
            await asyncio.sleep(3600)
        return a
    return resolve


def test_a_name_is_judged_by_every_address_it_resolves_to():
    calls: list = []
    g = AddressGuard(timeout=0.2, resolve=resolver({
        "rebind.example": ["10.0.0.7", "169.254.169.254"], "gpu1.internal": ["10.0.0.8", "fd00::8"],
        "v6.example": ["fe80::9"], "gone.example": OSError("Name or service not known"), "slow.example": "hang",
    }, calls))

    async def main():
        reason = await g.check("http://rebind.example:8000")
        assert reason is not None and "(resolved to 169.254.169.254)" in reason and "rebind.example" in reason
        assert await g.check("http://v6.example") is not None
        assert await g.check("http://gpu1.internal:8000") is None
        # not resolving (or not in time) is not a refusal: registration fails later anyway
        assert await g.check("http://gone.example") is None
        assert await g.check("http://slow.example") is None
        # literals and metadata names are never looked up
        assert await g.check("http://169.254.169.254/") is not None
        assert await g.check("http://metadata.google.internal/") is not None
        assert await g.check("http://127.0.0.1:1") is None

    asyncio.run(asyncio.wait_for(main(), 10))
    assert [h for h, _ in calls] == ["rebind.example", "v6.example", "gpu1.internal", "gone.example", "slow.example"]
    assert calls[0] == ("rebind.example", 8000)


def test_an_allow_listed_name_is_admitted_without_a_lookup():
    calls: list = []
    g = AddressGuard(["rebind.example"], resolve=resolver({"rebind.example": ["169.254.169.254"]}, calls))
    assert asyncio.run(g.check("http://rebind.example/")) is None and calls == []


def test_the_default_lookup_resolves_localhost():
    assert asyncio.run(asyncio.wait_for(AddressGuard().check("http://localhost:8000"), 10)) is None


# -- the manager ------------------------------------------------------------------------


def test_manager_refuses_metadata_workers_before_any_probe():
    reg, bus, seen = WorkerRegistry(), E.EventBus(), []
    bus.subscribe(seen.append)
    m = WorkerManager(build_config({"disable_health_check": True, "disable_load_monitoring": True}), reg, bus)
    calls: list = []
    m.guard = AddressGuard(timeout=1.0, resolve=resolver({"rebind.example": ["169.254.169.254"]}, calls))

    async def main():
        m.start()
        try:
            # a discovered literal: never registered, counted as invalid
            m._discovered({"url": "http://169.254.169.254:8000"}, "file")
            assert len(reg) == 0 and E.DiscoveryChanged("file", "registration", "invalid") in seen
            # a name that resolves to one (any source): removed before its first probe
            w = m.add(validate({"url": "http://rebind.example:8000", "models": ["m"]}))
            for _ in range(200):
                if reg.get(w.id) is None:
                    break
                await asyncio.sleep(0.01)
            assert reg.get(w.id) is None and calls == [("rebind.example", 8000)]
            assert m._pools == {}  # its pool went with it
        finally:
            await m.stop()

    asyncio.run(asyncio.wait_for(main(), 10))
