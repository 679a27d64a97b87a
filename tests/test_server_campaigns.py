"""The campaigns resources: collection, resource, POST/PUT/DELETE, schedules, counters."""

from __future__ import annotations

import sqlite3
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkops.server import campaign_queries
from bulkops.server import campaigns as server_campaigns
from bulkops.server.app import ApiState
from bulkops.server.store import Store
from bulkops.wire.atom.campaigns import (
    campaign_from_entry,
    parse_campaign,
    parse_campaign_entry,
    schedule_from_entry,
)
from bulkops.wire.atom.events import event_from_entry
from bulkops.wire.atom.feeds import parse_feed
from bulkops.wire.atom.reading import links_of, local_name
from bulkops.wire.atom.syntax import format_time, parse_time, parse_xml
from bulkops.wire.model import Campaign, CampaignCounts
from tests.eventkit import (
    ATOM,
    HOUR,
    NOW,
    Clock,
    campaign_body,
    entries,
    schedule_body,
    seeded_state,
    walk,
)
from tests.pgkit import BOTH_STORES
from tests.serverkit import HANG_GUARD, add_account, asgi_client, basic, start_server

STORES = BOTH_STORES


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[tuple[ApiState, Clock]]:
    """A demo account with 40 contacts on 2 lists, two sender addresses and no campaign."""
    state, clock, _summary = seeded_state(tmp_path)
    yield state, clock
    state.store.close()


@pytest.fixture
async def client(seeded: tuple[ApiState, Clock]) -> AsyncIterator[httpx.AsyncClient]:
    """The demo account's in-process client."""
    async with asgi_client(seeded[0]) as c:
        yield c


async def create(client: httpx.AsyncClient, body: bytes | None = None) -> Campaign:
    with trio.fail_after(HANG_GUARD):
        response = await client.post("campaigns", content=body or campaign_body(), headers=ATOM)
    assert response.status_code == 201, response.text
    campaign = parse_campaign(response.content)
    assert (
        response.headers["location"]
        == f"http://testserver/ws/customers/demo/campaigns/{campaign.id}"
    )
    return campaign


async def get(client: httpx.AsyncClient, campaign_id: str) -> Campaign:
    with trio.fail_after(HANG_GUARD):
        response = await client.get(f"campaigns/{campaign_id}")
    assert response.status_code == 200, response.text
    return parse_campaign(response.content)


# -- POST and GET -------------------------------------------------------------------------


async def test_post_creates_a_draft_with_every_element(client: httpx.AsyncClient) -> None:
    """201 + Location + the full entry: Draft, 13-digit id, zero counters, senders, lists,
    the tracked links of the content."""
    created = await create(client)
    assert created.status == "Draft"
    assert len(created.id) == 13
    assert int(created.id) > campaign_queries.CAMPAIGN_ID_BASE
    assert created.counts == CampaignCounts()
    assert created.list_ids == ("1",)
    assert created.from_email is not None
    assert created.from_email.email == "demo@example.com"
    assert created.fields["CampaignType"] == "CUSTOM"
    assert [u.url for u in created.urls] == [
        "https://shop.example.com/?a=1&b=2",
        "http://blog.example.com/",
    ]
    assert created.date == created.updated == created.last_edit_date
    assert await get(client, created.id) == created


async def test_get_has_the_fixture_entry_shape_and_source(client: httpx.AsyncClient) -> None:
    """Edit link and id name the campaign; the docs sample's elements appear in order."""
    created = await create(client)
    with trio.fail_after(HANG_GUARD):
        response = await client.get(f"campaigns/{created.id}")
    root = parse_xml(response.content)
    assert response.headers["content-type"].startswith("application/atom+xml")
    assert [local_name(c) for c in root] == [
        "link", "id", "title", "updated", "author", "content", "source",
    ]  # fmt: skip
    assert links_of(root)["edit"] == f"/ws/customers/demo/campaigns/{created.id}"
    names = [local_name(c) for c in root[5][0]]
    docs = parse_xml((Path(__file__).parent / "fixtures/ctct-v1/campaign-entry.xml").read_bytes())
    expected = iter(names)
    assert all(name in expected for name in (local_name(c) for c in docs[5][0]))


async def test_from_name_defaults_to_the_from_address(client: httpx.AsyncClient) -> None:
    """FromName is optional: the sender address stands in."""
    created = await create(client, campaign_body(drop=["FromName"]))
    assert created.fields["FromName"] == "demo@example.com"


async def test_sender_may_be_named_by_address(client: httpx.AsyncClient) -> None:
    """FromEmail with only an EmailAddress (any case) resolves to the account's address."""
    body = campaign_body(
        from_ref=None,
        extra="<FromEmail><EmailAddress>DEMO.news@example.com</EmailAddress></FromEmail>",
    )
    created = await create(client, body)
    assert created.from_email is not None
    assert created.from_email.id == "2"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (campaign_body(drop=["Name"]), "Name"),
        (campaign_body(drop=["Subject"]), "Subject"),
        (campaign_body(drop=["EmailContentFormat"]), "EmailContentFormat"),
        (campaign_body(drop=["EmailContent"]), "EmailContent"),
        (campaign_body(drop=["EmailTextContent"]), "EmailTextContent"),
        (campaign_body(from_ref=None), "FromEmail"),
        (campaign_body(reply_ref=None), "ReplyToEmail"),
        (campaign_body(from_ref="99"), "FromEmail"),
        (campaign_body({"Subject": "   "}), "Subject"),
        (campaign_body({"Name": "n" * 81}), "Name"),
        (campaign_body({"Subject": "s" * 201}), "Subject"),
        (campaign_body({"EmailContentFormat": "PDF"}), "EmailContentFormat"),
        (campaign_body({"ViewAsWebpage": "maybe"}), "ViewAsWebpage"),
        (
            campaign_body({"EmailContentFormat": "xhtml", "EmailContent": "<html><p>unclosed"}),
            "EmailContent",
        ),
        (campaign_body(lists=["99"]), "ContactLists"),
        (campaign_body(lists=["active"]), "ContactLists"),
        (b"<entry><content>", "Invalid request body"),
        (b"<entry/>", "Invalid request body"),
    ],
)
async def test_invalid_campaigns_get_400_naming_the_problem(
    client: httpx.AsyncClient, body: bytes, message: str
) -> None:
    """Each required element, each bad value: 400 with a short text naming it; nothing made."""
    with trio.fail_after(HANG_GUARD):
        response = await client.post("campaigns", content=body, headers=ATOM)
        assert response.status_code == 400, response.text
        assert response.headers["content-type"].startswith("text/plain")
        assert message in response.text
        listing = await client.get("campaigns")
    assert entries(listing.content) == []


async def test_another_accounts_address_is_not_a_sender(
    seeded: tuple[ApiState, Clock], client: httpx.AsyncClient
) -> None:
    """An address id of another account is refused like an unknown one."""
    state, _clock = seeded
    add_account(state, "other", "pw", "key")
    db = state.store.connection()
    (other_id,) = db.execute("SELECT id FROM account WHERE username = 'other'").fetchone()
    from bulkops.server.settings import add_email_address

    theirs = add_email_address(db, other_id, "other@example.com", verified=True, now=NOW)
    with trio.fail_after(HANG_GUARD):
        response = await client.post(
            "campaigns", content=campaign_body(from_ref=theirs.id), headers=ATOM
        )
    assert response.status_code == 400
    assert "FromEmail" in response.text


async def test_wrong_content_type_and_method(client: httpx.AsyncClient) -> None:
    """415 for a form body, and for an unsupported method (spec §11)."""
    with trio.fail_after(HANG_GUARD):
        form = await client.post(
            "campaigns", content=campaign_body(), headers={"Content-Type": "text/xml"}
        )
        patch = await client.patch("campaigns", content=b"")
    assert (form.status_code, patch.status_code) == (415, 415)


@pytest.mark.parametrize("path", ["campaigns/1100000009999", "campaigns/abc", "campaigns/-1"])
async def test_unknown_campaigns_are_404(client: httpx.AsyncClient, path: str) -> None:
    """Unknown or malformed ids: 404 for GET, PUT and DELETE."""
    with trio.fail_after(HANG_GUARD):
        assert (await client.get(path)).status_code == 404
        assert (await client.put(path, content=campaign_body(), headers=ATOM)).status_code == 404
        assert (await client.delete(path)).status_code == 404


async def test_another_accounts_campaign_is_404(
    seeded: tuple[ApiState, Clock], client: httpx.AsyncClient
) -> None:
    """The demo account cannot see, change or delete another account's campaign."""
    created = await create(client)
    state, _clock = seeded
    add_account(state, "other", "pw", "key")
    async with asgi_client(state, "other") as other:
        other.headers["Authorization"] = basic("other", "pw", "key")
        with trio.fail_after(HANG_GUARD):
            assert (await other.get(f"campaigns/{created.id}")).status_code == 404
            assert (await other.delete(f"campaigns/{created.id}")).status_code == 404
            assert entries((await other.get("campaigns")).content) == []


# -- the collection -----------------------------------------------------------------------


async def test_collection_is_newest_first_with_status_filters(
    client: httpx.AsyncClient, seeded: tuple[ApiState, Clock]
) -> None:
    """status= is case-insensitive; the entries carry Name, Status, Date only."""
    first = await create(client)
    second = await create(client, campaign_body({"Name": "Second"}))
    with trio.fail_after(HANG_GUARD):
        response = await client.post(
            f"campaigns/{second.id}/schedules",
            content=schedule_body("2024-06-02T10:00:00.000Z"),
            headers=ATOM,
        )
        assert response.status_code == 201
        everything = await client.get("campaigns")
        drafts = await client.get("campaigns?status=draft")
        scheduled = await client.get("campaigns?status=SCHEDULED")
        sent = await client.get("campaigns?status=Sent")
    assert [campaign_from_entry(e).id for e in entries(everything.content)] == [
        second.id,
        first.id,
    ]
    assert [campaign_from_entry(e).id for e in entries(drafts.content)] == [first.id]
    assert [campaign_from_entry(e).status for e in entries(scheduled.content)] == ["Scheduled"]
    assert entries(sent.content) == []
    for entry in entries(everything.content):
        assert [local_name(c) for c in entry[5][0]] == ["Name", "Status", "Date"]
    rels = [link.rel for link in parse_feed(everything.content).links]
    assert rels == ["alternate", "self", "current", "first"]


@pytest.mark.parametrize("value", ["ALL", "", "sent,draft", "Deleted"])
async def test_unknown_status_filter_is_400(client: httpx.AsyncClient, value: str) -> None:
    """Only SENT, SCHEDULED, DRAFT and RUNNING."""
    with trio.fail_after(HANG_GUARD):
        response = await client.get("campaigns", params={"status": value})
    assert response.status_code == 400
    assert "status" in response.text


async def test_collection_pages_by_50_with_opaque_tokens(
    client: httpx.AsyncClient, seeded: tuple[ApiState, Clock]
) -> None:
    """60 campaigns: a page of 50 with a next link (keeping status), then 10; a forged token
    is 400."""
    state, _clock = seeded
    db = state.store.connection()
    spec = server_campaigns.checked_campaign(parse_campaign_entry(campaign_body()), creating=True)
    made = [campaign_queries.create_campaign(db, 1, spec, NOW).id for _ in range(60)]
    with trio.fail_after(HANG_GUARD):
        page1 = await client.get("campaigns?status=DRAFT")
    feed = parse_feed(page1.content)
    assert len(feed.entries) == 50
    href = feed.link("next")
    assert href is not None
    assert "status=DRAFT" in href
    assert "next=" in href
    assert not href.rsplit("next=", 1)[1].isdigit()
    everything = await walk(client, "campaigns?status=DRAFT")
    assert [campaign_from_entry(e).id for e in everything] == made[::-1]
    with trio.fail_after(HANG_GUARD):
        forged = await client.get("campaigns?next=2")
    assert forged.status_code == 400


# -- PUT and DELETE -----------------------------------------------------------------------


async def test_put_merges_into_a_draft(client: httpx.AsyncClient) -> None:
    """Given elements replace, absent ones stay; lists replaced when given; 204."""
    created = await create(client)
    body = campaign_body(
        {"Subject": "New subject", "EmailContent": '<a href="http://new.example/">x</a>'},
        drop=["Name", "FromName", "EmailTextContent", "ContactLists"],
        from_ref="2",
    )
    with trio.fail_after(HANG_GUARD):
        response = await client.put(f"campaigns/{created.id}", content=body, headers=ATOM)
    assert response.status_code == 204, response.text
    after = await get(client, created.id)
    assert after.name == created.name
    assert after.fields["Subject"] == "New subject"
    assert after.fields["EmailTextContent"] == created.fields["EmailTextContent"]
    assert after.list_ids == created.list_ids
    assert after.from_email is not None
    assert after.from_email.id == "2"
    assert [u.url for u in after.urls] == ["http://new.example/"]
    with trio.fail_after(HANG_GUARD):
        again = await client.put(
            f"campaigns/{created.id}", content=campaign_body(lists=["2"]), headers=ATOM
        )
    assert again.status_code == 204
    assert (await get(client, created.id)).list_ids == ("2",)


async def test_put_checks_xhtml_against_the_merged_values(client: httpx.AsyncClient) -> None:
    """Switching an HTML draft with non-XML content to XHTML is refused, and nothing changes."""
    created = await create(client, campaign_body({"EmailContent": "<p>one<br>two"}))
    body = campaign_body({"EmailContentFormat": "XHTML"}, drop=["EmailContent"])
    with trio.fail_after(HANG_GUARD):
        response = await client.put(f"campaigns/{created.id}", content=body, headers=ATOM)
    assert response.status_code == 400
    assert "EmailContent" in response.text
    assert (await get(client, created.id)).fields["EmailContentFormat"] == "HTML"


async def test_delete_removes_a_draft(client: httpx.AsyncClient) -> None:
    """204, then 404."""
    created = await create(client)
    with trio.fail_after(HANG_GUARD):
        assert (await client.delete(f"campaigns/{created.id}")).status_code == 204
        assert (await client.get(f"campaigns/{created.id}")).status_code == 404


async def test_only_drafts_can_change(client: httpx.AsyncClient) -> None:
    """A Scheduled campaign: PUT, DELETE and another schedule are 409 naming its status."""
    created = await create(client)
    path = f"campaigns/{created.id}"
    with trio.fail_after(HANG_GUARD):
        scheduled = await client.post(
            f"{path}/schedules", content=schedule_body("2024-06-03T00:00:00Z"), headers=ATOM
        )
        assert scheduled.status_code == 201
        put = await client.put(path, content=campaign_body(), headers=ATOM)
        delete = await client.delete(path)
        again = await client.post(
            f"{path}/schedules", content=schedule_body("2024-06-04T00:00:00Z"), headers=ATOM
        )
    for response in (put, delete, again):
        assert response.status_code == 409
        assert "Scheduled" in response.text


# -- schedules ----------------------------------------------------------------------------


async def test_schedule_lifecycle(client: httpx.AsyncClient) -> None:
    """POST → 201 + entry + Location; GET feed (one entry) and /1; DELETE /1 → 204 → Draft."""
    created = await create(client)
    path = f"campaigns/{created.id}/schedules"
    with trio.fail_after(HANG_GUARD):
        empty = await client.get(path)
        assert empty.status_code == 200
        assert entries(empty.content) == []
        assert (await client.get(f"{path}/1")).status_code == 404
        response = await client.post(
            path, content=schedule_body("2024-06-02T09:30:00Z"), headers=ATOM
        )
    assert response.status_code == 201
    assert response.headers["location"].endswith(f"/campaigns/{created.id}/schedules/1")
    schedule = schedule_from_entry(parse_xml(response.content))
    assert (schedule.campaign_id, schedule.id, format_time(schedule.time)) == (
        created.id,
        "1",
        "2024-06-02T09:30:00.000Z",
    )
    campaign = await get(client, created.id)
    assert (campaign.status, campaign.next_run_date) == ("Scheduled", schedule.time)
    with trio.fail_after(HANG_GUARD):
        listed = await client.get(path)
        one = await client.get(f"{path}/1")
        other = await client.get(f"{path}/2")
    assert [schedule_from_entry(e) for e in entries(listed.content)] == [schedule]
    assert schedule_from_entry(parse_xml(one.content)) == schedule
    assert other.status_code == 404
    with trio.fail_after(HANG_GUARD):
        assert (await client.delete(f"{path}/1")).status_code == 204
        assert (await client.delete(f"{path}/1")).status_code == 404
    back = await get(client, created.id)
    assert (back.status, back.next_run_date) == ("Draft", None)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (schedule_body("2024-05-31T23:59:59Z"), "future"),
        (schedule_body("2024-06-01T00:00:00Z"), "future"),
        (schedule_body("tomorrow"), "ScheduledTime"),
        (b"<entry/>", "Schedule"),
    ],
)
async def test_bad_schedules_are_400(client: httpx.AsyncClient, body: bytes, message: str) -> None:
    """A time not after now, or no time: 400, and the campaign stays a Draft."""
    created = await create(client)
    with trio.fail_after(HANG_GUARD):
        response = await client.post(
            f"campaigns/{created.id}/schedules", content=body, headers=ATOM
        )
    assert response.status_code == 400
    assert message in response.text
    assert (await get(client, created.id)).status == "Draft"


async def test_a_campaign_without_lists_cannot_be_scheduled(client: httpx.AsyncClient) -> None:
    """400 naming ContactLists."""
    created = await create(client, campaign_body(lists=[]))
    with trio.fail_after(HANG_GUARD):
        response = await client.post(
            f"campaigns/{created.id}/schedules", content=schedule_body("2024-07-01"), headers=ATOM
        )
    assert response.status_code == 400
    assert "ContactLists" in response.text


async def test_due_campaigns_are_sent_to_the_active_members_of_their_lists(
    client: httpx.AsyncClient, seeded: tuple[ApiState, Clock]
) -> None:
    """When the clock passes the schedule: Sent, one send per Active contact on the lists,
    LastRunDate the scheduled time, and Sent equals the sends collection."""
    state, clock = seeded
    created = await create(client, campaign_body(lists=["1", "2"]))
    with trio.fail_after(HANG_GUARD):
        response = await client.post(
            f"campaigns/{created.id}/schedules",
            content=schedule_body("2024-06-01T01:00:00Z"),
            headers=ATOM,
        )
    assert response.status_code == 201
    assert (await get(client, created.id)).status == "Scheduled"
    clock.now = NOW + 2 * HOUR
    sent = await get(client, created.id)
    db = state.store.connection()
    (active,) = db.execute(
        "SELECT count(DISTINCT m.contact_id) FROM membership m JOIN contact c ON c.id ="
        " m.contact_id WHERE m.list_id IN (1, 2) AND c.status = 'Active'"
    ).fetchone()
    assert active > 0
    assert sent.status == "Sent"
    assert sent.counts == CampaignCounts(sent=active)
    assert sent.last_run_date == parse_time("2024-06-01T01:00:00Z") == sent.date
    sends = await walk(client, f"campaigns/{created.id}/events/sends?pageSize=200")
    assert len(sends) == active
    with trio.fail_after(HANG_GUARD):
        unschedule = await client.delete(f"campaigns/{created.id}/schedules/1")
    assert unschedule.status_code == 404  # sent: there is no schedule any more


# -- counters == events -------------------------------------------------------------------

KINDS = ("sends", "opens", "clicks", "bounces", "forwards", "optouts", "spam")


@pytest.fixture(scope="module")
def counter_db() -> Iterator[sqlite3.Connection]:
    """One store for the property test (hypothesis examples share it; each makes a campaign)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "counters.db")
        db = store.connection()
        db.execute("INSERT INTO account (id, username, created) VALUES (1, 'a', 0)")
        db.execute(
            "INSERT INTO email_address (account_id, email, status, updated)"
            " VALUES (1, 'a@x', 'Verified', 0)"
        )
        db.execute(
            "INSERT INTO contact (account_id, email_key, EmailAddress, status, insert_time,"
            " last_update_time) VALUES (1, 'c@x', 'c@x', 'Active', 0, 0)"
        )
        yield db
        store.close()


@settings(
    max_examples=40,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(st.tuples(st.sampled_from(KINDS), st.integers(min_value=0, max_value=2)), max_size=60),
    st.integers(min_value=1, max_value=3),
)
def test_counters_equal_the_events_for_any_event_set(
    counter_db: sqlite3.Connection, events: list[tuple[str, int]], url_count: int
) -> None:
    """For any events: each counter is the number of its kind, each Url/Clicks the clicks on
    that link, and the links' clicks add up to Clicks."""
    db = counter_db
    body = campaign_body(
        {
            "EmailContent": "".join(
                f'<a href="http://l{i}.example/">{i}</a>' for i in range(url_count)
            )
        },
        lists=[],
        from_ref="1",
        reply_ref="1",
    )
    spec = server_campaigns.checked_campaign(parse_campaign_entry(body), creating=True)
    campaign = campaign_queries.create_campaign(db, 1, spec, NOW)
    url_ids = [int(u.id) for u in campaign.urls]
    rows = [
        (
            1,
            int(campaign.id),
            1,
            kind,
            NOW,
            url_ids[pick % len(url_ids)] if kind == "clicks" else None,
        )
        for kind, pick in events
    ]
    db.executemany(
        "INSERT INTO event (account_id, campaign_id, contact_id, kind, time, url_id)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    found = campaign_queries.get_campaign(db, 1, int(campaign.id))
    assert found is not None
    assert found.counts is not None
    expected = Counter(kind for kind, _pick in events)
    assert found.counts == CampaignCounts(
        sent=expected["sends"],
        opens=expected["opens"],
        clicks=expected["clicks"],
        bounces=expected["bounces"],
        forwards=expected["forwards"],
        opt_outs=expected["optouts"],
        spam_reports=expected["spam"],
    )
    per_url = Counter(row[5] for row in rows if row[3] == "clicks")
    assert {u.id: u.clicks for u in found.urls} == {str(u): per_url.get(u, 0) for u in url_ids}
    assert sum(u.clicks for u in found.urls) == found.counts.clicks


async def test_a_retired_service_client_reads_campaigns_results_and_events(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Acceptance 1, over real HTTP: list campaigns by status, read a campaign with its
    results, its send/open/bounce/... events, clicks per URL, and a contact's events; every
    counter equals the number of events behind it."""
    state, _clock, summary = seeded_state(tmp_path, contacts=150, lists=3, campaigns=4)
    try:
        running = await start_server(nursery, state)
        async with running.client() as http:
            with trio.fail_after(HANG_GUARD):
                listing = await http.get("campaigns?status=SENT")
            sent = [campaign_from_entry(e) for e in entries(listing.content)]
            assert len(sent) == summary.sent > 0
            for item in sent:
                campaign = await get(http, item.id)
                assert campaign.counts is not None
                got = {}
                for kind in ("sends", "opens", "clicks", "bounces", "forwards", "optouts"):
                    found = await walk(http, f"campaigns/{item.id}/events/{kind}?pageSize=200")
                    assert all(event_from_entry(e).kind == kind for e in found)
                    got[kind] = len(found)
                counts = campaign.counts
                assert got == {
                    "sends": counts.sent,
                    "opens": counts.opens,
                    "clicks": counts.clicks,
                    "bounces": counts.bounces,
                    "forwards": counts.forwards,
                    "optouts": counts.opt_outs,
                }
                assert counts.sent > 0
                assert counts.opens > 0
                per_url = 0
                for url in campaign.urls:
                    clicks = [
                        event_from_entry(e)
                        for e in await walk(http, f"campaigns/{item.id}/events/urls/{url.id}")
                    ]
                    assert len(clicks) == url.clicks
                    assert all(c.link_url == url.url for c in clicks)
                    per_url += len(clicks)
                assert per_url == counts.clicks
            with trio.fail_after(HANG_GUARD):
                first = await http.get(f"campaigns/{sent[0].id}/events/opens?pageSize=1")
            contact = event_from_entry(entries(first.content)[0]).contact_id
            opens = await walk(http, f"contacts/{contact}/events/opens")
            assert opens
            assert all(event_from_entry(e).contact_id == contact for e in opens)
    finally:
        state.store.close()


# -- no input gives a 500 -----------------------------------------------------------------

_ELEMENTS = ("Name", "Subject", "FromName", "EmailContentFormat", "EmailContent",
             "EmailTextContent", "ViewAsWebpage", "GreetingName", "Status", "Date")  # fmt: skip
_VALUES = st.one_of(
    st.sampled_from(["", " ", "HTML", "XHTML", "yes", "NO", "<p>", "2024-13-45", "x" * 300]),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=40),
)


@pytest.fixture(scope="module")
def fuzz_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiState]:
    """One seeded account for the fuzz test (its examples add campaigns to it)."""
    state, _clock, _summary = seeded_state(tmp_path_factory.mktemp("fuzz"))
    yield state
    state.store.close()


@settings(
    max_examples=60,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    values=st.dictionaries(st.sampled_from(_ELEMENTS), _VALUES, max_size=6),
    drop=st.lists(st.sampled_from(_ELEMENTS), max_size=3),
    lists=st.lists(
        st.sampled_from(["1", "2", "0", "x", "active", "99999999999999999999"]), max_size=3
    ),
    refs=st.tuples(*[st.sampled_from([None, "1", "2", "0", "x", "99999999999999999999"])] * 2),
    when=st.sampled_from(
        ["2024-06-02", "1999-01-01", "9999-12-31T23:59:59Z", "", "x", "2024-06-02T00:00:00+25:00"]
    ),
)
async def test_no_campaign_or_schedule_body_gives_a_500(
    fuzz_state: ApiState,
    values: dict[str, str],
    drop: list[str],
    lists: list[str],
    refs: tuple[str | None, str | None],
    when: str,
) -> None:
    """Any mix of present, missing and odd values: 201/204 or a 4xx, never a 500."""
    body = campaign_body(values, drop=drop, lists=lists, from_ref=refs[0], reply_ref=refs[1])
    async with asgi_client(fuzz_state) as client:
        with trio.fail_after(HANG_GUARD):
            created = await client.post("campaigns", content=body, headers=ATOM)
            assert created.status_code in (201, 400), created.text
            if created.status_code != 201:
                return
            path = f"campaigns/{parse_campaign(created.content).id}"
            put = await client.put(path, content=body, headers=ATOM)
            assert put.status_code in (204, 400), put.text
            scheduled = await client.post(
                f"{path}/schedules", content=schedule_body(when), headers=ATOM
            )
            assert scheduled.status_code in (201, 400), scheduled.text
