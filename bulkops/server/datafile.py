"""Activity request bodies: form decoding, the ``data`` file, and the record the worker runs.

``POST /activities`` carries a form (spec §7.3), urlencoded or multipart; its ``data`` field is
a small CSV file (spec §7.4). This module turns the request body into an
:class:`ActivityRequest` — everything the worker needs, encoded with msgspec into
``activity_request`` — or raises :class:`RequestProblem` with the short message of a 400.

Invariants:

* Pure and synchronous (no IO, no clock); the handler runs it in a worker thread, since a
  4 MB ``data`` takes tens of milliseconds to decode.
* Forms are parsed from the bytes already read under the body limit (``parse_qsl`` for
  urlencoded, python-multipart's push parser for multipart), so no limit can be bypassed; the
  number of fields is bounded too.
* ``data`` records are numbered as the wire does (``LineNumber``): the header record is 1 and
  the first data record 2; a newline inside a quoted field does not start a new number, a
  blank line does.
* The records are stored by column (:attr:`ActivityRequest.columns`), one cell per non-blank
  record, each record padded or cut to the header's width: the worker then trims, checks
  and loads whole columns at C speed, and decoding a stored request makes a few dozen lists,
  not one per row (which would also wake the garbage collector over and over).
* Header names are matched with :func:`bulkops.wire.columns.lookup_column` (case, spaces,
  punctuation and the aliases of §7.4 do not matter). Empty header cells are ignored, with
  their column; an unknown or repeated name, or no email column, is a 400.
* Row values are stored as sent (the worker trims them); row problems are the worker's
  business, never a 400.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from itertools import islice
from operator import itemgetter
from urllib.parse import parse_qsl, unquote, urlsplit

import attrs
import msgspec
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from bulkops.wire.activity import DATA_TYPES, ActivityType, Field
from bulkops.wire.columns import EMAIL_COLUMN, lookup_column
from bulkops.wire.uris import SYSTEM_LISTS, list_id_from_uri

__all__ = [
    "MAX_FORM_FIELDS",
    "MULTIPART",
    "URLENCODED",
    "ActivityCannotRun",
    "ActivityRequest",
    "DataTable",
    "ExportRequest",
    "Form",
    "ParsedData",
    "RequestProblem",
    "decode_request",
    "encode_request",
    "parse_activity_form",
    "parse_data",
    "parse_form",
    "tabulate",
]

URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"

#: Most form fields one POST may carry (``lists`` and ``columns`` repeat).
MAX_FORM_FIELDS = 2_000

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


def _by_column(records: Sequence[Sequence[str]], fields: Sequence[str]) -> DataTable:
    """Non-blank records as columns, cells as sent (lines 2, 3, … — the caller sets others).

    O(cells sent + records × used columns): a record is never padded to the header's width,
    which empty header cells can make as wide as the ``data`` limit allows (a few bytes of
    commas would otherwise cost a pointer per record and column).
    """
    width = len(fields)
    overflowing: set[int] = set()
    columns: list[Sequence[str]] = [[] for _field in fields]
    if not records:
        return DataTable(columns=columns, lines=range(2, 2), overflowing=frozenset())
    shortest = min(map(len, records))
    if max(map(len, records)) > width:
        overflowing.update(
            at
            for at, record in enumerate(records)
            if len(record) > width and any(cell.strip() for cell in islice(record, width, None))
        )
    for i, field in enumerate(fields):
        if not field:
            continue
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


class Form:
    """Decoded form fields: every value of each name, in order."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._values: dict[str, list[str]] = {}
        for name, value in pairs:
            self._values.setdefault(name, []).append(value)

    def all(self, name: str) -> list[str]:
        """Every value given for ``name`` (``[]`` when absent)."""
        return self._values.get(name, [])

    def first(self, name: str) -> str | None:
        """The first value given for ``name``, or None."""
        values = self._values.get(name)
        return values[0] if values else None

    def names(self) -> list[str]:
        """The field names present."""
        return list(self._values)


def parse_form(body: bytes, content_type: str) -> Form:
    """Decode a urlencoded or multipart form.

    Args:
        body: the whole request body.
        content_type: the request's ``Content-Type`` header, parameters included.

    Raises:
        RequestProblem: a malformed body, text that is not UTF-8, too many fields.
    """
    media_type, options = parse_options_header(content_type)
    if media_type == URLENCODED.encode():
        return Form(_parse_urlencoded(body))
    if media_type == MULTIPART.encode():
        boundary = options.get(b"boundary")
        if not boundary:
            raise RequestProblem("multipart/form-data without a boundary parameter")
        return Form(_parse_multipart(body, boundary))
    raise RequestProblem(f"cannot decode a form of type {media_type.decode('latin-1')}")


def _parse_urlencoded(body: bytes) -> list[tuple[str, str]]:
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        # Raw non-ASCII bytes are not urlencoded, but some clients send UTF-8 unescaped.
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestProblem("the form is not UTF-8 text") from None
    try:
        return parse_qsl(
            text,
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except UnicodeDecodeError:
        raise RequestProblem("a form value is not UTF-8 once percent-decoded") from None
    except ValueError:
        raise RequestProblem(f"the form has more than {MAX_FORM_FIELDS} fields") from None


class _PartCollector:
    """Callbacks for python-multipart: collects ``(name, bytes)`` for every part."""

    def __init__(self) -> None:
        self.parts: list[tuple[str, bytes]] = []
        self.finished = False
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._name: str | None = None
        self._data = bytearray()

    def on_part_begin(self) -> None:
        self._name = None
        self._data = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if bytes(self._header_field).strip().lower() == b"content-disposition":
            _disposition, params = parse_options_header(bytes(self._header_value))
            name = params.get(b"name")
            if name is not None:
                try:
                    self._name = name.decode("utf-8")
                except UnicodeDecodeError:
                    self._name = name.decode("latin-1")
        self._header_field = bytearray()
        self._header_value = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._data += data[start:end]

    def on_part_end(self) -> None:
        if self._name is None:
            raise RequestProblem("a multipart part has no Content-Disposition name")
        if len(self.parts) >= MAX_FORM_FIELDS:
            raise RequestProblem(f"the form has more than {MAX_FORM_FIELDS} fields")
        self.parts.append((self._name, bytes(self._data)))
        self._data = bytearray()

    def on_end(self) -> None:
        self.finished = True


def _parse_multipart(body: bytes, boundary: bytes) -> list[tuple[str, str]]:
    collector = _PartCollector()
    try:
        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": collector.on_part_begin,
                "on_header_field": collector.on_header_field,
                "on_header_value": collector.on_header_value,
                "on_header_end": collector.on_header_end,
                "on_part_data": collector.on_part_data,
                "on_part_end": collector.on_part_end,
                "on_end": collector.on_end,
            },
        )
        parser.write(body)
        parser.finalize()
    except (MultipartParseError, ValueError) as exc:
        raise RequestProblem(f"malformed multipart/form-data body ({exc})") from None
    if not collector.finished:
        raise RequestProblem("malformed multipart/form-data body (no closing boundary)")
    pairs: list[tuple[str, str]] = []
    for name, raw in collector.parts:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestProblem(f"form field {name!r} is not UTF-8 text") from None
        pairs.append((name, text))
    return pairs


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
        records: list[list[str]] = []
        try:
            records.extend(reader)
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
    fields: list[str] = []
    seen: dict[str, str] = {}
    for cell in header:
        name = cell.strip()
        if not name:
            fields.append("")
            continue
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
        fields.append(column.field)
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
    return ActivityRequest(
        type=activity_type.value,
        list_ids=list_ids,
        fields=parsed.fields,
        columns=parsed.columns,
        lines=parsed.lines,
        overflowing=parsed.overflowing,
    )
