"""The import pipeline (``bulkops.stream``) against the stdlib, on generated contact files.

Cases, each in its own Python process (so each peak RSS is its own), on the same file:

* ``csv-reader`` — the baseline: bare ``csv.reader`` iterating the file;
* ``pipeline`` — :class:`bulkops.stream.Pipeline`: bytes → validated rows → multipart
  request bodies (dedupe, chunking, SHA-256 digests included), fed 1 MiB pieces as the engine
  reads them;
* ``pipeline-urlencoded`` — the same with urlencoded bodies;
* ``naive`` — ``csv.reader`` → ``csv.writer`` → ``urlencode`` in 40,000-row requests, the
  obvious way to build the same requests (no validation, no dedupe);
* ``xml-iterparse`` — the XML baseline: bare ``lxml.etree.iterparse`` over an Atom feed of
  the same contacts, clearing finished entries;
* ``xml-reader`` — :class:`bulkops.stream.XmlContactDecoder` on that feed;
* ``xml-pipeline`` — the whole pipeline on that feed;
* ``export`` — a file shaped like CRM and spreadsheet exports (``gen_contacts.py --format
  export``: 8 columns, a quoted field with a comma on most lines, some multi-line fields,
  CRLF, half the rows with names or cities in other scripts, some dirty rows): bare
  ``csv.reader`` on it, the pipeline on it, and the whole ``bulkops import FILE --list X
  --dry-run`` command as a user runs it (a fresh process: start-up, imports, journal and
  outcome files included) against a fresh process running bare ``csv.reader``; its peak
  RSS against 64 MB + 16 bytes per distinct email.

Files come from ``gen_contacts.py`` (seeded, deterministic) and are cached in ``--workdir``.
Usage::

    python benchmarks/bench_stream.py                          # 1 M rows (~3 min)
    python benchmarks/bench_stream.py --rows 1000000,5000000   # as in README.md
    python benchmarks/bench_stream.py --rows 200000 --xml-rows 50000 --json
    python benchmarks/bench_stream.py --cases export --export-rows 2000000 --repeat 2
    python benchmarks/bench_stream.py --check              # seconds: the test suite's smoke run
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    Figure,
    add_check,
    best_of,
    check_figures,
    child_result,
    machine,
    peak_rss_mib,
    print_table,
    run_child,
    to_json,
)

LIST_URI = "http://api.constantcontact.com/ws/customers/bench/lists/1"
PIECE = 1 << 20
CASES = (
    "csv-reader",
    "pipeline",
    "pipeline-urlencoded",
    "naive",
    "xml-iterparse",
    "xml-reader",
    "xml-pipeline",
    "export",
)


# -- the cases (run in the child) -------------------------------------------------------------


def csv_reader(path: str) -> dict[str, Any]:
    rows = 0
    with open(path, newline="", encoding="utf-8") as handle:
        for _row in csv.reader(handle):
            rows += 1
    return {"rows": rows - 1}


def pipeline(path: str, form: str = "multipart") -> dict[str, Any]:
    from bulkops.stream import Chunk, Pipeline, PipelineOptions

    size = os.path.getsize(path)
    options = PipelineOptions(lists=(LIST_URI,), form=form, size_hint=size)  # type: ignore[arg-type]
    p = Pipeline(options)
    chunks = 0
    body_bytes = 0
    # The events of one piece are dropped before the next is read (as a consumer that
    # hands chunks on would): the figure is the pipeline's memory, not the bench loop's.
    with open(path, "rb") as handle:
        while piece := handle.read(PIECE):
            sizes = [len(e.body) for e in p.decode(piece) if isinstance(e, Chunk)]
            chunks += len(sizes)
            body_bytes += sum(sizes)
    sizes = [len(e.body) for e in p.flush() if isinstance(e, Chunk)]
    chunks += len(sizes)
    body_bytes += sum(sizes)
    stats = p.statistics()
    return {
        "rows": stats.records,
        "rows_sent": stats.rows_sent,
        "rejected": stats.rejected,
        "duplicates": stats.duplicates,
        "chunks": chunks,
        "body_bytes": body_bytes,
        "unique_emails": stats.unique_emails,
        "dedupe_bytes": stats.dedupe_bytes,
    }


def naive(path: str) -> dict[str, Any]:
    rows = 0
    requests = 0
    body_bytes = 0

    def send(buffer: io.StringIO) -> None:
        nonlocal requests, body_bytes
        body = urlencode(
            [("activityType", "SV_ADD"), ("data", buffer.getvalue()), ("lists", LIST_URI)]
        )
        requests += 1
        body_bytes += len(body)

    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        count = 0
        for row in reader:
            writer.writerow(row)
            rows += 1
            count += 1
            if count == 40_000:
                send(buffer)
                buffer = io.StringIO()
                writer = csv.writer(buffer)
                writer.writerow(header)
                count = 0
        if count:
            send(buffer)
    return {"rows": rows, "chunks": requests, "body_bytes": body_bytes}


def xml_iterparse(path: str) -> dict[str, Any]:
    from lxml import etree

    entries = 0
    for _event, element in etree.iterparse(path, events=("end",), tag="{*}entry"):
        entries += 1
        element.clear(keep_tail=True)
        while element.getprevious() is not None:
            del element.getparent()[0]
    return {"rows": entries}


def xml_reader(path: str) -> dict[str, Any]:
    from bulkops.stream import XmlContactDecoder

    decoder = XmlContactDecoder()
    records = 0
    with open(path, "rb") as handle:
        while piece := handle.read(PIECE):
            records += len(decoder.decode(piece))
    records += len(decoder.flush())
    return {"rows": records}


def run_case(case: str, path: str) -> dict[str, Any]:
    if case == "csv-reader":
        return csv_reader(path)
    if case == "pipeline":
        return pipeline(path)
    if case == "pipeline-urlencoded":
        return pipeline(path, "urlencoded")
    if case == "naive":
        return naive(path)
    if case == "xml-iterparse":
        return xml_iterparse(path)
    if case == "xml-reader":
        return xml_reader(path)
    if case == "xml-pipeline":
        return pipeline(path)
    if case == "export-csv-reader":
        return csv_reader(path)
    if case == "export-pipeline":
        return pipeline(path)
    raise SystemExit(f"unknown case {case}")


def child(case: str, path: str, repeat: int) -> None:
    # Imports are not part of the rate; each case imports what it uses (lxml only for XML).
    if case.startswith(("pipeline", "xml-", "export-pipeline")):
        import bulkops.stream  # noqa: F401
    if case.startswith("xml-"):
        from lxml import etree  # noqa: F401

        from bulkops.stream import xml as _xml  # noqa: F401
    result: dict[str, Any] = {"imported_rss_mib": peak_rss_mib()}

    def once() -> None:
        result.update(run_case(case, path))

    cpu = time.process_time()
    seconds = best_of(once, repeat)
    cpu = (time.process_time() - cpu) / max(1, repeat)
    child_result({"case": case, "seconds": seconds, "cpu_seconds": cpu, **result})


# -- the export-shaped file, and the whole command -------------------------------------------

# The command as a user runs it, in a fresh process that reports its own peak RSS.
_COMMAND = """
import sys
from bulkops.__main__ import main
code = main(sys.argv[1:])
with open("/proc/self/status", encoding="ascii") as status:
    hwm = [line.split()[1] for line in status if line.startswith("VmHWM:")]
print("VmHWM", *hwm, file=sys.stderr)
sys.exit(0 if code in (0, 2) else code)
"""
# The baseline process: bare csv.reader over the same file.
_READER = """
import csv, sys
with open(sys.argv[1], newline="", encoding="utf-8") as handle:
    for _row in csv.reader(handle):
        pass
"""


def run_process(args: list[str], repeat: int, cwd: str | None = None) -> dict[str, float]:
    """The best wall-clock time of ``repeat`` runs of ``python *args`` (a fresh process each
    time), its CPU seconds and its peak RSS (MiB, as the process reported it, else 0)."""
    best = {"seconds": float("inf"), "cpu_seconds": 0.0, "peak_rss_mib": 0.0}
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd
        )
        assert proc.stderr is not None
        err = proc.stderr.read().decode("utf-8", "replace")
        _pid, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"{args} failed:\n{err}")
        hwm = [line.split()[1] for line in err.splitlines() if line.startswith("VmHWM")]
        if seconds < best["seconds"]:
            best = {
                "seconds": seconds,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "peak_rss_mib": int(hwm[0]) / 1024 if hwm else 0.0,
            }
    return best


def export_results(workdir: Path, rows: int, repeat: int) -> dict[str, dict[str, Any]]:
    """Every measurement of the export case, baselines in the same run."""
    path = ensure_file(workdir, rows, "export")
    results = {
        case: measure(case, path, repeat) for case in ("export-csv-reader", "export-pipeline")
    }
    with tempfile.TemporaryDirectory(dir=workdir) as runs:  # each run's directory goes there
        command = ["-c", _COMMAND, "import", path, "--list", "X", "--dry-run", "--quiet"]
        print(f"  bulkops import --dry-run on {Path(path).name} ...", file=sys.stderr)
        results["export-command"] = run_process(command, repeat, cwd=runs)
    print(f"  csv.reader process on {Path(path).name} ...", file=sys.stderr)
    results["export-reader-process"] = run_process(["-c", _READER, path], repeat)
    return results


def export_figures(rows: int, results: dict[str, dict[str, Any]]) -> list[Figure]:
    base = results["export-csv-reader"]
    pipe = results["export-pipeline"]
    command = results["export-command"]
    reader = results["export-reader-process"]
    case = f"export, {rows / 1e6:g} M rows"
    emails = pipe["unique_emails"]
    limit = (64e6 + 16 * emails) / 2**20
    return [
        Figure(
            case=case,
            metric="pipeline: file → validated rows → request bodies",
            value=pipe["rows"] / pipe["seconds"],
            unit="rows/s",
            baseline=base["rows"] / base["seconds"],
            baseline_label="bare csv.reader",
        ),
        Figure(
            case=case,
            metric="pipeline, CPU seconds",
            value=pipe["cpu_seconds"],
            unit="s",
            baseline=base["cpu_seconds"],
            baseline_label="bare csv.reader",
            higher_is_better=False,
        ),
        Figure(
            case=case,
            metric="whole `bulkops import --dry-run` (fresh process, wall)",
            value=command["seconds"],
            unit="s",
            baseline=reader["seconds"],
            baseline_label="fresh process, bare csv.reader",
            higher_is_better=False,
        ),
        Figure(
            case=case,
            metric="whole command, CPU seconds",
            value=command["cpu_seconds"],
            unit="s",
            baseline=reader["cpu_seconds"],
            baseline_label="fresh process, bare csv.reader",
            higher_is_better=False,
        ),
        Figure(
            case=case,
            metric=f"whole command, peak RSS ({emails:,} distinct emails)",
            value=command["peak_rss_mib"],
            unit="MiB",
            baseline=limit,
            baseline_label="64 MB + 16 B per distinct email",
            higher_is_better=False,
        ),
        Figure(
            case=case,
            metric="pipeline alone, peak RSS",
            value=pipe["peak_rss_mib"],
            unit="MiB",
            baseline=base["peak_rss_mib"],
            baseline_label="bare csv.reader",
            higher_is_better=False,
        ),
    ]


# -- the parent -------------------------------------------------------------------------------


def ensure_file(workdir: Path, rows: int, form: str) -> str:
    from gen_contacts import write_file

    suffix = "export.csv" if form == "export" else form
    path = workdir / f"contacts-{rows}.{suffix}"
    if not path.exists():
        print(f"generating {path} ...", file=sys.stderr)
        tmp = path.with_suffix(".tmp")
        write_file(str(tmp), rows, form=form)
        tmp.rename(path)
    return str(path)


def measure(case: str, path: str, repeat: int) -> dict[str, Any]:
    print(f"  {case} on {Path(path).name} ...", file=sys.stderr)
    return run_child(__file__, ["--child", case, "--file", path, "--repeat", str(repeat)])


def csv_figures(rows: int, results: dict[str, dict[str, Any]]) -> list[Figure]:
    base = results["csv-reader"]
    base_rate = base["rows"] / base["seconds"]
    size = f"{rows / 1e6:g} M rows"
    figures = []
    for case in ("pipeline", "pipeline-urlencoded"):
        if case not in results:
            continue
        r = results[case]
        rate = r["rows"] / r["seconds"]
        figures.append(
            Figure(
                case=f"{case}, {size}",
                metric="file → validated rows → request bodies",
                value=rate,
                unit="rows/s",
                baseline=base_rate,
                baseline_label="bare csv.reader",
            )
        )
    if "naive" in results and "pipeline" in results:
        r = results["naive"]
        pipe = results["pipeline"]
        figures.append(
            Figure(
                case=f"pipeline, {size}",
                metric="vs. csv.reader → csv.writer → urlencode",
                value=pipe["rows"] / pipe["seconds"],
                unit="rows/s",
                baseline=r["rows"] / r["seconds"],
                baseline_label="naive pipeline",
            )
        )
    if "pipeline" in results:
        pipe = results["pipeline"]
        figures.append(
            Figure(
                case=f"pipeline, {size}",
                metric="peak RSS",
                value=pipe["peak_rss_mib"],
                unit="MiB",
                baseline=base["peak_rss_mib"],
                baseline_label="bare csv.reader",
                higher_is_better=False,
            )
        )
        figures.append(
            Figure(
                case=f"pipeline, {size}",
                metric=f"dedupe table per unique email ({pipe['unique_emails']:,} emails)",
                value=pipe["dedupe_bytes"] / max(1, pipe["unique_emails"]),
                unit="bytes",
            )
        )
    return figures


def xml_figures(rows: int, results: dict[str, dict[str, Any]]) -> list[Figure]:
    base = results["xml-iterparse"]
    base_rate = base["rows"] / base["seconds"]
    figures = []
    for case in ("xml-reader", "xml-pipeline"):
        r = results[case]
        figures.append(
            Figure(
                case=f"{case}, {rows / 1e3:g} k entries",
                metric="Atom feed → contact records" if case == "xml-reader" else "→ bodies",
                value=r["rows"] / r["seconds"],
                unit="entries/s",
                baseline=base_rate,
                baseline_label="iterparse + clear",
            )
        )
    figures.append(
        Figure(
            case=f"xml-reader, {rows / 1e3:g} k entries",
            metric="peak RSS",
            value=results["xml-reader"]["peak_rss_mib"],
            unit="MiB",
            baseline=base["peak_rss_mib"],
            baseline_label="iterparse + clear",
            higher_is_better=False,
        )
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1000000", help="CSV sizes, comma-separated")
    parser.add_argument("--xml-rows", type=int, default=200_000, help="entries of the XML feed")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (best kept)")
    parser.add_argument(
        "--export-rows", type=int, default=2_000_000, help="rows of the export-shaped file"
    )
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--workdir", default="/tmp/bulkops-bench")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    add_check(parser)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.file, args.repeat)
        return 0
    if args.check:  # every case, small files in a scratch directory
        args.rows, args.xml_rows, args.repeat, args.cases = "3000", 1000, 1, ",".join(CASES)
        args.export_rows = 3000
        args.workdir = tempfile.mkdtemp(prefix="bench-stream-check-")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cases = args.cases.split(",")
    figures: list[Figure] = []
    raw: dict[str, Any] = {}
    csv_cases = [
        c for c in ("csv-reader", "pipeline", "pipeline-urlencoded", "naive") if c in cases
    ]
    if csv_cases and "csv-reader" not in csv_cases:
        csv_cases.insert(0, "csv-reader")  # every CSV figure is a ratio to it
    for rows in (int(r) for r in args.rows.split(",")) if csv_cases else ():
        path = ensure_file(workdir, rows, "csv")
        results = {case: measure(case, path, args.repeat) for case in csv_cases}
        raw[f"csv-{rows}"] = results
        figures += csv_figures(rows, results)
    if args.xml_rows and {"xml-iterparse", "xml-reader", "xml-pipeline"} <= set(cases):
        path = ensure_file(workdir, args.xml_rows, "xml")
        results = {
            case: measure(case, path, args.repeat)
            for case in ("xml-iterparse", "xml-reader", "xml-pipeline")
        }
        raw[f"xml-{args.xml_rows}"] = results
        figures += xml_figures(args.xml_rows, results)
    if "export" in cases and args.export_rows:
        results = export_results(workdir, args.export_rows, args.repeat)
        raw[f"export-{args.export_rows}"] = results
        figures += export_figures(args.export_rows, results)
    if args.check:
        check_figures(figures)
        shutil.rmtree(args.workdir)
    if args.json:
        print(to_json(figures, machine=machine(), results=raw))
    else:
        print_table(figures)
        print(f"\n{machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
