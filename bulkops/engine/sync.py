"""``sync``: make a list's members equal a file's valid rows, sending only what changed.

A sync is one run directory (``sync.db`` and a journal whose meta says ``command: sync``)
and goes through phases, recorded in the journal's meta ``phase``:

1. **plan** — the file is read with the import pipeline into ``sync.db``, the list's base
   is loaded (:func:`~bulkops.engine.sync_base.load_base`), and the diff
   (:mod:`bulkops.engine.sync_diff`) gives every row its outcome. When the list's snapshot
   holds a record set of this file's header, the **fast plan** (:mod:`~bulkops.engine.
   sync_fast`) reads only the changed records, with the snapshot as the base in place
   (journal meta ``fast``: the rows it did not read are ``unchanged``). The rows to add or
   update by an add activity are written to ``send.csv`` (``send_line`` maps its lines back
   to the file's), the members to remove to ``remove.csv``. Nothing is sent in this phase,
   so a sync killed in it is planned again from the start by ``resume``.
2. **sending** — ``send.csv`` goes through the import engine as a run of its own in
   ``add/`` (chunking, limits, exactly-once POSTs, journal, resume: all of it); then the
   updates that empty a field are PUT one contact at a time (an add cannot empty a field;
   PUT is idempotent, and each answered PUT is recorded); ``remove.csv`` goes through the
   remove engine in ``remove/`` alongside them (:mod:`bulkops.engine.sync_send`). The three
   sets of emails are disjoint, so their order does not matter. ``resume`` takes each
   phase up where it stopped.
3. **done** — one more ``GET lists/{id}`` reads the account's write sequence
   (:func:`~bulkops.engine.sync_base.snapshot_as_of`: when it moved by exactly the sync's
   own committed writes — completed activities of ``add/`` and ``remove/``, answered PUTs —
   the snapshot is saved as of that reading, so the next sync's window holds none of this
   one's sends); failures are mapped back to the file's lines, the base is brought up to date
   with what the server confirmed and kept as the list's snapshot
   (:func:`~bulkops.engine.sync_base.save_snapshot`, or in place with the new record set:
   :func:`~bulkops.engine.sync_snap.commit_in_place`), and ``report.json`` is written.

Removals are checked before anything is sent: more than ``max_remove`` stops the sync
(state ``refused``) unless ``yes``.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import attrs
import msgspec
import trio

from bulkops.engine import sync_run
from bulkops.engine.client import Client, same_account
from bulkops.engine.journal import JOURNAL_NAME, Journal
from bulkops.engine.ledger import write_atomically
from bulkops.engine.lists import ResolvedList, resolve_lists
from bulkops.engine.planner import input_digest
from bulkops.engine.progress import Reporter, peak_rss_bytes
from bulkops.engine.rundirs import (
    NOT_STARTED,
    REPORT_NAME,
    RunLock,
    default_run_dir,
    mark_not_started,
    open_new_run,
)
from bulkops.engine.sync_base import (
    BaseSpec,
    load_base,
    save_snapshot,
    seq_margin,
    snapshot_as_of,
    snapshot_path,
)
from bulkops.engine.sync_diff import DiffCounts, counts, diff, open_db, read_file
from bulkops.engine.sync_fast import (
    build_record_set,
    full_record_set,
    prepare,
    read_header,
    read_part,
    resume_part,
)
from bulkops.engine.sync_files import (
    bytes_sent,
    check_not_overtaken,
    failed_add_lines,
    own_writes,
    removal_failures,
    sync_counts,
    write_outcome_files,
    write_send_files,
)
from bulkops.engine.sync_report import (
    BaseSummary,
    SyncCounts,
    SyncOptions,
    SyncReport,
    removal_limit,
)
from bulkops.engine.sync_run import SyncRun, snapshot_dir
from bulkops.engine.sync_send import send
from bulkops.engine.sync_snap import (
    RecordSet,
    SnapshotUnusable,
    attach,
    commit_in_place,
    detach,
    generation_of,
    set_as_of,
)
from bulkops.errors import BulkOpsError, ConfigError, InputError, single_errors
from bulkops.wire.atom.lists import list_from_entry
from bulkops.wire.uris import resource_id_from_uri

__all__ = ["SyncOptions", "SyncReport", "resume_sync", "run_sync", "snapshot_dir"]

_BREAK = re.compile(r"\r\n|\r|\n")

DB_NAME = "sync.db"
#: Seconds between two saves of the request count and wall time in the journal.
TOTALS_EVERY = 1.0


# -- the plan --------------------------------------------------------------------------------


async def _plan(run: SyncRun) -> DiffCounts:
    """Read the file and the base, decide every row's outcome, write the files to send."""
    db = run.db
    for table in ("file_row", "row_outcome", "remove_row", "send_line"):
        db.execute(f"DELETE FROM {table}")
    # A plan taken up again (nothing was sent) reads the base again, into a clean database.
    detach(db)
    db.execute("DROP TABLE IF EXISTS base_member")
    db.execute("DROP TABLE IF EXISTS base_opted_out")
    run.journal.set_meta(fast=None)
    loaded = False
    if not run.options.full:
        plan = await _plan_fast(run)
        if plan is not None:
            return plan
        loaded = run.base is not None  # the fast plan's base read fell back to a full read
    run.say(f"reading {run.source}")
    reader = await trio.to_thread.run_sync(
        read_file, db, run.source, run.options.send.read, run.target.uri
    )
    assert reader.fields is not None
    columns = reader.fields[1:]
    run.journal.set_meta(columns=list(columns), rows_read=reader.rows)
    run.say(f"{reader.rows:,} rows read; reading the list {run.target.name!r}")
    if not loaded:
        run.base = await load_base(run.client, run.spec(), db)
    assert run.base is not None
    run.journal.set_meta(base=attrs.asdict(run.base))
    _say_base(run)
    plan = await trio.to_thread.run_sync(
        lambda: diff(db, columns, remove_missing=run.options.remove_missing)
    )
    _say_plan(run, plan)
    return plan


def _say_base(run: SyncRun) -> None:
    assert run.base is not None
    run.say(
        f"{run.base.members:,} members ({run.base.source} read"
        + (f": {run.base.reason}" if run.base.reason else "")
        + f", {run.base.requests:,} requests); comparing"
    )


def _say_plan(run: SyncRun, plan: DiffCounts) -> None:
    run.say(
        f"plan: add {plan.added:,}, update {plan.updated:,} ({plan.put:,} by PUT), unchanged"
        f" {plan.unchanged:,}, opted out {plan.opted_out:,}, remove {plan.remove:,}"
    )


async def _plan_fast(run: SyncRun) -> DiffCounts | None:
    """The fast plan (:mod:`bulkops.engine.sync_fast`), or None when it cannot be taken
    (then ``run.base`` is set when the base was read in full already)."""
    snapshot = run.snapshot()
    if not snapshot.exists():
        return None
    read = run.options.send.read
    state, why = await trio.to_thread.run_sync(
        lambda: prepare(
            run.db,
            run.source,
            snapshot,
            read,
            run.target.uri,
            remove_missing=run.options.remove_missing,
        )
    )
    if state is None:
        run.say(f"reading the whole file: {why}")
        return None
    columns = state.fields[1:]
    run.journal.set_meta(columns=list(columns))
    run.say(f"reading the list {run.target.name!r} (snapshot in place)")
    run.base = await load_base(run.client, run.spec(), run.db, in_place=True)
    if run.base.source != "incremental":
        return None
    rows = await trio.to_thread.run_sync(
        lambda: read_part(run.db, state, run.source, read, run.target.uri)
    )
    fast = {"generation": state.generation, "skipped": state.skipped, "snapshot": str(snapshot)}
    run.journal.set_meta(rows_read=rows + state.skipped, base=attrs.asdict(run.base), fast=fast)
    run.fast = state
    run.say(f"{state.skipped:,} rows unchanged since the last sync; {rows:,} rows read")
    _say_base(run)
    plan = await trio.to_thread.run_sync(
        lambda: diff(run.db, columns, remove_missing=run.options.remove_missing, candidates=True)
    )
    plan = _plan_counts(run, plan)
    _say_plan(run, plan)
    return plan


def _plan_counts(run: SyncRun, plan: DiffCounts) -> DiffCounts:
    """``plan`` with the rows the fast plan did not read (``unchanged``)."""
    skipped = run.skipped()
    if not skipped:
        return plan
    return msgspec.structs.replace(
        plan, read=plan.read + skipped, unchanged=plan.unchanged + skipped
    )


# -- the end -----------------------------------------------------------------------------------


async def _prove_snapshot(run: SyncRun, sent_by: float, own: int | None) -> None:
    """Read the write sequence once more and decide the snapshot's ``as_of``
    (:func:`~bulkops.engine.sync_base.snapshot_as_of`); kept in the journal's ``base``.

    ``sent_by`` (``time.monotonic()``) is when the last write was confirmed: the reading is
    taken at least the write margin later (:func:`~bulkops.engine.sync_base.seq_margin`:
    the server's, none on a one-host server; else a second), so the sync's own writes
    precede the next sync's window.
    ``own``: the sync's own writes (:func:`~bulkops.engine.sync_files.own_writes`).
    """
    base = run.stored_base()
    if base is None:
        return
    end: tuple[int, int] | None = None
    list_id = resource_id_from_uri(run.target.uri, "lists")
    if base.write_seq is not None and own is not None and list_id is not None:
        margin = seq_margin(base).total_seconds()
        if own and margin > 0:
            await trio.sleep(max(0.0, margin - (time.monotonic() - sent_by)))
        _, _, reading = await run.client.get_entry_sequenced(f"lists/{list_id}", list_from_entry)
        end = None if reading is None else reading[:2]
    run.base = snapshot_as_of(base, end, own)
    run.journal.set_meta(base=attrs.asdict(run.base))


def _confirm_base(run: SyncRun) -> None:
    """Bring ``base_member`` up to what the server confirmed (adds and updates applied,
    removes done)."""
    db = run.db
    db.execute("BEGIN")
    _confirm_rows(db)
    db.execute("COMMIT")


def _confirm_rows(db: sqlite3.Connection) -> None:
    """The statements of :func:`_confirm_base` (in the caller's transaction)."""
    db.execute(
        "INSERT INTO base_member (email_key, email, contact_uri, vals)"
        " SELECT email_key, email, contact_uri, vals FROM row_outcome"
        " WHERE kind IN ('added', 'updated')"
        " ON CONFLICT (email_key) DO UPDATE SET email = excluded.email, vals = excluded.vals,"
        " contact_uri = coalesce(excluded.contact_uri, base_member.contact_uri)"
    )
    db.execute(
        "DELETE FROM base_member WHERE email_key IN"
        " (SELECT email_key FROM remove_row WHERE failed IS NULL)"
    )


def _full_set(run: SyncRun) -> Callable[[sqlite3.Connection, str], RecordSet | None]:
    """Builds the record set of a sync that read its whole file (for the next one)."""
    read = run.options.send.read

    def build(db: sqlite3.Connection, schema: str) -> RecordSet | None:
        found = read_header(run.source, read, run.target.uri)
        header = None if found is None else found[0]
        return full_record_set(db, schema, run.source, read, header)

    return build


def _commit_fast(run: SyncRun, fast: dict[str, Any]) -> dict[str, str]:
    """The failures mapped, then the confirmed changes and the new record set into the
    snapshot in place (``run.committed``: its new generation); ``as_of`` is moved later
    (:func:`~bulkops.engine.sync_snap.set_as_of`). Then the outcome files (returned).
    Runs while the write sequence is read."""
    db = run.db
    failed_add_lines(db, run.run_dir)
    removal_failures(db, run.run_dir)
    if run.fast is None:  # resumed in a new process: match the file again
        state, _why = prepare(
            db,
            run.source,
            Path(fast["snapshot"]),
            run.options.send.read,
            run.target.uri,
            remove_missing=run.options.remove_missing,
        )
        if state is not None and state.generation == fast["generation"]:
            resume_part(db, state, run.source)
            run.fast = state
        # else the snapshot moved on: it is left as it is (still valid)
    if run.fast is not None:
        state = run.fast

        def apply(db: sqlite3.Connection) -> RecordSet | None:
            _confirm_rows(db)
            return build_record_set(db, state)

        run.committed = commit_in_place(db, generation=fast["generation"], apply=apply)
        sync_run.crash_point("confirmed")
    return write_outcome_files(db, run.run_dir, removed=True)


def _base_summary(base: dict[str, Any] | None) -> BaseSummary | None:
    """The report's view of the stored :class:`BaseInfo` (its contract fields only)."""
    if not base:
        return None
    return msgspec.convert(base, BaseSummary)


def _finish(
    run: SyncRun, *, state: str, message: str, files: dict[str, str] | None = None
) -> SyncReport:
    """The snapshot saved (a full plan) or its ``as_of`` moved (a fast one), the outcome
    files (unless written already: ``files``), ``report.json`` and the journal's state."""
    db = run.db
    meta = run.journal.meta()
    if state == "complete":
        failed_add_lines(run.db, run.run_dir)
        removal_failures(run.db, run.run_dir)
        run.stored_base()
        if meta.get("fast"):
            if run.committed is not None:
                as_of = run.base.snapshot_as_of or run.base.as_of if run.base else None
                if as_of is not None:
                    set_as_of(run.db, generation=run.committed, as_of=as_of)
        else:
            run.say("saving the list's snapshot")
            _confirm_base(run)
            sync_run.crash_point("confirmed")
            if run.base is not None:
                save_snapshot(run.spec(), db, run.base, run.client.account_url, _full_set(run))
    if files is None:
        files = write_outcome_files(run.db, run.run_dir, removed=state == "complete")
    sent = state == "complete"
    counts_now = sync_counts(db, sent=sent, skipped=run.skipped())
    if state not in ("complete", "dry-run", "refused"):
        # Rows still to send are pending, not yet added or updated.
        pending = db.execute(
            "SELECT count(*) FROM row_outcome WHERE route != '' AND kind IN ('added', 'updated')"
        ).fetchone()[0]
        counts_now = SyncCounts(
            read=counts_now.read,
            added=0,
            updated=0,
            unchanged=counts_now.unchanged,
            opted_out=counts_now.opted_out,
            rejected=counts_now.rejected,
            duplicate=counts_now.duplicate,
            failed=counts_now.failed,
            removed=0,
            remove_failed=0,
            pending=int(pending),
        )
    run.save_totals()
    meta = run.journal.meta()
    sent_bytes, rows_sent, removes_sent = bytes_sent(run.db, run.run_dir)
    base = meta.get("base")
    report = SyncReport(
        command="sync",
        state=state,
        input=str(run.source),
        run_dir=str(run.run_dir),
        list=run.target.name,
        counts=counts_now,
        plan=_plan_counts(run, counts(db)),
        base=_base_summary(base),
        rows_sent=rows_sent,
        removes_sent=removes_sent,
        puts=int(db.execute("SELECT count(*) FROM row_outcome WHERE done > 0").fetchone()[0]),
        requests=int(meta.get("requests") or 0),
        bytes_sent=sent_bytes,
        wall_seconds=round(float(meta.get("wall_seconds") or 0.0), 3),
        peak_rss_bytes=peak_rss_bytes(),
        files=files,
        message=message,
        rows_parsed=int(meta.get("rows_read") or 0) - run.skipped(),
    )
    # The report first: a run marked complete always has its report (a process killed in
    # between is resumed and writes both again).
    write_atomically(
        run.run_dir / REPORT_NAME,
        [msgspec.json.format(msgspec.json.encode(report), indent=2), b"\n"],
    )
    run.journal.set_meta(state=state, phase="done" if state == "complete" else meta.get("phase"))
    return report


async def _execute(run: SyncRun) -> SyncReport:
    with single_errors():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_keep_totals, run)
            try:
                return await _execute_inner(run)
            finally:
                nursery.cancel_scope.cancel()


async def _keep_totals(run: SyncRun) -> None:
    """The request count and wall time saved every second (``status`` of a killed sync)."""
    while True:
        await trio.sleep(TOTALS_EVERY)
        run.save_totals()


async def _execute_inner(run: SyncRun) -> SyncReport:
    meta = run.journal.meta()
    if meta.get("phase") != "sending":
        plan = await _plan(run)
        columns = run.columns()
        if run.options.remove_missing and not run.options.yes:
            limit = removal_limit(run.options.max_remove, plan.members)
            if plan.remove > limit:
                message = (
                    f"the sync would remove {plan.remove:,} of {plan.members:,} members, more "
                    f"than `max_remove` ({run.options.max_remove}: {limit:,}); nothing was "
                    "sent. Check the file, or allow it with `yes`"
                )
                report = _finish(run, state="refused", message=message)
                run.journal.set_meta(state=NOT_STARTED, error=message, exit_code=1)
                return report
        if run.options.dry_run:
            return _finish(run, state="dry-run", message="")
        send_rows, remove_rows = await trio.to_thread.run_sync(
            write_send_files, run.db, run.run_dir, columns
        )
        run.journal.set_meta(
            phase="sending",
            send_rows=send_rows,
            remove_rows=remove_rows,
            planned_generation=generation_of(run.snapshot()),  # see check_not_overtaken
        )
        run.save_totals()
        sync_run.crash_point("planned")
    state, message = await send(run)
    if state == "complete":
        run.journal.set_meta(sent=True)
        run.say("reading the account's write sequence")
        sent_by = time.monotonic()
        own = own_writes(run.db, run.run_dir)
        fast = run.journal.meta().get("fast")
        files = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_prove_snapshot, run, sent_by, own)
            if fast:  # meanwhile (it waits the write margin): the snapshot's changes, the files
                run.say("saving the list's snapshot")
                files = await trio.to_thread.run_sync(_commit_fast, run, fast)
        return _finish(run, state=state, message=message, files=files)
    return _finish(run, state=state, message=message)


def _open_run(
    client: Client,
    journal: Journal,
    options: SyncOptions,
    target: ResolvedList,
    source: Path,
    reporter: Reporter | None,
    stop: trio.Event | None,
    client_start: int,
) -> SyncRun:
    meta = journal.meta()
    return SyncRun(
        client=client,
        journal=journal,
        options=options,
        target=target,
        source=source,
        db=open_db(journal.run_dir / DB_NAME),
        reporter=reporter,
        stop=stop if stop is not None else trio.Event(),
        requests_before=int(meta.get("requests") or 0),
        client_start=client_start,
    )


async def run_sync(
    client: Client,
    path: str | Path,
    *,
    options: SyncOptions,
    run_dir: str | Path | None = None,
    reporter: Reporter | None = None,
    stop: trio.Event | None = None,
) -> SyncReport:
    """Make the members of ``options.list`` equal the valid rows of the file at ``path``.

    Args:
        client: an open client (:func:`bulkops.open_client`).
        path: a CSV or XML contact file (read as ``import`` reads it).
        options: the list, removals, and how rows are read and sent.
        run_dir: where the journal, ``sync.db``, the outcome files and ``report.json`` go (a
            new directory; default ``./bulkops-runs/{stem}-sync-{time}``).
        reporter: progress output (default: none).
        stop: set it to stop at the next safe point (resumable).

    Returns:
        the report; ``report.exit_code`` is the CLI's exit code.

    Raises:
        ConfigError: bad options, an unknown list, or a run directory already in use.
        InputError: the file cannot be read or has no usable header.
        AuthError, TransportError, ...: the server could not be used.
    """
    source = Path(path)
    if not source.is_file():  # noqa: ASYNC240 - one stat before the run starts
        raise InputError("no such file", path=str(source))
    directory = Path(run_dir) if run_dir is not None else default_run_dir(source, "sync")
    start = client.statistics().requests
    journal, lock = open_new_run(directory)
    try:
        journal.set_meta(command="sync", input=str(source.resolve()), state="running")  # noqa: ASYNC240
        try:
            (target,) = await resolve_lists(client, [options.list], create=False)
        except ConfigError as exc:  # a sync never creates its list: say it without the hint
            raise ConfigError(str(exc).replace(" (`create_lists` creates it)", "")) from None
        size, digest = input_digest(source)
        journal.set_meta(
            command="sync",
            input=str(source.resolve()),  # noqa: ASYNC240
            input_size=size,
            input_digest=digest,
            options=options.to_meta(),
            lists=[attrs.asdict(target)],
            account=client.account_url,
            state="running",
            phase="plan",
        )
        run = _open_run(client, journal, options, target, source, reporter, stop, start)
        try:
            return await _execute(run)
        finally:
            run.db.close()
    except BulkOpsError as exc:
        if journal.meta().get("phase") != "sending":
            mark_not_started(journal, exc)
        raise
    finally:
        journal.close()
        lock.release()


def _attach_snapshot(run: SyncRun, path: Path) -> None:
    """The snapshot a fast plan used as its base, attached again (a resumed run).

    Raises:
        ConfigError: it is gone or unreadable.
    """
    try:
        attach(run.db, path)
    except SnapshotUnusable as exc:
        raise ConfigError(f"the list's snapshot this sync planned with is gone ({exc})") from None


def is_sync_run(run_dir: str | Path) -> bool:
    """True when ``run_dir`` holds a sync run."""
    if not (Path(run_dir) / JOURNAL_NAME).is_file():
        return False
    journal = Journal(run_dir, create=False, read_only=True)
    try:
        return journal.meta().get("command") == "sync"
    finally:
        journal.close()


async def resume_sync(
    client: Client,
    run_dir: str | Path,
    *,
    reporter: Reporter | None = None,
    stop: trio.Event | None = None,
) -> SyncReport:
    """Finish a sync that was interrupted: planned again when it stopped before sending,
    else each phase taken up where it stopped (nothing the server confirmed is sent again).

    Raises:
        ConfigError: not a sync run, another account, or the input file changed.
    """
    start = client.statistics().requests
    journal = Journal(run_dir, create=False)
    try:
        lock = RunLock(journal.run_dir).acquire()
    except BaseException:
        journal.close()
        raise
    try:
        meta = journal.meta()
        if meta.get("command") != "sync":
            raise ConfigError(f"{journal.run_dir} holds no sync run")
        if meta.get("state") == NOT_STARTED:
            raise ConfigError(
                f"the run in {journal.run_dir} never started ({meta.get('error')}): there is "
                "nothing to resume; run the corrected command again (it may use the same "
                "--run-dir)"
            )
        if meta.get("account") and not same_account(meta["account"], client.account_url):
            raise ConfigError(
                f"this run was made against {meta['account']}, not {client.account_url}"
            )
        options = SyncOptions.from_meta(meta["options"])
        source = Path(meta["input"])
        if not source.is_file():  # noqa: ASYNC240 - one stat before the run resumes
            raise InputError("the run's input file is gone", path=str(source))
        if input_digest(source) != (meta["input_size"], meta["input_digest"]):
            raise ConfigError(f"{source} changed since the run began; start a new run")
        target = ResolvedList(**meta["lists"][0])
        if meta.get("state") in ("complete", "dry-run"):
            raise ConfigError(f"the sync in {journal.run_dir} is {meta['state']} already")
        snapshot = snapshot_path(snapshot_dir(), client, BaseSpec(target.uri, ()))
        check_not_overtaken(meta, snapshot, journal.run_dir, target.name)
        journal.set_meta(state="running", wall_before=meta.get("wall_seconds") or 0.0)
        run = _open_run(client, journal, options, target, source, reporter, stop, start)
        try:
            if meta.get("fast") and meta.get("phase") == "sending":
                _attach_snapshot(run, Path(meta["fast"]["snapshot"]))
            return await _execute(run)
        finally:
            run.db.close()
    finally:
        journal.close()
        lock.release()


def urlencoded_emails(emails: Sequence[str]) -> str:
    """``contacts?email=a&email=b`` for a search (at most 50 addresses)."""
    return "contacts?" + urlencode([("email", e) for e in emails])
