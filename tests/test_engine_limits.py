"""AIMD limiter, slot pool and token bucket (trio, autojump clock)."""

from __future__ import annotations

import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from bulkops.engine.client import TokenBucket
from bulkops.engine.limits import AimdLimiter, SlotPool


async def test_slot_pool_never_exceeds_its_size(autojump_clock: trio.testing.MockClock) -> None:
    """Ten tasks through a pool of three: at most three hold a slot at once, all finish."""
    pool = SlotPool(3)
    peak = 0
    finished = 0

    async def worker() -> None:
        nonlocal peak, finished
        async with pool.slot():
            peak = max(peak, pool.in_use)
            await trio.sleep(1)
        finished += 1

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(worker)
    assert (peak, finished, pool.in_use) == (3, 10, 0)
    assert trio.current_time() == 4  # ceil(10 / 3) rounds of one second


async def test_shrinking_a_pool_holds_new_takers_until_holders_leave(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Resizing down never revokes a slot; it only delays the next taker."""
    pool = SlotPool(2)
    await pool.acquire()
    await pool.acquire()
    pool.resize(1)
    got = trio.Event()

    async def taker() -> None:
        await pool.acquire()
        got.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(taker)
        await trio.sleep(1)
        pool.release()
        await trio.sleep(1)
        assert not got.is_set()  # one holder left, size 1: still full
        pool.release()
        await got.wait()
    assert pool.in_use == 1


async def test_a_cancelled_waiter_takes_nothing(autojump_clock: trio.testing.MockClock) -> None:
    """Cancellation while waiting leaves the pool's count unchanged."""
    pool = SlotPool(1)
    await pool.acquire()
    with trio.move_on_after(5):
        await pool.acquire()
    assert pool.in_use == 1
    pool.release()
    assert pool.in_use == 0


def test_aimd_halves_on_throttling_and_grows_by_one_per_window() -> None:
    """429 → limit / 2 (floor 1); `limit` successes → limit + 1, up to the maximum."""
    limiter = AimdLimiter(8)
    limiter.throttled()
    assert limiter.limit == 4
    for _ in range(4):
        limiter.succeeded()
    assert 4.9 < limiter.limit <= 5.0
    for _ in range(200):
        limiter.succeeded()
    assert limiter.limit == 8
    for _ in range(10):
        limiter.throttled()
    assert limiter.limit == 1
    assert limiter.statistics().decreases == 11


@given(st.lists(st.booleans(), max_size=200), st.integers(1, 16))
def test_aimd_limit_stays_between_one_and_the_maximum(events: list[bool], maximum: int) -> None:
    """Whatever happens, 1 <= limit <= maximum."""
    limiter = AimdLimiter(maximum)
    for ok in events:
        if ok:
            limiter.succeeded()
        else:
            limiter.throttled()
        assert 1 <= limiter.limit <= maximum


async def test_token_bucket_paces_requests(autojump_clock: trio.testing.MockClock) -> None:
    """At 4 requests/s, 20 acquisitions after the initial burst of 4 take 4 s."""
    bucket = TokenBucket(4)
    start = trio.current_time()
    for _ in range(20):
        await bucket.acquire()
    assert abs((trio.current_time() - start) - 4.0) < 1e-6
