"""The activity worker: runs bulk activities durably, alongside any number of other workers.

One worker (:class:`Worker`; ``serve_api`` starts one per server from ``state.background``,
``bulkops worker`` runs them alone) has ``concurrency`` tasks that each claim the oldest
claimable activity under a lease (:mod:`bulkops.server.leases`) and drive it through the
lifecycle table of :mod:`bulkops.wire.activity`; the status changes and their SQL are in
:mod:`bulkops.server.activity_queries`, the all-or-nothing, set-based apply of rows in
:mod:`bulkops.server.apply`, exports in :mod:`bulkops.server.exports`.

Invariants:

* **All or nothing** (see :mod:`bulkops.server.apply`): a crash leaves an activity RUNNING
  with nothing applied, under the dead worker's lease. Once the lease expires (at most
  ``lease_seconds`` after the last renewal) any worker claims it again and runs it from the
  start; a worker starting on the same host takes over at once the leases of workers whose
  process no longer exists. An export writes ``{id}.csv.tmp`` and renames it into place
  before its COMPLETE commits; running it again just rewrites the file.
* **Leases live while their worker does.** A renewal task pushes every held lease to
  ``now + lease_seconds`` each ``lease_seconds / 3``; a worker that finds a lease lost
  records nothing for that activity (the new holder does). On a graceful stop the worker
  gives back what it holds unfinished (QUEUED again).
* **No checkpoint inside an activity**: the worker runs a passive WAL checkpoint in another
  thread after each activity, alongside the next one (one at a time).
* **The event loop never blocks.** Validation and SQL run in worker threads behind the
  :class:`~bulkops.server.storage.Storage` methods; request handlers keep answering.
* **Polling only as a backstop.** ``POST /activities`` wakes its own process's worker at once
  (:meth:`Worker.wake`); activities posted to another process, and expired leases, are found
  by a poll every ``poll_interval`` seconds — a read that takes no write lock when idle.
* The ``stall`` fault parks an activity RUNNING (its lease renewed) for its seconds and lets
  later activities overtake it, as a slow job on a real service would; it is applied when
  its time is up.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import trio

from bulkops.server import leases

# Re-exported: the SQLite side of the lifecycle, for tests and tools.
from bulkops.server.activity_queries import purge_expired, recover_running, take_next
from bulkops.server.apply import apply_activity
from bulkops.server.datafile import ActivityCannotRun
from bulkops.server.http import ApiState
from bulkops.server.leases import Claim, LeaseError
from bulkops.server.records import RowError, decode_errors, encode_errors
from bulkops.server.store import now_ms

__all__ = [
    "LEASE_SECONDS",
    "POLL_INTERVAL",
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

#: Seconds a claimed activity stays leased without a renewal (renewed every third of it).
LEASE_SECONDS = 30.0

#: Seconds between two looks for activities posted elsewhere or left by a dead worker.
POLL_INTERVAL = 1.0


@attrs.frozen(kw_only=True)
class WorkerStats:
    """Counters of one worker since it started."""

    recovered: int
    completed: int
    failed: int
    stalled: int


# -- the worker -------------------------------------------------------------------------------


class Worker:
    """Runs activities from the database of ``state``. Get a server's with :func:`worker_for`.

    Args:
        state: the server state (store, configuration, the fault plan's dice in ``faults``).
        worker_id: its lease owner id (default: :func:`~bulkops.server.leases.new_worker_id`).
        concurrency: activities run at once.
        lease_seconds: how long a claim lasts without renewal.
        poll_interval: seconds between looks for work nobody woke this worker for.
    """

    def __init__(
        self,
        state: ApiState,
        *,
        worker_id: str | None = None,
        concurrency: int = 1,
        lease_seconds: float = LEASE_SECONDS,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        if concurrency < 1 or not lease_seconds > 0 or not poll_interval > 0:
            raise ValueError("concurrency, lease_seconds and poll_interval must be positive")
        self.state = state
        self.worker_id = worker_id or leases.new_worker_id()
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self._wakeup = trio.Event()
        self._released: list[tuple[str, int]] = []
        self._held: set[str] = set()  # activities under this worker's lease
        self._recovered = 0
        self._completed = 0
        self._failed = 0
        self._stalled = 0
        self._last_purge_ms: int | None = None
        self._checkpointing = False
        #: Tests only (None in production): called in the worker's thread with the id of a
        #: RUNNING add/remove/clear activity whose rows are applied and not yet committed.
        self.before_commit: Callable[[str], None] | None = _hold_from_environment()
        self._claim_failing = False

    def wake(self) -> None:
        """Tell the worker a new activity may be waiting (safe to call any time)."""
        self._wakeup.set()

    def statistics(self) -> WorkerStats:
        """Counters since the worker started (``recovered``: activities taken over from
        expired leases)."""
        return WorkerStats(
            recovered=self._recovered,
            completed=self._completed,
            failed=self._failed,
            stalled=self._stalled,
        )

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Take over dead local workers' leases, then run activities until cancelled."""
        await self._take_over_dead()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._renew_leases)
                for _ in range(self.concurrency):
                    nursery.start_soon(self._run_activities, nursery)
                task_status.started()
        finally:
            await self._release_held()

    async def _take_over_dead(self) -> None:
        store = self.state.store
        try:
            owners = await store.lease_owners()
            dead = [owner for owner in owners if leases.owner_is_dead_here(owner)]
            count = await store.expire_leases(dead) if dead else 0
        except Exception as exc:  # their leases expire anyway
            logger.warning("cannot look for dead workers' activities: %s", exc)
            return
        if dead:
            logger.info("taking over %d activities of %d dead workers", count, len(dead))

    async def _run_activities(self, nursery: trio.Nursery) -> None:
        await self._maybe_purge()  # after started(): it may wait for another's write lock
        while True:
            self._wakeup = trio.Event()
            while await self._step(nursery):
                await self._maybe_purge()
            with trio.move_on_after(self.poll_interval):
                await self._wakeup.wait()

    async def _step(self, nursery: trio.Nursery) -> bool:
        if self._released:
            activity_id, account_id = self._released.pop(0)
            await self._run(activity_id, account_id)
            self._start_checkpoint(nursery)
            return True
        try:
            claim = await self.state.store.claim_activity(
                self.worker_id, now_ms(), self.lease_seconds
            )
        except Exception as exc:
            # The database is unreachable or closed: look again at the next poll; one
            # warning per spell of failures, not one per poll.
            if not self._claim_failing:
                logger.warning("cannot look for activities (trying again): %s", exc)
            self._claim_failing = True
            return False
        self._claim_failing = False
        if claim is None:
            return False
        self._held.add(claim.activity_id)
        if claim.reclaimed:
            self._recovered += 1
            logger.info(
                "activity %s: its worker's lease expired; running it again", claim.activity_id
            )
        stall = self._stall_seconds()
        if stall > 0:
            self._stalled += 1
            logger.info("fault plan: activity %s stalls for %gs", claim.activity_id, stall)
            nursery.start_soon(self._release_after, claim, stall)
            return True
        await self._run(claim.activity_id, claim.account_id)
        self._start_checkpoint(nursery)
        return True

    async def _renew_leases(self) -> None:
        store = self.state.store
        while True:
            await trio.sleep(self.lease_seconds / 3)
            for activity_id in sorted(self._held):
                try:
                    renewed = await store.renew_lease(
                        activity_id, self.worker_id, now_ms(), self.lease_seconds
                    )
                except Exception as exc:  # tried again at the next renewal
                    logger.warning("cannot renew the lease of %s: %s", activity_id, exc)
                    continue
                if not renewed and activity_id in self._held:
                    logger.warning("activity %s: lease lost to another worker", activity_id)
                    self._held.discard(activity_id)

    async def _release_held(self) -> None:
        """Give back what is held unfinished (stalled activities), so others take it at once."""
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            for activity_id in sorted(self._held):
                try:
                    await self.state.store.release_activity(activity_id, self.worker_id, now_ms())
                except Exception:  # pragma: no cover - its lease will expire instead
                    logger.exception("cannot release activity %s", activity_id)
            self._held.clear()

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

    async def _release_after(self, claim: Claim, seconds: float) -> None:
        await trio.sleep(seconds)
        self._released.append((claim.activity_id, claim.account_id))
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
        finally:
            self._held.discard(activity_id)

    async def _fail(self, activity_id: str) -> None:
        self._failed += 1
        try:
            await self.state.store.fail_activity(activity_id, self.worker_id)
        except LeaseError as exc:
            logger.warning("activity %s: not marked ERROR, %s", activity_id, exc)
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
