"""The import engine against a misbehaving server: the right final state, a truthful report."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from bulkops.engine.client import open_client
from bulkops.engine.imports import ImportOptions, resume_run, run_import
from bulkops.server.app import ServerConfig
from bulkops.stream.options import ChunkLimits
from tests.enginekit import client_config, contact_rows, server_contacts, write_csv
from tests.serverkit import RunningServer, make_state, start_server

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
        with trio.fail_after(60):
            report = await run_import(client, path, options=options, run_dir=tmp_path / "run")
        assert report.state == "stalled"
        assert report.exit_code == 3
        assert "no progress" in report.message
        with trio.fail_after(60):
            finished = await resume_run(client, tmp_path / "run", stall_timeout=30)
    assert finished.state == "complete"
    assert finished.counts.applied == 60
    assert len(server_contacts(state)) == 60
    state.store.close()
