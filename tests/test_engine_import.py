"""The import engine against the real server over HTTP: state, outcomes, report, resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import trio

from bulkops.engine.client import open_client
from bulkops.engine.imports import ImportOptions, resume_run, run_clear, run_import
from bulkops.engine.progress import NullReporter
from bulkops.errors import ConfigError
from bulkops.stream.options import ChunkLimits
from tests.enginekit import client_config, contact_rows, server_contacts, write_csv
from tests.serverkit import HANG_GUARD, RunningServer

FAST = {"poll_min": 0.05, "poll_max": 0.5}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


async def test_valid_invalid_and_duplicate_rows_each_get_their_outcome(
    server: RunningServer, tmp_path: Path
) -> None:
    """Applied rows land on the server; rejected and duplicate rows are reported, not sent."""
    rows = contact_rows(40)
    rows.insert(5, ["not-an-email", "X", "Y", "Z", "MA"])  # line 7: rejected
    rows.insert(9, ["bad.state@example.org", "X", "Y", "Z", "ZZ"])  # line 11: rejected
    rows.append(["C3@example.org", "Later", "Wins", "Denver", "CO"])  # line 44: replaces line 5
    path = write_csv(tmp_path / "in.csv", rows)
    options = ImportOptions(lists=("Newsletter",), create_lists=True, **FAST)  # type: ignore[arg-type]
    async with open_client(client_config(server)) as client:
        with trio.fail_after(HANG_GUARD):
            report = await run_import(client, path, options=options, run_dir=tmp_path / "run")
    counts = report.counts
    assert (counts.read, counts.applied, counts.rejected, counts.duplicate, counts.failed) == (
        43,
        40,
        2,
        1,
        0,
    )
    assert counts.balanced
    assert report.state == "complete"
    assert report.exit_code == 2
    state = server_contacts(server.state)
    assert len(state) == 40
    assert state["c3@example.org"]["first"] == "Later"  # the later row won
    assert state["c0@example.org"]["lists"] == ["Newsletter"]
    assert state["c0@example.org"]["status"] == "Active"
    rejected = read_csv(Path(report.files["rejected"]))
    assert [r["line"] for r in rejected] == ["7", "11"]
    assert "email" in rejected[0]["reason"].lower()
    assert rejected[1]["US State/CA Province"] == "ZZ"
    duplicates = read_csv(Path(report.files["duplicates"]))
    assert [(d["line"], d["replaced_by_line"]) for d in duplicates] == [("5", "44")]
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["counts"]["applied"] == 40


async def test_bodies_bigger_than_a_send_piece_arrive_whole(
    server: RunningServer, tmp_path: Path
) -> None:
    """A chunk body above 256 KiB goes out in pieces with its Content-Length; the server
    gets every row of it (two chunks of ~290 KB here)."""
    path = write_csv(tmp_path / "in.csv", contact_rows(12_000))
    options = ImportOptions(
        lists=("Big",),
        create_lists=True,
        **FAST,  # type: ignore[arg-type]
        limits=ChunkLimits(max_rows=6_000),
    )
    async with open_client(client_config(server)) as client:
        with trio.fail_after(120):
            report = await run_import(client, path, options=options, run_dir=tmp_path / "run")
        assert client.statistics().bytes_sent > 2 * 256 * 1024
    assert len(report.activities) == 2
    assert report.counts.applied == 12_000
    assert len(server_contacts(server.state)) == 12_000


async def test_server_row_errors_become_failed_rows_with_their_source_line(
    server: RunningServer, tmp_path: Path
) -> None:
    """A Do-Not-Mail contact in an add fails on the server; failed.csv names its line."""
    async with open_client(client_config(server)) as client:
        first = write_csv(tmp_path / "first.csv", contact_rows(30))
        options = ImportOptions(lists=("A",), create_lists=True, **FAST)  # type: ignore[arg-type]
        with trio.fail_after(HANG_GUARD):
            await run_import(client, first, options=options, run_dir=tmp_path / "r1")
        contact_id = (
            server.state.store.connection()
            .execute("SELECT id FROM contact WHERE email_key = 'c7@example.org'")
            .fetchone()[0]
        )
        with trio.fail_after(HANG_GUARD):
            await client.request("DELETE", f"contacts/{contact_id}")  # opt out
        second = write_csv(tmp_path / "second.csv", contact_rows(30))
        with trio.fail_after(HANG_GUARD):
            report = await run_import(client, second, options=options, run_dir=tmp_path / "r2")
    assert (report.counts.applied, report.counts.failed) == (29, 1)
    failed = read_csv(Path(report.files["failed"]))
    assert [(f["line"], f["Email Address"]) for f in failed] == [("9", "c7@example.org")]
    assert failed[0]["City"] in ("Boston", "Québec, QC", 'The "Big" Apple')
    assert "do not mail" in failed[0]["reason"].lower()
    assert server_contacts(server.state)["c7@example.org"]["status"] == "Do Not Mail"


async def test_small_limits_make_many_chunks_and_all_rows_arrive_in_order(
    server: RunningServer, tmp_path: Path
) -> None:
    """With 50-row chunks, 300 rows and duplicates across chunks end in file order."""
    rows = contact_rows(300)
    rows += [["c10@example.org", "Final", "Ten", "Austin", "TX"]]  # same email, chunk far later
    path = write_csv(tmp_path / "in.csv", rows)
    options = ImportOptions(
        lists=("Big",),
        create_lists=True,
        concurrency=4,
        **FAST,  # type: ignore[arg-type]
        limits=ChunkLimits(max_rows=50),
    )
    async with open_client(client_config(server)) as client:
        with trio.fail_after(120):
            report = await run_import(client, path, options=options, run_dir=tmp_path / "run")
    assert len(report.activities) >= 6
    assert all(a.rows <= 50 for a in report.activities)
    assert report.counts.applied == 300
    assert server_contacts(server.state)["c10@example.org"]["first"] == "Final"


async def test_remove_and_clear_take_contacts_off_lists(
    server: RunningServer, tmp_path: Path
) -> None:
    """remove: listed emails leave the list (unknown ones fail); clear: the list empties."""
    async with open_client(client_config(server)) as client:
        path = write_csv(tmp_path / "in.csv", contact_rows(40))
        add = ImportOptions(lists=("L1", "L2"), create_lists=True, **FAST)  # type: ignore[arg-type]
        with trio.fail_after(HANG_GUARD):
            await run_import(client, path, options=add, run_dir=tmp_path / "add")
        gone = write_csv(
            tmp_path / "gone.csv",
            [[f"c{i}@example.org"] for i in range(30)] + [["stranger@example.org"]],
            header=["Email"],
        )
        remove = ImportOptions(kind="remove", lists=("L1",), **FAST)  # type: ignore[arg-type]
        with trio.fail_after(HANG_GUARD):
            removed = await run_import(client, gone, options=remove, run_dir=tmp_path / "rm")
        assert (removed.counts.applied, removed.counts.failed) == (30, 1)
        state = server_contacts(server.state)
        assert state["c0@example.org"]["lists"] == ["L2"]
        assert state["c35@example.org"]["lists"] == ["L1", "L2"]
        with trio.fail_after(HANG_GUARD):
            cleared = await run_clear(client, lists=["L2"], run_dir=tmp_path / "clear")
        assert cleared.state == "complete"
        state = server_contacts(server.state)
        assert state["c0@example.org"] == {
            **state["c0@example.org"],
            "lists": [],
            "status": "Removed",
        }
        assert state["c35@example.org"]["lists"] == ["L1"]


async def test_unknown_lists_are_an_error_unless_created(
    server: RunningServer, tmp_path: Path
) -> None:
    """Naming a list that does not exist fails before anything is sent."""
    path = write_csv(tmp_path / "in.csv", contact_rows(30))
    async with open_client(client_config(server)) as client:
        with (
            trio.fail_after(HANG_GUARD),
            pytest.raises(ConfigError, match="`create_lists` creates it"),
        ):
            await run_import(client, path, options=ImportOptions(lists=("Nope",)))
    assert server_contacts(server.state) == {}


async def test_a_stopped_run_resumes_without_sending_done_chunks_again(
    server: RunningServer, tmp_path: Path
) -> None:
    """Stop after the first activities, resume, and every row is applied exactly once."""
    path = write_csv(tmp_path / "in.csv", contact_rows(400))
    options = ImportOptions(
        lists=("R",),
        create_lists=True,
        concurrency=1,
        max_queued=1,
        **FAST,  # type: ignore[arg-type]
        limits=ChunkLimits(max_rows=50),
    )
    stop = trio.Event()

    class StopAfterFirstActivity(NullReporter):
        def event(self, kind: str, **data: object) -> None:
            if kind == "activity_done":
                stop.set()

    async with open_client(client_config(server)) as client:
        with trio.fail_after(120):
            first = await run_import(
                client,
                path,
                options=options,
                run_dir=tmp_path / "run",
                stop=stop,
                reporter=StopAfterFirstActivity(),
            )
        assert first.state == "interrupted"
        assert first.exit_code == 3
        assert 0 < first.counts.applied < 400
        with trio.fail_after(120):
            second = await resume_run(client, tmp_path / "run")
    assert second.state == "complete"
    assert second.counts.applied == 400
    assert sum(a.posts for a in second.activities) == len(second.activities)
    assert len(server_contacts(server.state)) == 400
