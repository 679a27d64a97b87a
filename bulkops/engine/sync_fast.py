"""The fast plan of a sync: only the file's changed records are read, the snapshot is the
base where it lies.

When the list's snapshot holds a record set of the last sync's file under the same record
key (header and reading options), the file is cut into units and matched against it
(:func:`~bulkops.engine.sync_records.scan`). Then the **dirty tags** are collected — the
tags of the emails of

* old entries no unit matched (a row edited or gone),
* contacts the incremental read shows changed on the server (``temp.sb_dirty``),
* every row the pipeline read in this plan (fresh rows; their duplicates);

and the pipeline and the diff read the fresh units plus every matched unit whose tag is
dirty, with the file's line numbers (:class:`~bulkops.engine.sync_diff.FileRows`
``line_map``). Because every unit of a dirty tag is read, each email is read with all of its
rows or with none; an email with none read has all its rows matched to entries that were
the winning row of the email, confirmed on the server, and unchanged there since — so its
row is ``unchanged`` and it is a member: nothing to do. The members that may be removed are
those of the dirty tags (``temp.sb_cand``): a member whose email has no row in the file had
one last time (its entry disappeared), or changed on the server, or was not covered by the
last file — and a snapshot with uncovered members is not read this way under
``remove_missing``.

The result is the full read's exactly (outcomes, lines, reasons, counts): the tests compare
them (``tests/test_sync_fast.py``).
"""

from __future__ import annotations

import sqlite3
from array import array
from collections.abc import Iterable, Iterator
from itertools import compress
from pathlib import Path

import attrs
import msgspec

from bulkops.engine.sync_diff import FileRows
from bulkops.engine.sync_records import (
    NotSimple,
    OldSet,
    Scan,
    Unit,
    digest,
    iter_units,
    record_key,
    scan,
    tag,
    units_at,
)
from bulkops.engine.sync_snap import (
    SNAP,
    BlobColumn,
    DigestWindow,
    Piece,
    RecordSet,
    SnapshotUnusable,
    attach,
    detach,
    read_old_set,
    runs_of,
)
from bulkops.errors import InputError
from bulkops.stream.options import ReadOptions
from bulkops.stream.pipeline import Pipeline, PipelineOptions
from bulkops.stream.records import Header

__all__ = [
    "FastState",
    "build_record_set",
    "full_record_set",
    "prepare",
    "read_part",
    "resume_part",
]

#: What a row that is ``eligible`` for the record set ended as.
ELIGIBLE = ("unchanged", "added", "updated")
_FEED = 1 << 20
_PIECE_ENTRIES = 1 << 16  # record set entries written at a time
#: SQLite page cache of the sync database in a fast plan, KiB.
FAST_CACHE_KIB = 4_096

FAST_SCHEMA = """
CREATE TABLE IF NOT EXISTS fast_dirty (tag INTEGER PRIMARY KEY);
"""


@attrs.define
class FastState:
    """A fast plan in progress (kept by the run; rebuilt by :func:`prepare` on resume).

    Attributes:
        header: the header unit as read (with ``fields``, ``columns``).
        key: the record key of this file.
        scan: the file's units against the old set.
        old: the old set (its digests, released once the plan read what it must:
            :func:`read_part`); ``digests``, ``tags`` and ``rowids`` its columns on disk.
        generation: the snapshot's generation when it was read.
        dirty: the dirty tags.
        read_at: the units the pipeline read: ``(unit index, first line, digest)`` in file
            order.
    """

    header: Header
    fields: tuple[str, ...]
    key: str
    scan: Scan
    old: OldSet
    digests: BlobColumn
    tags: BlobColumn
    rowids: BlobColumn
    generation: str
    dirty: set[int] = attrs.field(factory=set)
    read_at: list[tuple[int, int, int]] = attrs.field(factory=list)

    @property
    def skipped(self) -> int:
        """Units not read (each an ``unchanged`` row)."""
        return len(self.scan.match) - len(self.read_at)


def options_text(read: ReadOptions) -> str:
    """The reading options, as the record key holds them."""
    return msgspec.json.encode(msgspec.to_builtins(read)).decode()


def read_header(path: Path, read: ReadOptions, list_uri: str) -> tuple[Header, Unit] | None:
    """The header as the pipeline reads it, and its unit; None when the file is not a
    UTF-8 CSV file the fast plan can cut."""
    if read.format == "xml":
        return None
    try:
        first = next(iter_units(path), None)
    except (NotSimple, OSError):
        return None
    if first is None or first.content.startswith(b"<"):
        return None
    pipeline = Pipeline(PipelineOptions(lists=[list_uri], read=read))
    try:
        events = pipeline.decode(first.content + b"\n") + pipeline.flush()
    except InputError:
        return None
    for event in events:
        if isinstance(event, Header):
            if event.encoding != "utf-8" or not event.delimiter:
                return None
            return event, first
    return None


def prepare(
    db: sqlite3.Connection,
    path: Path,
    snapshot: Path,
    read: ReadOptions,
    list_uri: str,
    *,
    remove_missing: bool,
) -> tuple[FastState | None, str]:
    """Attach the snapshot and match the file against its record set: the state of a fast
    plan, or None and why not (the snapshot is then detached)."""
    found = read_header(path, read, list_uri)
    if found is None:
        return None, "the file is not a UTF-8 CSV file"
    header, unit = found
    key = record_key(unit.content, options_text(read))
    detach(db)
    try:
        attach(db, snapshot)
    except SnapshotUnusable as exc:
        return None, str(exc)
    try:
        meta = dict(db.execute(f"SELECT key, value FROM {SNAP}.meta").fetchall())
        if meta.get("record_key") != key:
            raise SnapshotUnusable("the snapshot holds no record set of this header")
        if remove_missing and meta.get("uncovered") != "0":
            raise SnapshotUnusable("the list has members the last file did not hold")
        old, set_id = read_old_set(db)
        if not set_id:
            raise SnapshotUnusable("the snapshot holds no record set")
        digests, tags, rowids = (BlobColumn(db, set_id, c) for c in ("digests", "tags", "rowids"))
        try:
            matched = scan(path, old, header.delimiter)
        finally:
            if isinstance(old.digests, DigestWindow):
                old.digests.close()
        fields = _fields(header)
    except (SnapshotUnusable, NotSimple, sqlite3.Error, OSError) as exc:
        detach(db)
        return None, str(exc)
    generation = meta.get("generation", "")
    state = FastState(header, fields, key, matched, old, digests, tags, rowids, generation)
    return state, ""


def _fields(header: Header) -> tuple[str, ...]:
    from bulkops.engine.sync_diff import _field_of

    return tuple(_field_of(name) for name in header.sent)


def read_part(
    db: sqlite3.Connection,
    state: FastState,
    path: Path,
    read: ReadOptions,
    list_uri: str,
) -> int:
    """Read the units that must be read (fresh, or of a dirty tag) into ``file_row`` and
    ``row_outcome``; fill ``temp.sb_cand`` and ``fast_dirty``. Returns the rows read."""
    db.executescript(FAST_SCHEMA)
    # The rows read are a few of the file's: a small page cache holds them (the full plan's
    # 16 MiB would only fill with them and stay, ~12 MiB of the peak at 5M rows).
    db.execute(f"PRAGMA main.cache_size = -{FAST_CACHE_KIB}")
    dirty = set(state.tags.take(array("i", state.scan.disappeared())))
    changed = [row[0] for row in db.execute("SELECT email_key FROM temp.sb_dirty")]
    dirty.update(map(tag, changed))
    for table in ("file_row", "row_outcome"):
        db.execute(f"DELETE FROM {table}")
    rows = _read(db, state, _read_set(state, dirty, path), read, list_uri)
    while True:
        # The emails just read make their tags dirty: the units of those tags not read yet
        # are read too (a pass of their own: the diff dedupes across passes, and names
        # every duplicate's last row, so the outcomes are those of one pass).
        keys = db.execute(
            "SELECT email_key FROM file_row UNION SELECT email_key FROM row_outcome"
            " WHERE kind = 'duplicate'"
        )
        more = {tag(k) for (k,) in keys if k is not None} - dirty
        dirty |= more
        extra = _units_of_tags(state, more)
        if not extra:
            break
        units = units_at(path, state.header.delimiter, state.scan.restarts, extra)
        match = state.scan.match
        found = state.digests.take(array("i", [match[i] for i in extra]))
        added = [(i, u.line, d) for i, u, d in zip(extra, units, found, strict=True)]
        state.read_at = sorted([*state.read_at, *added])
        rows += _read(db, state, units, read, list_uri)
    state.dirty = dirty
    db.execute("BEGIN")
    try:
        db.execute("DELETE FROM fast_dirty")
        db.executemany("INSERT INTO fast_dirty VALUES (?)", [(t,) for t in dirty])
        _candidates(db, state, changed)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    _release(state)
    return rows


def _release(state: FastState) -> None:
    """What only the reading needed goes (a byte of ``seen`` per old entry, the fresh
    units' bytes): the commit needs the matches and ``read_at`` (and reads the old digests
    it keeps from disk: ``state.digests``). The blob handles are closed (an open one keeps
    SQLite from dropping a table: the diff's temporary ones)."""
    for column in (state.digests, state.tags, state.rowids):
        column.close()
    state.scan.seen = bytearray()
    state.scan.fresh = []


def resume_part(db: sqlite3.Connection, state: FastState, path: Path) -> None:
    """A fast plan taken up in a new process: the units read, from the stored dirty tags."""
    state.dirty = {row[0] for row in db.execute("SELECT tag FROM fast_dirty")}
    _read_set(state, state.dirty, path)
    _release(state)


def _read_set(state: FastState, dirty: set[int], path: Path) -> list[Unit]:
    """The units to read (in file order); sets ``state.read_at``."""
    sc = state.scan
    match = sc.match
    matched_at = _units_of_tags(state, dirty)
    matched = units_at(path, state.header.delimiter, sc.restarts, matched_at)
    at = [(i, u.line, digest(u.content)) for i, u in zip(sc.fresh_at, sc.fresh, strict=True)]
    found = state.digests.take(array("i", [match[i] for i in matched_at]))
    at += [(i, u.line, d) for i, u, d in zip(matched_at, matched, found, strict=True)]
    state.read_at = sorted(at)
    return sorted([*sc.fresh, *matched], key=lambda u: u.line)


def _units_of_tags(state: FastState, tags: set[int]) -> list[int]:
    """The matched units whose old entry has one of ``tags`` (ascending): two passes in C."""
    if not tags:
        return []
    entries: set[int] = set()
    at = 0
    for piece in state.tags.pieces():  # a piece at a time from disk, each looked up in C
        entries.update(compress(range(at, at + len(piece)), map(tags.__contains__, piece)))
        at += len(piece)
    if not entries:
        return []
    match = state.scan.match
    return list(compress(range(len(match)), map(entries.__contains__, match)))


def _read(
    db: sqlite3.Connection, state: FastState, units: list[Unit], read: ReadOptions, uri: str
) -> int:
    """The header and ``units`` through the pipeline, with the file's line numbers (added to
    what ``file_row`` and ``row_outcome`` hold)."""
    line_map = [0, *range(1, state.scan.header_lines + 1)]
    for unit in units:
        line_map.extend(range(unit.line, unit.line + unit.lines))
    reader = FileRows(db, read, uri, line_map=line_map)
    db.execute("BEGIN")
    try:
        for block in _unit_bytes(state, units):
            reader.feed(block)
        reader.feed(b"")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return reader.rows


def _unit_bytes(state: FastState, units: list[Unit]) -> Iterator[bytes]:
    """The header line, then each unit with a line break, about a MiB at a time."""
    pieces: list[bytes] = [state.scan.header + b"\n"]
    size = len(pieces[0])
    for unit in units:
        pieces.append(unit.content + b"\n")
        size += len(unit.content) + 1
        if size >= _FEED:
            yield b"".join(pieces)
            pieces, size = [], 0
    if pieces:
        yield b"".join(pieces)


def _candidates(db: sqlite3.Connection, state: FastState, changed: Iterable[str]) -> None:
    """``temp.sb_cand``: the members that may be removed (see the module docstring)."""
    db.execute("CREATE TEMP TABLE IF NOT EXISTS sb_cand (email_key TEXT PRIMARY KEY)")
    db.execute("DELETE FROM temp.sb_cand")
    db.executemany("INSERT OR IGNORE INTO temp.sb_cand VALUES (?)", [(k,) for k in changed])
    gone = array("i", state.scan.disappeared())
    gone_tags = dict(zip(gone, state.tags.take(gone), strict=True))
    db.execute("CREATE TEMP TABLE IF NOT EXISTS sb_gone (k INTEGER, member INTEGER)")
    db.execute("DELETE FROM temp.sb_gone")
    db.executemany(
        "INSERT INTO temp.sb_gone VALUES (?, ?)", zip(gone, state.rowids.take(gone), strict=True)
    )
    state.rowids.close()
    state.tags.close()
    rows = db.execute(
        f"SELECT g.k, m.email_key FROM temp.sb_gone g JOIN {SNAP}.base_member m"
        " ON m.rowid = g.member"
    )
    # A member rowid that moved: its contact changed on the server (already a candidate).
    db.executemany(
        "INSERT OR IGNORE INTO temp.sb_cand VALUES (?)",
        [(key,) for k, key in rows.fetchall() if tag(key) == gone_tags[k]],
    )
    db.execute("DELETE FROM temp.sb_gone")


def build_record_set(db: sqlite3.Connection, state: FastState) -> RecordSet | None:
    """The record set after a fast plan's changes were confirmed (in ``snap``): the units
    not read keep their entries, the units read that ended eligible get new ones. Built a
    piece at a time as it is written."""
    eligible: dict[int, tuple[int, int]] = {}
    rows = db.execute(
        f"SELECT o.line, o.email_key, m.rowid FROM row_outcome o JOIN {SNAP}.base_member m"
        " ON m.email_key = o.email_key WHERE o.kind IN ('unchanged', 'added', 'updated')"
    )
    read_lines = {line for _i, line, _d in state.read_at}
    for line, key, rowid in rows:
        if line in read_lines:
            eligible[line] = (tag(key), rowid)
    (members, top) = db.execute(f"SELECT count(*), max(rowid) FROM {SNAP}.base_member").fetchone()
    if top is not None and top >= 1 << 32:
        return None  # a rowid past 2**32: no set (the next sync reads the file)
    sc, old_digests, old_tags, rowids = state.scan, state.digests, state.tags, state.rowids
    count = len(sc.match) - len(state.read_at) + len(eligible)

    def pieces() -> Iterator[Piece]:
        # Whole pieces of about _PIECE_ENTRIES entries: the runs of units not read, with
        # the entries of the read ones that ended eligible between them.
        digests, tags, rids = array("Q"), array("I"), array("I")
        start = 0
        try:
            for i, line, unit_digest in [*state.read_at, (len(sc.match), 0, 0)]:
                for a in range(start, i, _PIECE_ENTRIES):
                    ks = sc.match[a : min(i, a + _PIECE_ENTRIES)]
                    runs = runs_of(ks)  # found once for the three columns
                    digests.extend(old_digests.take(ks, runs))
                    tags.extend(old_tags.take(ks, runs))
                    rids.extend(rowids.take(ks, runs))
                    if len(digests) >= _PIECE_ENTRIES:
                        yield digests, tags, rids
                        digests, tags, rids = array("Q"), array("I"), array("I")
                start = i + 1
                if line in eligible:
                    t, r = eligible[line]
                    digests.append(unit_digest)
                    tags.append(t)
                    rids.append(r)
            yield digests, tags, rids
        finally:
            rowids.close()
            old_tags.close()
            old_digests.close()

    return RecordSet(state.key, count, pieces, int(members) - count)


def full_record_set(
    db: sqlite3.Connection, schema: str, path: Path, read: ReadOptions, header: Header | None
) -> RecordSet | None:
    """The record set of a sync that read its whole file (``row_outcome`` holds every row),
    against the members in ``schema``; None when the file cannot be cut into units."""
    if header is None or header.encoding != "utf-8" or not header.delimiter:
        return None
    try:
        units = iter_units(path, header.delimiter)
        first = next(units)
        key = record_key(first.content, options_text(read))
        rows = db.execute(
            f"SELECT o.line, o.email_key, m.rowid FROM main.row_outcome o JOIN {schema}"
            ".base_member m ON m.email_key = o.email_key"
            " WHERE o.kind IN ('unchanged', 'added', 'updated') ORDER BY o.line"
        )
        digests, tags, rids = array("Q"), array("I"), array("I")
        unit = next(units, None)
        for line, key_text, rowid in rows:
            while unit is not None and unit.line < line:
                unit = next(units, None)
            if unit is None or unit.line != line:
                return None  # a row the cut does not start a unit at: no set
            digests.append(digest(unit.content))
            tags.append(tag(key_text))
            rids.append(rowid)
        for _rest in units:  # the whole file is cut (a NotSimple at its end counts)
            pass
    except (NotSimple, OSError, OverflowError):
        return None
    (members,) = db.execute(f"SELECT count(*) FROM {schema}.base_member").fetchone()
    return RecordSet.of_arrays(key, digests, tags, rids, int(members) - len(digests))
