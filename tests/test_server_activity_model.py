"""Random ``data`` bodies are applied exactly as a straightforward reference model says.

Hypothesis draws an account (contacts with statuses and lists), a header (aliases, case, an
ignored empty column), rows (duplicate emails in other cases, bad emails, bad state codes,
values too long, commas, quotes, newlines, extra cells), and a rendering (CRLF or LF,
quoting, spaces after commas, blank lines, urlencoded or multipart). The model applies the
rows as the spec says, from the structured rows rather than from CSV; the server must end in
the same contacts, memberships, ``Errors`` and ``TransactionCount``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from bulkops.server.app import ApiState
from bulkops.server.store import write_tx
from bulkops.server.worker import serve_worker
from bulkops.wire.activity import FINAL_STATUSES, ActivityStatus
from bulkops.wire.atom.feeds import parse_entry
from bulkops.wire.columns import column_for_field, row_problem
from bulkops.wire.model import Activity
from tests.pgkit import BOTH_STORES, fresh_database
from tests.serverkit import HANG_GUARD, asgi_client, make_state

LISTS = (1, 2)
POOL = ("ana@example.org", "bo@example.org", "cy@example.net", "dee@example.com", "eve@ex.org")
BAD_EMAILS = ("not-an-email", "two@@example.org", "x@y")
FIELDS = ("FirstName", "LastName", "City", "StateCode", "EmailType", "Note", "CustomField3")
STATUSES = ("Active", "Removed", "Do Not Mail")


@attrs.define
class ModelContact:
    """A contact as the model sees it."""

    email: str
    status: str
    fields: dict[str, str]
    lists: set[int]


@attrs.frozen
class Scenario:
    """One drawn case: the account before, the activity, and how its body is written."""

    initial: dict[str, ModelContact]
    activity_type: str
    lists: tuple[int, ...]
    header: tuple[str, ...]  # as written
    fields: tuple[str, ...]  # the field of each header cell ("" = ignored column)
    records: tuple[tuple[str, ...] | None, ...]  # data records as cells; None = blank line
    body: bytes
    content_type: str


# -- strategies -------------------------------------------------------------------------------

_text = st.text(alphabet=st.sampled_from("abcXYZ019 ,\"'\né-"), min_size=0, max_size=12).filter(
    lambda v: "\r" not in v
)


def _value(field: str) -> st.SearchStrategy[str]:
    common = st.one_of(st.just(""), _text, st.just("   "), st.just('Zoë, "Z"\nLine 2'))
    if field == "StateCode":
        return st.one_of(common, st.sampled_from(["MA", "qc", "ny", "ZZ", "Nowhere"]))
    if field == "EmailType":
        return st.one_of(st.just(""), st.sampled_from(["HTML", "text", "Text", "pdf"]))
    limit = column_for_field(field).limit
    return st.one_of(common, st.just("y" * (limit + 1)), st.just("w" * limit))


def _spelling(field: str, draw: Any) -> str:
    column = column_for_field(field)
    name = draw(st.sampled_from([column.name, column.field, column.export_header, *column.aliases]))
    case = draw(st.sampled_from([str, str.upper, str.lower, str.title]))
    return str(case(name))


def _quote(cell: str, draw: Any) -> str:
    needs = any(ch in cell for ch in ',"\n\r') or cell != cell.strip()
    if needs or draw(st.booleans()):
        return '"' + cell.replace('"', '""') + '"'
    return cell


@st.composite
def scenarios(draw: Any) -> Scenario:
    """A whole case, body rendered."""
    initial: dict[str, ModelContact] = {}
    for email in draw(st.lists(st.sampled_from(POOL), unique=True, max_size=len(POOL))):
        status = draw(st.sampled_from(STATUSES))
        lists = (
            set(draw(st.sets(st.sampled_from(LISTS), min_size=1))) if status == "Active" else set()
        )
        initial[email] = ModelContact(email, status, {"City": "Before", "FirstName": "Old"}, lists)
    activity_type = draw(
        st.sampled_from(["SV_ADD", "ADD_CONTACT_DETAIL", "REMOVE_CONTACTS_FROM_LISTS"])
    )
    lists = tuple(sorted(draw(st.sets(st.sampled_from(LISTS), min_size=1))))

    others = draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=4))
    fields = ["EmailAddress", *others]
    if draw(st.booleans()):
        fields.insert(draw(st.integers(0, len(fields))), "")  # an ignored empty header cell
    draw(st.randoms()).shuffle(fields)
    header = tuple(_spelling(f, draw) if f else "" for f in fields)

    records: list[tuple[str, ...] | None] = []
    for _ in range(draw(st.integers(0, 8))):
        if draw(st.integers(0, 5)) == 0:
            records.append(None)
            continue
        cells = []
        for field in fields:
            if field == "EmailAddress":
                email = draw(st.one_of(st.sampled_from(POOL), st.sampled_from(BAD_EMAILS)))
                case = draw(st.sampled_from([str, str.upper, str.title]))
                cells.append(str(case(email)) if "@" in email else email)
            elif field:
                cells.append(draw(_value(field)))
            else:
                cells.append(draw(st.sampled_from(["", "ignored"])))
        if draw(st.integers(0, 7)) == 0:
            cells.append("extra")
        while draw(st.booleans()) and cells and cells[-1] == "":
            cells.pop()  # short rows are padded with empty cells
        if any(cell.strip() for cell in cells):
            records.append(tuple(cells))
        else:
            records.append(None)

    newline = draw(st.sampled_from(["\n", "\r\n"]))
    lines = []
    for cells in [header, *records]:
        if cells is None:
            lines.append("")
            continue
        parts = [_quote(cell, draw) for cell in cells]
        spaced = [parts[0], *(draw(st.sampled_from(["", " ", "  "])) + p for p in parts[1:])]
        lines.append(",".join(spaced))
    data = newline.join(lines) + (newline if draw(st.booleans()) else "")

    form = {"activityType": activity_type, "lists": [_uri(i) for i in lists]}
    if draw(st.booleans()):
        request = httpx.Request("POST", "http://x/", data={**form, "data": data})
    else:
        files = {"data": ("contacts.csv", data.encode(), "text/csv")}
        request = httpx.Request("POST", "http://x/", data=form, files=files)
    body = request.read()
    return Scenario(
        initial=initial,
        activity_type=activity_type,
        lists=lists,
        header=header,
        fields=tuple(fields),
        records=tuple(records),
        body=body,
        content_type=request.headers["content-type"],
    )


def _uri(list_id: int) -> str:
    return f"http://api.constantcontact.com/ws/customers/demo/lists/{list_id}"


# -- the reference model ----------------------------------------------------------------------


def _normalised(field: str, value: str) -> str:
    if field == "StateCode":
        return value.upper()
    if field == "EmailType":
        return "HTML" if value.lower() == "html" else "Text"
    return value


def model(scenario: Scenario) -> tuple[dict[str, ModelContact], int, list[tuple[int, str, str]]]:
    """Apply the scenario's rows the plain way: contacts after, TransactionCount, Errors."""
    contacts = {
        k: attrs.evolve(c, fields=dict(c.fields), lists=set(c.lists))
        for k, c in scenario.initial.items()
    }
    width = len(scenario.fields)
    rows = []
    for index, cells in enumerate(scenario.records):
        if cells is None:
            continue
        values = [cell.strip() for cell in cells] + [""] * max(0, width - len(cells))
        row = dict(zip(scenario.fields, values, strict=False))
        row.pop("", None)
        overflow = any(values[width:])
        rows.append((index + 2, row, overflow))
    last = {row["EmailAddress"].lower(): line for line, row, _o in rows if row["EmailAddress"]}
    errors = []
    count = 0
    adding = scenario.activity_type != "REMOVE_CONTACTS_FROM_LISTS"
    for line, row, overflow in rows:
        email = row["EmailAddress"]
        key = email.lower()
        if email and last[key] != line:
            errors.append(
                (line, email, f"{email} is repeated on line {last[key]}, which replaces this row")
            )
            continue
        if overflow:
            errors.append((line, email, "the line has more values than the header has columns"))
            continue
        checked = row if adding else {"EmailAddress": email}
        problem = row_problem(
            [("EmailAddress", email), *((f, v) for f, v in checked.items() if f != "EmailAddress")]
        )
        if problem is not None:
            errors.append((line, email, problem[1]))
            continue
        contact = contacts.get(key)
        if adding:
            if contact is not None and contact.status == "Do Not Mail":
                errors.append((line, email, f"{email} is on the Do Not Mail list"))
                continue
            if contact is None:
                contact = contacts[key] = ModelContact(email, "Active", {}, set())
            contact.email = email  # the last row wins, its spelling too
            for field, value in row.items():
                if field != "EmailAddress" and value:
                    contact.fields[field] = _normalised(field, value)
            if contact.status == "Removed":
                contact.status = "Active"
            contact.lists |= set(scenario.lists)
            count += 1
        else:
            if contact is None or not contact.lists & set(scenario.lists):
                errors.append((line, email, f"{email} (not found in subscriber list)"))
                continue
            contact.lists -= set(scenario.lists)
            if not contact.lists and contact.status == "Active":
                contact.status = "Removed"
            count += 1
    errors.sort()
    return contacts, count, errors


# -- the server side --------------------------------------------------------------------------


@pytest.fixture(scope="module", params=BOTH_STORES)
def model_state(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiState]:
    """One server database for every example (reset between them), with lists 1 and 2, on
    each store."""
    with contextlib.ExitStack() as stack:
        db = stack.enter_context(fresh_database()) if request.param == "postgres" else None
        yield from _model_state(tmp_path_factory, db)


def _model_state(tmp_path_factory: pytest.TempPathFactory, url: str | None) -> Iterator[ApiState]:
    state = make_state(Path(tmp_path_factory.mktemp("model")), db=url)
    db = state.store.connection()
    with write_tx(db):
        for list_id in LISTS:
            db.execute(
                "INSERT INTO list (id, account_id, name, short_name, updated) "
                "VALUES (?, 1, ?, ?, 0)",
                (list_id, f"L{list_id}", f"L{list_id}"),
            )
    yield state
    state.store.close()


def _reset(state: ApiState, initial: dict[str, ModelContact]) -> None:
    db = state.store.connection()
    with write_tx(db):
        db.execute("DELETE FROM activity")
        db.execute("DELETE FROM membership")
        db.execute("DELETE FROM contact")
        for key, contact in initial.items():
            cursor = db.execute(
                "INSERT INTO contact (account_id, email_key, EmailAddress, FirstName, City, "
                "status, insert_time, last_update_time) VALUES (1, ?, ?, ?, ?, ?, 0, 0)",
                (
                    key,
                    contact.email,
                    contact.fields["FirstName"],
                    contact.fields["City"],
                    contact.status,
                ),
            )
            for list_id in contact.lists:
                db.execute(
                    "INSERT INTO membership (list_id, contact_id, opt_in_time) VALUES (?, ?, 0)",
                    (list_id, cursor.lastrowid),
                )


async def _run(state: ApiState, body: bytes, content_type: str) -> Activity:
    async with trio.open_nursery() as nursery, asgi_client(state) as client:
        await nursery.start(serve_worker, state)
        with trio.fail_after(HANG_GUARD):
            response = await client.post(
                "activities", content=body, headers={"Content-Type": content_type}
            )
            assert response.status_code == 201, response.text
            while True:
                entry = parse_entry((await client.get(response.headers["location"])).content)
                assert isinstance(entry, Activity)
                if ActivityStatus(entry.status) in FINAL_STATUSES:
                    break
                await trio.sleep(0.002)
        nursery.cancel_scope.cancel()
    return entry


def _server_contacts(state: ApiState) -> dict[str, ModelContact]:
    db = state.store.connection()
    columns = ", ".join(FIELDS)
    found: dict[str, ModelContact] = {}
    for row in db.execute(f"SELECT id, email_key, EmailAddress, status, {columns} FROM contact"):
        fields = {f: v for f, v in zip(FIELDS, row[4:], strict=True) if v}
        lists = {
            r[0]
            for r in db.execute("SELECT list_id FROM membership WHERE contact_id = ?", (row[0],))
        }
        found[row[1]] = ModelContact(row[2], row[3], fields, lists)
    return found


@given(scenario=scenarios())
def test_random_data_is_applied_as_the_model_says(
    model_state: ApiState, scenario: Scenario
) -> None:
    """Contacts, memberships, Errors and TransactionCount equal the reference model's."""
    _reset(model_state, scenario.initial)
    activity = trio.run(_run, model_state, scenario.body, scenario.content_type)
    contacts, count, errors = model(scenario)
    assert activity.status == "COMPLETE"
    assert [(e.line, e.email, e.message) for e in activity.errors] == errors
    assert activity.transaction_count == count
    assert _server_contacts(model_state) == contacts
    db = model_state.store.connection()
    for list_id, member_count in db.execute("SELECT id, member_count FROM list"):
        (actual,) = db.execute(
            "SELECT count(*) FROM membership WHERE list_id = ?", (list_id,)
        ).fetchone()
        assert member_count == actual
