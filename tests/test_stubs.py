"""The .pyi stubs of smg._native are true: mypy's stubtest checks every pure-Python twin,
and every compiled module, against its stub, so a signature drift on either side fails.

How: stubtest imports the module it checks by name. For a twin, a small runner puts the
twin into ``sys.modules`` under the native module's name first, so stubtest compares the
twin with ``smg/_native/<name>.pyi``. Each leg is one subprocess (one mypy build for all
the stubs; well under the ~60 s budget).

The twin leg is strict (no allowlist). The compiled leg allowlists only what Cython
generates and a stub cannot spell (``COMPILED_ALLOWLIST``), and ignores PEP 800
disjoint-base checks (every cdef class is one at runtime; the twins mostly are not, and
one stub serves both). Both legs ignore mypy errors outside the stubs themselves (the
modules the stubs import are not what this test is about).

Skipped when mypy is not installed (it is in the ``test`` extra).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("mypy.stubtest")

import smg._native  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# native module -> its pure-Python twin (docs/architecture.md, "Native modules and their twins")
TWINS = {
    "smg._native.http1": "smg.http1.parser_py",
    "smg._native.sse": "smg.streaming.sse_py",
    "smg._native.radix": "smg.routing.radix_py",
    "smg._native.tally": "smg.observability.tally_py",
    "smg._native.token_bucket": "smg.admission.token_bucket_py",
    "smg._native.heads": "smg.http1.heads_py",
    "smg._native.screen": "smg.api.validate.screen_py",
    "smg._native.framing": "smg.http1.framing_py",
}

# Cython-generated, not part of any API: pickling hooks, the doctest dict, and the
# __init__ of cdef classes (a slot wrapper with no signature; the twin leg checks the
# signatures stated in the stubs).
COMPILED_ALLOWLIST = """\
smg\\._native\\.\\w+\\.__(reduce|setstate)_cython__
smg\\._native\\.\\w+\\.__test__
smg\\._native\\.\\w+\\.\\w+\\.__init__
"""

# Errors in the stubs count; errors in the .py modules they import do not.
MYPY_INI = """\
[mypy]
mypy_path = {root}
[mypy-smg.*]
ignore_errors = True
[mypy-smg._native.*]
ignore_errors = False
"""

RUNNER = textwrap.dedent(
    """
    import importlib, json, sys
    import mypy.stubtest as st
    aliases, args = json.loads(sys.argv[1]), sys.argv[2:]
    for native, twin in aliases.items():
        sys.modules[native] = importlib.import_module(twin)
    if "--ignore-disjoint-bases" in args:
        try:
            st.parse_options(["--ignore-disjoint-bases", "x"])
        except SystemExit:  # an older mypy without PEP 800 checks
            args.remove("--ignore-disjoint-bases")
    sys.exit(st.test_stubs(st.parse_options(args)))
    """
)


def _stubtest(tmp_path, aliases: dict, modules: list, extra: list, env_set: dict) -> subprocess.CompletedProcess:
    import json

    ini = tmp_path / "mypy.ini"
    ini.write_text(MYPY_INI.format(root=ROOT))
    env = {k: v for k, v in os.environ.items() if k not in ("SMG_NO_EXTENSIONS", "SMG_REQUIRE_EXTENSIONS")}
    env.update(env_set)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(aliases), *modules, "--concise",
         "--mypy-config-file", str(ini), *extra],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )


def test_twins_match_their_stubs(tmp_path):
    res = _stubtest(tmp_path, TWINS, list(TWINS), [], {"SMG_NO_EXTENSIONS": "1"})
    assert res.returncode == 0, res.stdout + res.stderr


def test_compiled_modules_match_their_stubs(tmp_path):
    if smg._native.NO_EXTENSIONS:
        pytest.skip("SMG_NO_EXTENSIONS: the compiled modules are not in use")
    missing = [m for m in TWINS if smg._native.load(m.rsplit(".", 1)[1]) is None]
    if missing:  # under SMG_REQUIRE_EXTENSIONS load() has already raised
        pytest.skip(f"native extensions not built: {missing}")
    allow = tmp_path / "allowlist.txt"
    allow.write_text(COMPILED_ALLOWLIST)
    res = _stubtest(
        tmp_path, {}, list(TWINS),
        ["--allowlist", str(allow), "--ignore-unused-allowlist", "--ignore-disjoint-bases"],
        {"SMG_REQUIRE_EXTENSIONS": "1"},
    )
    assert res.returncode == 0, res.stdout + res.stderr


DRIFTED_TWIN = '''
__all__ = ["AccessBuffer", "Hist", "Tally"]
from smg.observability.tally_py import AccessBuffer, Tally
from smg.observability.tally_py import Hist as _Hist

class Hist(_Hist):
    __slots__ = ()
    def observe(self, v: float) -> None:  # the stub calls it "value"
        super().observe(v)
'''


def test_a_drifted_twin_fails(tmp_path):
    """The check bites: a twin whose method renamed a parameter is reported."""
    (tmp_path / "drifted_tally.py").write_text(DRIFTED_TWIN)
    res = _stubtest(tmp_path, {"smg._native.tally": "drifted_tally"}, ["smg._native.tally"], [],
                    {"SMG_NO_EXTENSIONS": "1", "PYTHONPATH": str(tmp_path)})
    assert res.returncode != 0
    assert "smg._native.tally.Hist.observe" in res.stdout, res.stdout + res.stderr
