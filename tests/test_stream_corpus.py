"""The corpus of awkward files: each gives the right rows, or an error naming line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulkops.errors import InputError
from bulkops.stream import Chunk, Duplicate, Event, Pipeline, PipelineOptions, Rejected
from tests.stream_strategies import data_rows, form_fields

CORPUS = Path(__file__).parent / "corpus"
LISTS = ("http://api.constantcontact.com/ws/customers/joe/lists/7",)


def read(name: str, **options: object) -> list[Event]:
    raw = (CORPUS / name).read_bytes()
    pipeline = Pipeline(PipelineOptions(lists=LISTS, min_rows=1, **options))  # type: ignore[arg-type]
    events: list[Event] = []
    for start in range(0, len(raw), 7):  # awkward pieces on purpose
        events += pipeline.decode(raw[start : start + 7])
    return events + pipeline.flush()


def sent(events: list[Event]) -> list[list[str]]:
    """The data rows of every chunk, header lines included, as the server reads them."""
    rows: list[list[str]] = []
    for event in events:
        if isinstance(event, Chunk):
            rows += data_rows(form_fields(event)["data"][0])
    return rows


def problems(events: list[Event]) -> list[tuple[str, int, str | None, str]]:
    out = []
    for e in events:
        if isinstance(e, Rejected):
            out.append(("rejected", e.line, e.field, e.reason))
        elif isinstance(e, Duplicate):
            out.append(("duplicate", e.line, None, f"replaced by line {e.replaced_by}"))
    return out


@pytest.mark.parametrize(
    ("name", "options", "rows"),
    [
        (
            "bom-utf8-crlf.csv",
            {},
            [
                ["EMAIL ADDRESS", "FIRST NAME", "LAST NAME"],
                ["ana@example.org", "Ana", "Díaz"],
                ["bo@example.org", "Bo", "Chen"],
            ],
        ),
        (
            "cp1252-semicolon.csv",
            {"encoding": "cp1252"},
            [
                ["EMAIL ADDRESS", "FIRST NAME", "LAST NAME", "ZIP/POSTAL CODE"],
                ["zoe@example.de", "Zoë", "Müller", "80331"],
                ["joerg@example.de", "Jörg", "Gößling", "10115"],
                ["euro@example.de", "€uro", "Straße", "01067"],
            ],
        ),
        (
            "utf16-excel-unicode.txt",
            {},
            [
                ["EMAIL ADDRESS", "FIRST NAME", "CITY"],
                ["ana@example.org", "Ana", "Montréal"],
                ["李@example.org", "李", "北京"],
                ["bo@example.org", "Bo", "Zürich"],
            ],
        ),
        (
            "quoted-newlines.csv",
            {},
            [
                ["EMAIL ADDRESS", "COMPANY NAME", "ADDRESS LINE 1", "NOTE"],
                ["ana@example.org", "Acme, Inc.", "12 Main St\nSuite 5", 'She said "hi"'],
                ["bo@example.org", "Globex", "1 Elm St\r\nFloor 2\r\nBack door", ""],
                ["cy@example.org", "Initech", "", "plain"],
            ],
        ),
        (
            "headers-french.csv",
            {},
            [
                ["EMAIL ADDRESS", "FIRST NAME", "LAST NAME", "ZIP/POSTAL CODE", "CITY"],
                ["ana@example.fr", "Anaïs", "Dupont", "75001", "Paris"],
            ],
        ),
        (
            "headers-spanish-german.csv",
            {},
            [
                ["EMAIL ADDRESS", "FIRST NAME", "LAST NAME", "COMPANY NAME", "CITY"],
                ["ana@example.es", "Ana", "García López", "Acme", "Madrid"],
            ],
        ),
        (
            "headers-other-cases.csv",
            {},
            [
                [
                    "EMAIL ADDRESS",
                    "FIRST NAME",
                    "LAST NAME",
                    "ZIP/POSTAL CODE",
                    "US STATE/CA PROVINCE",
                    "CUSTOM FIELD 3",
                ],
                ["ana@example.org", "Ana", "Diaz", "02134", "MA", "gold"],
            ],
        ),
        (
            "mac-cr.csv",
            {},
            [
                ["EMAIL ADDRESS", "FIRST NAME"],
                ["ana@example.org", "Ana"],
                ["bo@example.org", "Bo"],
            ],
        ),
        (
            "excel-sep-line.csv",
            {},
            [["EMAIL ADDRESS", "FIRST NAME", "CITY"], ["ana@example.org", "Ana", "Boston, MA"]],
        ),
        (
            "blank-lines.csv",
            {},
            [["EMAIL ADDRESS", "FIRST NAME"], ["ana@example.org", "Ana"], ["bo@example.org", "Bo"]],
        ),
        (
            "contacts-plain.xml",
            {},
            [
                ["EMAIL ADDRESS", "FIRST NAME", "US STATE/CA PROVINCE", "CUSTOM FIELD 3"],
                ["ana@example.org", "Ana", "", "gold"],
                ["bo@example.org", "", "ON", ""],
            ],
        ),
    ],
)
def test_awkward_files_give_the_right_rows(
    name: str, options: dict[str, object], rows: list[list[str]]
) -> None:
    """Encodings, line ends, quoting, aliases: the server receives exactly these values."""
    events = read(name, **options)
    assert sent(events) == rows
    if name != "contacts-plain.xml":
        assert problems(events) == []


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "cp1252-read-as-utf8.csv",
            [("rejected", 3, "First Name", "byte 0xEB is not valid utf-8 text")],
        ),
        (
            "nul-bytes.csv",
            [("rejected", 3, "First Name", "contains the control character U+0000")],
        ),
        (
            "ragged-rows.csv",
            [
                ("rejected", 3, None, "the row has 2 fields; the header has 3"),
                ("rejected", 4, None, "the row has 4 fields; the header has 3"),
            ],
        ),
        (
            "duplicates.csv",
            [
                ("duplicate", 2, None, "replaced by line 4"),
                ("duplicate", 3, None, "replaced by line 5"),
            ],
        ),
        (
            "invalid-rows.csv",
            [
                ("rejected", 3, "Email", 'Invalid email address "not-an-email"'),
                ("rejected", 4, "Email", 'Invalid email address "cy@example"'),
                ("rejected", 5, "State/Province", 'Unknown US/Canadian state/prov "ZZ"'),
                ("rejected", 6, "First Name", "FIRST NAME is longer than 50 characters"),
                ("rejected", 7, "Zip", "ZIP/POSTAL CODE is longer than 25 characters"),
                ("rejected", 8, "Email", "Email address is missing"),
            ],
        ),
        (
            "unterminated-quote.csv",
            [("rejected", 3, None, "a quoted field is not closed before the end of the file")],
        ),
        (
            "contacts-plain.xml",
            [("rejected", 8, "EmailAddress", 'Invalid email address "bad@@example.org"')],
        ),
    ],
)
def test_bad_rows_are_rejected_with_line_field_and_reason(
    name: str, expected: list[tuple[str, int, str | None, str]]
) -> None:
    """The other rows go on; each bad one says where and why."""
    got = problems(read(name))
    assert [(kind, line, field) for kind, line, field, _ in got] == [
        (kind, line, field) for kind, line, field, _ in expected
    ]
    for (*_, reason), (*_, words) in zip(got, expected, strict=True):
        assert words in reason


@pytest.mark.parametrize(
    ("name", "line", "field", "words"),
    [
        ("no-email-column.csv", 1, None, "no email address column"),
        ("hostile-entity.xml", 2, None, "DOCTYPE"),
    ],
)
def test_files_that_cannot_be_read_name_the_line(
    name: str, line: int, field: str | None, words: str
) -> None:
    """Whole-file problems are InputErrors with the line (and the field when there is one)."""
    with pytest.raises(InputError) as caught:
        read(name)
    assert (caught.value.line, caught.value.field) == (line, field)
    assert words in caught.value.message


def test_a_ten_megabyte_field_is_rejected_without_being_held() -> None:
    """A 10 MB quoted note: one rejection naming its line and column; the rest goes on."""
    note = b'"' + b"lorem ipsum\n" * (10 * 1024 * 1024 // 12) + b'"'
    raw = b"Email,Notes,First Name\na@x.org,short,A\nb@x.org," + note + b",B\nc@x.org,,C\n"
    pipeline = Pipeline(PipelineOptions(lists=LISTS, min_rows=1))
    events: list[Event] = []
    for start in range(0, len(raw), 1 << 16):
        events += pipeline.decode(raw[start : start + (1 << 16)])
        assert len(pipeline._source._buf) <= (2 << 20)  # type: ignore[union-attr]  # never the field
    events += pipeline.flush()
    (rejected,) = [e for e in events if isinstance(e, Rejected)]
    assert (rejected.line, rejected.field) == (3, "Notes")
    assert rejected.reason == "the record is longer than 1048576 bytes"
    assert rejected.end_offset - rejected.start_offset == len(b"b@x.org,") + len(note) + 3
    (chunk,) = [e for e in events if isinstance(e, Chunk)]
    assert chunk.lines.tolist() == [2, 3 + note.count(b"\n") + 1]
