"""Contact and campaign events: service documents, collections, paging, per-URL clicks, the
contact summary and the 90-day window."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import trio
from lxml import etree

from bulkops.server.app import ApiState
from bulkops.server.seed_cli import SeedSummary
from bulkops.wire.atom.campaigns import parse_campaign
from bulkops.wire.atom.events import event_from_entry, event_summary_from_entry
from bulkops.wire.atom.feeds import parse_feed
from bulkops.wire.atom.reading import links_of, local_name
from bulkops.wire.atom.service import parse_service_document
from bulkops.wire.atom.syntax import ATOM_NS, format_time, parse_time
from bulkops.wire.model import BOUNCE_CODES, EVENT_ELEMENTS
from tests.conftest import FIXTURES
from tests.eventkit import DAY, NOW, Clock, entries, seeded_state, walk
from tests.pgkit import BOTH_STORES
from tests.serverkit import HANG_GUARD, add_account, asgi_client, basic

STORES = BOTH_STORES

Seeded = tuple[ApiState, Clock, SeedSummary]


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[Seeded]:
    """The demo account with 120 contacts and 4 campaigns (2 sent), clock pinned at NOW."""
    state, clock, summary = seeded_state(tmp_path, contacts=120, lists=2, campaigns=4)
    yield state, clock, summary
    state.store.close()


@pytest.fixture
async def client(seeded: Seeded) -> AsyncIterator[httpx.AsyncClient]:
    """The demo account's in-process client."""
    async with asgi_client(seeded[0]) as c:
        yield c


def sent_campaign(seeded: Seeded) -> int:
    """The first sent campaign of the seed."""
    return seeded[2].campaigns[0]


def db_events(state: ApiState, where: str, *args: object) -> list[tuple[int, int]]:
    """(row id, time) of matching events within the window, in the expected feed order."""
    rows = state.store.connection().execute(
        f"SELECT id, time FROM event WHERE {where} AND time >= ?", (*args, NOW - 90 * DAY)
    )
    return sorted(rows, key=lambda row: (-row[1], -row[0]))


def keys(found: list[etree._Element]) -> list[tuple[int, int]]:
    """(row id, time) of each event entry, from its id ``{campaign},{row},{ms}``."""
    result = []
    for entry in found:
        _campaign, row, ms = event_from_entry(entry).id.split(",")
        result.append((int(row), int(ms)))
    return result


async def fetch(client: httpx.AsyncClient, path: str) -> httpx.Response:
    with trio.fail_after(HANG_GUARD):
        return await client.get(path)


# -- service documents --------------------------------------------------------------------


async def test_campaign_workspace_has_the_fixture_collections(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    """GET …/events/ lists bounces, forwards, opens, optouts and sends like the fixture."""
    cid = sent_campaign(seeded)
    response = await fetch(client, f"campaigns/{cid}/events/")
    assert response.status_code == 200
    ours = parse_service_document(response.content)
    theirs = parse_service_document(
        (FIXTURES / "campaign-events-service-document.xml").read_bytes()
    )
    assert ours.title == theirs.title == "Constant Contact Web Services Event Workspace"
    assert [c.href.rsplit("/", 1)[1] for c in ours.collections] == [
        c.href.rsplit("/", 1)[1] for c in theirs.collections
    ]
    assert all(
        c.href.startswith(f"/ws/customers/demo/campaigns/{cid}/events/") for c in ours.collections
    )
    assert [c.accept for c in ours.collections] == [c.accept for c in theirs.collections]


async def test_contact_workspace_lists_every_collection_and_the_summary(
    client: httpx.AsyncClient,
) -> None:
    """GET /contacts/{id}/events/ lists the six kinds and summary."""
    response = await fetch(client, "contacts/3/events/")
    assert response.status_code == 200
    doc = parse_service_document(response.content)
    assert [c.href for c in doc.collections] == [
        f"/ws/customers/demo/contacts/3/events/{kind}"
        for kind in ("bounces", "clicks", "forwards", "opens", "optouts", "sends", "summary")
    ]


@pytest.mark.parametrize(
    "path",
    [
        "campaigns/{cid}/events",  # the trailing slash is required
        "campaigns/1100000009999/events/",
        "campaigns/1100000009999/events/opens",
        "campaigns/{cid}/events/spam",
        "campaigns/{cid}/events/urls",
        "campaigns/{cid}/events/urls/abc",
        "campaigns/{cid}/events/urls/999999",
        "contacts/3/events",
        "contacts/999999/events/",
        "contacts/999999/events/opens",
        "contacts/999999/events/summary",
        "contacts/3/events/summaries",
    ],
)
async def test_unknown_event_resources_are_404(
    client: httpx.AsyncClient, seeded: Seeded, path: str
) -> None:
    """Missing slash, unknown owner, kind or link: 404."""
    response = await fetch(client, path.format(cid=sent_campaign(seeded)))
    assert response.status_code == 404


async def test_another_accounts_events_are_404(client: httpx.AsyncClient, seeded: Seeded) -> None:
    """Credentials of another account see none of the demo account's events."""
    state = seeded[0]
    add_account(state, "other", "pw", "key")
    async with asgi_client(state, "other") as other:
        other.headers["Authorization"] = basic("other", "pw", "key")
        for path in (f"campaigns/{sent_campaign(seeded)}/events/opens", "contacts/3/events/sends"):
            assert (await fetch(other, path)).status_code == 404


# -- collections --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(EVENT_ELEMENTS))
async def test_campaign_collections_carry_their_element(
    client: httpx.AsyncClient, seeded: Seeded, kind: str
) -> None:
    """Every entry of …/events/{kind} has that kind's element, the composite id, no edit link,
    and the extras of its kind; the entries are exactly the campaign's events of that kind."""
    cid = sent_campaign(seeded)
    found = await walk(client, f"campaigns/{cid}/events/{kind}?pageSize=200")
    assert keys(found) == db_events(seeded[0], "campaign_id = ? AND kind = ?", cid, kind)
    for entry in found:
        payload = entry.find(f"{{{ATOM_NS}}}content")[0]  # type: ignore[index]
        assert local_name(payload) == EVENT_ELEMENTS[kind]
        assert "edit" not in links_of(entry)
        assert entry.findtext(f"{{{ATOM_NS}}}id") == payload.get("id")
        event = event_from_entry(entry)
        assert event.campaign_id == str(cid)
        assert event.id.endswith(f",{parse_time(format_time(event.time)).timestamp() * 1000:.0f}")
        assert event.email
        assert (event.link_url is not None) == (kind == "clicks")
        assert (event.code is not None) == (kind == "bounces")
        if kind == "bounces":
            assert event.description == BOUNCE_CODES[event.code or ""]
            assert event.bounce_message


async def test_pages_are_newest_first_and_cover_every_event_once(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    """Pages of 7 with opaque next links: newest first, no duplicates, nothing missing."""
    cid = sent_campaign(seeded)
    found = await walk(client, f"campaigns/{cid}/events/sends?pageSize=7")
    expected = db_events(seeded[0], "campaign_id = ? AND kind = 'sends'", cid)
    assert len(expected) > 14
    assert keys(found) == expected
    first = await fetch(client, f"campaigns/{cid}/events/sends?pageSize=7")
    feed = parse_feed(first.content)
    assert len(feed.entries) == 7
    assert [link.rel for link in feed.links] == ["alternate", "self", "next", "first", "current"]
    assert "pageSize=7" in (feed.link("next") or "")


@pytest.mark.parametrize(("size", "expected"), [("1", 1), ("200", 200), (None, 50), (" 9 ", 9)])
async def test_page_size_is_honoured(
    client: httpx.AsyncClient, seeded: Seeded, size: str | None, expected: int
) -> None:
    """pageSize 1–200 (default 50) on campaign events."""
    cid = sent_campaign(seeded)
    params = {} if size is None else {"pageSize": size}
    with trio.fail_after(HANG_GUARD):
        response = await client.get(f"campaigns/{cid}/events/sends", params=params)
    total = len(db_events(seeded[0], "campaign_id = ? AND kind = 'sends'", cid))
    assert total > 50
    assert len(entries(response.content)) == min(expected, total)


@pytest.mark.parametrize("size", ["0", "201", "-1", "abc", "", "1e2", "٣"])
async def test_bad_page_sizes_are_400(client: httpx.AsyncClient, seeded: Seeded, size: str) -> None:
    """Outside 1–200, or not a number: 400 naming pageSize."""
    with trio.fail_after(HANG_GUARD):
        response = await client.get(
            f"campaigns/{sent_campaign(seeded)}/events/opens", params={"pageSize": size}
        )
    assert response.status_code == 400
    assert "pageSize" in response.text


async def test_contact_collections_ignore_page_size(client: httpx.AsyncClient) -> None:
    """The v1 docs give pageSize only for campaign events."""
    response = await fetch(client, "contacts/3/events/sends?pageSize=0")
    assert response.status_code == 200


@pytest.mark.parametrize("token", ["2", "zzzzzz", "1-2-3x", "%00"])
async def test_forged_tokens_are_400(client: httpx.AsyncClient, seeded: Seeded, token: str) -> None:
    """A next token this server did not issue for the collection: 400."""
    with trio.fail_after(HANG_GUARD):
        response = await client.get(
            f"campaigns/{sent_campaign(seeded)}/events/opens", params={"next": token}
        )
    assert response.status_code == 400


async def test_clicks_are_grouped_per_url(client: httpx.AsyncClient, seeded: Seeded) -> None:
    """…/events/urls/{id} holds that link's clicks (LinkUrl = its Value); together the links
    hold every click of the campaign."""
    cid = sent_campaign(seeded)
    campaign = parse_campaign((await fetch(client, f"campaigns/{cid}")).content)
    total: list[tuple[int, int]] = []
    for url in campaign.urls:
        found = await walk(client, f"campaigns/{cid}/events/urls/{url.id}?pageSize=3")
        assert keys(found) == db_events(seeded[0], "url_id = ?", int(url.id))
        assert all(event_from_entry(e).link_url == url.url for e in found)
        assert len(found) == url.clicks
        total.extend(keys(found))
    everything = db_events(seeded[0], "campaign_id = ? AND kind = 'clicks'", cid)
    assert sorted(total) == sorted(everything)
    assert len(everything) > 0


async def test_a_link_of_another_campaign_is_404(client: httpx.AsyncClient, seeded: Seeded) -> None:
    """A URL id is only found under its own campaign."""
    first, second = seeded[2].campaigns[:2]
    other = parse_campaign((await fetch(client, f"campaigns/{second}")).content).urls[0]
    assert (await fetch(client, f"campaigns/{first}/events/urls/{other.id}")).status_code == 404


async def test_contact_events_and_summary_agree_with_the_events(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    """A contact's collections hold its events; the summary counts opens, clicks and forwards
    per campaign, newest campaign first."""
    state = seeded[0]
    db = state.store.connection()
    (contact,) = db.execute(
        "SELECT contact_id FROM event WHERE kind = 'clicks' ORDER BY contact_id LIMIT 1"
    ).fetchone()
    for kind in ("sends", "opens", "clicks"):
        found = await walk(client, f"contacts/{contact}/events/{kind}")
        assert keys(found) == db_events(state, "contact_id = ? AND kind = ?", contact, kind)
        assert all(event_from_entry(e).campaign_name for e in found)
    response = await fetch(client, f"contacts/{contact}/events/summary")
    summaries = [event_summary_from_entry(e) for e in entries(response.content)]
    per = Counter(
        (campaign, kind)
        for campaign, kind in db.execute(
            "SELECT campaign_id, kind FROM event WHERE contact_id = ?", (contact,)
        )
    )
    campaigns = sorted({campaign for campaign, _kind in per}, reverse=True)
    assert [int(s.campaign_id) for s in summaries] == campaigns
    for summary in summaries:
        cid = int(summary.campaign_id)
        assert (summary.opens, summary.clicks, summary.forwards) == (
            per[(cid, "opens")],
            per[(cid, "clicks")],
            per[(cid, "forwards")],
        )
        assert summary.contact_id == str(contact)


async def test_the_window_is_the_last_90_days(client: httpx.AsyncClient, seeded: Seeded) -> None:
    """Events older than 90 days are not listed (counters still count them); moving the clock
    on empties the collections but not the counters."""
    state, clock, _summary = seeded
    cid = sent_campaign(seeded)
    db = state.store.connection()
    db.executemany(
        "INSERT INTO event (account_id, campaign_id, contact_id, kind, time)"
        " VALUES (1, ?, 3, 'forwards', ?)",
        [(cid, NOW - 91 * DAY), (cid, NOW - 89 * DAY), (cid, NOW - 90 * DAY)],
    )
    listed = keys(await walk(client, f"campaigns/{cid}/events/forwards"))
    times = {ms for _row, ms in listed}
    assert NOW - 89 * DAY in times
    assert NOW - 90 * DAY in times  # the boundary is inside
    assert NOW - 91 * DAY not in times
    contact = keys(await walk(client, "contacts/3/events/forwards"))
    assert NOW - 91 * DAY not in {ms for _row, ms in contact}
    before = parse_campaign((await fetch(client, f"campaigns/{cid}")).content).counts
    assert before is not None
    (total,) = db.execute(
        "SELECT count(*) FROM event WHERE campaign_id = ? AND kind = 'forwards'", (cid,)
    ).fetchone()
    assert before.forwards == total == len(listed) + 1
    clock.now = NOW + 200 * DAY
    assert await walk(client, f"campaigns/{cid}/events/sends") == []
    assert entries((await fetch(client, "contacts/3/events/summary")).content) == []
    after = parse_campaign((await fetch(client, f"campaigns/{cid}")).content).counts
    assert after == before
