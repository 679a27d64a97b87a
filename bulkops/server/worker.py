"""The activity worker: runs bulk activities in the server process, one at a time, durably.

One trio task (:func:`serve_worker`, started by ``serve_api`` from ``state.background``)
takes unfinished activities in ``seq`` order and drives each through the lifecycle table of
:mod:`bulkops.wire.activity`; the status changes and their SQL are in
:mod:`bulkops.server.activity_queries`, the all-or-nothing, set-based apply of rows in
:mod:`bulkops.server.apply`, exports in :mod:`bulkops.server.exports`.

Invariants:

* **All or nothing** (see :mod:`bulkops.server.apply`): a crash leaves an activity RUNNING
  with nothing applied; on start-up RUNNING activities go back to QUEUED (``RECOVER``) and
  are run again. An export writes ``{id}.csv.tmp`` and renames it into place before its
  COMPLETE commits; running it again just rewrites the file.
* **No checkpoint inside an activity**: the worker runs a passive WAL checkpoint in another
  thread after each activity, alongside the next one (one at a time).
* **The event loop never blocks.** Validation and SQL run in worker threads behind the
  :class:`~bulkops.server.storage.Storage` methods; request handlers keep answering.
* **No polling.** The worker sleeps on a :class:`trio.Event` that ``POST /activities`` sets
  (:meth:`Worker.wake`); on start-up it processes whatever is unfinished.
* The ``stall`` fault parks an activity RUNNING for its seconds and lets later activities
  overtake it, as a slow job on a real service would; it is applied when its time is up.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import trio

# Re-exported: the SQLite side of the lifecycle, for tests and tools.
from bulkops.server.activity_queries import purge_expired, recover_running, take_next
from bulkops.server.apply import apply_activity
from bulkops.server.datafile import ActivityCannotRun
from bulkops.server.http import ApiState
from bulkops.server.records import RowError, decode_errors, encode_errors
from bulkops.server.store import now_ms

__all__ = [
    "PURGE_INTERVAL",
    "ActivityCannotRun",
    "RowError",
    "Worker",
    "WorkerStats",
    "apply_activity",
    "decode_errors",
    "encode_errors",
    "purge_expired",
    "recover_running",
    "register",
    "serve_worker",
    "take_next",
    "worker_for",
]

logger = logging.getLogger("bulkops.server.worker")

#: Seconds between deletions of activities past their retention (their 404 is immediate).
PURGE_INTERVAL = 3600.0


@attrs.frozen(kw_only=True)
class WorkerStats:
    """Counters of one worker since it started."""

    recovered: int
    completed: int
    failed: int
    stalled: int


# -- the worker -------------------------------------------------------------------------------


class Worker:
    """Runs the activities of one server. Get it with :func:`worker_for`.

    Args:
        state: the server state (store, configuration, the fault plan's dice in ``faults``).
    """

    def __init__(self, state: ApiState) -> None:
        self.state = state
        self._wakeup = trio.Event()
        self._released: list[tuple[str, int]] = []
        self._recovered = 0
        self._completed = 0
        self._failed = 0
        self._stalled = 0
        self._last_purge_ms: int | None = None
        self._checkpointing = False
        #: Tests only (None in production): called in the worker's thread with the id of a
        #: RUNNING add/remove/clear activity whose rows are applied and not yet committed.
        self.before_commit: Callable[[str], None] | None = _hold_from_environment()

    def wake(self) -> None:
        """Tell the worker a new activity may be waiting (safe to call any time)."""
        self._wakeup.set()

    def statistics(self) -> WorkerStats:
        """Counters since the worker started."""
        return WorkerStats(
            recovered=self._recovered,
            completed=self._completed,
            failed=self._failed,
            stalled=self._stalled,
        )

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Recover, then run activities until cancelled."""
        store = self.state.store
        self._recovered = await store.recover_running()
        if self._recovered:
            logger.info("recovered %d interrupted activities", self._recovered)
        await self._maybe_purge()
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                self._wakeup = trio.Event()
                while await self._step(nursery):
                    await self._maybe_purge()
                await self._wakeup.wait()

    async def _step(self, nursery: trio.Nursery) -> bool:
        if self._released:
            activity_id, account_id = self._released.pop(0)
            await self._run(activity_id, account_id)
            self._start_checkpoint(nursery)
            return True
        taken = await self.state.store.take_next()
        if taken is None:
            return False
        stall = self._stall_seconds()
        if stall > 0:
            self._stalled += 1
            logger.info("fault plan: activity %s stalls for %gs", taken[0], stall)
            nursery.start_soon(self._release_after, taken, stall)
            return True
        await self._run(*taken)
        self._start_checkpoint(nursery)
        return True

    def _start_checkpoint(self, nursery: trio.Nursery) -> None:
        """Checkpoint the WAL in another thread while the next activity runs (one at a time)."""
        if not self._checkpointing:
            self._checkpointing = True
            nursery.start_soon(self._checkpoint)

    async def _checkpoint(self) -> None:
        try:
            await self.state.store.checkpoint()
        except Exception:  # pragma: no cover - tried again after the next activity
            logger.exception("checkpointing the WAL failed")
        finally:
            self._checkpointing = False

    def _stall_seconds(self) -> float:
        dice = self.state.faults
        return 0.0 if dice is None else dice.stall_seconds()

    async def _release_after(self, taken: tuple[str, int], seconds: float) -> None:
        await trio.sleep(seconds)
        self._released.append(taken)
        self.wake()

    async def _run(self, activity_id: str, account_id: int) -> None:
        store = self.state.store
        try:
            request = await store.load_request(activity_id)
            if request.export is not None:
                file_name, count = await store.write_export(account_id, activity_id, request.export)
                await store.complete_export(activity_id, file_name, count)
            else:
                await store.apply_activity(activity_id, account_id, request, self.before_commit)
            self._completed += 1
        except ActivityCannotRun as exc:
            logger.warning("activity %s cannot run: %s", activity_id, exc)
            await self._fail(activity_id)
        except Exception:
            logger.exception("activity %s failed", activity_id)
            await self._fail(activity_id)

    async def _fail(self, activity_id: str) -> None:
        self._failed += 1
        try:
            await self.state.store.fail_activity(activity_id)
        except Exception:  # pragma: no cover - the database itself is failing
            logger.exception("cannot mark activity %s as ERROR", activity_id)

    async def _maybe_purge(self) -> None:
        """Delete expired activities, at most once per :data:`PURGE_INTERVAL` (wall clock).

        No timer: it runs when the worker starts and after activities, so an idle server
        arms no deadline (their 404 never waits for this; queries filter by age).
        """
        now = now_ms()
        if self._last_purge_ms is not None and now - self._last_purge_ms < PURGE_INTERVAL * 1000:
            return
        self._last_purge_ms = now
        store = self.state.store
        cutoff = now - int(self.state.config.retention_days * 86_400_000)
        try:
            purged = await store.purge_expired(cutoff)
        except Exception:  # pragma: no cover - tried again at the next interval
            logger.exception("purging expired activities failed")
        else:
            if purged:
                logger.info("purged %d activities past their retention", purged)


def _hold_from_environment() -> Callable[[str], None] | None:
    """Tests only: with ``BULKOPS_TEST_HOLD_FILE=path`` the worker writes a RUNNING activity's
    id to ``path`` before its commit and waits while the file exists (tests/test_server_crash.py
    kills the server there). Unset in production: no hook."""
    name = os.environ.get("BULKOPS_TEST_HOLD_FILE")
    if not name:
        return None
    path = Path(name)

    def hold(activity_id: str) -> None:
        path.write_text(activity_id)
        while path.exists():
            time.sleep(0.01)

    return hold


def worker_for(state: ApiState) -> Worker:
    """The worker of ``state`` (created on first use, kept in ``state.worker``)."""
    worker = state.worker
    if not isinstance(worker, Worker):
        worker = Worker(state)
        state.worker = worker
    return worker


async def serve_worker(
    state: ApiState, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the activity worker of ``state`` until cancelled (a ``serve_api`` background task).

    In-process tests start it themselves: ``await nursery.start(serve_worker, state)``.
    """
    await worker_for(state).serve(task_status=task_status)


def register(state: ApiState) -> None:
    """Make ``serve_api`` run the worker: add :func:`serve_worker` to the background tasks."""
    if serve_worker not in state.background:
        state.background.append(serve_worker)
    worker_for(state)
