"""One import run at work: a contact file in, activities out, every row accounted for.

:class:`ImportRun` holds a run's parts; :func:`execute` runs it and :func:`finish` writes its
report. ``engine/imports.py`` starts and resumes runs, ``engine/clear.py`` runs a clear.

Shape of a run (one trio nursery, bounded channels — memory is O(chunk × in-flight)):

    producer ──chunks──▶ submitters (N = --concurrency, AIMD) ──▶ waiters ──▶ journal
       │                      │  queued-activity cap (slots held until an activity ends)
       └─ local outcomes      └─ tracker: one poll covers every activity in flight

* The **producer** reads the file in 1 MiB blocks through the planner (``bulkops.stream``),
  records the chunk plan and local outcomes (rejected, duplicate) in the journal, and hands
  chunks that are not yet done to the submitters. On resume it replays the same file: the
  same chunks come out, and those the journal has as done are skipped.
* A **submitter** waits for the chunk a chunk depends on (a shared email; the order of rows
  must be kept), takes a queued-activity slot, and makes sure the chunk is POSTed exactly
  once: ``SEND`` is journaled before the POST and ``ANSWER`` after it. When an answer is
  lost (:class:`~bulkops.errors.OutcomeUnknown`), or after a crash between the two, the
  activities feed is searched for the activity the POST may have created (see
  ``engine/posting.py``, which drives the chunk state machine of ``engine/chunks.py``)
  before anything is sent again.
* A **waiter** per activity waits on the tracker, maps row errors back to source lines, and
  journals the final state with its failures in one transaction.

The final server state equals applying the file's rows in order: within a chunk only the last
occurrence of an email is sent, and a chunk that shares an email with an earlier chunk is not
sent before that one has finished.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from bulkops.engine.chunks import ChunkState
from bulkops.engine.client import Client, QuotaExhausted
from bulkops.engine.import_options import ImportOptions, RunTotals
from bulkops.engine.journal import ChunkRecord, Journal, OutcomeRecord
from bulkops.engine.ledger import (
    ActivitySummary,
    ImportReport,
    OutcomeCounts,
    all_done,
    count_outcomes,
)
from bulkops.engine.limits import AimdLimiter, SlotPool
from bulkops.engine.lists import ResolvedList, resolve_lists
from bulkops.engine.outcome_files import write_outcome_files
from bulkops.engine.planner import PlannedChunk, PlannedOutcome, Planner
from bulkops.engine.posting import ChunkPoster
from bulkops.engine.progress import (
    Counters,
    NullReporter,
    Reporter,
    keep_freed_memory,
    peak_rss_bytes,
)
from bulkops.engine.repeats import ChunkEmailLog, find_repeated_emails
from bulkops.engine.rundirs import command_name, mark_not_started, open_new_run
from bulkops.engine.tracker import ActivityTracker
from bulkops.errors import ActivityStalled, BulkOpsError, InputError, single_errors
from bulkops.wire.activity import ActivityStatus
from bulkops.wire.model import Activity

__all__ = [
    "ImportRun",
    "execute",
    "finish",
    "quota_message",
    "resolve_run_lists",
    "start_run",
]

_BLOCK = 1 << 20


def _reporter_or_null(reporter: Reporter | None) -> Reporter:
    return reporter if reporter is not None else NullReporter()


def _event_or_new(event: trio.Event | None) -> trio.Event:
    return event if event is not None else trio.Event()


@attrs.define
class ImportRun:
    """One process's part of a run: the client, the journal, the options and lists, the
    counters, and the tracker, slot pool and limiter the tasks share (see the module
    docstring for the tasks)."""

    client: Client
    journal: Journal
    options: ImportOptions
    lists: list[ResolvedList]
    source: Path | None
    reporter: Reporter = attrs.field(converter=_reporter_or_null)
    stop: trio.Event = attrs.field(converter=_event_or_new)
    counters: Counters = attrs.field(factory=Counters)
    tracker: ActivityTracker = attrs.field(init=False)
    pool: SlotPool = attrs.field(init=False)
    aimd: AimdLimiter = attrs.field(init=False)
    poster: ChunkPoster = attrs.field(init=False)
    done: dict[int, trio.Event] = attrs.field(factory=dict)
    planner: Planner | None = None
    #: Each planned chunk's emails and lines, kept to find repeats across chunks.
    email_log: ChunkEmailLog | None = None
    rows_read: int = 0
    waiting: int = 0
    submitters: int = 0
    stalled: ActivityStalled | None = None
    #: When this process took the run up (``time.monotonic()``: wall time is a duration).
    started: float = attrs.field(factory=time.monotonic)
    #: What earlier processes of this run spent (journal meta ``totals``).
    before: RunTotals = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        o = self.options
        self.before = RunTotals.from_meta(self.journal.meta().get("totals"))
        self.tracker = ActivityTracker(
            self.client, poll_min=o.poll_min, poll_max=o.poll_max, stall_timeout=o.stall_timeout
        )
        self.pool = SlotPool(o.max_queued)
        self.aimd = AimdLimiter(o.concurrency)
        self.poster = ChunkPoster(
            client=self.client,
            journal=self.journal,
            reporter=self.reporter,
            tracker=self.tracker,
            aimd=self.aimd,
            stop=self.stop,
        )
        self.client.throttle_listeners.append(self._throttled)
        # A reader that went away (``--json | head``) stops the run like a Ctrl-C.
        self.reporter.on_closed(self.stop.set)

    def _throttled(self, message: str) -> None:
        self.aimd.throttled()
        if "queue" in message.lower():
            # The server caps unfinished activities: never have more than now, minus one.
            self.pool.resize(max(1, self.pool.in_use - 1))
        self.reporter.event("throttled", limit=round(self.aimd.limit, 2), message=message)

    def _event(self, seq: int) -> trio.Event:
        event = self.done.get(seq)
        if event is None:
            event = self.done[seq] = trio.Event()
        return event

    def _blocked(self, delta: int) -> None:
        self.waiting += delta
        self.tracker.blocked = self.waiting > 0
        if delta > 0:
            self.tracker.wake()

    # -- producer --------------------------------------------------------------------------

    async def produce(self, send: trio.MemorySendChannel[PlannedChunk]) -> None:
        assert self.source is not None
        if self.email_log is not None:
            self.email_log.close()
        log = self.email_log = ChunkEmailLog(self.journal.run_dir)
        keep_freed_memory()  # the reader frees and refills its heap at every chunk
        planner = self.planner = Planner(
            self.options.read,
            self.options.limits,
            lists=[lst.uri for lst in self.lists],
            kind=self.options.kind,
            path=str(self.source),
            emails=log,
        )
        async with send:
            try:
                handle = await trio.open_file(self.source, "rb")
            except OSError as exc:
                raise InputError(f"cannot read: {exc.strerror}", path=str(self.source)) from None
            async with handle:
                while not self.stop.is_set():
                    block = await handle.read(_BLOCK)
                    events = planner.decode(block) if block else planner.flush()
                    self.counters.bytes_read += len(block)
                    # Shown before the block's chunks are handed on: the display never has
                    # more outcomes than rows read.
                    self.counters.rows_read = planner.rows_read
                    await self._handle(events, send)
                    self.rows_read = planner.rows_read
                    if not block:
                        self.journal.set_meta(rows_read=planner.rows_read, read_complete=True)
                        log.finish_reading()
                        break

    async def _handle(
        self,
        events: Sequence[PlannedChunk | PlannedOutcome],
        send: trio.MemorySendChannel[PlannedChunk],
    ) -> None:
        outcomes: list[OutcomeRecord] = []
        for event in events:
            if isinstance(event, PlannedOutcome):
                outcomes.append(event.record)
                if event.record.kind == "rejected":
                    self.counters.rows_rejected += 1
                else:
                    self.counters.rows_duplicate += 1
                continue
            if outcomes:
                self.journal.add_outcomes(outcomes)
                outcomes = []
            record = self.journal.plan(event.record)
            self.counters.chunks_planned += 1
            self._event(event.record.seq)
            if record.state == ChunkState.DONE:
                self.counters.chunks_skipped += 1
                self._event(record.seq).set()
                continue
            await send.send(event)
        if outcomes:
            self.journal.add_outcomes(outcomes)

    # -- submitters ------------------------------------------------------------------------

    async def submit(
        self, receive: trio.MemoryReceiveChannel[PlannedChunk], nursery: trio.Nursery
    ) -> None:
        try:
            await self._submit(receive, nursery)
        finally:
            self.submitters -= 1
            if self.submitters == 0:  # nothing more to POST: now the last activity matters
                self.tracker.submitting = False
                self.tracker.wake()

    async def _submit(
        self, receive: trio.MemoryReceiveChannel[PlannedChunk], nursery: trio.Nursery
    ) -> None:
        async with receive:
            async for chunk in receive:
                for earlier in chunk.waits_for:
                    if self._event(earlier).is_set():
                        continue
                    self._blocked(+1)
                    try:
                        await self._event(earlier).wait()
                    finally:
                        self._blocked(-1)
                if self.pool.in_use >= self.pool.size:
                    self._blocked(+1)
                    try:
                        await self.pool.acquire()
                    finally:
                        self._blocked(-1)
                else:
                    await self.pool.acquire()
                try:
                    activity_id = await self._ensure_posted(chunk)
                except BaseException:
                    self.pool.release()
                    raise
                if activity_id is None:  # stopped before sending
                    self.pool.release()
                    continue
                # The waiter keeps the chunk's number and size only: the body (MiBs) and the
                # source lines (8 bytes a row) are dropped here; the lines are read back from
                # the journal when the activity has finished.
                nursery.start_soon(
                    self._wait_final, chunk.record.seq, chunk.record.rows, activity_id
                )
                del chunk

    async def _ensure_posted(self, chunk: PlannedChunk) -> str | None:
        activity_id = await self.poster.ensure_posted(chunk)
        if activity_id is not None:
            self.counters.activities_submitted += 1
        return activity_id

    # -- waiters ---------------------------------------------------------------------------

    async def _wait_final(self, seq: int, rows: int, activity_id: str) -> None:
        try:
            activity = await self.tracker.wait(activity_id, rows)
        except ActivityStalled as exc:
            self.stalled = exc
            self.reporter.event("stalled", chunk=seq, activity=activity_id, message=str(exc))
            self.stop.set()
            return
        finally:
            self.pool.release()
        record = self.journal.chunk(seq)
        assert record is not None
        self._record_final(record, activity)
        self._event(seq).set()

    def _record_final(self, record: ChunkRecord, activity: Activity) -> None:
        lines = record.lines
        failures: list[OutcomeRecord] = []
        if activity.status == ActivityStatus.ERROR:
            failures = [
                OutcomeRecord(
                    line=line, kind="failed", reason="the activity ended in ERROR", chunk=record.seq
                )
                for line in lines
            ]
        else:
            for error in activity.errors:
                index = error.line - 2  # LineNumber counts records; the header is 1
                if 0 <= index < len(lines):
                    failures.append(
                        OutcomeRecord(
                            line=lines[index], kind="failed", reason=error.message, chunk=record.seq
                        )
                    )
                else:
                    self.reporter.event(
                        "warning",
                        chunk=record.seq,
                        message=f"server error for line {error.line} outside the chunk",
                    )
        self.journal.done(
            record.seq,
            status=activity.status,
            transaction_count=activity.transaction_count,
            failures=failures,
            run_start=_ts(activity.run_start_time),
            run_finish=_ts(activity.run_finish_time),
            insert_time=_ts(activity.insert_time),
        )
        self.counters.activities_done += 1
        self.counters.rows_failed += len(failures)
        self.counters.rows_applied += max(0, record.rows - len(failures))
        self.reporter.event(
            "activity_done",
            chunk=record.seq,
            activity=activity.id,
            status=activity.status,
            rows=record.rows,
            failed=len(failures),
        )

    # -- progress --------------------------------------------------------------------------

    async def report_progress(self) -> None:
        while True:
            await trio.sleep(self.reporter.interval)
            self._sync_stats()
            self.reporter.update(self.counters)

    def totals(self) -> RunTotals:
        """Requests, retries, 429s and wall time of the whole run: every process so far."""
        stats = self.client.statistics()
        return RunTotals(
            wall_seconds=self.before.wall_seconds + (time.monotonic() - self.started),
            requests=self.before.requests + stats.requests,
            retries=self.before.retries + stats.retries,
            throttled=self.before.throttled + stats.throttled,
        )

    def _sync_stats(self) -> None:
        totals = self.totals()
        self.counters.requests = totals.requests
        self.counters.retries = totals.retries
        self.counters.throttled = totals.throttled

    async def keep_totals(self) -> None:
        """Store the run's totals and rows read in the journal now and then: a process
        killed by SIGKILL loses at most the last few seconds of its counts."""
        while True:
            await trio.sleep(_TOTALS_EVERY)
            read = max(int(self.journal.meta().get("rows_read") or 0), self.rows_read)
            self.journal.set_meta(totals=self.totals().to_meta(), rows_read=read)


_TOTALS_EVERY = 2.0  # seconds between two stores of a run's totals


def _ts(value: object) -> float | None:
    from datetime import datetime

    return value.timestamp() if isinstance(value, datetime) else None


async def execute(run: ImportRun) -> ImportReport:
    """Run the producer, submitters and waiters until every chunk is done, the run is
    stopped (Ctrl-C, ``stop``, a closed pipe), a chunk stalls or the quota runs out; then
    :func:`finish` it.

    Returns:
        the report.
    """
    try:
        with single_errors():  # callers get our error itself, not a group
            return await _execute_inner(run)
    finally:  # a run that ended in an error leaves no emails behind in the side table
        if run.email_log is not None:
            run.email_log.close()
            run.email_log = None


async def _execute_inner(run: ImportRun) -> ImportReport:
    run.reporter.start()
    run.counters.phase = "importing"
    if run.source is not None:
        run.counters.bytes_total = run.source.stat().st_size
    state = "complete"
    message = ""
    run.poster.lose_unanswered()
    resume = f"run `bulkops resume {run.journal.run_dir}` to finish"
    try:
        with single_errors():
            async with trio.open_nursery() as outer:
                outer.start_soon(run.tracker.run)
                outer.start_soon(run.report_progress)
                outer.start_soon(run.keep_totals)
                async with trio.open_nursery() as work:
                    send, receive = trio.open_memory_channel[PlannedChunk](0)
                    work.start_soon(run.produce, send)
                    async with receive:
                        run.submitters = max(1, min(run.options.uploads, run.options.concurrency))
                        run.tracker.submitting = True
                        for _ in range(run.submitters):
                            work.start_soon(run.submit, receive.clone(), work)
                outer.cancel_scope.cancel()
    except KeyboardInterrupt:
        state, message = "interrupted", f"interrupted; {resume}"
    except QuotaExhausted as exc:  # resumable: the budget is this process's
        state, message = "interrupted", quota_message(run, exc)
    if run.stalled is not None:
        state, message = "stalled", str(run.stalled)
    elif run.stop.is_set() and state == "complete":
        state, message = "interrupted", f"interrupted; {resume}"
    if state == "interrupted" and all_done(run.journal):  # stopped with nothing left to do
        state, message = "complete", ""
    run._sync_stats()
    run.counters.phase = state
    return finish(run, state=state, message=message)


def _mark_repeats(run: ImportRun) -> int:
    """Mark the sent rows a row of a later activity replaced (a complete run whose chunks
    depend on others): from the emails kept as the input was planned, or, when this
    process did not plan all of it, from a replay of the input. Returns how many."""
    planner, log = run.planner, run.email_log
    if run.source is None or planner is None or not planner.repeats_across_chunks:
        return 0
    run.counters.phase = "checking repeated emails"
    if log is not None and log.complete:  # every chunk's emails were kept as planned
        return log.mark_repeats(run.journal)
    return find_repeated_emails(
        run.journal,
        run.source,
        run.options.read,
        run.options.limits,
        lists=[lst.uri for lst in run.lists],
        kind=run.options.kind,
        chunks=planner.linked_chunks,
    )


def finish(run: ImportRun, *, state: str, message: str) -> ImportReport:
    """End a run in ``state``: find the emails repeated across chunks (a complete run),
    count every row's outcome, write the outcome files and ``report.json``.

    Returns:
        the report (``state`` becomes ``interrupted`` when rows are still pending).
    """
    journal = run.journal
    meta = journal.meta()
    # Rows read by the furthest process: a resume reads the same rows again from the start.
    rows_read = max(int(meta.get("rows_read", 0)), run.rows_read)
    planner = run.planner
    if state == "complete":
        run.counters.rows_duplicate += _mark_repeats(run)
    if run.email_log is not None:
        run.email_log.close()
        run.email_log = None
    counts = count_outcomes(journal, rows_read)
    if state == "complete" and counts.pending:
        state, message = (
            "interrupted",
            f"{counts.pending} rows not yet applied; run `bulkops resume {journal.run_dir}`",
        )
    _show_final(run.counters, counts)
    files = write_outcome_files(
        journal,
        run.source,
        run.options.read,
        run.options.limits,
        write_applied=run.options.write_applied and state == "complete",
        header=planner.header if planner is not None else None,
    )
    encoding = planner.header.encoding if planner is not None and planner.header else None
    encoding = encoding or meta.get("encoding")  # a resume that read nothing again
    chunks = journal.chunks()
    busy = sum((c.run_finish - c.run_start) for c in chunks if c.run_finish and c.run_start)
    totals = run.totals()
    wall = totals.wall_seconds
    report = ImportReport(
        command=command_name(meta.get("command") or run.options.kind),
        state=state,
        input=str(run.source) if run.source else None,
        run_dir=str(journal.run_dir),
        lists=[lst.name for lst in run.lists],
        counts=counts,
        activities=[_summary(c) for c in chunks],
        chunks_sent_twice=[c.seq for c in chunks if c.maybe_twice],
        requests=totals.requests,
        retries=totals.retries,
        throttled=totals.throttled,
        wall_seconds=round(wall, 3),
        rows_per_second=round(counts.read / wall, 1) if wall > 0 else 0.0,
        server_busy_seconds=round(busy, 3),
        peak_rss_bytes=peak_rss_bytes(),
        files=files,
        message=message,
        members_removed=_members_removed(chunks) if meta.get("command") == "clear" else None,
        encoding=encoding if run.source is not None else None,
    )
    journal.set_meta(state=state, rows_read=rows_read, totals=totals.to_meta(), encoding=encoding)
    from bulkops.engine.report import write_report

    write_report(journal.run_dir, report)
    run.reporter.stop(run.counters)
    return report


def _summary(c: ChunkRecord) -> ActivitySummary:
    """A chunk's activity as the report lists it."""
    return ActivitySummary(
        chunk=c.seq,
        activity_id=c.activity_id,
        status=c.status,
        rows=c.rows,
        first_line=c.first_line,
        last_line=c.last_line,
        transaction_count=c.transaction_count,
        errors=c.error_count,
        posts=c.posts,
        maybe_twice=c.maybe_twice,
        insert_time=c.insert_time,
        run_start=c.run_start,
        run_finish=c.run_finish,
    )


def _members_removed(chunks: Sequence[ChunkRecord]) -> int:
    return sum(c.transaction_count or 0 for c in chunks)


def _show_final(counters: Counters, counts: OutcomeCounts) -> None:
    """The display ends on the report's numbers (the live counters are estimates: a row an
    activity applied may turn out a duplicate of a later chunk's row)."""
    counters.rows_read = counts.read
    counters.rows_applied = counts.applied
    counters.rows_failed = counts.failed
    counters.rows_rejected = counts.rejected
    counters.rows_duplicate = counts.duplicate


async def start_run(
    client: Client,
    directory: Path,
    *,
    options: ImportOptions,
    source: Path | None,
    meta: dict[str, Any],
    execute: Callable[[ImportRun], Awaitable[ImportReport]],
    reporter: Reporter | None = None,
    stop: trio.Event | None = None,
) -> ImportReport:
    """Start a new run in ``directory`` (an import, a remove or a clear) and run it.

    The journal gets ``meta`` (its ``command`` and input) and the options first, then the
    lists; a run that fails before it sends anything is marked as never started, so the
    corrected command may take the directory again.

    Returns:
        ``execute(run)``'s report, or an interrupted run's when the request budget ran out
        while finding the lists.

    Raises:
        ConfigError: the directory is in use or holds a run; unknown lists; ...
    """
    journal, lock = open_new_run(directory)
    try:
        journal.set_meta(
            **meta, options=options.to_meta(), account=client.account_url, state="running"
        )
        run = ImportRun(
            client=client,
            journal=journal,
            options=options,
            lists=[],
            source=source,
            reporter=reporter,
            stop=stop,
        )
        quota = await resolve_run_lists(run)
        if quota is not None:
            return finish(run, state="interrupted", message=quota_message(run, quota))
        return await execute(run)
    except BulkOpsError as exc:
        mark_not_started(journal, exc)
        raise
    finally:
        journal.close()
        lock.release()


async def resolve_run_lists(run: ImportRun) -> QuotaExhausted | None:
    """Look up (or create) the run's lists into ``run.lists`` and the journal.

    Returns:
        the error when the request budget ran out first: the run is interrupted, and
        ``resume`` resolves the lists again (the journal has none yet).
    """
    options = run.options
    try:
        run.lists = await resolve_lists(run.client, options.lists, create=options.create_lists)
    except QuotaExhausted as exc:
        return exc
    run.journal.set_meta(lists=[attrs.asdict(lst) for lst in run.lists])
    return None


def quota_message(run: ImportRun, exc: QuotaExhausted) -> str:
    """What an exhausted request budget says: the run is resumable."""
    return f"{exc}; run `bulkops resume {run.journal.run_dir}` to finish (with a new --daily-quota)"
