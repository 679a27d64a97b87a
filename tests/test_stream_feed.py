"""FeedDecoder: the same records and links as a whole-document parse, however the bytes come."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkops.errors import XmlError
from bulkops.stream.feed import FEED_SLICE_BYTES, FeedDecoder
from bulkops.wire.atom.activities import activity_entry
from bulkops.wire.atom.contacts import contact_entry
from bulkops.wire.atom.feeds import parse_feed
from bulkops.wire.atom.lists import list_entry, member_entry
from bulkops.wire.atom.reading import links_of, local_name
from bulkops.wire.atom.syntax import format_time, parse_xml
from bulkops.wire.atom.writing import document
from bulkops.wire.model import Base, ContactListMember, FeedEntry
from tests import strategies as s
from tests.conftest import FIXTURES

BASE = Base("http://api.constantcontact.com", "joe")
ATOM = 'xmlns="http://www.w3.org/2005/Atom"'
DOC_URL = "https://127.0.0.1:8443/ws/customers/joe/lists"
T0 = datetime(2020, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)

FEED_FIXTURES = sorted(FIXTURES.glob("*.xml"))
MALFORMED = sorted((FIXTURES / "malformed").glob("*.xml"))


# -- helpers -----------------------------------------------------------------------------------


def oracle(data: bytes) -> tuple[list[FeedEntry], dict[str, str]] | str:
    """What a whole-document parse says: records and feed links, or "error"."""
    try:
        feed = parse_feed(data, max_bytes=1 << 30)
        return feed.entries, links_of(parse_xml(data, max_bytes=1 << 30))
    except XmlError:
        return "error"


def feed_pieces(decoder: FeedDecoder, data: bytes, cuts: Sequence[int] = ()) -> list[FeedEntry]:
    """Every record of ``data`` cut at ``cuts``, flush included."""
    records: list[FeedEntry] = []
    for start, stop in itertools.pairwise([0, *sorted(set(cuts)), len(data)]):
        records.extend(decoder.decode(data[start:stop]))
    return records + decoder.flush()


def decode(data: bytes, cuts: Sequence[int] = (), **kwargs: object) -> FeedDecoder | str:
    """Feed ``data`` cut at ``cuts``; the decoder (records in ``.got``) or "error"."""
    decoder = FeedDecoder(**kwargs)  # type: ignore[arg-type]
    try:
        decoder.got = feed_pieces(decoder, data, cuts)  # type: ignore[attr-defined]
    except XmlError:
        return "error"
    return decoder


def outcome(data: bytes, cuts: Sequence[int] = ()) -> tuple[list[FeedEntry], dict[str, str]] | str:
    decoder = decode(data, cuts)
    if isinstance(decoder, str):
        return decoder
    return decoder.got, dict(decoder.links)  # type: ignore[attr-defined]


def one_byte_cuts(data: bytes) -> list[int]:
    return list(range(1, len(data)))


def member(n: int, *, list_id: str = "7") -> str:
    return member_entry(
        BASE,
        ContactListMember(
            contact_id=str(n),
            email=f"m{n}@example.org",
            name=f"Last{n}, First",
            list_id=list_id,
            updated=T0 + timedelta(milliseconds=n),
        ),
    )


def feed(*children: str, declaration: bool = True) -> bytes:
    body = f"<feed {ATOM}><id>{BASE.id('lists/7/members')}</id>{''.join(children)}</feed>"
    return document(body) if declaration else body.encode()


def link(rel: str | None, href: str) -> str:
    rel_attr = "" if rel is None else f' rel="{rel}"'
    return f'<link href="{href}"{rel_attr} />'


# -- the fixtures ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", FEED_FIXTURES, ids=lambda p: p.name)
def test_every_fixture_decodes_like_a_whole_document_parse(path: Path) -> None:
    """Whole and one byte at a time, each fixture gives parse_feed's records and links."""
    data = path.read_bytes()
    expected = oracle(data)
    assert outcome(data) == expected
    assert outcome(data, one_byte_cuts(data)) == expected


def test_the_fixture_feeds_are_not_vacuous() -> None:
    """The fixtures hold feeds with entries, with and without next links, and non-feeds."""
    results = {path.name: oracle(path.read_bytes()) for path in FEED_FIXTURES}
    feeds = {name: r for name, r in results.items() if not isinstance(r, str)}
    assert len(feeds) >= 15
    assert sum(len(r[0]) for r in feeds.values()) >= 80
    assert sum("next" in r[1] for r in feeds.values()) >= 4
    assert "error" in results.values()  # entries and service documents are not feeds


@pytest.mark.parametrize("path", MALFORMED, ids=lambda p: p.name)
def test_malformed_fixtures_are_refused_in_any_split(path: Path) -> None:
    """What the strict whole-document parse refuses, the decoder refuses too."""
    data = path.read_bytes()
    assert oracle(data) == "error"
    assert outcome(data) == "error"
    assert outcome(data, one_byte_cuts(data)) == "error"


@given(st.data())
def test_any_split_of_a_fixture_decodes_like_the_whole(data: st.DataObject) -> None:
    """Hypothesis: random cut points of any fixture change nothing."""
    path = data.draw(st.sampled_from(FEED_FIXTURES + MALFORMED))
    raw = path.read_bytes()
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=40))
    assert outcome(raw, cuts) == oracle(raw)


def test_the_members_fixture_gives_fifty_members_of_list_2() -> None:
    """A concrete check on the 50-entry live capture."""
    decoder = decode((FIXTURES / "members-feed-page1.xml").read_bytes())
    assert not isinstance(decoder, str)
    records = decoder.got  # type: ignore[attr-defined]
    assert len(records) == 50 == decoder.entries
    assert all(isinstance(r, ContactListMember) and r.list_id == "2" for r in records)
    assert [r.contact_id for r in records] == [str(n) for n in range(51, 1, -1)]
    assert records[0].email == "winston_stiedemann@mcdermottrobel.example"
    assert decoder.next_url is None


# -- generated feeds ---------------------------------------------------------------------------

HREFS = st.sampled_from(
    [
        "http://api.constantcontact.com/ws/customers/joe/lists?next=abc",
        "/ws/customers/joe/lists?next=6",
        "lists?next=6",
        "",
        " /ws/customers/joe/\n  contacts?next=g24 ",
        "members",
    ]
)
RELS = st.sampled_from([None, "self", "next", "first", "current", "alternate", " next "])


@st.composite
def feed_children(draw: st.DrawFn) -> list[str]:
    """Entries of every kind, links of every form, and other elements, in any order."""
    entries = st.one_of(
        s.members.map(lambda m: member_entry(BASE, m)),
        s.contact_lists().map(lambda lst: list_entry(BASE, lst)),
        s.activities().map(lambda a: activity_entry(BASE, a)),
        st.tuples(s.contacts(), st.sampled_from(["summary", "search", "full"])).map(
            lambda cv: contact_entry(BASE, cv[0], view=cv[1])
        ),
    )
    others = st.one_of(
        st.tuples(RELS, HREFS).map(lambda rh: link(*rh)),
        st.just("<title type='text'>Contacts</title>"),
        st.just("<author><name>joe</name></author>"),
        st.just("<updated>2010-03-02T15:04:05.123Z</updated>"),
        st.just("<!-- a comment --><?pi x?>\r\n  "),
        st.just("<other><entry><id>not top-level</id></entry></other>"),
        st.just("<![CDATA[ text ]]>"),
    )
    return draw(st.lists(st.one_of(entries, others), max_size=12))


@given(feed_children(), st.data())
def test_any_split_of_a_generated_feed_decodes_like_the_whole(
    children: list[str], data: st.DataObject
) -> None:
    """Hypothesis: whole, random cuts and one byte at a time agree with parse_feed."""
    raw = feed(*children, declaration=data.draw(st.booleans()))
    expected = oracle(raw)
    assert expected != "error"
    assert outcome(raw) == expected
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=60))
    assert outcome(raw, cuts) == expected
    if len(raw) < 4000:
        assert outcome(raw, one_byte_cuts(raw)) == expected


# -- the next link -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("href", "url"),
    [
        (
            "http://api.constantcontact.com/ws/customers/joe/lists?next=6",
            "http://api.constantcontact.com/ws/customers/joe/lists?next=6",
        ),
        ("/ws/customers/joe/lists?next=6", "https://127.0.0.1:8443/ws/customers/joe/lists?next=6"),
        ("lists?next=6", "https://127.0.0.1:8443/ws/customers/joe/lists?next=6"),
        (
            "contacts?next=g24umerp-fymhqg",
            "https://127.0.0.1:8443/ws/customers/joe/contacts?next=g24umerp-fymhqg",
        ),
        (
            "/ws/customers/joe/\n      lists?next=6 ",
            "https://127.0.0.1:8443/ws/customers/joe/lists?next=6",
        ),
        ("", None),
    ],
    ids=["absolute", "root-relative", "relative", "relative-token", "wrapped", "empty"],
)
def test_next_links_in_every_form_resolve_against_the_page_url(href: str, url: str | None) -> None:
    """Absolute, /ws/…, relative and wrapped hrefs resolve; an empty one means no next page."""
    decoder = decode(feed(link("next", href), member(1)), document_url=DOC_URL)
    assert not isinstance(decoder, str)
    assert decoder.next_href == href.strip().replace("\n", " ")  # attribute normalisation
    assert decoder.next_url == url


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("lists-feed-page1.xml", "https://127.0.0.1:8443/ws/customers/username/lists?next=6"),
        (
            "contacts-feed.xml",
            "https://127.0.0.1:8443/ws/customers/joesflowers/contacts?next=g24umerp-fymhqg",
        ),
        (
            "campaigns-feed-page1.xml",
            "https://127.0.0.1:8443/ws/customers/username/campaigns?next=2",
        ),
        (
            "campaign-events-bounces-page1.xml",
            "https://127.0.0.1:8443/ws/customers/username/campaigns/1/events/bounces?next=6",
        ),
        ("lists-feed-page2.xml", None),
        ("members-feed-page1.xml", None),
        ("lists-feed-with-contact-count.xml", None),
    ],
)
def test_fixture_next_links_resolve(name: str, url: str | None) -> None:
    """The fixtures' next links (and their absence) come out as URLs to fetch."""
    decoder = decode((FIXTURES / name).read_bytes(), document_url=DOC_URL)
    assert not isinstance(decoder, str)
    assert decoder.next_url == url


def test_the_next_link_is_known_as_soon_as_it_has_been_read() -> None:
    """Before any entry is complete, the next link of the header is already exposed."""
    raw = feed(
        link(None, "x"),
        link("next", "/ws/customers/joe/lists/7/members?next=z"),
        member(1),
        member(2),
    )
    head_end = raw.index(b"<entry")
    decoder = FeedDecoder(document_url=DOC_URL)
    assert decoder.decode(raw[:head_end]) == []
    assert decoder.next_url == "https://127.0.0.1:8443/ws/customers/joe/lists/7/members?next=z"
    assert decoder.entries == 0


def test_links_between_and_after_entries_count_and_the_first_wins() -> None:
    """Links are read wherever they stand among the feed's children."""
    raw = feed(
        member(1), link("next", "/a?next=1"), member(2), link("next", "/b"), link("first", "/f")
    )
    decoder = decode(raw, document_url=DOC_URL)
    assert not isinstance(decoder, str)
    assert decoder.next_href == "/a?next=1"
    assert decoder.links["first"] == "/f"
    trailing = decode(feed(member(1), member(2), link("next", "/late")), one_byte_cuts(b"x" * 400))
    assert not isinstance(trailing, str)
    assert trailing.next_href == "/late"


def test_links_inside_entries_are_not_feed_links() -> None:
    """An entry's edit link and a payload's nested self link never pass for the feed's."""
    decoder = decode((FIXTURES / "contact-events-sends.xml").read_bytes())
    assert not isinstance(decoder, str)
    assert "edit" not in decoder.links
    assert set(decoder.links) <= {"alternate", "self", "first", "current", "next"}


# -- constant memory -------------------------------------------------------------------------


def test_finished_entries_are_cleared_so_the_tree_stays_small() -> None:
    """After every piece, the tree holds the last entry's shell and what was read ahead."""
    raw = feed(link("next", "/n"), *(member(n) for n in range(3000)))
    decoder = FeedDecoder(list_id="7")
    count = 0
    largest = 0
    for start in range(0, len(raw), 8192):
        count += len(decoder.decode(raw[start : start + 8192]))
        root = decoder._root
        assert root is not None
        largest = max(largest, len(root))
        assert all(len(child) == 0 for child in root[:-1] if local_name(child) == "entry")
    count += len(decoder.flush())
    assert count == 3000
    assert largest <= 8192 // 500 + 3  # one read-ahead piece of entries, never the feed


def test_one_huge_piece_is_fed_in_slices() -> None:
    """A piece far beyond libxml2's push buffer limit decodes (it is fed 64 KiB at a time)."""
    raw = feed(*(member(n) for n in range(25_000)))
    assert len(raw) > 10 * 1024 * 1024 > FEED_SLICE_BYTES
    decoder = FeedDecoder()
    records = decoder.decode(raw) + decoder.flush()
    assert len(records) == 25_000
    assert decoder.bytes_fed == len(raw)


def test_too_many_bytes_without_an_entry_are_refused() -> None:
    """The bytes between two finished entries are bounded."""
    raw = feed(member(1), "<title>" + "x" * 5000 + "</title>", member(2))
    assert outcome(raw) != "error"
    decoder = FeedDecoder(max_entry_bytes=4096)
    with pytest.raises(XmlError, match="without a complete feed entry"):
        feed_pieces(decoder, raw, range(1000, len(raw), 1000))


# -- hostile and broken input ------------------------------------------------------------------

DOCTYPE = b'<?xml version="1.0"?><!DOCTYPE feed [<!ENTITY x "y">]><feed xmlns="http://www.w3.org/2005/Atom"><title>&x;</title></feed>'
ENTITY_ONLY = b"<feed><!ENTITY x SYSTEM 'file:///etc/passwd'></feed>"


@pytest.mark.parametrize("raw", [DOCTYPE, ENTITY_ONLY], ids=["doctype", "entity"])
def test_doctype_and_entity_declarations_are_refused_across_every_cut(raw: bytes) -> None:
    """The forbidden tokens are found however the bytes are cut, before libxml2 sees them."""
    for cut in range(len(raw) + 1):
        with pytest.raises(XmlError, match="DOCTYPE or ENTITY"):
            feed_pieces(FeedDecoder(), raw, [cut])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (feed(member(1)).decode().encode("utf-16"), "UTF-8"),
        (feed(member(1)).decode().encode("utf-32"), "UTF-8"),
        (document(member(1)), "expected a <feed>, found <entry>"),
        (b"<html><body>403</body></html>", "expected a <feed>, found <html>"),
        (b"<service><feed><entry/></feed></service>", "expected a <feed>, found <service>"),
        (feed(member(1))[:-10], "malformed"),
        (feed(member(1)) + b'"', "malformed"),
        (b"", "malformed"),
        (b"<feed><title>&lol;</title></feed>", "malformed"),
        (b"<feed><entry><id>\xff</id></entry></feed>", "malformed"),
    ],
    ids=[
        "utf16",
        "utf32",
        "entry-root",
        "html",
        "nested-feed",
        "truncated",
        "junk",
        "empty",
        "undefined-entity",
        "bad-utf8",
    ],
)
def test_broken_documents_are_xml_errors_in_any_split(raw: bytes, message: str) -> None:
    """Whole or one byte at a time, broken input is an XmlError with the right reason."""
    for cuts in ([], one_byte_cuts(raw)):
        with pytest.raises(XmlError, match=message):
            feed_pieces(FeedDecoder(), raw, cuts)


def test_a_bad_entry_names_its_position_and_spends_the_decoder() -> None:
    """The record parser's error says which entry; every later call raises it again."""
    bad = member(2).replace(format_time(T0 + timedelta(milliseconds=2)), "not a time")
    decoder = FeedDecoder()
    with pytest.raises(XmlError, match="feed entry 2: bad timestamp"):
        decoder.decode(feed(member(1), bad, member(3)))
    with pytest.raises(XmlError, match="feed entry 2"):
        decoder.decode(b"")
    with pytest.raises(XmlError, match="feed entry 2"):
        decoder.flush()


def test_a_flushed_decoder_refuses_more() -> None:
    """flush() ends the document."""
    decoder = FeedDecoder()
    assert len(decoder.decode(feed(member(1))) + decoder.flush()) == 1
    assert decoder.finished
    with pytest.raises(XmlError, match="already flushed"):
        decoder.decode(b"x")


def test_the_list_id_fills_members_whose_edit_link_names_no_list() -> None:
    """Members feeds without members edit links take the walked list's id."""
    entry = member(5).replace("/lists/7/members/5", "/contacts/5")
    assert outcome(feed(entry)) == "error"
    decoder = decode(feed(entry), list_id="9")
    assert not isinstance(decoder, str)
    (record,) = decoder.got  # type: ignore[attr-defined]
    assert isinstance(record, ContactListMember)
    assert record.list_id == "9"
