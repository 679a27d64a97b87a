"""EXPORT_CONTACTS: the file's layout, options, sort orders, system lists and download."""

from __future__ import annotations

import csv
import io
import sqlite3
from datetime import UTC, datetime

import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from bulkops.server.app import ApiState
from bulkops.server.exports import EXPORT_DIR, _date_sql
from bulkops.server.store import write_tx
from bulkops.wire.model import Activity
from tests.pgkit import BOTH_STORES
from tests.serverkit import HANG_GUARD, RunningServer, start_server
from tests.test_server_activities import list_uri, make_list, run_activity

STORES = BOTH_STORES


@pytest.fixture
async def running(server_state: ApiState, nursery: trio.Nursery) -> RunningServer:
    """The API with its worker, over real HTTP."""
    return await start_server(nursery, server_state)


async def _export(client: httpx.AsyncClient, **fields: object) -> tuple[Activity, httpx.Response]:
    activity = await run_activity(client, activityType="EXPORT_CONTACTS", **fields)
    assert activity.status == "COMPLETE", activity
    suffix = activity.file_name.rsplit(".", 1)[-1]
    with trio.fail_after(HANG_GUARD):
        download = await client.get(f"activities/{activity.id}.{suffix}")
    assert download.status_code == 200
    return activity, download


def _rows(text: str, delimiter: str = ",") -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))


async def _fill(client: httpx.AsyncClient, state: ApiState) -> tuple[int, int]:
    """Two lists: Garden (cy, ana, bo — added in that order) and Roses (ana)."""
    garden, roses = make_list(state, "Garden"), make_list(state, "Roses")
    for data in (
        'Email,First Name,City,Note\ncy@example.org,Cy,"Paris, FR","He said ""hi""\nthen left"',
        "Email,First Name,City\nana@example.org,Zoë,Oslo",
        "Email,First Name,City\nbo@example.org,Bo,",
    ):
        await run_activity(client, activityType="SV_ADD", data=data, lists=list_uri(garden))
        await trio.sleep(0.002)  # distinct membership times for DATE_DESC
    await run_activity(
        client, activityType="SV_ADD", data="Email\nana@example.org", lists=list_uri(roses)
    )
    return garden, roses


async def test_csv_export_with_every_option(running: RunningServer, server_state: ApiState) -> None:
    """Email first, requested columns in order, Date Added, Added By, one List: column each."""
    async with running.client() as client:
        garden, _roses = await _fill(client, server_state)
        activity, download = await _export(
            client,
            listId=list_uri(garden),
            fileType="CSV",
            columns=["FIRST NAME", "note", "City", "EMAIL ADDRESS"],
            exportOptDate="True",
            exportOptSource="true",
            exportListName="TRUE",
            sortBy="EMAIL_ADDRESS",
        )
    assert activity.file_name == f"{activity.id}.csv"
    assert activity.transaction_count == 3
    assert download.headers["content-type"].startswith("text/csv")
    rows = _rows(download.text)
    assert rows[0] == [
        "Email Address",
        "First Name",
        "Note",
        "City",
        "Date Added",
        "Added By",
        "List: Garden",
        "List: Roses",
    ]
    assert [row[:4] for row in rows[1:]] == [
        ["ana@example.org", "Zoë", "", "Oslo"],
        ["bo@example.org", "Bo", "", ""],
        ["cy@example.org", "Cy", 'He said "hi"\nthen left', "Paris, FR"],
    ]
    assert all(row[5] == "ACTION_BY_CUSTOMER" for row in rows[1:])
    assert all(row[4].endswith(" UTC") and row[4][2] == "/" for row in rows[1:])
    assert [row[6:] for row in rows[1:]] == [["x", "x"], ["x", ""], ["x", ""]]
    assert download.content.count(b"\r\n") == 4  # CRLF ends records; the note keeps its LF


async def test_txt_export_is_tab_separated_plain_text(
    running: RunningServer, server_state: ApiState
) -> None:
    """fileType=TXT: tab-separated, text/plain, {id}.txt; DATE_DESC puts the newest first."""
    async with running.client() as client:
        garden, _roses = await _fill(client, server_state)
        activity, download = await _export(
            client, listId=list_uri(garden), fileType="txt", sortBy="DATE_DESC"
        )
        wrong_suffix = await client.get(f"activities/{activity.id}.csv")
    assert activity.file_name == f"{activity.id}.txt"
    assert download.headers["content-type"].startswith("text/plain")
    assert _rows(download.text, "\t") == [
        ["Email Address"],
        ["bo@example.org"],
        ["ana@example.org"],
        ["cy@example.org"],
    ]
    assert wrong_suffix.status_code == 404


@pytest.mark.parametrize(
    ("list_id", "emails", "date_header"),
    [
        ("active", ["act@example.org"], "Date Added"),
        ("removed", ["rem@example.org"], "Date Removed"),
        ("do-not-mail", ["dnm@example.org"], "Date Removed"),
    ],
)
async def test_system_lists_export_by_status(
    running: RunningServer,
    server_state: ApiState,
    list_id: str,
    emails: list[str],
    date_header: str,
) -> None:
    """listId may name a system list: the contacts with that status."""
    db = server_state.store.connection()
    with write_tx(db):
        for email, status in (
            ("act@example.org", "Active"),
            ("rem@example.org", "Removed"),
            ("dnm@example.org", "Do Not Mail"),
        ):
            db.execute(
                "INSERT INTO contact (account_id, email_key, EmailAddress, status, insert_time, "
                "last_update_time, opt_out_time) VALUES (1, ?, ?, ?, 0, 1700000000000, 1)",
                (email, email, status),
            )
    async with running.client() as client:
        _activity, download = await _export(
            client, listId=list_uri(list_id), exportOptDate="true", exportOptSource="true"
        )
    rows = _rows(download.text)
    assert rows[0] == [
        "Email Address",
        date_header,
        date_header.replace("Date", "").strip() + " By",
    ]
    assert [row[0] for row in rows[1:]] == emails


async def test_an_export_file_lives_next_to_the_database(
    running: RunningServer, server_state: ApiState
) -> None:
    """The file is exports/{id}.csv in the data directory; no temporary file is left."""
    make_list(server_state, "Empty")
    async with running.client() as client:
        activity, download = await _export(client, listId=list_uri(1))
    directory = server_state.store.data_dir / EXPORT_DIR
    assert sorted(p.name for p in directory.iterdir()) == [f"{activity.id}.csv"]
    assert (directory / f"{activity.id}.csv").read_bytes() == download.content
    assert download.text == "Email Address\r\n"
    assert activity.transaction_count == 0


async def test_a_big_export_streams_every_row(
    running: RunningServer, server_state: ApiState
) -> None:
    """20,000 members come back, in email order, over a real socket."""
    list_id = make_list(server_state, "Big")
    data = "Email,First Name\n" + "\n".join(f"m{i:05d}@example.org,N{i}" for i in range(20_000))
    async with running.client() as client:
        await run_activity(client, activityType="SV_ADD", data=data, lists=list_uri(list_id))
        activity, download = await _export(client, listId=list_uri(list_id), columns="FIRST NAME")
    rows = _rows(download.text)
    assert activity.transaction_count == 20_000
    assert len(rows) == 20_001
    assert rows[1] == ["m00000@example.org", "N0"]
    assert rows[-1] == ["m19999@example.org", "N19999"]


async def test_downloads_before_completion_or_of_non_exports_are_404(
    running: RunningServer, server_state: ApiState
) -> None:
    """Only a completed export has a file."""
    list_id = make_list(server_state, "Plain")
    async with running.client() as client:
        add = await run_activity(
            client, activityType="SV_ADD", data="Email\np@example.org", lists=list_uri(list_id)
        )
        db = server_state.store.connection()
        # An export still running, in another worker's lease that lasts beyond the test:
        # no worker here may claim it (without a lease one did, on a busy machine, between
        # this insert and the GET: it ended in ERROR, with "no export file").
        with write_tx(db):
            db.execute(
                "INSERT INTO activity (id, account_id, requested_type, type, status, request, "
                "insert_time, updated, lease_owner, lease_expires) VALUES "
                "('a07e1notready000000', 1, 'EXPORT_CONTACTS', 'EXPORT_CONTACTS', 'RUNNING', "
                "NULL, 1, 1, 'elsewhere', 4102444800000)"
            )
        with trio.fail_after(HANG_GUARD):
            not_export = await client.get(f"activities/{add.id}.csv")
            not_ready = await client.get("activities/a07e1notready000000.csv")
    assert not_export.status_code == 404
    assert "no export file" in not_export.text
    assert not_ready.status_code == 404
    assert "not ready" in not_ready.text


@given(st.integers(min_value=0, max_value=4_102_444_800_000))  # 1970 .. 2100
def test_export_dates_read_like_the_retired_service(ms: int) -> None:
    """Dates are rendered in SQL exactly as MM/DD/YYYY hh:mm AM/PM, in UTC."""
    with sqlite3.connect(":memory:") as db:
        (rendered,) = db.execute(f"SELECT {_date_sql(':ms')}", {"ms": ms}).fetchone()
    expected = datetime.fromtimestamp(ms / 1000, UTC).strftime("%m/%d/%Y %I:%M %p UTC")
    assert rendered == expected
