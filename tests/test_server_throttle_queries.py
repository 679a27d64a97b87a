"""The shared throttles' SQL decides exactly as the in-memory token bucket and quota do."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from bulkops.server.app import ServerConfig
from bulkops.server.serve import open_state
from bulkops.server.throttle import TokenBucket
from bulkops.server.throttle_queries import count_request, take_token
from tests.serverkit import DEMO


@settings(max_examples=40, deadline=None)
@given(
    st.floats(0.1, 50),
    st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 3000)), max_size=60),
)
def test_take_token_in_the_database_equals_the_bucket_in_memory(
    rate: float, script: list[tuple[str, int]]
) -> None:
    """For any rate and any requests of two accounts, the same requests pass."""
    with tempfile.TemporaryDirectory() as directory:
        state = open_state(Path(directory) / "s.db", ServerConfig(), accounts=[DEMO])
        db = state.store.connection()  # type: ignore[attr-defined]
        buckets: dict[str, TokenBucket] = {}
        now = 1_000_000
        try:
            for key, dt in script:
                now += dt
                bucket = buckets.setdefault(key, TokenBucket(rate, now / 1000))
                expected = bucket.take(now / 1000)
                assert take_token(db, key, now, rate, max(1.0, rate)) == expected
        finally:
            state.store.close()


def test_the_daily_count_is_per_account_and_day(tmp_path: Path) -> None:
    """quota requests pass each day; another day starts again; unknown names are not counted."""
    state = open_state(tmp_path / "s.db", ServerConfig(), accounts=[DEMO])
    db = state.store.connection()  # type: ignore[attr-defined]
    assert [count_request(db, "demo", 10, 2) for _ in range(3)] == [True, True, False]
    assert count_request(db, "demo", 11, 2)
    assert all(count_request(db, "nobody", 10, 2) for _ in range(5))
    (rows,) = db.execute("SELECT count(*) FROM throttle_day").fetchone()
    assert rows == 1
    state.store.close()


def test_buckets_full_again_are_forgotten(tmp_path: Path) -> None:
    """A new key deletes the rows of buckets that have refilled: the table stays small."""
    state = open_state(tmp_path / "s.db", ServerConfig(), accounts=[DEMO])
    db = state.store.connection()  # type: ignore[attr-defined]
    for i in range(100):
        take_token(db, f"k{i}", 1_000 * i, 2.0, 2.0)  # 2 tokens refill in 1 s
    (rows,) = db.execute("SELECT count(*) FROM throttle_bucket").fetchone()
    assert rows <= 3
    state.store.close()
