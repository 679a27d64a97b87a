"""The import engine end to end: a generated file into a local `bulkops serve`.

Measured in one run, each case against a fresh server database (a separate process; with
``--check``, the two imports share one):

* **bulkops** — ``bulkops import FILE --list Bench --create-lists`` with default settings, as
  its own process (its peak RSS is its own): the whole command's time (what the user waits
  for: interpreter start-up, the list lookup, hashing the input, the import, the report) and,
  beside it, the report's ``wall_seconds`` (its clock starts after start-up, the list lookup
  and the hashing), each against the server's own busy time for the same activities (sum
  of their run times, from the report) — the floor no client can beat; requests, peak RSS;
* **peers** — the way simple-salesforce and Data Loader do it by default: the *same chunks*
  (the same pipeline, the same bodies), submitted one at a time, each polled every 5 s until
  it is done.

Targets (issue 5): wall ≤ 1.25 × server busy; ≤ 30 requests per 1 M rows; ≥ 5 × faster
than the peers' way; peak RSS ≤ 100 MB.

Usage::

    python benchmarks/bench_engine.py --rows 1000000 [--skip-peers] [--json]
    python benchmarks/bench_engine.py --check       # seconds: the test suite's smoke run
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
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

from bench_server import API_KEY, PASSWORD, USER, Figure, print_table, serving
from gen_contacts import HEADER, contacts
from harness import add_check, check_figures

from bulkops.stream.pipeline import Pipeline, PipelineOptions
from bulkops.stream.records import Chunk

CACHE = Path(tempfile.gettempdir()) / "bulkops-bench"


#: Columns of the narrow file: what a list signup form collects (~70 bytes a row).
NARROW = ("Email", "First Name", "Last Name", "City", "State/Province", "Zip")


def input_file(rows: int, seed: int, *, narrow: bool = False, cache: Path = CACHE) -> Path:
    """A generated contacts file with unique emails (cached between runs).

    The generator repeats about 1% of emails on purpose (for the stream benchmark); here each
    record's email gets a unique prefix, so chunks do not wait for each other and the figure
    measures throughput, not ordering. ``narrow`` keeps only the columns of :data:`NARROW`:
    its rows fit 40,000 to a chunk, where the 12-column rows (~140 bytes) fill the 4 MiB of
    ``data`` at about 30,000.
    """
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"engine-{rows}-{seed}{'-narrow' if narrow else ''}.csv"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        names = HEADER.split(",")
        keep = [names.index(name) for name in NARROW] if narrow else list(range(len(names)))
        with tmp.open("w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow([names[i] for i in keep])
            for i, values in enumerate(contacts(rows, seed)):
                writer.writerow([f"u{i}.{values[0]}", *(values[k] for k in keep[1:])])
        tmp.replace(path)
    return path


def run_bulkops(source: Path, work: Path, origin: str | None = None) -> dict[str, Any]:
    """``bulkops import`` as a separate process against a fresh server (or the server at
    ``origin``); its report."""
    with ExitStack() as stack:
        if origin is None:
            origin, _proc = stack.enter_context(serving(work / "bulkops.db"))
        env = {
            **os.environ,
            "BULKOPS_USERNAME": USER,
            "BULKOPS_API_KEY": API_KEY,
            "BULKOPS_PASSWORD": PASSWORD,
        }
        run_dir = work / "run"
        started = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "bulkops",
                "import",
                str(source),
                "--list",
                "Bench",
                "--create-lists",
                "--server",
                origin,
                "--run-dir",
                str(run_dir),
                "--quiet",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - started
        if proc.returncode not in (0, 2):
            raise RuntimeError(f"bulkops import failed ({proc.returncode}):\n{proc.stderr}")
        report: dict[str, Any] = json.loads((run_dir / "report.json").read_text())
        report["process_seconds"] = elapsed
        return report


def _chunks(source: Path, list_uri: str) -> list[Chunk]:
    pipeline = Pipeline(PipelineOptions(lists=(list_uri,)))
    chunks: list[Chunk] = []
    with source.open("rb") as handle:
        while block := handle.read(1 << 20):
            chunks.extend(e for e in pipeline.decode(block) if isinstance(e, Chunk))
    chunks.extend(e for e in pipeline.flush() if isinstance(e, Chunk))
    return chunks


def run_peers(source: Path, work: Path, poll_every: float = 5.0) -> dict[str, float]:
    """The same chunks, one at a time, each polled every ``poll_every`` s until done."""
    with serving(work / "peers.db") as (origin, _proc):
        base = f"{origin}/ws/customers/{USER}/"
        auth = httpx.BasicAuth(f"{API_KEY}%{USER}", PASSWORD)
        with httpx.Client(base_url=base, auth=auth, timeout=300) as client:
            entry = (
                "<entry xmlns='http://www.w3.org/2005/Atom'><id>data:,</id><title/><author/>"
                "<updated>2026-01-01</updated><content type='application/vnd.ctct+xml'>"
                "<ContactList xmlns='http://ws.constantcontact.com/ns/1.0/'><Name>Bench</Name>"
                "</ContactList></content></entry>"
            )
            created = client.post(
                "lists", content=entry, headers={"Content-Type": "application/atom+xml"}
            )
            created.raise_for_status()
            list_uri = created.headers["location"]
            chunks = _chunks(source, list_uri)
            requests = 1
            started = time.perf_counter()
            for chunk in chunks:
                answer = client.post(
                    "activities", content=chunk.body, headers={"Content-Type": chunk.content_type}
                )
                answer.raise_for_status()
                requests += 1
                location = answer.headers["location"]
                while True:
                    time.sleep(poll_every)
                    status = client.get(location)
                    requests += 1
                    if b"<Status>COMPLETE</Status>" in status.content:
                        break
                    if b"<Status>ERROR</Status>" in status.content:
                        raise RuntimeError("peer activity ended in ERROR")
            return {
                "seconds": time.perf_counter() - started,
                "requests": requests,
                "chunks": len(chunks),
            }


def _figures(case: str, report: dict[str, Any]) -> list[Figure]:
    wall = float(report["wall_seconds"])
    whole = float(report["process_seconds"])
    busy = float(report["server_busy_seconds"])
    read = max(1, report["counts"]["read"])
    posts = sum(int(a.get("posts") or 1) for a in report["activities"])
    return [
        Figure(
            case=case,
            metric="whole command, start to exit (what the user waits for)",
            value=whole,
            unit="s",
            baseline=busy,
            baseline_name="server busy time: sum of the activities' run times",
        ),
        Figure(
            case=case,
            metric="report's `wall_seconds` (starts after start-up, list lookup, hashing)",
            value=wall,
            unit="s",
            baseline=busy,
            baseline_name="server busy time",
        ),
        Figure(
            case=case, metric="rows/s over the whole command", value=read / whole, unit="rows/s"
        ),
        Figure(
            case=case,
            metric="requests per 1M rows",
            value=report["requests"] * 1_000_000 / read,
            unit="req",
            baseline=posts * 1_000_000 / read,
            baseline_name=f"{posts} POSTs, the fewest the limits allow",
        ),
        Figure(
            case=case,
            metric="requests other than POSTs",
            value=report["requests"] - posts,
            unit="req",
        ),
        Figure(case=case, metric="peak RSS", value=report["peak_rss_bytes"] / 1048576, unit="MiB"),
    ]


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    keep = ("counts", "requests", "wall_seconds", "process_seconds", "server_busy_seconds")
    keep += ("peak_rss_bytes",)
    return {k: report[k] for k in keep} | {"activities": len(report["activities"])}


def main(argv: list[str] | None = None) -> int:
    """Run the cases and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--skip-peers", action="store_true", help="skip the slow peers' case")
    parser.add_argument(
        "--skip-narrow", action="store_true", help="skip the import of the 6-column file"
    )
    parser.add_argument("--json", action="store_true")
    add_check(parser)
    args = parser.parse_args(argv)
    poll_every = 5.0
    if args.check:  # one chunk per file; the peers' polls every 50 ms instead of 5 s
        args.rows, args.skip_peers, args.skip_narrow, poll_every = 3_000, False, False, 0.05

    cache = Path(tempfile.mkdtemp(prefix="bench-engine-check-")) if args.check else CACHE
    source = input_file(args.rows, args.seed, cache=cache)
    reports: dict[str, dict[str, Any]] = {}
    figures: list[Figure] = []
    peers: dict[str, float] | None = None
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        (work / "a").mkdir()
        # --check: one server for both imports (the second updates the first's contacts)
        shared = stack.enter_context(serving(work / "check.db"))[0] if args.check else None
        reports["12 columns"] = run_bulkops(source, work / "a", shared)
        figures += _figures("12 columns", reports["12 columns"])
        if not args.skip_narrow:
            (work / "n").mkdir()
            narrow = input_file(args.rows, args.seed, narrow=True, cache=cache)
            reports["6 columns"] = run_bulkops(narrow, work / "n", shared)
            figures += _figures("6 columns", reports["6 columns"])
        if not args.skip_peers:
            (work / "b").mkdir()
            peers = run_peers(source, work / "b", poll_every)
            wall = float(reports["12 columns"]["wall_seconds"])
            figures.append(
                Figure(
                    case="12 columns",
                    metric=f"peers' way: one chunk at a time, {poll_every:g} s polls, first POST"
                    " to last COMPLETE",
                    value=peers["seconds"],
                    unit="s",
                    baseline=wall,
                    baseline_name="bulkops, report's `wall_seconds`",
                )
            )
    if args.check:
        check_figures(figures)
        shutil.rmtree(cache)
    if args.json:
        print(
            json.dumps(
                {
                    "reports": {k: _summary(v) for k, v in reports.items()},
                    "peers": peers,
                    "figures": [
                        {
                            "case": f.case,
                            "metric": f.metric,
                            "value": f.value,
                            "unit": f.unit,
                            "baseline": f.baseline,
                            "ratio": f.ratio,
                        }
                        for f in figures
                    ],
                },
                default=str,
            )
        )
        return 0
    for case, report in reports.items():
        print(
            f"{case}: {args.rows:,} rows, {len(report['activities'])} activities, "
            f"counts {report['counts']}"
        )
    print_table(figures)
    print()
    for case, report in reports.items():
        wall, busy = float(report["wall_seconds"]), float(report["server_busy_seconds"])
        whole = float(report["process_seconds"])
        per_million = report["requests"] * 1_000_000 / max(1, report["counts"]["read"])
        print(
            f"{case}: whole command / server busy = {whole / busy:.2f}, report's wall / server "
            f"busy = {wall / busy:.2f} (target ≤ 1.25); requests per 1M "
            f"rows = {per_million:.0f} (target ≤ 30); peak RSS "
            f"{report['peak_rss_bytes'] / 1048576:.0f} MiB (target ≤ 100)"
        )
    if peers:
        wall = float(reports["12 columns"]["wall_seconds"])
        print(f"peers / bulkops = {peers['seconds'] / wall:.1f}× (target ≥ 5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
