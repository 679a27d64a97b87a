"""Server lists resources: the lists feed, list CRUD, members feeds and their paging.

Also the request builders and response readers the other ``test_server_*`` modules share.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import escape, quoteattr

import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from bulkops.server.app import ApiState, ServerConfig
from bulkops.server.paging import BadToken, decode_token, encode_token
from bulkops.server.seed import seed_contacts
from bulkops.wire.atom.feeds import parse_entry, parse_feed
from bulkops.wire.model import ContactList, ContactListMember, Feed
from tests.pgkit import BOTH_STORES
from tests.serverkit import HANG_GUARD, asgi_client, basic, make_state, start_server

STORES = BOTH_STORES

ATOM = "http://www.w3.org/2005/Atom"
CTCT = "http://ws.constantcontact.com/ns/1.0/"
NS = {"a": ATOM, "c": CTCT}
ATOM_XML = {"Content-Type": "application/atom+xml"}
LEGACY = "http://api.constantcontact.com"
TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

# -- request bodies, written as the era's clients wrote them ------------------------------


def list_body(
    name: str | None,
    *,
    opt_in_default: str = "false",
    sort_order: str = "99",
    extra: str = "",
) -> bytes:
    """A ``ContactList`` entry as S1/S5-style clients POST and PUT it."""
    name_el = "" if name is None else f"<Name>{escape(name)}</Name>"
    return (
        f'<entry xmlns="{ATOM}"><id>data:,</id><title/><author/><updated>2010-03-02</updated>'
        f'<content type="application/vnd.ctct+xml"><ContactList xmlns="{CTCT}">'
        f"<OptInDefault>{opt_in_default}</OptInDefault>{name_el}"
        f"<SortOrder>{sort_order}</SortOrder>{extra}</ContactList></content></entry>"
    ).encode()


def contact_body(
    email: str | None,
    lists: list[str] | None = None,
    *,
    source: str | None = "ACTION_BY_CUSTOMER",
    all_empty: bool = False,
    **fields: str,
) -> bytes:
    """A ``Contact`` entry as the docs' clients POST and PUT it.

    Args:
        email: the address (None: no element).
        lists: list URIs for ``ContactLists`` (None: no element).
        source: ``OptInSource`` (None: no element).
        all_empty: write every other field as an empty element, read-only ones included,
            as some clients did.
        fields: more elements by name.
    """
    parts = []
    if all_empty:
        for name in ("Status", "EmailType", "Name", "FirstName", "LastName", "Note", "OptInTime"):
            if name not in fields:
                parts.append(f"<{name}></{name}>")
    if email is not None:
        parts.append(f"<EmailAddress>{escape(email)}</EmailAddress>")
    parts.extend(f"<{name}>{escape(value)}</{name}>" for name, value in fields.items())
    if source is not None:
        parts.append(f"<OptInSource>{source}</OptInSource>")
    if lists is not None:
        refs = "".join(f"<ContactList id={quoteattr(uri)} />" for uri in lists)
        parts.append(f"<ContactLists>{refs}</ContactLists>")
    return (
        f'<entry xmlns="{ATOM}"><title type="text"> </title>'
        "<updated>2008-07-23T14:21:06.407Z</updated><author></author><id>data:,none</id>"
        '<summary type="text">Contact</summary><content type="application/vnd.ctct+xml">'
        f'<Contact xmlns="{CTCT}">{"".join(parts)}</Contact></content></entry>'
    ).encode()


def list_uri(list_id: int | str, origin: str = LEGACY, user: str = "demo") -> str:
    """A list URI as clients send it (``http://api.constantcontact.com/...`` by default)."""
    return f"{origin}/ws/customers/{user}/lists/{list_id}"


def absolute(client: httpx.AsyncClient, href: str) -> str:
    """A root-relative href made absolute on the client's server (httpx would join it onto
    base_url's path otherwise)."""
    return str(client.base_url.copy_with(raw_path=href.encode())) if href.startswith("/") else href


async def create_list(client: httpx.AsyncClient, name: str) -> int:
    """POST a list and return its id (asserting 201)."""
    with trio.fail_after(HANG_GUARD):
        response = await client.post("lists", content=list_body(name), headers=ATOM_XML)
    assert response.status_code == 201, response.text
    return int(response.headers["location"].rsplit("/", 1)[1])


async def create_contact(
    client: httpx.AsyncClient, email: str, list_ids: list[int], **fields: str
) -> int:
    """POST a contact on the given lists and return its id (asserting 201)."""
    body = contact_body(email, [list_uri(n) for n in list_ids], **fields)
    with trio.fail_after(HANG_GUARD):
        response = await client.post("contacts", content=body, headers=ATOM_XML)
    assert response.status_code == 201, response.text
    return int(response.headers["location"].rsplit("/", 1)[1])


async def get_feed(client: httpx.AsyncClient, url: str, **params: str | list[str]) -> Feed:
    """GET a feed page (200 asserted) and parse it."""
    with trio.fail_after(HANG_GUARD):
        response = await client.get(url, params=params or None)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/atom+xml")
    return parse_feed(response.content)


async def walk(client: httpx.AsyncClient, url: str, **params: str | list[str]) -> list[Feed]:
    """Every page of a feed, following ``next`` hrefs verbatim."""
    pages = [await get_feed(client, url, **params)]
    while (href := pages[-1].link("next")) is not None:
        assert len(pages) < 1000
        pages.append(await get_feed(client, absolute(client, href)))
    return pages


def seed(state: object, count: int, lists: list[int], *, seed_value: int = 1) -> None:
    """Put ``count`` generated contacts into the demo account, straight into the store."""
    db = state.store.connection()  # type: ignore[attr-defined]
    account_id = db.execute("SELECT id FROM account WHERE username = 'demo'").fetchone()[0]
    seed_contacts(db, account_id, count, lists=lists, seed=seed_value)


# -- fixtures -----------------------------------------------------------------------------


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


@pytest.fixture
async def api(server_state: object) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client, for the tests that need no socket."""
    async with asgi_client(server_state) as c:  # type: ignore[arg-type]
        yield c


# -- the lists feed -----------------------------------------------------------------------


async def test_lists_feed_shows_system_lists_first_then_user_lists(
    client: httpx.AsyncClient,
) -> None:
    """Active, Do Not Mail, Removed (Name and ShortName only), then user lists by id."""
    ids = [await create_list(client, name) for name in ("Zebra", "Apple", "Mango")]
    feed = await get_feed(client, "lists")
    assert [e.id for e in feed.entries] == ["active", "do-not-mail", "removed", *map(str, ids)]
    system = feed.entries[:3]
    assert [e.name for e in system] == ["Active", "Do Not Mail", "Removed"]  # type: ignore[union-attr]
    for entry in system:
        assert isinstance(entry, ContactList)
        assert (entry.opt_in_default, entry.sort_order, entry.contact_count) == (None, None, None)
    user = feed.entries[3]
    assert isinstance(user, ContactList)
    assert (user.name, user.short_name, user.opt_in_default) == ("Zebra", "Zebra", False)
    assert (user.display_on_signup, user.sort_order, user.contact_count) == (False, 99, 0)
    assert feed.link("next") is None
    assert feed.link("first") == feed.link("current") == "/ws/customers/demo/lists"
    assert feed.title == "Contact Lists for Customer: demo"


async def test_lists_feed_pages_by_fifty_with_opaque_tokens(api: httpx.AsyncClient) -> None:
    """60 user lists: 3 + 47 on page one, 13 on page two; the token is no plain number."""
    ids = [await create_list(api, f"List {n:03d}") for n in range(60)]
    pages = await walk(api, "lists")
    assert [len(p.entries) for p in pages] == [50, 13]
    shown = [e.id for p in pages for e in p.entries]
    assert shown == ["active", "do-not-mail", "removed", *map(str, ids)]
    href = pages[0].link("next")
    assert href is not None
    assert href.startswith("/ws/customers/demo/lists?next=")
    token = href.split("next=", 1)[1]
    assert not token.isdigit()
    assert re.fullmatch(r"[0-9a-z_-]+", token)
    assert pages[1].id == pages[0].id == "http://testserver/ws/customers/demo/lists"
    assert pages[1].link("first") == "/ws/customers/demo/lists"
    assert pages[1].link("current") == href


@pytest.mark.parametrize("token", ["", "12", "zzzzzzzzzzzzzzzzzzzzzz", "%00", "1fx", "-", "é"])
async def test_a_bad_next_token_is_400(api: httpx.AsyncClient, token: str) -> None:
    """Tokens the server did not issue answer 400 with a reason, never 500."""
    for url in ("lists", "contacts", "lists/active/members"):
        with trio.fail_after(HANG_GUARD):
            response = await api.get(url, params={"next": token})
        assert response.status_code == 400, (url, token, response.text)
        assert "next" in response.text


async def test_a_members_token_is_refused_by_the_contacts_feed(
    api: httpx.AsyncClient, server_state: object
) -> None:
    """Tokens carry their feed's kind in the check letter."""
    list_id = await create_list(api, "Big")
    seed(server_state, 60, [list_id])
    page = await get_feed(api, f"lists/{list_id}/members")
    href = page.link("next")
    assert href is not None
    token = href.split("next=", 1)[1]
    with trio.fail_after(HANG_GUARD):
        response = await api.get("contacts", params={"next": token})
    assert response.status_code == 400


# -- one list -----------------------------------------------------------------------------


async def test_creating_a_list_answers_201_with_location_and_the_entry(
    client: httpx.AsyncClient,
) -> None:
    """POST /lists: 201, an absolute Location on the server's origin, and the new entry."""
    with trio.fail_after(HANG_GUARD):
        response = await client.post(
            "lists",
            content=list_body("Spring Promotions", opt_in_default="true", sort_order="3"),
            headers=ATOM_XML,
        )
    assert response.status_code == 201
    location = response.headers["location"]
    origin = str(client.base_url).split("/ws/", 1)[0]
    assert re.fullmatch(re.escape(origin) + r"/ws/customers/demo/lists/\d+", location)
    entry = parse_entry(response.content)
    assert isinstance(entry, ContactList)
    assert entry.id == location.rsplit("/", 1)[1]
    assert (entry.name, entry.opt_in_default, entry.sort_order) == ("Spring Promotions", True, 3)
    root = etree.fromstring(response.content)
    assert root.findtext("a:id", namespaces=NS) == location
    assert root.find("a:link[@rel='edit']", NS).get("href") == location.removeprefix(origin)
    assert TIME_RE.fullmatch(root.findtext("a:updated", namespaces=NS) or "")


async def test_get_one_list_has_its_source(client: httpx.AsyncClient) -> None:
    """GET /lists/{id} answers the entry with a <source> describing the lists feed."""
    list_id = await create_list(client, "Clients")
    with trio.fail_after(HANG_GUARD):
        response = await client.get(f"lists/{list_id}")
    assert response.status_code == 200
    root = etree.fromstring(response.content)
    source = root.find("a:source", NS)
    assert source is not None
    assert source.findtext("a:id", namespaces=NS).endswith("/ws/customers/demo/lists")
    assert source.findtext("a:title", namespaces=NS) == "Contact Lists for Customer: demo"
    entry = parse_entry(response.content)
    assert isinstance(entry, ContactList)
    assert entry.name == "Clients"
    with trio.fail_after(HANG_GUARD):
        system = await client.get("lists/do-not-mail")
    assert system.status_code == 200
    payload = etree.fromstring(system.content).find(".//c:ContactList", NS)
    assert [etree.QName(child).localname for child in payload] == ["Name", "ShortName"]


@pytest.mark.parametrize("path", ["lists/999", "lists/abc", "lists/0", "lists/-1", "lists/1e3"])
async def test_unknown_lists_are_404(api: httpx.AsyncClient, path: str) -> None:
    """Unknown or malformed list ids: 404 for GET, PUT, DELETE and members."""
    with trio.fail_after(HANG_GUARD):
        got = await api.get(path)
        put = await api.put(path, content=list_body("X"), headers=ATOM_XML)
        deleted = await api.delete(path)
        members = await api.get(f"{path}/members")
    assert (got.status_code, put.status_code, deleted.status_code) == (404, 404, 404)
    assert members.status_code == 404


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (list_body(None), "Name"),
        (list_body("   "), "Name"),
        (list_body("x" * 101), "Name"),
        (list_body("Ok", sort_order="first"), "SortOrder"),
        (list_body("Ok", opt_in_default="maybe"), "OptInDefault"),
        (b"<entry", "XML"),
        (b"", "XML"),
        (b'<feed xmlns="http://www.w3.org/2005/Atom"/>', "entry"),
    ],
)
async def test_invalid_list_bodies_are_400_with_a_reason(
    api: httpx.AsyncClient, body: bytes, reason: str
) -> None:
    """A missing Name, a bad value or bad XML: 400 and a short text saying what is wrong."""
    with trio.fail_after(HANG_GUARD):
        response = await api.post("lists", content=body, headers=ATOM_XML)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/plain")
    assert reason in response.text
    assert len(response.text) < 500


async def test_a_taken_list_name_is_409(client: httpx.AsyncClient) -> None:
    """Creating or renaming onto an existing name (any case, or a system list's) is 409."""
    first = await create_list(client, "Clients")
    second = await create_list(client, "Prospects")
    for name in ("Clients", "CLIENTS", "Active", "do not mail"):
        with trio.fail_after(HANG_GUARD):
            response = await client.post("lists", content=list_body(name), headers=ATOM_XML)
        assert response.status_code == 409, name
    with trio.fail_after(HANG_GUARD):
        renamed = await client.put(
            f"lists/{second}", content=list_body("clients"), headers=ATOM_XML
        )
        same = await client.put(f"lists/{first}", content=list_body("Clients"), headers=ATOM_XML)
    assert renamed.status_code == 409
    assert same.status_code == 204  # keeping one's own name is no conflict


async def test_renaming_a_list_changes_name_and_short_name(client: httpx.AsyncClient) -> None:
    """PUT of the whole entry a GET returned, with a new Name: 204, then the new name."""
    list_id = await create_list(client, "Old Name")
    with trio.fail_after(HANG_GUARD):
        got = await client.get(f"lists/{list_id}")
    body = got.content.replace(b"<Name>Old Name</Name>", b"<Name>New Name</Name>")
    with trio.fail_after(HANG_GUARD):
        response = await client.put(f"lists/{list_id}", content=body, headers=ATOM_XML)
    assert response.status_code == 204
    assert response.content == b""
    entry = parse_entry((await client.get(f"lists/{list_id}")).content)
    assert isinstance(entry, ContactList)
    assert (entry.name, entry.short_name, entry.sort_order) == ("New Name", "New Name", 99)
    assert entry.updated >= parse_entry(got.content).updated  # type: ignore[union-attr]


async def test_system_lists_cannot_be_changed_or_deleted(client: httpx.AsyncClient) -> None:
    """PUT or DELETE on active, do-not-mail or removed: 403 with a text body."""
    for key in ("active", "do-not-mail", "removed"):
        with trio.fail_after(HANG_GUARD):
            put = await client.put(f"lists/{key}", content=list_body("X"), headers=ATOM_XML)
            deleted = await client.delete(f"lists/{key}")
        assert (put.status_code, deleted.status_code) == (403, 403)
        assert put.headers["content-type"].startswith("text/plain")


async def test_list_writes_need_the_atom_content_type(api: httpx.AsyncClient) -> None:
    """POST or PUT with another Content-Type (or none) is 415; methods not served are 415."""
    list_id = await create_list(api, "Typed")
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "text/xml", None):
        headers = {} if content_type is None else {"Content-Type": content_type}
        with trio.fail_after(HANG_GUARD):
            posted = await api.post("lists", content=list_body("Other"), headers=headers)
            put = await api.put(f"lists/{list_id}", content=list_body("Other"), headers=headers)
        assert (posted.status_code, put.status_code) == (415, 415), content_type
    with trio.fail_after(HANG_GUARD):
        patched = await api.patch(f"lists/{list_id}", content=b"", headers=ATOM_XML)
        deleted_feed = await api.delete("lists")
        posted_member = await api.post(f"lists/{list_id}/members", content=b"")
    assert patched.status_code == deleted_feed.status_code == posted_member.status_code == 415
    with trio.fail_after(HANG_GUARD):
        with_charset = await api.post(
            "lists",
            content=list_body("Charset"),
            headers={"Content-Type": "application/atom+xml; type=entry; charset=UTF-8"},
        )
    assert with_charset.status_code == 201


async def test_get_and_delete_ignore_a_content_type(client: httpx.AsyncClient) -> None:
    """Old clients send Content-Type: text/xml on every request; GET and DELETE ignore it."""
    list_id = await create_list(client, "Doomed")
    text_xml = {"Content-Type": "text/xml"}
    with trio.fail_after(HANG_GUARD):
        feed = await client.get("lists", headers=text_xml)
        one = await client.get(f"lists/{list_id}", headers=text_xml)
        deleted = await client.delete(f"lists/{list_id}", headers=text_xml)
        gone = await client.get(f"lists/{list_id}")
    assert (feed.status_code, one.status_code, deleted.status_code) == (200, 200, 204)
    assert gone.status_code == 404


async def test_deleting_a_list_removes_memberships_and_applies_the_status_rules(
    client: httpx.AsyncClient,
) -> None:
    """Members on no other list become Removed; members of other lists stay Active."""
    doomed = await create_list(client, "Doomed")
    kept = await create_list(client, "Kept")
    only = await create_contact(client, "only@example.com", [doomed])
    both = await create_contact(client, "both@example.com", [doomed, kept])
    with trio.fail_after(HANG_GUARD):
        response = await client.delete(f"lists/{doomed}")
    assert response.status_code == 204
    statuses = {}
    for cid in (only, both):
        entry = parse_entry((await client.get(f"contacts/{cid}")).content)
        statuses[cid] = (entry.status, [ref.list_id for ref in entry.lists])  # type: ignore[union-attr]
    assert statuses == {only: ("Removed", []), both: ("Active", [str(kept)])}
    removed = await get_feed(client, "lists/removed/members")
    assert [m.contact_id for m in removed.entries] == [str(only)]  # type: ignore[union-attr]


async def test_contact_count_follows_membership(client: httpx.AsyncClient) -> None:
    """ContactCount of a user list is its number of members."""
    list_id = await create_list(client, "Counted")
    for n in range(3):
        await create_contact(client, f"c{n}@example.com", [list_id])
    entry = parse_entry((await client.get(f"lists/{list_id}")).content)
    assert isinstance(entry, ContactList)
    assert entry.contact_count == 3


# -- members ------------------------------------------------------------------------------


async def test_members_feed_pages_by_descending_contact_id(
    client: httpx.AsyncClient, server_state: object
) -> None:
    """About 125 members: full pages of 50 by descending contact id, found by next links."""
    list_id = await create_list(client, "Members")
    other = await create_list(client, "Other")
    state = server_state
    seed(state, 130, [list_id, other])
    pages = await walk(client, f"lists/{list_id}/members")
    members = [m for p in pages for m in p.entries]
    assert all(isinstance(m, ContactListMember) for m in members)
    ids = [int(m.contact_id) for m in members]  # type: ignore[union-attr]
    db = state.store.connection()  # type: ignore[attr-defined]
    expected = [
        row[0]
        for row in db.execute(
            "SELECT contact_id FROM membership WHERE list_id = ? ORDER BY contact_id DESC",
            (list_id,),
        )
    ]
    assert ids == expected
    assert [len(p.entries) for p in pages][:-1] == [50] * (len(pages) - 1)
    assert 0 < len(pages[-1].entries) <= 50


async def test_members_feed_over_http_follows_next_links(
    server_state: object, nursery: trio.Nursery
) -> None:
    """Over real HTTP the next hrefs are root-relative paths that work verbatim."""
    running = await start_server(nursery, server_state)  # type: ignore[arg-type]
    async with running.client() as c:
        list_id = await create_list(c, "Members")
        seed(server_state, 101, [list_id], seed_value=3)
        pages = await walk(c, f"lists/{list_id}/members")
    count = sum(len(p.entries) for p in pages)
    db = server_state.store.connection()  # type: ignore[attr-defined]
    (expected,) = db.execute("SELECT member_count FROM list WHERE id = ?", (list_id,)).fetchone()
    assert count == expected
    assert len(pages) == -(-expected // 50)
    for page in pages[1:]:
        assert page.link(
            "current",
        ).startswith(f"/ws/customers/demo/lists/{list_id}/members?next=")  # type: ignore[union-attr]
        assert page.link("first") == f"/ws/customers/demo/lists/{list_id}/members"


async def test_member_entries_have_the_fixture_shape(client: httpx.AsyncClient) -> None:
    """Edit link under /lists/{id}/members/{cid}, id the contact URI, Name "Last, First"."""
    list_id = await create_list(client, "Shapes")
    named = await create_contact(
        client, "named@example.com", [list_id], Name="Customer Joe", FirstName="Joe"
    )
    parts = await create_contact(
        client, "parts@example.com", [list_id], FirstName="Mike", LastName="Donnelly"
    )
    last_only = await create_contact(client, "last@example.com", [list_id], LastName="Solo")
    anonymous = await create_contact(client, "anon@example.com", [list_id])
    with trio.fail_after(HANG_GUARD):
        response = await client.get(f"lists/{list_id}/members")
    feed = parse_feed(response.content)
    names = {int(m.contact_id): m.name for m in feed.entries}  # type: ignore[union-attr]
    assert names == {
        named: "Customer Joe",
        parts: "Donnelly, Mike",
        last_only: "Solo",
        anonymous: "",
    }
    root = etree.fromstring(response.content)
    entry = root.find("a:entry", NS)
    cid = anonymous  # newest first
    assert entry.find("a:link[@rel='edit']", NS).get("href") == (
        f"/ws/customers/demo/lists/{list_id}/members/{cid}"
    )
    assert entry.findtext("a:id", namespaces=NS).endswith(f"/ws/customers/demo/contacts/{cid}")
    assert entry.findtext("a:title", namespaces=NS) == "Contact: anon@example.com"
    member = entry.find("a:content/c:ContactListMember", NS)
    assert [etree.QName(child).localname for child in member] == ["EmailAddress", "Name"]
    assert member.findtext("c:Name", namespaces=NS) == ""


async def test_system_list_members_are_the_contacts_with_that_status(
    api: httpx.AsyncClient,
) -> None:
    """/lists/active|removed|do-not-mail/members list contacts by status."""
    list_id = await create_list(api, "L")
    active = await create_contact(api, "a@example.com", [list_id])
    opted_out = await create_contact(api, "o@example.com", [list_id])
    removed = await create_contact(api, "r@example.com", [list_id])
    with trio.fail_after(HANG_GUARD):
        assert (await api.delete(f"contacts/{opted_out}")).status_code == 204
        put = await api.put(f"contacts/{removed}", content=contact_body(None, []), headers=ATOM_XML)
    assert put.status_code == 204
    found = {}
    for key in ("active", "removed", "do-not-mail"):
        feed = await get_feed(api, f"lists/{key}/members")
        found[key] = [int(m.contact_id) for m in feed.entries]  # type: ignore[union-attr]
    assert found == {"active": [active], "removed": [removed], "do-not-mail": [opted_out]}


@pytest.fixture
def public_state(tmp_path: Path) -> Iterator[ApiState]:
    """A server state whose public URL differs from the address it binds."""
    state = make_state(tmp_path, ServerConfig(public_url="https://mail.example.net/"))
    yield state
    state.store.close()


async def test_ids_use_the_configured_public_url(
    public_state: ApiState, nursery: trio.Nursery
) -> None:
    """--public-url decides the origin of ids and Location; links stay root-relative."""
    state = public_state
    running = await start_server(nursery, state)
    assert running.origin.rstrip("/") == "https://mail.example.net"
    async with httpx.AsyncClient(
        base_url=f"{state.origin}/ws/customers/demo/", headers={"Authorization": basic()}
    ) as c:
        list_id = await create_list(c, "Public")
        with trio.fail_after(HANG_GUARD):
            response = await c.get("lists")
            created = await c.post("lists", content=list_body("Again"), headers=ATOM_XML)
    feed = parse_feed(response.content)
    assert feed.id == "https://mail.example.net/ws/customers/demo/lists"
    assert created.headers["location"].startswith("https://mail.example.net/ws/customers/")
    root = etree.fromstring(response.content)
    ids = root.xpath("//a:entry/a:id/text()", namespaces=NS)
    assert f"https://mail.example.net/ws/customers/demo/lists/{list_id}" in ids
    assert root.find("a:link[@rel='first']", NS).get("href") == "/ws/customers/demo/lists"


# -- paging tokens ------------------------------------------------------------------------

_INT64 = st.integers(-(2**63), 2**63 - 1)


@given(
    kind=st.sampled_from(["lists", "members", "contacts", "updated"]),
    values=st.lists(_INT64, min_size=1, max_size=3),
)
def test_tokens_round_trip_and_are_no_plain_numbers(kind: str, values: list[int]) -> None:
    """decode(encode(keyset)) is the keyset; tokens are url-safe and never all digits."""
    token = encode_token(kind, *values)
    assert decode_token(kind, token, len(values)) == tuple(values)
    assert re.fullmatch(r"[0-9a-z_-]+", token)
    assert not token.isdigit()
    assert quote(token, safe="") == token


@given(token=st.text(max_size=90), arity=st.integers(1, 3))
def test_decoding_any_text_gives_a_keyset_or_bad_token(token: str, arity: int) -> None:
    """Whatever arrives as ?next=, decoding yields in-range integers or raises BadToken."""
    try:
        values = decode_token("contacts", token, arity)
    except BadToken:
        return
    assert len(values) == arity
    assert all(-(2**63) <= v < 2**63 for v in values)


def test_a_token_of_another_kind_is_refused() -> None:
    """The check letter ties a token to its kind of feed, and one altered digit breaks it."""
    token = encode_token("members", 123456)
    with pytest.raises(BadToken):
        decode_token("contacts", token, 1)
    with pytest.raises(BadToken):
        decode_token("members", token, 2)
    accepted = 0
    for digit in "0123456789abcdefghijklmnopqrstuvwxyz".replace(token[0], ""):
        try:
            decode_token("members", digit + token[1:], 1)
        except BadToken:
            continue
        accepted += 1
    assert accepted <= 4  # about 1 in 26 of the 35 mistyped first digits slips through
