"""The legacy concurrency limiter (SMG's default admission): a token bucket in front of
a bounded FIFO queue. Sans-I/O: no loop, no socket, no clock of its own.

Rules:
- Capacity is ``--max-concurrent-requests`` tokens. A request takes one token when it
  is admitted and gives it back (``release``) when it ends, however it ends: answer or
  stream complete, failed, or abandoned by the client.
- ``--rate-limit-tokens-per-second R``: with R > 0 the bucket also refills at R tokens
  per second, capped at capacity (SMG's token bucket: tokens come back both ways).
  Unset (0) there is no refill, so the limiter is a pure concurrency bound and
  ``available(now) == capacity`` exactly when nothing is in flight.
- A request that finds no token waits in one FIFO queue of at most ``queue_size``
  tickets; a full queue refuses it (429), and ``queue_size`` 0 refuses at once. Tickets
  are admitted only from the head, only while a token is free: on ``release``, or, with
  refill, on ``poll``. A newcomer never overtakes a queued ticket (``try_acquire`` is
  False while the queue holds any).
- A ticket queued for ``queue_timeout`` seconds or more is expired (408) by
  ``expire(now)``. The queue is FIFO with one timeout, so deadlines are in queue order.
- Every ticket ends exactly once: ADMITTED, CANCELLED (its client left) or EXPIRED.
- ``bucket`` and ``queue`` are public so that the pipeline stage can run
  ``try_acquire``/``release`` inline on the hot path (smg/admission/admit.py); nothing
  else touches them.
- ``holding(now)`` is the number of requests holding a token (the
  ``smg_admission_inflight`` gauge, read at scrape time): capacity minus free tokens
  without refill; with refill, where tokens also come back with time, the bucket is a
  ``_HeldBuckets`` that counts takes and returns itself.
- The clock is injected: every call that depends on time takes ``now`` (seconds,
  monotonic). ``next_wakeup(now)`` says when the I/O shell must next call ``expire`` /
  ``poll``, so one timer serves the whole queue (no timer per waiter).
"""
from __future__ import annotations

from collections import OrderedDict

from smg.admission.token_bucket import TokenBuckets

QUEUED, ADMITTED, CANCELLED, EXPIRED = "queued", "admitted", "cancelled", "expired"

_NONE: tuple = ()


class Ticket:
    """A request waiting for a token. ``item`` is the shell's, untouched here."""

    __slots__ = ("item", "since", "deadline", "state")

    def __init__(self, item, since: float, deadline: float) -> None:
        self.item = item
        self.since = since
        self.deadline = deadline
        self.state = QUEUED

    def __repr__(self) -> str:
        return f"Ticket({self.state}, since={self.since})"


class _HeldBuckets:
    """A one-slot TokenBuckets that also counts the tokens taken and not yet returned
    (used with refill only, so the pure concurrency bound pays nothing for it)."""

    __slots__ = ("_b", "held")

    def __init__(self, buckets: TokenBuckets) -> None:
        self._b = buckets
        self.held = 0

    def try_acquire(self, slot: int, now: float) -> bool:
        if self._b.try_acquire(slot, now):
            self.held += 1
            return True
        return False

    def release(self, slot: int) -> None:
        self._b.release(slot)
        if self.held > 0:
            self.held -= 1

    def available(self, slot: int, now: float) -> float:
        return self._b.available(slot, now)

    def wait_time(self, slot: int, now: float) -> float:
        return self._b.wait_time(slot, now)


class ConcurrencyLimiter:
    __slots__ = ("capacity", "refill", "queue_size", "queue_timeout", "bucket", "queue")

    def __init__(self, capacity: int, refill_per_sec: float, queue_size: int, queue_timeout: float) -> None:
        """Raises ValueError for a capacity or rate the token bucket cannot hold, or a
        negative queue size or timeout."""
        if queue_size < 0 or not queue_timeout >= 0:
            raise ValueError("queue size and timeout must be >= 0")
        self.capacity = capacity
        self.refill = refill_per_sec
        self.queue_size = queue_size
        self.queue_timeout = queue_timeout
        bucket = TokenBuckets(1, capacity, refill_per_sec)
        self.bucket = _HeldBuckets(bucket) if refill_per_sec > 0 else bucket
        self.queue: OrderedDict = OrderedDict()  # Ticket -> None, in arrival order

    # -- admission ---------------------------------------------------------------------

    def try_acquire(self, now: float) -> bool:
        """Takes a token for a newcomer; False when none is free or tickets are queued."""
        return not self.queue and self.bucket.try_acquire(0, now)

    def enqueue(self, item, now: float) -> Ticket | None:
        """Queues ``item``; None when the queue is full (or disabled: ``queue_size`` 0)."""
        q = self.queue
        if len(q) >= self.queue_size:
            return None
        t = Ticket(item, now, now + self.queue_timeout)
        q[t] = None
        return t

    def cancel(self, ticket: Ticket) -> bool:
        """Removes a queued ticket (its client left); False if it was no longer queued."""
        if ticket.state is not QUEUED:
            return False
        del self.queue[ticket]
        ticket.state = CANCELLED
        return True

    def release(self, now: float):
        """Gives one token back; returns the tickets it admitted (head first)."""
        self.bucket.release(0)
        if not self.queue:
            return _NONE
        return self.poll(now)

    def poll(self, now: float):
        """Admits queued tickets, head first, while tokens are free; returns them."""
        q = self.queue
        if not q:
            return _NONE
        out = []
        bucket = self.bucket
        while q:
            t = next(iter(q))
            if not bucket.try_acquire(0, now):
                break
            del q[t]
            t.state = ADMITTED
            out.append(t)
        return out

    def expire(self, now: float):
        """Removes and returns the tickets whose deadline is at or before ``now``."""
        q = self.queue
        if not q:
            return _NONE
        out = []
        while q:
            t = next(iter(q))
            if t.deadline > now:
                break
            del q[t]
            t.state = EXPIRED
            out.append(t)
        return out

    def next_wakeup(self, now: float) -> float | None:
        """When ``expire``/``poll`` may next have work: the head's deadline, or sooner the
        moment refill gives the head its token. None with an empty queue."""
        q = self.queue
        if not q:
            return None
        when = next(iter(q)).deadline
        if self.refill > 0:
            wait = self.bucket.wait_time(0, now)
            if now + wait < when:
                when = now + wait
        return when

    # -- state --------------------------------------------------------------------------

    def available(self, now: float) -> float:
        """Tokens free now (refilled up to ``now``)."""
        return self.bucket.available(0, now)

    def holding(self, now: float) -> int:
        """Requests holding a token now (admitted and not yet released)."""
        if self.refill > 0:
            return self.bucket.held
        return max(0, int(round(self.capacity - self.bucket.available(0, now))))

    @property
    def queued(self) -> int:
        return len(self.queue)

    def retry_after(self, now: float) -> int:
        """Seconds a refused client is told to wait (``Retry-After``): when refill gives
        the next token, at least 1; 1 for a pure concurrency bound (a token comes back
        whenever any request ends)."""
        if self.refill > 0:
            wait = self.bucket.wait_time(0, now)
            if wait != float("inf") and wait > 1:
                return int(-(-wait // 1))
        return 1
