"""Activity leases: the pure table (hypothesis), each store's claims against it, two workers."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkops.errors import LifecycleError
from bulkops.server import activity_queries as aq
from bulkops.server.app import ApiState, ServerConfig
from bulkops.server.datafile import ActivityRequest, encode_request
from bulkops.server.leases import (
    TRANSITIONS,
    Claim,
    Lease,
    LeaseError,
    LeaseEvent,
    LeaseState,
    claimable,
    new_worker_id,
    next_lease,
    owner_is_dead_here,
)
from bulkops.server.serve import open_state
from bulkops.server.store import Store, now_ms, write_tx
from bulkops.server.worker import Worker
from tests.pgkit import BOTH_STORES, fresh_database
from tests.serverkit import DEMO, HANG_GUARD

STORES = BOTH_STORES

WORKERS = ("w1", "w2", "w3")
LEASE_MS = 1000

# One step: (worker, event, milliseconds since the previous step).
steps = st.lists(
    st.tuples(st.sampled_from(WORKERS), st.sampled_from(LeaseEvent), st.integers(0, 1500)),
    max_size=40,
)


def _try(lease: Lease, event: LeaseEvent, worker: str, now: int) -> Lease | None:
    try:
        return next_lease(lease, event, worker=worker, now=now, lease_ms=LEASE_MS)
    except LeaseError:
        return None


@given(steps)
def test_at_most_one_worker_holds_an_unexpired_lease(
    script: list[tuple[str, LeaseEvent, int]],
) -> None:
    """Whatever the workers do, a claim never takes a lease before it expires, the holder's
    expiry never moves back, a lease finishes once, and nothing follows DONE."""
    lease, now, finished = Lease(state=LeaseState.FREE), 0, 0
    for worker, event, dt in script:
        now += dt
        after = _try(lease, event, worker, now)
        if after is None:
            continue
        if event is LeaseEvent.CLAIM:
            assert lease.state is LeaseState.FREE or lease.expires <= now
            assert after.owner == worker
            assert after.expires == now + LEASE_MS
        else:
            assert lease.owner == worker  # only the owner renews, releases, finishes
        if event is LeaseEvent.RENEW:
            assert after.expires >= lease.expires
        if after.state is LeaseState.DONE:
            finished += 1
        assert lease.state is not LeaseState.DONE
        lease = after
    assert finished <= 1


@given(st.lists(st.integers(0, LEASE_MS - 1), max_size=30), st.sampled_from(WORKERS[1:]))
def test_a_worker_renewing_in_time_never_loses_its_lease(gaps: list[int], rival: str) -> None:
    """Renewals less than a lease apart keep every rival's claim out."""
    now = 0
    lease = next_lease(
        Lease(state=LeaseState.FREE), LeaseEvent.CLAIM, worker="w1", now=now, lease_ms=LEASE_MS
    )
    for gap in gaps:
        now += gap
        assert _try(lease, LeaseEvent.CLAIM, rival, now) is None
        lease = next_lease(lease, LeaseEvent.RENEW, worker="w1", now=now, lease_ms=LEASE_MS)
    assert lease.owner == "w1"


@given(st.integers(0, 10 * LEASE_MS), st.sampled_from(WORKERS[1:]))
def test_a_silent_worker_loses_its_lease_once_it_expires(silence: int, rival: str) -> None:
    """A worker that stops renewing keeps its lease exactly until it expires."""
    lease = next_lease(
        Lease(state=LeaseState.FREE), LeaseEvent.CLAIM, worker="w1", now=0, lease_ms=LEASE_MS
    )
    taken = _try(lease, LeaseEvent.CLAIM, rival, silence)
    assert (taken is not None) == (silence >= LEASE_MS) == claimable(lease, silence)


def test_the_table_lets_nothing_leave_done() -> None:
    """DONE has no way out, and only HELD can be renewed, released or finished."""
    assert not [pair for pair in TRANSITIONS if pair[0] is LeaseState.DONE]
    assert {event for state, event in TRANSITIONS if state is LeaseState.FREE} == {LeaseEvent.CLAIM}


# -- the stores' implementation follows the table ---------------------------------------------


def _open(directory: Path, store_db: str | None) -> ApiState:
    return open_state(
        store_db or directory / "server.db", ServerConfig(), accounts=[DEMO], data_dir=directory
    )


def _store_with_one_activity(directory: Path, store_db: str | None = None) -> Store:
    state = _open(directory, store_db)
    with write_tx(state.store.connection()) as db:
        db.execute(
            "INSERT INTO activity (id, account_id, requested_type, type, status, insert_time, "
            "updated) VALUES ('a1', 1, 'SV_ADD', 'SV_ADD', 'QUEUED', 0, 0)"
        )
    return state.store  # type: ignore[return-value]


def _row_lease(db: sqlite3.Connection) -> Lease:
    status, owner, expires = db.execute(
        "SELECT status, lease_owner, lease_expires FROM activity WHERE id = 'a1'"
    ).fetchone()
    if status == "RUNNING":
        return Lease(state=LeaseState.HELD, owner=owner, expires=expires)
    if status in ("COMPLETE", "ERROR"):
        assert owner is None
        return Lease(state=LeaseState.DONE)
    assert owner is None
    return Lease(state=LeaseState.FREE)


def _claim(db: Any, worker: str, now: int, lease_ms: int) -> Claim | None:
    """The store's claim: the shared SQL on SQLite, ``SKIP LOCKED`` on PostgreSQL."""
    if isinstance(db, sqlite3.Connection):
        return aq.claim_activity(db, worker, now, lease_ms)
    from bulkops.server import pg_claims

    return pg_claims.claim_activity(db, worker, now, lease_ms)


def _store_step(db: sqlite3.Connection, event: LeaseEvent, worker: str, now: int) -> bool:
    if event is LeaseEvent.CLAIM:
        return _claim(db, worker, now, LEASE_MS) is not None
    if event is LeaseEvent.RENEW:
        return aq.renew_lease(db, "a1", worker, now, LEASE_MS)
    if event is LeaseEvent.RELEASE:
        return aq.release_activity(db, "a1", worker, now)
    try:
        aq.fail_activity(db, "a1", worker)
    except LeaseError:
        return False
    return True


@pytest.mark.parametrize("store_kind", BOTH_STORES)
@settings(max_examples=40, deadline=None)
@given(steps)
def test_the_stores_claims_follow_the_table(
    store_kind: str, script: list[tuple[str, LeaseEvent, int]]
) -> None:
    """Claim, renew, release and finish on a real database agree with ``next_lease`` (a new
    database per example)."""
    with contextlib.ExitStack() as stack:
        directory = stack.enter_context(tempfile.TemporaryDirectory())
        url = stack.enter_context(fresh_database()) if store_kind == "postgres" else None
        store = _store_with_one_activity(Path(directory), url)
        db = store.connection()
        model, now = Lease(state=LeaseState.FREE), 10_000
        try:
            for worker, event, dt in script:
                now += dt
                expected = _try(model, event, worker, now)
                assert _store_step(db, event, worker, now) == (expected is not None)
                model = expected or model
                assert _row_lease(db) == model
        finally:
            store.close()


def test_a_live_lease_is_not_claimed_and_an_expired_one_is(
    tmp_path: Path, store_db: str | None
) -> None:
    """A second worker finds nothing while the first's lease runs, and takes it over after."""
    store = _store_with_one_activity(tmp_path, store_db)
    db = store.connection()
    first = _claim(db, "w1", 1_000, LEASE_MS)
    assert first is not None
    assert not first.reclaimed
    assert _claim(db, "w2", 1_000 + LEASE_MS - 1, LEASE_MS) is None
    second = _claim(db, "w2", 1_000 + LEASE_MS, LEASE_MS)
    assert second is not None
    assert second.reclaimed
    assert not aq.renew_lease(db, "a1", "w1", 2_500, LEASE_MS)  # the first one lost it
    store.close()


def test_dead_local_owners_are_recognised() -> None:
    """Only a process of this host that is gone counts as dead; others wait for expiry."""
    assert not owner_is_dead_here(new_worker_id())  # this very process
    assert not owner_is_dead_here("elsewhere.example:1:abcd")
    assert not owner_is_dead_here("garbage")
    assert owner_is_dead_here(f"{socket.gethostname()}:{2**22 + 12345}:abcd")  # beyond pid_max


async def test_a_worker_takes_over_an_activity_whose_lease_expired(
    tmp_path: Path, store_db: str | None
) -> None:
    """A claim by a worker that never renews expires; a running worker then completes it."""
    state = _open(tmp_path, store_db)
    db = state.store.connection()  # type: ignore[attr-defined]
    with write_tx(db):
        db.execute(
            "INSERT INTO list (id, account_id, name, short_name, updated) "
            "VALUES (7, 1, 'L', 'L', 0)"
        )
    request = ActivityRequest(
        type="SV_ADD", list_ids=(7,), fields=("EmailAddress",), columns=[["x@example.org"]]
    )
    row = await state.store.create_activity(1, request, encode_request(request), None)
    # A worker on another machine claimed it, then vanished: its lease ran out long ago.
    gone = await state.store.claim_activity("other-host:1:dead", now_ms() - 60_000, 1.0)
    assert gone is not None
    assert gone.activity_id == row.id
    # Its own lease is long: a busy machine must not make it lose the activity it took over.
    worker = Worker(state, lease_seconds=60.0, poll_interval=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.serve)
        with trio.fail_after(HANG_GUARD):
            while worker.statistics().completed < 1:  # noqa: ASYNC110 - counters, no event
                await trio.sleep(0.02)
        nursery.cancel_scope.cancel()
    assert worker.statistics().recovered == 1
    status, owner = db.execute("SELECT status, lease_owner FROM activity").fetchone()
    assert (status, owner) == ("COMPLETE", None)
    state.store.close()


@pytest.mark.parametrize("bad", [{"concurrency": 0}, {"lease_seconds": 0}, {"poll_interval": -1}])
def test_worker_settings_must_be_positive(tmp_path: Path, bad: dict[str, float]) -> None:
    """A worker that could never run or renew is refused at once."""
    state = open_state(tmp_path / "server.db", ServerConfig(), accounts=[DEMO])
    with pytest.raises(ValueError, match="positive"):
        Worker(state, **bad)  # type: ignore[arg-type]
    state.store.close()


async def test_two_workers_running_one_activity_apply_it_once(
    tmp_path: Path, store_db: str | None
) -> None:
    """A worker that ran past its lease and the one that took it over both apply: the first
    commit completes the activity, the second finds it COMPLETE and rolls back whole."""
    state = _open(tmp_path, store_db)
    db = state.store.connection()  # type: ignore[attr-defined]
    with write_tx(db):
        db.execute(
            "INSERT INTO list (id, account_id, name, short_name, updated) "
            "VALUES (7, 1, 'L', 'L', 0)"
        )
    emails = [f"e{i}@example.org" for i in range(50)]
    request = ActivityRequest(
        type="SV_ADD", list_ids=(7,), fields=("EmailAddress",), columns=[emails]
    )
    row = await state.store.create_activity(1, request, encode_request(request), None)
    now = now_ms()
    slow = _claim(db, "slow", now - 10_000, 1_000)  # its lease ran out at once
    fresh = _claim(db, "fresh", now, 60_000)
    assert slow is not None
    assert fresh is not None
    assert fresh.reclaimed
    assert await state.store.apply_activity(row.id, 1, request) == (50, 0)  # "slow" commits
    with pytest.raises(LifecycleError, match="COMPLETE"):
        await state.store.apply_activity(row.id, 1, request)  # "fresh" cannot
    with pytest.raises(LeaseError):
        await state.store.fail_activity(row.id, "fresh")  # nor mark it ERROR
    (members,) = db.execute("SELECT count(*) FROM membership WHERE list_id = 7").fetchone()
    (count,) = db.execute("SELECT member_count FROM list WHERE id = 7").fetchone()
    assert members == count == 50
    (status,) = db.execute("SELECT status FROM activity").fetchone()
    assert status == "COMPLETE"
    state.store.close()
