"""Exports: a list's members or any paged collection, streamed to CSV or JSON Lines on disk.

Two ways to get a list out (spec §5, §7.9):

* ``via="activity"`` — an ``EXPORT_CONTACTS`` activity is posted and polled by the
  :class:`~bulkops.engine.tracker.ActivityTracker`; its file is streamed from
  ``GET /activities/{id}.csv`` through :class:`~bulkops.stream.export.ExportCsvDecoder`
  and converted to the requested format.
* ``via="feed"`` — the members feed is walked page by page (:func:`open_pages`); columns the
  feed does not carry are filled from each contact's full entry (``GET /contacts/{id}``,
  a bounded number at a time).

Every other paged collection (contacts, incremental sync with ``updatedsince``, lists,
activities, campaigns, any collection path) is walked the same way.

Invariants:

* **Constant memory.** Bytes go from the socket through the incremental decoders to the
  output file; at most ``prefetch + 2`` feed pages (50 entries each: the one being written
  and ``prefetch + 1`` requested ahead of it) or one 64 KiB piece of an export file are
  held, whatever the size of the export.
* **Bounded prefetch.** The walker requests page *k+1* as soon as page *k*'s ``next`` link
  has been read (:attr:`FeedDecoder.next_url`), while *k* is still arriving; at most
  ``prefetch + 1`` pages are requested and not yet taken by the consumer
  (:class:`WalkStats`). Pages are delivered in order. A page whose body breaks off is read
  again (its successor is not requested twice), and so is an export file, skipping the rows
  already written.
* **Atomic output.** Rows are written to a temporary file next to the target
  (``.{name}.{run}.part``), which is renamed over the target only when complete, after an
  ``fsync``; an interrupted export never leaves a partial target.
* **Resumable, deterministically.** Every ``checkpoint_rows`` rows, at a page (or export
  file record) boundary, the temporary file is flushed and fsync-ed, then the journal
  records the byte offset, the rows written, the cursor — the next page's href (the
  server's ``next`` token) or the activity id and the export file records consumed — and
  the high-water mark, in one transaction. A resumed run truncates the temporary file to
  that offset and continues from the cursor, so it writes the same bytes an uninterrupted
  run would have written.
* **Checked.** The rows written are compared with the list's ``ContactCount`` (feed) or the
  activity's ``TransactionCount`` (activity); a mismatch is reported (``count_check``,
  exit code 2), never silently accepted.
* **High-water mark.** For contacts the largest ``LastUpdateTime`` (or entry ``updated``)
  seen; the next incremental sync can start from it (``--updated-since RUN_DIR``). The
  server's ``updatedsince`` is inclusive, so nothing is missed at the boundary.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal, get_args
from urllib.parse import urlencode

import attrs
import msgspec
import trio

from bulkops.engine.client import Client, same_account
from bulkops.engine.journal import JOURNAL_NAME, Journal
from bulkops.engine.ledger import write_atomically
from bulkops.engine.lists import resolve_lists
from bulkops.engine.progress import Counters, NullReporter, Reporter, peak_rss_bytes
from bulkops.engine.rundirs import default_run_dir
from bulkops.engine.tracker import ActivityTracker
from bulkops.errors import (
    ActivityFailed,
    BodyBrokenOff,
    ConfigError,
    NotFound,
    OutcomeUnknown,
    ProtocolError,
    TransportError,
    single_errors,
)
from bulkops.stream.export import (
    FEED_FIELDS,
    ExportCsvDecoder,
    ExportRow,
    OutputFormat,
    RecordEncoder,
    RowEncoder,
    contact_row,
    export_columns,
    fields_needing_detail,
    header_projection,
    record_header,
)
from bulkops.stream.feed import FEED_SLICE_BYTES, FeedDecoder
from bulkops.wire.activity import ActivityStatus, ActivityType, Field
from bulkops.wire.atom import (
    activity_from_entry,
    format_time,
    list_from_entry,
    parse_time,
    record_from_entry,
)
from bulkops.wire.columns import Column
from bulkops.wire.model import Activity, Contact, ContactListMember, FeedEntry
from bulkops.wire.uris import SYSTEM_LISTS

__all__ = [
    "ExportOptions",
    "ExportReport",
    "ExportWhat",
    "Page",
    "PageWalk",
    "RecordStream",
    "Via",
    "WalkStats",
    "export_status",
    "is_export_run",
    "open_pages",
    "open_records",
    "resume_export",
    "run_export",
    "since_from_run",
    "summary",
]

ExportWhat = Literal["members", "contacts", "lists", "activities", "campaigns", "collection"]
Via = Literal["activity", "feed"]

_WHATS: tuple[str, ...] = get_args(ExportWhat)
_LIST_TYPES = ("active", "removed", "do-not-mail")
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_PAGE_ATTEMPTS = 5  # a page whose body broke off is fetched again this often
_POST_ATTEMPTS = 3  # an export activity whose POST answer was lost is posted again
_REPORT_NAME = "report.json"
_ENCODER = msgspec.json.Encoder()


# ---------------------------------------------------------------------------------------------
# Options and report
# ---------------------------------------------------------------------------------------------


def _positive(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ConfigError(f"{attribute.name} must be at least 1")


def _prefetch(_instance: object, _attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= 4:
        raise ConfigError("prefetch must be between 0 and 4 pages")


@attrs.frozen(kw_only=True)
class ExportOptions:
    """What to export and how (stored in the journal, so ``resume`` repeats it).

    Attributes:
        what: ``members`` (of ``list``), ``contacts`` (all, or updated since a time on a list
            or a list type), ``lists``, ``activities``, ``campaigns``, or ``collection``
            (any paged collection path, in ``collection``).
        list: the list's name or id (members; contacts with ``updated_since``).
        list_type: ``active``, ``removed`` or ``do-not-mail`` (contacts with
            ``updated_since``).
        updated_since: ISO-8601 time: contacts updated at or after it (``/contacts?
            updatedsince=``).
        collection: the collection path below the account, for ``what="collection"``
            (``campaigns/7/events/opens``).
        format: ``csv`` or ``jsonl``; None: from the output file's name (``.jsonl``,
            ``.ndjson`` and ``.json`` are JSON Lines, anything else CSV).
        columns: contact columns to write (members, contacts), any spelling; email always
            first. None: every column via an activity, the columns the feed carries via the
            feed. ``("all",)``: every column (via the feed: one GET per contact).
        via: ``activity`` (an ``EXPORT_CONTACTS`` activity; members only) or ``feed``.
        prefetch: feed pages requested ahead of the one being written (0–4).
        detail_concurrency: contact GETs in flight when columns need the full contacts.
        checkpoint_rows: rows between two checkpoints of the journal.
        poll_min / poll_max / stall_timeout: activity polling (see ``ActivityTracker``);
            one export activity is polled at most ``poll_max`` (2 s) apart, so its file is
            read at most that long after it is ready.
    """

    what: ExportWhat = "members"
    list: str | None = None
    list_type: str | None = None
    updated_since: str | None = None
    collection: str | None = None
    format: OutputFormat | None = None
    columns: tuple[str, ...] | None = None
    via: Via = "activity"
    prefetch: int = attrs.field(default=2, validator=_prefetch)
    detail_concurrency: int = attrs.field(default=8, validator=_positive)
    checkpoint_rows: int = attrs.field(default=10_000, validator=_positive)
    poll_min: float = 0.5
    poll_max: float = 2.0
    stall_timeout: float = 600.0

    def __attrs_post_init__(self) -> None:
        what = self.what
        if what not in _WHATS:
            raise ConfigError(f"cannot export {what!r}; choose one of {', '.join(_WHATS)}")
        if self.format not in (None, "csv", "jsonl"):
            raise ConfigError("format must be csv or jsonl")
        if self.via not in ("activity", "feed"):
            raise ConfigError("via must be activity or feed")
        if self.via == "activity" and what != "members":
            raise ConfigError("--via activity exports a list's members only; use --via feed")
        if what == "members" and not self.list:
            raise ConfigError("name the list to export with --list")
        if self.list_type is not None and self.list_type not in _LIST_TYPES:
            raise ConfigError(f"--list-type must be one of {', '.join(_LIST_TYPES)}")
        if what == "contacts":
            if self.updated_since is not None:
                if (self.list is None) == (self.list_type is None):
                    raise ConfigError("--updated-since needs exactly one of --list or --list-type")
                try:
                    parse_time(self.updated_since)
                except ValueError as exc:
                    raise ConfigError(f"--updated-since: {exc}") from None
            elif self.list is not None or self.list_type is not None:
                raise ConfigError("--list and --list-type select contacts with --updated-since")
        elif self.updated_since is not None or self.list_type is not None:
            raise ConfigError("--updated-since and --list-type are for `export contacts`")
        if what not in ("members", "contacts") and self.list is not None:
            raise ConfigError(f"--list does not apply to {what}")
        if what == "collection":
            if not self.collection or not self.collection.strip("/"):
                raise ConfigError("name the collection path with --collection")
        elif self.collection is not None:
            raise ConfigError("--collection goes with `export collection`")
        if self.columns is not None:
            if what not in ("members", "contacts"):
                raise ConfigError(f"--columns applies to contact exports, not to {what}")
            try:
                export_columns(self.columns)
            except ValueError as exc:
                raise ConfigError(f"--columns: {exc}") from None

    def for_output(self, output: Path) -> ExportOptions:
        """These options with :attr:`format` decided (from ``output``'s name when None)."""
        if self.format is not None:
            return self
        fmt: OutputFormat = "jsonl" if output.suffix.lower() in _JSONL_SUFFIXES else "csv"
        return attrs.evolve(self, format=fmt)

    @property
    def output_format(self) -> OutputFormat:
        """The output format (``csv`` until :meth:`for_output` has decided it)."""
        return self.format or "csv"

    @property
    def contact_rows(self) -> bool:
        """True when rows are contact columns (members, contacts), not whole records."""
        return self.what in ("members", "contacts")

    def resolved_columns(self) -> tuple[Column, ...]:
        """The contact columns to write (see :attr:`columns`)."""
        if self.columns is not None:
            return export_columns(self.columns)
        if self.via == "activity":
            return export_columns(None)
        carried = FEED_FIELDS[ContactListMember if self.what == "members" else Contact]
        return tuple(c for c in export_columns(None) if c.field in carried)

    def to_meta(self) -> dict[str, object]:
        """A JSON-ready form."""
        data = attrs.asdict(self)
        data["columns"] = None if self.columns is None else list(self.columns)
        return data

    @classmethod
    def from_meta(cls, data: dict[str, Any]) -> ExportOptions:
        """The inverse of :meth:`to_meta`."""
        values = dict(data)
        if values.get("columns") is not None:
            values["columns"] = tuple(values["columns"])
        return cls(**values)


class ExportReport(msgspec.Struct, frozen=True, kw_only=True):
    """What an export did; written to ``report.json`` in the run directory.

    Attributes:
        state: ``complete`` or ``interrupted`` (resumable).
        output: the target file (it exists only when complete).
        header: the column names written (CSV header, JSON keys for contact rows).
        rows: rows written.
        expected_rows: what the server said there are (None when it says nothing).
        expected_from: ``ContactCount`` or ``TransactionCount``, None with no expectation.
        count_check: ``match``, ``mismatch`` or ``unchecked``.
        high_water_mark: contacts: the latest update time seen (the next sync's start).
        activity_id: the export activity (``via="activity"``).
        pages: feed pages written.
        detail_requests: contact GETs made for columns the feed lacks.
        resumes: how many times the run was resumed.
    """

    command: str
    state: str
    what: str
    via: str
    format: str
    output: str
    run_dir: str
    header: list[str]
    rows: int
    expected_rows: int | None
    expected_from: str | None
    count_check: str
    high_water_mark: str | None
    activity_id: str | None
    pages: int
    detail_requests: int
    resumes: int
    requests: int
    retries: int
    throttled: int
    wall_seconds: float
    rows_per_second: float
    peak_rss_bytes: int
    message: str

    @property
    def exit_code(self) -> int:
        """0 complete, 2 complete with a count mismatch, 3 interrupted (resumable)."""
        if self.state != "complete":
            return 3
        return 2 if self.count_check == "mismatch" else 0


def summary(report: ExportReport) -> str:
    """A few lines for people."""
    expected = (
        ""
        if report.expected_rows is None
        else f" ({report.expected_from} {report.expected_rows:,}: {report.count_check})"
    )
    lines = [
        f"export {report.what} via {report.via} {report.state}: {report.rows:,} rows{expected}",
        f"{report.requests} requests ({report.retries} retries, {report.throttled} throttled), "
        f"{report.wall_seconds:.1f} s wall, {report.rows_per_second:,.0f} rows/s, "
        f"peak RSS {report.peak_rss_bytes / 1048576:.0f} MiB",
    ]
    if report.state == "complete":
        lines.append(f"  output: {report.output}")
    if report.high_water_mark:
        lines.append(f"  high-water mark: {report.high_water_mark}")
    lines.append(f"  report: {Path(report.run_dir) / _REPORT_NAME}")
    if report.message:
        lines.append(report.message)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The feed walker
# ---------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Page:
    """One feed page as delivered by :func:`open_pages`.

    Attributes:
        number: 1 for the first page walked.
        url: the URL it was fetched from.
        records: its entries' records, in document order.
        next_url: the next page's URL, None on the last page.
        size: bytes of the page's body.
        next_requested_after: how many bytes of this page had been read when the next page
            was requested (None on the last page); less than ``size`` when the ``next``
            link came before the end of the body, as it does on every real page.
    """

    number: int
    url: str
    records: list[FeedEntry]
    next_url: str | None
    size: int
    next_requested_after: int | None


@attrs.frozen(kw_only=True)
class WalkStats:
    """A snapshot of a walk.

    Attributes:
        started: pages whose request has been sent.
        fetched: pages fully read.
        received: pages the consumer has taken.
        max_ahead: the most pages ever requested and not yet taken by the consumer; never
            more than ``prefetch + 1`` (the page being delivered and ``prefetch`` ahead).
    """

    started: int
    fetched: int
    received: int
    max_ahead: int


class PageWalk:
    """The pages of a walk, in order (:func:`open_pages` makes it); async-iterable."""

    def __init__(
        self, client: Client, *, list_id: str | None, prefetch: int, read_size: int
    ) -> None:
        self._client = client
        self._list_id = list_id
        self._read_size = read_size
        # The page being delivered plus `prefetch` ahead hold a slot each, from just before
        # their GET until the consumer has taken them.
        self._slots = trio.Semaphore(prefetch + 1)
        self._send, self._receive = trio.open_memory_channel[Page](0)
        self._started = self._fetched = self._received = self._max_ahead = 0
        self._changed = trio.Event()

    def statistics(self) -> WalkStats:
        """Counters so far."""
        return WalkStats(
            started=self._started,
            fetched=self._fetched,
            received=self._received,
            max_ahead=self._max_ahead,
        )

    async def wait_fetched(self, count: int) -> None:
        """Return once ``count`` pages have been read (for observers and tests)."""
        while self._fetched < count:
            await self._changed.wait()

    def __aiter__(self) -> PageWalk:
        return self

    async def __anext__(self) -> Page:
        try:
            page = await self._receive.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
        self._received += 1
        return page

    async def run(self, url: str) -> None:
        """Walk from ``url`` to the last page (the task :func:`open_pages` starts)."""
        async with self._send, trio.open_nursery() as nursery:
            delivered = trio.Event()
            delivered.set()
            nursery.start_soon(self._page, nursery, url, 1, delivered)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _page(
        self, nursery: trio.Nursery, url: str, number: int, previous: trio.Event
    ) -> None:
        delivered = trio.Event()
        successor: list[str] = []

        def start_next(next_url: str) -> None:
            if next_url == url:
                raise ProtocolError(f"page {number}'s next link points back to itself")
            successor.append(next_url)
            nursery.start_soon(self._page, nursery, next_url, number + 1, delivered)

        async with self._slots:
            self._started += 1
            self._max_ahead = max(self._max_ahead, self._started - self._received)
            page = await self._fetch(number, url, successor, start_next)
            self._fetched += 1
            self._notify()
            await previous.wait()
            await self._send.send(page)
            delivered.set()

    async def _fetch(
        self, number: int, url: str, successor: list[str], start_next: Callable[[str], None]
    ) -> Page:
        for attempt in range(1, _PAGE_ATTEMPTS + 1):
            decoder = FeedDecoder(list_id=self._list_id, document_url=url)
            records: list[FeedEntry] = []
            requested_after: int | None = None
            try:
                async with self._client.stream_download(url, read_size=self._read_size) as body:
                    async for piece in body:
                        records.extend(decoder.decode(piece))
                        if not successor and decoder.next_url is not None:
                            requested_after = decoder.bytes_fed
                            start_next(decoder.next_url)
            except BodyBrokenOff as exc:
                # The body broke off after the headers: read the page again.
                if attempt == _PAGE_ATTEMPTS:
                    raise TransportError(f"reading a feed page failed: {exc}") from exc
                continue
            records.extend(decoder.flush())
            next_url = decoder.next_url
            if successor and next_url != successor[0]:
                raise ProtocolError("a feed page changed its next link when read again")
            if not successor and next_url is not None:
                requested_after = decoder.bytes_fed
                start_next(next_url)
            return Page(
                number=number,
                url=url,
                records=records,
                next_url=next_url,
                size=decoder.bytes_fed,
                next_requested_after=requested_after,
            )
        raise AssertionError("unreachable")  # pragma: no cover


@asynccontextmanager
async def open_pages(
    client: Client,
    href: str,
    *,
    list_id: str | None = None,
    prefetch: int = 2,
    read_size: int = FEED_SLICE_BYTES,
) -> AsyncIterator[PageWalk]:
    """Walk a paged collection: its pages, in order, ending after the last::

        async with open_pages(client, "lists/7/members") as pages:
            async for page in pages:
                ...

    Args:
        client: an open client.
        href: the collection (``"lists/7/members"``, ``"contacts?updatedsince=…"``) or any
            page's URL (a ``next`` link, to continue a walk).
        list_id: for members feeds, the list (see ``record_from_entry``).
        prefetch: pages fetched ahead of the one being delivered (see :class:`WalkStats`).
        read_size: bytes read from the socket at a time.

    Raises:
        XmlError, ProtocolError: a page is malformed, or its next link loops.
        ApiError, TransportError: as the client raises them.
    """
    walk = PageWalk(client, list_id=list_id, prefetch=prefetch, read_size=read_size)
    with single_errors():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(walk.run, client.url(href))
            with walk._receive:
                yield walk
            nursery.cancel_scope.cancel()


class RecordStream:
    """The records of a walk, one by one (:func:`open_records` makes it)."""

    def __init__(self, pages: PageWalk) -> None:
        self.pages = pages
        self._buffer: list[FeedEntry] = []
        self._index = 0

    def __aiter__(self) -> RecordStream:
        return self

    async def __anext__(self) -> FeedEntry:
        while self._index >= len(self._buffer):
            page = await self.pages.__anext__()
            self._buffer, self._index = page.records, 0
        record = self._buffer[self._index]
        self._index += 1
        return record


@asynccontextmanager
async def open_records(
    client: Client, href: str, *, list_id: str | None = None, prefetch: int = 2
) -> AsyncIterator[RecordStream]:
    """The records of a paged collection, one by one, in constant memory::

        async with open_records(client, "lists/7/members") as records:
            async for member in records:
                ...

    Pages are fetched as :func:`open_pages` does (bounded prefetch); leaving the block
    early cancels what is in flight.

    Raises:
        as :func:`open_pages`.
    """
    async with open_pages(client, href, list_id=list_id, prefetch=prefetch) as pages:
        yield RecordStream(pages)


# ---------------------------------------------------------------------------------------------
# The output file and the checkpoints
# ---------------------------------------------------------------------------------------------


class _Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """What a resumed run continues from (one row of the ``export_checkpoint`` table)."""

    offset: int  # complete bytes of the temporary file
    rows: int  # rows in those bytes
    href: str | None = None  # feed: the next page to fetch (None: every page written)
    pages: int = 0
    activity_id: str | None = None  # activity: the export activity
    source_rows: int = 0  # activity: export-file rows consumed
    expected: int | None = None  # ContactCount / TransactionCount
    high_water: str | None = None
    done: bool = False  # every row written (the rename may still be due)


_CHECKPOINT_SCHEMA = """
CREATE TABLE IF NOT EXISTS export_checkpoint (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    value   BLOB NOT NULL,          -- a msgspec-JSON _Checkpoint
    saved   REAL NOT NULL
)
"""


class _Checkpoints:
    """The export's own table in the run's journal file (one row, replaced atomically)."""

    def __init__(self, run_dir: Path) -> None:
        self._db = sqlite3.connect(run_dir / JOURNAL_NAME, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_CHECKPOINT_SCHEMA)

    def load(self) -> _Checkpoint | None:
        row = self._db.execute("SELECT value FROM export_checkpoint WHERE id = 1").fetchone()
        return None if row is None else msgspec.json.decode(row[0], type=_Checkpoint)

    def save(self, checkpoint: _Checkpoint) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO export_checkpoint (id, value, saved) VALUES (1, ?, ?)",
            (_ENCODER.encode(checkpoint), time.time()),
        )

    def close(self) -> None:
        self._db.close()


class _Output:
    """The temporary file behind the target: appended to, checkpointed, renamed at the end."""

    def __init__(self, target: Path, temp: Path, *, offset: int | None) -> None:
        self.target = target
        self.temp = temp
        temp.parent.mkdir(parents=True, exist_ok=True)
        raw: BinaryIO
        if offset is None:
            raw = open(temp, "wb")  # noqa: SIM115 - closed by close()/commit()
        else:
            if not temp.exists():
                raise ConfigError(f"the partial output {temp} is gone; start the export again")
            raw = open(temp, "r+b")  # noqa: SIM115
            raw.truncate(offset)
            raw.seek(offset)
        self._file: BinaryIO | None = raw
        self.size = offset or 0

    @classmethod
    def renamed(cls, target: Path, temp: Path, size: int) -> _Output:
        """The output of a run that crashed after its rename: complete, nothing to write."""
        output = cls.__new__(cls)
        output.target, output.temp, output.size = target, temp, size
        output._file = None
        return output

    def write(self, data: bytes) -> None:
        if data:
            assert self._file is not None
            self._file.write(data)
            self.size += len(data)

    def sync(self) -> int:
        """Flush to the disk; the bytes written so far survive any crash."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
        return self.size

    def flush(self) -> None:
        """Hand what is buffered to the OS (it survives the process, not a power cut)."""
        if self._file is not None:
            self._file.flush()

    def commit(self) -> None:
        """fsync, close, and rename over the target (then fsync the directory)."""
        if self._file is None:
            return  # renamed before
        self.sync()
        self._file.close()
        self._file = None
        os.replace(self.temp, self.target)
        with contextlib.suppress(OSError):
            fd = os.open(self.target.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _temp_path(target: Path, run_dir: Path) -> Path:
    tag = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:10]
    return target.parent / f".{target.name}.{tag}.part"


def _crash_point(rows: int, output: _Output) -> None:
    """Test hook: ``BULKOPS_TEST_KILL_AFTER_ROWS=N`` SIGKILLs this process once ``N`` rows
    are written, with the rows since the last checkpoint flushed to the file — the state a
    crash between two checkpoints leaves. Unset (always, outside tests), it does nothing."""
    target = os.environ.get("BULKOPS_TEST_KILL_AFTER_ROWS")
    if target and rows >= int(target):
        output.flush()
        os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class _Target:
    """What the run reads: a collection href, and the list it belongs to, if any."""

    href: str
    list_id: str | None = None
    list_uri: str | None = None
    list_count: int | None = None  # the list's ContactCount when the run began


class _Interrupted(Exception):
    """Internal: ``stop`` was set; the last checkpoint is saved."""


@attrs.define
class _Run:
    client: Client
    journal: Journal
    checkpoints: _Checkpoints
    options: ExportOptions
    target: _Target
    output: _Output
    checkpoint: _Checkpoint
    reporter: Reporter
    stop: trio.Event
    resumes: int = 0
    counters: Counters = attrs.field(factory=lambda: Counters(kind="export"))
    columns: tuple[Column, ...] = ()
    header: list[str] = attrs.field(factory=list)
    detail_requests: int = 0
    since_checkpoint: int = 0
    high_water: datetime | None = None
    _file_width: int = 0  # cells per record of the export file being read

    def __attrs_post_init__(self) -> None:
        if self.options.contact_rows:
            self.columns = self.options.resolved_columns()
            self.header = [column.export_header for column in self.columns]
        if self.checkpoint.high_water:
            self.high_water = parse_time(self.checkpoint.high_water)
        self.counters.phase = "exporting"
        self.counters.rows_read = self.checkpoint.rows

    # -- bookkeeping ---------------------------------------------------------------------------

    def save(self, **changes: Any) -> None:
        """Make everything written so far durable, then record where to continue."""
        offset = self.output.sync()
        high_water = None if self.high_water is None else format_time(self.high_water)
        self.checkpoint = msgspec.structs.replace(
            self.checkpoint,
            offset=offset,
            rows=self.counters.rows_read,
            high_water=high_water,
            **changes,
        )
        self.checkpoints.save(self.checkpoint)
        self.since_checkpoint = 0

    def wrote(self, rows: int, data: bytes) -> None:
        self.output.write(data)
        self.counters.rows_read += rows
        self.counters.bytes_read = self.output.size
        self.since_checkpoint += rows
        _crash_point(self.counters.rows_read, self.output)

    def due(self) -> bool:
        return self.since_checkpoint >= self.options.checkpoint_rows

    def check_stop(self, **cursor: Any) -> None:
        if self.stop.is_set():
            self.save(**cursor)
            raise _Interrupted

    def note_updates(self, records: Sequence[FeedEntry]) -> None:
        for record in records:
            if isinstance(record, Contact):
                when = record.last_update_time or record.updated
                if self.high_water is None or when > self.high_water:
                    self.high_water = when

    def _sync_stats(self) -> None:
        stats = self.client.statistics()
        self.counters.requests = stats.requests
        self.counters.retries = stats.retries
        self.counters.throttled = stats.throttled

    async def report_progress(self) -> None:
        while True:
            self._sync_stats()
            self.reporter.update(self.counters)
            await trio.sleep(self.reporter.interval)

    # -- the feed path -----------------------------------------------------------------------

    async def export_feed(self) -> None:
        cp = self.checkpoint
        if cp.done or cp.href is None:
            return  # every page was written before the interruption
        href = cp.href
        encoder = self._feed_encoder()
        if cp.offset == 0:
            self.output.write(encoder.begin())
        pages = cp.pages
        async with open_pages(
            self.client, href, list_id=self.target.list_id, prefetch=self.options.prefetch
        ) as walk:
            async for page in walk:
                data = await self._encode_page(encoder, page.records)
                self.wrote(len(page.records), data)
                self.note_updates(page.records)
                pages += 1
                if page.next_url is None:
                    self.save(href=None, pages=pages, done=True)
                    break
                if self.due():
                    self.save(href=page.next_url, pages=pages)
                self.check_stop(href=page.next_url, pages=pages)

    def _feed_encoder(self) -> RowEncoder | RecordEncoder | _LazyRecordEncoder:
        if self.options.contact_rows:
            return RowEncoder(self.options.output_format, self.header)
        return _LazyRecordEncoder(self.options.output_format, self)

    async def _encode_page(
        self, encoder: RowEncoder | RecordEncoder | _LazyRecordEncoder, records: list[FeedEntry]
    ) -> bytes:
        if isinstance(encoder, RowEncoder):
            return encoder.encode(await self._contact_rows(records))
        return encoder.encode(records)

    async def _contact_rows(self, records: list[FeedEntry]) -> list[list[str]]:
        contacts: list[ContactListMember | Contact] = []
        for record in records:
            if not isinstance(record, ContactListMember | Contact):
                raise ProtocolError(
                    f"expected members or contacts, the feed has {type(record).__name__}"
                )
            contacts.append(record)
        if contacts and fields_needing_detail(type(contacts[0]), self.columns):
            contacts = await self._details(contacts)
        return [contact_row(record, self.columns) for record in contacts]

    async def _details(
        self, records: list[ContactListMember | Contact]
    ) -> list[ContactListMember | Contact]:
        """The full contacts behind a page's records, in the same order."""
        found: list[ContactListMember | Contact] = list(records)
        limiter = trio.CapacityLimiter(self.options.detail_concurrency)

        async def fetch(index: int, contact_id: str) -> None:
            async with limiter:
                full = await self.client.get_entry(f"contacts/{contact_id}", record_from_entry)
            if not isinstance(full, Contact):
                raise ProtocolError(f"contacts/{contact_id} is not a contact entry")
            found[index] = full

        with single_errors():
            async with trio.open_nursery() as nursery:
                for index, record in enumerate(records):
                    contact_id = (
                        record.contact_id if isinstance(record, ContactListMember) else record.id
                    )
                    nursery.start_soon(fetch, index, contact_id)
        self.detail_requests += len(records)
        return found

    # -- the activity path -------------------------------------------------------------------

    async def export_activity(self) -> Activity | None:
        if self.checkpoint.done:
            return None  # every row was written before the interruption
        activity_id = self.checkpoint.activity_id
        if activity_id is not None and not await self._still_there(activity_id):
            activity_id = None  # purged (retention) before it was read: export anew
            self._restart()
        if activity_id is None:
            activity_id = await self._post_export()
            self.save(activity_id=activity_id)
        activity = await self._wait(activity_id)
        if activity.status != ActivityStatus.COMPLETE:
            raise ActivityFailed(activity.id, f"the export ended in {activity.status}")
        await self._download(activity)
        return activity

    async def _still_there(self, activity_id: str) -> bool:
        try:
            await self.client.get_entry(f"activities/{activity_id}", activity_from_entry)
        except NotFound:
            return False
        return True

    def _restart(self) -> None:
        """Throw away what was written: a new activity's file is read from its first row."""
        self.output.close()
        self.output = _Output(self.output.target, self.output.temp, offset=0)
        self.counters.rows_read = 0
        self.checkpoint = _Checkpoint(offset=0, rows=0)
        self.save()

    async def _post_export(self) -> str:
        assert self.target.list_uri is not None
        fields: list[tuple[str, str]] = [
            (Field.ACTIVITY_TYPE, ActivityType.EXPORT_CONTACTS.value),
            (Field.FILE_TYPE, "CSV"),
            (Field.EXPORT_OPT_DATE, "false"),
            (Field.EXPORT_OPT_SOURCE, "false"),
            (Field.EXPORT_LIST_NAME, "false"),
            (Field.SORT_BY, "EMAIL_ADDRESS"),
            (Field.LIST_ID, self.target.list_uri),
        ]
        fields.extend((Field.COLUMNS, column.name) for column in self.columns)
        for attempt in range(1, _POST_ATTEMPTS + 1):
            try:
                entry = await self.client.post_form("activities", fields, record_from_entry)
                break
            except OutcomeUnknown:
                # An export changes nothing: a second one costs only the server's time.
                if attempt == _POST_ATTEMPTS:
                    raise
        if not isinstance(entry, Activity):
            raise ProtocolError("POST /activities did not answer with an activity entry")
        return entry.id

    async def _wait(self, activity_id: str) -> Activity:
        o = self.options
        tracker = ActivityTracker(
            self.client, poll_min=o.poll_min, poll_max=o.poll_max, stall_timeout=o.stall_timeout
        )
        result: list[Activity] = []
        self.counters.phase = "waiting for the export activity"
        with single_errors():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(tracker.run)

                async def on_stop() -> None:
                    await self.stop.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(on_stop)
                result.append(await tracker.wait(activity_id, self.target.list_count or 0))
                nursery.cancel_scope.cancel()
        if not result:
            raise _Interrupted  # stop was set; the activity id is already saved
        self.counters.phase = "exporting"
        return result[0]

    async def _download(self, activity: Activity) -> None:
        """Stream the export file into the output, from the first row not yet written.

        A body that breaks off is read again from its start; the rows already written are
        skipped (the file of a finished activity never changes).
        """
        file_name = activity.file_name.rsplit("/", 1)[-1].strip()
        if not file_name.lower().endswith((".csv", ".txt")):
            file_name = f"{activity.id}.csv"
        encoder = RowEncoder(self.options.output_format, self.header)
        if self.checkpoint.offset == 0:
            self.output.write(encoder.begin())
        self.save(expected=activity.transaction_count)
        written = self.checkpoint.source_rows  # rows of the file already in the output
        for attempt in range(1, _PAGE_ATTEMPTS + 1):
            decoder = ExportCsvDecoder.for_file_name(file_name)
            projection: list[int] | None = None
            seen = 0  # rows of the file read in this attempt
            try:
                href = f"activities/{file_name}"
                async with self.client.stream_download(href, read_size=FEED_SLICE_BYTES) as body:
                    async for piece in body:
                        rows = decoder.decode(piece)
                        if projection is None and decoder.header is not None:
                            projection = header_projection(decoder.header, self.columns)
                            self._file_width = len(decoder.header)
                        seen = self._write_rows(rows, encoder, projection, seen, written)
                        written = max(written, seen)
                        if self.due():
                            self.save(source_rows=written)
                        self.check_stop(source_rows=written)
            except BodyBrokenOff as exc:
                if attempt == _PAGE_ATTEMPTS:
                    self.save(source_rows=written)
                    raise TransportError(
                        f"the export file kept breaking off ({exc}); resume the run"
                    ) from exc
                continue
            rows = decoder.flush()
            if decoder.header is None:
                raise ProtocolError(f"the export file {file_name} is empty (no header)")
            if projection is None:
                projection = header_projection(decoder.header, self.columns)
                self._file_width = len(decoder.header)
            written = max(written, self._write_rows(rows, encoder, projection, seen, written))
            self.save(source_rows=written, done=True)
            return

    def _write_rows(
        self,
        rows: list[ExportRow],
        encoder: RowEncoder,
        projection: list[int] | None,
        seen: int,
        written: int,
    ) -> int:
        """Write those of ``rows`` (the file's rows after its first ``seen``) that come after
        its first ``written``; return ``seen + len(rows)``."""
        fresh = rows[max(0, written - seen) :]
        if fresh:
            assert projection is not None
            width = self._file_width
            for row in fresh:
                if len(row.values) != width:
                    raise ProtocolError(
                        f"record {row.line} of the export file has {len(row.values)} cells; "
                        f"its header has {width}"
                    )
            if projection == list(range(width)):  # the file's columns are ours: no copies
                cells = [row.values for row in fresh]
            else:
                cells = [[row.values[i] for i in projection] for row in fresh]
            self.wrote(len(cells), encoder.encode(cells))
        return seen + len(rows)


class _LazyRecordEncoder:
    """A :class:`RecordEncoder` for the kind of the first record seen; the CSV header is
    written with the first records, unless a resumed run's file already has it."""

    def __init__(self, fmt: OutputFormat, run: _Run) -> None:
        self._format = fmt
        self._run = run
        self._encoder: RecordEncoder | None = None

    def begin(self) -> bytes:
        return b""  # the header needs the first record's kind

    def encode(self, records: list[FeedEntry]) -> bytes:
        if not records:
            return b""
        head = b""
        if self._encoder is None:
            self._encoder = RecordEncoder(self._format, type(records[0]))
            self._run.header = list(record_header(type(records[0])))
            self._run.journal.set_meta(header=self._run.header)
            if self._run.output.size == 0:
                head = self._encoder.begin()
        return head + self._encoder.encode(records)


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


async def _resolve_target(client: Client, options: ExportOptions) -> _Target:
    what = options.what
    if what in ("lists", "activities", "campaigns"):
        return _Target(href=what)
    if what == "collection":
        assert options.collection is not None
        return _Target(href=options.collection.strip().lstrip("/"))
    if what == "contacts" and options.updated_since is None:
        return _Target(href="contacts")
    if what == "contacts" and options.list_type is not None:
        query = urlencode({"updatedsince": options.updated_since, "listtype": options.list_type})
        return _Target(href=f"contacts?{query}")
    assert options.list is not None
    try:
        (found,) = await resolve_lists(client, [options.list], create=False, allow_system=True)
    except ConfigError as exc:  # the import's hint to create the list does not apply here
        raise ConfigError(str(exc).replace(" (use --create-lists to create it)", "")) from None
    count: int | None = None
    if found.id not in SYSTEM_LISTS:
        count = (await client.get_entry(f"lists/{found.id}", list_from_entry)).contact_count
    if what == "contacts":
        query = urlencode({"updatedsince": options.updated_since, "listid": found.id})
        return _Target(href=f"contacts?{query}", list_id=found.id, list_uri=found.uri)
    return _Target(
        href=f"lists/{found.id}/members", list_id=found.id, list_uri=found.uri, list_count=count
    )


async def _execute(run: _Run) -> ExportReport:
    started = time.monotonic()
    run.reporter.start()
    state, message = "complete", ""
    activity: Activity | None = None
    try:
        with single_errors():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run.report_progress)
                if run.options.via == "activity":
                    activity = await run.export_activity()
                else:
                    await run.export_feed()
                nursery.cancel_scope.cancel()
        run.output.commit()
    except _Interrupted:
        state, message = "interrupted", "interrupted; run `bulkops resume` to finish"
        run.output.close()
    except BaseException:
        run.output.close()
        run.reporter.stop(run.counters)
        raise
    return _finish(run, state=state, message=message, activity=activity, wall=started)


def _finish(
    run: _Run, *, state: str, message: str, activity: Activity | None, wall: float
) -> ExportReport:
    seconds = time.monotonic() - wall
    cp = run.checkpoint
    rows = run.counters.rows_read
    expected: int | None
    if run.options.via == "activity":
        expected, source = cp.expected, "TransactionCount"
    else:
        expected, source = run.target.list_count, "ContactCount"
    if activity is not None:
        expected = activity.transaction_count
    check = "unchecked"
    if expected is not None and state == "complete":
        check = "match" if rows == expected else "mismatch"
        if check == "mismatch":
            message = (
                f"{rows:,} rows written but the server's {source} is {expected:,}: "
                "the list changed during the export, or rows are missing"
            )
    run._sync_stats()
    stats = run.client.statistics()
    report = ExportReport(
        command="export",
        state=state,
        what=run.options.what,
        via=run.options.via,
        format=run.options.output_format,
        output=str(run.output.target),
        run_dir=str(run.journal.run_dir),
        header=list(run.header),
        rows=rows,
        expected_rows=expected,
        expected_from=source if expected is not None else None,
        count_check=check,
        high_water_mark=cp.high_water,
        activity_id=cp.activity_id,
        pages=cp.pages,
        detail_requests=run.detail_requests,
        resumes=run.resumes,
        requests=stats.requests,
        retries=stats.retries,
        throttled=stats.throttled,
        wall_seconds=round(seconds, 3),
        rows_per_second=round(rows / seconds, 1) if seconds > 0 else 0.0,
        peak_rss_bytes=peak_rss_bytes(),
        message=message,
    )
    run.journal.set_meta(state=state, high_water_mark=cp.high_water, resumes=run.resumes)
    write_atomically(
        run.journal.run_dir / _REPORT_NAME,
        [msgspec.json.format(_ENCODER.encode(report), indent=2), b"\n"],
    )
    run.counters.phase = state
    run.reporter.stop(run.counters)
    return report


async def run_export(
    client: Client,
    output: str | Path,
    *,
    options: ExportOptions,
    run_dir: str | Path | None = None,
    reporter: Reporter | None = None,
    stop: trio.Event | None = None,
) -> ExportReport:
    """Export a list's members or a collection to ``output``, in constant memory.

    Args:
        client: an open client (:func:`bulkops.engine.client.open_client`).
        output: the file to write (CSV or JSON Lines); replaced atomically when complete.
        options: what to export and how.
        run_dir: where the journal and ``report.json`` go (a new directory; default
            ``./bulkops-runs/{name}-export-{time}``).
        reporter: progress output (default: none).
        stop: set it to stop at the next page and checkpoint (resumable).

    Returns:
        the report; ``report.exit_code`` is the CLI's exit code.

    Raises:
        ConfigError: bad options, an unknown list, or a run directory already in use.
        ActivityFailed: the export activity ended in ERROR (or stalled).
        ProtocolError, XmlError: the server sent something unreadable.
        ApiError, TransportError: the server could not be used.
    """
    target_path, directory = _new_run_paths(Path(output), run_dir)
    options = options.for_output(target_path)
    journal = Journal(directory, create=True)
    checkpoints = _Checkpoints(directory)
    try:
        target = await _resolve_target(client, options)
        temp = _temp_path(target_path, directory)
        journal.set_meta(
            command="export",
            options=options.to_meta(),
            output=str(target_path),
            temp=str(temp),
            target=attrs.asdict(target),
            account=client.account_url,
            state="running",
            resumes=0,
        )
        checkpoint = _Checkpoint(offset=0, rows=0, href=target.href)
        checkpoints.save(checkpoint)
        run = _Run(
            client=client,
            journal=journal,
            checkpoints=checkpoints,
            options=options,
            target=target,
            output=_Output(target_path, temp, offset=None),
            checkpoint=checkpoint,
            reporter=reporter or NullReporter(),
            stop=stop if stop is not None else trio.Event(),
        )
        return await _execute(run)
    finally:
        checkpoints.close()
        journal.close()


def _new_run_paths(output: Path, run_dir: str | Path | None) -> tuple[Path, Path]:
    """The absolute target and the run directory of a new run (which must not hold one)."""
    target = output.absolute()
    if target.is_dir():
        raise ConfigError(f"{output} is a directory; name the file to write")
    directory = Path(run_dir) if run_dir is not None else default_run_dir(target, "export")
    if (directory / JOURNAL_NAME).exists():
        raise ConfigError(f"{directory} already holds a run: use `bulkops resume {directory}`")
    return target, directory


def _resumed_output(target: Path, temp: Path, checkpoint: _Checkpoint) -> _Output:
    """The output of a resumed run: cut back to the checkpoint, or already renamed."""
    if checkpoint.done and not temp.exists() and target.exists():
        return _Output.renamed(target, temp, checkpoint.offset)  # crashed after the rename
    return _Output(target, temp, offset=checkpoint.offset)


def export_status(run_dir: str | Path) -> dict[str, Any]:
    """What an export run has done so far, from its journal (offline; for ``bulkops status``).

    Returns:
        ``command``, ``state``, ``what``, ``via``, ``output``, ``rows`` (written and made
        durable), ``pages``, ``activity_id``, ``next`` (the page to continue from),
        ``high_water_mark``, ``resumes``, and ``report`` (the last report, or None).

    Raises:
        ConfigError: not an export run directory.
    """
    directory = Path(run_dir)
    if not is_export_run(directory):
        raise ConfigError(f"{directory} is not an export run")
    journal = Journal(directory, create=False)
    checkpoints = _Checkpoints(directory)
    try:
        meta = journal.meta()
        checkpoint = checkpoints.load() or _Checkpoint(offset=0, rows=0)
    finally:
        checkpoints.close()
        journal.close()
    options = meta.get("options", {})
    report_path = directory / _REPORT_NAME
    return {
        "command": "export",
        "state": meta.get("state"),
        "what": options.get("what"),
        "via": options.get("via"),
        "output": meta.get("output"),
        "rows": checkpoint.rows,
        "pages": checkpoint.pages,
        "activity_id": checkpoint.activity_id,
        "next": None if checkpoint.done else checkpoint.href,
        "high_water_mark": checkpoint.high_water,
        "resumes": meta.get("resumes", 0),
        "report": _read_report(directory) if report_path.exists() else None,
    }


def is_export_run(run_dir: str | Path) -> bool:
    """True when ``run_dir`` holds the journal of an export (for ``bulkops resume``)."""
    if not (Path(run_dir) / JOURNAL_NAME).exists():
        return False
    journal = Journal(run_dir, create=False)
    try:
        return journal.meta().get("command") == "export"
    finally:
        journal.close()


async def resume_export(
    client: Client,
    run_dir: str | Path,
    *,
    reporter: Reporter | None = None,
    stop: trio.Event | None = None,
    stall_timeout: float | None = None,
) -> ExportReport:
    """Finish an export that was interrupted (SIGKILL, Ctrl-C, a lost connection, …).

    The temporary file is cut back to the last checkpoint and the export continues from the
    page (or export-file row) after it; a run that had already finished returns its report.
    Everything repeats the original run's options, except ``stall_timeout`` when given (an
    export activity that stalled the run can be given longer).

    Raises:
        ConfigError: not an export run directory, another account, or the partial output
            is gone.
        as :func:`run_export`.
    """
    directory = Path(run_dir)
    journal = Journal(directory, create=False)
    checkpoints = _Checkpoints(directory)
    try:
        meta = journal.meta()
        if meta.get("command") != "export":
            raise ConfigError(f"{directory} is not an export run")
        if meta.get("account") and not same_account(meta["account"], client.account_url):
            raise ConfigError(
                f"this run was made against {meta['account']}, not {client.account_url}"
            )
        if meta.get("state") == "complete":
            return _read_report(directory)
        checkpoint = checkpoints.load()
        if checkpoint is None:
            raise ConfigError(f"{directory} has no export checkpoint; start the export again")
        output = _resumed_output(Path(meta["output"]), Path(meta["temp"]), checkpoint)
        resumes = int(meta.get("resumes", 0)) + 1
        journal.set_meta(resumes=resumes, state="running")
        run = _Run(
            client=client,
            journal=journal,
            checkpoints=checkpoints,
            options=_with_stall_timeout(ExportOptions.from_meta(meta["options"]), stall_timeout),
            target=_Target(**meta["target"]),
            output=output,
            checkpoint=checkpoint,
            reporter=reporter or NullReporter(),
            stop=stop if stop is not None else trio.Event(),
            resumes=resumes,
            header=list(meta.get("header") or []),
        )
        return await _execute(run)
    finally:
        checkpoints.close()
        journal.close()


def _with_stall_timeout(options: ExportOptions, stall_timeout: float | None) -> ExportOptions:
    if stall_timeout is None:
        return options
    return attrs.evolve(options, stall_timeout=stall_timeout)


def _read_report(run_dir: str | Path) -> ExportReport:
    """The ``report.json`` of an export run.

    Raises:
        ConfigError: there is none, or it is not an export report.
    """
    path = Path(run_dir) / _REPORT_NAME
    try:
        return msgspec.json.decode(path.read_bytes(), type=ExportReport)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(f"{run_dir} holds no export report: {exc}") from None


def since_from_run(run_dir: str | Path) -> str:
    """The high-water mark a previous export run recorded, for ``--updated-since RUN_DIR``.

    Raises:
        ConfigError: the directory holds no finished export with a high-water mark.
    """
    report = _read_report(run_dir)
    if report.state != "complete" or not report.high_water_mark:
        raise ConfigError(f"the export in {run_dir} recorded no high-water mark")
    return report.high_water_mark
