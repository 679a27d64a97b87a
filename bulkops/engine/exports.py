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

import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import attrs
import msgspec
import trio

from bulkops.engine.client import Client, same_account
from bulkops.engine.export_options import ExportOptions, ExportReport, ExportWhat, Via, summary
from bulkops.engine.export_runs import read_export_report
from bulkops.engine.feeds import open_pages
from bulkops.engine.journal import Journal
from bulkops.engine.ledger import write_atomically
from bulkops.engine.lists import resolve_lists
from bulkops.engine.outputs import (
    Checkpoint,
    Checkpoints,
    Output,
    crash_point_after_rows,
    temp_path,
)
from bulkops.engine.progress import Counters, NullReporter, Reporter, peak_rss_bytes
from bulkops.engine.rundirs import REPORT_NAME, RunLock, default_run_dir, open_new_run
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
    ExportCsvDecoder,
    ExportRow,
    OutputFormat,
    RecordEncoder,
    RowEncoder,
    contact_row,
    fields_needing_detail,
    header_projection,
    record_header,
)
from bulkops.stream.feed import FEED_SLICE_BYTES
from bulkops.wire.activity import ActivityStatus, ActivityType, Field
from bulkops.wire.atom.activities import activity_from_entry
from bulkops.wire.atom.feeds import record_from_entry
from bulkops.wire.atom.lists import list_from_entry
from bulkops.wire.atom.syntax import format_time, parse_time
from bulkops.wire.columns import Column
from bulkops.wire.model import Activity, Contact, ContactListMember, FeedEntry
from bulkops.wire.uris import SYSTEM_LISTS

__all__ = [
    "ExportOptions",
    "ExportReport",
    "ExportWhat",
    "Via",
    "post_export",
    "resume_export",
    "run_export",
    "summary",
]

_FILE_ATTEMPTS = 5  # an export file whose body broke off is read again this often
_POST_ATTEMPTS = 3  # an export activity whose POST answer was lost is posted again
_ENCODER = msgspec.json.Encoder()


async def post_export(client: Client, list_uri: str, columns: Sequence[Column]) -> str:
    """POST an ``EXPORT_CONTACTS`` activity of a list (CSV, no date, source or list-name
    columns, sorted by address) and return its id; a lost answer is posted again.

    Args:
        list_uri: the list's id URI (a user list, or a system list's).
        columns: the columns to export (the email address first).

    Raises:
        OutcomeUnknown: the answer was lost every time.
        ProtocolError: the server did not answer with an activity.
        ApiError, TransportError: as :meth:`Client.request`.
    """
    fields: list[tuple[str, str]] = [
        (Field.ACTIVITY_TYPE, ActivityType.EXPORT_CONTACTS.value),
        (Field.FILE_TYPE, "CSV"),
        (Field.EXPORT_OPT_DATE, "false"),
        (Field.EXPORT_OPT_SOURCE, "false"),
        (Field.EXPORT_LIST_NAME, "false"),
        (Field.SORT_BY, "EMAIL_ADDRESS"),
        (Field.LIST_ID, list_uri),
    ]
    fields.extend((Field.COLUMNS, column.name) for column in columns)
    for attempt in range(1, _POST_ATTEMPTS + 1):
        try:
            entry = await client.post_form("activities", fields, record_from_entry)
            break
        except OutcomeUnknown:
            # An export changes nothing: a second one costs only the server's time.
            if attempt == _POST_ATTEMPTS:
                raise
    if not isinstance(entry, Activity):
        raise ProtocolError("POST /activities did not answer with an activity entry")
    return entry.id


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
    checkpoints: Checkpoints
    options: ExportOptions
    target: _Target
    output: Output
    checkpoint: Checkpoint
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
        crash_point_after_rows(self.counters.rows_read, self.output)

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
        self.output = Output(self.output.target, self.output.temp, offset=0)
        self.counters.rows_read = 0
        self.checkpoint = Checkpoint(offset=0, rows=0)
        self.save()

    async def _post_export(self) -> str:
        assert self.target.list_uri is not None
        return await post_export(self.client, self.target.list_uri, self.columns)

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
        for attempt in range(1, _FILE_ATTEMPTS + 1):
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
                if attempt == _FILE_ATTEMPTS:
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
        raise ConfigError(str(exc).replace(" (`create_lists` creates it)", "")) from None
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
        run.journal.run_dir / REPORT_NAME,
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
    journal, lock = open_new_run(directory)  # one process per run directory, as imports
    checkpoints = Checkpoints(directory)
    try:
        target = await _resolve_target(client, options)
        temp = temp_path(target_path, directory)
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
        checkpoint = Checkpoint(offset=0, rows=0, href=target.href)
        checkpoints.save(checkpoint)
        run = _Run(
            client=client,
            journal=journal,
            checkpoints=checkpoints,
            options=options,
            target=target,
            output=Output(target_path, temp, offset=None),
            checkpoint=checkpoint,
            reporter=reporter or NullReporter(),
            stop=stop if stop is not None else trio.Event(),
        )
        return await _execute(run)
    finally:
        checkpoints.close()
        journal.close()
        lock.release()


def _new_run_paths(output: Path, run_dir: str | Path | None) -> tuple[Path, Path]:
    """The absolute target and the run directory of a new run (:func:`open_new_run` refuses
    one that is running or holds a run)."""
    target = output.absolute()
    if target.is_dir():
        raise ConfigError(f"{output} is a directory; name the file to write")
    directory = Path(run_dir) if run_dir is not None else default_run_dir(target, "export")
    return target, directory


def _resumed_output(target: Path, temp: Path, checkpoint: Checkpoint) -> Output:
    """The output of a resumed run: cut back to the checkpoint, or already renamed."""
    if checkpoint.done and not temp.exists() and target.exists():
        return Output.renamed(target, temp, checkpoint.offset)  # crashed after the rename
    return Output(target, temp, offset=checkpoint.offset)


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
    try:
        lock = RunLock(directory).acquire()  # refused while another process runs it
    except BaseException:
        journal.close()
        raise
    checkpoints = Checkpoints(directory)
    try:
        meta = journal.meta()
        if meta.get("command") != "export":
            raise ConfigError(f"{directory} is not an export run")
        if meta.get("account") and not same_account(meta["account"], client.account_url):
            raise ConfigError(
                f"this run was made against {meta['account']}, not {client.account_url}"
            )
        if meta.get("state") == "complete":
            return read_export_report(directory)
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
        lock.release()


def _with_stall_timeout(options: ExportOptions, stall_timeout: float | None) -> ExportOptions:
    if stall_timeout is None:
        return options
    return attrs.evolve(options, stall_timeout=stall_timeout)
