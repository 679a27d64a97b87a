"""``bulkops clear``: remove every member of lists with one CLEAR_CONTACTS_FROM_LISTS
activity, journaled like an import's chunk (so a lost answer or a crash is reconciled,
never sent twice) and reported like an import."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import trio

from bulkops.engine.chunks import ChunkState
from bulkops.engine.client import Client, QuotaExhausted
from bulkops.engine.import_options import ImportOptions
from bulkops.engine.import_run import ImportRun, finish, quota_message, start_run
from bulkops.engine.journal import ChunkRecord
from bulkops.engine.ledger import ImportReport
from bulkops.engine.lists import ResolvedList
from bulkops.engine.planner import PlannedChunk
from bulkops.engine.progress import Reporter
from bulkops.engine.rundirs import default_run_dir
from bulkops.errors import single_errors
from bulkops.wire.activity import ActivityType

__all__ = ["execute_clear", "run_clear"]


def _clear_body(lists: Sequence[ResolvedList]) -> bytes:
    from urllib.parse import urlencode

    fields = [("activityType", ActivityType.CLEAR_CONTACTS_FROM_LISTS.value)]
    fields.extend(("lists", lst.uri) for lst in lists)
    return urlencode(fields).encode()


async def execute_clear(run: ImportRun) -> ImportReport:
    run.reporter.start()
    body = _clear_body(run.lists)
    digest = hashlib.sha256(body).hexdigest()
    from array import array

    record = run.journal.plan(
        ChunkRecord(
            seq=0,
            kind="clear",
            rows=0,
            first_line=0,
            last_line=0,
            start_offset=0,
            end_offset=0,
            digest=digest,
            body_bytes=len(body),
            lines=array("Q"),
            after=None,
            state=ChunkState.PLANNED,
        )
    )
    chunk = PlannedChunk(record=record, body=body, content_type="application/x-www-form-urlencoded")
    state, message = "complete", ""
    if record.state != ChunkState.DONE:
        try:
            with single_errors():
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(run.tracker.run)
                    await run.pool.acquire()
                    activity_id = await run._ensure_posted(chunk)
                    if activity_id is None:
                        run.pool.release()
                        state = "interrupted"
                    else:
                        await run._wait_final(chunk.record.seq, chunk.record.rows, activity_id)
                    nursery.cancel_scope.cancel()
        except QuotaExhausted as exc:
            state, message = "interrupted", quota_message(run, exc)
    if run.stalled is not None:
        state, message = "stalled", str(run.stalled)
    return finish(run, state=state, message=message)


async def run_clear(
    client: Client,
    *,
    lists: Sequence[str],
    run_dir: str | Path | None = None,
    reporter: Reporter | None = None,
    stop: trio.Event | None = None,
) -> ImportReport:
    """Remove every member of the given lists with one CLEAR_CONTACTS_FROM_LISTS activity."""
    options = ImportOptions(kind="add", lists=tuple(lists))
    directory = Path(run_dir) if run_dir is not None else default_run_dir(None, "clear")
    return await start_run(
        client,
        directory,
        options=options,
        source=None,
        meta={"command": "clear", "input": None, "rows_read": 0},
        execute=execute_clear,
        reporter=reporter,
        stop=stop,
    )
