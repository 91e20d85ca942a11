"""Fetch real upstream chat templates for the chat-template tests.

The templates are not kept in this repository (they belong to their model publishers);
llama.cpp collects about seventy of them under ``models/templates/``, and the sdist of
``llama-cpp-python`` 0.3.36 carries that folder as ``vendor/llama.cpp/models/templates/``.
This script copies the ``.jinja`` files (and the folder's README) out of that sdist into a
cache folder the tests read.

    python tests/assets/fetch_templates.py [OUT_DIR]

OUT_DIR defaults to ``~/.cache/smg-ci/templates`` (the tests also honour
``SMG_TEMPLATES_DIR``). The sdist is looked for at ``~/.cache/smg-ci/sdist/`` and, when
absent, downloaded there: its URL is read from the package index's JSON simple API
(PEP 691; ``SMG_PYPI_SIMPLE`` overrides the index) and the file is kept only when its
SHA-256 is the one pinned here. ``pip download`` is not used: for an sdist it prepares
metadata, and with ``--no-binary :all:`` that builds the whole build-dependency chain
from source, which takes minutes and fails on machines without every compiler it wants.
Rerunning is cheap: files already present with the same bytes are left alone.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tarfile
import urllib.request

PACKAGE = "llama-cpp-python"
VERSION = "0.3.36"
SDIST_NAME = f"llama_cpp_python-{VERSION}.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
INDEX = os.environ.get("SMG_PYPI_SIMPLE", "https://pypi.org/simple/").rstrip("/") + "/"
SDIST_DIR = os.path.expanduser("~/.cache/smg-ci/sdist")
DEFAULT_OUT = os.path.expanduser("~/.cache/smg-ci/templates")
# where the templates sit inside the sdist, below its top-level folder
INNER = "vendor/llama.cpp/models/templates/"


def sdist_url() -> str:
    """The sdist's download URL, from the index's JSON listing of the project."""
    req = urllib.request.Request(INDEX + PACKAGE + "/",
                                 headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        listing = json.load(r)
    for f in listing.get("files", ()):
        if f.get("filename") == SDIST_NAME:
            return f["url"]
    raise SystemExit(f"{SDIST_NAME} is not listed at {INDEX}{PACKAGE}/")


def sdist_path() -> str:
    """Path of the sdist, downloading it first when it is not cached."""
    path = os.path.join(SDIST_DIR, SDIST_NAME)
    if os.path.exists(path):
        return path
    os.makedirs(SDIST_DIR, exist_ok=True)
    tmp = path + ".part"
    digest = hashlib.sha256()
    with urllib.request.urlopen(sdist_url(), timeout=120) as r, open(tmp, "wb") as w:
        while chunk := r.read(1 << 20):
            digest.update(chunk)
            w.write(chunk)
    if digest.hexdigest() != SDIST_SHA256:
        os.unlink(tmp)
        raise SystemExit(f"{SDIST_NAME}: sha256 {digest.hexdigest()} is not the pinned {SDIST_SHA256}")
    os.replace(tmp, path)
    return path


def extract(out_dir: str = DEFAULT_OUT, sdist: str | None = None) -> list[str]:
    """Copy the templates into ``out_dir``; returns the file names written or kept."""
    sdist = sdist or sdist_path()
    os.makedirs(out_dir, exist_ok=True)
    names = []
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            _top, _, rest = member.name.partition("/")
            if not rest.startswith(INNER):
                continue
            name = rest[len(INNER):]
            # flat folder only: no subdirectories, no path tricks
            if "/" in name or not (name.endswith(".jinja") or name == "README.md"):
                continue
            f = tar.extractfile(member)
            if f is None:
                continue
            data = f.read()
            dest = os.path.join(out_dir, name)
            try:
                with open(dest, "rb") as old:
                    same = old.read() == data
            except FileNotFoundError:
                same = False
            if not same:
                tmp = dest + ".tmp"
                with open(tmp, "wb") as w:
                    w.write(data)
                os.replace(tmp, dest)
            names.append(name)
    if not any(n.endswith(".jinja") for n in names):
        raise SystemExit(f"no templates under {INNER} in {sdist}")
    return sorted(names)


def main(argv: list[str]) -> int:
    out = os.path.expanduser(argv[1]) if len(argv) > 1 else DEFAULT_OUT
    names = extract(out)
    print(f"{sum(n.endswith('.jinja') for n in names)} templates in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
