"""The snapshot of a list: one SQLite file per (account, list) under ``$BULKOPS_HOME``.

Schema (version 2)::

    meta(key TEXT PRIMARY KEY, value TEXT)   -- version, columns, as_of, list_uri,
                                             -- generation, record_key, uncovered
    base_member(email_key TEXT PRIMARY KEY, email TEXT NOT NULL, contact_uri TEXT,
                vals TEXT NOT NULL)
    base_opted_out(email_key TEXT PRIMARY KEY)
    record_set(id INTEGER PRIMARY KEY, digests BLOB, tags BLOB, rowids BLOB)

``record_set`` holds one row: the record set of the file of the sync that saved the
snapshot (:mod:`bulkops.engine.sync_records`), three packed arrays in file order (8-byte
digests, 4-byte tags, 4-byte ``base_member`` rowids); ``record_key`` binds it to that file's
header and reading options, ``uncovered`` counts the members no entry covers.

Two ways to write one, both crash-safe (a process killed at any point leaves the old
snapshot or the new one, never a mix):

* :func:`write_snapshot` (after a full read, or a sync that read its base in full): a new
  file written under a temporary name, made durable and renamed over the old one.
* **In place** (a sync whose base was the snapshot itself, attached to its database as
  ``snap``): changes the server showed are applied as they are read (a snapshot whose
  members are newer than its ``as_of`` is still valid: the next window shows those changes
  again), and :func:`commit_in_place` applies the sync's confirmed changes, the new record
  set and the new ``as_of`` in one transaction. ``generation`` changes with every commit, so
  a sync resumed after another one committed does not write its older view.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import sqlite3
import tempfile
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeAlias, overload
from urllib.parse import urlsplit

import attrs
import msgspec

from bulkops.engine.server_urls import LOOPBACK
from bulkops.engine.sync_records import OldSet
from bulkops.wire.atom.syntax import parse_time
from bulkops.wire.uris import resource_id_from_uri

__all__ = [
    "SNAPSHOT_VERSION",
    "BlobColumn",
    "DigestWindow",
    "Piece",
    "RecordSet",
    "SnapshotUnusable",
    "attach",
    "check_meta",
    "commit_in_place",
    "is_run",
    "read_old_set",
    "runs_of",
    "set_as_of",
    "snapshot_file",
    "write_snapshot",
]

SNAPSHOT_VERSION = 2
#: The name the snapshot is attached under when a sync uses it in place.
SNAP = "snap"

_ENCODE = msgspec.json.Encoder()
_PIECE = 1 << 20  # bytes of a record set blob read or written at a time
_SMALL_RUN = 16  # runs_of: ranges this short are walked entry by entry
_WINDOW = 1 << 16  # entries a BlobColumn reads at a time

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS base_member (email_key TEXT PRIMARY KEY, email TEXT NOT NULL,"
    " contact_uri TEXT, vals TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS base_opted_out (email_key TEXT PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS record_set (id INTEGER PRIMARY KEY, digests BLOB NOT NULL,"
    " tags BLOB NOT NULL, rowids BLOB NOT NULL)",
)


class SnapshotUnusable(Exception):
    """The snapshot cannot be used (the message says why)."""


#: One piece of a record set: digests, tags and rowids of consecutive entries.
Piece: TypeAlias = "tuple[array[int], array[int], array[int]]"


@attrs.define
class RecordSet:
    """A record set to store: bound to ``key``; ``count`` entries, given in order by
    ``pieces()`` (so the set is never whole in memory twice); ``uncovered`` members no entry
    covers."""

    key: str
    count: int
    pieces: Callable[[], Iterable[Piece]]
    uncovered: int

    @classmethod
    def of_arrays(
        cls, key: str, digests: array[int], tags: array[int], rowids: array[int], uncovered: int
    ) -> RecordSet:
        """A set held in three arrays."""
        return cls(key, len(digests), lambda: [(digests, tags, rowids)], uncovered)


def snapshot_file(snapshot_dir: Path, account: str, list_uri: str) -> Path:
    """The snapshot file of (account, list) under ``snapshot_dir``.

    On loopback hosts the port does not count (the embedded server binds a new one every
    run), as in :func:`~bulkops.engine.client.same_account`.
    """
    parts = urlsplit(account)
    host = parts.hostname or ""
    where = host if host in LOOPBACK else parts.netloc.rsplit("@", 1)[-1].lower()
    list_id = resource_id_from_uri(list_uri, "lists") or list_uri
    key = f"{parts.scheme}://{where}{parts.path.lower()}\n{list_id}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return Path(snapshot_dir) / f"{digest}.sqlite"


def check_meta(
    db: sqlite3.Connection, schema: str, columns: Sequence[str], now: datetime, horizon: timedelta
) -> dict[str, str]:
    """The meta of the snapshot attached as ``schema``, checked.

    Raises:
        SnapshotUnusable: unreadable, another version, other columns, or older than
            ``horizon``.
    """
    try:
        meta = dict(db.execute(f"SELECT key, value FROM {schema}.meta").fetchall())
        if meta.get("version") != str(SNAPSHOT_VERSION):
            raise SnapshotUnusable(f"the snapshot has version {meta.get('version')!r}")
        kept = tuple(msgspec.json.decode(meta["columns"], type=list[str]))
        if kept != tuple(columns):
            raise SnapshotUnusable(
                f"the file maps other columns ({', '.join(columns) or 'none'}) than the "
                f"snapshot ({', '.join(kept) or 'none'})"
            )
        as_of = parse_time(meta["as_of"])
    except (sqlite3.Error, KeyError, ValueError, msgspec.DecodeError) as exc:
        raise SnapshotUnusable(f"the snapshot cannot be read ({exc})") from None
    if now - as_of > horizon:
        raise SnapshotUnusable(
            f"the snapshot ({meta['as_of']}) is older than the {horizon.days} days "
            "of history the server keeps"
        )
    return meta


def attach(db: sqlite3.Connection, path: Path, schema: str = SNAP) -> None:
    """Attach the snapshot at ``path`` as ``schema`` (durable commits: ``synchronous=FULL``).

    Raises:
        SnapshotUnusable: it cannot be opened.
    """
    if db.in_transaction:
        db.commit()  # ATTACH needs no transaction open
    try:
        db.execute("ATTACH DATABASE ? AS " + schema, (str(path),))
        db.execute(f"PRAGMA {schema}.synchronous = FULL")
        db.execute(f"PRAGMA {schema}.journal_mode = DELETE")
    except sqlite3.Error as exc:
        with contextlib.suppress(sqlite3.Error):
            db.execute("DETACH DATABASE " + schema)
        raise SnapshotUnusable(f"the snapshot cannot be read ({exc})") from None


def detach(db: sqlite3.Connection, schema: str = SNAP) -> None:
    """Detach ``schema`` when it is attached."""
    names = {row[1] for row in db.execute("PRAGMA database_list")}
    if schema in names:
        if db.in_transaction:
            db.commit()
        db.execute("DETACH DATABASE " + schema)


def read_old_set(db: sqlite3.Connection, schema: str = SNAP) -> tuple[OldSet, int]:
    """The record set of the attached snapshot (empty when it has none), and its row id.
    Its digests are read a window at a time (:class:`DigestWindow`: close it when done),
    its tags and rowids when asked (:class:`BlobColumn`).

    Raises:
        sqlite3.DataError: the blobs are not one whole entry each for every entry.
    """
    row = db.execute(f"SELECT id FROM {schema}.record_set").fetchone()
    if row is None:
        return OldSet(), 0
    set_id = int(row[0])
    sizes = db.execute(
        f"SELECT length(digests), length(tags), length(rowids) FROM {schema}.record_set"
        " WHERE id = ?",
        (set_id,),
    ).fetchone()
    total = sizes[0] // 8
    if sizes != (8 * total, 4 * total, 4 * total):
        raise sqlite3.DataError("the record set's blobs are not one whole entry each")
    return OldSet(DigestWindow(BlobColumn(db, set_id, "digests", schema), total)), set_id


class BlobColumn:
    """A column of a record set (``digests``: 8 bytes an entry, ``tags``, ``rowids``: 4),
    read from its blob when asked: those bytes stay on disk, not in memory.

    One blob handle serves every read until :meth:`close` (a new handle would walk the
    blob's pages from its start each time), and reads go through a window of
    :data:`_WINDOW` entries: the entries a sync asks for mostly ascend, so each window read
    serves many :meth:`take` calls. Without a set (``set_id`` 0) the column is empty."""

    def __init__(
        self, db: sqlite3.Connection, set_id: int, column: str, schema: str = SNAP
    ) -> None:
        self._db, self._id, self._column, self._schema = db, set_id, column, schema
        self._code = "Q" if column == "digests" else "I"
        self._size = array(self._code).itemsize
        self._blob: sqlite3.Blob | None = None
        self._window = array(self._code)
        self._at = 0  # the entry the window starts at

    def _handle(self) -> sqlite3.Blob:
        if self._blob is None:
            self._blob = self._db.blobopen(
                "record_set", self._column, self._id, readonly=True, name=self._schema
            )
        return self._blob

    def read(self, first: int, count: int) -> array[int]:
        """``count`` entries from ``first`` on (fewer at the end), read now."""
        out = array(self._code)
        blob = self._handle()
        blob.seek(first * self._size)
        out.frombytes(blob.read(count * self._size))
        return out

    def take(self, entries: array[int], runs: list[tuple[int, int]] | None = None) -> array[int]:
        """The values of ``entries`` (old entry indexes, in that order): a slice of the
        window per run of consecutive entries (``runs``: :func:`runs_of` them, if known)."""
        out = array(self._code)
        for a, b in runs_of(entries) if runs is None else runs:
            first, count = entries[a], b - a
            offset = first - self._at
            if offset < 0 or offset + count > len(self._window):
                if count >= _WINDOW:
                    out.extend(self.read(first, count))
                    continue
                self._window = self.read(first, _WINDOW)
                self._at, offset = first, 0
            out.extend(self._window[offset : offset + count])
        return out

    def pieces(self) -> Iterator[array[int]]:
        """The whole column in order, a piece at a time."""
        if not self._id:
            return
        blob = self._handle()
        blob.seek(0)
        while data := blob.read(_PIECE):
            piece = array(self._code)
            piece.frombytes(data)
            yield piece

    def close(self) -> None:
        """Close the blob handle (the next read opens another) and drop the window."""
        if self._blob is not None:
            self._blob.close()
            self._blob = None
        self._window = array(self._code)
        self._at = 0


class DigestWindow:
    """The digests of a record set as :func:`~bulkops.engine.sync_records.scan` reads them
    (``len``, an entry, a slice, ``index`` in a range), from disk: only :data:`_WINDOW`
    entries (512 KiB) are held, where the whole array took 8 bytes an old entry. The scan
    moves forward through them, so a window is read about once."""

    def __init__(self, column: BlobColumn, total: int) -> None:
        self._column, self._total = column, total
        self._window = array("Q")
        self._at = 0

    def __len__(self) -> int:
        return self._total

    def _covering(self, start: int, stop: int) -> int:
        """The window's offset of ``start`` once ``[start, stop)`` is in it."""
        offset = start - self._at
        if offset < 0 or stop - self._at > len(self._window):
            self._window = self._column.read(start, max(_WINDOW, stop - start))
            self._at, offset = start, 0
        return offset

    @overload
    def __getitem__(self, key: int) -> int: ...

    @overload
    def __getitem__(self, key: slice) -> array[int]: ...

    def __getitem__(self, key: int | slice) -> int | array[int]:
        if isinstance(key, slice):
            start, stop, step = key.indices(self._total)
            if step != 1:
                raise ValueError("a DigestWindow is sliced with step 1 only")
            if stop <= start:
                return array("Q")
            offset = self._covering(start, stop)
            return self._window[offset : offset + stop - start]
        if not 0 <= key < self._total:
            raise IndexError(key)
        offset = self._covering(key, key + 1)  # (it may replace the window)
        return self._window[offset]

    def close(self) -> None:
        """Close the blob handle and drop the window."""
        self._column.close()
        self._window = array("Q")
        self._at = 0

    def index(self, value: int, start: int, stop: int, /) -> int:
        """Where ``value`` is first in ``[start, stop)``; ValueError when it is not."""
        stop = min(stop, self._total)
        if stop <= start:
            raise ValueError(value)
        offset = self._covering(start, stop)
        return self._window.index(value, offset, offset + stop - start) - offset + start


def is_run(entries: array[int]) -> bool:
    """Whether ``entries`` (not empty) are consecutive ascending integers (checked in C)."""
    first = entries[0]
    return entries[-1] - first == len(entries) - 1 and entries == array(
        entries.typecode, range(first, first + len(entries))
    )


def runs_of(entries: array[int]) -> list[tuple[int, int]]:
    """The maximal runs of consecutive ascending integers in ``entries``, as ``(start, end)``
    index ranges covering it in order. Halved until each half is a run (compared in C): about
    ``log2`` of the breaks passes over it, not a Python step per entry."""
    found: list[tuple[int, int]] = []
    todo = [(0, len(entries))] if entries else []
    while todo:
        a, b = todo.pop()
        if b - a <= _SMALL_RUN:
            for i in range(a, b):
                if found and found[-1][1] == i and entries[i - 1] + 1 == entries[i]:
                    found[-1] = (found[-1][0], i + 1)
                else:
                    found.append((i, i + 1))
        elif is_run(entries[a:b]):
            if found and found[-1][1] == a and entries[a - 1] + 1 == entries[a]:
                found[-1] = (found[-1][0], b)
            else:
                found.append((a, b))
        else:
            mid = (a + b) // 2
            todo += [(mid, b), (a, mid)]  # the left half first
    return found


def _write_blobs(db: sqlite3.Connection, schema: str, records: RecordSet) -> int:
    """The set into a new ``record_set`` row, a piece at a time; its id."""
    sizes = (records.count * 8, records.count * 4, records.count * 4)
    cursor = db.execute(
        f"INSERT INTO {schema}.record_set (digests, tags, rowids)"
        " VALUES (zeroblob(?), zeroblob(?), zeroblob(?))",
        sizes,
    )
    set_id = cursor.lastrowid
    assert set_id is not None
    columns = ("digests", "tags", "rowids")
    with contextlib.ExitStack() as stack:
        blobs = [
            stack.enter_context(db.blobopen("record_set", column, set_id, name=schema))
            for column in columns
        ]
        written = 0
        for piece in records.pieces():
            for blob, values in zip(blobs, piece, strict=True):
                blob.write(memoryview(values).cast("B"))
            written += len(piece[0])
    if written != records.count:
        raise ValueError(f"a record set of {records.count} entries gave {written}")
    return set_id


def _store_set(db: sqlite3.Connection, schema: str, records: RecordSet | None) -> str:
    """Replace the record set (and its meta); returns the new generation. The new row is
    written before the old one goes (its pieces may be read from the old one)."""
    if records is None:
        db.execute(f"DELETE FROM {schema}.record_set")
        meta = {"record_key": "", "uncovered": "0"}
    else:
        new = _write_blobs(db, schema, records)
        db.execute(f"DELETE FROM {schema}.record_set WHERE id != ?", (new,))
        meta = {"record_key": records.key, "uncovered": str(records.uncovered)}
    meta["generation"] = secrets.token_hex(8)
    db.executemany(f"INSERT OR REPLACE INTO {schema}.meta VALUES (?, ?)", meta.items())
    return meta["generation"]


def write_snapshot(
    db: sqlite3.Connection,
    target: Path,
    *,
    columns: Sequence[str],
    list_uri: str,
    as_of: str,
    records: Callable[[sqlite3.Connection, str], RecordSet | None] | None = None,
) -> None:
    """Write ``base_member`` and ``base_opted_out`` of ``db`` (its main schema) as a new
    snapshot at ``target``: a temporary file (mode 0600) made durable and renamed over it.

    Args:
        records: builds the record set once the members are in the new file (given the
            connection and the new file's schema name, to read the members' rowids).
    """
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)  # mkstemp made it 0600
    try:
        db.commit()
        db.execute("ATTACH DATABASE ? AS sb_out", (temp,))
        try:
            for statement in SCHEMA:
                db.execute(statement.replace("EXISTS ", "EXISTS sb_out.", 1))
            meta = {
                "version": str(SNAPSHOT_VERSION),
                "columns": _ENCODE.encode(list(columns)).decode(),
                "as_of": as_of,
                "list_uri": list_uri,
            }
            db.execute("BEGIN")
            db.executemany("INSERT INTO sb_out.meta VALUES (?, ?)", meta.items())
            db.execute(
                "INSERT INTO sb_out.base_member SELECT email_key, email, contact_uri, vals"
                " FROM main.base_member ORDER BY email_key"
            )
            db.execute(
                "INSERT INTO sb_out.base_opted_out SELECT email_key FROM main.base_opted_out"
                " ORDER BY email_key"
            )
            _store_set(db, "sb_out", records(db, "sb_out") if records is not None else None)
            db.commit()
        finally:
            if db.in_transaction:
                db.rollback()
            db.execute("DETACH DATABASE sb_out")
        _fsync(Path(temp))
        os.replace(temp, target)
        _fsync(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def commit_in_place(
    db: sqlite3.Connection,
    *,
    generation: str,
    apply: Callable[[sqlite3.Connection], RecordSet | None],
) -> str | None:
    """Apply a sync's confirmed changes to the snapshot attached as ``snap``, in one
    transaction: ``apply(db)`` changes ``snap.base_member`` and returns the new record set,
    which is stored with a new generation; ``as_of`` stays (:func:`set_as_of` moves it once
    the sync's end is proven: a snapshot newer than its ``as_of`` is valid meanwhile, its
    next read only sees the sync's own writes again). Returns the new generation; nothing is
    written (None) when the snapshot's generation is no longer ``generation`` (another sync
    committed since this one read it)."""
    with _while_generation(db, generation) as current:
        if not current:
            return None
        return _store_set(db, SNAP, apply(db))


def set_as_of(db: sqlite3.Connection, *, generation: str, as_of: str) -> bool:
    """Move the ``as_of`` of the snapshot attached as ``snap`` when its generation is still
    ``generation``; whether it was."""
    with _while_generation(db, generation) as current:
        if current:
            db.execute(f"INSERT OR REPLACE INTO {SNAP}.meta VALUES ('as_of', ?)", (as_of,))
        return current


@contextlib.contextmanager
def _while_generation(db: sqlite3.Connection, generation: str) -> Iterator[bool]:
    """One write transaction on the snapshot attached as ``snap``; yields whether its
    generation is still ``generation`` (if not, nothing is to be written). Committed when
    the block ends, rolled back when it raises."""
    if db.in_transaction:
        db.commit()
    db.execute("BEGIN IMMEDIATE")
    try:
        yield _generation(db) == generation
    except BaseException:
        db.rollback()
        raise
    db.commit()


def generation_of(path: Path) -> str | None:
    """The generation of the snapshot file at ``path`` (None: none there, or unreadable).

    Every save and every commit in place gives a snapshot a new generation: a sync planned
    against one generation and resumed under another is behind a newer sync.
    """
    if not path.is_file():
        return None
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
    except sqlite3.Error:
        return None
    finally:
        db.close()
    return None if row is None else str(row[0])


def _generation(db: sqlite3.Connection) -> str | None:
    row = db.execute(f"SELECT value FROM {SNAP}.meta WHERE key = 'generation'").fetchone()
    return None if row is None else str(row[0])


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
