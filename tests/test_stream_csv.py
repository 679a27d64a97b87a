"""The incremental CSV decoder: the stdlib's reading, lines and offsets, any split."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bulkops.errors import ConfigError
from bulkops.stream.csv import (
    CsvDecoder,
    Record,
    RecordSkipper,
    normalize_delimiter,
    parse_record,
    sniff_delimiter,
)
from tests.stream_strategies import (
    cuts,
    export_files,
    lenient_documents,
    pieces,
    rfc4180_documents,
    stdlib_records,
)


def decode_all(data: bytes, points: list[int] | None = None, **options: object) -> list[Record]:
    decoder = CsvDecoder(**options)  # type: ignore[arg-type]
    records: list[Record] = []
    for piece in pieces(data, points or []):
        records += decoder.decode(piece)
    return records + decoder.flush()


@given(st.data(), rfc4180_documents())
def test_reads_any_rfc4180_document_as_the_stdlib_does(data: st.DataObject, doc: object) -> None:
    """Fields and start lines equal csv.reader's, whatever the pieces fed."""
    text, _records = doc  # type: ignore[misc]
    raw = text.encode("utf-8")
    records = decode_all(raw, data.draw(cuts(raw)), delimiter=",")
    expected = stdlib_records(text)
    assert [(r.line, list(r.fields)) for r in records] == expected
    assert all(r.error is None for r in records)


@given(st.data(), rfc4180_documents(delimiter=";"))
def test_reads_other_delimiters_as_the_stdlib_does(data: st.DataObject, doc: object) -> None:
    """A semicolon file reads like csv.reader(delimiter=';')."""
    text, _ = doc  # type: ignore[misc]
    raw = text.encode("utf-8")
    records = decode_all(raw, data.draw(cuts(raw)), delimiter=";")
    assert [(r.line, list(r.fields)) for r in records] == stdlib_records(text, ";")


@given(st.data(), lenient_documents)
@example(None, 'a"b,c\n"x"y\r\nz')
def test_reads_stray_quotes_and_bare_crs_as_the_stdlib_does(
    data: st.DataObject | None, text: str
) -> None:
    """Quotes inside unquoted fields, text after a closing quote, CR line ends: as stdlib."""
    raw = text.encode("utf-8")
    points = data.draw(cuts(raw)) if data is not None else []
    records = decode_all(raw, points, delimiter=",")
    expected = [fields for _line, fields in stdlib_records(text)]
    assert [list(r.fields) for r in records] == expected


@given(st.data(), export_files())
def test_reads_export_shaped_files_as_the_stdlib_does(data: st.DataObject, raw: bytes) -> None:
    """Quoted commas, doubled quotes, CRLF inside and after quoted fields, multi-line
    records, other scripts, a stray quote: fields and start lines as csv.reader's."""
    text = raw.decode("utf-8")
    records = decode_all(raw, data.draw(cuts(raw)), delimiter=",")
    assert [(r.line, list(r.fields)) for r in records] == stdlib_records(text)
    assert decode_all(raw, list(range(1, len(raw))), delimiter=",") == decode_all(raw)


@given(st.data(), lenient_documents)
def test_every_split_gives_the_same_records(data: st.DataObject, text: str) -> None:
    """Whole, one byte at a time, or at random cuts: the same records."""
    raw = text.encode("utf-8")
    whole = decode_all(raw, delimiter=",")
    assert decode_all(raw, list(range(1, len(raw))), delimiter=",") == whole
    assert decode_all(raw, data.draw(cuts(raw)), delimiter=",") == whole


@given(lenient_documents)
def test_offsets_tile_the_input_and_slice_back_to_the_record(text: str) -> None:
    """Records are contiguous byte ranges of the source; each range reads as its record."""
    raw = text.encode("utf-8")
    records = decode_all(raw, delimiter=",")
    position = 0
    for record in records:
        assert record.start_offset == position
        again = decode_all(raw[record.start_offset : record.end_offset], delimiter=",")
        assert [r.fields for r in again] == [record.fields]
        position = record.end_offset
    assert position == len(raw)


def test_lines_count_cr_lf_and_crlf_once_each_inside_quotes_too() -> None:
    """Physical lines: CR, LF and CRLF each end one, quoted or not."""
    raw = b'h\r\n"a\r\nb"\n"c\rd"\re\n'
    records = decode_all(raw, delimiter=",")
    assert [(r.line, r.fields) for r in records] == [
        (1, ("h",)),
        (2, ("a\r\nb",)),
        (4, ("c\rd",)),
        (6, ("e",)),
    ]


def test_a_bom_is_skipped_but_counted_in_offsets() -> None:
    """UTF-8 with a byte-order mark: same fields, offsets of the source."""
    records = decode_all(b"\xef\xbb\xbfEmail\na@x.org\n")
    assert [r.fields for r in records] == [("Email",), ("a@x.org",)]
    assert (records[0].start_offset, records[1].start_offset) == (3, 9)


def test_utf16_with_bom_decodes_with_source_offsets() -> None:
    """UTF-16 LE with a mark: the text, and offsets in UTF-16 bytes."""
    raw = "\ufeffEmail\tName\r\nzoë@x.org\tZoë\r\n".encode("utf-16-le")
    records = decode_all(raw, list(range(1, len(raw), 3)))
    assert [r.fields for r in records] == [("Email", "Name"), ("zoë@x.org", "Zoë")]
    assert records[1].start_offset == 2 + 2 * len("Email\tName\r\n")
    assert records[1].end_offset == len(raw)


def test_cp1252_is_read_when_named() -> None:
    """cp1252 bytes (é = 0xE9, € = 0x80) decode when the encoding is given."""
    raw = "Email;Name\r\nx@y.fr;Zoé €\r\n".encode("cp1252")
    records = decode_all(raw, encoding="cp1252")
    assert records[1].fields == ("x@y.fr", "Zoé €")
    assert records[1].end_offset == len(raw)


def test_bytes_that_are_not_utf8_mark_the_record_not_the_file() -> None:
    """A cp1252 byte in a UTF-8 file: that record has an error, the others read."""
    records = decode_all(b"a,b\nZo\xe9,x\nc,d\n")
    assert [r.error is None for r in records] == [True, False, True]
    assert "utf-8" in (records[1].error or "")


def test_an_unterminated_quote_is_an_error_at_its_line() -> None:
    """A quoted field still open at the end: the stdlib's fields, plus an error."""
    records = decode_all(b'a,b\n"open,\nnever closed')
    assert records[-1].line == 2
    assert records[-1].fields == ("open,\nnever closed",)
    assert "not closed" in (records[-1].error or "")


@pytest.mark.parametrize("chunk", [1 << 20, 65536, 7])
def test_a_record_too_long_is_skipped_with_its_line_whatever_the_pieces(chunk: int) -> None:
    """A 10 MB quoted field: not buffered, reported once, the next record reads."""
    big = b'a,"' + b"x\n" * (5 * 1024 * 1024) + b'"\n'
    raw = b"h1,h2\n" + big + b"b,c\n"
    points = list(range(chunk, len(raw), chunk)) if chunk > 7 else list(range(7, 4096, 7))
    records = decode_all(raw, points, delimiter=",", max_record_bytes=1024 * 1024)
    assert [r.line for r in records] == [1, 2, 2 + 5 * 1024 * 1024 + 1]
    assert records[1].fields == ()
    assert records[1].error == (
        "the record is longer than 1048576 bytes (field 2 reaches the limit)"
    )
    assert (records[1].start_offset, records[1].end_offset) == (6, 6 + len(big))
    assert records[2].fields == ("b", "c")


@given(lenient_documents, st.integers(min_value=1, max_value=12))
def test_skipping_finds_the_record_end_the_parser_finds(text: str, step: int) -> None:
    """RecordSkipper, fed in pieces, ends each record where parse_record does."""
    raw = text.encode("utf-8")
    pos = 0
    while pos < len(raw):
        parsed = parse_record(raw, pos, b",", final=True)
        assert parsed is not None
        skipper = RecordSkipper(b",")
        offset = pos
        end = None
        while end is None:
            piece = raw[offset : offset + step]
            final = offset + step >= len(raw)
            found = skipper.feed(piece, final=final)
            end = None if found is None else offset + found
            offset += len(piece)
        assert (end, skipper.breaks) == (parsed.end, parsed.breaks)
        pos = parsed.end


def test_an_incomplete_record_waits_for_more_input() -> None:
    """No line break yet, a CR that may be half a CRLF, an open quote: None until final."""
    for partial in (b"a,b", b"a,b\r", b'"a\n', b'"a"'):
        assert parse_record(partial, 0, b",", final=False) is None
        assert parse_record(partial, 0, b",", final=True) is not None


@pytest.mark.parametrize(
    ("header", "delimiter"),
    [
        (b"Email,Name,Zip", b","),
        (b"Email;Name;Zip", b";"),
        (b"Email\tName\tZip", b"\t"),
        (b"Email|Name|Zip", b"|"),
        (b'"Name; first",Email', b","),
        (b"Email", b","),
        (b"a;b,c;d", b";"),
    ],
)
def test_the_delimiter_is_the_most_frequent_candidate_outside_quotes(
    header: bytes, delimiter: bytes
) -> None:
    """Comma, semicolon, tab or pipe: counted outside quoted sections; commas win ties."""
    assert sniff_delimiter(header) == delimiter


def test_the_sniffed_delimiter_is_used_for_every_record() -> None:
    """A semicolon header makes the whole file semicolon-separated."""
    decoder = CsvDecoder()
    records = decoder.decode(b"Email;Name\nx@y.org;A, B\n") + decoder.flush()
    assert decoder.delimiter == ";"
    assert records[1].fields == ("x@y.org", "A, B")


@pytest.mark.parametrize("bad", ['"', "\n", "ab", "", "é"])
def test_a_bad_delimiter_is_a_config_error(bad: str) -> None:
    """Only one ASCII character that is not a quote or a line break."""
    with pytest.raises(ConfigError):
        normalize_delimiter(bad)


def test_nul_bytes_are_characters_as_for_the_stdlib() -> None:
    """NUL is a character in a field (rejecting it is the validator's job)."""
    raw = "a\x00b,c\r\n"
    records = decode_all(raw.encode(), delimiter=",")
    assert [list(r.fields) for r in records] == list(csv.reader(io.StringIO(raw, newline="")))
