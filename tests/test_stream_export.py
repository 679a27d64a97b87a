"""Export files in, rows out; rows and records to CSV and JSON Lines."""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkops.errors import ProtocolError
from bulkops.stream.export import (
    ExportCsvDecoder,
    ExportRow,
    RecordEncoder,
    RowEncoder,
    contact_row,
    export_columns,
    fields_needing_detail,
    header_projection,
    record_header,
    record_row,
)
from bulkops.wire.atom.activities import activity_entry, activity_from_entry
from bulkops.wire.atom.syntax import parse_xml
from bulkops.wire.atom.writing import document
from bulkops.wire.columns import COLUMNS, EMAIL_COLUMN, lookup_column
from bulkops.wire.model import (
    Activity,
    ActivityError,
    Base,
    Contact,
    ContactList,
    ContactListMember,
)
from tests import strategies as s

BASE = Base("http://api.constantcontact.com", "joe")
T0 = datetime(2009, 11, 20, 20, 41, 19, 243000, tzinfo=UTC)


def written(rows: Sequence[Sequence[str]], *, delimiter: str = ",", bom: bool = False) -> bytes:
    """A file as the server's csv.writer writes it (CRLF)."""
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    return (b"\xef\xbb\xbf" if bom else b"") + buffer.getvalue().encode("utf-8")


def decode_all(data: bytes, cuts: Sequence[int] = (), **kwargs: str) -> ExportCsvDecoder:
    decoder = ExportCsvDecoder(**kwargs)  # type: ignore[arg-type]
    rows: list[ExportRow] = []
    for start, stop in itertools.pairwise([0, *sorted(set(cuts)), len(data)]):
        rows.extend(decoder.decode(data[start:stop]))
    rows.extend(decoder.flush())
    decoder.got = rows  # type: ignore[attr-defined]
    return decoder


# Cells that exercise quoting: delimiters, quotes, CR/LF inside fields, non-ASCII (multi-byte
# characters cut between pieces), empty cells.
CELLS = st.text(st.sampled_from([*'ab ,\t"\r\n', "é", "中", "😀", "\u2028"]), max_size=8)
TABLES = st.lists(st.lists(CELLS, min_size=1, max_size=5), min_size=1, max_size=12)


@given(TABLES, st.sampled_from([",", "\t"]), st.booleans(), st.data())
def test_any_split_of_an_export_file_reads_like_csv_reader(
    table: list[list[str]], delimiter: str, bom: bool, data: st.DataObject
) -> None:
    """Hypothesis: whole, random cuts and one byte at a time agree with the stdlib oracle."""
    raw = written(table, delimiter=delimiter, bom=bom)
    text = raw.decode("utf-8-sig")
    oracle = [r for r in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter) if r]
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=30))
    for pieces in ([], cuts, list(range(1, len(raw)))):
        decoder = decode_all(raw, pieces, delimiter=delimiter)
        assert decoder.header == tuple(oracle[0])
        assert [row.values for row in decoder.got] == oracle[1:]  # type: ignore[attr-defined]


def test_rows_are_numbered_like_line_numbers() -> None:
    """The header is record 1; a blank record counts but is not returned."""
    raw = b'Email Address\r\na@x.org\r\n\r\n"b\r\n@x.org"\r\nc@x.org'
    decoder = decode_all(raw)
    assert [(r.line, r.values) for r in decoder.got] == [  # type: ignore[attr-defined]
        (2, ["a@x.org"]),
        (4, ["b\r\n@x.org"]),
        (5, ["c@x.org"]),
    ]
    assert decoder.records == 5


def test_txt_files_are_tab_separated() -> None:
    """for_file_name picks the delimiter from the suffix."""
    raw = b"Email Address\tFirst Name\r\na@x.org\tAna, Jr.\r\n"
    txt = ExportCsvDecoder.for_file_name("a07e1x.TXT")
    assert [r.values for r in txt.decode(raw) + txt.flush()] == [["a@x.org", "Ana, Jr."]]
    csv_decoder = ExportCsvDecoder.for_file_name("a07e1x.csv")
    assert [r.values for r in csv_decoder.decode(raw) + csv_decoder.flush()] == [
        ["a@x.org\tAna", " Jr."]
    ]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"Email Address\r\n\xff\xfe@x.org\r\n", "not UTF-8"),
        (b"Email Address\r\na@x.org\xc3", "not UTF-8"),
        (b'Email Address\r\n"a@x.org\r\n', "inside a quoted field"),
    ],
    ids=["invalid-utf8", "cut-character", "open-quote"],
)
def test_broken_export_files_are_protocol_errors(raw: bytes, message: str) -> None:
    """Bad bytes and an unterminated quote are reported, never silently dropped."""
    with pytest.raises(ProtocolError, match=message):
        decode_all(raw)


def test_a_record_longer_than_the_bound_is_refused() -> None:
    """The text held back for an incomplete record is bounded."""
    raw = b'Email Address\r\n"' + b"x" * 5000
    with pytest.raises(ProtocolError, match="longer than 1000"):
        decode_all(raw, range(100, len(raw), 100), max_record_chars=1000)  # type: ignore[arg-type]


def test_a_flushed_export_decoder_refuses_more() -> None:
    """flush() ends the file."""
    decoder = ExportCsvDecoder()
    decoder.flush()
    with pytest.raises(ProtocolError, match="already flushed"):
        decoder.decode(b"x")
    with pytest.raises(ProtocolError, match="already flushed"):
        decoder.flush()


# -- columns -----------------------------------------------------------------------------------


def test_columns_put_the_email_first_and_accept_any_spelling() -> None:
    """Names are matched like activity headers; repeats and blanks are dropped."""
    columns = export_columns(["last name", "FIRST NAME", "Last Name", " ", "e-mail", "zip"])
    assert [c.export_header for c in columns] == [
        "Email Address",
        "Last Name",
        "First Name",
        "Zip/Postal Code",
    ]
    assert export_columns(None) == COLUMNS == export_columns(["ALL"])
    with pytest.raises(ValueError, match="unknown column 'Shoe Size'"):
        export_columns(["Shoe Size"])


def test_the_export_header_is_mapped_onto_the_wanted_columns() -> None:
    """Title-case headers, other orders and extra columns map by column, not position."""
    columns = export_columns(["City", "First Name"])
    header = ["Email Address", "First Name", "Date Added", "City", "List: Friends"]
    assert header_projection(header, columns) == [0, 3, 1]
    with pytest.raises(ProtocolError, match="no column City"):
        header_projection(["Email Address", "First Name"], columns)


def test_feed_records_become_rows_under_the_columns() -> None:
    """Members carry the address; contacts their fields; the rest needs the full contact."""
    columns = export_columns(["First Name", "Email Type"])
    member = ContactListMember(
        contact_id="5", email="m@x.org", name="Lee, Pat", list_id="7", updated=T0
    )
    contact = Contact(
        id="5",
        status="Active",
        updated=T0,
        fields={"EmailAddress": "m@x.org", "FirstName": "Pat", "EmailType": "Text"},
    )
    assert contact_row(member, columns) == ["m@x.org", "", ""]
    assert contact_row(contact, columns) == ["m@x.org", "Pat", "Text"]
    assert fields_needing_detail(ContactListMember, columns) == ["FirstName", "EmailType"]
    assert fields_needing_detail(Contact, columns) == ["FirstName"]
    assert fields_needing_detail(Contact, [EMAIL_COLUMN]) == []


# -- encoders ----------------------------------------------------------------------------------


@given(st.lists(st.lists(CELLS, min_size=3, max_size=3), max_size=20))
def test_rows_round_trip_through_both_formats(rows: list[list[str]]) -> None:
    """Hypothesis: what the encoders write, csv.reader and json read back exactly."""
    header = ["Email Address", "First Name", "Note"]
    out = RowEncoder("csv", header)
    text = (out.begin() + out.encode(rows)).decode("utf-8")
    assert list(csv.reader(io.StringIO(text, newline=""))) == [header, *rows]
    lines = RowEncoder("jsonl", header)
    data = lines.begin() + lines.encode(rows)
    assert data.count(b"\n") == len(rows)  # JSON escapes every line break inside a value
    assert [json.loads(line) for line in data.splitlines()] == [
        dict(zip(header, row, strict=True)) for row in rows
    ]


def test_records_are_flattened_for_csv_and_whole_in_json_lines() -> None:
    """Times as RFC 3339, booleans as true/false, None empty, nested values as JSON."""
    activity = Activity(
        id="a07e1xyz",
        type="ADD_CONTACTS",
        status="COMPLETE",
        insert_time=T0,
        updated=T0,
        errors=(ActivityError(line=3, email="b@x.org", message='Bad "x"'),),
        transaction_count=2,
    )
    assert record_header(Activity)[:3] == ("id", "type", "status")
    row = dict(zip(record_header(Activity), record_row(activity), strict=True))
    assert row["insert_time"] == "2009-11-20T20:41:19.243000Z"
    assert row["run_start_time"] == ""
    assert row["transaction_count"] == "2"
    assert json.loads(row["errors"]) == [{"line": 3, "email": "b@x.org", "message": 'Bad "x"'}]
    lst = ContactList(id="7", name="A", short_name="A", updated=T0, opt_in_default=False)
    assert record_row(lst)[4] == "false"

    encoder = RecordEncoder("jsonl", Activity)
    assert encoder.begin() == b""
    (line,) = encoder.encode([activity]).splitlines()
    assert msgspec.json.decode(line, type=Activity) == activity
    csv_out = RecordEncoder("csv", Activity)
    text = (csv_out.begin() + csv_out.encode([activity])).decode()
    assert list(csv.reader(io.StringIO(text))) == [
        list(record_header(Activity)),
        record_row(activity),
    ]


def test_a_record_header_is_worked_out_once_per_type() -> None:
    """The header of a type is cached: every row of an export reuses the same tuple."""
    assert record_header(Activity) is record_header(Activity)
    assert record_header(ContactList) == tuple(
        field.name for field in msgspec.structs.fields(ContactList)
    )


def as_parsed(activity: Activity) -> Activity:
    """The record as a feed decoder hands it over (what XML can carry of it)."""
    return activity_from_entry(parse_xml(document(activity_entry(BASE, activity))))


@given(st.lists(s.activities().map(as_parsed), max_size=5))
def test_activity_records_survive_json_lines(activities: list[Activity]) -> None:
    """Hypothesis: hostile texts included, every record comes back equal."""
    data = RecordEncoder("jsonl", Activity).encode(activities)
    assert [msgspec.json.decode(line, type=Activity) for line in data.splitlines()] == activities


def test_a_feed_mixing_record_kinds_is_refused() -> None:
    """One collection, one kind: a CSV header cannot describe two."""
    lst = ContactList(id="7", name="A", short_name="A", updated=T0)
    member = ContactListMember(contact_id="1", email="a@x", name="", list_id="7", updated=T0)
    with pytest.raises(ProtocolError, match="mixes ContactList and ContactListMember"):
        RecordEncoder("csv", ContactList).encode([lst, member])


def test_every_column_has_a_header_the_lookup_finds() -> None:
    """The export headers written are names the import side reads back."""
    for column in COLUMNS:
        assert lookup_column(column.export_header) is column
