"""The sending phase of a sync (``phase: sending`` in its journal).

* ``send.csv`` goes through the import engine as a run of its own in ``add/`` (chunking,
  limits, exactly-once POSTs, journal, resume: all of it); then the updates that empty a
  field are PUT one contact at a time (:mod:`bulkops.engine.sync_put`);
* ``remove.csv`` goes through the remove engine in ``remove/``, **alongside** the adds and
  PUTs: the emails of the three sets are disjoint, so their order does not matter, and the
  server's time applying one activity is not spent waiting by the other.

``resume`` takes each phase up where it stopped (a phase already complete is skipped).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import attrs
import trio

from bulkops.engine import sync_run
from bulkops.engine.imports import resume_run, run_import
from bulkops.engine.ledger import ImportReport
from bulkops.engine.rundirs import NOT_STARTED
from bulkops.engine.sync_files import (
    ADD_DIR,
    REMOVE_DIR,
    REMOVE_NAME,
    SEND_NAME,
    failed_add_lines,
    first_add,
    sub_state,
)
from bulkops.engine.sync_put import apply_puts, find_preexisting
from bulkops.engine.sync_run import SyncRun
from bulkops.stream.options import ReadOptions

__all__ = ["SEND_POLL_MAX", "SEND_POLL_MIN", "send"]

#: The shortest interval between polls of the sync's activities (its sends are usually small:
#: an activity done in a fraction of a second is seen done then, not after the import's 0.5s).
SEND_POLL_MIN = 0.05
#: The longest interval between polls while the server's speed is unknown (the doubling
#: intervals of one activity would otherwise see it done up to twice as late as it was).
SEND_POLL_MAX = 0.25

#: ``(state, message)`` of a phase; ``complete`` when it is done.
Outcome = tuple[str, str]
_DONE: Outcome = ("complete", "")


async def send(run: SyncRun) -> Outcome:
    """Every phase of sending (the adds then the PUTs; the removes alongside); ``(state,
    message)``: ``complete``, or the state of the first phase that did not complete."""
    meta = run.journal.meta()
    outcomes: list[Outcome] = []

    async def adds_then_puts() -> None:
        outcomes.append(await _adds_and_puts(run, meta))

    async def removes() -> None:
        outcomes.append(await _removes(run, meta))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(adds_then_puts)
        if int(meta.get("remove_rows") or 0):
            nursery.start_soon(removes)
    for state, message in outcomes:
        if state != "complete":
            return state, f"{message}; run `bulkops resume {run.run_dir}` to finish"
    return _DONE


async def _adds_and_puts(run: SyncRun, meta: dict[str, Any]) -> Outcome:
    if int(meta.get("send_rows") or 0):
        run.say(f"sending {int(meta['send_rows']):,} rows to add or update")
        outcome = await _phase(run, ADD_DIR, SEND_NAME, "add", "adds")
        if outcome != _DONE:
            return outcome
    if run.stop.is_set():
        return "interrupted", "interrupted"
    if not meta.get("checked_adds"):
        failed = failed_add_lines(run.db, run.run_dir)
        await find_preexisting(run.client, run.db, first_add(run.run_dir), failed)
        run.journal.set_meta(checked_adds=True)
    await apply_puts(
        run.client,
        run.db,
        run.columns(),
        failed_add_lines(run.db, run.run_dir),
        concurrency=run.options.put_concurrency,
        stop=run.stop,
    )
    run.save_totals()
    if run.stop.is_set():
        return "interrupted", "interrupted"
    sync_run.crash_point("puts-done")
    return _DONE


async def _removes(run: SyncRun, meta: dict[str, Any]) -> Outcome:
    run.say(f"removing {int(meta['remove_rows']):,} members")
    return await _phase(run, REMOVE_DIR, REMOVE_NAME, "remove", "removes")


async def _phase(
    run: SyncRun, name: str, file_name: str, kind: Literal["add", "remove"], what: str
) -> Outcome:
    """Run (or resume, or skip when complete) the import engine's run of one phase; its
    outcome, after the crash point ``{what}-done`` when complete."""
    report = await _run_phase(run, name, run.run_dir / file_name, kind)
    run.save_totals()
    if report is not None and report.state != "complete":
        return report.state, report.message or f"{what} not finished"
    sync_run.crash_point(f"{what}-done")
    return _DONE


async def _run_phase(
    run: SyncRun, name: str, path: Path, kind: Literal["add", "remove"]
) -> ImportReport | None:
    """The import engine's run of one phase: started, resumed, or None when complete."""
    directory = run.run_dir / name
    state = sub_state(directory)
    if state == "complete":
        return None
    if state is not None and state != NOT_STARTED:
        return await resume_run(run.client, directory, stop=run.stop)
    send_options = run.options.send
    poll_min = min(send_options.poll_min, SEND_POLL_MIN)
    poll_max = max(poll_min, min(send_options.poll_max, SEND_POLL_MAX))
    # The phase's file is ours (UTF-8, commas, the API's column names): the user's reading
    # options describe their file, not this one (applied again, a --map swapped columns
    # back, --encoding cp1252 decoded twice). A value may grow up to 3x in UTF-8, plus quotes.
    limit = 4 * send_options.read.max_record_bytes
    read = ReadOptions(format="csv", encoding="utf-8", delimiter=",", max_record_bytes=limit)
    options = attrs.evolve(
        send_options,
        kind=kind,
        lists=(run.target.id,),
        poll_min=poll_min,
        poll_max=poll_max,
        read=read,
    )
    return await run_import(run.client, path, options=options, run_dir=directory, stop=run.stop)
