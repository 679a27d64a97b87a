"""Progress output: what the plain and JSON reporters print for imports and exports."""

from __future__ import annotations

import io
import json

from bulkops.engine.progress import Counters, JsonReporter, PlainReporter


def test_an_import_line_counts_every_outcome() -> None:
    counters = Counters(rows_read=10, rows_applied=7, rows_failed=1, rows_rejected=2)
    out = io.StringIO()
    PlainReporter(out).update(counters)
    line = out.getvalue()
    assert "read 10 rows" in line
    assert "applied 7, failed 1, rejected 2, duplicate 0" in line


def test_an_export_line_speaks_of_rows_written_not_applied() -> None:
    counters = Counters(kind="export", rows_read=1234, bytes_read=3 << 20)
    out = io.StringIO()
    PlainReporter(out).update(counters)
    line = out.getvalue()
    assert "written 1,234 rows" in line
    assert "3.0 MiB" in line
    assert "applied" not in line
    assert "rejected" not in line


def test_json_events_say_when_they_happened() -> None:
    out = io.StringIO()
    reporter = JsonReporter(out)
    reporter.start()
    reporter.event("activity_done", chunk=3)
    reporter.update(Counters(kind="export", rows_read=5))
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["event"] == "activity_done"
    assert first["chunk"] == 3
    assert 0 <= first["elapsed"] <= second["elapsed"]
    assert second["kind"] == "export"
    assert second["rows_read"] == 5


def test_internal_events_reach_people_only_when_asked() -> None:
    """`reconciled: chunk=11 activity=None` is for -v; warnings are always shown."""
    quiet, verbose = io.StringIO(), io.StringIO()
    for out, flag in ((quiet, False), (verbose, True)):
        reporter = PlainReporter(out, verbose=flag)
        reporter.event("reconciled", chunk=11, activity=None)
        reporter.event("warning", chunk=2, message="odd")
    assert "reconciled" not in quiet.getvalue()
    assert "warning: chunk=2" in quiet.getvalue()
    assert "reconciled: chunk=11" in verbose.getvalue()


class _ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_reader_that_went_away_stops_the_run_once_and_silences_the_reporter() -> None:
    """A closed pipe calls the callback (the engine's stop) and nothing more is written."""
    calls: list[str] = []
    reporter = JsonReporter(_ClosedPipe())
    reporter.on_closed(lambda: calls.append("stop"))
    reporter.event("activity_done", chunk=1)
    reporter.event("activity_done", chunk=2)
    reporter.update(Counters())
    assert calls == ["stop"]
    assert reporter.closed
