"""Inputs and options at the edges of ``bulkops import`` (issue 12), run as a user runs them:
the real entry point against the embedded server on 127.0.0.1."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.test_cli_import import bulkops

HEADER = "Email Address,First Name,Notes\n"


def _rows(start: int, stop: int) -> str:
    return "".join(f"u{i}@example.org,N{i},x\n" for i in range(start, stop))


def _counts(run_dir: Path) -> dict[str, int]:
    counts: dict[str, int] = json.loads((run_dir / "report.json").read_text())["counts"]
    return counts


def _assert_no_traceback(result: object) -> None:
    stderr: str = result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr, stderr


@pytest.mark.parametrize("size", [140_000, 2_000_000])
def test_a_huge_field_is_rejected_and_the_rest_imported(tmp_path: Path, size: int) -> None:
    """A field over 131,072 characters (observation 1) is rejected with its line and field;
    the other rows are applied, the report is written, the outcome file keeps the row."""
    source = tmp_path / "big.csv"
    source.write_text(
        HEADER + _rows(0, 50) + "big@example.org,Big," + "y" * size + "\n" + _rows(50, 80),
        encoding="utf-8",
    )
    run_dir = tmp_path / "run"
    result = bulkops(
        "import",
        str(source),
        "--list",
        "L",
        "--create-lists",
        "--run-dir",
        str(run_dir),
        home=tmp_path / "home",
    )
    _assert_no_traceback(result)
    assert result.returncode == 2, result.stderr
    assert _counts(run_dir) == {
        "read": 81,
        "applied": 80,
        "failed": 0,
        "rejected": 1,
        "duplicate": 0,
        "pending": 0,
    }
    with (run_dir / "rejected.csv").open(newline="", encoding="utf-8") as handle:
        csv.field_size_limit(4 * size)
        (row,) = list(csv.DictReader(handle))
    assert row["line"] == "52"
    assert row["reason"]
    assert row["Email Address"] == "big@example.org"
    # The row is kept as written (up to the record limit, where only its place is known).
    assert row["Notes"] in ("y" * size, "")
    again = bulkops("resume", str(run_dir), home=tmp_path / "home")
    _assert_no_traceback(again)
    assert again.returncode == 2, again.stderr


def test_dry_run_of_a_huge_field_plans_without_crashing(tmp_path: Path) -> None:
    """``--dry-run`` over a 200,000-character field rejects that row and plans the rest."""
    source = tmp_path / "big.csv"
    source.write_text(HEADER + _rows(0, 30) + "big@example.org,Big," + "y" * 200_000 + "\n")
    result = bulkops(
        "import",
        str(source),
        "--list",
        "L",
        "--dry-run",
        "--json",
        "--run-dir",
        str(tmp_path / "dry"),
        home=tmp_path / "home",
    )
    _assert_no_traceback(result)
    assert result.returncode == 2, result.stderr
    plan = json.loads(result.stdout)["plan"]
    assert (plan["rows_read"], plan["rows_to_send"], plan["rejected"]) == (31, 30, 1)


def test_a_huge_ignored_field_in_applied_rows_is_copied(tmp_path: Path) -> None:
    """A valid row carrying a 150,000-character ignored column is applied, and
    ``applied.csv`` (re-read from the source) holds it: re-reading must not crash."""
    source = tmp_path / "blob.csv"
    source.write_text(
        "Email Address,Blob\n"
        + "".join(f"b{i}@example.org,z\n" for i in range(30))
        + "blob@example.org,"
        + "z" * 150_000
        + "\n",
        encoding="utf-8",
    )
    run_dir = tmp_path / "run"
    result = bulkops(
        "import",
        str(source),
        "--list",
        "L",
        "--create-lists",
        "--ignore-unknown-columns",
        "--write-applied",
        "--run-dir",
        str(run_dir),
        home=tmp_path / "home",
    )
    _assert_no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert _counts(run_dir)["applied"] == 31
    with (run_dir / "applied.csv").open(newline="", encoding="utf-8") as handle:
        csv.field_size_limit(1 << 20)
        rows = list(csv.DictReader(handle))
    assert rows[-1]["Blob"] == "z" * 150_000
