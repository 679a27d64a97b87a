"""The base of a sync against the real server over HTTP: full reads, snapshots, incremental
reads after every kind of out-of-band change, every fallback, request counts, on both stores."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkops.engine import sync_base
from bulkops.engine.client import Client, open_client
from bulkops.engine.lists import resolve_lists
from bulkops.engine.sync_base import BaseInfo, BaseSpec, load_base, save_snapshot, snapshot_path
from bulkops.server import contacts as server_contacts
from bulkops.server.http import ApiProblem
from bulkops.server.seed import seed_contacts
from bulkops.wire.atom.syntax import format_time, parse_time
from tests.enginekit import client_config
from tests.pgkit import BOTH_STORES
from tests.serverkit import RunningServer
from tests.test_engine_exports import data_of, post_activity
from tests.test_server_lists import ATOM_XML, contact_body

STORES = BOTH_STORES
COLUMNS = ("FirstName", "City", "CustomField1")
HEADER = ["Email Address", "First Name", "City", "Custom Field 1"]

Base = tuple[dict[str, tuple[str, list[str]]], set[str]]


# -- helpers -----------------------------------------------------------------------------------


def _db(state: Any) -> Any:
    return state.store.connection()


def account_id(state: Any) -> int:
    return int(_db(state).execute("SELECT id FROM account WHERE username = 'demo'").fetchone()[0])


def truth(state: Any, list_uri: str, columns: Sequence[str] = COLUMNS) -> Base:
    """The list's members and the account's Do Not Mail keys, as the database holds them."""
    list_id = int(list_uri.rstrip("/").rsplit("/", 1)[1])
    cells = "".join(f", c.{name}" for name in columns)
    rows = (
        _db(state)
        .execute(
            f"SELECT c.EmailAddress{cells} FROM membership m JOIN contact c"
            " ON c.id = m.contact_id WHERE m.list_id = ?",
            (list_id,),
        )
        .fetchall()
    )
    members = {r[0].lower(): (r[0], [v or "" for v in r[1:]]) for r in rows}
    dnm = {
        r[0].lower()
        for r in _db(state).execute(
            "SELECT EmailAddress FROM contact WHERE account_id = ? AND status = 'Do Not Mail'",
            (account_id(state),),
        )
    }
    return members, dnm


def base_of(db: sqlite3.Connection) -> Base:
    members = {
        key: (email, msgspec.json.decode(vals, type=list[str]))
        for key, email, vals in db.execute("SELECT email_key, email, vals FROM base_member")
    }
    return members, {r[0] for r in db.execute("SELECT email_key FROM base_opted_out")}


def settle(state: Any) -> None:
    """Date every change so far an hour back: outside the window a read after it begins with
    (``STAMP_SKEW`` before the previous read), as if the changes were long ago."""
    _db(state).execute("UPDATE contact SET last_update_time = last_update_time - 3600000")


@pytest.fixture
def generous(monkeypatch: pytest.MonkeyPatch) -> None:
    """The incremental path is never given up for its cost (so it is what is tested)."""
    monkeypatch.setattr(sync_base, "FULL_READ_REQUESTS", 100_000)


async def make_list(client: Client, name: str) -> str:
    (found,) = await resolve_lists(client, [name], create=True)
    return found.uri


async def add(client: Client, rows: Sequence[Sequence[str]], *uris: str) -> None:
    fields = [("activityType", "SV_ADD"), ("data", data_of(rows, HEADER))]
    fields += [("lists", uri) for uri in uris]
    await post_activity(client, fields)


async def remove(client: Client, emails: Sequence[str], *uris: str) -> None:
    fields = [("activityType", "REMOVE_CONTACTS_FROM_LISTS")]
    fields += [("data", data_of([[e] for e in emails], ["Email Address"]))]
    fields += [("lists", uri) for uri in uris]
    await post_activity(client, fields)


async def clear(client: Client, uri: str) -> None:
    await post_activity(client, [("activityType", "CLEAR_CONTACTS_FROM_LISTS"), ("lists", uri)])


def contact_id(state: Any, email: str) -> int:
    row = _db(state).execute("SELECT id FROM contact WHERE email_key = ?", (email.lower(),))
    return int(row.fetchone()[0])


async def put(client: Client, state: Any, email: str, **fields: str) -> None:
    body = contact_body(fields.pop("EmailAddress", email), None, **fields)
    await client.request(
        "PUT", f"contacts/{contact_id(state, email)}", content=body, headers=ATOM_XML
    )


async def opt_out(client: Client, state: Any, email: str) -> None:
    await client.request("DELETE", f"contacts/{contact_id(state, email)}")


def rows(prefix: str, count: int, start: int = 0) -> list[list[str]]:
    return [
        [f"{prefix}{i}@example.org", f"Zoë {i}", "Québec, QC" if i % 2 else 'The "Big" Apple', ""]
        for i in range(start, start + count)
    ]


async def load(client: Client, spec: BaseSpec, path: Path) -> tuple[BaseInfo, Base]:
    with trio.fail_after(60):
        db = sqlite3.connect(path)
        try:
            info = await load_base(client, spec, db)
            return info, base_of(db)
        finally:
            db.close()


async def sync_point(
    client: Client, spec: BaseSpec, tmp_path: Path, name: str
) -> tuple[BaseInfo, Base]:
    """Load the base and save it as the snapshot, as a sync that sent nothing would."""
    path = tmp_path / f"{name}.db"
    info, base = await load(client, spec, path)
    db = sqlite3.connect(path)
    try:
        save_snapshot(spec, db, info, client.account_url)
    finally:
        db.close()
    return info, base


@pytest.fixture
async def client(server: RunningServer) -> Any:
    async with open_client(client_config(server)) as opened:
        yield opened


# -- the full read -----------------------------------------------------------------------------


async def test_full_read_equals_the_list_and_the_opted_out(
    client: Client, server: RunningServer, tmp_path: Path
) -> None:
    """Members of this list only, values as stored (quotes, commas, accents, empty), opt-outs."""
    state = server.state
    news, other = await make_list(client, "News"), await make_list(client, "Other")
    await add(client, [*rows("a", 30), ["Mixed@Example.org", " Ann ", "", "x"]], news)
    await add(client, rows("b", 5), other)
    await opt_out(client, state, "b1@example.org")
    seed_contacts(_db(state), account_id(state), 40, lists=[int(news.rsplit("/", 1)[1])], seed=3)
    before = datetime.now(UTC)
    info, base = await load(client, BaseSpec(news, COLUMNS), tmp_path / "base.db")
    after = datetime.now(UTC)
    assert base == truth(state, news)
    assert base[0]["mixed@example.org"] == ("Mixed@Example.org", ["Ann", "", "x"])
    assert "b1@example.org" in base[1]
    assert (info.source, info.reason) == ("full", None)
    assert info.members == len(base[0])
    assert info.opted_out == len(base[1])
    assert 5 <= info.requests <= 20  # list, 2 POSTs, polls, 2 files: not one per member
    # The server's clock (Date: whole seconds) when the read began, less the skew.
    as_of = parse_time(info.as_of)
    assert before - sync_base.STAMP_SKEW - timedelta(seconds=1) <= as_of
    assert as_of <= after - sync_base.STAMP_SKEW


async def test_full_read_of_an_empty_list_with_no_columns(
    client: Client, server: RunningServer, tmp_path: Path
) -> None:
    """An empty list and no mapped columns: empty tables, vals ``[]``."""
    news = await make_list(client, "Empty")
    info, base = await load(client, BaseSpec(news, ()), tmp_path / "base.db")
    assert base == ({}, set())
    assert (info.members, info.opted_out) == (0, 0)


async def test_load_base_replaces_what_the_tables_held(
    client: Client, server: RunningServer, tmp_path: Path
) -> None:
    """Rows left in the tables from before are gone."""
    news = await make_list(client, "News")
    await add(client, rows("a", 3), news)
    path = tmp_path / "base.db"
    db = sqlite3.connect(path)
    for statement in sync_base._TABLES:
        db.execute(statement)
    db.execute("INSERT INTO base_member VALUES ('old@x.org', 'old@x.org', NULL, '[]')")
    db.execute("INSERT INTO base_opted_out VALUES ('old@x.org')")
    db.commit()
    db.close()
    _, base = await load(client, BaseSpec(news, COLUMNS), path)
    assert base == truth(server.state, news)


# -- snapshots and the incremental read --------------------------------------------------------


async def test_nothing_changed_costs_two_requests(
    client: Client, server: RunningServer, tmp_path: Path
) -> None:
    """A snapshot and no change since: lists/{id} plus one updatedsince page."""
    news = await make_list(client, "News")
    await add(client, rows("a", 20), news)
    settle(server.state)
    spec = BaseSpec(news, COLUMNS, snapshot_dir=tmp_path / "snapshots")
    first, base = await sync_point(client, spec, tmp_path, "one")
    assert first.source == "full"
    second, again = await load(client, spec, tmp_path / "two.db")
    assert (second.source, second.reason, second.requests) == ("incremental", None, 2)
    assert again == base == truth(server.state, news)
    assert second.as_of >= first.as_of


async def test_the_snapshot_file_is_private_and_replaced_atomically(
    client: Client, server: RunningServer, tmp_path: Path
) -> None:
    """Mode 0600 in a 0700 directory, no temporary file left, one file per list."""
    news = await make_list(client, "News")
    spec = BaseSpec(news, COLUMNS, snapshot_dir=tmp_path / "snapshots")
    await sync_point(client, spec, tmp_path, "one")
    await sync_point(client, spec, tmp_path, "two")
    files = list((tmp_path / "snapshots").iterdir())
    assert files == [snapshot_path(tmp_path / "snapshots", client, spec)]
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "snapshots").stat().st_mode) == 0o700


async def test_no_snapshot_dir_keeps_nothing(
    client: Client, server: RunningServer, tmp_path: Path
) -> None:
    """``snapshot_dir=None``: save_snapshot writes nothing, every read is full."""
    news = await make_list(client, "News")
    spec = BaseSpec(news, COLUMNS)
    await sync_point(client, spec, tmp_path, "one")
    info, _ = await sync_point(client, spec, tmp_path, "two")
    assert (info.source, info.reason) == ("full", None)
    assert not (tmp_path / "snapshots").exists()


CHANGES = [
    "bulk add",
    "bulk update",
    "put",
    "remove from this list",
    "remove from one of two lists",
    "added to the other list",
    "clear",
    "opt out",
    "opt out a non-member",
    "opt back in",
    "other list only",
]


async def change(kind: str, client: Client, state: Any, news: str, other: str) -> None:
    """One out-of-band change of ``kind``."""
    if kind == "bulk add":
        await add(client, rows("n", 7), news)
    elif kind == "bulk update":
        await add(client, [["a1@example.org", "Changed", "", "v"]], news)
    elif kind == "put":
        await put(client, state, "a2@example.org", City="Put City", FirstName="")
    elif kind == "remove from this list":
        await remove(client, ["a3@example.org"], news)
    elif kind == "remove from one of two lists":
        await remove(client, ["both0@example.org"], news)
    elif kind == "added to the other list":
        await add(client, [["a4@example.org", "", "", ""]], other)
    elif kind == "clear":
        await clear(client, news)
    elif kind == "opt out":
        await opt_out(client, state, "a5@example.org")
    elif kind == "opt out a non-member":
        await opt_out(client, state, "o1@example.org")
    elif kind == "opt back in":
        body = contact_body("dnm0@example.org", [news], source="ACTION_BY_CONTACT")
        cid = contact_id(state, "dnm0@example.org")
        await client.request("PUT", f"contacts/{cid}", content=body, headers=ATOM_XML)
    elif kind == "other list only":
        await add(client, rows("o", 3, start=10), other)
    else:  # pragma: no cover
        raise AssertionError(kind)


async def starting_state(client: Client, state: Any) -> tuple[str, str]:
    news, other = await make_list(client, "News"), await make_list(client, "Other")
    await add(client, rows("a", 10), news)
    await add(client, rows("both", 3), news, other)
    await add(client, rows("o", 3), other)
    await add(client, rows("dnm", 2), other)
    await opt_out(client, state, "dnm0@example.org")
    return news, other


@pytest.mark.parametrize("kind", CHANGES)
async def test_incremental_equals_a_full_read_after(
    kind: str, client: Client, server: RunningServer, tmp_path: Path, generous: None
) -> None:
    """After each kind of change the incremental base is the list as it is."""
    news, other = await starting_state(client, server.state)
    spec = BaseSpec(news, COLUMNS, snapshot_dir=tmp_path / "snapshots")
    await sync_point(client, spec, tmp_path, "one")
    await change(kind, client, server.state, news, other)
    info, base = await load(client, spec, tmp_path / "two.db")
    assert (info.source, info.reason) == ("incremental", None)
    assert base == truth(server.state, news)
    _, full = await load(client, BaseSpec(news, COLUMNS, full=True), tmp_path / "full.db")
    assert base == full


async def test_changes_stamped_late_fall_in_the_next_window(
    client: Client, server: RunningServer, tmp_path: Path, generous: None
) -> None:
    """A change stamped just before ``as_of`` (committed late, within the skew) is seen."""
    news = await make_list(client, "News")
    await add(client, rows("a", 5), news)
    spec = BaseSpec(news, COLUMNS, snapshot_dir=tmp_path / "snapshots")
    info, _ = await sync_point(client, spec, tmp_path, "one")
    stamp = int(parse_time(info.as_of).timestamp() * 1000)
    _db(server.state).execute(
        "UPDATE contact SET FirstName = 'Late', last_update_time = ? WHERE email_key = ?",
        (stamp, "a0@example.org"),
    )
    again, base = await load(client, spec, tmp_path / "two.db")
    assert again.source == "incremental"
    assert base[0]["a0@example.org"][1][0] == "Late"


# -- fallbacks ---------------------------------------------------------------------------------


async def _fallback(
    client: Client, server: RunningServer, tmp_path: Path, spec: BaseSpec
) -> BaseInfo:
    info, base = await load(client, spec, tmp_path / "again.db")
    assert info.source == "full"
    assert base == truth(server.state, spec.list_uri, spec.columns)
    return info


@pytest.fixture
async def snapshotted(client: Client, server: RunningServer, tmp_path: Path) -> BaseSpec:
    news = await make_list(client, "News")
    await add(client, rows("a", 12), news)
    settle(server.state)
    spec = BaseSpec(news, COLUMNS, snapshot_dir=tmp_path / "snapshots")
    await sync_point(client, spec, tmp_path, "one")
    return spec


async def test_full_is_said(
    client: Client, server: RunningServer, tmp_path: Path, snapshotted: BaseSpec
) -> None:
    """``--full`` with a snapshot: a full read, and the reason says so."""
    info = await _fallback(
        client, server, tmp_path, BaseSpec(**{**_fields(snapshotted), "full": True})
    )
    assert info.reason == "--full was given"


def _fields(spec: BaseSpec) -> dict[str, Any]:
    return {
        "list_uri": spec.list_uri,
        "columns": spec.columns,
        "full": spec.full,
        "snapshot_dir": spec.snapshot_dir,
    }


async def test_other_columns_read_anew(
    client: Client, server: RunningServer, tmp_path: Path, snapshotted: BaseSpec
) -> None:
    """A mapping of other columns never uses the snapshot."""
    spec = BaseSpec(**{**_fields(snapshotted), "columns": ("LastName",)})
    info = await _fallback(client, server, tmp_path, spec)
    assert info.reason is not None
    assert "other columns" in info.reason


async def test_a_snapshot_older_than_the_horizon_is_not_used(
    client: Client, server: RunningServer, tmp_path: Path, snapshotted: BaseSpec
) -> None:
    """Older than HISTORY_HORIZON: read anew."""
    path = snapshot_path(tmp_path / "snapshots", client, snapshotted)
    old = parse_time(format_time(parse_time("2020-01-01")))
    with sqlite3.connect(path) as snap:
        snap.execute("UPDATE meta SET value = ? WHERE key = 'as_of'", (format_time(old),))
    info = await _fallback(client, server, tmp_path, snapshotted)
    assert info.reason is not None
    assert "older than the 30 days" in info.reason


async def test_a_damaged_snapshot_is_not_used(
    client: Client, server: RunningServer, tmp_path: Path, snapshotted: BaseSpec
) -> None:
    """Garbage in the snapshot file: read anew, and say why."""
    path = snapshot_path(tmp_path / "snapshots", client, snapshotted)
    path.write_bytes(b"not a database" * 100)
    info = await _fallback(client, server, tmp_path, snapshotted)
    assert info.reason is not None
    assert "cannot be read" in info.reason


async def test_an_address_changed_by_put_fails_the_count_check(
    client: Client, server: RunningServer, tmp_path: Path, snapshotted: BaseSpec
) -> None:
    """The old address would linger; the member count gives it away."""
    await put(client, server.state, "a3@example.org", EmailAddress="renamed@example.org")
    info = await _fallback(client, server, tmp_path, snapshotted)
    assert info.reason is not None
    assert "members but the list has" in info.reason


async def test_more_changes_than_a_full_read_costs(
    client: Client,
    server: RunningServer,
    tmp_path: Path,
    snapshotted: BaseSpec,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fetching the changed members would cost more than a full read: read anew."""
    monkeypatch.setattr(sync_base, "FULL_READ_REQUESTS", 3)
    await add(
        client, [[f"a{i}@example.org", "New", "", ""] for i in range(5)], snapshotted.list_uri
    )
    info = await _fallback(client, server, tmp_path, snapshotted)
    assert info.reason is not None
    assert "cost more than a full read" in info.reason


async def test_more_changed_pages_than_a_full_read_costs(
    client: Client,
    server: RunningServer,
    tmp_path: Path,
    snapshotted: BaseSpec,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The walk stops as soon as its pages alone cost more than a full read."""
    monkeypatch.setattr(sync_base, "FULL_READ_REQUESTS", 1)
    other = await make_list(client, "Other")
    await add(client, rows("z", 120), other)
    info = await _fallback(client, server, tmp_path, snapshotted)
    assert info.reason is not None
    assert "a full read costs less" in info.reason
    assert info.requests < 12


async def test_an_era_server_refusing_unfiltered_updatedsince(
    client: Client,
    server: RunningServer,
    tmp_path: Path,
    snapshotted: BaseSpec,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that answers 400 without listtype/listid (as spec §6.4 guessed): read anew."""
    original = server_contacts._updated_since

    async def era(request: Any, account: Any) -> Any:
        params = request.query_params
        if "listtype" not in params and "listid" not in params:
            raise ApiProblem(400, "updatedsince needs exactly one of listtype or listid")
        return await original(request, account)

    monkeypatch.setattr(server_contacts, "_updated_since", era)
    info = await _fallback(client, server, tmp_path, snapshotted)
    assert info.reason is not None
    assert "HTTP 400" in info.reason


# -- the server stamps every change ------------------------------------------------------------


def contact_states(state: Any) -> dict[str, tuple[int, tuple[Any, ...]]]:
    """Every contact: its stamp, and what a sync can see of it (status, fields, lists)."""
    db = _db(state)
    lists: dict[int, list[int]] = {}
    for cid, lid in db.execute("SELECT contact_id, list_id FROM membership ORDER BY list_id"):
        lists.setdefault(cid, []).append(lid)
    return {
        key: (stamp, (status, first, city, custom, tuple(lists.get(cid, []))))
        for cid, key, stamp, status, first, city, custom in db.execute(
            "SELECT id, email_key, last_update_time, status, FirstName, City, CustomField1"
            " FROM contact"
        )
    }


@pytest.mark.parametrize("kind", CHANGES)
async def test_every_change_moves_last_update_time(
    kind: str, client: Client, server: RunningServer
) -> None:
    """Every contact whose status, fields or lists a change touched gets a later stamp."""
    state = server.state
    news, other = await starting_state(client, state)
    before = contact_states(state)
    await trio.sleep(0.002)  # stamps are in ms: the change is stamped later than all before
    await change(kind, client, state, news, other)
    after = contact_states(state)
    changed = [key for key in after if key not in before or after[key][1] != before[key][1]]
    assert changed, kind
    latest = max(stamp for stamp, _ in before.values())
    for key in changed:
        assert after[key][0] > latest, key


# -- the property: incremental == full after any sequence of changes ------------------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                *("add", "edit", "put", "remove", "remove-one"),
                *("opt-out", "opt-in", "clear", "other", "rename"),
            ]
        ),
        st.integers(0, 7),
    ),
    min_size=1,
    max_size=5,
)


#: Former addresses of Do Not Mail contacts renamed while opted out (see below).
RETIRED: set[str] = set()


async def random_change(client: Client, state: Any, news: str, other: str, op: str, n: int) -> None:
    email = f"p{n}@example.org"
    exists = (
        _db(state).execute("SELECT status FROM contact WHERE email_key = ?", (email,)).fetchone()
    )
    if op == "add":
        await add(client, [[email, f"F{n}", "", ""]], news, *([other] if n % 2 else []))
    elif op == "edit":
        await add(client, [[email, "", f"City {n}", "c"]], news)
    elif op == "put" and exists:
        await put(client, state, email, City=f"P{n}")
    elif op == "remove" and exists:
        await remove(client, [email], news, other)
    elif op == "remove-one" and exists:
        await remove(client, [email], news)
    elif op == "opt-out" and exists:
        await opt_out(client, state, email)
    elif op == "opt-in" and exists and exists[0] == "Do Not Mail":
        body = contact_body(email, [news], source="ACTION_BY_CONTACT")
        cid = contact_id(state, email)
        await client.request("PUT", f"contacts/{cid}", content=body, headers=ATOM_XML)
    elif op == "rename" and exists:
        renamed = f"r{n}.{exists[0][:1]}@example.org"
        taken = _db(state).execute("SELECT 1 FROM contact WHERE email_key = ?", (renamed,))
        if taken.fetchone() is None:
            if exists[0] == "Do Not Mail":
                RETIRED.add(email)
            await put(client, state, email, EmailAddress=renamed)
    elif op == "clear":
        await clear(client, news)
    elif op == "other":
        await add(client, [[email, "O", "", ""]], other)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(OPS, min_size=1, max_size=4))
def test_incremental_always_equals_the_list(
    steps: list[list[tuple[str, int]]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Random sequences of adds, edits, removals (from this list, from one of two), opt-outs,
    opt-ins, renames and clears, some made while the base is read: after each, the next read
    from the snapshot equals the list."""
    from tests.serverkit import make_state, start_server

    tmp_path = tmp_path_factory.mktemp("prop")
    keep = sync_base.FULL_READ_REQUESTS
    sync_base.FULL_READ_REQUESTS = 100_000  # the incremental path is what is tested

    RETIRED.clear()

    async def scenario() -> None:
        state = make_state(tmp_path)
        try:
            async with trio.open_nursery() as nursery:
                server = await start_server(nursery, state)
                async with open_client(client_config(server)) as client:
                    news, other = await make_list(client, "News"), await make_list(client, "Other")
                    await add(client, [[f"p{n}@example.org", "S", "", ""] for n in range(4)], news)
                    spec = BaseSpec(news, COLUMNS, snapshot_dir=tmp_path / "snapshots")
                    for number, ops in enumerate(steps):
                        during = ops[len(ops) // 2 :]
                        for op, n in ops[: len(ops) // 2]:
                            await random_change(client, state, news, other, op, n)
                        async with trio.open_nursery() as inner:  # changes during the read
                            for op, n in during:
                                inner.start_soon(random_change, client, state, news, other, op, n)
                            await sync_point(client, spec, tmp_path, f"s{number}")
                        info, base = await load(client, spec, tmp_path / f"c{number}.db")
                        members, dnm = truth(state, news)
                        assert base[0] == members
                        # The API cannot show a Do Not Mail contact's former address: it
                        # stays opted out (never re-added) until a full read or a contact
                        # of that address says otherwise. Nothing else may linger.
                        assert dnm <= base[1] <= dnm | RETIRED, (base[1], dnm, RETIRED)
                        # Only a changed address is invisible to updatedsince (the count
                        # check catches it); anything else is read incrementally.
                        assert info.source == "incremental" or (
                            "members but the list has" in (info.reason or "")
                        ), info.reason
                nursery.cancel_scope.cancel()
        finally:
            state.store.close()

    try:
        trio.run(scenario)
    finally:
        sync_base.FULL_READ_REQUESTS = keep


def test_as_of_is_the_server_clock_minus_the_skew() -> None:
    """The skew is what the server docstring promises (30 s)."""
    assert timedelta(seconds=30) == sync_base.STAMP_SKEW
    assert "30 s later" in " ".join((server_contacts.__doc__ or "").split())


def test_snapshot_path_ignores_the_loopback_port_only() -> None:
    """One file per account and list; the embedded server's port does not count."""
    spec = BaseSpec("http://127.0.0.1:1/ws/customers/demo/lists/7", ("City",))
    legacy = BaseSpec("http://api.constantcontact.com/ws/customers/demo/lists/7", ())
    eight = BaseSpec("http://127.0.0.1:1/ws/customers/demo/lists/8", ("City",))
    here = Path("/snaps")
    a = snapshot_path(here, "http://127.0.0.1:5001/ws/customers/demo/", spec)
    assert a == snapshot_path(here, "http://127.0.0.1:6002/ws/customers/demo/", spec)
    assert a == snapshot_path(here, "http://127.0.0.1:1/ws/customers/demo/", legacy)
    assert a != snapshot_path(here, "http://127.0.0.1:5001/ws/customers/other/", spec)
    assert a != snapshot_path(here, "http://127.0.0.1:5001/ws/customers/demo/", eight)
    remote = snapshot_path(here, "https://api.example.com:443/ws/customers/demo/", spec)
    assert remote != snapshot_path(here, "https://api.example.com:8443/ws/customers/demo/", spec)
    assert a.parent == here


async def test_an_opted_out_address_changed_by_put_stays_opted_out_until_a_full_read(
    client: Client, server: RunningServer, tmp_path: Path, snapshotted: BaseSpec, generous: None
) -> None:
    """The one change the incremental read cannot see: its old address stays in
    base_opted_out (conservative: it is never re-added); a full read drops it."""
    await add(client, [["x@example.org", "", "", ""]], await make_list(client, "Other"))
    await opt_out(client, server.state, "x@example.org")
    await sync_point(client, snapshotted, tmp_path, "known")
    await put(client, server.state, "x@example.org", EmailAddress="moved@example.org")
    info, base = await load(client, snapshotted, tmp_path / "two.db")
    assert info.source == "incremental", info.reason
    assert base[1] == truth(server.state, snapshotted.list_uri)[1] | {"x@example.org"}
    _, full = await load(client, BaseSpec(snapshotted.list_uri, COLUMNS), tmp_path / "f.db")
    assert full[1] == truth(server.state, snapshotted.list_uri)[1]
