"""Progress of long runs: a rich live display on a terminal, plain lines otherwise, or JSON.

The engine owns a :class:`Counters` record it updates as it goes; a reporter task turns it
into output at its own pace. Events that matter (an activity finishing, a retry storm, the
end) are also passed to :meth:`Reporter.event` as they happen.

* :class:`RichReporter` — a live panel: rows read, rows/s, ETA, activities in flight and
  done, retries, 429s, RSS. Used when stderr is a terminal.
* :class:`PlainReporter` — one line every ``interval`` seconds on stderr.
* :class:`JsonReporter` — one JSON object per line on stdout, for machines (``--json``).

Internal events (``reconciled``: how a lost POST was resolved) reach people only when asked
(``verbose``); JSON gets every event. A reader that goes away (``bulkops import --json |
head -1``) is treated like a Ctrl-C: the JSON reporter stops writing, points stdout at
``/dev/null`` (no ``BrokenPipeError`` at exit) and calls the callback given to
:meth:`Reporter.on_closed`, with which the engine stops submitting, drains what is in flight
and writes its report: the run ends interrupted (exit 3) and resumable.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol, TextIO

import attrs
import msgspec

__all__ = [
    "Counters",
    "JsonReporter",
    "NullReporter",
    "PlainReporter",
    "Reporter",
    "RichReporter",
    "current_rss_bytes",
    "make_reporter",
    "peak_rss_bytes",
    "silence_stdout",
]

#: Events for people only with ``verbose``: they say how the engine did its work.
_INTERNAL = frozenset({"reconciled"})
#: Events people always see.
_SHOWN = frozenset({"warning", "error", "stalled"})


def silence_stdout() -> None:
    """Point file descriptor 1 at ``/dev/null`` after its reader went away, so later
    writes (and the interpreter's flush at exit) do not raise ``BrokenPipeError``."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


#: glibc's ``mallopt`` parameter ``M_TOP_PAD`` (malloc.h), and the pad the readers ask for.
_M_TOP_PAD = -2
_TOP_PAD = 16 << 20


def keep_freed_memory() -> None:
    """Let glibc's malloc keep a pad of freed memory at the top of its heap (Linux only).

    Reading a file frees a few MiB at every chunk (its rows, emails and index) and allocates
    them again for the next; by default glibc returns the heap's free top to the system
    each time, and every page touched again costs a page fault: at 2 M rows of an export
    ~430,000 faults, 1.1-1.3 s of system time, ~12% of the command. With a 16 MiB pad
    (``M_TOP_PAD``, as ``MALLOC_TOP_PAD_`` would set it) ~20,000 faults remain; the peak
    RSS moves by about 2 MiB (benchmarks/README.md). Elsewhere (or when the call fails)
    nothing changes but the speed.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc's (or any) mallopt: leave malloc alone
        return
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    mallopt(_M_TOP_PAD, _TOP_PAD)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process, in bytes.

    Linux: ``VmHWM`` from ``/proc/self/status`` — ``ru_maxrss`` can report the peak of the
    process this one was started from. Elsewhere: ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)


def current_rss_bytes() -> int:
    """Current resident set size of this process, in bytes (peak where unknown)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()
    return pages * resource.getpagesize()


@attrs.define
class Counters:
    """What a run has done so far; the engine mutates it, reporters read it."""

    phase: str = "starting"
    #: ``import`` (rows read from a file and applied) or ``export`` (rows written to one).
    kind: str = "import"
    bytes_total: int = 0
    bytes_read: int = 0
    rows_read: int = 0
    rows_rejected: int = 0
    rows_duplicate: int = 0
    rows_applied: int = 0
    rows_failed: int = 0
    chunks_planned: int = 0
    chunks_skipped: int = 0  # already done before a resume
    activities_submitted: int = 0
    activities_done: int = 0
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    started: float = attrs.field(factory=time.monotonic)

    def rows_written_text(self) -> str:
        """Rows written so far (exports count their output rows in ``rows_read``)."""
        return f"{self.rows_read:,} rows"

    def elapsed(self) -> float:
        """Seconds since the run began."""
        return time.monotonic() - self.started

    def rows_per_second(self) -> float:
        """Rows read per second so far."""
        elapsed = self.elapsed()
        return self.rows_read / elapsed if elapsed > 0 else 0.0

    def eta_seconds(self) -> float | None:
        """Seconds left for reading the input, from the byte rate so far (None: unknown)."""
        elapsed = self.elapsed()
        if not self.bytes_total or not self.bytes_read or elapsed <= 0:
            return None
        rate = self.bytes_read / elapsed
        return max(0.0, (self.bytes_total - self.bytes_read) / rate)

    def in_flight(self) -> int:
        """Activities submitted and not finished."""
        return self.activities_submitted - self.activities_done

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot, with derived figures."""
        data = attrs.asdict(self)
        data.pop("started")
        data["elapsed_s"] = round(self.elapsed(), 3)
        data["rows_per_s"] = round(self.rows_per_second(), 1)
        eta = self.eta_seconds()
        data["eta_s"] = None if eta is None else round(eta, 1)
        data["rss_bytes"] = current_rss_bytes()
        return data


class Reporter(Protocol):
    """Turns counters and events into output."""

    interval: float

    def start(self) -> None:
        """Begin (e.g. open a live display)."""

    def update(self, counters: Counters) -> None:
        """Show the current counters."""

    def event(self, kind: str, **data: Any) -> None:
        """Something noteworthy happened."""

    def stop(self, counters: Counters) -> None:
        """End the display (the final report is printed by the caller)."""

    def on_closed(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the output's reader goes away (a closed pipe)."""


class NullReporter:
    """Shows nothing."""

    interval = 3600.0

    def start(self) -> None:
        """Nothing to start."""

    def update(self, counters: Counters) -> None:
        """Nothing to show."""

    def event(self, kind: str, **data: Any) -> None:
        """Nothing to say."""

    def stop(self, counters: Counters) -> None:
        """Nothing to stop."""

    def on_closed(self, callback: Callable[[], None]) -> None:
        """Nothing is written: never closed."""


def _human(n: float) -> str:
    for unit in ("", "k", "M", "G"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}T"


def _export_line(counters: Counters) -> str:
    return (
        f"[{counters.phase}] written {counters.rows_written_text()}"
        f" ({_human(counters.rows_per_second())} rows/s, {counters.bytes_read / 1048576:.1f} MiB);"
        f" requests {counters.requests}, retries {counters.retries}, 429s {counters.throttled};"
        f" rss {current_rss_bytes() / 1048576:.0f} MiB"
    )


def _line(counters: Counters) -> str:
    if counters.kind == "export":
        return _export_line(counters)
    eta = counters.eta_seconds()
    eta_text = f" eta {eta:.0f}s" if eta is not None else ""
    return (
        f"[{counters.phase}] read {counters.rows_read:,} rows"
        f" ({_human(counters.rows_per_second())}/s{eta_text}),"
        f" applied {counters.rows_applied:,}, failed {counters.rows_failed:,},"
        f" rejected {counters.rows_rejected:,}, duplicate {counters.rows_duplicate:,};"
        f" activities {counters.activities_done}/{counters.activities_submitted}"
        f" ({counters.in_flight()} in flight); requests {counters.requests},"
        f" retries {counters.retries}, 429s {counters.throttled};"
        f" rss {current_rss_bytes() / 1048576:.0f} MiB"
    )


class PlainReporter:
    """One progress line every ``interval`` seconds, and events as lines, on a stream."""

    def __init__(
        self, stream: TextIO | None = None, interval: float = 5.0, *, verbose: bool = False
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self._shown = _SHOWN | _INTERNAL if verbose else _SHOWN

    def start(self) -> None:
        """Nothing to set up."""

    def update(self, counters: Counters) -> None:
        """Print one line."""
        print(_line(counters), file=self._stream, flush=True)

    def event(self, kind: str, **data: Any) -> None:
        """Print warnings and errors as they happen; other events are in the periodic line."""
        if kind in self._shown:
            details = " ".join(f"{k}={v}" for k, v in data.items())
            print(f"{kind}: {details}", file=self._stream, flush=True)

    def stop(self, counters: Counters) -> None:
        """Print the last line."""
        self.update(counters)

    def on_closed(self, callback: Callable[[], None]) -> None:
        """Progress goes to stderr: a closed stdout does not concern it."""


class JsonReporter:
    """One JSON object per line: ``{"event": "progress", ...}`` and named events."""

    def __init__(self, stream: TextIO | None = None, interval: float = 2.0) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self.interval = interval
        self._encoder = msgspec.json.Encoder()
        self._started = time.monotonic()
        self._closed_callbacks: list[Callable[[], None]] = []
        #: The reader went away: nothing more is written.
        self.closed = False

    def _emit(self, payload: dict[str, Any]) -> None:
        if self.closed:
            return
        # Every event says when it happened: seconds since the run started.
        payload["elapsed"] = round(time.monotonic() - self._started, 3)
        try:
            self._stream.write(self._encoder.encode(payload).decode() + "\n")
            self._stream.flush()
        except BrokenPipeError:
            self.closed = True
            if self._stream is sys.stdout:
                silence_stdout()
            for callback in self._closed_callbacks:
                callback()

    def on_closed(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the reader of the stream goes away."""
        self._closed_callbacks.append(callback)

    def start(self) -> None:
        """Start the clock of the events' ``elapsed``."""
        self._started = time.monotonic()

    def update(self, counters: Counters) -> None:
        """Emit a progress event."""
        self._emit({"event": "progress", **counters.as_dict()})

    def event(self, kind: str, **data: Any) -> None:
        """Emit a named event."""
        self._emit({"event": kind, **data})

    def stop(self, counters: Counters) -> None:
        """Emit the last progress event."""
        self.update(counters)


class RichReporter:
    """A live panel on a terminal (rich)."""

    def __init__(self, interval: float = 0.5, *, verbose: bool = False) -> None:
        from rich.console import Console

        self.interval = interval
        self._shown = _SHOWN | _INTERNAL if verbose else _SHOWN
        self._console = Console(stderr=True)
        self._live: Any = None

    def _render(self, counters: Counters) -> Any:
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        eta = counters.eta_seconds()
        done = counters.bytes_read / counters.bytes_total if counters.bytes_total else 0.0
        table.add_row("phase", counters.phase)
        if counters.kind == "export":
            table.add_row(
                "written",
                f"{counters.rows_written_text()}  {_human(counters.rows_per_second())} rows/s  "
                f"{counters.bytes_read / 1048576:.1f} MiB",
            )
            table.add_row(
                "requests",
                f"{counters.requests}  retries {counters.retries}  429s {counters.throttled}",
            )
            table.add_row("memory", f"{current_rss_bytes() / 1048576:.0f} MiB RSS")
            return table
        table.add_row(
            "read",
            f"{counters.rows_read:,} rows  {done:6.1%}  {_human(counters.rows_per_second())} rows/s"
            + (f"  ETA {eta:.0f}s" if eta is not None else ""),
        )
        table.add_row(
            "outcomes",
            f"applied {counters.rows_applied:,}  failed {counters.rows_failed:,}  "
            f"rejected {counters.rows_rejected:,}  duplicate {counters.rows_duplicate:,}",
        )
        table.add_row(
            "activities",
            f"{counters.in_flight()} in flight  {counters.activities_done} done  "
            f"of {counters.chunks_planned} planned",
        )
        table.add_row(
            "requests",
            f"{counters.requests}  retries {counters.retries}  429s {counters.throttled}",
        )
        table.add_row("memory", f"{current_rss_bytes() / 1048576:.0f} MiB RSS")
        return table

    def start(self) -> None:
        """Open the live display."""
        from rich.live import Live

        self._live = Live(console=self._console, auto_refresh=False, transient=False)
        self._live.start()

    def update(self, counters: Counters) -> None:
        """Redraw."""
        if self._live is not None:
            self._live.update(self._render(counters), refresh=True)

    def event(self, kind: str, **data: Any) -> None:
        """Print warnings above the live panel."""
        if kind in self._shown and self._live is not None:
            details = " ".join(f"{k}={v}" for k, v in data.items())
            self._live.console.print(f"[yellow]{kind}[/]: {details}")

    def stop(self, counters: Counters) -> None:
        """Draw the final state and close the display."""
        if self._live is not None:
            self._live.update(self._render(counters), refresh=True)
            self._live.stop()
            self._live = None

    def on_closed(self, callback: Callable[[], None]) -> None:
        """The panel is on stderr: a closed stdout does not concern it."""


def make_reporter(*, json_output: bool, quiet: bool = False, verbose: bool = False) -> Reporter:
    """The reporter for the CLI: JSON, rich on a terminal, plain lines otherwise
    (``verbose``: also the engine's internal events)."""
    if json_output:
        return JsonReporter()
    if quiet:
        return NullReporter()
    if sys.stderr.isatty():
        return RichReporter(verbose=verbose)
    return PlainReporter(verbose=verbose)
