"""Export files in, CSV or JSON Lines out: the pure half of every export.

Three parts, all fed data and returning data (no IO, no clock):

* :class:`ExportCsvDecoder` — the file an ``EXPORT_CONTACTS`` activity produced (spec §7.9;
  CSV, or tab-separated TXT), decoded incrementally into :class:`ExportRow` records with the
  decoder protocol of :mod:`bulkops.stream` (``decode(bytes)`` / ``flush()``).
* Contact rows — :func:`export_columns` resolves the columns a user asks for, email first;
  :func:`header_projection` maps an export file's header onto them; :func:`contact_row` and
  :func:`fields_needing_detail` turn feed records (members, contacts) into the same rows.
* :class:`RowEncoder` and :class:`RecordEncoder` — rows and records to CSV or JSON Lines bytes.

Invariants of :class:`ExportCsvDecoder`:

* **Same rows as a whole-file** ``csv.reader`` for every split of the bytes, for any file
  ``csv.writer`` can write (RFC 4180: a field containing the delimiter, a quote or a line
  break is quoted and its quotes doubled). Text is decoded with an incremental UTF-8
  decoder (a BOM is dropped), so a character cut between pieces is never damaged.
* Records are cut only at a ``\\n`` outside quotes: the parity of the quotes seen so far
  tells (even = outside a quoted field). Each piece is scanned once, quote by quote, so the
  cost is O(bytes + quotes), never a rescan; the text held back is one incomplete record,
  bounded by ``max_record_chars``.
* Record numbers count like the wire's ``LineNumber``: the header is 1, the first row 2;
  blank records are counted and skipped.
* Not :class:`bulkops.stream.csv.CsvDecoder`: that one gives every record its lines and
  byte offsets (the import's outcome files need them) and reads about 0.2 M rows/s; handing
  whole runs of complete records to the C ``csv.reader``, this one reads about 1.3 M rows/s,
  and an export needs no offsets.

Output (both formats are UTF-8, one record per line):

* CSV (RFC 4180): a header line, minimal quoting, CRLF line ends — with CRLF both CR and LF
  make ``csv.writer`` quote a field, so a value holding a lone CR survives (with LF only, it
  would not on Python 3.11); contact rows use the title-case export headers
  (``Email Address``, ``First Name``, …).
* JSON Lines (LF line ends): contact rows are objects keyed by the same headers, every key
  on every line; records of other collections are their ``msgspec`` structs as JSON.
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import msgspec

from bulkops.errors import ProtocolError
from bulkops.wire.columns import COLUMNS, EMAIL_COLUMN, Column, lookup_column
from bulkops.wire.model import Contact, ContactListMember, FeedEntry

__all__ = [
    "DEFAULT_MAX_RECORD_CHARS",
    "FEED_FIELDS",
    "ExportCsvDecoder",
    "ExportRow",
    "OutputFormat",
    "RecordEncoder",
    "RowEncoder",
    "contact_row",
    "export_columns",
    "fields_needing_detail",
    "header_projection",
    "record_header",
    "record_row",
]

#: Default bound on one record of an export file, in characters held back while incomplete.
DEFAULT_MAX_RECORD_CHARS = 16 * 1024 * 1024

OutputFormat = Literal["csv", "jsonl"]


class ExportRow(msgspec.Struct, frozen=True):
    """One data record of an export file: its record number (header = 1) and its cells."""

    line: int
    values: list[str]


class ExportCsvDecoder:
    """Decode an export file (CSV or tab-separated TXT) incrementally.

    Args:
        delimiter: ``","`` for CSV files, ``"\\t"`` for TXT files.
        max_record_chars: the most characters one record may hold.
    """

    def __init__(
        self, *, delimiter: str = ",", max_record_chars: int = DEFAULT_MAX_RECORD_CHARS
    ) -> None:
        self._delimiter = delimiter
        self._max_record = max_record_chars
        self._text = codecs.getincrementaldecoder("utf-8-sig")(errors="strict")
        self._held: list[str] = []  # the incomplete last record, in pieces
        self._held_size = 0
        self._quoted = False  # an odd number of quotes seen: inside a quoted field
        self._records = 0
        self._header: tuple[str, ...] | None = None
        self._finished = False

    @classmethod
    def for_file_name(cls, name: str) -> ExportCsvDecoder:
        """A decoder for an export file by its name: tab-separated for ``.txt``, else CSV."""
        return cls(delimiter="\t" if name.lower().endswith(".txt") else ",")

    @property
    def header(self) -> tuple[str, ...] | None:
        """The header record, once read."""
        return self._header

    @property
    def records(self) -> int:
        """Records read so far, the header and blank records included."""
        return self._records

    def decode(self, data: bytes) -> list[ExportRow]:
        """Feed the next piece of the file; return the rows it completed.

        Raises:
            ProtocolError: the bytes are not UTF-8, a record exceeds ``max_record_chars``, or
                the decoder was flushed before.
        """
        if self._finished:
            raise ProtocolError("the export decoder was already flushed")
        try:
            text = self._text.decode(data)
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"the export file is not UTF-8: {exc}") from None
        if not text:
            return []
        cut = self._last_record_end(text)
        if cut < 0:
            self._hold(text)
            return []
        complete = "".join(self._held) + text[: cut + 1]
        self._held.clear()
        self._held_size = 0
        self._hold(text[cut + 1 :])
        return self._parse(complete)

    def flush(self) -> list[ExportRow]:
        """End of the file: return the last rows.

        Raises:
            ProtocolError: the file ends inside a character or inside a quoted field.
        """
        if self._finished:
            raise ProtocolError("the export decoder was already flushed")
        try:
            text = self._text.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"the export file is not UTF-8: {exc}") from None
        self._finished = True
        if text:
            self._last_record_end(text)  # for the quote parity
            self._held.append(text)
        if self._quoted:
            raise ProtocolError("the export file ends inside a quoted field")
        rest = "".join(self._held)
        self._held.clear()
        return self._parse(rest) if rest else []

    def _hold(self, text: str) -> None:
        if not text:
            return
        self._held.append(text)
        self._held_size += len(text)
        if self._held_size > self._max_record:
            raise ProtocolError(
                f"a record of the export file is longer than {self._max_record} characters"
            )

    def _last_record_end(self, text: str) -> int:
        """Index of the last ``\\n`` of ``text`` outside quotes (-1 if none); updates the
        quote parity to the end of ``text``."""
        quoted = self._quoted
        if '"' not in text:
            return -1 if quoted else text.rfind("\n")
        last = -1
        start = 0
        while True:
            quote = text.find('"', start)
            stop = len(text) if quote < 0 else quote
            if not quoted:
                found = text.rfind("\n", start, stop)
                if found >= 0:
                    last = found
            if quote < 0:
                break
            quoted = not quoted
            start = quote + 1
        self._quoted = quoted
        return last

    def _parse(self, complete: str) -> list[ExportRow]:
        rows: list[ExportRow] = []
        try:
            for values in csv.reader(io.StringIO(complete, newline=""), delimiter=self._delimiter):
                self._records += 1
                if not values:
                    continue
                if self._header is None:
                    self._header = tuple(values)
                    continue
                rows.append(ExportRow(self._records, values))
        except csv.Error as exc:
            raise ProtocolError(
                f"unreadable export file near record {self._records + 1}: {exc}"
            ) from None
        return rows


# ---------------------------------------------------------------------------------------------
# Contact rows: the columns of members, contacts and export files
# ---------------------------------------------------------------------------------------------

#: Contact fields each feed record carries (members: the address only; contacts in the
#: summary view: address and email type). Other columns need the full contact.
FEED_FIELDS: dict[type, frozenset[str]] = {
    ContactListMember: frozenset({"EmailAddress"}),
    Contact: frozenset({"EmailAddress", "EmailType"}),
}


def export_columns(names: Sequence[str] | None) -> tuple[Column, ...]:
    """The columns to export, email first, no repeats, in the order asked.

    Args:
        names: column names in any spelling :func:`bulkops.wire.columns.lookup_column`
            knows (``FIRST NAME``, ``First Name``, ``firstname``); ``["all"]`` or None for
            every column in export-file order.

    Raises:
        ValueError: a name that names no column.
    """
    if names is None or [n.strip().lower() for n in names] == ["all"]:
        return COLUMNS
    columns = [EMAIL_COLUMN]
    for name in names:
        if not name.strip():
            continue
        column = lookup_column(name)
        if column is None:
            raise ValueError(f"unknown column {name.strip()!r}")
        if column not in columns:
            columns.append(column)
    return tuple(columns)


def header_projection(header: Sequence[str], columns: Sequence[Column]) -> list[int]:
    """For each wanted column, the index of its cell in an export file's header.

    Raises:
        ProtocolError: the file lacks a wanted column.
    """
    where: dict[str, int] = {}
    for index, name in enumerate(header):
        column = lookup_column(name)
        if column is not None:
            where.setdefault(column.field, index)
    missing = [column.export_header for column in columns if column.field not in where]
    if missing:
        raise ProtocolError(f"the export file has no column {', '.join(missing)}")
    return [where[column.field] for column in columns]


def fields_needing_detail(kind: type, columns: Sequence[Column]) -> list[str]:
    """The fields of ``columns`` that records of ``kind`` do not carry."""
    carried = FEED_FIELDS.get(kind, frozenset())
    return [column.field for column in columns if column.field not in carried]


def contact_row(record: ContactListMember | Contact, columns: Sequence[Column]) -> list[str]:
    """The cells of a member or contact record under ``columns`` (``""`` where absent)."""
    if isinstance(record, ContactListMember):
        return [record.email if c.field == "EmailAddress" else "" for c in columns]
    fields = record.fields
    return [fields.get(column.field, "") for column in columns]


class RowEncoder:
    """Rows of strings under a fixed header, to CSV or JSON Lines bytes.

    Args:
        fmt: ``"csv"`` or ``"jsonl"``.
        header: the column names (CSV header line; JSON object keys).
    """

    def __init__(self, fmt: OutputFormat, header: Sequence[str]) -> None:
        self.format = fmt
        self.header = tuple(header)
        self._json = msgspec.json.Encoder()

    def begin(self) -> bytes:
        """What the file starts with: the header line for CSV, nothing for JSON Lines."""
        if self.format == "jsonl":
            return b""
        return _csv_bytes([self.header])

    def encode(self, rows: Iterable[Sequence[str]]) -> bytes:
        """The lines of ``rows``."""
        if self.format == "csv":
            return _csv_bytes(rows)
        header = self.header
        return self._json.encode_lines([dict(zip(header, row, strict=True)) for row in rows])


def _csv_bytes(rows: Iterable[Sequence[Any]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue().encode("utf-8")


# ---------------------------------------------------------------------------------------------
# Records of other collections (lists, activities, campaigns, events)
# ---------------------------------------------------------------------------------------------


@functools.cache
def record_header(kind: type[msgspec.Struct]) -> tuple[str, ...]:
    """CSV header of a record type: its attribute names, in definition order.

    Cached: ``msgspec.structs.fields`` evaluates the type's (string) annotations on every
    call, which made it two thirds of the cost of :func:`record_row`.
    """
    return tuple(field.name for field in msgspec.structs.fields(kind))


def _cell(value: object) -> str:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return msgspec.json.encode(value).decode("utf-8")


def record_row(record: FeedEntry) -> list[str]:
    """A record as CSV cells under :func:`record_header`: times as RFC 3339 (as in JSON),
    booleans ``true``/``false``, None empty, nested values (errors, links, fields) as JSON."""
    data = msgspec.to_builtins(record)
    return [_cell(data[name]) for name in record_header(type(record))]


class RecordEncoder:
    """Records of one kind, to CSV (flattened by :func:`record_row`) or JSON Lines.

    Args:
        fmt: ``"csv"`` or ``"jsonl"``.
        kind: the record type every record must have.
    """

    def __init__(self, fmt: OutputFormat, kind: type[msgspec.Struct]) -> None:
        self.format = fmt
        self.kind = kind
        self._json = msgspec.json.Encoder()

    def begin(self) -> bytes:
        """The header line for CSV, nothing for JSON Lines."""
        return b"" if self.format == "jsonl" else _csv_bytes([record_header(self.kind)])

    def encode(self, records: Sequence[FeedEntry]) -> bytes:
        """The lines of ``records``.

        Raises:
            ProtocolError: a record of another kind (the feed mixes kinds).
        """
        for record in records:
            if type(record) is not self.kind:
                raise ProtocolError(
                    f"the feed mixes {self.kind.__name__} and {type(record).__name__} entries"
                )
        if self.format == "jsonl":
            return self._json.encode_lines(records)
        return _csv_bytes(record_row(record) for record in records)
