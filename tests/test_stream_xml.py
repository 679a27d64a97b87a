"""Contacts from XML: Atom feeds as the API emits them and plain documents, incrementally."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkops.errors import InputError
from bulkops.stream import Chunk, ChunkKind, Event, Pipeline, PipelineOptions, XmlContactDecoder
from bulkops.stream.records import Rejected
from bulkops.stream.xml import XmlRecord
from bulkops.wire.atom.reading import _CACHED_KEY_MAX, _LOCAL_NAMES_MAX, LOCAL_NAMES
from tests.stream_strategies import cuts, data_rows, form_fields, pieces

FIXTURES = Path(__file__).parent / "fixtures" / "ctct-v1"
FEED = (FIXTURES / "contacts-feed.xml").read_bytes()
LISTS = ("http://api.constantcontact.com/ws/customers/joe/lists/7",)


def records(data: bytes, points: list[int] | None = None) -> list[XmlRecord]:
    decoder = XmlContactDecoder()
    out: list[XmlRecord] = []
    for piece in pieces(data, points or []):
        out += decoder.decode(piece)
    return out + decoder.flush()


def plain_document(n: int, *, pretty: bool = True) -> bytes:
    sep = b"\n  " if pretty else b""
    body = b"".join(
        sep + b"<Contact><EmailAddress>u%d@example.org</EmailAddress>"
        b"<FirstName>N%d</FirstName></Contact>" % (i, i)
        for i in range(n)
    )
    return b'<?xml version="1.0" encoding="UTF-8"?>\n<Contacts>' + body + b"\n</Contacts>\n"


#: Contacts hidden in a comment, CDATA and a processing instruction, and one nested.
TRICKY = (
    b'<?xml version="1.0"?>\n<Contacts>\n<!-- <Contact> old -->'
    b"<Contact><EmailAddress>a@x.org</EmailAddress><Note><![CDATA[<Contact>]]></Note></Contact>"
    b"<?pi <c:Contact ?>\n<Contact><EmailAddress>outer@x.org</EmailAddress>\n"
    b"<Contact><EmailAddress>inner@x.org</EmailAddress></Contact></Contact>\n"
    b"<Contact><EmailAddress>c@x.org</EmailAddress></Contact></Contacts>"
)


def test_an_atom_feed_of_contacts_reads_as_the_api_emitted_it() -> None:
    """Each entry's Contact becomes a record of its simple child elements."""
    found = records(FEED)
    assert [dict(r.fields)["EmailAddress"] for r in found] == [
        "1258642119407@example.com",
        "1258641848349@example.com",
    ]
    assert dict(found[0].fields)["Name"] == "Customer 1"
    assert [r.line for r in found] == [24, 44]  # where each Contact start tag ends


def test_a_full_contact_entry_keeps_its_fields() -> None:
    """Every child element, empty ones as "" (ContactLists has no text of its own)."""
    (record,) = records((FIXTURES / "contact-full.xml").read_bytes())
    fields = dict(record.fields)
    assert fields["StateCode"] == "MA"
    assert fields["PostalCode"] == "02154"
    assert fields["MiddleName"] == ""
    assert not fields["ContactLists"].strip()


@given(
    st.data(),
    st.sampled_from([FEED, plain_document(30), plain_document(5, pretty=False), TRICKY]),
)
def test_every_split_gives_the_same_records(data: st.DataObject, document: bytes) -> None:
    """Whole, random cuts or one byte at a time: the same records and offsets."""
    whole = records(document)
    assert records(document, data.draw(cuts(document))) == whole
    assert records(document, list(range(1, len(document)))) == whole


def test_offsets_run_from_a_records_start_tag_to_the_next_one() -> None:
    """Records tile the document from the first <Contact, prefixed or not."""
    for document in (
        plain_document(3),
        plain_document(3)
        .replace(b"Contact>", b"c:Contact>")
        .replace(b"<Contacts>", b'<c:Contacts xmlns:c="urn:x">')
        .replace(b"</Contacts>", b"</c:Contacts>"),
    ):
        found = records(document)
        starts = [r.start_offset for r in found]
        assert all(document[s:].startswith((b"<Contact>", b"<c:Contact>")) for s in starts)
        assert [r.end_offset for r in found] == [*starts[1:], len(document)]


def test_a_contact_in_a_comment_cdata_or_instruction_does_not_shift_the_offsets() -> None:
    """Only real start tags begin a record: each record's bytes are its own."""
    found = records(TRICKY)
    spans = [TRICKY[r.start_offset : r.end_offset] for r in found]
    assert [s[: s.index(b"</EmailAddress>")] for s in spans] == [
        b"<Contact><EmailAddress>a@x.org",
        b"<Contact><EmailAddress>outer@x.org",
        b"<Contact><EmailAddress>inner@x.org",
        b"<Contact><EmailAddress>c@x.org",
    ]
    assert [r.end_offset for r in found] == [r.start_offset for r in found[1:]] + [len(TRICKY)]


def test_a_nested_contact_and_the_one_around_it_are_records_with_a_problem() -> None:
    """Neither is dropped; each names the other's line; the ones beside them are fine."""
    first, outer, inner, last = records(TRICKY)
    assert (first.problem, last.problem) == (None, None)
    assert dict(last.fields) == {"EmailAddress": "c@x.org"}
    assert (outer.line, inner.line) == (4, 5)
    assert "holds another Contact (line 5)" in (outer.problem or "")
    assert "inside the Contact on line 4" in (inner.problem or "")


def test_a_nested_contact_is_rejected_by_the_pipeline() -> None:
    """Both records are rejected as wholes (no field at fault); the others are sent."""
    events = pipeline_events(TRICKY)
    rejected = [e for e in events if isinstance(e, Rejected)]
    assert [(e.line, e.field) for e in rejected] == [(4, None), (5, None)]
    sent = sum(e.rows for e in events if isinstance(e, Chunk))
    assert sent == 2


def test_the_tree_stays_small_however_many_contacts() -> None:
    """Finished contacts are cleared and dropped: the root keeps a single child."""
    decoder = XmlContactDecoder()
    document = plain_document(20_000)
    count = 0
    for start in range(0, len(document), 65536):
        count += len(decoder.decode(document[start : start + 65536]))
        root = decoder._root
        assert root is None or len(root) <= 2
    assert count + len(decoder.flush()) == 20_000


def test_any_number_of_names_reads_right_and_the_name_cache_stays_bounded() -> None:
    """Thousands of distinct child names, and very long ones, all read by their local name."""
    names = [f"F{i}" for i in range(_LOCAL_NAMES_MAX + 50)] + ["L" * 5000]
    body = "".join(f"<{n}>{i}</{n}>" for i, n in enumerate(names))
    document = (
        f'<Contacts xmlns="urn:x"><Contact>{body}</Contact><Contact>{body}</Contact></Contacts>'
    )
    first, second = records(document.encode())
    expected = tuple((n, str(i)) for i, n in enumerate(names))
    assert first.fields == expected
    assert second.fields == expected
    assert len(LOCAL_NAMES) <= _LOCAL_NAMES_MAX  # the cache is wire.atom's
    assert all(len(tag) <= _CACHED_KEY_MAX for tag in LOCAL_NAMES if isinstance(tag, str))


@pytest.mark.parametrize(
    "document",
    [
        b'<!DOCTYPE x [<!ENTITY big "aaaaaaaaaa">]><Contacts/>',
        b'<?xml version="1.0"?>\n<Contacts>\n<!ENTITY x "y">\n</Contacts>',
    ],
)
def test_declarations_are_refused_even_across_pieces(document: bytes) -> None:
    """DOCTYPE and ENTITY are refused before the parser sees them, whatever the split."""
    for step in (1, 3, len(document)):
        points = list(range(step, len(document), step))
        with pytest.raises(InputError, match="declarations are not accepted"):
            records(document, points)


def test_malformed_xml_is_an_input_error_with_the_line_and_the_decoder_is_spent() -> None:
    """A syntax error names its line; every later call raises it again."""
    decoder = XmlContactDecoder()
    bad = b"<Contacts>\n<Contact><EmailAddress>a@x.org</Email></Contact>\n</Contacts>"
    with pytest.raises(InputError) as caught:
        decoder.decode(bad)
    assert caught.value.line == 2
    with pytest.raises(InputError):
        decoder.flush()


def test_an_empty_input_is_an_error() -> None:
    """No document at all."""
    with pytest.raises(InputError, match="empty"):
        XmlContactDecoder().flush()


def pipeline_events(document: bytes, **options: object) -> list[Event]:
    pipeline = Pipeline(PipelineOptions(lists=LISTS, **options))  # type: ignore[arg-type]
    return pipeline.decode(document) + pipeline.flush()


def test_the_pipeline_chunks_xml_with_the_columns_its_rows_fill() -> None:
    """An XML import sends only the columns some row fills; duplicates as for CSV."""
    document = plain_document(40) + b""
    events = pipeline_events(document)
    (chunk,) = [e for e in events if isinstance(e, Chunk)]
    rows = data_rows(form_fields(chunk)["data"][0])
    assert rows[0] == ["EMAIL ADDRESS", "FIRST NAME"]
    assert rows[1] == ["u0@example.org", "N0"]
    assert chunk.rows == 40
    assert chunk.lines.tolist()[:2] == [3, 4]


def test_the_pipeline_reads_the_apis_own_feed_for_a_remove() -> None:
    """A contacts feed as exported, used to remove those contacts from a list."""
    events = pipeline_events(FEED, kind=ChunkKind.REMOVE, min_rows=1)
    (chunk,) = [e for e in events if isinstance(e, Chunk)]
    assert data_rows(form_fields(chunk)["data"][0]) == [
        ["EMAIL ADDRESS"],
        ["1258642119407@example.com"],
        ["1258641848349@example.com"],
    ]


@given(
    st.lists(st.text(alphabet="aZ é,\x00-", max_size=30), min_size=34, max_size=34),
    st.sampled_from(["a@x.org", "bad", "", "a b@x.org", "x" * 79 + "@x.org"]),
    st.sampled_from(["", "MA", "zz", "qc"]),
    st.sampled_from(["", "HTML", "text", "pdf"]),
)
def test_the_quick_row_check_implies_the_exact_one(
    values: list[str], email: str, state: str, kind: str
) -> None:
    """XmlRows' shortcut accepts only rows its exact check accepts."""
    from bulkops.stream import xml

    rows = xml.XmlRows(PipelineOptions(lists=LISTS), xml.Transcoder())
    values = [v.strip() for v in values]
    values[xml._EMAIL_AT], values[xml._STATE_AT], values[xml._TYPE_AT] = email, state, kind
    if rows._quick_ok(values, "\uffff".join(values)):
        assert rows._problem(values) is None
