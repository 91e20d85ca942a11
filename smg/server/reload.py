"""Which settings a running gateway can take from a re-read configuration (SIGHUP).

``plan(old, new, tls_on)`` compares two resolved configurations and returns the names
of the settings that changed, or raises ``ReloadRefused`` naming the ones that cannot
change at run time. ``Gateway.reconfigure`` (smg/server/app.py) applies a plan.

Rules:
- All or nothing: a reload that changes any setting outside ``RUNTIME`` is refused as
  a whole and nothing is applied; the refusal names every such setting by its flag,
  so no change is silently ignored. A refused reload leaves the running configuration
  exactly as it was.
- ``RUNTIME`` holds the settings whose every reader can take a new value without
  losing routing state: the worker list (workers added are registered, workers
  removed are drained, the others keep their breakers, loads and tree entries), the
  parameters cache_aware re-reads in place (``CacheAwarePolicy.SETTINGS``: its trees
  are kept), the retry settings (requests already running finish under the policy
  they began with), the breakers' thresholds, timeout and window (each breaker keeps
  its state; ``disable_circuit_breaker`` is fixed), the health probe interval (from
  each worker's next probe), the tenant and control-plane keys (rotated in the auth
  filters; turning keys on or off is refused: the routes' filter chains are built at
  start-up; ``--api-key`` is fixed, being the workers' credential too), and the
  listener's TLS files (new handshakes get the new certificate;
  open connections keep theirs). TLS cannot be turned on or off at run time (the
  listener was created plain or with TLS), nor client-certificate checks.
- A setting joins ``RUNTIME`` only together with the code that applies it.
"""
from __future__ import annotations

from smg.config.schema import SETTINGS, setting
from smg.routing.cache_aware import CacheAwarePolicy

TLS_FILES = ("tls_cert_path", "tls_key_path", "tls_client_ca_path")
RETRY = ("retry_max_retries", "retry_initial_backoff_ms", "retry_max_backoff_ms", "retry_backoff_multiplier",
         "retry_jitter_factor", "disable_retries")
BREAKER = ("cb_failure_threshold", "cb_success_threshold", "cb_timeout_duration_secs", "cb_window_duration_secs")
KEYS = ("tenant_api_key", "control_plane_api_keys")
RUNTIME = frozenset(("worker_urls", *CacheAwarePolicy.SETTINGS, *TLS_FILES, *RETRY, *BREAKER,
                     "health_check_interval_secs", *KEYS))


class ReloadRefused(Exception):
    """The new configuration cannot be applied; the message says why, naming the settings."""


def changed(old, new) -> list:
    """Names of the settings whose values differ, in the table's order."""
    return [s.name for s in SETTINGS if getattr(old, s.name) != getattr(new, s.name)]


def plan(old, new, tls_on: bool) -> list:
    """The changed settings, all of which can be applied at run time.

    Raises:
        ReloadRefused: a setting outside ``RUNTIME`` changed, or TLS would be turned
        on or off.
    """
    names = changed(old, new)
    fixed = [n for n in names if n not in RUNTIME]
    if fixed:
        raise ReloadRefused(", ".join(setting(n).flag for n in fixed)
                            + " cannot change at run time (restart smg-proxy to change "
                            + ("them" if len(fixed) > 1 else "it") + ")")
    if bool(new.tls_cert_path) != tls_on:
        raise ReloadRefused("--tls-cert-path: TLS cannot be turned " + ("off" if tls_on else "on")
                            + " at run time (restart smg-proxy)")
    if bool(new.tls_client_ca_path) != bool(old.tls_client_ca_path):
        raise ReloadRefused("--tls-client-ca-path: client-certificate checks cannot be turned "
                            + ("on" if new.tls_client_ca_path else "off") + " at run time (restart smg-proxy)")
    return names
