"""Server contacts resources: create, read, search, incremental sync, update, opt-out."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest
import trio
from lxml import etree

from bulkops.server import queries
from bulkops.server.paging import encode_token
from bulkops.server.seed import seed_contacts
from bulkops.server.store import Store, write_tx
from bulkops.wire.atom.feeds import parse_entry
from bulkops.wire.atom.syntax import format_time
from bulkops.wire.columns import CONTACT_FIELDS, email_problem
from bulkops.wire.model import Contact
from tests.conftest import FIXTURES
from tests.pgkit import BOTH_STORES
from tests.serverkit import HANG_GUARD
from tests.test_server_lists import (
    ATOM_XML,
    NS,
    TIME_RE,
    absolute,
    api,
    client,
    contact_body,
    create_contact,
    create_list,
    get_feed,
    list_uri,
    seed,
    walk,
)

STORES = BOTH_STORES

__all__ = ["api", "client"]  # fixtures shared with test_server_lists


async def get_contact(client: httpx.AsyncClient, contact_id: int) -> Contact:
    """GET one contact (200 asserted), parsed."""
    with trio.fail_after(HANG_GUARD):
        response = await client.get(f"contacts/{contact_id}")
    assert response.status_code == 200, response.text
    entry = parse_entry(response.content)
    assert isinstance(entry, Contact)
    return entry


def db_of(state: object) -> sqlite3.Connection:
    """A connection to a test server's database."""
    return state.store.connection()  # type: ignore[attr-defined,no-any-return]


# -- create -------------------------------------------------------------------------------


async def test_creating_a_contact_answers_201_location_and_the_full_entry(
    client: httpx.AsyncClient,
) -> None:
    """POST /contacts: 201, Location = the new id, body = the full entry, Active on its list."""
    list_id = await create_list(client, "News")
    body = contact_body(
        "Pat@Example.org", [list_uri(list_id)], FirstName="Pat", LastName="Lee", City="Boston"
    )
    with trio.fail_after(HANG_GUARD):
        response = await client.post("contacts", content=body, headers=ATOM_XML)
    assert response.status_code == 201, response.text
    location = response.headers["location"]
    root = etree.fromstring(response.content)
    assert root.findtext("a:id", namespaces=NS) == location
    assert location.endswith("/ws/customers/demo/contacts/" + location.rsplit("/", 1)[1])
    contact = parse_entry(response.content)
    assert isinstance(contact, Contact)
    assert contact.status == "Active"
    assert contact.fields == {
        "EmailAddress": "Pat@Example.org",
        "EmailType": "HTML",
        "FirstName": "Pat",
        "LastName": "Lee",
        "City": "Boston",
    }
    assert [ref.list_id for ref in contact.lists] == [str(list_id)]
    assert contact.lists[0].opt_in_source == "ACTION_BY_CUSTOMER"
    assert contact.insert_time == contact.last_update_time
    assert contact.confirmed is False


async def test_the_docs_request_fixture_is_accepted(client: httpx.AsyncClient) -> None:
    """requests/contact-create.xml (bogus ".../geeksquad/joesflowers/lists/1") creates a contact."""
    list_id = await create_list(client, "First")
    assert list_id == 1
    body = (FIXTURES / "requests" / "contact-create.xml").read_bytes()
    with trio.fail_after(HANG_GUARD):
        response = await client.post("contacts", content=body, headers=ATOM_XML)
    assert response.status_code == 201, response.text
    contact = parse_entry(response.content)
    assert isinstance(contact, Contact)
    assert contact.fields["EmailAddress"] == "test_100@example.com"
    assert [ref.list_id for ref in contact.lists] == ["1"]
    assert contact.lists[0].opt_in_source == "ACTION_BY_CONTACT"


async def test_list_uris_match_by_path_on_any_origin(client: httpx.AsyncClient) -> None:
    """The server's own origin, the legacy origin, https, a root-relative path: all work."""
    list_id = await create_list(client, "Anywhere")
    origin = str(client.base_url).split("/ws/", 1)[0]
    uris = [
        list_uri(list_id, origin),
        list_uri(list_id),
        list_uri(list_id, "https://api.constantcontact.com"),
        f"/ws/customers/demo/lists/{list_id}",
    ]
    for n, uri in enumerate(uris):
        body = contact_body(f"u{n}@example.com", [uri])
        with trio.fail_after(HANG_GUARD):
            response = await client.post("contacts", content=body, headers=ATOM_XML)
        assert response.status_code == 201, (uri, response.text)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"email": None}, "EmailAddress"),
        ({"email": ""}, "EmailAddress"),
        ({"email": "not-an-address"}, "EmailAddress"),
        ({"email": "x" * 80 + "@example.com"}, "EmailAddress"),
        ({"FirstName": "y" * 51}, "FirstName"),
        ({"StateCode": "ZZ"}, "StateCode"),
        ({"EmailType": "Rich"}, "EmailType"),
        ({"CustomField15": "z" * 51}, "CustomField15"),
        ({"source": "ACTION_BY_NOBODY"}, "OptInSource"),
        ({"lists": None}, "ContactList"),
        ({"lists": []}, "ContactList"),
        ({"lists": ["http://api.constantcontact.com/ws/customers/demo/lists/999"]}, "lists/999"),
        ({"lists": ["http://api.constantcontact.com/ws/customers/demo/lists/active"]}, "active"),
        ({"lists": ["urn:nothing"]}, "urn:nothing"),
    ],
)
async def test_invalid_contacts_are_400_naming_the_problem(
    api: httpx.AsyncClient, server_state: object, kwargs: dict[str, object], reason: str
) -> None:
    """Bad or missing values: 400 with a short text naming the field or list."""
    list_id = await create_list(api, "L")
    args: dict[str, object] = {"email": "ok@example.com", "lists": [list_uri(list_id)]}
    args.update(kwargs)
    email, lists = args.pop("email"), args.pop("lists")
    body = contact_body(email, lists, **args)  # type: ignore[arg-type]
    with trio.fail_after(HANG_GUARD):
        response = await api.post("contacts", content=body, headers=ATOM_XML)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert reason in response.text
    count = db_of(server_state).execute("SELECT count(*) FROM contact").fetchone()[0]
    assert count == 0


async def test_an_existing_email_is_409_whatever_its_case(client: httpx.AsyncClient) -> None:
    """POST of an address the account has (any case, any status) is 409."""
    list_id = await create_list(client, "L")
    first = await create_contact(client, "joe@example.com", [list_id])
    with trio.fail_after(HANG_GUARD):
        assert (await client.delete(f"contacts/{first}")).status_code == 204
    for email in ("joe@example.com", "JOE@Example.COM"):
        body = contact_body(email, [list_uri(list_id)], source="ACTION_BY_CONTACT")
        with trio.fail_after(HANG_GUARD):
            response = await client.post("contacts", content=body, headers=ATOM_XML)
        assert response.status_code == 409


async def test_every_element_present_but_empty_means_not_given(client: httpx.AsyncClient) -> None:
    """<EmailType></EmailType>, <Status></Status>, … are accepted and ignored."""
    list_id = await create_list(client, "L")
    body = contact_body("empty@example.com", [list_uri(list_id)], all_empty=True, City="Oslo")
    with trio.fail_after(HANG_GUARD):
        response = await client.post("contacts", content=body, headers=ATOM_XML)
    assert response.status_code == 201, response.text
    contact = parse_entry(response.content)
    assert isinstance(contact, Contact)
    assert contact.fields == {
        "EmailAddress": "empty@example.com",
        "EmailType": "HTML",
        "City": "Oslo",
    }
    assert contact.status == "Active"


async def test_read_only_elements_in_a_request_are_ignored(client: httpx.AsyncClient) -> None:
    """Status, times, Confirmed and ids sent by a client change nothing."""
    list_id = await create_list(client, "L")
    body = contact_body(
        "ro@example.com",
        [list_uri(list_id)],
        Status="Do Not Mail",
        Confirmed="true",
        InsertTime="2001-01-01T00:00:00.000Z",
        OptOutSource="ACTION_BY_CONTACT",
    )
    with trio.fail_after(HANG_GUARD):
        response = await client.post("contacts", content=body, headers=ATOM_XML)
    assert response.status_code == 201, response.text
    contact = parse_entry(response.content)
    assert isinstance(contact, Contact)
    assert (contact.status, contact.confirmed, contact.opt_out_source) == ("Active", False, None)
    assert contact.insert_time is not None
    assert contact.insert_time.year > 2001


# -- read ---------------------------------------------------------------------------------


async def test_get_one_contact_has_every_field_in_order_and_its_lists(
    client: httpx.AsyncClient,
) -> None:
    """The full view: Status, the 36 fields in spec order, ContactLists, Confirmed, times."""
    first = await create_list(client, "A")
    second = await create_list(client, "B")
    cid = await create_contact(
        client, "full@example.com", [second, first], Name="Customer Joe", CustomField7="seven"
    )
    with trio.fail_after(HANG_GUARD):
        response = await client.get(f"contacts/{cid}")
    root = etree.fromstring(response.content)
    payload = root.find("a:content/c:Contact", NS)
    names = [etree.QName(child).localname for child in payload]
    assert names == [
        "Status",
        *CONTACT_FIELDS,
        "ContactLists",
        "Confirmed",
        "InsertTime",
        "LastUpdateTime",
    ]
    assert payload.findtext("c:CustomField7", namespaces=NS) == "seven"
    assert payload.findtext("c:MiddleName", namespaces=NS) == ""
    refs = payload.findall("c:ContactLists/c:ContactList", NS)
    assert [ref.get("id").rsplit("/", 1)[1] for ref in refs] == [str(first), str(second)]
    for ref in refs:
        assert [etree.QName(child).localname for child in ref] == [
            "link",
            "OptInSource",
            "OptInTime",
        ]
        assert etree.QName(ref[0]).namespace == NS["a"]
        assert TIME_RE.fullmatch(ref.findtext("c:OptInTime", namespaces=NS) or "")
    assert root.find("a:source", NS) is not None


@pytest.mark.parametrize("path", ["contacts/999", "contacts/abc", "contacts/0", "contacts/١"])
async def test_unknown_contacts_are_404(api: httpx.AsyncClient, path: str) -> None:
    """GET, PUT and DELETE of an unknown or malformed contact id: 404."""
    list_id = await create_list(api, "L")
    with trio.fail_after(HANG_GUARD):
        got = await api.get(path)
        put = await api.put(path, content=contact_body(None, [list_uri(list_id)]), headers=ATOM_XML)
        deleted = await api.delete(path)
    assert (got.status_code, put.status_code, deleted.status_code) == (404, 404, 404)


async def test_the_collection_pages_newest_first(
    client: httpx.AsyncClient, server_state: object
) -> None:
    """GET /contacts: every contact, descending id, 50 per page, summary entries."""
    list_id = await create_list(client, "L")
    seed(server_state, 120, [list_id])
    pages = await walk(client, "contacts")
    assert [len(p.entries) for p in pages] == [50, 50, 20]
    ids = [int(c.id) for p in pages for c in p.entries]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == 120
    sample = pages[0].entries[0]
    assert isinstance(sample, Contact)
    assert sample.lists == ()
    assert sample.insert_time is None  # summary view: no InsertTime


async def test_email_search_is_exact_and_case_insensitive(client: httpx.AsyncClient) -> None:
    """?email= finds exact addresses whatever their case; several at once; no partials."""
    list_id = await create_list(client, "L")
    jon = await create_contact(client, "Jon@Example.com", [list_id], FirstName="jon", LastName="s")
    ann = await create_contact(client, "ann@example.com", [list_id])
    await create_contact(client, "jon@example.community", [list_id])
    feed = await get_feed(client, "contacts", email="jon@example.com")
    assert [c.id for c in feed.entries] == [str(jon)]
    entry = feed.entries[0]
    assert isinstance(entry, Contact)
    assert entry.fields["Name"] == "s, jon"
    assert entry.confirmed is False
    assert entry.insert_time is not None
    assert feed.link("current") == "/ws/customers/demo/contacts?email=jon%40example.com"
    assert feed.link("next") is None
    both = await get_feed(client, "contacts", email=["ANN@example.com", "jon@EXAMPLE.com"])
    assert [c.id for c in both.entries] == [str(ann), str(jon)]
    none = await get_feed(client, "contacts", email="nobody@example.com")
    assert none.entries == []


async def test_email_search_takes_at_most_fifty_addresses(api: httpx.AsyncClient) -> None:
    """50 emails are fine; 51 are 400."""
    fifty = [f"a{n}@example.com" for n in range(50)]
    assert (await get_feed(api, "contacts", email=fifty)).entries == []
    with trio.fail_after(HANG_GUARD):
        response = await api.get("contacts", params={"email": [*fifty, "z@example.com"]})
    assert response.status_code == 400
    assert "50" in response.text


# -- updatedsince -------------------------------------------------------------------------


async def test_updatedsince_filters_by_list_type_and_list(
    client: httpx.AsyncClient, server_state: object
) -> None:
    """Only contacts updated at or after the time, with the status or on the list asked for."""
    first = await create_list(client, "First")
    second = await create_list(client, "Second")
    old = await create_contact(client, "old@example.com", [first])
    db_of(server_state).execute("UPDATE contact SET last_update_time = 1000 WHERE id = ?", (old,))
    a = await create_contact(client, "a@example.com", [first])
    b = await create_contact(client, "b@example.com", [second])
    c = await create_contact(client, "c@example.com", [first])
    with trio.fail_after(HANG_GUARD):
        assert (await client.delete(f"contacts/{c}")).status_code == 204
    since = format_time(queries.from_ms(2000))

    async def ids(**params: str) -> list[int]:
        pages = await walk(client, "contacts", updatedsince=since, **params)
        return [int(e.id) for p in pages for e in p.entries]

    assert await ids(listtype="active") == [a, b]
    assert await ids(listtype="do-not-mail") == [c]
    assert await ids(listtype="removed") == []
    assert await ids(listid=str(first)) == [a]
    assert await ids(listid=list_uri(second)) == [b]
    assert await ids(listid="active") == [a, b]
    assert await ids() == [a, b, c]  # no filter: every status, every list
    all_active = await walk(client, "contacts", updatedsince="1970-01-01", listtype="ACTIVE")
    assert [int(e.id) for e in all_active[0].entries] == [old, a, b]


@pytest.mark.parametrize(
    "params",
    [
        {"updatedsince": "yesterday", "listtype": "active"},
        {"updatedsince": "yesterday"},
        {"updatedsince": "2010-13-01T00:00:00Z", "listtype": "active"},
        {"updatedsince": "", "listtype": "active"},
        {"updatedsince": "2010-01-01", "listtype": "everyone"},
        {"updatedsince": "2010-01-01", "listid": "999"},
        {"updatedsince": "2010-01-01", "listid": "x"},
        {"updatedsince": "2010-01-01", "listtype": "active", "listid": "1"},
        {"updatedsince": "2010-01-01", "email": "a@example.com"},
        {"updatedsince": "99999-01-01", "listtype": "active"},
    ],
)
async def test_bad_updatedsince_queries_are_400(
    api: httpx.AsyncClient, params: dict[str, str]
) -> None:
    """A bad time, two filters, an unknown list type or list: 400 with a reason."""
    with trio.fail_after(HANG_GUARD):
        response = await api.get("contacts", params=params)
    assert response.status_code == 400, response.text
    assert response.text.strip()


async def test_updatedsince_pages_through_equal_times_without_loss(
    api: httpx.AsyncClient, server_state: object
) -> None:
    """Keyset (last_update_time, id): 130 contacts updated in the same ms all come once."""
    list_id = await create_list(api, "Ties")
    seed(server_state, 130, [list_id])
    db = db_of(server_state)
    db.execute("UPDATE contact SET last_update_time = 5000 WHERE id % 2 = 0")
    db.execute("UPDATE contact SET last_update_time = 7000 WHERE id % 2 = 1")
    pages = await walk(
        api, "contacts", updatedsince="1970-01-01T00:00:05.000Z", listid=str(list_id)
    )
    ids = [int(e.id) for p in pages for e in p.entries]
    members = {
        r[0] for r in db.execute("SELECT contact_id FROM membership WHERE list_id = ?", (list_id,))
    }
    assert sorted(ids) == sorted(members)
    assert len(ids) == len(set(ids))
    times = [queries.to_ms(e.updated) for p in pages for e in p.entries]
    assert times == sorted(times)
    href = pages[0].link("next")
    assert href is not None
    assert "updatedsince=" in href
    assert "listid=" in href


# -- update -------------------------------------------------------------------------------


async def test_put_replaces_given_fields_and_keeps_the_rest(
    client: httpx.AsyncClient, server_state: object
) -> None:
    """Fields given replace (an empty element empties the field); absent ones stay; 204;
    LastUpdateTime moves."""
    list_id = await create_list(client, "L")
    cid = await create_contact(
        client, "keep@example.com", [list_id], FirstName="Old", LastName="Name", City="Rome"
    )
    db_of(server_state).execute("UPDATE contact SET last_update_time = 1000 WHERE id = ?", (cid,))
    before = await get_contact(client, cid)
    body = contact_body(None, None, source=None, FirstName="New", City="", Note="hello")
    with trio.fail_after(HANG_GUARD):
        response = await client.put(f"contacts/{cid}", content=body, headers=ATOM_XML)
    assert response.status_code == 204, response.text
    assert response.content == b""
    after = await get_contact(client, cid)
    expected = {**before.fields, "FirstName": "New", "Note": "hello"}
    del expected["City"]
    assert after.fields == expected
    assert after.lists == before.lists
    assert after.status == "Active"
    assert after.last_update_time is not None
    assert before.last_update_time is not None
    assert after.last_update_time > before.last_update_time


async def test_put_of_the_whole_entry_a_get_returned_round_trips(
    client: httpx.AsyncClient,
) -> None:
    """GET, edit one element, PUT the whole entry (source and links included): 204."""
    first = await create_list(client, "A")
    second = await create_list(client, "B")
    cid = await create_contact(client, "whole@example.com", [first, second], JobTitle="Chef")
    with trio.fail_after(HANG_GUARD):
        got = await client.get(f"contacts/{cid}")
    body = got.content.replace(b"<JobTitle>Chef</JobTitle>", b"<JobTitle>Owner</JobTitle>")
    with trio.fail_after(HANG_GUARD):
        response = await client.put(f"contacts/{cid}", content=body, headers=ATOM_XML)
    assert response.status_code == 204, response.text
    after = await get_contact(client, cid)
    before = parse_entry(got.content)
    assert isinstance(before, Contact)
    assert after.fields == {**before.fields, "JobTitle": "Owner"}
    assert [r.list_id for r in after.lists] == [r.list_id for r in before.lists]
    assert [r.opt_in_time for r in after.lists] == [r.opt_in_time for r in before.lists]


async def test_a_put_of_the_whole_entry_with_an_emptied_element_empties_that_field(
    client: httpx.AsyncClient,
) -> None:
    """GET, empty one element, PUT the whole entry: that field only is emptied; an empty
    EmailType or EmailAddress is not given (the contact keeps them)."""
    list_id = await create_list(client, "L")
    cid = await create_contact(client, "clear@example.com", [list_id], City="Rome", Note="n")
    with trio.fail_after(HANG_GUARD):
        got = await client.get(f"contacts/{cid}")
    body = got.content.replace(b"<City>Rome</City>", b"<City> </City>")
    body = body.replace(b"<EmailType>HTML</EmailType>", b"<EmailType></EmailType>")
    with trio.fail_after(HANG_GUARD):
        response = await client.put(f"contacts/{cid}", content=body, headers=ATOM_XML)
    assert response.status_code == 204, response.text
    after = await get_contact(client, cid)
    before = parse_entry(got.content)
    assert isinstance(before, Contact)
    expected = dict(before.fields)
    del expected["City"]
    assert after.fields == expected
    assert after.fields["EmailType"] == "HTML"
    assert after.fields["EmailAddress"] == "clear@example.com"


async def test_contact_lists_in_a_put_are_authoritative(client: httpx.AsyncClient) -> None:
    """ContactLists replaces membership; empty → Removed; lists again → Active."""
    a = await create_list(client, "A")
    b = await create_list(client, "B")
    c = await create_list(client, "C")
    cid = await create_contact(client, "m@example.com", [a, b])

    async def put_lists(list_ids: list[int]) -> None:
        body = contact_body(None, [list_uri(n) for n in list_ids], source=None)
        with trio.fail_after(HANG_GUARD):
            response = await client.put(f"contacts/{cid}", content=body, headers=ATOM_XML)
        assert response.status_code == 204, response.text

    await put_lists([b, c])
    contact = await get_contact(client, cid)
    assert ([r.list_id for r in contact.lists], contact.status) == ([str(b), str(c)], "Active")
    await put_lists([])
    contact = await get_contact(client, cid)
    assert (contact.lists, contact.status) == ((), "Removed")
    await put_lists([a])
    contact = await get_contact(client, cid)
    assert ([r.list_id for r in contact.lists], contact.status) == ([str(a)], "Active")


async def test_put_to_another_contacts_email_is_409(client: httpx.AsyncClient) -> None:
    """Changing EmailAddress to one another contact has: 409; to a new one: 204."""
    list_id = await create_list(client, "L")
    cid = await create_contact(client, "one@example.com", [list_id])
    await create_contact(client, "two@example.com", [list_id])
    for email, status in (("TWO@example.com", 409), ("One@Example.com", 204), ("3@ex.org", 204)):
        with trio.fail_after(HANG_GUARD):
            response = await client.put(
                f"contacts/{cid}", content=contact_body(email, None), headers=ATOM_XML
            )
        assert response.status_code == status, email
    assert (await get_contact(client, cid)).fields["EmailAddress"] == "3@ex.org"
    assert (await get_feed(client, "contacts", email="3@EX.ORG")).entries[0].id == str(cid)


async def test_put_checks_fields_and_lists(api: httpx.AsyncClient) -> None:
    """A bad field or a list URI naming no list: 400, and nothing changes."""
    list_id = await create_list(api, "L")
    cid = await create_contact(api, "v@example.com", [list_id], City="Rome")
    for body, reason in (
        (contact_body("bad address", None), "EmailAddress"),
        (contact_body(None, None, City="x" * 51), "City"),
        (contact_body(None, [list_uri(404)]), "lists/404"),
        (contact_body(None, None, source="SOMEONE"), "OptInSource"),
        (b"<entry>", "XML"),
    ):
        with trio.fail_after(HANG_GUARD):
            response = await api.put(f"contacts/{cid}", content=body, headers=ATOM_XML)
        assert response.status_code == 400
        assert reason in response.text
    contact = await get_contact(api, cid)
    assert contact.fields["City"] == "Rome"
    assert [r.list_id for r in contact.lists] == [str(list_id)]


# -- opt-out and back ---------------------------------------------------------------------


async def test_delete_opts_the_contact_out(client: httpx.AsyncClient) -> None:
    """DELETE: 204, Do Not Mail, on no list, opt-out source and time set; again: 204."""
    a = await create_list(client, "A")
    b = await create_list(client, "B")
    cid = await create_contact(client, "bye@example.com", [a, b])
    with trio.fail_after(HANG_GUARD):
        response = await client.delete(f"contacts/{cid}")
    assert response.status_code == 204
    contact = await get_contact(client, cid)
    assert (contact.status, contact.lists) == ("Do Not Mail", ())
    assert contact.opt_out_source == "ACTION_BY_CUSTOMER"
    assert contact.opt_out_time is not None
    assert contact.opt_out_time == contact.last_update_time
    with trio.fail_after(HANG_GUARD):
        again = await client.delete(f"contacts/{cid}")
    assert again.status_code == 204
    assert (await get_contact(client, cid)).opt_out_time == contact.opt_out_time
    for list_id in (a, b):
        assert (await get_feed(client, f"lists/{list_id}/members")).entries == []


async def test_only_the_contact_can_opt_back_in(client: httpx.AsyncClient) -> None:
    """Do Not Mail + lists: ACTION_BY_CUSTOMER → 403; ACTION_BY_CONTACT → Active; no lists →
    stays Do Not Mail."""
    list_id = await create_list(client, "L")
    cid = await create_contact(client, "back@example.com", [list_id])
    with trio.fail_after(HANG_GUARD):
        assert (await client.delete(f"contacts/{cid}")).status_code == 204
    uris = [list_uri(list_id)]
    for body, status in (
        (contact_body(None, uris, source="ACTION_BY_CUSTOMER"), 403),
        (contact_body(None, uris, source=None), 403),
        (contact_body(None, [], source="ACTION_BY_CONTACT"), 204),
        (contact_body(None, None, source="ACTION_BY_CONTACT", City="Rome"), 204),
    ):
        with trio.fail_after(HANG_GUARD):
            response = await client.put(f"contacts/{cid}", content=body, headers=ATOM_XML)
        assert response.status_code == status, response.text
        assert (await get_contact(client, cid)).status == "Do Not Mail"
    with trio.fail_after(HANG_GUARD):
        response = await client.put(
            f"contacts/{cid}",
            content=contact_body(None, uris, source="action_by_contact"),
            headers=ATOM_XML,
        )
    assert response.status_code == 204
    contact = await get_contact(client, cid)
    assert (contact.status, [r.list_id for r in contact.lists]) == ("Active", [str(list_id)])
    assert contact.opt_out_source is None
    assert contact.lists[0].opt_in_source == "ACTION_BY_CONTACT"
    found = (await get_feed(client, "contacts", email="back@example.com")).entries[0]
    assert isinstance(found, Contact)
    assert found.opt_in_source == "ACTION_BY_CONTACT"  # the summary carries the opt-in


async def test_text_xml_on_get_and_delete_is_ignored(client: httpx.AsyncClient) -> None:
    """Content-Type: text/xml on GET and DELETE of contacts changes nothing."""
    list_id = await create_list(client, "L")
    cid = await create_contact(client, "t@example.com", [list_id])
    headers = {"Content-Type": "text/xml"}
    with trio.fail_after(HANG_GUARD):
        feed = await client.get("contacts", params={"email": "t@example.com"}, headers=headers)
        one = await client.get(f"contacts/{cid}", headers=headers)
        deleted = await client.delete(f"contacts/{cid}", headers=headers)
    assert (feed.status_code, one.status_code, deleted.status_code) == (200, 200, 204)


async def test_contact_writes_need_the_atom_content_type(api: httpx.AsyncClient) -> None:
    """POST or PUT with a wrong Content-Type is 415 before the body matters; PATCH is 415."""
    list_id = await create_list(api, "L")
    cid = await create_contact(api, "ct@example.com", [list_id])
    body = contact_body("new@example.com", [list_uri(list_id)])
    for content_type in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data"):
        headers = {"Content-Type": content_type}
        with trio.fail_after(HANG_GUARD):
            posted = await api.post("contacts", content=body, headers=headers)
            put = await api.put(f"contacts/{cid}", content=body, headers=headers)
        assert (posted.status_code, put.status_code) == (415, 415)
    with trio.fail_after(HANG_GUARD):
        patched = await api.patch(f"contacts/{cid}", content=body, headers=ATOM_XML)
        put_feed = await api.put("contacts", content=body, headers=ATOM_XML)
    assert (patched.status_code, put_feed.status_code) == (415, 415)


async def test_accounts_see_only_their_own_contacts(
    api: httpx.AsyncClient, server_state: object
) -> None:
    """Another account's contact and list ids are 404/400 here."""
    from tests.serverkit import add_account, basic

    add_account(server_state, "other", "other-pw", "other-key")  # type: ignore[arg-type]
    other_auth = {"Authorization": basic("other", "other-pw", "other-key")}
    other_url = absolute(api, "/ws/customers/other/")
    list_id = await create_list(api, "Mine")
    cid = await create_contact(api, "mine@example.com", [list_id])
    with trio.fail_after(HANG_GUARD):
        got = await api.get(f"{other_url}contacts/{cid}", headers=other_auth)
        members = await api.get(f"{other_url}lists/{list_id}/members", headers=other_auth)
        created = await api.post(
            f"{other_url}contacts",
            content=contact_body("x@example.com", [list_uri(list_id, user="other")]),
            headers={**other_auth, **ATOM_XML},
        )
        search = await api.get(
            f"{other_url}contacts", params={"email": "mine@example.com"}, headers=other_auth
        )
    assert (got.status_code, members.status_code, created.status_code) == (404, 404, 400)
    assert search.status_code == 200
    assert b"<entry" not in search.content


async def test_a_next_token_past_the_end_gives_an_empty_last_page(api: httpx.AsyncClient) -> None:
    """A valid token after the last row: 200, no entries, no next link."""
    token = encode_token("contacts", 1)
    feed = await get_feed(api, "contacts", next=token)
    assert feed.entries == []
    assert feed.link("next") is None
    assert feed.link("current") == f"/ws/customers/demo/contacts?next={token}"


# -- the seeded generator -------------------------------------------------------------------


def _seeded_db(tmp_path: Path, name: str, count: int, seed_value: int) -> sqlite3.Connection:
    store = Store(tmp_path / name)
    db = store.connection()
    with write_tx(db):
        db.execute("INSERT INTO account (username, created) VALUES ('acme', 0)")
        for list_name in ("A", "B", "C"):
            db.execute(
                "INSERT INTO list (account_id, name, short_name, updated) VALUES (1, ?, ?, 0)",
                (list_name, list_name),
            )
    seed_contacts(db, 1, count, lists=[1, 2, 3], seed=seed_value, batch=700)
    return db


def test_seeding_is_deterministic_and_follows_the_status_rules(tmp_path: Path) -> None:
    """Same seed, same rows; Active ⇔ on a list; member_count right; triggers intact."""
    one = _seeded_db(tmp_path, "one.db", 2_000, 5)
    two = _seeded_db(tmp_path, "two.db", 2_000, 5)
    other = _seeded_db(tmp_path, "other.db", 2_000, 6)
    dump = "SELECT * FROM contact ORDER BY id"
    assert one.execute(dump).fetchall() == two.execute(dump).fetchall()
    assert one.execute(dump).fetchall() != other.execute(dump).fetchall()
    members = "SELECT * FROM membership ORDER BY list_id, contact_id"
    assert one.execute(members).fetchall() == two.execute(members).fetchall()
    bad = one.execute(
        "SELECT count(*) FROM contact c WHERE (c.status = 'Active') !="
        " EXISTS (SELECT 1 FROM membership m WHERE m.contact_id = c.id)"
    ).fetchone()[0]
    assert bad == 0
    counts = one.execute(
        "SELECT l.member_count, (SELECT count(*) FROM membership m WHERE m.list_id = l.id)"
        " FROM list l"
    ).fetchall()
    assert all(stored == actual for stored, actual in counts)
    statuses = dict(one.execute("SELECT status, count(*) FROM contact GROUP BY status"))
    assert set(statuses) == {"Active", "Removed", "Do Not Mail"}
    triggers = {r[0] for r in one.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
    assert {"membership_count_insert", "membership_count_delete"} <= triggers
    emails = [r[0] for r in one.execute("SELECT EmailAddress FROM contact")]
    assert len({e.lower() for e in emails}) == len(emails)
    assert all(email_problem(e) is None for e in emails)


def test_seeding_refuses_another_accounts_lists(tmp_path: Path) -> None:
    """A list id the account does not own is a ValueError, before anything is written."""
    db = _seeded_db(tmp_path, "x.db", 10, 1)
    with pytest.raises(ValueError, match="not lists"):
        seed_contacts(db, 1, 10, lists=[99], seed=1)
    with pytest.raises(sqlite3.IntegrityError):
        seed_contacts(db, 1, 10, lists=[1], seed=1)  # same start: the same addresses
    seed_contacts(db, 1, 10, lists=[1], seed=1, start=10)
    assert db.execute("SELECT count(*) FROM contact").fetchone()[0] == 20
