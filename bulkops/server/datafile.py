"""Activity request bodies: form decoding, the ``data`` file, and the record the worker runs.

``POST /activities`` carries a form (spec §7.3), urlencoded or multipart; its ``data`` field is
a small CSV file (spec §7.4). This module turns the request body into an
:class:`ActivityRequest` — everything the worker needs, encoded with msgspec into
``activity_request`` — or raises :class:`RequestProblem` with the short message of a 400.

Invariants:

* Pure and synchronous (no IO, no clock); the handler runs it in a worker thread, since a
  4 MB ``data`` takes tens of milliseconds to decode.
* Forms are decoded by the activity form codec (:mod:`bulkops.wire.forms`: ``parse_qsl`` for
  urlencoded, python-multipart's push parser for multipart) from the bytes already read
  under the body limit, so no limit can be bypassed; the number of fields is bounded too.
* ``data`` records are numbered as the wire does (``LineNumber``): the header record is 1 and
  the first data record 2; a newline inside a quoted field does not start a new number, a
  blank line does.
* The records are stored by column (:attr:`ActivityRequest.columns`), one cell per non-blank
  record, each record padded or cut to the header's width: the worker then trims, checks
  and loads whole columns at C speed, and decoding a stored request makes a few dozen lists,
  not one per row (which would also wake the garbage collector over and over).
* Header names are matched with :func:`bulkops.wire.columns.lookup_column` (case, spaces,
  punctuation and the aliases of §7.4 do not matter). Empty header cells are ignored, with
  their column; an unknown or repeated name, or no email column, is a 400. A stored request
  holds only the named columns (:func:`parse_activity_form` drops the ignored ones).
* Padding costs nothing: memory is O(bytes of ``data`` + records × named columns), whatever
  the header's or a record's width. A record wider than the header is cut as it is read (to
  the header's width plus one cell saying whether anything non-blank was cut); a record with
  a non-blank cell past the header is a row error ("more values than the header has
  columns"), trailing empty cells are not. Ignored columns share one empty cell list.
* Row values are stored as sent (the worker trims them); row problems are the worker's
  business, never a 400.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from itertools import compress, islice
from operator import itemgetter
from urllib.parse import unquote, urlsplit

import attrs
import msgspec

from bulkops.wire.activity import DATA_TYPES, ActivityType, Field
from bulkops.wire.columns import EMAIL_COLUMN, lookup_column
from bulkops.wire.forms import MAX_FORM_FIELDS, Form, FormError, decode_form
from bulkops.wire.uris import SYSTEM_LISTS, list_id_from_uri

__all__ = [
    "ActivityCannotRun",
    "ActivityRequest",
    "DataTable",
    "ExportRequest",
    "ParsedData",
    "RequestProblem",
    "decode_request",
    "encode_request",
    "parse_activity_form",
    "parse_data",
    "parse_form",
    "tabulate",
]

FILE_TYPES = ("CSV", "TXT")
_MAX_ID = 2**63 - 1  # a bigger number names no row (and would not fit SQLite)
SORT_ORDERS = ("EMAIL_ADDRESS", "DATE_DESC")


class RequestProblem(Exception):
    """The request is unacceptable: answer ``status`` with ``message`` (a 400, 403 or 404)."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ActivityCannotRun(Exception):
    """An activity as a whole cannot run (its list is gone, its request unreadable): ERROR."""


class ExportRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What an ``EXPORT_CONTACTS`` activity writes.

    Attributes:
        list_id: a numeric list id or a system list (``active``, ``removed``, ``do-not-mail``).
        file_type: ``CSV`` or ``TXT`` (tab-separated).
        fields: ``Contact`` fields of the requested columns, email first, no repeats.
        opt_date: add the "Date Added" (or "Date Removed") column.
        opt_source: add the "Added By" (or "Removed By") column.
        list_names: add one ``List: {ShortName}`` column per user list.
        sort_by: ``EMAIL_ADDRESS`` (ascending) or ``DATE_DESC`` (newest first).
    """

    list_id: str
    file_type: str
    fields: tuple[str, ...]
    opt_date: bool = False
    opt_source: bool = False
    list_names: bool = False
    sort_by: str = "EMAIL_ADDRESS"


class ActivityRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the worker needs to run one activity; stored in ``activity_request``.

    Attributes:
        type: the requested type (an :class:`~bulkops.wire.activity.ActivityType` value).
        list_ids: the numeric ids of ``lists`` (add, remove, clear), in request order.
        fields: for each ``data`` column, the ``Contact`` field it fills, ``""`` for an
            ignored (empty) header cell.
        columns: for each ``data`` column, the cell of every non-blank record after the
            header, as sent (a short record's missing cells are ``""``); ``[]`` for an
            ignored column.
        lines: the ``LineNumber`` of each non-blank record; empty when they are 2, 3, 4, …
            (no blank record in between).
        overflowing: positions (in ``columns``) of the records that had non-blank cells
            past the header's width (those cells are dropped).
        rows: the records as sent, ``[]`` for a blank one — how requests stored by earlier
            versions hold them (new requests use ``columns``); record ``i`` is line ``i + 2``.
        export: the export settings, for ``EXPORT_CONTACTS`` only.
    """

    type: str
    list_ids: tuple[int, ...] = ()
    fields: tuple[str, ...] = ()
    columns: list[Sequence[str]] = msgspec.field(default_factory=list)
    lines: list[int] = msgspec.field(default_factory=list)
    overflowing: list[int] = msgspec.field(default_factory=list)
    rows: list[list[str]] = msgspec.field(default_factory=list)
    export: ExportRequest | None = None

    def table(self) -> DataTable:
        """The ``data`` records by column (converted from ``rows`` for an old request)."""
        if self.rows or not self.columns:
            return tabulate(self.rows, self.fields)
        return DataTable(
            columns=_trimmed(self.columns),
            lines=self.lines or range(2, 2 + _record_count(self.columns)),
            overflowing=frozenset(self.overflowing),
        )

    @property
    def column_count(self) -> int:
        """The number of recognised ``data`` columns (what decides the reported type)."""
        return sum(1 for field in self.fields if field)


@attrs.frozen
class DataTable:
    """``data`` records by column, as the worker checks and applies them.

    Attributes:
        columns: per ``data`` column, the trimmed cell of each non-blank record (``[]`` for an
            ignored column); every other column has one cell per record.
        lines: the ``LineNumber`` of each record (``lines[at]`` for ``columns[i][at]``).
        overflowing: positions of the records that had non-blank cells past the header.
    """

    columns: list[Sequence[str]]
    lines: Sequence[int]
    overflowing: frozenset[int]


def _record_count(columns: list[Sequence[str]]) -> int:
    return max(map(len, columns), default=0)


def tabulate(records: list[list[str]], fields: Sequence[str]) -> DataTable:
    """Records (``[]`` for a blank one; record ``i`` is line ``i + 2``) as trimmed columns.

    Blank records — none or only whitespace cells — are left out; the others are padded with
    ``""`` or cut to ``len(fields)`` cells, and every cell of a used column is trimmed.
    """
    lines, kept = _non_blank(records)
    table = _by_column(kept, fields)
    return DataTable(
        columns=_trimmed(table.columns),
        lines=lines or table.lines,
        overflowing=table.overflowing,
    )


def _trimmed(columns: list[Sequence[str]]) -> list[Sequence[str]]:
    # By column, at C speed: a stored column's cells lie together in memory.
    return [list(map(str.strip, column)) for column in columns]


#: The cells of an ignored column: one shared empty sequence, not a list per column (a header
#: of a million commas would otherwise cost 56 MB of empty lists).
_NO_CELLS: Sequence[str] = ()


def _by_column(records: Sequence[Sequence[str]], fields: Sequence[str]) -> DataTable:
    """Non-blank records as columns, cells as sent (lines 2, 3, … — the caller sets others).

    O(cells sent + records × used columns): a record is never padded to the header's width,
    which empty header cells can make as wide as the ``data`` limit allows (a few bytes of
    commas would otherwise cost a pointer per record and column).
    """
    width = len(fields)
    overflowing: set[int] = set()
    columns: list[Sequence[str]] = [_NO_CELLS] * width
    if not records:
        return DataTable(columns=columns, lines=range(2, 2), overflowing=frozenset())
    shortest = min(map(len, records))
    if max(map(len, records)) > width:
        overflowing.update(
            at
            for at, record in enumerate(records)
            if len(record) > width and any(cell.strip() for cell in islice(record, width, None))
        )
    for i in compress(range(width), fields):  # the named columns, skipped over at C speed
        if i < shortest:  # every record has this cell: at C speed
            columns[i] = list(map(itemgetter(i), records))
        else:
            columns[i] = [record[i] if i < len(record) else "" for record in records]
    return DataTable(
        columns=columns, lines=range(2, 2 + len(records)), overflowing=frozenset(overflowing)
    )


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ActivityRequest)


def encode_request(request: ActivityRequest) -> bytes:
    """The stored form of a request."""
    return _encoder.encode(request)


def decode_request(blob: bytes) -> ActivityRequest:
    """A stored request back.

    Raises:
        msgspec.DecodeError: the blob is not an encoded :class:`ActivityRequest`.
    """
    return _decoder.decode(blob)


# -- forms ------------------------------------------------------------------------------------


def parse_form(body: bytes, content_type: str) -> Form:
    """Decode a urlencoded or multipart form (:func:`bulkops.wire.forms.decode_form`).

    Args:
        body: the whole request body.
        content_type: the request's ``Content-Type`` header, parameters included.

    Raises:
        RequestProblem: a malformed body, text that is not UTF-8, too many fields.
    """
    try:
        return decode_form(body, content_type, max_fields=MAX_FORM_FIELDS)
    except FormError as exc:
        raise RequestProblem(str(exc)) from None


# -- data -------------------------------------------------------------------------------------


class ParsedData(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed ``data`` field: the field of each column and the data records by column.

    ``fields[i]`` is the ``Contact`` field of column ``i`` (``""`` for an ignored empty header
    cell); ``columns``, ``lines`` and ``overflowing`` as in :class:`ActivityRequest`;
    ``row_count`` counts the (non-blank) records.
    """

    fields: tuple[str, ...]
    columns: list[Sequence[str]]
    lines: list[int]
    overflowing: list[int]
    row_count: int


def parse_data(text: str, *, max_rows: int) -> ParsedData:
    """Parse ``data``: a header record, then one record per contact.

    Quoted fields may hold commas, quotes (doubled) and newlines; records end with CRLF, LF
    or CR; spaces after a comma are skipped. A leading byte-order mark is ignored.

    Raises:
        RequestProblem: no header, an unknown or repeated column, no email column, more than
            ``max_rows`` non-blank data records, or CSV the reader rejects.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True)
    try:
        header = next(reader, None)
        if header is None or not any(cell.strip() for cell in header):
            raise RequestProblem("data is empty: it needs a header line naming its columns")
        fields = _header_fields(header)
        width = len(fields)
        records: list[list[str]] = []
        append = records.append
        try:
            for record in reader:  # a wide record is cut before the next one is read
                if len(record) > width + 1:
                    _cut_wide(record, width)
                append(record)
        except csv.Error:
            # Too many rows before the unreadable record is what a record-by-record reader
            # would have said first.
            _check_row_count(len(_non_blank(records)[1]), max_rows)
            raise
    except csv.Error as exc:
        raise RequestProblem(f"data is not readable CSV ({exc})") from None
    lines, records = _non_blank(records)
    _check_row_count(len(records), max_rows)
    table = _by_column(records, fields)
    del records
    return ParsedData(
        fields=fields,
        columns=table.columns,
        lines=lines,
        overflowing=sorted(table.overflowing),
        row_count=len(table.columns[fields.index(EMAIL_COLUMN.field)]),
    )


def _cut_wide(record: list[str], width: int) -> None:
    """Cut a record to ``width + 1`` cells, in place.

    The last cell kept stands for everything cut: the first non-blank cell past the header,
    or ``""`` when there was none; so whether the record is blank, and whether it overflows
    the header, read the same before and after.
    """
    tail = next(filter(None, map(str.strip, islice(record, width, None))), "")
    del record[width:]
    record.append(tail)


def _check_row_count(count: int, max_rows: int) -> None:
    if count > max_rows:
        raise RequestProblem(
            f"data has more than {max_rows} rows; split it into several activities"
        )


def _non_blank(records: list[list[str]]) -> tuple[list[int], list[list[str]]]:
    """The non-blank records (a blank one has no cell but whitespace) and their lines.

    The lines are ``[]`` when they are 2, 3, 4, … — no blank record in between, the usual
    case, found at C speed from the first cells.
    """
    if all(records) and all(map(str.strip, map(itemgetter(0), records))):
        return [], records
    lines: list[int] = []
    kept: list[list[str]] = []
    for index, record in enumerate(records):
        if any(cell.strip() for cell in record):
            lines.append(index + 2)
            kept.append(record)
    if lines and lines[-1] == len(lines) + 1:
        lines = []
    return lines, kept


def _header_fields(header: list[str]) -> tuple[str, ...]:
    # Python-level work only for the named cells; the empty ones are skipped at C speed.
    names = list(map(str.strip, header))
    fields = [""] * len(names)
    seen: dict[str, str] = {}
    for i in compress(range(len(names)), names):
        name = names[i]
        column = lookup_column(name)
        if column is None:
            raise RequestProblem(
                f'Unknown column "{name}" in data; use column names like EMAIL ADDRESS, '
                "FIRST NAME, LAST NAME"
            )
        if column.field in seen:
            raise RequestProblem(
                f'Columns "{seen[column.field]}" and "{name}" both name {column.name}'
            )
        seen[column.field] = name
        fields[i] = column.field
    if EMAIL_COLUMN.field not in seen:
        raise RequestProblem("data has no email address column (EMAIL ADDRESS)")
    return tuple(fields)


# -- the whole form ---------------------------------------------------------------------------


def _flag(form: Form, name: str) -> bool:
    value = form.first(name)
    if value is None or not value.strip():
        return False
    folded = value.strip().lower()
    if folded in ("true", "yes", "1", "on"):
        return True
    if folded in ("false", "no", "0", "off"):
        return False
    raise RequestProblem(f'{name} must be true or false, not "{value}"')


def _check_owner(uri: str, username: str | None) -> None:
    """403 for a list URI whose path names another account (``/customers/alice/lists/…`` in a
    request of bob's): it would otherwise be read as bob's list of the same id or name."""
    if username is None:
        return
    parts = urlsplit(uri.strip()).path.split("/")
    for at, part in enumerate(parts[:-1]):
        if part == "customers" and unquote(parts[at + 1]).lower() != username.lower():
            raise RequestProblem(
                f'The list URI "{uri.strip()[:200]}" names another account\'s list', status=403
            )


def _user_list_ids(
    form: Form, activity_type: ActivityType, username: str | None = None
) -> tuple[int, ...]:
    uris = [uri for uri in form.all(Field.LISTS) if uri.strip()]
    if not uris:
        raise RequestProblem(f"{activity_type} needs at least one list URI in lists")
    ids: list[int] = []
    for uri in uris:
        _check_owner(uri, username)
        found = list_id_from_uri(uri)
        if found is None:
            raise RequestProblem(f'Malformed list URI "{uri.strip()}" in lists')
        if found in SYSTEM_LISTS:
            raise RequestProblem(
                f'The system list "{found}" cannot be used in lists; name a contact list'
            )
        number = int(found)
        if number > _MAX_ID:
            raise RequestProblem(f"List {found} does not exist", status=404)
        if number not in ids:
            ids.append(number)
    return tuple(ids)


def _export_request(form: Form, username: str | None = None) -> ExportRequest:
    uri = form.first(Field.LIST_ID)
    if uri is None or not uri.strip():
        raise RequestProblem("EXPORT_CONTACTS needs the list URI to export in listId")
    _check_owner(uri, username)
    list_id = list_id_from_uri(uri)
    if list_id is None:
        raise RequestProblem(f'Malformed list URI "{uri.strip()}" in listId')
    if list_id.isdigit() and int(list_id) > _MAX_ID:
        raise RequestProblem(f"List {list_id} does not exist", status=404)
    file_type = (form.first(Field.FILE_TYPE) or "CSV").strip().upper() or "CSV"
    if file_type not in FILE_TYPES:
        raise RequestProblem(f'fileType must be CSV or TXT, not "{file_type}"')
    sort_by = (form.first(Field.SORT_BY) or "EMAIL_ADDRESS").strip().upper() or "EMAIL_ADDRESS"
    if sort_by not in SORT_ORDERS:
        raise RequestProblem(f'sortBy must be EMAIL_ADDRESS or DATE_DESC, not "{sort_by}"')
    fields = [EMAIL_COLUMN.field]
    for name in form.all(Field.COLUMNS):
        if not name.strip():
            continue
        column = lookup_column(name)
        if column is None:
            raise RequestProblem(f'Unknown column "{name.strip()}" in columns')
        if column.field not in fields:
            fields.append(column.field)
    return ExportRequest(
        list_id=list_id,
        file_type=file_type,
        fields=tuple(fields),
        opt_date=_flag(form, Field.EXPORT_OPT_DATE),
        opt_source=_flag(form, Field.EXPORT_OPT_SOURCE),
        list_names=_flag(form, Field.EXPORT_LIST_NAME),
        sort_by=sort_by,
    )


def parse_activity_form(
    body: bytes, content_type: str, *, max_rows: int, max_bytes: int, username: str | None = None
) -> ActivityRequest:
    """The :class:`ActivityRequest` a ``POST /activities`` body describes.

    Checks everything that can be checked without the database: the type, the list URIs'
    syntax, the ``data`` header and size. Whether the lists exist is the caller's check.

    Args:
        body: the request body.
        content_type: its ``Content-Type`` header.
        max_rows: the most non-blank data records accepted.
        max_bytes: the most bytes of ``data`` (UTF-8) accepted.
        username: the account of the request: a list URI naming another account is
            refused (403); None to skip that check.

    Raises:
        RequestProblem: what is wrong, for a 400 (403 for another account's list, 404 for a
            list id too big to exist).
    """
    form = parse_form(body, content_type)
    raw_type = form.first(Field.ACTIVITY_TYPE)
    if raw_type is None or not raw_type.strip():
        raise RequestProblem("activityType is missing")
    try:
        activity_type = ActivityType(raw_type.strip().upper())
    except ValueError:
        known = ", ".join(t.value for t in ActivityType)
        raise RequestProblem(
            f'Unknown activityType "{raw_type.strip()}"; use one of {known}'
        ) from None
    if activity_type is ActivityType.EXPORT_CONTACTS:
        return ActivityRequest(type=activity_type.value, export=_export_request(form, username))
    list_ids = _user_list_ids(form, activity_type, username)
    if activity_type not in DATA_TYPES:
        return ActivityRequest(type=activity_type.value, list_ids=list_ids)
    data = form.first(Field.DATA)
    if data is None or not data.strip():
        raise RequestProblem(f"{activity_type} needs the contacts in data")
    size = len(data.encode("utf-8"))
    if size > max_bytes:
        raise RequestProblem(
            f"data is {size} bytes; the limit is {max_bytes}: split it into several activities"
        )
    parsed = parse_data(data, max_rows=max_rows)
    # Only the named columns are stored: ignored ones hold nothing the worker reads (whether
    # a record overflows the header is already in ``overflowing``).
    named = [i for i, field in enumerate(parsed.fields) if field]
    return ActivityRequest(
        type=activity_type.value,
        list_ids=list_ids,
        fields=tuple(parsed.fields[i] for i in named),
        columns=[parsed.columns[i] for i in named],
        lines=parsed.lines,
        overflowing=parsed.overflowing,
    )
