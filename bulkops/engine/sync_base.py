"""The base of a sync: a list's current members with the mapped columns, read as cheaply as
can be proven correct, and the per-list snapshot that makes the next read cheap.

:func:`load_base` fills two tables of a SQLite connection the caller opened (a file in its
run directory)::

    base_member(email_key TEXT PRIMARY KEY, email TEXT NOT NULL, contact_uri TEXT,
                vals TEXT NOT NULL)   -- vals: JSON array aligned with BaseSpec.columns
    base_opted_out(email_key TEXT PRIMARY KEY)   -- the account's Do Not Mail contacts

Two ways to read it:

* **Full** — two ``EXPORT_CONTACTS`` activities (the list with the mapped columns, and the
  system list ``do-not-mail`` with the address only), streamed from their files through
  :class:`~bulkops.stream.export.ExportCsvDecoder` into the tables, ``executemany`` in
  batches. The export file holds the values exactly as the server stores them (``""`` for
  empty), so they are kept as they are. About 10–15 requests (the polls vary) whatever the
  list's size; measured at 200,000 members: 54 MiB peak RSS, as much as a plain export.
* **Incremental** — the snapshot of the last sync is copied in, then brought up to date:

  1. ``GET lists/{id}``: the list's ``ContactCount`` and the server's clock (``Date``);
  2. ``GET contacts?updatedsince=T`` (no list filter: every contact of the account whose
     fields, status or lists changed at or after ``T``, with its status). Nothing
     returned: the snapshot is current — two requests in all;
  3. otherwise ``GET contacts?updatedsince=T&listid=N``: which of them are on the list now;
  4. every changed contact leaves ``base_member``; those on the list come back with their
     values (``GET contacts/{id}``, a few at a time); those with status ``Do Not Mail``
     join ``base_opted_out``, the others leave it;
  5. the list's ``ContactCount``, read again (one request), must not have moved, and equal the
     members counted. (A contact's address changed by a PUT is invisible otherwise: the old
     key would linger. The check cannot see it only when, during the read, the list lost a
     member the walk saw and gained one it did not — the next read re-examines those, not
     the rename.)

Invariants:

* **Proven current, or a full read.** The incremental path is taken only when every change
  since the snapshot is visible to it; otherwise a full read is taken and
  :attr:`BaseInfo.reason` says why: the mapped columns changed; the snapshot is older than
  :data:`HISTORY_HORIZON`; the snapshot cannot be read; the server refuses
  ``updatedsince`` without a list filter (400: an era server); more changed than a full read
  would cost to read (:func:`full_read_cost`); the count check failed (a change the API does
  not show, e.g. a contact's address changed by a PUT, or the list changed while it was
  read).
* **The window.** :attr:`BaseInfo.as_of` is the server's clock (the ``Date`` of the
  ``lists/{id}`` answer, taken *before* the read begins) minus :data:`STAMP_SKEW`: the
  server stamps a change (``last_update_time``) when its request is handled and commits it
  at most that long afterwards (a write waits for the write lock, an activity applies in one
  transaction), so every change not in the base — made during the read, or later, the
  sync's own sends included — has a stamp at or after ``as_of`` and falls in the next
  window. The server's ``updatedsince`` is inclusive.
* **The write sequence** (our server's extension, ``X-Bulkops-Write-Seq``): the first
  ``lists/{id}`` answer also gives the account's write sequence and the server's clock,
  read under its write lock (:attr:`BaseInfo.write_seq`, :attr:`BaseInfo.write_time`).
  At the end of a sync, :func:`snapshot_as_of` compares them with a second reading: when
  the sequence moved by exactly the writes the sync itself committed, nothing else wrote in
  between, so the base plus the confirmed changes is the list exactly at the second
  reading's time, and the snapshot is saved as of that time less :data:`SEQ_MARGIN`
  (instead of :attr:`BaseInfo.as_of`, which the sync's own sends would fall after).
* **Constant memory.** Rows go from the socket to SQLite in batches of :data:`_BATCH`; the
  set of changed contacts lives in temporary tables; snapshots are copied SQLite to SQLite,
  or read where they are (``in_place``). Nothing held in Python grows with the list.
* **Snapshots** (:func:`save_snapshot`, :mod:`bulkops.engine.sync_snap`) are one SQLite
  file per (account, list) under ``snapshot_dir``, mode 0600, written to a temporary file
  and renamed into place, or changed in place in transactions that each leave a valid
  snapshot; they record the columns, so a snapshot of other columns is never used.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import attrs
import msgspec
import trio

from bulkops.engine.client import Client
from bulkops.engine.exports import post_export
from bulkops.engine.sync_snap import (
    SNAP,
    RecordSet,
    SnapshotUnusable,
    attach,
    check_meta,
    detach,
    snapshot_file,
    write_snapshot,
)
from bulkops.engine.tracker import ActivityTracker
from bulkops.errors import (
    ActivityFailed,
    ApiError,
    BodyBrokenOff,
    ConfigError,
    ProtocolError,
    TransportError,
    single_errors,
)
from bulkops.stream.export import ExportCsvDecoder, header_projection
from bulkops.stream.feed import FEED_SLICE_BYTES
from bulkops.wire.activity import ActivityStatus
from bulkops.wire.atom.feeds import record_from_entry
from bulkops.wire.atom.lists import list_from_entry
from bulkops.wire.atom.syntax import format_time, parse_time
from bulkops.wire.columns import EMAIL_COLUMN, Column, column_for_field
from bulkops.wire.model import Activity, Contact
from bulkops.wire.uris import resource_id_from_uri

__all__ = [
    "FULL_READ_REQUESTS",
    "HISTORY_HORIZON",
    "ROWS_PER_REQUEST",
    "SEQ_MARGIN",
    "STAMP_SKEW",
    "BaseInfo",
    "BaseSpec",
    "full_read_cost",
    "load_base",
    "save_snapshot",
    "seq_margin",
    "snapshot_as_of",
    "snapshot_path",
]

#: How long before its commit a change may be stamped (the server's promise, see
#: ``bulkops/server/contacts.py``); the window of the next read starts this much earlier.
STAMP_SKEW = timedelta(seconds=30)
#: How much earlier than a proven write-sequence reading a snapshot is saved as of when the
#: server states no margin of its own (:func:`seq_margin`). On one server host none is
#: needed (the reading's time is taken under the write lock, and every later write stamps
#: its contacts at or after it); this second covers the clocks of several server hosts
#: sharing one database, which may differ by that much.
SEQ_MARGIN = timedelta(seconds=1)
#: How far back ``updatedsince`` is trusted to show every change (the server's documented
#: history horizon); an older snapshot is not used.
HISTORY_HORIZON = timedelta(days=30)
#: Requests a full read costs besides its rows (2 POSTs, polls, 2 downloads).
FULL_READ_REQUESTS = 10
#: Export rows that cost about as much as one request (server and client time).
ROWS_PER_REQUEST = 5_000

DO_NOT_MAIL = "Do Not Mail"

_BATCH = 5_000  # rows per executemany
_FETCH_CONCURRENCY = 8  # GET contacts/{id} in flight
_FILE_ATTEMPTS = 5  # an export file whose body broke off is read again this often
_POLL_MIN, _POLL_MAX = 0.05, 5.0
_VALS = msgspec.json.Encoder()

_TABLES = (
    "CREATE TABLE IF NOT EXISTS base_member (email_key TEXT PRIMARY KEY, email TEXT NOT NULL,"
    " contact_uri TEXT, vals TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS base_opted_out (email_key TEXT PRIMARY KEY)",
)


@attrs.frozen
class BaseSpec:
    """What base to read.

    Attributes:
        list_uri: the list's id URI, as :func:`bulkops.engine.lists.resolve_lists` returns it.
        columns: wire field names the file maps, without ``EmailAddress``
            (e.g. ``("FirstName", "City")``).
        full: ignore any snapshot (``--full``).
        snapshot_dir: where snapshots live (``$BULKOPS_HOME/snapshots``); None: none kept.
    """

    list_uri: str
    columns: tuple[str, ...]
    full: bool = False
    snapshot_dir: Path | None = None


@attrs.frozen
class BaseInfo:
    """What :func:`load_base` read.

    Attributes:
        members: rows in ``base_member``.
        opted_out: rows in ``base_opted_out``.
        source: ``"full"`` or ``"incremental"``.
        reason: why a full read was taken although a snapshot existed (for the user).
        requests: HTTP requests the base cost.
        as_of: the server time (Atom format) the base is valid at: every change stamped
            earlier is in it.
        write_seq: the account's write sequence before the read (None: the server has none).
        write_time: the server's clock (ms) read with ``write_seq``.
        write_margin_ms: the margin the server stated with it (None: not stated, or a
            journal written before it was kept: :data:`SEQ_MARGIN`); see :func:`seq_margin`.
        snapshot_as_of: the time the snapshot was saved as of (set at the end of a sync,
            :func:`snapshot_as_of`); None until then (``as_of`` is used).
        snapshot_as_of_reason: why ``snapshot_as_of`` is what it is (for the user).
    """

    members: int
    opted_out: int
    source: str
    reason: str | None
    requests: int
    as_of: str
    write_seq: int | None = None
    write_time: int | None = None
    write_margin_ms: int | None = None
    snapshot_as_of: str | None = None
    snapshot_as_of_reason: str | None = None


def snapshot_as_of(info: BaseInfo, end: tuple[int, int] | None, own_writes: int | None) -> BaseInfo:
    """``info`` with the time its snapshot (base plus the sync's confirmed changes) is
    exact at, and why.

    Args:
        end: ``(write_seq, server ms)`` read after the sync's last write (None: not sent).
        own_writes: the write transactions the sync itself committed (None: not known
            exactly, e.g. a chunk flagged ``maybe_twice``).

    Only when both readings exist and the sequence moved by exactly ``own_writes`` is the
    later reading's time (less :func:`seq_margin`) used; otherwise ``info.as_of`` stays.
    """
    if info.write_seq is None or info.write_time is None:
        why = "the server gives no write sequence: the base's time, less the stamp skew"
        return attrs.evolve(info, snapshot_as_of=info.as_of, snapshot_as_of_reason=why)
    if own_writes is None or end is None:
        why = "the sync's own writes are not known exactly: the base's time, less the skew"
        return attrs.evolve(info, snapshot_as_of=info.as_of, snapshot_as_of_reason=why)
    seq, stamp = end
    moved = seq - info.write_seq
    if moved != own_writes:
        why = (
            f"{moved} writes to the account during the sync, {own_writes} of them its own:"
            " the base's time, less the stamp skew"
        )
        return attrs.evolve(info, snapshot_as_of=info.as_of, snapshot_as_of_reason=why)
    proven = from_epoch_ms(stamp) - seq_margin(info)
    why = f"only the sync's own {own_writes} writes during it: the end of the sync"
    return attrs.evolve(info, snapshot_as_of=format_time(proven), snapshot_as_of_reason=why)


def seq_margin(info: BaseInfo) -> timedelta:
    """How much earlier than the end reading the snapshot is saved as of, and how long after
    its own last write a sync takes that reading: the margin the server stated with the
    write sequence (``X-Bulkops-Write-Margin``; 0 on a one-host SQLite server), else
    :data:`SEQ_MARGIN`."""
    if info.write_margin_ms is None:
        return SEQ_MARGIN
    return timedelta(milliseconds=info.write_margin_ms)


def from_epoch_ms(ms: int) -> datetime:
    """An aware UTC datetime of integer milliseconds since the epoch."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def full_read_cost(members: int) -> int:
    """What a full read of a list of ``members`` costs, in requests:
    ``FULL_READ_REQUESTS + members // ROWS_PER_REQUEST``. An incremental read that would
    cost more (feed pages plus one request per changed member) gives way to a full read."""
    return FULL_READ_REQUESTS + members // ROWS_PER_REQUEST


#: Internal: the snapshot cannot be proven current; the message says why.
_FallBack = SnapshotUnusable


# ---------------------------------------------------------------------------------------------
# load_base
# ---------------------------------------------------------------------------------------------


async def load_base(
    client: Client, spec: BaseSpec, db: sqlite3.Connection, *, in_place: bool = False
) -> BaseInfo:
    """Fill ``base_member`` and ``base_opted_out`` in ``db`` (created if absent, contents
    replaced, committed) with the list's members and the account's Do Not Mail contacts.

    With ``in_place``, the caller attached the list's snapshot to ``db`` as ``snap`` (and
    ``db`` has no base tables of its own): an incremental read brings that snapshot up to
    date where it is; the keys the server showed changed are left in ``temp.sb_dirty``. When
    it falls back to a full read, ``snap`` is detached and the tables are made in ``db``.

    Returns:
        what was read, how, at what cost, and the server time it is valid at.

    Raises:
        ConfigError: ``list_uri`` is not a list URI.
        NotFound: it names no list of the account.
        ActivityFailed: an export activity ended in ERROR (or stalled).
        ProtocolError, XmlError: the server sent something unreadable.
        ApiError, TransportError: the server could not be used.
    """
    started = client.statistics().requests
    if not in_place:
        for statement in _TABLES:
            db.execute(statement)
    list_id = resource_id_from_uri(spec.list_uri, "lists")
    if list_id is None:
        raise ConfigError(f"{spec.list_uri!r} is not a list URI")
    found, server_now, sequence = await client.get_entry_sequenced(
        f"lists/{list_id}", list_from_entry
    )
    if server_now is None:
        raise ProtocolError("the server's answer has no Date header: its clock is unknown")
    as_of = server_now - STAMP_SKEW
    reason: str | None = None
    path = None if spec.snapshot_dir is None else snapshot_path(spec.snapshot_dir, client, spec)
    if path is not None and (in_place or path.exists()):
        if spec.full:
            reason = "--full was given"
        else:
            try:
                await _incremental(
                    client, spec, db, path, list_id, found.contact_count, as_of, in_place
                )
            except _FallBack as exc:
                reason = str(exc)
            else:
                info = _info(client, db, "incremental", None, started, as_of)
                return _with_sequence(info, sequence)
    if in_place:
        detach(db, SNAP)
        for statement in _TABLES:
            db.execute(statement)
    await _full_read(client, spec, db, found.contact_count or 0)
    return _with_sequence(_info(client, db, "full", reason, started, as_of), sequence)


def _with_sequence(info: BaseInfo, sequence: tuple[int, int, int | None] | None) -> BaseInfo:
    if sequence is None:
        return info
    seq, stamp, margin = sequence
    return attrs.evolve(info, write_seq=seq, write_time=stamp, write_margin_ms=margin)


def _info(
    client: Client,
    db: sqlite3.Connection,
    source: str,
    reason: str | None,
    started: int,
    as_of: datetime,
) -> BaseInfo:
    db.commit()
    (members,) = db.execute("SELECT count(*) FROM base_member").fetchone()
    (opted_out,) = db.execute("SELECT count(*) FROM base_opted_out").fetchone()
    return BaseInfo(
        members=int(members),
        opted_out=int(opted_out),
        source=source,
        reason=reason,
        requests=client.statistics().requests - started,
        as_of=format_time(as_of),
    )


# -- the full read ------------------------------------------------------------------------------


async def _full_read(client: Client, spec: BaseSpec, db: sqlite3.Connection, members: int) -> None:
    """Both exports posted at once, then each file streamed into its table."""
    db.execute("DELETE FROM base_member")
    db.execute("DELETE FROM base_opted_out")
    columns = (EMAIL_COLUMN, *(column_for_field(field) for field in spec.columns))
    list_export = await post_export(client, spec.list_uri, columns)
    dnm_export = await post_export(client, client.url("lists/do-not-mail"), (EMAIL_COLUMN,))
    tracker = ActivityTracker(client, poll_min=_POLL_MIN, poll_max=_POLL_MAX)
    with single_errors():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tracker.run)
            done = await tracker.wait(list_export, members)
            await _download(client, db, done, columns, _insert_members, "base_member")
            done = await tracker.wait(dnm_export, 0)
            await _download(client, db, done, (EMAIL_COLUMN,), _insert_opted_out, "base_opted_out")
            nursery.cancel_scope.cancel()


def _insert_members(db: sqlite3.Connection, rows: list[list[str]]) -> None:
    db.executemany(
        "INSERT OR REPLACE INTO base_member (email_key, email, contact_uri, vals)"
        " VALUES (?, ?, NULL, ?)",
        [(row[0].lower(), row[0], _VALS.encode(row[1:]).decode()) for row in rows],
    )


def _insert_opted_out(db: sqlite3.Connection, rows: list[list[str]]) -> None:
    db.executemany(
        "INSERT OR IGNORE INTO base_opted_out (email_key) VALUES (?)",
        [(row[0].lower(),) for row in rows],
    )


async def _download(
    client: Client,
    db: sqlite3.Connection,
    activity: Activity,
    columns: Sequence[Column],
    insert: Callable[[sqlite3.Connection, list[list[str]]], None],
    table: str,
) -> None:
    """Stream a finished export's file into a table (``insert(db, rows)``), in batches.

    A body that breaks off is read again from its start, the table emptied first.

    Raises:
        ActivityFailed: the export did not complete.
        ProtocolError: the file is unreadable, or its row count is not the activity's
            ``TransactionCount``.
    """
    if activity.status != ActivityStatus.COMPLETE:
        raise ActivityFailed(activity.id, f"the export ended in {activity.status}")
    file_name = activity.file_name.rsplit("/", 1)[-1].strip()
    if not file_name.lower().endswith((".csv", ".txt")):
        file_name = f"{activity.id}.csv"
    for attempt in range(1, _FILE_ATTEMPTS + 1):
        db.execute(f"DELETE FROM {table}")
        decoder = ExportCsvDecoder.for_file_name(file_name)
        projection: list[int] | None = None
        batch: list[list[str]] = []
        count = 0
        try:
            async with client.stream_download(
                f"activities/{file_name}", read_size=FEED_SLICE_BYTES
            ) as body:
                async for piece in body:
                    for row in decoder.decode(piece):
                        if projection is None:
                            assert decoder.header is not None
                            projection = header_projection(decoder.header, columns)
                        batch.append([_cell(row.values, i, row.line) for i in projection])
                    if len(batch) >= _BATCH:
                        insert(db, batch)
                        count += len(batch)
                        batch = []
        except BodyBrokenOff as exc:
            if attempt == _FILE_ATTEMPTS:
                raise TransportError(f"the export file kept breaking off ({exc})") from exc
            continue
        for row in decoder.flush():
            if projection is None:
                assert decoder.header is not None
                projection = header_projection(decoder.header, columns)
            batch.append([_cell(row.values, i, row.line) for i in projection])
        if decoder.header is None:
            raise ProtocolError(f"the export file {file_name} is empty (no header)")
        insert(db, batch)
        count += len(batch)
        if count != activity.transaction_count:
            raise ProtocolError(
                f"the export file {file_name} has {count:,} rows but its activity's "
                f"TransactionCount is {activity.transaction_count:,}"
            )
        return


def _cell(values: Sequence[str], index: int, line: int) -> str:
    try:
        return values[index]
    except IndexError:
        raise ProtocolError(f"record {line} of the export file is short of cells") from None


# -- the incremental read -----------------------------------------------------------------------


async def _incremental(
    client: Client,
    spec: BaseSpec,
    db: sqlite3.Connection,
    path: Path,
    list_id: str,
    contact_count: int | None,
    now: datetime,
    in_place: bool = False,
) -> None:
    """Bring the snapshot at ``path`` up to date in ``db`` (copied in, or where it is
    attached as ``snap`` with ``in_place``).

    Raises:
        _FallBack: it cannot be proven current (the message says why).
    """
    if in_place:
        since = parse_time(check_meta(db, SNAP, spec.columns, now, HISTORY_HORIZON)["as_of"])
    else:
        since = _copy_snapshot_in(db, path, spec, now)
    db.execute("CREATE TEMP TABLE IF NOT EXISTS sb_dirty (email_key TEXT PRIMARY KEY)")
    db.execute("DELETE FROM temp.sb_dirty")
    budget = full_read_cost(contact_count or 0)
    db.execute("DROP TABLE IF EXISTS temp.sb_changed")
    db.execute("DROP TABLE IF EXISTS temp.sb_on_list")
    db.execute(
        "CREATE TEMP TABLE sb_changed (contact_id TEXT PRIMARY KEY, email_key TEXT NOT NULL,"
        " dnm INTEGER NOT NULL)"
    )
    db.execute("CREATE TEMP TABLE sb_on_list (contact_id TEXT PRIMARY KEY)")
    try:
        query = urlencode({"updatedsince": format_time(since)})
        try:
            pages = await _walk(client, f"contacts?{query}", db, budget, _note_changed)
        except ApiError as exc:
            if exc.status != 400:
                raise
            raise _FallBack(
                "the server does not answer updatedsince without a list filter "
                f"(HTTP 400: {exc.message})"
            ) from None
        (changed,) = db.execute("SELECT count(*) FROM sb_changed").fetchone()
        db.execute("INSERT OR IGNORE INTO temp.sb_dirty SELECT email_key FROM sb_changed")
        if changed:
            query = urlencode({"updatedsince": format_time(since), "listid": list_id})
            pages += await _walk(client, f"contacts?{query}", db, budget - pages, _note_on_list)
            await _apply_changes(client, db, spec.columns, budget - pages)
            # The count check below must compare with the list the walks saw: a list whose
            # size moved while they ran (a change they may have half seen) is read anew.
            again = await client.get_entry(f"lists/{list_id}", list_from_entry)
            if again.contact_count != contact_count:
                raise _FallBack("the list changed while it was read")
        (members,) = db.execute("SELECT count(*) FROM base_member").fetchone()
        if contact_count is not None and members != contact_count:
            raise _FallBack(
                f"the snapshot brought up to date has {members:,} members but the list has "
                f"{contact_count:,} (it changed while it was read, or in a way the API "
                "does not show, e.g. an address changed)"
            )
    finally:
        db.execute("DROP TABLE IF EXISTS temp.sb_changed")
        db.execute("DROP TABLE IF EXISTS temp.sb_on_list")


async def _walk(
    client: Client,
    href: str,
    db: sqlite3.Connection,
    budget: int,
    note: Callable[[sqlite3.Connection, list[Contact]], None],
) -> int:
    """Walk a feed of contacts into a temporary table (``note(db, contacts)``); return the
    pages read.

    Raises:
        _FallBack: more pages than ``budget``.
    """
    pages = 0
    async with contextlib.aclosing(client.iter_feed(href, record_from_entry)) as feed:
        async for page in feed:
            pages += 1
            if pages > budget:
                raise _FallBack(
                    f"more than {pages * 50 - 50:,} contacts changed since the snapshot: "
                    "a full read costs less"
                )
            contacts = [record for record in page if isinstance(record, Contact)]
            if len(contacts) != len(page):
                raise ProtocolError(f"{href} answered with entries that are not contacts")
            note(db, contacts)
    return pages


def _note_changed(db: sqlite3.Connection, contacts: list[Contact]) -> None:
    db.executemany(
        "INSERT OR REPLACE INTO sb_changed (contact_id, email_key, dnm) VALUES (?, ?, ?)",
        [
            (c.id, c.fields.get("EmailAddress", "").lower(), int(c.status == DO_NOT_MAIL))
            for c in contacts
        ],
    )


def _note_on_list(db: sqlite3.Connection, contacts: list[Contact]) -> None:
    db.executemany(
        "INSERT OR IGNORE INTO sb_on_list (contact_id) VALUES (?)", [(c.id,) for c in contacts]
    )


async def _apply_changes(
    client: Client, db: sqlite3.Connection, columns: Sequence[str], budget: int
) -> None:
    """Changed contacts leave the base; those on the list come back with their values; the
    opted-out set follows their status.

    Raises:
        _FallBack: more members to fetch than ``budget``.
    """
    (fetches,) = db.execute(
        "SELECT count(*) FROM sb_changed WHERE contact_id IN (SELECT contact_id FROM sb_on_list)"
    ).fetchone()
    if fetches > budget:
        raise _FallBack(
            f"{fetches:,} members changed since the snapshot: reading them one by one would "
            "cost more than a full read"
        )
    # A contact whose address changed leaves its old key behind: the count check finds it.
    db.execute("DELETE FROM base_member WHERE email_key IN (SELECT email_key FROM sb_changed)")
    db.execute(
        "DELETE FROM base_opted_out WHERE email_key IN"
        " (SELECT email_key FROM sb_changed WHERE dnm = 0)"
    )
    db.execute(
        "INSERT OR IGNORE INTO base_opted_out (email_key)"
        " SELECT email_key FROM sb_changed WHERE dnm = 1"
    )
    cursor = db.execute(
        "SELECT contact_id FROM sb_changed WHERE contact_id IN (SELECT contact_id FROM sb_on_list)"
        " ORDER BY contact_id"
    )
    while ids := [row[0] for row in cursor.fetchmany(_BATCH)]:
        rows = await _fetch_contacts(client, ids, columns)
        db.executemany(
            "INSERT OR REPLACE INTO base_member (email_key, email, contact_uri, vals)"
            " VALUES (?, ?, ?, ?)",
            rows,
        )


async def _fetch_contacts(
    client: Client, ids: list[str], columns: Sequence[str]
) -> list[tuple[str, str, str, str]]:
    """``(email_key, email, contact_uri, vals)`` of each contact, fetched a few at a time."""
    found: list[tuple[str, str, str, str] | None] = [None] * len(ids)
    limiter = trio.CapacityLimiter(_FETCH_CONCURRENCY)

    async def fetch(index: int, contact_id: str) -> None:
        async with limiter:
            contact = await client.get_entry(f"contacts/{contact_id}", record_from_entry)
        if not isinstance(contact, Contact):
            raise ProtocolError(f"contacts/{contact_id} is not a contact entry")
        email = contact.fields.get("EmailAddress", "")
        vals = _VALS.encode([contact.fields.get(name, "") for name in columns]).decode()
        found[index] = (email.lower(), email, client.url(f"contacts/{contact_id}"), vals)

    with single_errors():
        async with trio.open_nursery() as nursery:
            for index, contact_id in enumerate(ids):
                nursery.start_soon(fetch, index, contact_id)
    return [row for row in found if row is not None]


# ---------------------------------------------------------------------------------------------
# Snapshots
# ---------------------------------------------------------------------------------------------


def snapshot_path(snapshot_dir: Path, client_or_account: Client | str, spec: BaseSpec) -> Path:
    """The snapshot file of (account, list) under ``snapshot_dir``
    (:func:`~bulkops.engine.sync_snap.snapshot_file`); the account is its URL
    (``client.account_url``)."""
    account = (
        client_or_account.account_url
        if isinstance(client_or_account, Client)
        else client_or_account
    )
    return snapshot_file(snapshot_dir, account, spec.list_uri)


def _copy_snapshot_in(
    db: sqlite3.Connection, path: Path, spec: BaseSpec, now: datetime
) -> datetime:
    """Replace the base tables' contents with the snapshot's; return its ``as_of``.

    Raises:
        _FallBack: unreadable, another version, other columns, or older than the horizon.
    """
    attach(db, path, "sb_snap")
    try:
        meta = check_meta(db, "sb_snap", spec.columns, now, HISTORY_HORIZON)
        db.execute("DELETE FROM base_member")
        db.execute("DELETE FROM base_opted_out")
        db.execute(
            "INSERT INTO base_member (email_key, email, contact_uri, vals)"
            " SELECT email_key, email, contact_uri, vals FROM sb_snap.base_member"
        )
        db.execute(
            "INSERT INTO base_opted_out (email_key) SELECT email_key FROM sb_snap.base_opted_out"
        )
        db.commit()
        return parse_time(meta["as_of"])
    except sqlite3.Error as exc:
        db.rollback()
        raise _FallBack(f"the snapshot cannot be read ({exc})") from None
    finally:
        detach(db, "sb_snap")


def save_snapshot(
    spec: BaseSpec,
    db: sqlite3.Connection,
    info: BaseInfo,
    account: str,
    records: Callable[[sqlite3.Connection, str], RecordSet | None] | None = None,
) -> None:
    """Store ``base_member`` and ``base_opted_out`` of ``db`` as the snapshot of (account,
    list, columns), valid at ``info.snapshot_as_of`` (``info.as_of`` when unset); nothing
    when ``spec.snapshot_dir`` is None.

    Call it after a sync completed, once ``base_member`` holds what the server confirmed.
    Pending changes of ``db`` are committed first. The file (mode 0600) is written under a
    temporary name, made durable, and renamed over the previous snapshot
    (:func:`~bulkops.engine.sync_snap.write_snapshot`).

    Args:
        account: the account's URL (``client.account_url``).
        records: builds the record set of the sync's file (none: the next sync reads its
            whole file).
    """
    if spec.snapshot_dir is None:
        return
    write_snapshot(
        db,
        snapshot_path(spec.snapshot_dir, account, spec),
        columns=spec.columns,
        list_uri=spec.list_uri,
        as_of=info.snapshot_as_of or info.as_of,
        records=records,
    )
