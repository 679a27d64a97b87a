"""Acceptance: a run can always be finished or cleanly abandoned.

Hypothesis draws small files (duplicates, bad rows, a field of up to 2 MB, in UTF-8 with or
without BOM, UTF-16 LE/BE with BOM, cp1252 or a mix of UTF-8 and cp1252 rows), options within
and beyond the server's limits (``--max-rows``, ``--max-bytes``, ``--concurrency``: values
below the minimum are usage errors, then the corrected command takes the same run
directory; values over the API's limits are lowered with a note) and an interruption
(SIGINT, a double SIGINT, SIGKILL right after a POST, the reader of ``--json`` going away),
placed by counting the run's JSON events — never by sleeping. Each example runs the real
``bulkops`` entry point against ``bulkops serve`` on 127.0.0.1. Whatever happens, the CLI
prints no traceback and exits with a documented code, and ``resume`` then ``status`` end
with a ``report.json`` where read = applied + failed + rejected + duplicate, which
``status`` shows with the same numbers and exit code.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import random
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.enginekit import HEADER, contact_rows
from tests.runkit import Cli, Server, assert_balanced, no_traceback, report_of, serve

DOCUMENTED = {0, 2, 3, 4, 64}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serve(tmp_path_factory.mktemp("mix-server"))


@st.composite
def contact_files(draw: st.DrawFn) -> list[list[str]]:
    """Valid rows, some repeated later (duplicates across chunks), some bad addresses, and
    maybe one field of up to 2 MB (over the field limit, or the record limit, or not)."""
    seed = draw(st.integers(0, 10_000))
    rows = contact_rows(draw(st.integers(1, 600)), seed=seed, prefix=f"mix{seed}-")
    repeats = draw(st.integers(0, min(30, len(rows))))
    rows += [list(r) for r in rows[:repeats]]
    for at in draw(st.lists(st.integers(0, len(rows)), max_size=5)):
        rows.insert(at, ["not-an-address", "Bad", "Row", "Nowhere", "MA"])
    big = draw(st.sampled_from([0, 0, 40, 1_000, 140_000, 2_000_000]))
    if big:
        at = draw(st.integers(0, len(rows)))
        rows.insert(at, [f"big{seed}@example.org", "Big", "Row", "Ü" + "y" * (big - 1), "MA"])
    return rows


#: How the file is written: the encoding the planner must find from the first MiB.
ENCODINGS = st.sampled_from(["utf-8", "utf-8-bom", "utf-16-le", "utf-16-be", "cp1252", "mixed"])


def encode_file(rows: list[list[str]], encoding: str, seed: int) -> bytes:
    """The CSV bytes of ``rows`` in ``encoding`` (UTF-16 with its BOM; "mixed": each data
    row in UTF-8 or cp1252 at random, the header in ASCII)."""

    def text(lines: list[list[str]]) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\r\n").writerows(lines)
        return buffer.getvalue()

    if encoding == "mixed":
        rng = random.Random(seed)
        return text([HEADER]).encode() + b"".join(
            text([row]).encode(rng.choice(["utf-8", "cp1252"])) for row in rows
        )
    whole = text([HEADER, *rows])
    if encoding == "utf-16-le":
        return codecs.BOM_UTF16_LE + whole.encode("utf-16-le")
    if encoding == "utf-16-be":
        return codecs.BOM_UTF16_BE + whole.encode("utf-16-be")
    if encoding == "utf-8-bom":
        return codecs.BOM_UTF8 + whole.encode()
    return whole.encode(encoding)


#: Options within the limits, below the minimum (a usage error: exit 64, nothing made) and
#: over the API's maximum (lowered to it, with a note); None: not given.
OPTIONS = st.tuples(
    st.sampled_from([("--max-rows", n) for n in (50, 50, 100, 100, 1000, 50_000, 10)]),
    st.sampled_from([("--max-bytes", n) for n in (None, None, 70_000, 9_999_999, 100)]),
    st.sampled_from([("--concurrency", n) for n in (4, 4, 1, 16, 0)]),
)
_MINIMUM = {"--max-rows": 50, "--max-bytes": 64 * 1024, "--concurrency": 1}


def _arguments(options: tuple[tuple[str, int | None], ...]) -> tuple[list[str], list[str]]:
    """The options as drawn, and as corrected (without those below their minimum)."""
    drawn: list[str] = []
    corrected: list[str] = []
    for name, value in options:
        if value is not None:
            drawn += [name, str(value)]
            if value >= _MINIMUM[name]:
                corrected += [name, str(value)]
    return drawn, corrected


INTERRUPTIONS = st.tuples(
    st.sampled_from(["sigint", "double-sigint", "sigkill-after-post", "closed-pipe", "none"]),
    st.integers(1, 6),  # after this many JSON events (for SIGKILL: answered POSTs)
)


def _interrupt(cli: Cli, args: list[str], kind: str, count: int) -> int:
    """Start the import and interrupt it after ``count`` JSON events; its exit code."""
    env = {"BULKOPS_TEST_KILL_AFTER_POST": str(count)} if kind == "sigkill-after-post" else {}
    proc = cli.popen(*args, "--json", **env)
    assert proc.stdout is not None
    assert proc.stderr is not None
    seen = 0
    if kind in ("sigint", "double-sigint", "closed-pipe"):
        while seen < count and proc.stdout.readline():
            seen += 1
        if seen == count and kind == "closed-pipe":
            proc.stdout.close()
        elif seen == count:
            proc.send_signal(signal.SIGINT)
            if kind == "double-sigint":
                proc.stdout.readline()  # the next event, then at once the second Ctrl-C
                proc.send_signal(signal.SIGINT)
    try:
        if not proc.stdout.closed:
            proc.stdout.read()
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    no_traceback(proc.stderr.read())
    return code


@settings(
    max_examples=int(os.environ.get("BULKOPS_MIX_EXAMPLES", "8")),  # each runs ~3 CLIs
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows=contact_files(),
    encoding=ENCODINGS,
    options=OPTIONS,
    interruption=INTERRUPTIONS,
)
def test_every_run_ends_balanced_and_status_agrees(
    server: Server,
    rows: list[list[str]],
    encoding: str,
    options: tuple[tuple[str, int | None], ...],
    interruption: tuple[str, int],
) -> None:
    """Any file, encoding, options and interruption: resume, then status, agree with a
    balanced report."""
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        cli = Cli(origin=server.origin, cwd=cwd)
        source = cwd / "mix.csv"
        source.write_bytes(encode_file(rows, encoding, seed=len(rows)))
        run_dir = cwd / "run"
        args = ["import", str(source), "--list", "Mix", "--create-lists"]
        args += ["--run-dir", str(run_dir)]
        drawn, corrected = _arguments(options)
        event(f"encoding {encoding}")
        longest = max(len(field) for row in rows for field in row)
        event(
            "a 2 MB field"
            if longest > 1 << 20
            else "a field over 131,072"
            if longest > 131_072
            else "fields under 131,072"
        )
        if drawn != corrected:  # a usage error: nothing made, then the corrected command
            first = cli.run(*args, *drawn)
            no_traceback(first)
            assert first.returncode == 64, first.stderr
            assert "must be at least" in first.stderr
            assert not (run_dir / "journal.sqlite").exists()
            event("usage error, then corrected")
        kind, count = interruption
        code = _interrupt(cli, [*args, *corrected], kind, count)
        event(kind)
        assert code in DOCUMENTED or code == -signal.SIGKILL, code
        if code not in (0, 2):  # killed or interrupted: never shown as running
            interrupted = cli.run("status", str(run_dir), "--json")
            no_traceback(interrupted)
            assert interrupted.returncode == 3
            assert json.loads(interrupted.stdout)["state"] == "interrupted"
        for _ in range(5):
            if code in (0, 2):
                break
            resumed = cli.run("resume", str(run_dir))
            no_traceback(resumed)
            code = resumed.returncode
            assert code in DOCUMENTED, resumed.stderr
        assert code in (0, 2)
        report = report_of(run_dir)
        assert report["state"] == "complete"
        assert_balanced(report["counts"])
        assert report["counts"]["read"] == len(rows)
        assert report["wall_seconds"] >= 0
        status = cli.run("status", str(run_dir), "--json")
        no_traceback(status)
        assert status.returncode == code
        shown = json.loads(status.stdout)
        assert (shown["state"], shown["counts"]) == ("complete", report["counts"])
