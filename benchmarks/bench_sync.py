"""``bulkops sync`` end to end: a list of N members, a file with 1% changed.

Measured in one run, against one local ``bulkops serve`` (a separate process), each command
its own process (its peak RSS is its own):

1. **setup** — ``bulkops sync base.csv --list Bench`` onto an empty list (N rows added; the
   first sync, so the base is read in full and a snapshot kept where the base reader keeps
   one);
2. **sync** — ``bulkops sync changed.csv --list Bench --remove-missing``: the same file with
   0.5% of the rows edited (a new first name), 0.25% new rows and 0.25% gone;
3. **again** — the same sync once more: nothing changed;
4. **import** — ``bulkops import changed.csv --list Bench``: the full re-import a sync
   replaces (the baseline of 2.).

Targets (issue 15, acceptance 3, at 1M members): rows sent = rows changed exactly; sync wall
≤ 15% of the full import's; the second sync ≤ 5 requests and ≤ 10 s; peak RSS ≤ 150 MB.

Usage::

    python benchmarks/bench_sync.py --rows 1000000 [--json]
    python benchmarks/bench_sync.py --check       # seconds: the test suite's smoke run
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

from bench_engine import input_file
from bench_server import API_KEY, PASSWORD, USER, serving
from harness import Figure, add_check, check_figures, machine, print_table, to_json

from bulkops.wire.columns import is_valid_email


def changed_file(source: Path, target: Path) -> dict[str, int]:
    """``source`` with every 200th row edited, every 400th (offset 1) gone and one new row
    per 400: 1% of the rows changed (rows with an invalid address, rejected by every
    command, are left as they are). Returns the counts of each change."""
    edited = gone = new = 0
    with (
        source.open(newline="", encoding="utf-8") as src,
        target.open("w", newline="", encoding="utf-8") as out,
    ):
        reader = csv.reader(src)
        writer = csv.writer(out, lineterminator="\n")
        header = next(reader)
        writer.writerow(header)
        first = header.index("First Name")
        for i, row in enumerate(reader):
            if not is_valid_email(row[0].strip()):  # rejected either way: not a change
                writer.writerow(row)
                continue
            if i % 400 == 1:
                gone += 1
                continue
            if i % 200 == 0:
                row[first] = f"Edited{i}"
                edited += 1
            writer.writerow(row)
            if i % 400 == 3:
                writer.writerow([f"new{i}.{row[0]}", *row[1:]])
                new += 1
    return {"edited": edited, "gone": gone, "new": new}


def bulkops(origin: str, work: Path, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    """A ``bulkops`` command against ``origin``: its whole time (start to exit) and result."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BULKOPS_")},
        "BULKOPS_USERNAME": USER,
        "BULKOPS_API_KEY": API_KEY,
        "BULKOPS_PASSWORD": PASSWORD,
        "BULKOPS_HOME": str(work / "home"),  # where snapshots are kept
    }
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bulkops", *args, "--server", origin, "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 2):
        raise RuntimeError(f"bulkops {args[0]} failed ({done.returncode}):\n{done.stderr}")
    return elapsed, done


def _run(origin: str, work: Path, name: str, *args: str) -> tuple[float, dict[str, Any]]:
    run_dir = work / name
    seconds, _done = bulkops(origin, work, *args, "--run-dir", str(run_dir))
    report: dict[str, Any] = json.loads((run_dir / "report.json").read_text())
    return seconds, report


def measure(rows: int, seed: int, cache: Path) -> tuple[list[Figure], dict[str, Any]]:
    """Run the four commands; the figures and the reports."""
    base = input_file(rows, seed, narrow=True, cache=cache)
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        work = Path(tmp)
        changed = work / "changed.csv"
        changes = changed_file(base, changed)
        total = sum(changes.values())
        with serving(work / "server.db") as (origin, _proc):
            list_args = ("--list", "Bench")
            setup_s, setup = _setup(origin, work, base)
            sync_s, sync = _run(
                origin, work, "sync", "sync", str(changed), *list_args, "--remove-missing"
            )
            again_s, again = _run(
                origin, work, "again", "sync", str(changed), *list_args, "--remove-missing"
            )
            import_s, full = _run(origin, work, "import", "import", str(changed), *list_args)
    sent = int(sync["rows_sent"]) + int(sync["puts"]) + int(sync["removes_sent"])
    case = f"{rows:,} members, 1% changed"
    figures = [
        Figure(
            case=case,
            metric="rows sent (add rows + PUTs + removals)",
            value=sent,
            unit="rows",
            baseline=total,
            baseline_label="rows changed: edited + new + gone",
            higher_is_better=False,
        ),
        Figure(
            case=case,
            metric="sync, whole command (start to exit)",
            value=sync_s,
            unit="s",
            baseline=import_s,
            baseline_label="full `bulkops import` of the same file, whole command",
            higher_is_better=False,
        ),
        Figure(
            case=case,
            metric="sync: requests",
            value=int(sync["requests"]),
            unit="req",
            baseline=int(full["requests"]),
            baseline_label="full import",
            higher_is_better=False,
        ),
        Figure(
            case=case,
            metric="second sync, nothing changed: whole command",
            value=again_s,
            unit="s",
        ),
        Figure(
            case=case,
            metric="second sync, nothing changed: requests",
            value=int(again["requests"]),
            unit="req",
        ),
        Figure(
            case=case,
            metric="sync: peak RSS",
            value=int(sync["peak_rss_bytes"]) / 1048576,
            unit="MiB",
            baseline=int(full["peak_rss_bytes"]) / 1048576,
            baseline_label="full import",
            higher_is_better=False,
        ),
    ]
    reports = {
        "changes": changes,
        "setup_seconds": setup_s,
        "setup": _summary(setup),
        "sync": _summary(sync),
        "again": _summary(again),
        "import": {k: full[k] for k in ("counts", "requests", "wall_seconds", "peak_rss_bytes")},
    }
    return figures, reports


def _setup(origin: str, work: Path, base: Path) -> tuple[float, dict[str, Any]]:
    """The first sync, onto a new empty list."""
    empty = work / "empty.csv"
    empty.write_text("Email\n", encoding="utf-8")
    bulkops(origin, work, "import", str(empty), "--list", "Bench", "--create-lists")
    return _run(origin, work, "setup", "sync", str(base), "--list", "Bench")


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "counts",
        "plan",
        "base",
        "rows_parsed",
        "rows_sent",
        "puts",
        "removes_sent",
        "requests",
    )
    return {k: report.get(k) for k in (*keep, "bytes_sent", "wall_seconds", "peak_rss_bytes")}


def main(argv: list[str] | None = None) -> int:
    """Run the cases and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--json", action="store_true")
    add_check(parser)
    args = parser.parse_args(argv)
    if args.check:
        args.rows = 2_000
    cache = Path(tempfile.mkdtemp(prefix="bench-sync-check-")) if args.check else None
    from bench_engine import CACHE

    figures, reports = measure(args.rows, args.seed, cache or CACHE)
    if args.check:
        check_figures(figures)
        assert cache is not None
        shutil.rmtree(cache)
    if args.json:
        print(to_json(figures, machine=machine(), reports=reports))
        return 0
    print(json.dumps(reports, default=str), file=sys.stderr)
    print_table(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
