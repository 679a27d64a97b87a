"""The account's sender addresses: ``/settings/emailaddresses`` (spec §9)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import trio
from lxml import etree

from bulkops.server.app import ApiState
from bulkops.server.settings import add_email_address
from bulkops.wire.atom.email_addresses import email_address_from_entry
from bulkops.wire.atom.feeds import parse_feed
from bulkops.wire.atom.syntax import ATOM_NS, parse_xml
from tests.conftest import FIXTURES
from tests.eventkit import NOW, entries, seeded_state, walk
from tests.pgkit import BOTH_STORES
from tests.serverkit import HANG_GUARD, add_account, asgi_client, basic

STORES = BOTH_STORES


def _state(path: Path) -> Iterator[ApiState]:
    state, _clock, _summary = seeded_state(path, contacts=0, lists=0)
    yield state
    state.store.close()


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiState]:
    """A demo account with one Verified (id 1) and one Pending (id 2) address (shared by the
    tests that only read)."""
    yield from _state(tmp_path_factory.mktemp("settings"))


@pytest.fixture
def own_state(tmp_path: Path) -> Iterator[ApiState]:
    """Like ``state``, for one test that writes."""
    yield from _state(tmp_path)


@pytest.fixture
async def client(state: ApiState) -> AsyncIterator[httpx.AsyncClient]:
    """The demo account's in-process client."""
    async with asgi_client(state) as c:
        yield c


def shape(el: etree._Element) -> tuple[object, ...]:
    return (el.tag, tuple(sorted(el.attrib)), tuple(shape(c) for c in el if isinstance(c.tag, str)))


async def fetch(client: httpx.AsyncClient, path: str) -> httpx.Response:
    with trio.fail_after(HANG_GUARD):
        return await client.get(path)


async def test_feed_lists_verified_and_pending_like_the_fixture(client: httpx.AsyncClient) -> None:
    """Two entries shaped like settings-emailaddresses.xml's; empty feed title; the entry title
    is the address; VerifiedTime only while Verified."""
    response = await fetch(client, "settings/emailaddresses")
    assert response.status_code == 200
    feed = parse_feed(response.content)
    assert feed.title == ""
    ours = entries(response.content)
    theirs = entries((FIXTURES / "settings-emailaddresses.xml").read_bytes())
    assert [shape(e) for e in ours] == [shape(e) for e in theirs]
    parsed = [email_address_from_entry(e) for e in ours]
    assert [(a.id, a.email, a.status) for a in parsed] == [
        ("1", "demo@example.com", "Verified"),
        ("2", "demo.news@example.com", "Pending"),
    ]
    assert parsed[0].verified_time is not None
    assert parsed[1].verified_time is None
    assert [e.findtext(f"{{{ATOM_NS}}}title") for e in ours] == [a.email for a in parsed]


async def test_one_address_has_the_fixture_shape_with_source(client: httpx.AsyncClient) -> None:
    """GET /settings/emailaddresses/1 is shaped like settings-emailaddress-entry.xml."""
    response = await fetch(client, "settings/emailaddresses/1")
    assert response.status_code == 200
    theirs = parse_xml((FIXTURES / "settings-emailaddress-entry.xml").read_bytes())
    assert shape(parse_xml(response.content)) == shape(theirs)


@pytest.mark.parametrize("address", ["99", "abc", "1.0", "-1", ""])
async def test_unknown_addresses_are_404(client: httpx.AsyncClient, address: str) -> None:
    """Unknown or malformed ids."""
    assert (await fetch(client, f"settings/emailaddresses/{address}")).status_code == 404


async def test_another_accounts_address_is_404(own_state: ApiState) -> None:
    """Another account's credentials see their own (empty) settings, not demo's."""
    state = own_state
    add_account(state, "other", "pw", "key")
    async with asgi_client(state, "other") as other:
        other.headers["Authorization"] = basic("other", "pw", "key")
        assert (await fetch(other, "settings/emailaddresses/1")).status_code == 404
        assert entries((await fetch(other, "settings/emailaddresses")).content) == []


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_the_collection_is_read_only(client: httpx.AsyncClient, method: str) -> None:
    """No write methods in v1: 415 (the v1 code for an unsupported method)."""
    with trio.fail_after(HANG_GUARD):
        response = await client.request(method, "settings/emailaddresses", content=b"<entry/>")
        one = await client.request(method, "settings/emailaddresses/1", content=b"<entry/>")
    assert (response.status_code, one.status_code) == (415, 415)


async def test_addresses_page_by_50(own_state: ApiState) -> None:
    """62 addresses: 50, then 12, ascending ids."""
    db = own_state.store.connection()
    for i in range(60):
        add_email_address(db, 1, f"sender{i}@example.com", verified=i % 2 == 0, now=NOW)
    async with asgi_client(own_state) as client:
        first = parse_feed((await fetch(client, "settings/emailaddresses")).content)
        assert len(first.entries) == 50
        assert first.link("next") is not None
        found = await walk(client, "settings/emailaddresses")
    every = [email_address_from_entry(e) for e in found]
    assert [int(a.id) for a in every] == list(range(1, 63))


def test_add_email_address_is_idempotent_and_case_insensitive(own_state: ApiState) -> None:
    """The same address in another case is the existing one; an empty one is refused."""
    db = own_state.store.connection()
    again = add_email_address(db, 1, "  DEMO@example.COM ", verified=False, now=NOW + 1)
    assert (again.id, again.email, again.status) == ("1", "demo@example.com", "Verified")
    with pytest.raises(ValueError, match="empty"):
        add_email_address(db, 1, "  ", verified=True, now=NOW)
