"""The import CLI as a user runs it: the README's main command on the embedded server."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serverkit import HANG_GUARD

SAMPLES = Path(__file__).parent.parent / "samples"


def bulkops(*args: str, home: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BULKOPS_HOME": str(home)}
    for name in ("BULKOPS_SERVER", "BULKOPS_USERNAME", "BULKOPS_API_KEY", "BULKOPS_PASSWORD"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "bulkops", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_readme_main_job_works_on_a_fresh_machine(tmp_path: Path) -> None:
    """`bulkops import samples/contacts.csv --list Newsletter --create-lists` exits 0 and
    later commands see the same data (the embedded server's database persists)."""
    home = tmp_path / "home"
    run_dir = tmp_path / "run"
    first = bulkops(
        "import",
        str(SAMPLES / "contacts.csv"),
        "--list",
        "Newsletter",
        "--create-lists",
        "--run-dir",
        str(run_dir),
        home=home,
    )
    assert first.returncode == 0, first.stderr
    assert "120 applied" in first.stdout
    report = json.loads((run_dir / "report.json").read_text())
    assert report["counts"] == {
        "read": 120,
        "applied": 120,
        "failed": 0,
        "rejected": 0,
        "duplicate": 0,
        "pending": 0,
    }
    assert (home / "server.db").exists()
    # The list now exists: importing again without --create-lists works, and updates.
    again = bulkops(
        "import",
        str(SAMPLES / "contacts.csv"),
        "--list",
        "Newsletter",
        "--run-dir",
        str(tmp_path / "again"),
        "--json",
        home=home,
    )
    assert again.returncode == 0, again.stderr
    events = [json.loads(line) for line in again.stdout.splitlines() if line.startswith("{")]
    assert events[-1]["event"] == "report"
    assert events[-1]["report"]["counts"]["applied"] == 120
    status = bulkops("status", str(run_dir), home=home)
    assert status.returncode == 0
    assert "applied 120" in status.stdout


def test_a_messy_file_exits_2_with_its_outcome_files(tmp_path: Path) -> None:
    """Rejected and duplicate rows are reported with their lines, under the input's header."""
    run_dir = tmp_path / "run"
    result = bulkops(
        "import",
        str(SAMPLES / "messy.csv"),
        "--list",
        "Messy",
        "--create-lists",
        "--run-dir",
        str(run_dir),
        home=tmp_path / "home",
    )
    assert result.returncode == 2, result.stderr
    report = json.loads((run_dir / "report.json").read_text())
    counts = report["counts"]
    assert counts["read"] == 41
    assert (counts["rejected"], counts["duplicate"]) == (4, 1)
    assert counts["applied"] == 36
    with (run_dir / "rejected.csv").open(newline="", encoding="utf-8") as handle:
        rejected = list(csv.DictReader(handle))
    assert [int(r["line"]) for r in rejected] == sorted(int(r["line"]) for r in rejected)
    assert {r["E-mail"] for r in rejected} >= {"not-an-email", ""}
    assert all(r["reason"] for r in rejected)
    with (run_dir / "duplicates.csv").open(newline="", encoding="utf-8") as handle:
        duplicates = list(csv.DictReader(handle))
    assert len(duplicates) == 1
    assert duplicates[0]["replaced_by_line"] == "43"  # the quoted newline pushes it down a line


def test_dry_run_needs_no_server_and_prints_the_plan(tmp_path: Path) -> None:
    """--dry-run validates and plans; nothing is sent, no database is made."""
    home = tmp_path / "home"
    result = bulkops(
        "import",
        str(SAMPLES / "messy.csv"),
        "--list",
        "X",
        "--dry-run",
        "--run-dir",
        str(tmp_path / "dry"),
        "--json",
        home=home,
    )
    assert result.returncode == 2, result.stderr
    plan = json.loads(result.stdout)["plan"]
    assert (plan["rows_read"], plan["rows_to_send"], plan["chunks"]) == (41, 36, 1)
    assert plan["requests_estimate"] >= 2
    assert Path(plan["files"]["rejected"]).exists()
    assert not (home / "server.db").exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["import", "nope.csv", "--list", "X", "--dry-run"], 4, "no such file"),
        (["import", "x.csv"], 64, "--list"),
        (["import", "x.csv", "--list", "X", "--concurrency", "0"], 64, "at least 1"),
        (["resume", "not-a-run"], 64, "not a bulkops run directory"),
    ],
)
def test_errors_have_clear_messages_and_exit_codes(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    """Usage errors exit 64, fatal ones 4, each with a message that says what is wrong."""
    (tmp_path / "x.csv").write_text("Email\na@example.com\n")
    result = subprocess.run(
        [sys.executable, "-m", "bulkops", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        env={**os.environ, "BULKOPS_HOME": str(tmp_path / "h")},
        check=False,
    )
    assert result.returncode == code, result.stderr
    assert message in result.stderr


def test_a_command_imports_only_its_own_modules(tmp_path: Path) -> None:
    """``bulkops import --dry-run`` loads neither the server (hypercorn, starlette) nor the
    other commands' modules: each costs the client memory on every import."""
    source = tmp_path / "in.csv"
    source.write_text("Email\na@example.org\n", encoding="utf-8")
    code = (
        "import sys\n"
        "from bulkops.__main__ import main\n"
        f"code = main(['import', {str(source)!r}, '--list', 'L', '--dry-run',"
        f" '--run-dir', {str(tmp_path / 'run')!r}])\n"
        "loaded = {m for m in sys.modules if m.startswith(('hypercorn', 'starlette',"
        " 'bulkops.server', 'bulkops.cli.export', 'bulkops.cli.events'))}\n"
        "assert code == 0, code\n"
        "assert not loaded, sorted(loaded)\n"
        "from bulkops.__main__ import main_parser\n"
        "main_parser()\n"
        "assert 'hypercorn' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
