"""Throttles: per-second rate, daily quota, queued activities, Retry-After — over real HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from bulkops.server.app import ServerConfig
from bulkops.server.throttle import Throttle, TokenBucket, account_of
from tests.pgkit import BOTH_STORES
from tests.serverkit import HANG_GUARD, RunningServer, add_account, basic, make_state, start_server
from tests.test_server_activities import list_uri, make_list

STORES = BOTH_STORES


async def _serve(
    tmp_path: Path, nursery: trio.Nursery, db: str | None, **config: object
) -> RunningServer:
    state = make_state(tmp_path, ServerConfig(**config), db=db)  # type: ignore[arg-type]
    return await start_server(nursery, state)


async def test_rate_limit_answers_429_naming_the_limit(
    tmp_path: Path, store_db: str | None, nursery: trio.Nursery
) -> None:
    """--rate: a token bucket per account; over it, 429 saying which limit, no Retry-After."""
    running = await _serve(tmp_path, nursery, store_db, rate=0.01)
    state = running.state
    add_account(state, "other", "other-pw", "other-key")
    other = {"Authorization": basic("other", "other-pw", "other-key")}
    async with running.client() as client:
        with trio.fail_after(HANG_GUARD):
            first = await client.get("")
            second = await client.get("lists")
            others = await client.get(running.base("other"), headers=other)
            outside = await client.get(running.origin + "/")
    assert first.status_code == 200
    assert second.status_code == 429
    assert "rate limit of 0.01 requests per second" in second.text
    assert "account demo" in second.text
    assert "retry-after" not in second.headers
    assert others.status_code == 200  # buckets are per account
    assert outside.status_code == 404  # only account requests are throttled
    state.store.close()


async def test_daily_quota_answers_429_once_used_up(
    tmp_path: Path, store_db: str | None, nursery: trio.Nursery
) -> None:
    """--daily-quota: N requests per account per day, then 429 with Retry-After if asked."""
    running = await _serve(tmp_path, nursery, store_db, daily_quota=3, retry_after=2.5)
    state = running.state
    async with running.client() as client:
        with trio.fail_after(HANG_GUARD):
            statuses = [(await client.get("")).status_code for _ in range(3)]
            over = await client.post("activities", data={"activityType": "SV_ADD"})
    assert statuses == [200, 200, 200]
    assert over.status_code == 429
    assert "daily quota of 3 requests" in over.text
    assert over.headers["retry-after"] == "3"
    state.store.close()


async def test_queued_activity_limit_answers_429(tmp_path: Path, store_db: str | None) -> None:
    """--max-queued-activities: unfinished activities per account; the worker is not running,
    so they stay PENDING, and the next POST is refused until one finishes."""
    from bulkops.server.store import write_tx
    from tests.serverkit import asgi_client

    state = make_state(tmp_path, db=store_db, max_queued_activities=2, retry_after=1)
    list_id = make_list(state, "Queue")
    form = {"activityType": "SV_ADD", "data": "Email\na@example.org", "lists": list_uri(list_id)}
    async with asgi_client(state) as client:
        with trio.fail_after(HANG_GUARD):
            accepted = [(await client.post("activities", data=form)).status_code for _ in range(2)]
            refused = await client.post("activities", data=form)
            db = state.store.connection()
            with write_tx(db):
                db.execute("UPDATE activity SET status = 'COMPLETE' WHERE seq = 1")
            again = await client.post("activities", data=form)
    assert accepted == [201, 201]
    assert refused.status_code == 429
    assert "2 unfinished activities" in refused.text
    assert refused.headers["retry-after"] == "1"
    assert again.status_code == 201
    (count,) = state.store.connection().execute("SELECT count(*) FROM activity").fetchone()
    assert count == 3
    state.store.close()


async def test_queued_activity_limit_holds_under_concurrent_posts(
    tmp_path: Path, store_db: str | None, nursery: trio.Nursery
) -> None:
    """Through hypercorn, 8 POSTs at once against a limit of 3: exactly 3 are accepted. (The
    fault plan stalls every activity, so none finishes during the test.)"""
    running = await _serve(
        tmp_path, nursery, store_db, max_queued_activities=3, faults="stall=1:600"
    )
    state = running.state
    list_id = make_list(state, "Burst")
    data = "Email\n" + "\n".join(f"u{i}@example.org" for i in range(2000))
    form = {"activityType": "SV_ADD", "data": data, "lists": list_uri(list_id)}
    statuses: list[int] = []
    async with running.client() as client:

        async def post() -> None:
            statuses.append((await client.post("activities", data=form)).status_code)

        with trio.fail_after(HANG_GUARD):
            async with trio.open_nursery() as posts:
                for _ in range(8):
                    posts.start_soon(post)
    assert sorted(statuses) == [201] * 3 + [429] * 5
    (created,) = state.store.connection().execute("SELECT count(*) FROM activity").fetchone()
    assert created == 3
    state.store.close()


async def test_throttles_are_off_by_default(server_state: object, nursery: trio.Nursery) -> None:
    """Without flags, a burst of requests is never throttled."""
    running = await start_server(nursery, server_state)  # type: ignore[arg-type]
    async with running.client() as client:
        with trio.fail_after(HANG_GUARD):
            statuses = {(await client.get("")).status_code for _ in range(30)}
    assert statuses == {200}


def test_token_bucket_refills_at_the_rate() -> None:
    """Capacity max(1, rate), refilled continuously."""
    bucket = TokenBucket(2.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [True, True, False]
    assert bucket.take(0.5)  # one token after half a second
    assert not bucket.take(0.5)
    assert [bucket.take(10.0) for _ in range(3)] == [True, True, False]  # never more than 2
    slow = TokenBucket(0.5, now=0.0)
    assert slow.take(0.0)
    assert not slow.take(1.0)
    assert slow.take(2.0)


async def test_rate_limit_recovers_on_the_mock_clock(autojump_clock: trio.abc.Clock) -> None:
    """After 1/rate seconds the next request passes (trio time, so no real waiting)."""

    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("not reached in this test")

    throttle = Throttle(app, rate=1.0, daily_quota=None)  # type: ignore[arg-type]
    assert throttle.check("demo") is None
    assert throttle.check("demo") is not None
    await trio.sleep(1.0)
    assert throttle.check("demo") is None


def test_daily_quota_starts_again_the_next_day() -> None:
    """Quota counters are per UTC day."""
    day = [100]

    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("not reached")

    throttle = Throttle(app, rate=None, daily_quota=2, day=lambda: day[0])  # type: ignore[arg-type]
    assert [throttle.check("a") for _ in range(2)] == [None, None]
    assert throttle.check("a") is not None
    assert throttle.check("b") is None
    day[0] += 1
    assert throttle.check("a") is None


@pytest.mark.parametrize(
    ("path", "account"),
    [
        ("/ws/customers/Demo/lists", "demo"),
        ("/ws/customers/demo", "demo"),
        ("/ws/customers/", None),
        ("/other", None),
    ],
)
def test_requests_are_counted_per_account_of_the_path(path: str, account: str | None) -> None:
    """The account is the lower-cased {username} of the path."""
    assert account_of({"path": path}) == account


def test_bad_throttle_settings_are_refused() -> None:
    """A non-positive rate is a configuration error."""

    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("not reached")

    with pytest.raises(ValueError, match="rate"):
        Throttle(app, rate=0, daily_quota=None)  # type: ignore[arg-type]
