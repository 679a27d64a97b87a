"""Bulk activities over real HTTP: create, run, poll, errors, listing, limits (spec §7)."""

from __future__ import annotations

import logging
import re
import threading
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from bulkops.server.app import ApiState
from bulkops.server.datafile import (
    RequestProblem,
    decode_request,
    encode_request,
    parse_activity_form,
)
from bulkops.server.store import now_ms, write_tx
from bulkops.server.worker import worker_for
from bulkops.wire.activity import ActivityStatus, check_observations
from bulkops.wire.atom.feeds import parse_entry, parse_feed
from bulkops.wire.model import Activity
from tests.pgkit import BOTH_STORES
from tests.serverkit import (
    HANG_GUARD,
    USER,
    RunningServer,
    add_account,
    asgi_client,
    basic,
    make_state,
    start_server,
)

STORES = BOTH_STORES

ATOM = "http://www.w3.org/2005/Atom"
CTCT = "http://ws.constantcontact.com/ns/1.0/"
NS = {"atom": ATOM, "ct": CTCT}


# -- helpers ----------------------------------------------------------------------------------


def make_list(state: ApiState, name: str, username: str = USER) -> int:
    """Create a contact list with direct SQL; return its id."""
    db = state.store.connection()
    with write_tx(db):
        (account_id,) = db.execute(
            "SELECT id FROM account WHERE username = ?", (username,)
        ).fetchone()
        cursor = db.execute(
            "INSERT INTO list (account_id, name, short_name, updated) VALUES (?, ?, ?, ?)",
            (account_id, name, name, now_ms()),
        )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def list_uri(list_id: int | str, username: str = USER) -> str:
    """A list URI as clients of the retired service sent it (http, legacy host)."""
    return f"http://api.constantcontact.com/ws/customers/{username}/lists/{list_id}"


def contacts(state: ApiState) -> dict[str, tuple[str, str, str]]:
    """``email_key -> (FirstName, City, status)`` of every contact."""
    db = state.store.connection()
    return {
        row[0]: (row[1], row[2], row[3])
        for row in db.execute("SELECT email_key, FirstName, City, status FROM contact")
    }


def members(state: ApiState, list_id: int) -> set[str]:
    """Email keys of a list's members."""
    db = state.store.connection()
    return {
        row[0]
        for row in db.execute(
            "SELECT c.email_key FROM membership m JOIN contact c ON c.id = m.contact_id "
            "WHERE m.list_id = ?",
            (list_id,),
        )
    }


async def wait_final(client: httpx.AsyncClient, location: str) -> Activity:
    """Poll an activity until COMPLETE or ERROR, checking every status seen against the table."""
    seen: list[ActivityStatus] = []
    with trio.fail_after(HANG_GUARD):
        while True:
            response = await client.get(location)
            assert response.status_code == 200, response.text
            activity = parse_entry(response.content)
            assert isinstance(activity, Activity)
            seen.append(ActivityStatus(activity.status))
            check_observations(seen)
            if seen[-1].is_final:
                return activity
            await trio.sleep(0.01)


async def run_activity(client: httpx.AsyncClient, **fields: object) -> Activity:
    """POST an activity (urlencoded), expect 201, and wait until it is final."""
    with trio.fail_after(HANG_GUARD):
        response = await client.post("activities", data=fields)  # type: ignore[arg-type]
    assert response.status_code == 201, response.text
    return await wait_final(client, response.headers["location"])


@pytest.fixture
async def running(server_state: ApiState, nursery: trio.Nursery) -> RunningServer:
    """The API with its worker, over real HTTP."""
    return await start_server(nursery, server_state)


@pytest.fixture
async def client(running: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    """The demo account's client."""
    async with running.client() as c:
        yield c


# -- acceptance 1: a client written for the retired service -----------------------------------


class LegacyClient:
    """What a 2010 client did: hand-built urlencoded bodies, Basic ``key%user``, lxml XPath,
    ``<id>`` rewritten onto the host it talks to, ``{id}.csv`` for the export file."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.http = httpx.AsyncClient(headers={"Authorization": basic()}, timeout=HANG_GUARD)
        self.base = f"{origin}/ws/customers/{USER}"

    def local(self, uri: str) -> str:
        return self.origin + re.sub(r"^https?://[^/]+", "", uri)

    async def create(self, body: str) -> str:
        response = await self.http.post(
            f"{self.base}/activities",
            content=body.encode("ascii"),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 201, response.text
        root = etree.fromstring(response.content)
        entry_id = root.findtext(f"{{{ATOM}}}id")
        assert entry_id is not None
        assert response.headers["location"].endswith(entry_id.rsplit("/", 1)[-1])
        return entry_id

    async def poll(self, activity_uri: str) -> etree._Element:
        with trio.fail_after(HANG_GUARD):
            while True:
                response = await self.http.get(self.local(activity_uri))
                assert response.status_code == 200
                root = etree.fromstring(response.content)
                status = root.findtext(".//ct:Activity/ct:Status", namespaces=NS)
                if status == "COMPLETE":
                    return root
                assert status in ("PENDING", "QUEUED", "RUNNING"), status
                await trio.sleep(0.02)

    @staticmethod
    def errors(entry: etree._Element) -> list[tuple[int, str, str]]:
        return [
            (
                int(error.findtext("ct:LineNumber", namespaces=NS) or "0"),
                error.findtext("ct:EmailAddress", namespaces=NS) or "",
                error.findtext("ct:Message", namespaces=NS) or "",
            )
            for error in entry.iterfind(".//ct:Errors/ct:Error", namespaces=NS)
        ]

    async def aclose(self) -> None:
        await self.http.aclose()


def _enc(value: str) -> str:
    return quote(value, safe="").replace("%20", "+")


async def test_a_legacy_client_runs_every_activity_type(
    running: RunningServer, server_state: ApiState
) -> None:
    """Acceptance 1: add, add-only-emails, remove, clear and export, polled to COMPLETE,
    errors read with line numbers, the export downloaded and the activities listed."""
    spring, autumn = make_list(server_state, "Spring"), make_list(server_state, "Autumn")
    legacy = LegacyClient(running.origin)
    try:
        # Example A of the spec: SV_ADD with spaces after commas, two lists, a bad state.
        data = (
            "Email Address,First Name,Last Name,US State/CA Province\n"
            "ana@example.org, Ana, Diaz, MA\n"
            'bo@example.org, Bo, "Chen, Jr", Nowhere\n'
            "cy@example.org, Cy, Ito, QC"
        )
        body = (
            f"activityType=SV_ADD&data={_enc(data)}"
            f"&lists={_enc(list_uri(spring))}&lists={_enc(list_uri(autumn))}"
        )
        entry = await legacy.poll(await legacy.create(body))
        assert entry.findtext(".//ct:Type", namespaces=NS) == "ADD_CONTACT_DETAIL"
        assert entry.findtext(".//ct:TransactionCount", namespaces=NS) == "2"
        assert legacy.errors(entry) == [
            (3, "bo@example.org", 'Unknown US/Canadian state/prov "Nowhere"')
        ]
        for tag in ("RunStartTime", "RunFinishTime", "InsertTime"):
            assert entry.findtext(f".//ct:{tag}", namespaces=NS)

        # ADD_CONTACTS with only an email column reports ADD_CONTACTS.
        body = (
            f"activityType=ADD_CONTACTS&data={_enc('EMAIL ADDRESS' + chr(10) + 'dee@example.org')}"
            f"&lists={_enc(list_uri(spring))}"
        )
        entry = await legacy.poll(await legacy.create(body))
        assert entry.findtext(".//ct:Type", namespaces=NS) == "ADD_CONTACTS"
        assert members(server_state, spring) == {
            "ana@example.org",
            "cy@example.org",
            "dee@example.org",
        }

        # Example B: remove; one address is not on the list.
        body = (
            "activityType=REMOVE_CONTACTS_FROM_LISTS&data=Email+Address%0D%0Aana%40example.org"
            f"%0D%0Azed%40example.org&lists={_enc(list_uri(spring))}"
        )
        entry = await legacy.poll(await legacy.create(body))
        assert entry.findtext(".//ct:Type", namespaces=NS) == "REMOVE_CONTACTS_FROM_LISTS"
        assert legacy.errors(entry) == [
            (3, "zed@example.org", "zed@example.org (not found in subscriber list)")
        ]
        assert "ana@example.org" not in members(server_state, spring)
        assert contacts(server_state)["ana@example.org"][2] == "Active"  # still on Autumn

        # Example D: export Spring, then download {id}.csv.
        body = (
            "activityType=EXPORT_CONTACTS&fileType=CSV&exportOptDate=true&exportOptSource=true"
            "&sortBy=EMAIL_ADDRESS&columns=EMAIL%20ADDRESS&columns=FIRST%20NAME"
            f"&columns=LAST%20NAME&listId={_enc(list_uri(spring))}"
        )
        export_uri = await legacy.create(body)
        entry = await legacy.poll(export_uri)
        file_name = entry.findtext(".//ct:FileName", namespaces=NS)
        assert file_name == export_uri.rsplit("/", 1)[-1] + ".csv"
        download = await legacy.http.get(legacy.local(export_uri) + ".csv")
        assert download.status_code == 200
        assert download.headers["content-type"].startswith("text/csv")
        lines = download.text.splitlines()
        assert lines[0] == "Email Address,First Name,Last Name,Date Added,Added By"
        assert [line.split(",")[:3] for line in lines[1:]] == [
            ["cy@example.org", "Cy", "Ito"],
            ["dee@example.org", "", ""],
        ]
        assert all(line.endswith(",ACTION_BY_CUSTOMER") for line in lines[1:])

        # Example C: clear both lists; everybody ends Removed.
        body = (
            "activityType=CLEAR_CONTACTS_FROM_LISTS"
            f"&lists={_enc(list_uri(spring))}&lists={_enc(list_uri(autumn))}"
        )
        entry = await legacy.poll(await legacy.create(body))
        assert entry.findtext(".//ct:TransactionCount", namespaces=NS) == "4"  # memberships
        assert members(server_state, spring) == members(server_state, autumn) == set()
        assert {status for _f, _c, status in contacts(server_state).values()} == {"Removed"}

        # The listing, newest first, carries the entries with their Errors.
        feed = await legacy.http.get(f"{legacy.base}/activities")
        root = etree.fromstring(feed.content)
        assert root.findtext(f"{{{ATOM}}}title") == "Bulk Activity"
        types = [t.text for t in root.iterfind(".//ct:Activity/ct:Type", namespaces=NS)]
        assert types == [
            "CLEAR_CONTACTS_FROM_LISTS",
            "EXPORT_CONTACTS",
            "REMOVE_CONTACTS_FROM_LISTS",
            "ADD_CONTACTS",
            "ADD_CONTACT_DETAIL",
        ]
        assert root.find(".//ct:Error", namespaces=NS) is not None
    finally:
        await legacy.aclose()


# -- POST: encodings and validation -----------------------------------------------------------


async def test_multipart_data_as_field_and_as_file_part(
    client: httpx.AsyncClient, server_state: ApiState
) -> None:
    """multipart/form-data works with data as a plain field and as a file part."""
    list_id = make_list(server_state, "Multi")
    as_field = await client.post(
        "activities",
        files={
            "activityType": (None, b"SV_ADD"),
            "data": (None, b"Email,First Name\r\nmia@example.org,Mia\r\n"),
            "lists": (None, list_uri(list_id).encode()),
        },
    )
    as_file = await client.post(
        "activities",
        data={"activityType": "ADD_CONTACT_DETAIL", "lists": list_uri(list_id)},
        files={
            "data": ("upload.csv", b"EMAIL ADDRESS,FIRST NAME\nned@example.org,Ned\n", "text/plain")
        },
    )
    for response in (as_field, as_file):
        assert response.status_code == 201, response.text
        activity = await wait_final(client, response.headers["location"])
        assert (activity.status, activity.transaction_count) == ("COMPLETE", 1)
    assert contacts(server_state)["mia@example.org"][0] == "Mia"
    assert contacts(server_state)["ned@example.org"][0] == "Ned"


@pytest.mark.parametrize(
    ("fields", "status", "says"),
    [
        ({"activityType": "SV_FROBNICATE"}, 400, "Unknown activityType"),
        ({"lists": "L"}, 400, "activityType is missing"),
        ({"activityType": "SV_ADD", "data": "First Name\nAna", "lists": "L"}, 400, "email"),
        (
            {"activityType": "SV_ADD", "data": "Email,Shoe Size\na@x.org,9", "lists": "L"},
            400,
            'Unknown column "Shoe Size"',
        ),
        (
            {"activityType": "SV_ADD", "data": "Email,E-mail\na@x.org,b@x.org", "lists": "L"},
            400,
            "both name EMAIL ADDRESS",
        ),
        (
            {"activityType": "SV_ADD", "data": "Email\na@x.org", "lists": "http://x/lists/x7"},
            400,
            "Malformed list URI",
        ),
        ({"activityType": "SV_ADD", "data": "Email\na@x.org"}, 400, "at least one list"),
        (
            {"activityType": "SV_ADD", "data": "Email\na@x.org", "lists": list_uri("active")},
            400,
            "system list",
        ),
        ({"activityType": "REMOVE_CONTACTS_FROM_LISTS", "lists": "L"}, 400, "needs the contacts"),
        ({"activityType": "EXPORT_CONTACTS"}, 400, "listId"),
        (
            {"activityType": "EXPORT_CONTACTS", "listId": list_uri("active"), "fileType": "XLS"},
            400,
            "fileType",
        ),
        (
            {"activityType": "EXPORT_CONTACTS", "listId": list_uri("active"), "columns": "SHOE"},
            400,
            'Unknown column "SHOE"',
        ),
        (
            {"activityType": "EXPORT_CONTACTS", "listId": list_uri(1), "exportOptDate": "maybe"},
            400,
            "true or false",
        ),
        ({"activityType": "SV_ADD", "data": "Email\na@x.org", "lists": list_uri(999)}, 404, "999"),
        ({"activityType": "EXPORT_CONTACTS", "listId": list_uri(998)}, 404, "998"),
        (
            {"activityType": "CLEAR_CONTACTS_FROM_LISTS", "lists": list_uri(10**30)},
            404,
            "does not exist",
        ),
        ({"activityType": "EXPORT_CONTACTS", "listId": list_uri(2**63)}, 404, "does not exist"),
    ],
)
async def test_bad_requests_get_a_short_reason(
    client: httpx.AsyncClient,
    server_state: ApiState,
    fields: dict[str, str],
    status: int,
    says: str,
) -> None:
    """Each submit-time problem answers 400 (404 for a missing list) with a text saying what."""
    list_id = make_list(server_state, "Real")
    if fields.get("lists") == "L":
        fields = {**fields, "lists": list_uri(list_id)}
    with trio.fail_after(HANG_GUARD):  # a hang guard
        response = await client.post("activities", data=fields)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert says.lower() in response.text.lower()
    assert server_state.store.connection().execute("SELECT count(*) FROM activity").fetchone() == (
        0,
    )


async def test_wrong_content_type_is_415(client: httpx.AsyncClient) -> None:
    """An activity POST that is not a form answers 415 (spec §1.2)."""
    with trio.fail_after(HANG_GUARD):  # a hang guard
        response = await client.post(
            "activities", content=b"<entry/>", headers={"Content-Type": "application/atom+xml"}
        )
    assert response.status_code == 415


@pytest.mark.parametrize(
    "body",
    [
        b"activityType=SV_ADD&data=%FF%FE",  # not UTF-8 once decoded
        b"\xff\xfeactivityType=SV_ADD",  # raw bytes that are not UTF-8
        b"&".join([b"lists=x"] * 3000),  # too many fields
    ],
)
async def test_malformed_forms_are_400_not_500(client: httpx.AsyncClient, body: bytes) -> None:
    """Garbage in a form is a 400 with a reason, never a 500."""
    with trio.fail_after(HANG_GUARD):  # a hang guard
        response = await client.post(
            "activities",
            content=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert response.status_code == 400, response.text


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data", "multipart/form-data; boundary=xyz"],
)
async def test_malformed_multipart_is_400(client: httpx.AsyncClient, content_type: str) -> None:
    """A multipart body without boundary, or cut short, answers 400."""
    with trio.fail_after(HANG_GUARD):  # a hang guard
        response = await client.post(
            "activities",
            content=b'--xyz\r\nContent-Disposition: form-data; name="activityType"\r\n\r\nSV_ADD',
            headers={"Content-Type": content_type},
        )
    assert response.status_code == 400, response.text


async def _declare_huge_post(running: RunningServer, path: str, size: int) -> bytes:
    """POST headers declaring a ``size``-byte urlencoded body, send none of it, and return the
    answer's status line. (Sending it all would block once the socket buffers are full: the
    server answers from the declared size without reading the body.)"""
    host, port = running.origin.removeprefix("http://").rsplit(":", 1)
    head = (
        f"POST {httpx.URL(running.base()).path}{path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: {basic()}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {size}\r\n\r\n"
    ).encode()
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(head)
        answer = b""
        while b"\r\n" not in answer:
            data = await stream.receive_some(65536)
            if not data:
                break
            answer += data
    return answer.split(b"\r\n", 1)[0]


async def test_data_over_the_row_and_byte_limits_is_400(
    tmp_path: Path, store_db: str | None
) -> None:
    """--max-activity-rows and --max-activity-bytes bound data (400), the body 413."""
    state = make_state(tmp_path, db=store_db, max_activity_rows=3, max_activity_bytes=200)
    list_id = make_list(state, "Small")
    async with trio.open_nursery() as nursery:  # the server stops before its store closes
        running = await start_server(nursery, state)
        async with running.client() as client:
            rows = "".join(f"\nu{i}@example.org" for i in range(4))
            blank_lines = "\n\n\n"  # blank records do not count as rows
            with trio.fail_after(HANG_GUARD):  # a guard against a hang, not a timing condition
                too_many = await client.post(
                    "activities",
                    data={
                        "activityType": "SV_ADD",
                        "data": "Email" + rows,
                        "lists": list_uri(list_id),
                    },
                )
                just_fits = await client.post(
                    "activities",
                    data={
                        "activityType": "SV_ADD",
                        "data": "Email" + blank_lines + rows.rsplit("\n", 1)[0],
                        "lists": list_uri(list_id),
                    },
                )
                too_big = await client.post(
                    "activities",
                    data={
                        "activityType": "SV_ADD",
                        "data": "Email\n" + "x" * 300,
                        "lists": list_uri(list_id),
                    },
                )
                huge_body = await _declare_huge_post(running, "activities", 2_000_026)
        nursery.cancel_scope.cancel()
    assert too_many.status_code == 400
    assert "more than 3 rows" in too_many.text
    assert just_fits.status_code == 201
    assert too_big.status_code == 400
    assert "limit is 200" in too_big.text
    assert huge_body.startswith(b"HTTP/1.1 413 "), huge_body
    state.store.close()


# -- row semantics ----------------------------------------------------------------------------


async def test_line_numbers_count_records_not_physical_lines(
    client: httpx.AsyncClient, server_state: ApiState
) -> None:
    """The header is line 1; a quoted newline does not start a new number; a blank line does."""
    list_id = make_list(server_state, "Lines")
    data = (
        "Email,City\r\n"
        'ok1@example.org,"Two\r\nline city"\r\n'  # line 2
        "\r\n"  # line 3, blank
        'bad@@example.org,"x, y"\r\n'  # line 4
        "ok2@example.org,Here\r\n"  # line 5
        "not-an-email,There"  # line 6
    )
    activity = await run_activity(client, activityType="SV_ADD", data=data, lists=list_uri(list_id))
    assert activity.transaction_count == 2
    assert [(e.line, e.email) for e in activity.errors] == [
        (4, "bad@@example.org"),
        (6, "not-an-email"),
    ]
    assert contacts(server_state)["ok1@example.org"][1] == "Two\r\nline city"


async def test_the_last_row_of_an_email_wins(
    client: httpx.AsyncClient, server_state: ApiState
) -> None:
    """The same email twice: the last row is applied, the earlier one is an error naming it."""
    list_id = make_list(server_state, "Dupes")
    data = "Email,First Name\nAna@Example.org,First\nbo@example.org,Bo\nana@example.org,Second"
    activity = await run_activity(client, activityType="SV_ADD", data=data, lists=list_uri(list_id))
    assert activity.transaction_count == 2
    assert [(e.line, e.email, e.message) for e in activity.errors] == [
        (2, "Ana@Example.org", "Ana@Example.org is repeated on line 4, which replaces this row")
    ]
    assert contacts(server_state)["ana@example.org"][0] == "Second"


async def test_a_control_character_in_a_value_is_a_row_error_on_every_store(
    client: httpx.AsyncClient, server_state: ApiState
) -> None:
    """A NUL (or another control character XML cannot carry) in a field: the row is an error
    naming the field, the same on every store (PostgreSQL cannot store a NUL as text), and
    the other rows are applied."""
    list_id = make_list(server_state, "Nul")
    data = "Email,First Name,City\nann@example.org,A\x00nn,Oslo\nbo@example.org,Bo,Ri\x01ga"
    data += "\ncy@example.org,Cy,Bergen"
    activity = await run_activity(client, activityType="SV_ADD", data=data, lists=list_uri(list_id))
    assert activity.status == "COMPLETE"
    assert activity.transaction_count == 1
    assert [(e.line, e.email) for e in activity.errors] == [
        (2, "ann@example.org"),
        (3, "bo@example.org"),
    ]
    assert [e.message for e in activity.errors] == [
        "FIRST NAME contains the control character U+0000, which XML cannot carry",
        "CITY contains the control character U+0001, which XML cannot carry",
    ]
    assert members(server_state, list_id) == {"cy@example.org"}


async def test_adds_update_given_fields_only_and_keep_memberships(
    client: httpx.AsyncClient, server_state: ApiState
) -> None:
    """An empty cell keeps the stored value; existing memberships stay; Removed → Active."""
    first, second = make_list(server_state, "First"), make_list(server_state, "Second")
    await run_activity(
        client,
        activityType="SV_ADD",
        data="Email,First Name,City\nkim@example.org,Kim,Oslo",
        lists=list_uri(first),
    )
    await run_activity(
        client,
        activityType="REMOVE_CONTACTS_FROM_LISTS",
        data="Email\nkim@example.org",
        lists=list_uri(first),
    )
    assert contacts(server_state)["kim@example.org"] == ("Kim", "Oslo", "Removed")
    await run_activity(
        client,
        activityType="SV_ADD",
        data="Email,First Name,City\nkim@example.org,,Bergen",
        lists=list_uri(second),
    )
    assert contacts(server_state)["kim@example.org"] == ("Kim", "Bergen", "Active")
    await run_activity(
        client, activityType="SV_ADD", data="Email\nKIM@example.org", lists=list_uri(first)
    )
    assert "kim@example.org" in members(server_state, first)
    assert "kim@example.org" in members(server_state, second)
    counts = dict(
        server_state.store.connection().execute("SELECT id, member_count FROM list").fetchall()
    )
    assert counts == {first: 1, second: 1}


async def test_do_not_mail_contacts_are_not_re_added(
    client: httpx.AsyncClient, server_state: ApiState
) -> None:
    """A Do Not Mail contact in an add is an error row; it stays opted out and off the list."""
    list_id = make_list(server_state, "Promo")
    db = server_state.store.connection()
    with write_tx(db):
        db.execute(
            "INSERT INTO contact (account_id, email_key, EmailAddress, status, insert_time, "
            "last_update_time) "
            "VALUES (1, 'out@example.org', 'out@example.org', 'Do Not Mail', 0, 0)"
        )
    activity = await run_activity(
        client,
        activityType="SV_ADD",
        data="Email,First Name\nOUT@example.org,Olga\nin@example.org,Ian",
        lists=list_uri(list_id),
    )
    assert activity.transaction_count == 1
    assert [(e.line, e.message) for e in activity.errors] == [
        (2, "OUT@example.org is on the Do Not Mail list")
    ]
    assert contacts(server_state)["out@example.org"] == ("", "", "Do Not Mail")
    assert members(server_state, list_id) == {"in@example.org"}


async def test_a_remove_changes_exactly_the_members_it_names(
    running: RunningServer, client: httpx.AsyncClient, server_state: ApiState
) -> None:
    """A remove takes each row's contact off the given lists; a contact left on no list is
    Removed (from Active or Unconfirmed), one still on another stays Active, and both get
    a new last_update_time. A row on none of the lists (on another list, opted out,
    unknown) is an error and changes nothing; an earlier row of a repeated address is an
    error; another account's contact of the same address is untouched; the account's
    write sequence moves by exactly one."""
    first, second, third = (make_list(server_state, name) for name in ("One", "Two", "Three"))
    add_account(server_state, "alice", "alice-pw", "alice-key")
    hers = make_list(server_state, "Hers", "alice")
    for data, lists in (
        ("only@example.org\nboth@example.org\nunc@example.org\nall@example.org", [first]),
        ("both@example.org\nelse@example.org\nall@example.org", [second]),
        ("all@example.org", [third]),
    ):
        await run_activity(
            client, activityType="SV_ADD", data="Email\n" + data, lists=[list_uri(i) for i in lists]
        )
    alice_auth = {"Authorization": basic("alice", "alice-pw", "alice-key")}
    async with running.client("alice", headers=alice_auth) as alice:
        await run_activity(
            alice,
            activityType="SV_ADD",
            data="Email\nonly@example.org",
            lists=list_uri(hers, "alice"),
        )
    db = server_state.store.connection()
    with write_tx(db):
        db.execute("UPDATE contact SET status = 'Unconfirmed' WHERE email_key = 'unc@example.org'")
        db.execute(
            "INSERT INTO contact (account_id, email_key, EmailAddress, status, insert_time, "
            "last_update_time) "
            "VALUES (1, 'out@example.org', 'out@example.org', 'Do Not Mail', 0, 0)"
        )
        db.execute("UPDATE contact SET last_update_time = 1000")

    def write_seqs() -> list[int]:
        return [r[0] for r in db.execute("SELECT write_seq FROM account ORDER BY id")]

    seqs = write_seqs()
    started = now_ms()
    activity = await run_activity(
        client,
        activityType="REMOVE_CONTACTS_FROM_LISTS",
        data="Email\nONLY@example.org\nboth@example.org\nelse@example.org\nunc@example.org\n"
        "out@example.org\nnobody@example.org\nall@example.org\nALL@example.org",
        lists=[list_uri(first), list_uri(third)],
    )
    assert activity.status == "COMPLETE"
    assert activity.transaction_count == 4  # only, both, unc, all
    assert [(e.line, e.email, e.message) for e in activity.errors] == [
        (4, "else@example.org", "else@example.org (not found in subscriber list)"),
        (6, "out@example.org", "out@example.org (not found in subscriber list)"),
        (7, "nobody@example.org", "nobody@example.org (not found in subscriber list)"),
        (8, "all@example.org", "all@example.org is repeated on line 9, which replaces this row"),
    ]
    (demo_id,) = db.execute("SELECT id FROM account WHERE username = ?", (USER,)).fetchone()
    after = {
        (account_id == demo_id, key): (status, stamp >= started, stamp == 1000)
        for account_id, key, status, stamp in db.execute(
            "SELECT account_id, email_key, status, last_update_time FROM contact"
        )
    }
    assert after == {
        (True, "only@example.org"): ("Removed", True, False),
        (True, "both@example.org"): ("Active", True, False),
        (True, "unc@example.org"): ("Removed", True, False),
        (True, "all@example.org"): ("Active", True, False),
        (True, "else@example.org"): ("Active", False, True),
        (True, "out@example.org"): ("Do Not Mail", False, True),
        (False, "only@example.org"): ("Active", False, True),
    }
    assert members(server_state, first) == set()
    assert members(server_state, second) == {
        "both@example.org",
        "else@example.org",
        "all@example.org",
    }
    assert members(server_state, third) == set()
    assert members(server_state, hers) == {"only@example.org"}
    counts = dict(db.execute("SELECT id, member_count FROM list").fetchall())
    assert counts == {first: 0, second: 3, third: 0, hers: 1}
    assert write_seqs() == [seqs[0] + 1, *seqs[1:]]


async def test_an_activity_whose_list_vanished_ends_in_error(
    tmp_path: Path, store_db: str | None
) -> None:
    """A list deleted between POST and run: the activity as a whole cannot run → ERROR."""
    from bulkops.server.worker import serve_worker

    state = make_state(tmp_path, db=store_db)
    list_id = make_list(state, "Doomed")
    async with trio.open_nursery() as nursery, asgi(state) as client:
        response = await client.post(
            "activities",
            data={
                "activityType": "SV_ADD",
                "data": "Email\na@example.org",
                "lists": list_uri(list_id),
            },
        )
        assert response.status_code == 201
        db = state.store.connection()
        with write_tx(db):
            db.execute("DELETE FROM list WHERE id = ?", (list_id,))
        await nursery.start(serve_worker, state)  # the worker starts only now
        activity = await wait_final(client, response.headers["location"])
        nursery.cancel_scope.cancel()
    assert activity.status == "ERROR"
    assert activity.run_finish_time is not None
    assert contacts(state) == {}
    state.store.close()


# -- listing and reading ----------------------------------------------------------------------


async def test_the_feed_pages_by_50_newest_first_and_filters(
    client: httpx.AsyncClient, server_state: ApiState
) -> None:
    """GET /activities: 50 per page, next links, ?status= and ?type= filters."""
    list_id = make_list(server_state, "Many")
    ids = []
    for i in range(53):
        kind = "CLEAR_CONTACTS_FROM_LISTS" if i % 10 == 0 else "SV_ADD"
        fields = {"activityType": kind, "lists": list_uri(list_id)}
        if kind == "SV_ADD":
            fields["data"] = f"Email\nu{i}@example.org"
        response = await client.post("activities", data=fields)
        assert response.status_code == 201
        ids.append(response.headers["location"].rsplit("/", 1)[-1])
    await wait_final(client, response.headers["location"])
    with trio.fail_after(HANG_GUARD):  # a hang guard
        page1 = parse_feed((await client.get("activities")).content)
        next_href = page1.link("next")
        assert next_href is not None
        page2 = parse_feed((await client.get(at(client, next_href))).content)
        clears = parse_feed((await client.get("activities?type=CLEAR_CONTACTS_FROM_LISTS")).content)
        adds = parse_feed(
            (await client.get("activities?type=ADD_CONTACTS&status=complete")).content
        )
        bad_status = await client.get("activities?status=DONE")
        bad_token = await client.get("activities?next=zzz")
    got = [e.id for e in page1.entries] + [e.id for e in page2.entries]
    assert len(page1.entries) == 50
    assert got == ids[::-1]
    assert page2.link("next") is None
    assert [e.id for e in clears.entries] == [ids[i] for i in (50, 40, 30, 20, 10, 0)]
    assert len(adds.entries) == 47
    assert all(isinstance(e, Activity) and e.status == "COMPLETE" for e in adds.entries)
    assert (bad_status.status_code, bad_token.status_code) == (400, 400)


def at(client: httpx.AsyncClient, href: str) -> str:
    """An absolute URL for a root-relative href on the client's server."""
    return str(client.base_url.join(href))


async def test_unknown_and_expired_activities_are_404(
    client: httpx.AsyncClient, server_state: ApiState
) -> None:
    """An unknown id is 404; a finished activity past its retention is 404 and leaves the feed."""
    list_id = make_list(server_state, "Old")
    done = await run_activity(
        client, activityType="SV_ADD", data="Email\nold@example.org", lists=list_uri(list_id)
    )
    db = server_state.store.connection()
    fifteen_days = 15 * 86_400_000
    with write_tx(db):
        db.execute("UPDATE activity SET updated = updated - ?", (fifteen_days,))
    with trio.fail_after(HANG_GUARD):  # a hang guard
        missing = await client.get("activities/a07e1nosuchactivity00")
        expired = await client.get(f"activities/{done.id}")
        feed = parse_feed((await client.get("activities")).content)
        odd = await client.get(f"activities/{done.id}.xls")
    assert missing.status_code == expired.status_code == odd.status_code == 404
    assert feed.entries == []


async def test_another_account_cannot_see_or_use_activities(
    running: RunningServer, server_state: ApiState, client: httpx.AsyncClient
) -> None:
    """Activities and lists belong to one account."""
    from tests.serverkit import add_account

    add_account(server_state, "other", "other-pw", "other-key")
    theirs = make_list(server_state, "Theirs", username="other")
    activity = await run_activity(
        client,
        activityType="EXPORT_CONTACTS",
        listId=list_uri("active"),
    )
    other = {"Authorization": basic("other", "other-pw", "other-key")}
    async with httpx.AsyncClient(
        base_url=running.base("other"), headers=other, timeout=HANG_GUARD
    ) as c:
        with trio.fail_after(HANG_GUARD):  # a hang guard
            foreign = await c.get(f"activities/{activity.id}")
            foreign_file = await c.get(f"activities/{activity.id}.csv")
            own = await c.get("activities")
    assert (foreign.status_code, foreign_file.status_code) == (404, 404)
    assert parse_feed(own.content).entries == []
    with trio.fail_after(HANG_GUARD):  # a hang guard
        response = await client.post(
            "activities",
            data={
                "activityType": "SV_ADD",
                "data": "Email\na@example.org",
                "lists": list_uri(theirs),
            },
        )
    assert response.status_code == 404


# -- the worker -------------------------------------------------------------------------------


async def test_empty_header_cells_do_not_multiply_memory(
    client: httpx.AsyncClient, server_state: ApiState
) -> None:
    """20,000 ignored header columns over 2,000 one-cell rows: applied, in a few MB."""
    list_id = make_list(server_state, "Wide")
    rows = "".join(f"\nw{i}@example.org" if i % 2 else f"\nbad{i}" for i in range(2_000))
    data = "Email Address" + "," * 20_000 + rows
    tracemalloc.start()
    try:
        activity = await run_activity(
            client, activityType="SV_ADD", data=data, lists=list_uri(list_id)
        )
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert activity.transaction_count == 1_000
    assert activity.errors[0].line == 2
    assert len(activity.errors) == 1_000
    assert len(members(server_state, list_id)) == 1_000
    assert peak < 40 * 1024 * 1024


async def test_requests_are_answered_while_a_big_activity_runs(
    client: httpx.AsyncClient, server_state: ApiState
) -> None:
    """The worker applies in a thread: GETs are answered while a 40,000-row apply holds that
    thread (held by the worker's test hook before its commit, until the test has looked)."""
    list_id = make_list(server_state, "Big")
    holding, release = threading.Event(), threading.Event()

    def hold(_activity_id: str) -> None:  # in the worker's thread, rows applied, not committed
        holding.set()
        release.wait(HANG_GUARD)  # bounded, so a failing test cannot leave the thread behind

    worker_for(server_state).before_commit = hold
    data = "Email,First Name\n" + "\n".join(f"big{i}@example.org,N{i}" for i in range(40_000))
    try:
        with trio.fail_after(HANG_GUARD):
            response = await client.post(
                "activities",
                data={"activityType": "SV_ADD", "data": data, "lists": list_uri(list_id)},
            )
        location = response.headers["location"]
        with trio.fail_after(HANG_GUARD):
            await trio.to_thread.run_sync(holding.wait, abandon_on_cancel=True)
            for _ in range(3):
                entry = parse_entry((await client.get(location)).content)
                assert isinstance(entry, Activity)
                assert entry.status == "RUNNING"
            assert (await client.get("activities")).status_code == 200
    finally:
        release.set()
    entry = await wait_final(client, location)
    assert entry.status == "COMPLETE"
    assert entry.transaction_count == 40_000


async def test_restart_takes_up_unfinished_activities(tmp_path: Path, store_db: str | None) -> None:
    """RUNNING and PENDING activities left by a crash are run when the worker starts."""
    state = make_state(tmp_path, db=store_db)
    list_id = make_list(state, "Crash")
    async with asgi(state) as client:
        for i in range(2):
            response = await client.post(
                "activities",
                data={
                    "activityType": "SV_ADD",
                    "data": f"Email\nc{i}@example.org",
                    "lists": list_uri(list_id),
                },
            )
            assert response.status_code == 201
    db = state.store.connection()
    with write_tx(db):  # as if the first had been started when the process died
        db.execute("UPDATE activity SET status = 'RUNNING', run_start_time = 1 WHERE seq = 1")
    async with trio.open_nursery() as nursery, asgi(state) as client:
        from bulkops.server.worker import serve_worker, worker_for

        await nursery.start(serve_worker, state)
        feed = None
        with trio.fail_after(HANG_GUARD):
            while True:
                feed = parse_feed((await client.get("activities")).content)
                if all(isinstance(e, Activity) and e.status == "COMPLETE" for e in feed.entries):
                    break
                await trio.sleep(0.01)
        assert worker_for(state).statistics().recovered == 1
        nursery.cancel_scope.cancel()
    assert members(state, list_id) == {"c0@example.org", "c1@example.org"}
    state.store.close()


@asynccontextmanager
async def asgi(state: ApiState) -> AsyncIterator[httpx.AsyncClient]:
    """The in-process client of tests/serverkit.py, closed on exit."""
    async with asgi_client(state) as client:
        yield client


async def test_no_error_is_logged_for_ordinary_use(
    client: httpx.AsyncClient, server_state: ApiState, caplog: pytest.LogCaptureFixture
) -> None:
    """A normal add/remove/export cycle logs no error or warning."""
    caplog.set_level(logging.INFO)
    list_id = make_list(server_state, "Quiet")
    await run_activity(
        client, activityType="SV_ADD", data="Email\nq@example.org", lists=list_uri(list_id)
    )
    await run_activity(client, activityType="EXPORT_CONTACTS", listId=list_uri(list_id))
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


# -- hostile bodies ---------------------------------------------------------------------------

_FORM_PIECES = st.sampled_from(
    [
        b"activityType=SV_ADD",
        b"activityType=EXPORT_CONTACTS",
        b"&data=Email%0Aa%40b.org",
        b"&data=%22",
        b"&lists=http%3A%2F%2Fx%2Flists%2F1",
        b"&listId=x",
        b"&columns=%FF",
        b'--b\r\nContent-Disposition: form-data; name="data"\r\n\r\n',
        b"\r\n--b--\r\n",
        b"%",
        b"&&==",
    ]
)


@given(
    body=st.one_of(st.binary(max_size=300), st.lists(_FORM_PIECES, max_size=8).map(b"".join)),
    content_type=st.sampled_from(
        [
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=b",
            "multipart/form-data",
            "multipart/form-data; boundary=" + "x" * 80,
        ]
    ),
)
def test_any_body_is_a_request_or_a_400(body: bytes, content_type: str) -> None:
    """Whatever the bytes, form decoding yields a request or a RequestProblem, nothing else."""
    problem: RequestProblem | None = None
    try:
        request = parse_activity_form(body, content_type, max_rows=10, max_bytes=1000)
    except RequestProblem as exc:
        problem = exc
    if problem is not None:
        assert (problem.status, bool(problem.message)) == (400, True)
    else:
        assert decode_request(encode_request(request)) == request
