"""Type stub for smg._native.heads (the pure-Python twin smg.http1.heads_py has the same
API; its module docstring states the rules: which pairs become lines, when the result is
None). mypy's stubtest checks the twin and the compiled module against this stub
(tests/test_stubs.py)."""

from collections.abc import Callable

__all__ = ["CONNECTION", "DROP", "FORWARD", "allowed_lines", "header_lines"]

DROP: int  # verdict codes, equal to smg.upstream.forwarding's
FORWARD: int
CONNECTION: int

def header_lines(headers: list, skip: frozenset) -> bytes | None:
    """The ``name: value\\r\\n`` lines of the ``(name, value)`` pairs whose name is not in
    ``skip``, concatenated; None when a ``connection`` header in ``skip`` carries a value
    other than ``close`` / ``keep-alive`` (any case): the caller takes its slow path."""

def allowed_lines(headers: list, verdict: dict, classify: Callable[[bytes], int],
                  replaced: frozenset | None, rid: bytes | None) -> tuple[bytes, bool] | None:
    """``(lines, has_rid)``: the lines of the pairs whose verdict (``verdict[name]``, else
    ``classify(name)``) is FORWARD and whose name is not in ``replaced``; the first
    ``x-request-id`` only, its value replaced by ``rid`` unless None. None when a
    CONNECTION-verdict header carries a value other than close / keep-alive."""
