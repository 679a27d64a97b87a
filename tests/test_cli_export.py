"""``bulkops export`` and ``bulkops resume`` on an export, on the embedded server."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bulkops.__main__ import main
from bulkops.cli.export import status_if_export
from bulkops.engine.rundirs import RunLock
from bulkops.server.app import ServerConfig
from bulkops.server.queries import create_list
from bulkops.server.seed import seed_contacts
from bulkops.server.serve import DEMO_ACCOUNT, open_state
from bulkops.wire.model import ListInput

ROWS = 3000


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A BULKOPS_HOME whose database holds list "Customers" with 3000 members."""
    for name in list(os.environ):
        if name.startswith("BULKOPS_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    monkeypatch.setenv("BULKOPS_HOME", str(home))
    state = open_state(home / "server.db", ServerConfig(), accounts=[DEMO_ACCOUNT])
    try:
        db = state.store.connection()
        (account,) = db.execute("SELECT id FROM account WHERE username = 'demo'").fetchone()
        customers = create_list(db, account, ListInput(name="Customers"), 0)
        seed_contacts(
            db,
            account,
            ROWS,
            lists=[int(customers.id)],
            seed=11,
            removed_ratio=0.0,
            do_not_mail_ratio=0.0,
        )
    finally:
        state.store.close()
    monkeypatch.chdir(tmp_path)
    return home


def bulkops(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a child process (its own embedded server on the same database)."""
    return subprocess.run(
        [sys.executable, "-m", "bulkops", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_export_writes_the_list_and_reports_json(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Default path (an activity), CSV from the suffix, every column, a JSON report."""
    out = tmp_path / "customers.csv"
    code = main(["export", "--list", "Customers", "-o", str(out), "--json", "--quiet"])
    assert code == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])["report"]
    assert (report["rows"], report["count_check"], report["via"]) == (ROWS, "match", "activity")
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"), newline="")))
    assert len(rows) == ROWS
    assert list(rows[0])[:3] == ["Email Address", "Email Type", "First Name"]
    assert len({r["Email Address"] for r in rows}) == ROWS


def test_export_via_the_feed_to_json_lines(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--via feed walks the members feed; .jsonl picks JSON Lines; the summary is printed."""
    out = tmp_path / "members.jsonl"
    code = main(["export", "members", "--list", "Customers", "--via", "feed", "-o", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"{ROWS:,} rows (ContactCount {ROWS:,}: match)" in printed
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == ROWS
    assert set(json.loads(lines[0])) == {"Email Address"}


def test_incremental_sync_from_an_earlier_run(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--updated-since RUN_DIR starts from that run's high-water mark."""
    first = [
        "export", "contacts", "--updated-since", "2000-01-01T00:00:00Z", "--list-type",
        "active", "-o", str(tmp_path / "all.csv"), "--run-dir", str(tmp_path / "sync1"), "--json",
    ]  # fmt: skip
    assert main(first) == 0
    mark = json.loads(capsys.readouterr().out.splitlines()[-1])["report"]["high_water_mark"]
    second = [
        "export", "contacts", "--updated-since", str(tmp_path / "sync1"), "--list", "Customers",
        "-o", str(tmp_path / "delta.csv"), "--json",
    ]  # fmt: skip
    assert main(second) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])["report"]
    assert 1 <= report["rows"] < ROWS  # only what was updated at the mark or later
    assert report["high_water_mark"] == mark


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "-o", "x.csv"], "say what to export"),
        (["export", "lists", "--via", "activity", "-o", "x.csv"], "members only"),
        (["export", "--list", "Nope", "-o", "x.csv", "--via", "feed"], "no list 'Nope'; lists:"),
        (["export", "--list", "Customers", "-o", "x.csv", "--columns", "Shoe"], "unknown column"),
    ],
)
def test_bad_requests_are_usage_errors(
    home: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """Options that make no sense, or name nothing, exit 64 with a one-line reason."""
    assert main(args) == 64
    assert message in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("via", ["feed", "activity"])
def test_an_export_killed_by_sigkill_resumes_to_the_same_file(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], via: str
) -> None:
    """SIGKILL between two checkpoints, then ``bulkops resume``: the uninterrupted bytes."""
    common = ["--list", "Customers", "--via", via, "--checkpoint-rows", "500", "--quiet"]
    whole = tmp_path / "whole.csv"
    assert main(["export", *common, "-o", str(whole), "--run-dir", str(tmp_path / "r1")]) == 0
    assert status_if_export(argparse.Namespace(run_dir=tmp_path / "r1", json=False)) == 0
    assert status_if_export(argparse.Namespace(run_dir=tmp_path, json=False)) is None

    out, run_dir = tmp_path / "killed.csv", tmp_path / "r2"
    killed = bulkops(
        "export", *common, "-o", str(out), "--run-dir", str(run_dir),
        env={"BULKOPS_TEST_KILL_AFTER_ROWS": "1234"},
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not out.exists()
    (partial,) = [p for p in tmp_path.iterdir() if p.name.startswith(".killed.csv.")]
    assert partial.stat().st_size > 0
    assert status_if_export(argparse.Namespace(run_dir=run_dir, json=True)) == 3
    status = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert status["state"] == "interrupted"  # no process holds it: not "running"
    assert 500 <= status["rows"] < 1234  # the last checkpoint before the kill

    resumed = bulkops("resume", str(run_dir), "--json", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout.splitlines()[-1])["report"]
    assert (report["state"], report["rows"], report["resumes"]) == ("complete", ROWS, 1)
    assert report["count_check"] == "match"
    assert out.read_bytes() == whole.read_bytes()
    assert not partial.exists()


def test_an_export_run_directory_is_run_by_one_process_at_a_time(
    home: Path, tmp_path: Path
) -> None:
    """While a process holds the run directory, another export into it and a resume of
    it are refused (exit 64, naming the process), as for imports; nothing is written."""
    run_dir, out = tmp_path / "run", tmp_path / "out.csv"
    export = ["export", "--list", "Customers", "-o", str(out), "--run-dir", str(run_dir)]
    run_dir.mkdir()
    lock = RunLock(run_dir).acquire()  # this test process is "the other process"
    try:
        second = bulkops(*export, "--quiet")
    finally:
        lock.release()
    assert second.returncode == 64, second.stderr
    assert f"is being run by another process right now (pid {os.getpid()})" in second.stderr
    assert "Traceback" not in second.stderr
    assert not out.exists()
    assert bulkops(*export, "--quiet").returncode == 0
    lock = RunLock(run_dir).acquire()
    try:
        resumed = bulkops("resume", str(run_dir), "--quiet")
    finally:
        lock.release()
    assert resumed.returncode == 64, resumed.stderr
    assert "is being run by another process right now" in resumed.stderr
    again = bulkops(*export, "--quiet")  # the directory holds a finished run
    assert again.returncode == 64
    assert f"{run_dir} already holds a run: use `bulkops resume {run_dir}`" in again.stderr


def test_export_to_stdout_writes_the_rows_there_and_the_summary_to_stderr(
    home: Path, tmp_path: Path
) -> None:
    """-o -: the whole CSV on stdout (nothing else), the summary on stderr, exit 0."""
    run_dir = tmp_path / "to-stdout"
    result = bulkops(
        "export", "--list", "Customers", "--via", "feed", "-o", "-", "--run-dir", str(run_dir)
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout, newline="")))
    assert len(rows) == ROWS
    assert list(rows[0]) == ["Email Address"]
    assert f"{ROWS:,} rows" in result.stderr
    assert not (tmp_path / "-").exists()


@pytest.mark.slow
def test_an_export_to_stdout_killed_by_sigkill_resumes_to_stdout(
    home: Path, tmp_path: Path
) -> None:
    """SIGKILL mid-way: nothing on stdout; `resume` then prints every row to stdout, and
    --json puts the events and the report on stderr."""
    common = ["--list", "Customers", "--via", "feed", "--checkpoint-rows", "500", "-o", "-"]
    run_dir = tmp_path / "killed-stdout"
    killed = bulkops(
        "export", *common, "--run-dir", str(run_dir),
        env={"BULKOPS_TEST_KILL_AFTER_ROWS": "1234"},
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert killed.stdout == ""
    resumed = bulkops("resume", str(run_dir), "--json")
    assert resumed.returncode == 0, resumed.stderr
    rows = list(csv.DictReader(io.StringIO(resumed.stdout, newline="")))
    assert len(rows) == ROWS
    assert len({r["Email Address"] for r in rows}) == ROWS
    report = json.loads(resumed.stderr.splitlines()[-1])["report"]
    assert (report["state"], report["rows"], report["resumes"]) == ("complete", ROWS, 1)


@pytest.mark.parametrize(
    "collection",
    ["lists/{id}/members", "/ws/customers/demo/lists/{id}/members",
     "http://api.constantcontact.com/ws/customers/demo/lists/{id}/members"],
)  # fmt: skip
def test_export_collection_takes_the_path_below_the_account_or_the_full_one(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], collection: str
) -> None:
    """`lists/1/members`, `/ws/customers/demo/lists/1/members` or its URL: the same rows."""
    out = tmp_path / "members.jsonl"
    code = main(
        ["export", "collection", "--collection", collection.format(id=1), "-o", str(out),
         "--quiet"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert len(out.read_text(encoding="utf-8").splitlines()) == ROWS


def test_export_collection_of_another_account_is_a_usage_error(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A full path naming another account than the credentials': exit 64, saying so."""
    code = main(
        ["export", "collection", "--collection", "/ws/customers/bob/lists/1/members",
         "-o", str(tmp_path / "x.csv")]
    )  # fmt: skip
    assert code == 64
    assert "'bob'" in capsys.readouterr().err
