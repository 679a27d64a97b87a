"""Watching activities until they finish, with as few requests as possible.

One task polls for every activity in flight. While more than one is tracked, one GET of the
activities feed (newest first) covers them all, following ``next`` only while some tracked
activity has not been seen yet; with a single activity, one GET of that activity is cheaper.

When to poll next (the interval rule):

* with no estimate of the server's speed, intervals grow exponentially from ``poll_min`` to
  ``poll_max`` and reset to ``poll_min`` whenever a poll shows progress;
* once activities have finished, the server's rate (rows per second of its run times) gives
  the expected finishing time of the activity the scheduler is waiting for — the next one
  when it is blocked, the last one otherwise — and the next poll comes at three quarters of
  that time, within ``[poll_min, poll_max]``. Servers process activities one after
  another, so the expected finish of the k-th oldest is the rows still ahead of it divided
  by the rate.

An activity whose status has not changed for ``stall_timeout`` seconds is reported as stalled
(:class:`~bulkops.errors.ActivityStalled`) — never a silent return, never an endless wait.
Every observed status is checked against the lifecycle table (``wire.activity.may_follow``).
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
import trio

from bulkops.engine.client import Client
from bulkops.errors import ActivityStalled, LifecycleError, NotFound, ProtocolError
from bulkops.wire.activity import ActivityStatus, may_follow
from bulkops.wire.atom import activity_from_entry, links_of, local_name, parse_xml
from bulkops.wire.model import Activity

__all__ = ["ActivityTracker", "TrackerStats"]

# Activity responses carry every row error; 40,000 errors are a few MiB.
_MAX_ACTIVITY_XML = 256 * 1024 * 1024


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
        self._done_rows = 0
        self._done_seconds = 0.0
        self._latest_rate: float | None = None
        self._polls = 0
        self.blocked = False  # set by the scheduler while it waits for a completion

    def statistics(self) -> TrackerStats:
        """A snapshot."""
        return TrackerStats(
            polls=self._polls, tracked=len(self._tracked), rows_per_second=self.rate
        )

    @property
    def rate(self) -> float | None:
        """The server's processing rate in rows per second, once known: the faster of the
        overall rate and the latest activity's (the first activities of a run compete with
        the server's own request parsing and understate it)."""
        if self._done_seconds <= 0 or self._done_rows <= 0:
            return None
        overall = self._done_rows / self._done_seconds
        return max(overall, self._latest_rate or 0.0)

    def observe_finished(self, activity: Activity, rows: int) -> None:
        """Feed the rate estimate with an activity that finished (tracked or not)."""
        if activity.run_start_time and activity.run_finish_time:
            seconds = (activity.run_finish_time - activity.run_start_time).total_seconds()
            self._done_rows += rows
            self._done_seconds += max(seconds, 0.001)
            self._latest_rate = rows / max(seconds, 0.001)

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
                await trio.sleep(self.poll_min)  # a new activity is at best PENDING now
                continue
            with trio.move_on_after(self._next_interval()):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            if self._tracked:
                await self._poll()

    def wake(self) -> None:
        """Poll now (the scheduler became blocked, or something changed)."""
        self._wakeup.set()

    # -- scheduling of polls -----------------------------------------------------------------

    def _next_interval(self) -> float:
        rate = self.rate
        if rate is None:
            return self._backoff
        # Rows still to process, oldest first; the server works through them in order.
        ahead = 0
        target = None
        for activity_id in self._order:
            tracked = self._tracked[activity_id]
            ahead += tracked.rows
            if self.blocked:
                target = ahead
                break
        if target is None:
            target = ahead
        # Aim a little early (a late poll wastes the server's idle time, an early one costs a
        # request), then the next prediction is short.
        predicted = 0.75 * target / rate
        return min(self.poll_max, max(self.poll_min, predicted, self._backoff_floor()))

    def _backoff_floor(self) -> float:
        # After a poll that showed no progress, do not hammer a prediction that was too
        # early: wait at least the exponential backoff.
        return self._backoff if self._backoff > self.poll_min else 0.0

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
        response = await self._client.get(f"activities/{activity_id}")
        root = parse_xml(response.content, max_bytes=_MAX_ACTIVITY_XML)
        return activity_from_entry(root)

    async def _get_feed(self, wanted: set[str]) -> list[Activity]:
        seen: list[Activity] = []
        href: str | None = "activities"
        missing = set(wanted)
        while href is not None and missing:
            response = await self._client.get(href)
            root = parse_xml(response.content, max_bytes=_MAX_ACTIVITY_XML)
            page = [activity_from_entry(el) for el in root if local_name(el) == "entry"]
            seen.extend(page)
            missing.difference_update(a.id for a in page)
            href = links_of(root).get("next") or None
        return seen

    def tracked_ids(self) -> Iterable[str]:
        """Ids being watched, oldest first."""
        return list(self._order)
