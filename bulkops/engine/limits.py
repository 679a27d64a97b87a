"""Adaptive concurrency: an AIMD limiter and a resizable slot pool, on trio.

:class:`AimdLimiter` bounds requests in flight. A 429 halves the limit (multiplicative
decrease, never below 1); every ``limit`` successes raise it by one (additive increase, so
it grows by about one per round trip's worth of requests), up to the configured maximum —
TCP's congestion-avoidance rule, applied to a server's throttle.

Both classes are fair (waiters are served in arrival order) and cancellation-safe: a task
cancelled while waiting takes nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

__all__ = ["AimdLimiter", "LimiterStats", "SlotPool"]


@attrs.frozen(kw_only=True)
class LimiterStats:
    """A snapshot of a limiter."""

    limit: float
    maximum: int
    in_use: int
    waiting: int
    decreases: int


class SlotPool:
    """At most ``size`` holders at once; ``size`` may change while in use."""

    def __init__(self, size: int) -> None:
        self._size = max(1, size)
        self._in_use = 0
        self._lot = trio.lowlevel.ParkingLot()

    @property
    def size(self) -> int:
        """The current number of slots."""
        return self._size

    @property
    def in_use(self) -> int:
        """Slots currently held."""
        return self._in_use

    @property
    def waiting(self) -> int:
        """Tasks waiting for a slot."""
        return len(self._lot)

    def resize(self, size: int) -> None:
        """Change the number of slots; holders over a smaller size keep theirs until release."""
        self._size = max(1, size)
        self._wake()

    async def acquire(self) -> None:
        """Take a slot, waiting for one to be free."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._in_use < self._size and not self._lot:
            self._in_use += 1
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        # release() hands the slot over before unparking, so a woken task owns it already.
        await self._lot.park()

    def release(self) -> None:
        """Give a slot back."""
        self._in_use -= 1
        self._wake()

    def _wake(self) -> None:
        while self._lot and self._in_use < self._size:
            self._in_use += 1
            self._lot.unpark()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for the duration of the block."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()


class AimdLimiter:
    """An in-flight limit that backs off on throttling and recovers slowly.

    Args:
        maximum: the configured limit (``--concurrency``), never exceeded.
    """

    def __init__(self, maximum: int) -> None:
        self.maximum = max(1, maximum)
        self._limit = float(self.maximum)
        self._pool = SlotPool(self.maximum)
        self._decreases = 0

    @property
    def limit(self) -> float:
        """The current (fractional) limit."""
        return self._limit

    def statistics(self) -> LimiterStats:
        """A snapshot of the limiter."""
        return LimiterStats(
            limit=self._limit,
            maximum=self.maximum,
            in_use=self._pool.in_use,
            waiting=self._pool.waiting,
            decreases=self._decreases,
        )

    def throttled(self) -> None:
        """The server throttled us: halve the limit (not below 1)."""
        self._limit = max(1.0, self._limit / 2)
        self._decreases += 1
        self._pool.resize(int(self._limit))

    def succeeded(self) -> None:
        """A request went through: grow the limit by ``1 / limit`` (one per window)."""
        self._limit = min(float(self.maximum), self._limit + 1.0 / self._limit)
        self._pool.resize(int(self._limit))

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one in-flight slot for the duration of the block."""
        async with self._pool.slot():
            yield
