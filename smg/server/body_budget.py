"""BodyBudget: the gateway-wide count of request-body bytes held in memory, with a
per-connection share under it (``--body-budget-bytes``,
``--body-budget-per-connection-bytes``).

A request body is kept whole until its request ends (it is parsed, routed on, and
resent on a retry), so without a bound many large uploads at once take as much memory
as clients care to send: ``max_payload_size`` bounds one body, not how many arrive
together. The budget bounds them all.

Rules:
- Bytes are reserved as they arrive (``reserve``), not when a Content-Length is
  announced: holding budget costs a client the bytes it must really send. A head's
  Content-Length is only checked (``admit``) so that a body that cannot fit is refused
  before it is sent.
- A connection holds at most ``share`` bytes (its HTTP/2 streams together; one
  HTTP/1.1 request at a time); ``share`` is never above ``total``.
- Verdicts are the status the sink answers with: ``BUDGET_OK`` (0);
  ``BUDGET_TOO_LARGE`` (413 ``payload_too_large``): this body can never fit, above the
  share; ``BUDGET_BUSY`` (503): it could fit once other bodies are done.
- The sink releases what a request reserved exactly once, when that request ends
  (answered, refused, failed or abandoned) or its connection closes, whichever comes
  first; ``used`` then returns to what the other requests hold (0 when idle).
- Sans-I/O: no clock, no loop; one instance per gateway, driven from its loop only.
"""
from __future__ import annotations

BUDGET_OK = 0
BUDGET_TOO_LARGE = 413
BUDGET_BUSY = 503


_RETRY_AFTER = [(b"retry-after", b"1")]


def refusal(verdict: int, share: int) -> tuple:
    """``(status, message, code, extra headers)`` of the answer to a body that will not be
    read: ``verdict`` 0 is over ``--max-payload-size``, else the budget's verdict. Both
    sinks (HTTP/1.1 connection, HTTP/2 stream) answer with it."""
    if verdict == 0:
        return 413, "request body exceeds the maximum payload size", None, None
    if verdict == BUDGET_TOO_LARGE:
        return 413, f"request body exceeds the largest body the gateway holds ({share} bytes)", None, None
    return 503, "the gateway holds too many request bodies; retry later", "body_budget_exhausted", _RETRY_AFTER


class BodyBudget:
    __slots__ = ("total", "share", "used")

    def __init__(self, total: int, share: int) -> None:
        if total <= 0 or share <= 0:
            raise ValueError("the body budget and its per-connection share must be positive")
        self.total = total
        self.share = min(share, total)
        self.used = 0          # bytes reserved now, all connections together

    @classmethod
    def from_config(cls, cfg) -> "BodyBudget | None":
        """None when ``cfg.body_budget_bytes`` is 0 (no budget: nothing is counted)."""
        if not cfg.body_budget_bytes:
            return None
        return cls(cfg.body_budget_bytes, cfg.body_budget_per_connection_bytes)

    def admit(self, held: int, length: int) -> int:
        """The verdict on a body of announced ``length`` on a connection holding ``held``
        bytes (nothing is reserved)."""
        if held + length > self.share:
            return BUDGET_TOO_LARGE
        if self.used + length > self.total:
            return BUDGET_BUSY
        return BUDGET_OK

    def reserve(self, held: int, n: int) -> int:
        """Reserves ``n`` more bytes for a connection holding ``held``; on any verdict but
        ``BUDGET_OK`` nothing is reserved."""
        if held + n > self.share:
            return BUDGET_TOO_LARGE
        used = self.used + n
        if used > self.total:
            return BUDGET_BUSY
        self.used = used
        return BUDGET_OK

    def release(self, n: int) -> None:
        """Gives back ``n`` bytes a connection reserved."""
        used = self.used - n
        if used < 0:  # a release without its reservation: a bug in the sink
            raise AssertionError(f"body budget released {n} bytes with only {self.used} reserved")
        self.used = used

    def __repr__(self) -> str:
        return f"BodyBudget(used={self.used}, total={self.total}, share={self.share})"
