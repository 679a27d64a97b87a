"""Padded activity data costs nothing: wide records are cut as read, over-wide ones are row errors.

The memory figures are measured on a real ``bulkops serve`` subprocess (its ``VmHWM``), the
row rules over real HTTP and, for the parser, against :func:`tabulate` of ``csv.reader``'s
uncut records as the oracle.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from bulkops.server.app import ApiState
from bulkops.server.datafile import parse_activity_form, parse_data, tabulate
from bulkops.server.store import now_ms, write_tx
from bulkops.wire.atom.feeds import parse_entry
from bulkops.wire.model import Activity
from tests.pgkit import BOTH_STORES, StoreDb
from tests.serverkit import HANG_GUARD, USER, RunningServer, basic, serve_subprocess, start_server

STORES = BOTH_STORES

LIST_URI = "http://api.constantcontact.com/ws/customers/{user}/lists/{id}"


# -- the parser -------------------------------------------------------------------------------

cells = st.sampled_from(["", " ", "", "x", " y ", "a@example.org"])


@st.composite
def padded_data(draw: st.DrawFn) -> tuple[list[str], list[list[str]]]:
    """A header with empty cells anywhere, and records with long tails of (mostly) blanks."""
    header = ["Email Address", "First Name"]
    for _ in range(draw(st.integers(0, 3))):
        header.insert(draw(st.integers(0, len(header))), "")
    header += [""] * draw(st.integers(0, 40))
    records: list[list[str]] = []
    for _ in range(draw(st.integers(0, 6))):
        record = draw(st.lists(cells, max_size=len(header) + 2))
        tail = [""] * draw(st.integers(0, 200))
        if tail and draw(st.booleans()):
            tail[draw(st.integers(0, len(tail) - 1))] = draw(cells)
        records.append(record + tail)
    return header, records


@given(data=padded_data())
def test_wide_records_are_cut_without_changing_the_table(
    data: tuple[list[str], list[list[str]]],
) -> None:
    """Cells, lines and overflowing rows are those of the uncut records (the oracle)."""
    header, records = data
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(records)
    text = out.getvalue()
    parsed = parse_data(text, max_rows=100)
    read = list(csv.reader(io.StringIO(text, newline=""), skipinitialspace=True))[1:]
    oracle = tabulate(read, parsed.fields)
    mine = tabulate([], parsed.fields)  # the shape, then the parsed cells by column
    assert len(parsed.columns) == len(mine.columns)
    trimmed = [[cell.strip() for cell in column] for column in parsed.columns]
    assert trimmed == oracle.columns
    assert (parsed.lines or list(range(2, 2 + parsed.row_count))) == list(oracle.lines)
    assert frozenset(parsed.overflowing) == oracle.overflowing


def test_a_stored_request_holds_only_the_named_columns() -> None:
    """A header of a million commas stores two columns, not a million."""
    data = "Email Address," + "," * 1_000_000 + "First Name\r\na@example.org" + ",z" * 3 + "\r\n"
    body = httpx.Request(
        "POST",
        "http://x/",
        data={"activityType": "SV_ADD", "lists": LIST_URI.format(user=USER, id=1), "data": data},
    ).read()
    request = parse_activity_form(
        body, "application/x-www-form-urlencoded", max_rows=10, max_bytes=4_000_000
    )
    assert request.fields == ("EmailAddress", "FirstName")
    assert request.table().columns == [["a@example.org"], [""]]
    assert request.overflowing == []
    assert request.column_count == 2


# -- over HTTP --------------------------------------------------------------------------------


def _make_list(state: ApiState, name: str) -> int:
    db = state.store.connection()
    with write_tx(db):
        (account_id,) = db.execute("SELECT id FROM account WHERE username = ?", (USER,)).fetchone()
        cursor = db.execute(
            "INSERT INTO list (account_id, name, short_name, updated) VALUES (?, ?, ?, ?)",
            (account_id, name, name, now_ms()),
        )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


async def _run_activity(client: httpx.AsyncClient, **fields: str) -> Activity:
    with trio.fail_after(HANG_GUARD):
        response = await client.post("activities", data=fields)
        assert response.status_code == 201, response.text
        while True:
            got = await client.get(response.headers["location"])
            activity = parse_entry(got.content)
            assert isinstance(activity, Activity)
            if activity.status in ("COMPLETE", "ERROR"):
                return activity
            await trio.sleep(0.02)


@pytest.fixture
async def client(server_state: ApiState, nursery: trio.Nursery) -> AsyncIterator[httpx.AsyncClient]:
    """The demo account's client on a real server."""
    running: RunningServer = await start_server(nursery, server_state)
    async with running.client() as c:
        yield c


async def test_over_wide_rows_are_row_errors_and_trailing_blanks_cost_nothing(
    client: httpx.AsyncClient, server_state: ApiState
) -> None:
    """A padded header, rows with 200,000 trailing commas: only a non-blank cell past the
    header is an error, reported with its LineNumber."""
    list_id = _make_list(server_state, "Padded")
    pad = "," * 100_000
    data = "\r\n".join(
        [
            "EMAIL ADDRESS,FIRST NAME" + pad,
            "a@example.org,Ann" + "," * 200_000,
            "b@example.org,Bob" + "," * 150_000 + "x",
            "",
            "c@example.org,Cy,,,,z",
            "d@example.org,Di" + "," * 100_001 + " ",
        ]
    )
    activity = await _run_activity(
        client,
        activityType="SV_ADD",
        data=data,
        lists=LIST_URI.format(user=USER, id=list_id),
    )
    assert activity.status == "COMPLETE"
    assert activity.transaction_count == 3
    assert [(e.line, e.email) for e in activity.errors] == [(3, "b@example.org")]
    assert "more values than the header" in activity.errors[0].message


# -- peak memory of a real server ------------------------------------------------------------


def peak_rss_mib(pid: int) -> float:
    """``VmHWM`` of a process, in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert found is not None
    return int(found.group(1)) / 1024


def padded_rows(size: int) -> str:
    """``data`` of ``size`` bytes or so: rows of a million empty cells."""
    return "EMAIL ADDRESS\n" + "".join(
        f"u{i}@example.com" + "," * 1_000_000 + "\n" for i in range(max(1, size // 1_000_000))
    )


def padded_header(size: int) -> str:
    """``data`` whose header is ``size`` bytes of commas, then 100 rows."""
    return "EMAIL ADDRESS" + "," * size + "\n" + "".join(f"h{i}@example.com\n" for i in range(100))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (VmHWM)")
def test_padded_activities_keep_the_servers_peak_memory_small(
    tmp_path: Path, store_db: str | None
) -> None:
    """3 MB of million-cell rows, then a 1 MB padded header: peak RSS under 150 MB."""
    db = StoreDb(store_db or tmp_path / "server.db", home=tmp_path)
    with (
        serve_subprocess(tmp_path, db=db) as served,
        httpx.Client(
            base_url=f"{served.origin}/ws/customers/{USER}/",
            headers={"Authorization": basic()},
            timeout=120,
        ) as http,
    ):
        created = http.post(
            "lists",
            content=b'<entry xmlns="http://www.w3.org/2005/Atom"><content type="application/'
            b'vnd.ctct+xml"><ContactList xmlns="http://ws.constantcontact.com/ns/1.0/">'
            b"<Name>Padded</Name></ContactList></content></entry>",
            headers={"Content-Type": "application/atom+xml"},
        )
        assert created.status_code == 201, created.text
        for data in (padded_rows(3_000_000), padded_header(1_000_000)):
            posted = http.post(
                "activities",
                files={
                    "activityType": (None, "SV_ADD"),
                    "lists": (None, created.headers["location"]),
                    "data": ("data.csv", data.encode()),
                },
            )
            assert posted.status_code == 201, posted.text
            deadline = time.monotonic() + 120
            while "<Status>COMPLETE</Status>" not in http.get(posted.headers["location"]).text:
                assert time.monotonic() < deadline
                time.sleep(0.05)  # polling another process, not timing a result
        assert peak_rss_mib(served.pid) < 150
