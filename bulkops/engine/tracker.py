"""Watching activities until they finish, with as few requests as possible.

One task polls for every activity in flight. While more than one is tracked, one GET of the
activities feed (newest first) covers them all, following ``next`` only while some tracked
activity has not been seen yet; with a single activity, one GET of that activity is cheaper.

When to poll next (the interval rule, :func:`poll_interval`): a poll is worth a request
only when its answer can change what the scheduler does.

* While the scheduler is still submitting and waits for nothing (``submitting`` and not
  ``blocked``), no completion is needed yet: one poll per ``HEARTBEAT`` seconds (or
  ``poll_max``, if longer) keeps progress and stall detection alive.
* Otherwise, with no estimate of the server's speed, intervals grow exponentially from
  ``poll_min`` to ``poll_max`` and reset to ``poll_min`` whenever a poll shows progress.
* Once activities have finished, the server's rate (rows per second of its run times) gives
  the expected finishing time of the activity the scheduler is waiting for — the next one
  when it is blocked, the last one otherwise — and the next poll comes then, within
  ``[poll_min, PREDICTION_MAX]``. Servers process activities one after another, so the
  expected finish of the k-th oldest is the rows still ahead of it divided by the rate.
  Only the poll that sees the last activity finish costs wall time when it is late (the
  server has queued work until then); an early one costs a request. Activities' run times
  vary by ±10%, so the poll for the last one comes ``FINAL_MARGIN`` (5%) after its
  predicted finish: in most runs it then sees everything done, for ~5% of the remaining
  time. (Counting the running activity's rows in full already makes every prediction a
  little late, by at most that activity.)
* A rate measured while POSTs were still arriving understates the server (their parsing
  shares its CPU; 2–4× on a local server), so until activities that started after the last
  submission have finished (``clean``), the poll aims at the second-oldest activity: the
  first one run wholly alone, which gives a clean rate.
* A wake-up (the scheduler became blocked, or stopped submitting) re-evaluates the rule
  from the last poll: it does not force a poll.

An activity whose status has not changed for ``stall_timeout`` seconds is reported as stalled
(:class:`~bulkops.errors.ActivityStalled`) — never a silent return, never an endless wait.
Every observed status is checked against the lifecycle table (``wire.activity.may_follow``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import aclosing

import attrs
import trio

from bulkops.engine.client import Client
from bulkops.errors import ActivityStalled, LifecycleError, NotFound, ProtocolError
from bulkops.wire.activity import ActivityStatus, may_follow
from bulkops.wire.atom.activities import activity_from_entry
from bulkops.wire.model import Activity

__all__ = [
    "FINAL_MARGIN",
    "HEARTBEAT",
    "PREDICTION_MAX",
    "ActivityTracker",
    "TrackerStats",
    "poll_interval",
]

# Activity responses carry every row error; 40,000 errors are a few MiB.

#: Longest wait a rate prediction may ask for, in seconds: a server that slowed down (another
#: client's activities queued in front of ours) is noticed within this time.
PREDICTION_MAX = 60.0

#: Seconds between polls while nothing waits for a completion (progress, stall detection).
HEARTBEAT = 30.0


#: How far past the predicted finish of the last activity its poll comes (a fraction).
FINAL_MARGIN = 0.05

#: Finished activities the rate estimate remembers.
_SAMPLES = 8


def poll_interval(
    *,
    rows_ahead: Sequence[int],
    rate: float | None,
    clean: bool = True,
    blocked: bool,
    submitting: bool,
    backoff: float,
    poll_min: float,
    poll_max: float,
) -> float:
    """Seconds from the last poll to the next one (the rule in the module docstring).

    Args:
        rows_ahead: the rows of each tracked activity, oldest first (as of the last poll).
        rate: the server's rows per second, or None while unknown.
        clean: whether ``rate`` was measured on activities that ran alone; if not, it may
            be several times too low, and only the two oldest activities' finish is
            predicted.
        blocked: the scheduler waits for a completion (a dependency or a queue slot).
        submitting: more activities are coming, so nobody needs the last one yet.
        backoff: the exponential interval (``poll_min`` after progress, doubling without).
        poll_min / poll_max: the bounds of the exponential intervals.
    """
    if submitting and not blocked:
        return max(HEARTBEAT, poll_max)
    if rate is None or rate <= 0:
        return backoff
    target: float
    if blocked:
        target = sum(rows_ahead[:1])
    elif not clean:
        target = sum(rows_ahead[:2])
    else:
        target = sum(rows_ahead) * (1.0 + FINAL_MARGIN)
    predicted = target / rate
    # After a poll that showed no progress, do not hammer a prediction that was too early:
    # wait at least the exponential backoff.
    floor = backoff if backoff > poll_min else poll_min
    return min(max(PREDICTION_MAX, poll_max), max(floor, predicted))


@attrs.define
class _Tracked:
    activity_id: str
    rows: int
    since: float  # trio time the current status was first seen (or tracking began)
    status: ActivityStatus | None = None
    done: trio.Event = attrs.field(factory=trio.Event)
    result: Activity | None = None
    error: Exception | None = None


@attrs.frozen(kw_only=True)
class TrackerStats:
    """A snapshot of the tracker."""

    polls: int
    tracked: int
    rows_per_second: float | None


class ActivityTracker:
    """Polls the server for the activities handed to :meth:`wait`.

    Run :meth:`run` in a nursery; it returns never, cancel it when done.

    Args:
        client: the API client.
        poll_min: shortest interval between polls, in seconds.
        poll_max: longest interval between polls, in seconds.
        stall_timeout: seconds without a status change before an activity counts as stalled.
    """

    def __init__(
        self,
        client: Client,
        *,
        poll_min: float = 0.5,
        poll_max: float = 10.0,
        stall_timeout: float = 600.0,
    ) -> None:
        self._client = client
        self.poll_min = poll_min
        self.poll_max = poll_max
        self.stall_timeout = stall_timeout
        self._tracked: dict[str, _Tracked] = {}
        self._order: list[str] = []  # tracked ids, oldest first
        self._wakeup = trio.Event()
        self._backoff = poll_min
        # (rows, run start, run seconds) of the latest finished activities, server clock.
        self._samples: list[tuple[int, float, float]] = []
        self._last_insert: float | None = None
        self._polls = 0
        self._last_poll = 0.0  # trio time of the last poll (or when tracking began)
        self.blocked = False  # set by the scheduler while it waits for a completion
        self.submitting = False  # set by the scheduler while more activities are coming

    def statistics(self) -> TrackerStats:
        """A snapshot."""
        return TrackerStats(
            polls=self._polls, tracked=len(self._tracked), rows_per_second=self.rate
        )

    @property
    def rate(self) -> float | None:
        """The server's processing rate in rows per second, once known (see :attr:`clean`)."""
        samples = self._clean_samples() or self._samples
        seconds = sum(s for _, _, s in samples)
        rows = sum(r for r, _, _ in samples)
        if seconds <= 0 or rows <= 0:
            return None
        return rows / seconds

    @property
    def clean(self) -> bool:
        """Whether :attr:`rate` comes from activities that ran after the last one was
        submitted. Those that ran while later POSTs were still arriving shared the server
        with their parsing and understate its speed (a local server: 2–4× slower)."""
        return bool(self._clean_samples())

    def _clean_samples(self) -> list[tuple[int, float, float]]:
        last = self._last_insert
        if last is None:
            return []
        return [sample for sample in self._samples if sample[1] >= last]

    def observe_finished(self, activity: Activity, rows: int) -> None:
        """Feed the rate estimate with an activity that finished (tracked or not)."""
        self.observe_inserted(activity)
        if activity.run_start_time and activity.run_finish_time:
            seconds = (activity.run_finish_time - activity.run_start_time).total_seconds()
            self._samples.append((rows, activity.run_start_time.timestamp(), max(seconds, 0.001)))
            del self._samples[:-_SAMPLES]

    def observe_inserted(self, activity: Activity) -> None:
        """Note when the server queued an activity (its clock): activities that start
        running after the newest such time run alone."""
        inserted = activity.insert_time.timestamp()
        if self._last_insert is None or inserted > self._last_insert:
            self._last_insert = inserted

    async def wait(self, activity_id: str, rows: int) -> Activity:
        """Wait until the activity is COMPLETE or ERROR and return its final state.

        Raises:
            ActivityStalled: no status change for ``stall_timeout`` seconds.
            LifecycleError: the server reported an impossible status change.
        """
        tracked = self._tracked.get(activity_id)
        if tracked is None:
            tracked = _Tracked(activity_id=activity_id, rows=rows, since=trio.current_time())
            self._tracked[activity_id] = tracked
            self._order.append(activity_id)
            if len(self._tracked) == 1:
                self._backoff = self.poll_min
                self._wakeup.set()  # the poller was idle: start the clock
        await tracked.done.wait()
        if tracked.error is not None:
            raise tracked.error
        assert tracked.result is not None
        return tracked.result

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            if not self._tracked:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                self._last_poll = trio.current_time()  # a new activity is at best PENDING now
                continue
            deadline = self._last_poll + self._next_interval()
            if trio.current_time() < deadline:
                with trio.move_on_at(deadline):
                    await self._wakeup.wait()
                if self._wakeup.is_set():  # the scheduler's state changed: re-evaluate
                    self._wakeup = trio.Event()
                    continue
            if self._tracked:
                await self._poll()
                self._last_poll = trio.current_time()

    def wake(self) -> None:
        """Re-evaluate when to poll (the scheduler became blocked, or stopped submitting)."""
        self._wakeup.set()

    # -- scheduling of polls -----------------------------------------------------------------

    def _next_interval(self) -> float:
        return poll_interval(
            rows_ahead=[self._tracked[a].rows for a in self._order],
            rate=self.rate,
            clean=self.clean,
            blocked=self.blocked,
            submitting=self.submitting,
            backoff=self._backoff,
            poll_min=self.poll_min,
            poll_max=self.poll_max,
        )

    # -- polling -----------------------------------------------------------------------------

    async def _poll(self) -> None:
        self._polls += 1
        wanted = set(self._tracked)
        try:
            if len(wanted) == 1:
                (activity_id,) = wanted
                seen = [await self._get_one(activity_id)]
            else:
                seen = await self._get_feed(wanted)
        except NotFound as exc:
            # A single activity that vanished (retention) is a protocol-level surprise.
            for tracked in list(self._tracked.values()):
                if len(wanted) == 1:
                    self._finish(tracked, error=ProtocolError(f"activity disappeared: {exc}"))
            return
        progress = False
        now = trio.current_time()
        for activity in seen:
            self.observe_inserted(activity)
            watched = self._tracked.get(activity.id)
            if watched is not None:
                progress |= self._observe(watched, activity, now)
        for tracked in list(self._tracked.values()):
            if now - tracked.since > self.stall_timeout:
                self._finish(
                    tracked,
                    error=ActivityStalled(
                        tracked.activity_id,
                        f"no progress for {self.stall_timeout:g} s (last status "
                        f"{tracked.status or 'unknown'})",
                    ),
                )
        self._backoff = self.poll_min if progress else min(self.poll_max, self._backoff * 2)

    def _observe(self, tracked: _Tracked, activity: Activity, now: float) -> bool:
        try:
            status = ActivityStatus(activity.status)
        except ValueError:
            self._finish(
                tracked, error=ProtocolError(f"unknown activity status {activity.status!r}")
            )
            return True
        if tracked.status is not None and not may_follow(tracked.status, status):
            self._finish(
                tracked,
                error=LifecycleError(
                    f"activity {tracked.activity_id} went from {tracked.status} to {status}"
                ),
            )
            return True
        changed = status != tracked.status
        if changed:
            tracked.status = status
            tracked.since = now
        if status.is_final:
            self.observe_finished(activity, tracked.rows)
            self._finish(tracked, result=activity)
        return changed

    def _finish(
        self, tracked: _Tracked, *, result: Activity | None = None, error: Exception | None = None
    ) -> None:
        tracked.result = result
        tracked.error = error
        self._tracked.pop(tracked.activity_id, None)
        if tracked.activity_id in self._order:
            self._order.remove(tracked.activity_id)
        tracked.done.set()

    async def _get_one(self, activity_id: str) -> Activity:
        return await self._client.get_entry(f"activities/{activity_id}", activity_from_entry)

    async def _get_feed(self, wanted: set[str]) -> list[Activity]:
        seen: list[Activity] = []
        missing = set(wanted)
        if not missing:
            return seen
        async with aclosing(self._client.iter_feed("activities", activity_from_entry)) as pages:
            async for page in pages:
                seen.extend(page)
                missing.difference_update(a.id for a in page)
                if not missing:
                    break
        return seen

    def tracked_ids(self) -> Iterable[str]:
        """Ids being watched, oldest first."""
        return list(self._order)
