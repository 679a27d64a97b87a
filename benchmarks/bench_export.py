"""Benchmarks of exports: the feed decoder against bare lxml, and whole exports end to end.

Cases (every figure next to a baseline measured in the same run, and the ratio):

* ``decode`` — feed bytes → records. A seeded members feed of N entries (one document, as
  a walker meets it page after page) is written to a file; each of these then runs in its
  own subprocess, reading the file in 64 KiB pieces, so its peak RSS is its own:

  - ``ours``: :class:`bulkops.stream.feed.FeedDecoder` → records;
  - ``ours+rows``: the same records turned into the CSV lines ``bulkops export --via feed``
    writes for them (``contact_row`` under the email column, ``RowEncoder``), one
    ``encode`` per decoded piece as the exporter does per page — the issue's "feed bytes →
    output records";
  - ``iterparse``: bare ``lxml.etree.iterparse(events=("end",), tag=entry)`` with the
    element cleared and its preceding siblings deleted — no records (the issue's baseline);
  - ``iterparse+records``: the same loop calling ``wire.atom.feeds.record_from_entry`` per entry —
    the same records as ours, so the ratio is the decoder's own overhead;
  - ``whole`` (RSS only): ``lxml.etree.parse`` of the whole document.

  At 100,000 and 1,000,000 entries; ``--shape full`` uses full contact entries instead
  (about 1.9 KB each, the shape of design.md §4's 53 k entries/s).
* ``e2e`` — ``bulkops export`` of a list of 1,000,000 members from a ``bulkops serve``
  subprocess on loopback, as a CLI subprocess (``--via feed``, then ``--via activity``),
  rows/s and the client's peak RSS from its report. Baselines: a bare walk of the same
  members feed (sync httpx, next link found by a regex, bodies discarded) and a bare
  ``EXPORT_CONTACTS`` round trip (post, poll every 50 ms, download to nowhere).

Usage::

    python benchmarks/bench_export.py                         # both cases, defaults
    python benchmarks/bench_export.py --case decode --sizes 100000 --json
    python benchmarks/bench_export.py --case e2e --members 200000
    python benchmarks/bench_export.py --check                # seconds: the test suite's run
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Only what decoding needs is imported here: the workers' peak RSS is the decoder's, not the
# server's or httpx's (the benchmark's own process imports those in main()).
from bulkops.wire.atom.contacts import contact_entry
from bulkops.wire.atom.feeds import feed_head, feed_tail, parse_entry, record_from_entry
from bulkops.wire.atom.lists import member_entry
from bulkops.wire.atom.syntax import ATOM_NS
from bulkops.wire.atom.writing import document
from bulkops.wire.model import Activity, Base, Contact, ContactListMember, ContactListRef, FeedMeta

sys.path.insert(0, str(Path(__file__).resolve().parent))

if TYPE_CHECKING:
    import httpx
    from harness import Figure

USER = "bench"  # the account of bench_server (checked in main)

ENTRY_TAG = f"{{{ATOM_NS}}}entry"
PIECE = 64 * 1024
_FIRST = "James Mary John Patricia Robert Zoë Łukasz Søren Ana Bo Cy Omar Priya Wei".split()
_LAST = "Smith Johnson Williams Brown Jones Garcia Ødegaard Nuñez Chen Ito Diaz".split()
_DOMAINS = ("example.com", "example.org", "mail.example.net", "corp.example.co.uk")


# -- the feed file -----------------------------------------------------------------------------


def write_feed(path: Path, entries: int, seed: int, shape: str) -> int:
    """Write a seeded feed of ``entries`` member (or full contact) entries; its size."""
    rnd = random.Random(seed)
    base = Base("http://127.0.0.1:8080", USER)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    meta = FeedMeta(
        id_path="lists/2/members",
        title=f"Contacts for Customer: {USER}",
        updated=start,
        author=USER,
        next_href=f"/ws/customers/{USER}/lists/2/members?next=1x2y3z",
        first_href=f"/ws/customers/{USER}/lists/2/members",
        current_href=f"/ws/customers/{USER}/lists/2/members",
    )
    with path.open("wb") as out:
        out.write(document(feed_head(base, meta)))
        batch: list[str] = []
        for i in range(entries):
            first, last = rnd.choice(_FIRST), rnd.choice(_LAST)
            email = f"{first}.{last}.{i}@{rnd.choice(_DOMAINS)}".lower()
            when = start - timedelta(milliseconds=i * 997)
            cid = str(entries - i)
            if shape == "members":
                record = ContactListMember(
                    contact_id=cid, email=email, name=f"{last}, {first}", list_id="2", updated=when
                )
                batch.append(member_entry(base, record))
            else:
                contact = Contact(
                    id=cid,
                    status="Active",
                    updated=when,
                    fields={
                        "EmailAddress": email,
                        "EmailType": "HTML",
                        "FirstName": first,
                        "LastName": last,
                        "CompanyName": "Acme Inc.",
                        "City": "Boston",
                        "StateCode": "MA",
                        "PostalCode": f"{rnd.randrange(100000):05d}",
                    },
                    lists=(
                        ContactListRef(
                            list_id="2", opt_in_source="ACTION_BY_CUSTOMER", opt_in_time=when
                        ),
                    ),
                    confirmed=False,
                    insert_time=when,
                    last_update_time=when,
                )
                batch.append(contact_entry(base, contact, view="full"))
            if len(batch) == 2000:
                out.write("".join(batch).encode())
                batch.clear()
        out.write("".join(batch).encode())
        out.write(feed_tail().encode())
    return path.stat().st_size


# -- the workers (one subprocess each) ---------------------------------------------------------


def _vm_hwm(pid: int | str = "self") -> int:
    """Peak RSS of a process image (``VmHWM``), 0 once the process is gone.

    Not ``ru_maxrss``: Linux keeps across ``exec`` the peak of the process a child was forked
    from, so a child of this benchmark (~150 MiB after seeding) would report that instead.
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _work_ours(path: Path) -> int:
    from bulkops.stream.feed import FeedDecoder

    decoder = FeedDecoder(list_id="2")
    count = 0
    with path.open("rb") as source:
        while piece := source.read(PIECE):
            count += len(decoder.decode(piece))
    return count + len(decoder.flush())


def _work_rows(path: Path) -> int:
    from bulkops.stream.export import RowEncoder, contact_row, export_columns
    from bulkops.stream.feed import FeedDecoder

    columns = export_columns(["EMAIL ADDRESS"])
    encoder = RowEncoder("csv", [column.export_header for column in columns])
    decoder = FeedDecoder(list_id="2")
    count = 0
    written = len(encoder.begin())

    def write(records: list[Any]) -> None:
        nonlocal count, written
        rows = [contact_row(record, columns) for record in records]
        written += len(encoder.encode(rows))
        count += len(rows)

    with path.open("rb") as source:
        while piece := source.read(PIECE):
            write(decoder.decode(piece))
    write(decoder.flush())
    assert written > count  # (the lines were built)
    return count


def _work_iterparse(path: Path, *, records: bool) -> int:
    from lxml import etree

    count = 0
    with path.open("rb") as source:
        for _event, el in etree.iterparse(source, events=("end",), tag=ENTRY_TAG):
            if records:
                record_from_entry(el, list_id="2")
            count += 1
            el.clear()
            while el.getprevious() is not None:
                del el.getparent()[0]
    return count


def _work_whole(path: Path) -> int:
    from lxml import etree

    root = etree.parse(str(path), etree.XMLParser(huge_tree=True)).getroot()
    return sum(1 for el in root if el.tag == ENTRY_TAG)


WORKERS = {
    "ours": _work_ours,
    "ours+rows": _work_rows,
    "iterparse": lambda p: _work_iterparse(p, records=False),
    "iterparse+records": lambda p: _work_iterparse(p, records=True),
    "whole": _work_whole,
}


def worker(kind: str, path: Path) -> None:
    """Run one decode case on the file; print ``{entries, seconds, cpu_seconds,
    peak_rss_mib}`` as the harness's ``run_child`` expects (the peak from ``VmHWM``, not
    ``harness.child_result``'s ``ru_maxrss``; ``cpu_seconds`` is the process's CPU time,
    which other jobs on the machine disturb less than the wall clock)."""
    gc.collect()
    started, cpu_started = time.perf_counter(), time.process_time()
    entries = WORKERS[kind](path)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    result = {
        "entries": entries,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "peak_rss_mib": _vm_hwm() / 2**20,
    }
    print(json.dumps(result), flush=True)


def run_worker(kind: str, path: Path) -> dict[str, float]:
    """One decode case in a fresh process."""
    from harness import run_child

    return run_child(__file__, ["--worker", kind, "--file", str(path)])


# -- case: decode -------------------------------------------------------------------------------


def case_decode(args: argparse.Namespace, scratch: Path) -> list[Figure]:
    from harness import Figure

    figures: list[Figure] = []
    for size in args.sizes:
        path = scratch / f"feed-{args.shape}-{size}.xml"
        nbytes = write_feed(path, size, args.seed, args.shape)
        with path.open("rb") as warm:  # into the page cache, so every kind reads it alike
            while warm.read(1 << 20):
                pass
        label = f"decode {size:,} {args.shape}"
        runs: dict[str, list[dict[str, float]]] = {}
        repeat = args.repeat if size <= 200_000 else 1
        for _ in range(repeat):  # interleaved, so load changes hit every kind alike
            for kind in ("ours", "ours+rows", "iterparse", "iterparse+records"):
                result = run_worker(kind, path)
                if result["entries"] != size:
                    raise RuntimeError(f"{kind} read {result['entries']} entries, not {size}")
                runs.setdefault(kind, []).append(result)
        best = {k: min(r["seconds"] for r in v) for k, v in runs.items()}
        cpu = {k: min(r["cpu_seconds"] for r in v) for k, v in runs.items()}
        rss = {k: max(r["peak_rss_mib"] for r in v) for k, v in runs.items()}
        rate = {k: size / s for k, s in best.items()}
        cpu_rate = {k: size / s for k, s in cpu.items()}
        figures += [
            Figure(
                case=label,
                metric=f"feed bytes → records ({nbytes / size:.0f} B/entry)",
                value=rate["ours"],
                unit="entries/s",
                baseline=rate["iterparse"],
                baseline_label="bare iterparse + clearing, no records",
            ),
            Figure(
                case=label,
                metric="same, per CPU second (less disturbed by other jobs)",
                value=cpu_rate["ours"],
                unit="entries/s",
                baseline=cpu_rate["iterparse"],
                baseline_label="bare iterparse + clearing, no records",
            ),
            Figure(
                case=label,
                metric="feed bytes → CSV rows (export --via feed, email column)",
                value=rate["ours+rows"],
                unit="rows/s",
                baseline=rate["iterparse"],
                baseline_label="bare iterparse + clearing, no records",
            ),
            Figure(
                case=label,
                metric="feed bytes → records, same records",
                value=rate["ours"],
                unit="entries/s",
                baseline=rate["iterparse+records"],
                baseline_label="iterparse + clearing + record_from_entry",
            ),
            Figure(
                case=label,
                metric="peak RSS, FeedDecoder",
                value=rss["ours"],
                unit="MiB",
                baseline=rss["iterparse"],
                baseline_label="bare iterparse",
                higher_is_better=False,
            ),
        ]
        if size <= args.whole_max:
            whole = run_worker("whole", path)
            figures.append(
                Figure(
                    case=label,
                    metric="peak RSS, FeedDecoder vs whole-document parse",
                    value=rss["ours"],
                    unit="MiB",
                    baseline=whole["peak_rss_mib"],
                    baseline_label="lxml.etree.parse of the whole feed",
                    higher_is_better=False,
                )
            )
        path.unlink()
    return figures


# -- case: end to end ---------------------------------------------------------------------------


def prepare_members_db(cache: Path, members: int, seed: int) -> Path:
    """A cached database whose one list ("Members") holds exactly ``members`` contacts."""
    from bench_server import API_KEY, PASSWORD

    from bulkops.server.auth import AccountSpec, Secret, ensure_account
    from bulkops.server.seed import seed_contacts
    from bulkops.server.store import Store, now_ms, write_tx

    path = cache / f"bench-export-{members}-{seed}.db"
    if path.exists():
        return path
    partial = path.with_suffix(".partial")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{partial}{suffix}").unlink(missing_ok=True)
    store = Store(partial)
    db = store.connection()
    spec = AccountSpec(username=USER, password=Secret(PASSWORD), api_key=Secret(API_KEY))
    account, _created = ensure_account(db, spec)
    with write_tx(db):
        db.execute(
            "INSERT INTO list (account_id, name, short_name, updated) VALUES (?, ?, ?, ?)",
            (account.id, "Members", "Members", now_ms()),
        )
    (list_id,) = db.execute("SELECT id FROM list").fetchone()
    report = seed_contacts(
        db,
        account.id,
        members,
        lists=[list_id],
        seed=seed,
        removed_ratio=0.0,
        do_not_mail_ratio=0.0,
    )
    print(f"seeded {report.contacts:,} members in {report.seconds:.1f} s", file=sys.stderr)
    db.execute("ANALYZE")
    db.execute("PRAGMA journal_mode=DELETE")
    store.close()
    os.replace(partial, path)
    return path


def _bare_walk(client: httpx.Client, origin: str) -> tuple[int, float]:
    """Entries and seconds of a walk that only follows next links."""
    url: str | None = f"{origin}/ws/customers/{USER}/lists/1/members"
    entries = 0
    started = time.perf_counter()
    while url is not None:
        response = client.get(url)
        response.raise_for_status()
        body = response.content
        entries += body.count(b"<entry")
        found = re.search(rb'<link href="([^"]+)" rel="next"', body)
        url = None if found is None else origin + found.group(1).decode().replace("&amp;", "&")
    return entries, time.perf_counter() - started


def _bare_activity(client: httpx.Client, origin: str, columns: list[str]) -> tuple[int, float]:
    """Rows and seconds of post → poll → download (bytes discarded) of an export."""
    base = f"{origin}/ws/customers/{USER}/"
    fields = [
        ("activityType", "EXPORT_CONTACTS"),
        ("fileType", "CSV"),
        ("sortBy", "EMAIL_ADDRESS"),
        ("listId", f"{base}lists/1"),
        *(("columns", c) for c in columns),
    ]
    started = time.perf_counter()
    response = client.post(f"{base}activities", data=dict(fields) | {"columns": columns})
    response.raise_for_status()
    activity = parse_entry(response.content)
    assert isinstance(activity, Activity)
    while True:
        current = parse_entry(client.get(f"{base}activities/{activity.id}").content)
        assert isinstance(current, Activity)
        if current.status in ("COMPLETE", "ERROR"):
            break
        time.sleep(0.05)
    lines = 0
    with client.stream("GET", f"{base}activities/{current.file_name}") as download:
        for piece in download.iter_bytes(PIECE):
            lines += piece.count(b"\n")
    return lines - 1, time.perf_counter() - started


def _cli_export(
    origin: str, creds: Path, out: Path, run_dir: Path, via: str, columns: list[str]
) -> dict[str, Any]:
    """The report of a ``bulkops export`` subprocess."""
    cmd = [
        sys.executable, "-m", "bulkops", "export", "--server", origin,
        "--credentials-file", str(creds), "--list", "Members", "--via", via,
        "--columns", ",".join(columns), "-o", str(out), "--run-dir", str(run_dir), "--quiet",
        "--json",
    ]  # fmt: skip
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        peak = 0
        while proc.poll() is None:  # VmHWM only grows: the last sample is the peak so far
            peak = max(peak, _vm_hwm(proc.pid))
            time.sleep(0.2)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"bulkops export --via {via} failed:\n{stderr[-4000:]}")
    report: dict[str, Any] = json.loads(stdout.splitlines()[-1])["report"]
    report["vm_hwm"] = peak
    return report


def case_e2e(args: argparse.Namespace, scratch: Path) -> list[Figure]:
    import httpx
    from bench_server import API_KEY, PASSWORD, serving
    from harness import Figure

    db_path = prepare_members_db(args.cache, args.members, args.seed)
    creds = scratch / "credentials"
    creds.write_text(f"username = {USER}\napi_key = {API_KEY}\npassword = {PASSWORD}\n")
    figures: list[Figure] = []
    with serving(db_path) as (origin, _proc):
        auth = httpx.BasicAuth(f"{API_KEY}%{USER}", PASSWORD)
        with httpx.Client(auth=auth, timeout=600) as client:
            walked, walk_seconds = _bare_walk(client, origin)
            four = ["EMAIL ADDRESS", "FIRST NAME", "LAST NAME", "CITY"]
            exported, bare_seconds = _bare_activity(client, origin, four)
        if walked != args.members or exported != args.members:
            raise RuntimeError(f"baselines saw {walked} and {exported} rows")
        for via, columns, baseline, baseline_label in (
            (
                "feed",
                ["EMAIL ADDRESS"],
                walked / walk_seconds,
                "bare walk of the members feed, nothing parsed",
            ),
            ("activity", four, exported / bare_seconds, "bare post, poll, download"),
        ):
            report = _cli_export(
                origin, creds, scratch / f"out-{via}.csv", scratch / f"run-{via}", via, columns
            )
            if report["rows"] != args.members or report["count_check"] != "match":
                raise RuntimeError(f"--via {via}: {report['rows']} rows, {report['count_check']}")
            label = f"e2e {args.members:,} members"
            figures += [
                Figure(
                    case=label,
                    metric=f"bulkops export --via {via} ({len(columns)} column(s), CSV)",
                    value=report["rows_per_second"],
                    unit="rows/s",
                    baseline=baseline,
                    baseline_label=baseline_label,
                ),
                Figure(
                    case=label,
                    metric=f"client peak RSS (VmHWM), --via {via}",
                    value=report["vm_hwm"] / 2**20,
                    unit="MiB",
                ),
            ]
            (scratch / f"out-{via}.csv").unlink()
    return figures


# -- main ---------------------------------------------------------------------------------------

CASES = {"decode": case_decode, "e2e": case_e2e}


def main(argv: list[str] | None = None) -> int:
    """Run the chosen cases and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", action="append", choices=sorted(CASES))
    parser.add_argument(
        "--sizes",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[100_000, 1_000_000],
        help="decode: feed sizes in entries, comma-separated",
    )
    parser.add_argument("--shape", choices=["members", "full"], default="members")
    parser.add_argument("--repeat", type=int, default=3, help="decode runs per kind (≤200k)")
    parser.add_argument(
        "--whole-max", type=int, default=100_000, help="largest feed also parsed whole"
    )
    parser.add_argument("--members", type=int, default=1_000_000, help="e2e: list size")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("TMPDIR", "/tmp")) / "bulkops-bench",
        help="where seeded databases are kept (default %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    from harness import add_check, check_figures, machine, print_table, to_json

    add_check(parser)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.file)
        return 0
    import bench_server

    if args.check:  # every case, small sizes, a scratch cache
        args.case, args.sizes, args.repeat, args.members = None, [2_000], 1, 2_000
        args.cache = Path(tempfile.mkdtemp(prefix="bench-export-check-"))

    assert bench_server.USER == USER
    args.cache.mkdir(parents=True, exist_ok=True)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        for name in args.case or sorted(CASES):
            print(f"running {name} ...", file=sys.stderr)
            figures.extend(CASES[name](args, Path(tmp)))
    if args.check:
        check_figures(figures)
        shutil.rmtree(args.cache)
    if args.json:
        print(to_json(figures, machine=machine()))
    else:
        print(f"measured on {machine()}")
        print_table(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
