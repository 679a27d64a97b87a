"""The shared throttles decide in the database exactly as the in-memory ones do alone."""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkops.server import pg_throttle
from bulkops.server.app import ServerConfig
from bulkops.server.auth import Authenticator, Denied, LoginLimits
from bulkops.server.http import ApiState
from bulkops.server.serve import open_state
from bulkops.server.throttle import TokenBucket
from bulkops.server.throttle_queries import count_request, take_token
from tests.pgkit import BOTH_STORES, fresh_database
from tests.serverkit import DEMO, basic

STORES = BOTH_STORES


def _take(db: Any, key: str, now: int, rate: float, burst: float) -> bool:
    """The store's shared rate decision (row-locked on PostgreSQL: pg_throttle)."""
    if isinstance(db, sqlite3.Connection):
        return take_token(db, key, now, rate, burst)
    return pg_throttle.take_token(db, key, now, rate, burst)


def _count(db: Any, username: str, day: int, quota: int) -> bool:
    """The store's shared daily-quota decision."""
    if isinstance(db, sqlite3.Connection):
        return count_request(db, username, day, quota)
    return pg_throttle.count_request(db, username, day, quota)


@contextlib.contextmanager
def _state(store: str | None) -> Iterator[ApiState]:
    """A server state on ``store``: None or "sqlite" a new SQLite file, "postgres" a new
    PostgreSQL database, else that database's URL (``store_db``)."""
    with contextlib.ExitStack() as stack:
        if store in (None, "sqlite"):
            db: str | Path = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "s.db"
        elif store == "postgres":
            db = stack.enter_context(fresh_database())
        else:
            db = str(store)
        state = open_state(
            db, ServerConfig(), accounts=[DEMO], data_dir=Path(tempfile.gettempdir())
        )
        try:
            yield state
        finally:
            state.store.close()


@pytest.mark.parametrize("store", BOTH_STORES)
@settings(max_examples=40, deadline=None)
@given(
    st.floats(0.1, 50),
    st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 3000)), max_size=60),
)
def test_take_token_in_the_database_equals_the_bucket_in_memory(
    store: str, rate: float, script: list[tuple[str, int]]
) -> None:
    """For any rate and any requests of two accounts, the same requests pass (a new
    database per example)."""
    with _state(store) as state:
        db = state.store.connection()  # type: ignore[attr-defined]
        buckets: dict[str, TokenBucket] = {}
        now = 1_000_000
        for key, dt in script:
            now += dt
            bucket = buckets.setdefault(key, TokenBucket(rate, now / 1000))
            expected = bucket.take(now / 1000)
            assert _take(db, key, now, rate, max(1.0, rate)) == expected


def test_the_daily_count_is_per_account_and_day(store_db: str | None) -> None:
    """quota requests pass each day; another day starts again; unknown names are not counted."""
    with _state(store_db) as state:
        db = state.store.connection()  # type: ignore[attr-defined]
        assert [_count(db, "demo", 10, 2) for _ in range(3)] == [True, True, False]
        assert _count(db, "demo", 11, 2)
        assert all(_count(db, "nobody", 10, 2) for _ in range(5))
        (rows,) = db.execute("SELECT count(*) FROM throttle_day").fetchone()
        assert rows == 1


def test_buckets_full_again_are_forgotten(store_db: str | None) -> None:
    """A new key deletes the rows of buckets that have refilled: the table stays small."""
    with _state(store_db) as state:
        db = state.store.connection()  # type: ignore[attr-defined]
        for i in range(100):
            _take(db, f"k{i}", 1_000 * i, 2.0, 2.0)  # 2 tokens refill in 1 s
        (rows,) = db.execute("SELECT count(*) FROM throttle_bucket").fetchone()
        assert rows <= 3


def _login(auth: Authenticator, db: sqlite3.Connection, password: str, client: str) -> int:
    try:
        auth.check(db, basic("demo", password, "demo-key"), "demo", client)
    except Denied as exc:
        return exc.status
    return 200


def test_failed_logins_count_across_authenticators_of_one_database(store_db: str | None) -> None:
    """Two processes' authenticators (shared) allow 3 failures of a name between them, not 3
    each; unshared ones (the in-memory path) would allow 6."""
    with _state(store_db) as state:
        db = state.store.connection()  # type: ignore[attr-defined]
        limits = LoginLimits(account_failures=3, window=3600.0)
        one, two = (Authenticator(limits=limits, shared=True) for _ in range(2))
        statuses = [_login((one, two)[i % 2], db, f"wrong{i}", f"10.0.0.{i}") for i in range(6)]
        assert statuses == [401, 401, 401, 429, 429, 429]
        apart = [Authenticator(limits=limits) for _ in range(2)]
        statuses = [_login(apart[i % 2], db, f"bad{i}", f"10.0.1.{i}") for i in range(6)]
        assert statuses == [401] * 6
