"""packaging/: the sample configuration loads as smg-proxy would load it, and the unit
files say what the gateway implements (Type=notify, the reload signal, a stop timeout
longer than the sample's drain, the socket named for the API listener)."""
from __future__ import annotations

import configparser
import os
import shutil
import subprocess

import pytest

from smg.config.load import build_config

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "packaging")


def unit(name: str) -> configparser.ConfigParser:
    p = configparser.ConfigParser(strict=False, interpolation=None)
    p.optionxform = str
    p.read(os.path.join(ROOT, name))
    return p


def test_sample_config_loads():
    cfg = build_config({}, os.path.join(ROOT, "smg.yaml"))
    assert cfg.worker_urls and cfg.policy == "cache_aware" and cfg.systemd_wait_for_worker


def test_service_unit_matches_the_gateway():
    svc = unit("smg-proxy.service")["Service"]
    assert svc["Type"] == "notify" and svc["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert "--config /etc/smg/smg.yaml" in svc["ExecStart"]
    grace = build_config({}, os.path.join(ROOT, "smg.yaml")).shutdown_grace_period_secs
    assert int(svc["TimeoutStopSec"]) > grace
    sock = unit("smg-proxy.socket")["Socket"]
    assert sock["FileDescriptorName"] == "api"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_accepts_the_units():
    for name in ("smg-proxy.service", "smg-proxy.socket"):
        r = subprocess.run(["systemd-analyze", "verify", os.path.join(ROOT, name)], capture_output=True,
                           text=True, timeout=30)
        # the only complaint allowed: the install path does not exist on this machine
        problems = [line for line in (r.stdout + r.stderr).splitlines()
                    if line.strip() and "/opt/smg/bin/smg-proxy" not in line]
        assert problems == [], problems
