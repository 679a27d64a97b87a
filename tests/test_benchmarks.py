"""Every benchmark still runs, and still prints the rows ``benchmarks/README.md`` quotes.

Each ``benchmarks/bench_*.py`` has a ``--check`` mode (``harness.add_check``): every case at
small sizes, in seconds, printing the same table as a real run. The scripts are found by
glob and run as subprocesses, all at once (they mostly wait on their own servers and child
processes), so the suite covers them in well under a minute. They run once per test run:
under pytest-xdist the first worker to need them runs them and leaves their outputs for the
other (a lock file in the workers' shared temporary directory), instead of each worker
running every benchmark again.

A README table is tied to its script by the line before it that names the command which
produced it (``Command: `python benchmarks/bench_x.py ...```). Each of its rows must be one
the script's ``--check`` run prints, compared by ``harness.row_key`` (every number read as
``#``, since sizes differ).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("bench_*.py"))
_COMMAND = re.compile(r"Command: `python benchmarks/(bench_\w+\.py)\b")

sys.path.insert(0, str(BENCHMARKS))
from harness import row_key, table_rows  # noqa: E402

Outputs = dict[str, subprocess.CompletedProcess[str]]


def run_checks() -> Outputs:
    """``--check`` of every script, run concurrently; their finished processes by name."""
    # Only what says where PostgreSQL is and whether its absence may skip bench_pg.py; the
    # suite's cluster, when there is one, saves bench_pg.py starting its own.
    kept = ("BULKOPS_PG_BINDIR", "BULKOPS_REQUIRE_POSTGRES", "BULKOPS_TEST_POSTGRES")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKOPS_") or k in kept}
    running = {
        name: subprocess.Popen(
            [sys.executable, str(BENCHMARKS / name), "--check"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=BENCHMARKS.parent,
        )
        for name in SCRIPTS
    }
    done = {}
    for name, proc in running.items():
        try:
            stdout, stderr = proc.communicate(timeout=600)  # a hang guard, not a time limit
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return done


def _shared(outputs: Outputs) -> str:
    return json.dumps(
        {name: [p.args, p.returncode, p.stdout, p.stderr] for name, p in outputs.items()}
    )


def _unshared(text: str) -> Outputs:
    return {
        name: subprocess.CompletedProcess(args, code, out, err)
        for name, (args, code, out, err) in json.loads(text).items()
    }


@pytest.fixture(scope="session")
def check_outputs(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Outputs:
    """:func:`run_checks`, once per test run: under pytest-xdist, whichever worker gets here
    first runs them (holding a lock) and writes the outputs where the other reads them."""
    if not hasattr(request.config, "workerinput"):  # one process: no one to share with
        return run_checks()
    shared = tmp_path_factory.getbasetemp().parent  # the same for every worker of the run
    results = shared / "benchmark-checks.json"
    with (shared / "benchmark-checks.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not results.exists():
            partial = results.with_suffix(".tmp")
            partial.write_text(_shared(run_checks()), encoding="utf-8")
            partial.replace(results)
        return _unshared(results.read_text(encoding="utf-8"))


def readme_tables(text: str) -> dict[str, list[tuple[str, str]]]:
    """The rows of every README table that follows a ``Command:`` line, by script name.

    The command applies to the next table only; text between them is allowed.
    """
    tables: dict[str, list[tuple[str, str]]] = {}
    script: str | None = None
    in_table = False
    for line in text.splitlines():
        found = _COMMAND.search(line)
        if found:
            script = found.group(1)
        rows = table_rows(line)
        if rows and script is not None:
            tables.setdefault(script, []).extend(rows)
            in_table = True
        elif in_table and not line.strip().startswith("|"):
            in_table, script = False, None
    return tables


def missing_rows(readme: list[tuple[str, str]], printed: list[tuple[str, str]]) -> list[str]:
    """README rows no printed row matches (by :func:`harness.row_key`)."""
    keys = {row_key(*row) for row in printed}
    return [f"{case} | {metric}" for case, metric in readme if row_key(case, metric) not in keys]


def test_benchmarks_are_found() -> None:
    """The glob finds the scripts (a moved directory would otherwise check nothing)."""
    assert {"bench_activities.py", "bench_engine.py", "bench_server.py"} <= set(SCRIPTS)


#: A script's exit status for "cannot run here" (bench_pg.py without PostgreSQL binaries;
#: under BULKOPS_REQUIRE_POSTGRES=1 it fails instead).
SKIPPED = 77


def _ran(outputs: Outputs, script: str) -> subprocess.CompletedProcess[str]:
    done = outputs[script]
    if done.returncode == SKIPPED:
        pytest.skip(done.stderr.strip()[-500:])
    return done


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_benchmark_runs_its_check(check_outputs: Outputs, script: str) -> None:
    """``bench_*.py --check`` exits 0 and prints a table."""
    done = _ran(check_outputs, script)
    assert done.returncode == 0, done.stderr[-4000:]
    assert table_rows(done.stdout), done.stdout[-2000:]


README_TABLES = readme_tables((BENCHMARKS / "README.md").read_text(encoding="utf-8"))


@pytest.mark.parametrize("script", sorted(README_TABLES))
def test_the_readme_rows_are_still_printed(check_outputs: Outputs, script: str) -> None:
    """Every row of a README table produced by a script is one its --check prints."""
    assert script in SCRIPTS, f"README quotes {script}, which is gone"
    done = _ran(check_outputs, script)
    assert done.returncode == 0, done.stderr[-4000:]
    assert missing_rows(README_TABLES[script], table_rows(done.stdout)) == []


def test_the_readme_names_a_command_for_the_benchmarks_it_quotes() -> None:
    """The README's figures are tied to their scripts (at least the ones this issue fixed)."""
    assert {"bench_activities.py", "bench_engine.py", "bench_events.py", "bench_server.py"} <= set(
        README_TABLES
    )


def test_the_row_check_itself_catches_a_missing_or_renamed_row() -> None:
    """Sizes may differ; a row the script no longer prints (or prints renamed) is reported."""
    readme = """
Command: `python benchmarks/bench_x.py --rows 1000000`

| case | metric | value | baseline | vs. |
|---|---|---:|---:|---:|
| pipeline, 1 M rows | rows → bodies (40,000-row chunks) | 402,029 rows/s | 1 (b) | 0.48× |
| pipeline, 1 M rows | peak RSS | 63.0 MiB | | |

Not a command: `python benchmarks/bench_y.py`

| case | metric | value | baseline | vs. |
|---|---|---:|---:|---:|
| other | untied | 1 s | | |
"""
    tables = readme_tables(readme)
    assert list(tables) == ["bench_x.py"]
    printed = table_rows(
        "| case | metric | value | baseline | vs. |\n|---|---|---:|---:|---:|\n"
        "| pipeline, 0.003 M rows | rows → bodies (500-row chunks) | 9 rows/s | | |\n"
    )
    assert missing_rows(tables["bench_x.py"], printed) == ["pipeline, 1 M rows | peak RSS"]
    assert missing_rows(tables["bench_x.py"][:1], printed) == []
