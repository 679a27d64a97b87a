"""Acceptance: a run can always be finished or cleanly abandoned.

Hypothesis draws small files (duplicates, bad rows, chunk sizes) and an interruption
(SIGINT, a double SIGINT, SIGKILL right after a POST, the reader of ``--json`` going away),
placed by counting the run's JSON events — never by sleeping. Each example runs the real
``bulkops`` entry point against ``bulkops serve`` on 127.0.0.1. Whatever happens, the CLI
prints no traceback and exits with a documented code, and ``resume`` then ``status`` end
with a ``report.json`` where read = applied + failed + rejected + duplicate, which
``status`` shows with the same numbers and exit code.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.enginekit import contact_rows, write_csv
from tests.runkit import Cli, Server, assert_balanced, no_traceback, report_of, serve

DOCUMENTED = {0, 2, 3, 4, 64}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serve(tmp_path_factory.mktemp("mix-server"))


@st.composite
def contact_files(draw: st.DrawFn) -> list[list[str]]:
    """Valid rows, some repeated later (duplicates across chunks), some bad addresses."""
    seed = draw(st.integers(0, 10_000))
    rows = contact_rows(draw(st.integers(1, 600)), seed=seed, prefix=f"mix{seed}-")
    repeats = draw(st.integers(0, min(30, len(rows))))
    rows += [list(r) for r in rows[:repeats]]
    for at in draw(st.lists(st.integers(0, len(rows)), max_size=5)):
        rows.insert(at, ["not-an-address", "Bad", "Row", "Nowhere", "MA"])
    return rows


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
    max_examples=int(os.environ.get("BULKOPS_MIX_EXAMPLES", "6")),  # each runs ~3 CLIs
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows=contact_files(),
    max_rows=st.sampled_from([50, 100, 1000]),
    interruption=INTERRUPTIONS,
)
def test_every_run_ends_balanced_and_status_agrees(
    server: Server, rows: list[list[str]], max_rows: int, interruption: tuple[str, int]
) -> None:
    """Any file, any interruption: resume, then status, agree with a balanced report."""
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        cli = Cli(origin=server.origin, cwd=cwd)
        source = write_csv(cwd / "mix.csv", rows)
        run_dir = cwd / "run"
        args = ["import", str(source), "--list", "Mix", "--create-lists"]
        args += ["--max-rows", str(max_rows), "--run-dir", str(run_dir)]
        kind, count = interruption
        code = _interrupt(cli, args, kind, count)
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
