# Stub for the compiled smg._native.tally; the pure-Python twin
# smg/observability/tally_py.py has the same API (mypy's stubtest checks both against
# this stub: tests/test_stubs.py).

__all__ = ["AccessBuffer", "Hist", "Tally"]

class Hist:
    """A histogram cell: counts per "le" bucket (the last one is +Inf) and the sum."""

    bounds: tuple[float, ...]
    sum: float
    def __init__(self, bounds) -> None: ...
    @property
    def counts(self) -> list[int]: ...
    def observe(self, value: float) -> None: ...

class AccessBuffer:
    """Access lines waiting for the next flush."""

    json: bool
    offset: float  # wall clock minus the monotonic clock
    def __init__(self, json: bool = False) -> None: ...
    @property
    def pending(self) -> int: ...
    def take(self) -> bytes: ...
    def line(self, labels: bytes, now: float, rid: bytes, duration: float, ttft: float | None,
             nbytes: int) -> None: ...

class Tally:
    """Counters, histograms and access-log labels of one request shape."""

    count: int
    tok_in: int
    tok_out: int
    dur: Hist
    ttft: Hist
    tpot: Hist
    gen: Hist
    labels: dict
    access: bytes
    def __init__(self, labels: dict, dur_bounds, ttft_bounds, tpot_bounds, access: bytes = b"",
                 log: AccessBuffer | None = None) -> None: ...
    def record(self, now: float, t0: float, rid: bytes, nbytes: int,
               usage: tuple[int, int] | None) -> None: ...
    def record_stream(self, now: float, t0: float, rid: bytes, nbytes: int, scanner) -> None: ...
