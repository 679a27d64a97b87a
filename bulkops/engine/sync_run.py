"""The state of one sync run as its phases see it (:class:`SyncRun`), shared by the plan
(:mod:`bulkops.engine.sync`), the sending (:mod:`bulkops.engine.sync_send`) and the end.

Also the test hook that kills a sync at a named point (:func:`crash_point`), and where the
snapshots live (:func:`snapshot_dir`).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import attrs
import trio

from bulkops.engine.client import Client
from bulkops.engine.journal import Journal
from bulkops.engine.lists import ResolvedList
from bulkops.engine.progress import Reporter
from bulkops.engine.sync_base import BaseInfo, BaseSpec, snapshot_path
from bulkops.engine.sync_fast import FastState
from bulkops.engine.sync_report import SyncOptions

__all__ = ["SyncRun", "crash_point", "snapshot_dir"]


def crash_point(name: str) -> None:
    """Test hook: ``BULKOPS_TEST_KILL_SYNC_AT=NAME`` SIGKILLs this process at the point
    ``NAME`` (``planned``, ``adds-done``, ``puts-done``, ``removes-done``, ``confirmed``).
    Unset (always, outside tests), it does nothing. Callers call it through the module
    (``sync_run.crash_point``), so a test may replace it."""
    if os.environ.get("BULKOPS_TEST_KILL_SYNC_AT") == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def snapshot_dir() -> Path:
    """``$BULKOPS_HOME/snapshots`` (default ``~/.local/share/bulkops/snapshots``)."""
    home = os.environ.get("BULKOPS_HOME")
    root = Path(home) if home else Path.home() / ".local" / "share" / "bulkops"
    return root / "snapshots"


@attrs.define
class SyncRun:
    """One sync run taken up by this process: its journal, ``sync.db`` and options."""

    client: Client
    journal: Journal
    options: SyncOptions
    target: ResolvedList
    source: Path
    db: sqlite3.Connection
    reporter: Reporter | None
    stop: trio.Event
    started: float = attrs.field(factory=time.monotonic)
    requests_before: int = 0
    base: BaseInfo | None = None
    #: The client's request count when this process took the run up (a client may serve
    #: several runs).
    client_start: int = 0
    #: The fast plan (the snapshot in place, only changed records read), when taken.
    fast: FastState | None = None
    #: The snapshot's generation once this process committed the sync's changes to it.
    committed: str | None = None

    @property
    def run_dir(self) -> Path:
        return self.journal.run_dir

    def columns(self) -> tuple[str, ...]:
        return tuple(self.journal.meta().get("columns") or ())

    def spec(self) -> BaseSpec:
        return BaseSpec(
            list_uri=self.target.uri,
            columns=self.columns(),
            full=self.options.full,
            snapshot_dir=snapshot_dir(),
        )

    def say(self, message: str, **data: Any) -> None:
        """A ``sync`` event for the reporter: where the sync is (phases, counts)."""
        if self.reporter is not None:
            self.reporter.event("sync", message=message, **data)

    def snapshot(self) -> Path:
        """The list's snapshot file."""
        return snapshot_path(snapshot_dir(), self.client, BaseSpec(self.target.uri, ()))

    def skipped(self) -> int:
        """Rows the fast plan did not read (each ``unchanged``)."""
        return int((self.journal.meta().get("fast") or {}).get("skipped") or 0)

    def requests(self) -> int:
        return self.requests_before + self.client.statistics().requests - self.client_start

    def save_totals(self) -> None:
        spent = time.monotonic() - self.started
        wall = float(self.journal.meta().get("wall_before") or 0.0) + spent
        self.journal.set_meta(requests=self.requests(), wall_seconds=wall)

    def stored_base(self) -> BaseInfo | None:
        """``base``, or the one the journal keeps (a run taken up in a new process)."""
        meta_base = self.journal.meta().get("base")
        if self.base is None and meta_base:
            names = {f.name for f in attrs.fields(BaseInfo)}
            self.base = BaseInfo(**{k: v for k, v in meta_base.items() if k in names})
        return self.base
