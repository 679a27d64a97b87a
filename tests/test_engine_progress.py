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
