"""The import engine against a misbehaving server: the right final state, a truthful report."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio

from bulkops.engine.chunks import ChunkEvent, ChunkState
from bulkops.engine.client import Client, open_client
from bulkops.engine.imports import ImportOptions, resume_run, run_import
from bulkops.engine.journal import Journal
from bulkops.engine.limits import AimdLimiter
from bulkops.engine.lists import resolve_lists
from bulkops.engine.planner import PlannedChunk, Planner
from bulkops.engine.posting import ChunkPoster
from bulkops.engine.progress import NullReporter
from bulkops.engine.tracker import ActivityTracker
from bulkops.server.app import ServerConfig
from bulkops.stream.options import ChunkLimits, ReadOptions
from bulkops.wire.model import Activity
from tests.enginekit import client_config, contact_rows, server_contacts, write_csv
from tests.serverkit import HANG_GUARD, RunningServer, make_state, start_server

FAST = {"poll_min": 0.05, "poll_max": 0.5}


@pytest.fixture
async def faulty(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[RunningServer]:
    """A server that answers 503 and 429, resets and loses connections, and is slow."""
    config = ServerConfig(faults="503=0.15,429=0.15,reset=0.05,lost=0.08,latency=0.1:0.05,seed=11")
    state = make_state(tmp_path / "srv", config)
    try:
        yield await start_server(nursery, state)
    finally:
        state.store.close()


async def test_faults_do_not_change_the_final_state(faulty: RunningServer, tmp_path: Path) -> None:
    """Every row applied exactly once despite 503s, 429s, resets and lost answers."""
    rows = contact_rows(600)
    rows += [["c5@example.org", "Last", "Word", "Reno", "NV"]]
    path = write_csv(tmp_path / "in.csv", rows)
    options = ImportOptions(
        lists=("Faulty",),
        create_lists=True,
        **FAST,  # type: ignore[arg-type]
        limits=ChunkLimits(max_rows=50),
    )
    async with open_client(client_config(faulty, retry_attempts=30)) as client:
        with trio.fail_after(240):
            report = await run_import(client, path, options=options, run_dir=tmp_path / "run")
    assert report.state == "complete"
    counts = report.counts
    assert (counts.read, counts.applied, counts.duplicate, counts.failed) == (601, 600, 1, 0)
    assert report.retries > 0
    assert report.throttled > 0
    state = server_contacts(faulty.state)
    assert len(state) == 600
    assert state["c5@example.org"]["first"] == "Last"
    assert all(contact["lists"] == ["Faulty"] for contact in state.values())
    # Lost answers were reconciled; a chunk sent again after an unanswered POST is flagged
    # whenever it may have been applied twice, so the report never hides a double apply.
    db = faulty.state.store.connection()
    applied = db.execute(
        "SELECT coalesce(sum(transaction_count), 0) FROM activity WHERE status = 'COMPLETE'"
        " AND type LIKE 'ADD_CONTACT%'"
    ).fetchone()[0]
    flagged = sum(a.rows for a in report.activities if a.maybe_twice)
    assert 601 <= applied <= 601 + flagged  # the superseded row was sent once, in chunk 0
    assert all(a.status == "COMPLETE" for a in report.activities)


async def test_a_stalled_activity_stops_the_run_resumably(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """An activity that stays RUNNING past --stall-timeout ends the run as stalled (exit 3)."""
    config = ServerConfig(faults="stall=1.0:3,seed=1")
    state = make_state(tmp_path / "srv", config)
    server = await start_server(nursery, state)
    path = write_csv(tmp_path / "in.csv", contact_rows(60))
    options = ImportOptions(
        lists=("Slow",),
        create_lists=True,
        stall_timeout=0.5,
        **FAST,  # type: ignore[arg-type]
    )
    async with open_client(client_config(server)) as client:
        with trio.fail_after(HANG_GUARD):
            report = await run_import(client, path, options=options, run_dir=tmp_path / "run")
        assert report.state == "stalled"
        assert report.exit_code == 3
        assert "no progress" in report.message
        with trio.fail_after(HANG_GUARD):
            finished = await resume_run(client, tmp_path / "run", stall_timeout=HANG_GUARD)
    assert finished.state == "complete"
    assert finished.counts.applied == 60
    assert len(server_contacts(state)) == 60
    state.store.close()


# -- reconciliation of lost answers against a real server ---------------------------------------

ROWS_PER_CHUNK = 20


@attrs.define
class _Rig:
    """A ChunkPoster of a real journal, on a real server, over chunks of equal size."""

    client: Client
    journal: Journal
    poster: ChunkPoster
    chunks: list[PlannedChunk]


@asynccontextmanager
async def _rig(
    server: RunningServer, tmp_path: Path, nursery: trio.Nursery, count: int
) -> AsyncIterator[_Rig]:
    path = write_csv(tmp_path / "in.csv", contact_rows(count * ROWS_PER_CHUNK))
    async with open_client(client_config(server)) as client:
        lists = await resolve_lists(client, ["Lost"], create=True)
        planner = Planner(
            ReadOptions(),
            ChunkLimits(max_rows=ROWS_PER_CHUNK, min_rows=1),
            lists=[lst.uri for lst in lists],
            kind="add",
            path=str(path),
        )
        events = [*planner.decode(path.read_bytes()), *planner.flush()]
        chunks = [event for event in events if isinstance(event, PlannedChunk)]
        assert len(chunks) == count
        journal = Journal(tmp_path / "run", create=True)
        for chunk in chunks:
            journal.plan(chunk.record)
        tracker = ActivityTracker(client, poll_min=0.01, poll_max=0.1, stall_timeout=60)
        nursery.start_soon(tracker.run)
        poster = ChunkPoster(
            client=client,
            journal=journal,
            reporter=NullReporter(),
            tracker=tracker,
            aimd=AimdLimiter(4),
            stop=trio.Event(),
        )
        try:
            yield _Rig(client, journal, poster, chunks)
        finally:
            journal.close()


def _crashed_while_posting(rig: _Rig, *seqs: int) -> None:
    """The journal as a process killed with these chunks' POSTs in flight leaves it."""
    now = time.time()
    for seq in seqs:
        rig.journal.apply(seq, ChunkEvent.SEND, now=now)


async def test_a_post_answered_while_the_feed_is_read_is_not_adopted(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk whose lost POST created nothing never adopts another POST's activity that was
    answered while its reconciliation read the activities feed (it is sent again)."""
    state = make_state(tmp_path / "srv")
    server = await start_server(nursery, state)
    async with _rig(server, tmp_path, nursery, 2) as rig:
        _crashed_while_posting(rig, 0)  # chunk 0's POST never reached the server
        rig.poster.lose_unanswered()
        read_feed = ChunkPoster._recent_activities

        async def another_post_lands_meanwhile(poster: ChunkPoster, since: float) -> list[Activity]:
            # Another submitter's POST of chunk 1 (same size, same lists) is answered
            # between the start of the reconciliation and its feed read.
            other = rig.journal.chunk(1)
            if other is not None and other.state is ChunkState.PLANNED:
                assert await poster.ensure_posted(rig.chunks[1]) is not None
            return await read_feed(poster, since)

        monkeypatch.setattr(ChunkPoster, "_recent_activities", another_post_lands_meanwhile)
        with trio.fail_after(HANG_GUARD):
            mine = await rig.poster.ensure_posted(rig.chunks[0])
        other = rig.journal.chunk(1)
        assert other is not None
        assert other.activity_id is not None
        assert mine != other.activity_id
        record = rig.journal.chunk(0)
        assert record is not None
        assert record.posts == 2  # reconciled ABSENT, then sent again
    state.store.close()


async def test_an_activity_a_lost_post_creates_late_is_not_adopted_by_another_chunk(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """A lost POST that was reconciled ABSENT may still create its activity afterwards (the
    server finishes a request whose client died); another chunk's reconciliation must not
    adopt that activity: it cannot tell it from its own, so it sends its chunk again and both
    chunks are flagged as maybe sent twice."""
    state = make_state(tmp_path / "srv")
    server = await start_server(nursery, state)
    async with _rig(server, tmp_path, nursery, 2) as rig:
        _crashed_while_posting(rig, 0, 1)  # neither POST has reached the server yet
        rig.poster.lose_unanswered()
        with trio.fail_after(HANG_GUARD):
            resent = await rig.poster.ensure_posted(rig.chunks[1])  # nothing found: ABSENT
            # Now chunk 1's first POST reaches the server after all.
            late = await rig.client.post_activity(rig.chunks[1].body, rig.chunks[1].content_type)
            mine = await rig.poster.ensure_posted(rig.chunks[0])
        assert resent is not None
        assert mine not in (late.id, resent)
        zero, one = rig.journal.chunk(0), rig.journal.chunk(1)
        assert zero is not None
        assert one is not None
        assert (zero.posts, zero.maybe_twice) == (2, True)
        assert one.maybe_twice  # its late activity and its second POST both apply it
    state.store.close()
