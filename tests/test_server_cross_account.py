"""List URIs of another account in an activity are refused (403), over real HTTP (defect 5)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from bulkops.server.app import ApiState
from bulkops.server.datafile import RequestProblem, parse_activity_form
from bulkops.server.store import now_ms, write_tx
from bulkops.wire.atom.feeds import parse_feed
from tests.pgkit import BOTH_STORES
from tests.serverkit import HANG_GUARD, USER, RunningServer, add_account, make_state, start_server

STORES = BOTH_STORES

URLENCODED = "application/x-www-form-urlencoded"
OTHER = "alice"


def make_list(state: ApiState, name: str, username: str) -> int:
    """Create a contact list of ``username`` with direct SQL; return its id."""
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


def uri(username: str, list_id: int | str) -> str:
    return f"http://api.constantcontact.com/ws/customers/{username}/lists/{list_id}"


@pytest.fixture
async def running(tmp_path: object, nursery: trio.Nursery) -> RunningServer:
    """The API over loopback with the demo account and alice, who has a list of her own."""
    state = make_state(tmp_path)  # type: ignore[arg-type]
    add_account(state, OTHER, "alice-pw", "alice-key")
    return await start_server(nursery, state)


@pytest.fixture
async def client(running: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    """The demo account's client."""
    async with running.client() as c:
        yield c


async def post(client: httpx.AsyncClient, **fields: str) -> httpx.Response:
    with trio.fail_after(HANG_GUARD):
        return await client.post("activities", data=fields)


@pytest.mark.parametrize("system_list", ["active", "do-not-mail", "removed"])
async def test_an_export_of_another_accounts_system_list_is_403(
    client: httpx.AsyncClient, system_list: str
) -> None:
    """alice's Active/Do Not Mail/Removed list is not demo's: refused, nothing is queued."""
    response = await post(client, activityType="EXPORT_CONTACTS", listId=uri(OTHER, system_list))
    assert response.status_code == 403, response.text
    assert "another account" in response.text
    with trio.fail_after(HANG_GUARD):
        feed = parse_feed((await client.get("activities")).content)
    assert feed.entries == []


@pytest.mark.parametrize("activity_type", ["SV_ADD", "ADD_CONTACTS", "REMOVE_CONTACTS_FROM_LISTS"])
async def test_activities_naming_another_accounts_lists_are_403(
    running: RunningServer, client: httpx.AsyncClient, activity_type: str
) -> None:
    """A list URI under alice's path is refused whatever list it names, system or hers."""
    theirs = make_list(running.state, "Hers", OTHER)
    for named in (uri(OTHER, "active"), uri(OTHER, theirs)):
        response = await post(
            client, activityType=activity_type, data="Email\na@example.org", lists=named
        )
        assert response.status_code == 403, (named, response.text)


async def test_clearing_another_accounts_list_is_403(
    running: RunningServer, client: httpx.AsyncClient
) -> None:
    """CLEAR_CONTACTS_FROM_LISTS names lists only: the same rule."""
    theirs = make_list(running.state, "Hers", OTHER)
    response = await post(
        client, activityType="CLEAR_CONTACTS_FROM_LISTS", lists=uri(OTHER, theirs)
    )
    assert response.status_code == 403


async def test_own_list_uris_still_work_in_any_case_and_without_an_account(
    running: RunningServer, client: httpx.AsyncClient
) -> None:
    """demo's own URIs (any host, upper-case username) and sloppy paths are still accepted."""
    mine = make_list(running.state, "Mine", USER)
    for named in (uri(USER, mine), uri(USER.upper(), mine), f"/lists/{mine}"):
        response = await post(
            client, activityType="SV_ADD", data="Email\na@example.org", lists=named
        )
        assert response.status_code == 201, (named, response.text)
    export = await post(client, activityType="EXPORT_CONTACTS", listId=uri(USER, "active"))
    assert export.status_code == 201, export.text


@given(
    owner=st.from_regex(r"[a-z][a-z0-9_.-]{0,20}", fullmatch=True),
    target=st.sampled_from(["active", "removed", "do-not-mail", "7"]),
)
def test_a_uri_under_another_username_is_always_refused(owner: str, target: str) -> None:
    """Whatever the foreign username, the form is refused with 403 before any database work."""
    form = f"activityType=EXPORT_CONTACTS&listId={uri(owner, target)}".encode()
    if owner == USER:
        assert parse_activity_form(form, URLENCODED, max_rows=10, max_bytes=100, username=USER)
        return
    with pytest.raises(RequestProblem) as caught:
        parse_activity_form(form, URLENCODED, max_rows=10, max_bytes=100, username=USER)
    assert caught.value.status == 403
