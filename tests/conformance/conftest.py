"""Session set-up of the conformance suite, its end-of-session checks and its summary.

Rules:
- The processes (rig.py) start once, on first use, and are stopped after the last test
  of this package whatever happened (package scope: a full test run does not keep them
  running while the other suites run); without the Rust SMG binary every test here is
  skipped with the reason (where it was looked for, how to install it).
- At the end of the session, allow-list entries that no longer match any difference
  fail the session (exit status 1) and are listed; when tests failed anyway they are
  only listed (a failing case may stop short of the comparison an entry covers), and
  with conformance tests deselected (``-k``, ``-m``) not checked at all; the summary prints the counts of
  ``ledger.COUNTERS``; with ``SMG_CONFORMANCE_REPORT=<file>`` every difference that is
  not allow-listed is also written there, grouped by case.
"""
from __future__ import annotations

import os

import pytest

from tests.conformance import rig as rigmod
from tests.conformance.ledger import LEDGER

_STALE: list = []
_PARTIAL: list = []  # conformance tests deselected (-k, -m): the staleness check does not apply


@pytest.fixture(scope="package")
def rig(tmp_path_factory):
    binary = rigmod.rust_binary()
    if binary is None:
        pytest.skip(f"Rust SMG not installed (looked for $SMG_RUST_BIN or {rigmod.DEFAULT_RUST_BIN}; "
                    "install it with: bash bench/rig/setup_refs.sh smg-rust)")
    r = rigmod.Rig(str(tmp_path_factory.mktemp("conformance")))  # the processes' logs; pytest prunes old ones
    try:
        r.start(binary)
        yield r
    finally:
        r.stop()


def pytest_deselected(items):
    _PARTIAL.extend(i.nodeid for i in items if "tests/conformance/" in i.nodeid)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    _STALE[:] = [] if _PARTIAL else LEDGER.stale()
    if _STALE and session.testsfailed == 0 and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    path = os.environ.get("SMG_CONFORMANCE_REPORT")
    if path and LEDGER.cases:
        with open(path, "w") as f:
            f.write(LEDGER.report())


def pytest_terminal_summary(terminalreporter):
    if not LEDGER.cases:
        return
    tr = terminalreporter
    tr.section("conformance with the Rust SMG")
    for line in LEDGER.summary_lines():
        tr.write_line(line)
    failed = terminalreporter.stats.get("failed") or terminalreporter.stats.get("error")
    for e in _STALE:
        if failed:
            # a failing case may stop short of the comparison the entry covers
            tr.write_line(f"allow-list entry {e.key!r} matched no difference (possibly stale; other "
                          "failures may hide its differences)", yellow=True)
        else:
            tr.write_line(f"STALE allow-list entry {e.key!r}: its cases ran but no difference matched it; "
                          "remove it from tests/conformance/allowlist.py and docs/compatibility.md", red=True)
