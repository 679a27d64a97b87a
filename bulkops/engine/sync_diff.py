"""The diff of a sync: the file's valid rows against the list's base, in SQLite on disk.

Invariants:

* **Constant memory.** Rows go from the import pipeline into ``file_row`` a batch at a time;
  the diff is set-based SQL (``GROUP BY``, joins on primary keys) plus one pass in Python
  over the rows whose stored JSON differs from the base's, read through a cursor. SQLite's
  page cache is capped (:data:`CACHE_KIB`); sorting spills to temporary files.
* **Every row one outcome.** Each data row of the file ends in exactly one row of
  ``row_outcome``: ``rejected`` or ``duplicate`` (from reading), ``opted_out``,
  ``unchanged``, or ``added`` / ``updated`` (to send; ``failed`` when the server refuses).
* **As the server stores it.** Values are compared after :func:`normalise` (trimmed,
  ``StateCode`` upper case, ``EmailType`` spelled ``HTML``/``Text``); emails by their lower
  case (the key); a different spelling of the same address is an update (the server keeps
  the spelling the last add sent).
* **The last row of an email wins**, as in ``import``: earlier rows are ``duplicate``.

Routes of the rows to send: ``bulk`` (an add activity: it sets every non-empty value) or
``put`` (``PUT /contacts/{id}``: an update that empties a field, which an add cannot do).
"""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import msgspec

from bulkops.errors import InputError
from bulkops.stream.options import ChunkLimits, ReadOptions
from bulkops.stream.pipeline import Pipeline, PipelineOptions
from bulkops.stream.records import Chunk, Duplicate, Header, Rejected
from bulkops.wire.columns import lookup_column
from bulkops.wire.forms import decode_form

__all__ = [
    "BASE_SCHEMA",
    "CACHE_KIB",
    "SCHEMA",
    "DiffCounts",
    "FileRows",
    "diff",
    "normalise",
    "open_db",
]

#: SQLite page cache of the sync database, KiB (a negative ``cache_size``).
CACHE_KIB = 16_384

SCHEMA = """
CREATE TABLE IF NOT EXISTS file_row (
    line INTEGER PRIMARY KEY, email_key TEXT NOT NULL, email TEXT NOT NULL, vals TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS row_outcome (
    line INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,          -- rejected duplicate opted_out unchanged added updated failed
    reason TEXT NOT NULL DEFAULT '',
    route TEXT NOT NULL DEFAULT '',   -- bulk | put | '' (not sent)
    email_key TEXT, email TEXT, vals TEXT,
    changed TEXT NOT NULL DEFAULT '',  -- the columns an update changes, comma-separated
    contact_uri TEXT,
    done INTEGER NOT NULL DEFAULT 0);  -- put route: 1 when the PUT was answered
CREATE TABLE IF NOT EXISTS remove_row (
    email_key TEXT PRIMARY KEY, email TEXT NOT NULL, contact_uri TEXT,
    failed TEXT);                 -- why the server did not remove it (NULL: removed)
CREATE TABLE IF NOT EXISTS send_line (
    phase TEXT NOT NULL, line INTEGER NOT NULL, orig INTEGER NOT NULL,
    PRIMARY KEY (phase, line));
"""

BASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS base_member (
    email_key TEXT PRIMARY KEY, email TEXT NOT NULL, contact_uri TEXT, vals TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS base_opted_out (email_key TEXT PRIMARY KEY);
"""


def open_db(path: Path) -> sqlite3.Connection:
    """The sync database of a run (created when missing), with a bounded page cache."""
    # Used from worker threads (reading, the diff) one at a time, never concurrently.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    db.execute("PRAGMA temp_store = FILE")
    db.executescript(SCHEMA)  # base_member and base_opted_out are load_base's to create
    return db


def normalise(field: str, value: str) -> str:
    """A value as the server stores it: trimmed; ``StateCode`` upper case; ``EmailType``
    spelled ``HTML`` or ``Text`` (as ``server/apply.py`` and ``server/contacts.py``)."""
    value = value.strip()
    if not value:
        return value
    if field == "StateCode":
        return value.upper()
    if field == "EmailType":
        folded = value.casefold()
        if folded == "html":
            return "HTML"
        if folded == "text":
            return "Text"
    return value


_encode = msgspec.json.encode
_decode = msgspec.json.Decoder(list[str]).decode


def encode_vals(values: Sequence[str]) -> str:
    """The ``vals`` JSON of a row (as ``base_member.vals``)."""
    return _encode(list(values)).decode()


def decode_vals(text: str) -> list[str]:
    """The values of a ``vals`` JSON array."""
    return _decode(text)


#: The pipeline's chunks here are only read into ``file_row``: small ones keep the rows held
#: at once (as objects, the body, the text ``csv`` reads) to a few MiB, where a chunk of an
#: activity's 4 MiB held ~20. The diff finds the repeats across chunks (their size changes
#: no outcome).
_LIMITS = ChunkLimits(max_rows=8_192, max_bytes=1 << 20)


class FileRows:
    """Reads a contact file with the import pipeline (same options, same validation) into
    ``file_row`` and the reading outcomes (rejected, duplicate) into ``row_outcome``.

    Args:
        db: the sync database.
        read: how the file is read (as ``import``).
        list_uri: the list (the pipeline's activities name one; never sent).
    """

    def __init__(
        self,
        db: sqlite3.Connection,
        read: ReadOptions,
        list_uri: str,
        line_map: Sequence[int] | None = None,
    ) -> None:
        self._db = db
        #: The file's line of each line fed (a part of the file read alone), or None.
        self._map = line_map
        self._pipeline = Pipeline(PipelineOptions(lists=[list_uri], read=read, limits=_LIMITS))
        #: The wire fields the file maps, EmailAddress first.
        self.fields: tuple[str, ...] | None = None
        #: The header as the pipeline read it (delimiter, encoding).
        self.header: Header | None = None
        self.rows = 0

    def _line(self, line: int) -> int:
        return line if self._map is None else self._map[line]

    def feed(self, block: bytes) -> None:
        """Read the next block of the file (``b""`` at the end)."""
        events = self._pipeline.decode(block) if block else self._pipeline.flush()
        outcomes: list[tuple[int, str, str, str | None]] = []
        line = self._line
        for event in events:
            if isinstance(event, Header):
                self.fields = tuple(_field_of(name) for name in event.sent)
                self.header = event
            elif isinstance(event, Rejected):
                where = f"{event.field}: " if event.field else ""
                outcomes.append((line(event.line), "rejected", where + event.reason, None))
                self.rows += 1
            elif isinstance(event, Duplicate):
                # The reason names the email's last row once the diff knows it (_diff).
                by = line(event.replaced_by)
                outcomes.append(
                    (line(event.line), "duplicate", f"replaced by line {by}", event.email.lower())
                )
                self.rows += 1
            elif isinstance(event, Chunk):
                self._chunk(event)
        if outcomes:
            self._db.executemany(
                "INSERT OR REPLACE INTO row_outcome (line, kind, reason, email_key)"
                " VALUES (?, ?, ?, ?)",
                outcomes,
            )

    def _chunk(self, chunk: Chunk) -> None:
        assert self.fields is not None
        data = _data_of(chunk)
        records = csv.reader(io.StringIO(data, newline=""))
        head = [_field_of(name) for name in next(records)]
        email_at = head.index(self.fields[0])
        # Per column of vals: where it is in this chunk's data (projected: columns no row
        # fills are left out) and how its values are stored.
        picks = [
            (head.index(f), _NORMALISE.get(f, str.strip)) if f in head else (-1, str.strip)
            for f in self.fields[1:]
        ]
        rows = []
        lines = chunk.lines if self._map is None else [self._map[n] for n in chunk.lines]
        for line, record in zip(lines, records, strict=True):
            email = record[email_at].strip()
            vals = [fn(record[i]) if i >= 0 else "" for i, fn in picks]
            rows.append((line, email.lower(), email, _encode(vals).decode()))
        self._db.executemany("INSERT OR REPLACE INTO file_row VALUES (?, ?, ?, ?)", rows)
        self.rows += len(rows)


_DATA_OPEN = b"Content-Type: text/csv; charset=utf-8\r\n\r\n"


def _data_of(chunk: Chunk) -> str:
    """The ``data`` field of a chunk's body: sliced out of a multipart body (it is
    ``data_bytes`` long after its part's headers: ``wire.forms``), else the form parsed."""
    body = chunk.body
    if chunk.content_type.startswith("multipart/"):
        start = body.find(_DATA_OPEN)
        if start >= 0:
            start += len(_DATA_OPEN)
            return body[start : start + chunk.data_bytes].decode("utf-8")
    return decode_form(body, chunk.content_type).first("data") or ""


_NORMALISE = {
    "StateCode": lambda v: normalise("StateCode", v),
    "EmailType": lambda v: normalise("EmailType", v),
}


def _field_of(column_name: str) -> str:
    column = lookup_column(column_name)
    if column is None:  # pragma: no cover - the pipeline sends canonical names only
        raise InputError(f"unknown column {column_name!r}")
    return column.field


def read_file(db: sqlite3.Connection, path: Path, read: ReadOptions, list_uri: str) -> FileRows:
    """Read ``path`` into the sync database (one transaction).

    Raises:
        InputError: the file cannot be read or has no usable header.
    """
    reader = FileRows(db, read, list_uri)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", path=str(path)) from None
    db.execute("BEGIN")
    try:
        with handle:
            while True:
                block = handle.read(1 << 20)
                reader.feed(block)
                if not block:
                    break
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    if reader.fields is None:  # pragma: no cover - the pipeline raises first
        raise InputError("no header", path=str(path))
    return reader


class DiffCounts(msgspec.Struct, frozen=True, kw_only=True):
    """Rows per outcome after the diff (before sending), and members to remove."""

    read: int
    added: int
    updated: int
    unchanged: int
    opted_out: int
    rejected: int
    duplicate: int
    put: int  # updates that go by PUT (they empty a field)
    remove: int
    members: int


def diff(
    db: sqlite3.Connection,
    columns: Sequence[str],
    *,
    remove_missing: bool,
    candidates: bool = False,
) -> DiffCounts:
    """Decide every row's outcome (``row_outcome``) and the members to remove
    (``remove_row``) from ``file_row``, ``base_member`` and ``base_opted_out``.

    Args:
        columns: the wire fields of ``vals`` (without EmailAddress), as the base's.
        remove_missing: members whose email no file row has go to ``remove_row``.
        candidates: only the members whose key is in ``temp.sb_cand`` may be removed (a
            part of the file was read: the others are known to be in it), and the base is
            the snapshot attached as ``snap`` (the tables are not made in ``db``).
    """
    if not candidates:
        db.executescript(BASE_SCHEMA)  # made by load_base already; an empty base otherwise
    db.execute("BEGIN")
    try:
        _diff(db, columns, remove_missing=remove_missing, candidates=candidates)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return counts(db)


def _diff(
    db: sqlite3.Connection, columns: Sequence[str], *, remove_missing: bool, candidates: bool
) -> None:
    db.execute("DROP TABLE IF EXISTS temp.winner")
    db.execute("CREATE TEMP TABLE winner (email_key TEXT PRIMARY KEY, line INTEGER NOT NULL)")
    db.execute("INSERT INTO winner SELECT email_key, max(line) FROM file_row GROUP BY email_key")
    db.execute(
        "INSERT OR REPLACE INTO row_outcome (line, kind, reason, email_key)"
        " SELECT f.line, 'duplicate', 'replaced by line ' || w.line, f.email_key"
        " FROM file_row f JOIN winner w ON w.email_key = f.email_key WHERE f.line < w.line"
    )
    # A duplicate the reading found names the email's last row too, whatever rows the
    # reading held at once (the same reason whether the file was read whole or in part).
    db.execute(
        "UPDATE row_outcome SET reason = 'replaced by line ' || w.line FROM winner w"
        " WHERE row_outcome.kind = 'duplicate' AND w.email_key = row_outcome.email_key"
    )
    db.execute(
        "INSERT OR REPLACE INTO row_outcome (line, kind, reason, email_key, email, vals)"
        " SELECT f.line, 'opted_out', 'the contact is on the Do Not Mail list', f.email_key,"
        " f.email, f.vals FROM winner w JOIN file_row f ON f.line = w.line"
        " JOIN base_opted_out o ON o.email_key = w.email_key"
    )
    db.execute(
        "INSERT OR REPLACE INTO row_outcome (line, kind, route, email_key, email, vals)"
        " SELECT f.line, 'added', 'bulk', f.email_key, f.email, f.vals"
        " FROM winner w JOIN file_row f ON f.line = w.line"
        " WHERE NOT EXISTS (SELECT 1 FROM base_opted_out o WHERE o.email_key = w.email_key)"
        " AND NOT EXISTS (SELECT 1 FROM base_member b WHERE b.email_key = w.email_key)"
    )
    db.execute(
        "INSERT OR REPLACE INTO row_outcome (line, kind, email_key, email, vals, contact_uri)"
        " SELECT f.line, 'unchanged', f.email_key, f.email, f.vals, b.contact_uri"
        " FROM winner w JOIN file_row f ON f.line = w.line"
        " JOIN base_member b ON b.email_key = w.email_key"
        " WHERE f.email = b.email AND f.vals = b.vals"
        " AND NOT EXISTS (SELECT 1 FROM base_opted_out o WHERE o.email_key = w.email_key)"
    )
    differing = db.execute(
        "SELECT f.line, f.email_key, f.email, f.vals, b.email, b.vals, b.contact_uri"
        " FROM winner w JOIN file_row f ON f.line = w.line"
        " JOIN base_member b ON b.email_key = w.email_key"
        " WHERE NOT (f.email = b.email AND f.vals = b.vals)"
        " AND NOT EXISTS (SELECT 1 FROM base_opted_out o WHERE o.email_key = w.email_key)"
    )
    write = db.cursor()
    batch: list[tuple[object, ...]] = []
    for line, key, email, vals, base_email, base_vals, uri in differing:
        outcome = compare(columns, email, decode_vals(vals), base_email, decode_vals(base_vals))
        kind, route, changed = outcome
        batch.append((line, kind, route, key, email, vals, ",".join(changed), uri))
        if len(batch) >= 5_000:
            _write_compared(write, batch)
            batch = []
    _write_compared(write, batch)
    db.execute("DELETE FROM remove_row")
    if remove_missing:
        # From the candidates when there are (CROSS JOIN: SQLite keeps that order), so the
        # base is looked up, never scanned.
        among = "temp.sb_cand c CROSS JOIN base_member b ON b.email_key = c.email_key"
        source = among if candidates else "base_member b"
        db.execute(
            "INSERT INTO remove_row (email_key, email, contact_uri)"
            f" SELECT b.email_key, b.email, b.contact_uri FROM {source}"
            " WHERE NOT EXISTS (SELECT 1 FROM winner w WHERE w.email_key = b.email_key)"
        )
    db.execute("DROP TABLE temp.winner")


def _write_compared(cursor: sqlite3.Cursor, batch: list[tuple[object, ...]]) -> None:
    cursor.executemany(
        "INSERT OR REPLACE INTO row_outcome"
        " (line, kind, route, email_key, email, vals, changed, contact_uri)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        batch,
    )


def compare(
    columns: Sequence[str],
    email: str,
    values: Sequence[str],
    base_email: str,
    base_values: Sequence[str],
) -> tuple[str, str, list[str]]:
    """One file row against its member: ``(kind, route, changed columns)``.

    ``unchanged`` when the spelling of the address and every value are the same; else
    ``updated``, by ``put`` when a value the member has is empty in the file (an add keeps
    what an empty cell does not give), by ``bulk`` otherwise.
    """
    changed = [
        name
        for name, new, old in zip(columns, values, base_values, strict=True)
        if new != old and (new or name != "EmailType")  # an email type cannot be emptied
    ]
    if email != base_email:
        changed.insert(0, "EmailAddress")
    if not changed:
        return "unchanged", "", []
    clears = any(
        not new and old and name != "EmailType"
        for name, new, old in zip(columns, values, base_values, strict=True)
    )
    return "updated", "put" if clears else "bulk", changed


def counts(db: sqlite3.Connection) -> DiffCounts:
    """The plan's counts, from the database."""
    by_kind = dict.fromkeys(
        ("added", "updated", "unchanged", "opted_out", "rejected", "duplicate", "failed"), 0
    )
    for kind, n in db.execute("SELECT kind, count(*) FROM row_outcome GROUP BY kind"):
        by_kind[kind] = n
    put = db.execute("SELECT count(*) FROM row_outcome WHERE route = 'put'").fetchone()[0]
    remove = db.execute("SELECT count(*) FROM remove_row").fetchone()[0]
    members = db.execute("SELECT count(*) FROM base_member").fetchone()[0]
    return DiffCounts(
        read=sum(by_kind.values()),
        added=by_kind["added"],
        updated=by_kind["updated"],
        unchanged=by_kind["unchanged"],
        opted_out=by_kind["opted_out"],
        rejected=by_kind["rejected"],
        duplicate=by_kind["duplicate"],
        put=put,
        remove=remove,
        members=members,
    )


def iter_outcomes(db: sqlite3.Connection) -> Iterator[tuple[int, str, str, str]]:
    """``(line, kind, reason, changed)`` of every row, in line order."""
    yield from db.execute("SELECT line, kind, reason, changed FROM row_outcome ORDER BY line")


def model_diff(
    base: dict[str, tuple[str, list[str]]],
    opted_out: Iterable[str],
    rows: Sequence[tuple[int, str, list[str]]],
    columns: Sequence[str],
) -> dict[int, tuple[str, str]]:
    """The diff in memory, simply (the oracle of the tests): ``line -> (kind, route)``.

    Args:
        base: member key -> (email, values); rows: ``(line, email, values)`` in line order.
    """
    opted = set(opted_out)
    last: dict[str, int] = {}
    for line, email, _values in rows:
        last[email.lower()] = line
    out: dict[int, tuple[str, str]] = {}
    for line, email, values in rows:
        key = email.lower()
        if last[key] != line:
            out[line] = ("duplicate", "")
        elif key in opted:
            out[line] = ("opted_out", "")
        elif key not in base:
            out[line] = ("added", "bulk")
        else:
            kind, route, _changed = compare(columns, email, values, *base[key])
            out[line] = (kind, route)
    return out
