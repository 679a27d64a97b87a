"""The server's responses have the shapes of the recorded v1 responses in tests/fixtures.

A *shape* is the element tree without text: every element's depth, namespace, local name and
attribute names (and a link's ``rel``), in document order. Feed heads and entries are compared
with the fixtures' shapes; values are checked for what the fixtures show: ``http`` ids on the
server's origin with the spec's paths, root-relative edit and paging links, millisecond UTC
timestamps, ``Contact: {email}`` titles.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
import trio
from lxml import etree

from tests.conftest import FIXTURES
from tests.pgkit import BOTH_STORES
from tests.serverkit import HANG_GUARD, asgi_client, start_server
from tests.test_server_lists import (
    ATOM_XML,
    NS,
    TIME_RE,
    contact_body,
    create_contact,
    create_list,
    list_uri,
    seed,
)

STORES = BOTH_STORES

Shape = list[tuple[int, str | None, str, tuple[str, ...], str | None]]

_TIME_ELEMENTS = {"updated", "OptInTime", "InsertTime", "LastUpdateTime", "OptOutTime"}


def shape(el: etree._Element, depth: int = 0) -> Shape:
    """The element tree of ``el`` without text or attribute values (but a link's rel)."""
    qname = etree.QName(el)
    rel = el.get("rel") if qname.localname == "link" else None
    found: Shape = [(depth, qname.namespace, qname.localname, tuple(sorted(el.attrib)), rel)]
    for child in el:
        if isinstance(child.tag, str):
            found.extend(shape(child, depth + 1))
    return found


def fixture(name: str) -> etree._Element:
    """A fixture's root element."""
    return etree.fromstring((FIXTURES / name).read_bytes())


def head(feed: etree._Element) -> Shape:
    """The shape of a feed without its entries."""
    found: Shape = [shape(feed)[0]]
    for child in feed:
        if isinstance(child.tag, str) and etree.QName(child).localname != "entry":
            found.extend(shape(child, 1))
    return found


def entries(feed: etree._Element) -> list[etree._Element]:
    """A feed's entries."""
    return feed.findall("a:entry", NS)


def without(found: Shape, *names: str) -> Shape:
    """A shape without the elements named (and without their children)."""
    kept: Shape = []
    skip_below: int | None = None
    for item in found:
        depth, _ns, name = item[0], item[1], item[2]
        if skip_below is not None and depth > skip_below:
            continue
        skip_below = None
        if name in names:
            skip_below = depth
            continue
        kept.append(item)
    return kept


def check_values(root: etree._Element, origin: str) -> None:
    """Every id is on ``origin`` under /ws/customers/demo/, every time has milliseconds and Z,
    every edit and paging link is root-relative."""
    base = f"{origin}/ws/customers/demo/"
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        name = etree.QName(el).localname
        if name in _TIME_ELEMENTS:
            assert TIME_RE.fullmatch(el.text or ""), (name, el.text)
        if name == "id" and etree.QName(el).namespace == NS["a"]:
            assert (el.text or "").startswith(base), el.text
        if el.get("id") is not None:
            assert el.get("id", "").startswith(base), el.get("id")
        if name == "link" and el.get("rel") in ("edit", "first", "current", "next"):
            assert el.get("href", "").startswith("/ws/customers/demo/"), el.get("href")


@pytest.fixture(params=["http", "asgi"])
async def client(
    request: pytest.FixtureRequest, server_state: object, nursery: trio.Nursery
) -> AsyncIterator[httpx.AsyncClient]:
    """The demo account's client, over real HTTP and in-process."""
    if request.param == "http":
        running = await start_server(nursery, server_state)  # type: ignore[arg-type]
        async with running.client() as c:
            yield c
    else:
        async with asgi_client(server_state) as c:  # type: ignore[arg-type]
            yield c


def origin_of(client: httpx.AsyncClient) -> str:
    """The origin ids are on (the bound address, or testserver in-process)."""
    return str(client.base_url).split("/ws/", 1)[0]


async def fetch(client: httpx.AsyncClient, url: str, **params: str) -> etree._Element:
    """GET, 200 and the Atom media type asserted, parsed."""
    with trio.fail_after(HANG_GUARD):
        response = await client.get(url, params=params or None)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/atom+xml")
    assert response.content.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    root = etree.fromstring(response.content)
    check_values(root, origin_of(client))
    return root


async def test_service_document_has_the_fixture_shape(client: httpx.AsyncClient) -> None:
    """The two documented collections come first, exactly as in service-document.xml."""
    ours = await fetch(client, "")
    theirs = fixture("service-document.xml")
    collections = ours.findall(".//{http://www.w3.org/2007/app}collection")
    assert shape(ours)[:4] == shape(theirs)[:4]
    expected = shape(theirs)
    assert shape(ours)[: len(expected)] == expected
    assert [c.get("href") for c in collections[:2]] == [
        "/ws/customers/demo/lists",
        "/ws/customers/demo/activities",
    ]


async def test_lists_feed_has_the_fixture_shape(client: httpx.AsyncClient) -> None:
    """lists-feed.xml: head, system entries, user entries (plus ContactCount after Members,
    as lists-feed-with-contact-count.xml shows it)."""
    await create_list(client, "General Interest")
    await create_list(client, "Clients")
    ours = await fetch(client, "lists")
    theirs = fixture("lists-feed.xml")
    assert head(ours) == head(theirs)
    ours_entries, their_entries = entries(ours), entries(theirs)
    assert len(ours_entries) == len(their_entries) == 5
    for mine, recorded in zip(ours_entries[:3], their_entries[:3], strict=True):
        assert shape(mine) == shape(recorded)
    for mine, recorded in zip(ours_entries[3:], their_entries[3:], strict=True):
        assert without(shape(mine), "ContactCount") == shape(recorded)
    counted = entries(fixture("lists-feed-with-contact-count.xml"))[0]
    payload_names = [
        etree.QName(c).localname for c in ours_entries[3].find("a:content/c:ContactList", NS)
    ]
    recorded_names = [etree.QName(c).localname for c in counted.find("a:content/c:ContactList", NS)]
    assert payload_names == recorded_names
    assert [e.findtext("a:title", namespaces=NS) for e in ours_entries] == [
        "Active",
        "Do Not Mail",
        "Removed",
        "General Interest",
        "Clients",
    ]


async def test_one_list_has_the_fixture_shape(client: httpx.AsyncClient) -> None:
    """list-entry.xml, with the payload in the CTCT namespace and an id attribute (the
    fixture's bare <ContactList> is a known quirk) and ContactCount added."""
    list_id = await create_list(client, "General Interest")
    ours = await fetch(client, f"lists/{list_id}")
    theirs = fixture("list-entry.xml")
    payload = theirs.find("a:content/a:ContactList", NS)
    assert payload is not None  # the quirk: no namespace, no id
    for el in payload.iter():
        el.tag = f"{{{NS['c']}}}{etree.QName(el).localname}"
    payload.set("id", "x")
    assert without(shape(ours), "ContactCount") == shape(theirs)
    assert ours.findtext("a:source/a:title", namespaces=NS) == "Contact Lists for Customer: demo"


async def test_members_feed_has_the_fixture_shape(
    client: httpx.AsyncClient, server_state: object
) -> None:
    """members-feed-page1.xml: head (plus a next link on a full page) and entries."""
    list_id = await create_list(client, "Clients")
    seed(server_state, 60, [list_id])
    ours = await fetch(client, f"lists/{list_id}/members")
    theirs = fixture("members-feed-page1.xml")
    assert len(entries(ours)) == len(entries(theirs)) == 50
    next_link = ours.find("a:link[@rel='next']", NS)
    assert next_link is not None
    ours.remove(next_link)
    assert head(ours) == head(theirs)
    for mine, recorded in zip(entries(ours), entries(theirs), strict=True):
        assert shape(mine) == shape(recorded)
    first = entries(ours)[0]
    cid = first.findtext("a:id", namespaces=NS).rsplit("/", 1)[1]
    assert first.find("a:link[@rel='edit']", NS).get("href") == (
        f"/ws/customers/demo/lists/{list_id}/members/{cid}"
    )
    email = first.findtext("a:content/c:ContactListMember/c:EmailAddress", namespaces=NS)
    assert first.findtext("a:title", namespaces=NS) == f"Contact: {email}"
    assert re.fullmatch(r"[^,]+, [^,]+|[^,]*", first.findtext(".//c:Name", namespaces=NS) or "")


async def test_contacts_feed_has_the_fixture_shape(
    client: httpx.AsyncClient, server_state: object
) -> None:
    """contacts-feed.xml (a page with a next link) and contacts-feed-no-next.xml."""
    list_id = await create_list(client, "L")
    seed(server_state, 51, [list_id])
    ours = await fetch(client, "contacts")
    theirs = fixture("contacts-feed.xml")
    assert head(ours) == head(theirs)
    assert shape(entries(ours)[0]) == shape(entries(theirs)[0])
    token = ours.find("a:link[@rel='next']", NS).get("href").split("?next=", 1)[1]
    last = await fetch(client, "contacts", next=token)
    assert head(last) == head(fixture("contacts-feed-no-next.xml"))
    assert len(entries(last)) == 1


async def test_email_search_has_the_fixture_shape(client: httpx.AsyncClient) -> None:
    """contacts-search-by-email.xml: summary plus Confirmed and InsertTime; current echoes."""
    list_id = await create_list(client, "L")
    await create_contact(client, "jon@example.com", [list_id], FirstName="jon", LastName="smith")
    ours = await fetch(client, "contacts", email="jon@example.com")
    theirs = fixture("contacts-search-by-email.xml")
    assert shape(ours) == shape(theirs)
    assert ours.find("a:link[@rel='current']", NS).get("href") == (
        theirs.find("a:link[@rel='current']", NS).get("href").replace("joesflowers", "demo")
    )
    assert ours.findtext(".//c:Name", namespaces=NS) == "smith, jon"
    two = fixture("contacts-search-multiple-emails.xml")
    await create_contact(client, "ann@example.com", [list_id])
    both = await fetch(client, "contacts", email="jon@example.com")
    assert shape(entries(both)[0]) == shape(entries(two)[0])


async def test_full_contact_has_the_fixture_shape(client: httpx.AsyncClient) -> None:
    """contact-full.xml: every element in order, one ContactList with its nested Atom link,
    then Confirmed, InsertTime, LastUpdateTime, and the <source>."""
    list_id = await create_list(client, "L")
    cid = await create_contact(
        client, "joe@example.com", [list_id], Name="Customer Joe", FirstName="Joe"
    )
    ours = await fetch(client, f"contacts/{cid}")
    theirs = fixture("contact-full.xml")
    assert shape(ours) == shape(theirs)
    ref = ours.find(".//c:ContactList", NS)
    assert ref.get("id") == f"{origin_of(client)}/ws/customers/demo/lists/{list_id}"
    assert ref.find("a:link", NS).get("href") == f"/ws/customers/demo/lists/{list_id}"
    assert ours.findtext(".//c:MiddleName", namespaces=NS) == ""
    assert ours.findtext("a:source/a:title", namespaces=NS) == "Contacts for Customer: demo"


async def test_created_entries_carry_id_title_and_edit_link(client: httpx.AsyncClient) -> None:
    """The 201 bodies hold what list-entry-created.xml holds (in the server's order)."""
    with trio.fail_after(HANG_GUARD):
        # The docs' created entry, sent back as a request: its id and links are ignored.
        response = await client.post(
            "lists", content=(FIXTURES / "list-entry-created.xml").read_bytes(), headers=ATOM_XML
        )
    assert response.status_code == 201
    ours = etree.fromstring(response.content)
    theirs = fixture("list-entry-created.xml")
    recorded = {item[2] for item in shape(theirs)} - {"author"}
    assert recorded <= {item[2] for item in shape(ours)}
    check_values(ours, origin_of(client))
    list_id = response.headers["location"].rsplit("/", 1)[1]
    body = contact_body("new@example.com", [list_uri(list_id)])
    with trio.fail_after(HANG_GUARD):
        created = await client.post("contacts", content=body, headers=ATOM_XML)
    assert created.status_code == 201
    contact = etree.fromstring(created.content)
    full = without(shape(fixture("contact-full.xml")), "source")
    assert shape(contact) == full
