"""Complete-mode tool parsing against the Rust SMG's ``POST /parse/function_call`` (the oracle).

The Rust gateway runs once for the module (in front of smg's mock worker); every vector of
the unit tests, plus seeded random well-formed outputs of each format, goes to both, and
``remaining_text`` and each call's name and arguments must agree.  Skipped when the binary is
absent.  The few known, deliberate differences are listed in ``ALLOW`` with their reason.
"""
from __future__ import annotations

import importlib.util
import json
import random
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from smg.parsers.tools import create, registry

ROOT = Path(__file__).resolve().parents[2]
RUST = ROOT / "bench" / ".venvs" / "smg-rust" / "bin" / "smg"
pytestmark = pytest.mark.skipif(not RUST.exists(), reason="the Rust SMG binary is not installed")

# Ports of this test's processes (this area's range), taken when free.


def _load(name: str, rel: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / rel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


UNIT = _load("_tool_vectors", "tests/unit/parsers/test_tool_parsers.py")
SPLIT = _load("_tool_renderers", "tests/unit/parsers/test_tool_split_invariance.py")


def _free_ports(n: int) -> list[int]:
    """Ports the kernel hands out as free (bound to 0, then released together)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _wait_http(url: str, body: bytes | None, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
            urllib.request.urlopen(req, timeout=2).read()
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.2)
    raise TimeoutError(url)


@pytest.fixture(scope="module")
def oracle():
    worker_port, smg_port, prom_port = _free_ports(3)
    procs = [subprocess.Popen(
        [sys.executable, "-m", "smg", "mock-worker", "--port", str(worker_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )]
    try:
        _wait_http(f"http://127.0.0.1:{worker_port}/health", None, time.monotonic() + 20)
        procs.append(subprocess.Popen(
            [str(RUST), "launch", "--host", "127.0.0.1", "--port", str(smg_port),
             "--worker-urls", f"http://127.0.0.1:{worker_port}", "--prometheus-port", str(prom_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
        url = f"http://127.0.0.1:{smg_port}/parse/function_call"
        probe = json.dumps({"text": "x", "tool_call_parser": "json", "tools": []}).encode()
        _wait_http(url, probe, time.monotonic() + 60)
        yield url
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)


def ask(url: str, parser: str, text: str, tools) -> dict:
    # the endpoint takes registry names, not the command line's aliases
    parser = registry.resolve(parser)
    body = json.dumps({"text": text, "tool_call_parser": parser, "tools": tools or []}).encode()
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        out = json.loads(r.read())
    return {"text": out["remaining_text"],
            "calls": [(c["function"]["name"], c["function"]["arguments"]) for c in out["tool_calls"]]}


def ours(parser: str, text: str, tools) -> dict:
    r = create(parser, tools).parse(text)
    return {"text": r.normal_text, "calls": [(c.name, c.arguments) for c in r.calls]}


# (parser, text) → reason, for outputs where smg deliberately answers differently.
ALLOW: dict[tuple[str, str], str] = {}


def _vector_ids(vs):
    return [f"{v[0]}:{i}" for i, v in enumerate(vs)]


ORACLE_PARSERS = {v[0] for v in UNIT.VECTORS}


@pytest.mark.parametrize("vector", UNIT.VECTORS, ids=_vector_ids(UNIT.VECTORS))
def test_vectors_match_smg(oracle, vector):
    parser, text = vector[0], vector[1]
    if (parser, text) in ALLOW:
        pytest.skip(ALLOW[(parser, text)])
    assert ours(parser, text, UNIT.TOOLS) == ask(oracle, parser, text, UNIT.TOOLS)


def _random_calls(rng: random.Random, kind: str):
    names = ["get_weather", "search", "lookup_2", "f"]
    calls = []
    for _ in range(rng.randint(1, 3)):
        if kind == "xml":
            args = {f"k{i}": rng.choice(["Paris", "42", "true", "3.5", "x y", "é中", "[1, 2]", '{"a": 1}', "null"])
                    for i in range(rng.randint(0, 3))}
        elif kind == "py":
            args = {f"k{i}": rng.choice(["s", 1, -2, 3.5, True, None, [1, "a"], {"x": False}])
                    for i in range(rng.randint(0, 3))}
        else:
            args = {f"k{i}": rng.choice(["Paris", 1, -2.5, 1e20, True, None, [1, {"z": "é中😀"}], {"n": {"m": []}},
                                         "quote\" back\\ nl\n"])
                    for i in range(rng.randint(0, 3))}
        calls.append((rng.choice(names), args))
    return calls


_KIND = {"qwen_xml": "xml", "qwen_coder": "xml", "glm45_moe": "xml", "glm47_moe": "xml", "minimax_m2": "xml",
         "step3": "xml", "deepseek32": "xml", "deepseek_v4": "xml", "deepseek_v41": "xml", "kimi_k3": "xml",
         "pythonic": "py", "sarashina": "py", "kimik2": "raw"}


def _random_vectors():
    rng = random.Random(1234)
    out = []
    for parser, (render, _args, before, after) in sorted(SPLIT.FORMATS.items()):
        for _ in range(6):
            kind = _KIND.get(parser, "json")
            calls = _random_calls(rng, "json" if kind == "raw" else kind)
            if parser == "json" and len(calls) > 1 and rng.random() < 0.5:
                calls = calls[:1]
            pre = rng.choice(["", "Sure. ", "Let me check:\n"]) if before else ""
            post = rng.choice(["", " done", "\nbye"]) if after else ""
            out.append((parser, pre + render(calls, rng.random() < 0.5) + post))
    return out


RANDOM = _random_vectors()


@pytest.mark.parametrize("vector", RANDOM, ids=_vector_ids(RANDOM))
def test_random_outputs_match_smg(oracle, vector):
    parser, text = vector
    tools = UNIT.TOOLS if parser not in ("qwen_xml", "qwen_coder") else None
    assert ours(parser, text, tools) == ask(oracle, parser, text, tools)
