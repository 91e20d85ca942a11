"""What a mock worker saw: ``MockStats``, the counters tests assert on.

Rules:
- ``/_mock/*`` requests are never counted (reading the stats must not change them).
- The hot path stores raw parser output only (``_raw_headers`` is the parser's list);
  anything decoded is decoded when read.
- ``MockWorker.reset_stats`` zeroes the fields in place, so a reference a test holds
  stays valid; ``open_connections`` keeps counting the live connections.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class MockStats:
    """What a mock worker saw. ``/_mock/*`` requests are not counted.

    Attributes:
        requests: requests answered or in flight, every path.
        paths: request count per path (query string stripped).
        cancelled: streams whose client hung up before the stream ended.
        aborted: non-streaming requests whose client hung up before the answer.
        completed_streams: streams sent to the end.
        failures: inference requests failed on purpose (fail_status / fail_mode).
        open_connections / total_connections: current and accepted connections.
        last_body: parsed JSON of the last inference request.
        last_headers: headers of the last inference request (lower-case str → str).
    """

    requests: int = 0
    paths: dict = field(default_factory=dict)
    cancelled: int = 0
    aborted: int = 0
    completed_streams: int = 0
    failures: int = 0
    open_connections: int = 0
    total_connections: int = 0
    last_body: Any = None
    _raw_headers: list = field(default_factory=list, repr=False)

    @property
    def last_headers(self) -> dict:
        # Decoded on demand: the hot path only keeps the parser's list.
        return {k.decode("latin-1"): v.decode("latin-1") for k, v in self._raw_headers}

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        d["paths"] = dict(self.paths)
        d["last_headers"] = self.last_headers
        return d
