"""The settings table, the config loader and the generated configuration page."""
import os

import pytest

from smg.config.docs import render
from smg.config.load import build_config
from smg.config.schema import SETTINGS
from smg.errors import ConfigError

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "configuration.md")


def test_configuration_page_is_current():
    with open(DOC, encoding="utf-8") as f:
        assert f.read() == render(), "run: python -m smg.config.docs > docs/configuration.md"


def test_defaults_match_smg_where_smg_has_the_flag():
    cfg = build_config({})
    assert cfg.port == 30000 and cfg.policy == "cache_aware" and cfg.max_payload_size == 536870912
    assert cfg.request_timeout_secs == 1800 and cfg.upstream_pool_idle_timeout_secs == 3
    assert cfg.cache_threshold == 0.3 and cfg.balance_abs_threshold == 64 and cfg.balance_rel_threshold == 1.5
    assert cfg.retry_max_retries == 5 and cfg.retry_initial_backoff_ms == 50 and cfg.cb_failure_threshold == 10
    assert cfg.health_check_interval_secs == 60 and cfg.prometheus_port == 29000


def test_every_setting_has_a_unique_flag_and_help():
    flags = [s.flag for s in SETTINGS] + [a for s in SETTINGS for a in s.aliases]
    assert len(flags) == len(set(flags))
    assert all(s.help for s in SETTINGS)


@pytest.mark.parametrize("values, key", [
    ({"port": "x"}, "--port"), ({"policy": "best"}, "--policy"), ({"cache_threshold": -1}, "--cache-threshold"),
    ({"worker_urls": ["localhost:80"]}, "--worker-urls"), ({"request_id_headers": ["bad header"]},
                                                           "--request-id-headers"),
    ({"prometheus_duration_buckets": [0.1, -1]}, "--prometheus-duration-buckets"),
])
def test_bad_values_name_their_flag(values, key):
    with pytest.raises(ConfigError) as e:
        build_config(values)
    assert e.value.key == key


def test_yaml_and_cli_merge(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("policy: random\nworker-urls: [http://a:1, http://b:2]\nprometheus_duration_buckets: [0.1, 1]\n")
    cfg = build_config({"policy": "round_robin"}, str(f))
    assert cfg.policy == "round_robin"  # the command line wins
    assert cfg.worker_urls == ("http://a:1", "http://b:2")  # frozen: list settings are tuples
    assert cfg.prometheus_duration_buckets == (0.1, 1.0)
    f.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError):
        build_config({}, str(f))


def test_repr_never_shows_credentials():
    cfg = build_config({"api_key": "sk-gateway-secret", "tenant_api_key": ["team:sk-tenant-secret"],
                        "control_plane_api_keys": ["a:ops:admin:sk-admin-secret"]})
    text = repr(cfg)
    assert "secret" not in text and text.count("<redacted>") == 3
    assert cfg.api_key == "sk-gateway-secret"  # the value itself is intact
