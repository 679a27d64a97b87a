"""Benchmarks of bulk activities: SV_ADD and remove apply rates, export rate with flat memory.

The account is the seeded one of ``bench_server.py`` (:func:`bench_server.prepare_db`: a
million contacts by default, cached per ``(contacts, seed)``). Activities change the data, so
every run works on fresh copies of it, made with SQLite's backup API.

Cases (each prints the project's figure, a baseline measured in the same run, and the ratio):

* ``sv-add`` — ``--activities`` SV_ADD activities of ``--rows`` rows each (half of the rows
  update existing contacts picked at random, half add new ones; 5 columns; one list).
  Baseline: the same rows upserted into another copy of the account with one ``executemany``
  in one transaction on a plain ``sqlite3`` connection with the server's pragmas (no
  validation, no temp table, no memberships). Target: ≥ 0.5× the baseline. Each figure and
  its baseline cover the same window, with the worker's checkpoint policy (no WAL checkpoint
  inside the timed window: ``wal_autocheckpoint=0``, a passive checkpoint after it, untimed):

  * *worker, in-process* — the activity POSTed to the app in this process (ASGI, no worker
    running), then the worker's own steps timed: load the stored request, validate, apply,
    complete, **COMMIT** (``apply_activity``). Baseline: ``BEGIN`` → ``executemany`` →
    ``COMMIT``.
  * *served worker* — POSTed urlencoded to a ``bulkops serve`` subprocess: the rate its
    activity reports, ``TransactionCount / (RunFinishTime - RunStartTime)``; RunFinishTime is
    stamped inside the transaction, **before its COMMIT**. Baseline: ``BEGIN`` →
    ``executemany``, before ``COMMIT``.
  * *end to end* — same server: POST sent → COMPLETE seen. Baseline: ``BEGIN`` → ``COMMIT``.
* ``sv-add-empty`` — the same into an account with no contacts (every row adds one), as
  the import engine's benchmark does; baseline as above, into a second empty account.
* ``sv-remove`` — ``--activities`` REMOVE_CONTACTS_FROM_LISTS activities of ``--rows`` rows
  each, members of the big list (about 97% of the account) picked at random, disjoint; the
  three windows as above. Baseline: the same removes in raw SQL on another copy, two
  ``executemany`` in one transaction — per row, ``DELETE FROM membership … WHERE contact_id =
  (SELECT id … email_key = ?)`` and the ``UPDATE contact`` that makes a contact left on no list
  Removed and stamps ``last_update_time`` (no validation, no errors, no temp table).
* ``export`` — an EXPORT_CONTACTS of a small list and of the big list (about 30% and 97% of
  the account), each in a fresh server process: rows written per second (worker time) and the
  process's peak RSS (``VmHWM``) before and after, which must not grow with the export size.
  Baseline: the same query streamed through ``csv.writer`` into a file in this process.

Usage::

    python benchmarks/bench_activities.py                        # every case, 1,000,000 contacts
    python benchmarks/bench_activities.py --case sv-add --contacts 100000 --activities 3 --json
    python benchmarks/bench_activities.py --check                # seconds: the test suite's run
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import attrs
import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_server import (  # the shared account and server helpers
    API_KEY,
    PASSWORD,
    USER,
    Figure,
    add_account_and_lists,
    prepare_db,
    print_table,
    serving,
)
from harness import add_check, check_figures

from bulkops.server.activity_queries import load_request, take_next
from bulkops.server.app import ServerConfig, create_app
from bulkops.server.apply import apply_activity
from bulkops.server.serve import open_state
from bulkops.server.store import Store, checkpoint_wal

__all__ = ["CASES", "main"]

COLUMNS = "Email Address,First Name,Last Name,City,US State/CA Province"
_STATES = ("MA", "NY", "CA", "TX", "ON", "QC", "BC", "WA", "IL", "FL")
_STATUS = re.compile(rb"<Status>([A-Z]+)</Status>")
_TEXT = re.compile(rb"<(RunStartTime|RunFinishTime|TransactionCount)>([^<]+)</")


@attrs.define
class Run:
    """What a case gets: the seeded account, a scratch directory, the settings."""

    source: Path
    scratch: Path
    list_ids: list[int]
    contacts: int
    seed: int
    activities: int
    rows: int
    check: bool = False  # --check: one server for both exports (its peaks are cumulative)


def _copy(source: Path, target: Path) -> Path:
    """A consistent copy of a database (SQLite's online backup)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    with sqlite3.connect(target) as db:
        db.execute("PRAGMA journal_mode=WAL")
    return target


def _server_like(path: Path) -> sqlite3.Connection:
    """A plain connection with the pragmas :class:`bulkops.server.store.Store` uses."""
    db = sqlite3.connect(path, isolation_level=None)
    for pragma in (
        "journal_mode=WAL",
        "synchronous=NORMAL",
        "foreign_keys=ON",
        "busy_timeout=60000",
        "cache_size=-65536",
        "temp_store=MEMORY",
    ):
        db.execute(f"PRAGMA {pragma}")
    return db


def _batches(run: Run) -> list[list[tuple[str, str, str, str, str]]]:
    """``activities`` batches of ``rows`` rows: half existing contacts, half new ones."""
    rng = random.Random(run.seed)
    with sqlite3.connect(f"file:{run.source}?mode=ro", uri=True) as db:
        (top,) = db.execute("SELECT max(id) FROM contact").fetchone()
        batches = []
        for k in range(run.activities):
            picked = {rng.randrange(1, top + 1) for _ in range(run.rows // 2)}
            existing = [
                r[0]
                for cid in sorted(picked)
                for r in db.execute(
                    "SELECT EmailAddress FROM contact WHERE id = ? AND status != 'Do Not Mail'",
                    (cid,),
                )
            ]
            new = [f"fresh{k}.{i}@bench-new.example" for i in range(run.rows - len(existing))]
            emails = existing + new
            rng.shuffle(emails)
            batches.append(
                [
                    (e, f"First{i}", f"Last{k}", f"City{i % 211}", _STATES[i % len(_STATES)])
                    for i, e in enumerate(emails)
                ]
            )
    return batches


def _csv(batch: list[tuple[str, str, str, str, str]]) -> str:
    return COLUMNS + "\n" + "\n".join(",".join(row) for row in batch)


def _seconds(text: bytes) -> float:
    return datetime.fromisoformat(text.decode().replace("Z", "+00:00")).timestamp()


def _wait(client: httpx.Client, location: str) -> dict[str, bytes]:
    while True:
        body = client.get(location).content
        status = _STATUS.search(body)
        if status is not None and status.group(1) in (b"COMPLETE", b"ERROR"):
            if status.group(1) == b"ERROR":
                raise RuntimeError(f"activity {location} ended in ERROR")
            return {m.group(1).decode(): m.group(2) for m in _TEXT.finditer(body)}
        time.sleep(0.01)


def _worker_seconds(fields: dict[str, bytes]) -> float:
    return _seconds(fields["RunFinishTime"]) - _seconds(fields["RunStartTime"])


def _list_uri(list_id: int) -> str:
    return f"http://api.constantcontact.com/ws/customers/{USER}/lists/{list_id}"


def _client(origin: str) -> httpx.Client:
    auth = httpx.BasicAuth(f"{API_KEY}%{USER}", PASSWORD)
    return httpx.Client(base_url=f"{origin}/ws/customers/{USER}/", auth=auth, timeout=120)


CaseFn = Callable[[Run], list[Figure]]
CASES: dict[str, CaseFn] = {}


def case(name: str) -> Callable[[CaseFn], CaseFn]:
    """Register a case."""

    def register(fn: CaseFn) -> CaseFn:
        CASES[name] = fn
        return fn

    return register


def _fresh_batches(run: Run) -> list[list[tuple[str, str, str, str, str]]]:
    """``activities`` batches of ``rows`` rows, every email new (for an empty account)."""
    return [
        [
            (
                f"fresh{k}.{i}@bench-empty.example",
                f"First{i}",
                f"Last{k}",
                f"City{i % 211}",
                _STATES[i % len(_STATES)],
            )
            for i in range(run.rows)
        ]
        for k in range(run.activities)
    ]


def _empty_account(path: Path) -> tuple[Path, list[int]]:
    """A database holding the benchmark account and its lists, and no contact."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    store = Store(path)
    _account_id, ids = add_account_and_lists(store.connection())
    store.close()
    return path, ids


@case("sv-add")
def sv_add(run: Run) -> list[Figure]:
    """SV_ADD rows applied per second vs a raw executemany upsert of the same rows."""
    return _sv_add(run, run.source, run.list_ids, _batches(run), "sv-add", "")


@case("sv-add-empty")
def sv_add_empty(run: Run) -> list[Figure]:
    """The same into an account with no contacts (every row a new contact)."""
    source, list_ids = _empty_account(run.scratch / "empty.db")
    return _sv_add(run, source, list_ids, _fresh_batches(run), "sv-add-empty", ", empty account")


class _InProcess:
    """The app and the worker's own steps in this process, on a copy of the account."""

    def __init__(self, path: Path) -> None:
        self.state = open_state(path, ServerConfig())
        self.db = self.state.store.connection()
        self.auth = httpx.BasicAuth(f"{API_KEY}%{USER}", PASSWORD)

    async def _post(self, fields: dict[str, str]) -> None:
        transport = httpx.ASGITransport(app=create_app(self.state))  # type: ignore[arg-type]
        base = f"http://testserver/ws/customers/{USER}/"
        async with httpx.AsyncClient(transport=transport, base_url=base, auth=self.auth) as c:
            response = await c.post("activities", data=fields)
        if response.status_code != 201:
            raise RuntimeError(f"POST: {response.status_code} {response.text[:200]}")

    def apply(self, fields: dict[str, str]) -> tuple[int, float]:
        """POST (untimed), start it, then time the worker's steps up to its COMMIT."""
        trio.run(self._post, fields)
        taken = take_next(self.db)
        if taken is None:
            raise RuntimeError("the POSTed activity is not waiting")
        begun = time.perf_counter()
        count, _errors = apply_activity(self.db, *taken, load_request(self.db, taken[0]))
        seconds = time.perf_counter() - begun
        checkpoint_wal(self.db)  # as the worker does, after the activity (untimed)
        return count, seconds

    def close(self) -> None:
        self.state.store.close()


_UPSERT = (
    "INSERT INTO contact (account_id, email_key, EmailAddress, FirstName, LastName, City, "
    "StateCode, status, insert_time, last_update_time) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, 'Active', ?, ?) "
    "ON CONFLICT (account_id, email_key) DO UPDATE SET FirstName = excluded.FirstName, "
    "LastName = excluded.LastName, City = excluded.City, StateCode = excluded.StateCode, "
    "last_update_time = excluded.last_update_time"
)

#: ``(raw connection, account id, batch index) -> rows``: the baseline's statements of one
#: activity, run between its ``BEGIN`` and its ``COMMIT``.
RawApply = Callable[[sqlite3.Connection, int, int], int]


def _measure(
    run: Run, source: Path, posts: list[dict[str, str]], raw_apply: RawApply
) -> dict[str, float]:
    """Each activity of ``posts`` served, in-process and raw, on three copies of ``source``:
    the median rates (rows/s) of each window (see the module docstring)."""
    served = _copy(source, run.scratch / "served.db")
    in_process = _InProcess(_copy(source, run.scratch / "worker.db"))
    raw_db = _server_like(_copy(source, run.scratch / "raw.db"))
    raw_db.execute("PRAGMA wal_autocheckpoint=0")  # the worker's policy: checkpoint after
    (account_id,) = raw_db.execute("SELECT id FROM account WHERE username = ?", (USER,)).fetchone()
    rates: dict[str, list[float]] = {
        k: [] for k in ("in-process", "served", "e2e", "raw", "raw-uncommitted")
    }
    with serving(served) as (origin, _proc), _client(origin) as client:
        for k, fields in enumerate(posts):
            expected = fields["data"].count("\n")  # one header line, then a line per row
            started = time.perf_counter()
            response = client.post("activities", data=fields)
            if response.status_code != 201:
                raise RuntimeError(f"POST: {response.status_code} {response.text[:200]}")
            found = _wait(client, response.headers["location"])
            e2e = time.perf_counter() - started
            applied = int(found["TransactionCount"])
            if applied != expected:
                raise RuntimeError(f"{applied} of {expected} rows applied")
            rates["served"].append(applied / _worker_seconds(found))
            rates["e2e"].append(applied / e2e)

            applied, seconds = in_process.apply(fields)
            if applied != expected:
                raise RuntimeError(f"in-process: {applied} of {expected} rows applied")
            rates["in-process"].append(applied / seconds)

            begun = time.perf_counter()
            raw_db.execute("BEGIN IMMEDIATE")
            rows = raw_apply(raw_db, account_id, k)
            executed = time.perf_counter()
            raw_db.execute("COMMIT")
            committed = time.perf_counter()
            raw_db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # untimed, as above
            if rows != expected:
                raise RuntimeError(f"raw: {rows} of {expected} rows applied")
            rates["raw"].append(rows / (committed - begun))
            rates["raw-uncommitted"].append(rows / (executed - begun))
            print(
                "  activity: "
                + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in rates.items())
                + " rows/s",
                file=sys.stderr,
            )
    raw_db.close()
    in_process.close()
    return {k: statistics.median(v) for k, v in rates.items()}


def _figures(
    name: str, first: str, label: str, median: dict[str, float], raw: str, count: int
) -> list[Figure]:
    """The three figures of an activity case: in-process, served, end to end.

    ``first`` names the activities in the first figure, ``label`` the activity type in the
    others; ``raw`` is the baseline's statements.
    """
    raw_label = f"{raw}: BEGIN → COMMIT, no checkpoint"
    return [
        Figure(
            case=name,
            metric=f"{first}, worker in-process: stored request → COMMIT, no checkpoint"
            f" (median of {count})",
            value=median["in-process"],
            unit="rows/s",
            baseline=median["raw"],
            baseline_name=raw_label,
        ),
        Figure(
            case=name,
            metric=f"{label}, served worker: RunStartTime → RunFinishTime, before its"
            " COMMIT (median)",
            value=median["served"],
            unit="rows/s",
            baseline=median["raw-uncommitted"],
            baseline_name=f"{raw}: BEGIN → before COMMIT",
        ),
        Figure(
            case=name,
            metric=f"{label}, POST sent → COMPLETE seen (median)",
            value=median["e2e"],
            unit="rows/s",
            baseline=median["raw"],
            baseline_name=raw_label,
        ),
    ]


def _sv_add(
    run: Run,
    source: Path,
    list_ids: list[int],
    batches: list[list[tuple[str, str, str, str, str]]],
    name: str,
    label: str,
) -> list[Figure]:
    posts = [
        {"activityType": "SV_ADD", "data": _csv(batch), "lists": _list_uri(list_ids[1])}
        for batch in batches
    ]

    def raw_apply(db: sqlite3.Connection, account_id: int, k: int) -> int:
        now = int(time.time() * 1000)
        rows = [
            (account_id, e.lower(), e, first, last, city, state, now, now)
            for e, first, last, city, state in batches[k]
        ]
        db.executemany(_UPSERT, rows)
        return len(rows)

    median = _measure(run, source, posts, raw_apply)
    first = f"SV_ADD {run.rows:,}-row activities{label}"
    return _figures(name, first, f"SV_ADD{label}", median, "raw executemany upsert", len(posts))


# -- sv-remove --------------------------------------------------------------------------------

# What a remove does to one row, written plainly: off the list, then Removed when on no list
# any more (Active/Unconfirmed only), last_update_time stamped (for updatedsince).
_RAW_REMOVE = (
    "DELETE FROM membership WHERE list_id = ? AND contact_id = "
    "(SELECT id FROM contact WHERE account_id = ? AND email_key = ?)"
)
_RAW_LEAVE = (
    "UPDATE contact SET status = CASE WHEN status IN ('Active', 'Unconfirmed') AND NOT EXISTS "
    "(SELECT 1 FROM membership m WHERE m.contact_id = contact.id) THEN 'Removed' ELSE status "
    "END, last_update_time = ? WHERE account_id = ? AND email_key = ?"
)


def _members(run: Run, list_id: int) -> list[list[str]]:
    """``activities`` disjoint batches of ``rows`` addresses of members of ``list_id``,
    picked at random (every row of a remove is found)."""
    with sqlite3.connect(f"file:{run.source}?mode=ro", uri=True) as db:
        emails = [
            r[0]
            for r in db.execute(
                "SELECT c.EmailAddress FROM membership m JOIN contact c ON c.id = m.contact_id "
                "WHERE m.list_id = ? ORDER BY m.contact_id",
                (list_id,),
            )
        ]
    picked = random.Random(run.seed).sample(emails, run.activities * run.rows)
    return [picked[k * run.rows : (k + 1) * run.rows] for k in range(run.activities)]


@case("sv-remove")
def sv_remove(run: Run) -> list[Figure]:
    """REMOVE_CONTACTS_FROM_LISTS rows applied per second vs the same removes in raw SQL."""
    list_id = run.list_ids[0]  # the big list: ~97% of the account
    batches = _members(run, list_id)
    posts = [
        {
            "activityType": "REMOVE_CONTACTS_FROM_LISTS",
            "data": "Email Address\n" + "\n".join(batch),
            "lists": _list_uri(list_id),
        }
        for batch in batches
    ]

    def raw_apply(db: sqlite3.Connection, account_id: int, k: int) -> int:
        now = int(time.time() * 1000)
        keys = [e.lower() for e in batches[k]]
        db.executemany(_RAW_REMOVE, [(list_id, account_id, key) for key in keys])
        db.executemany(_RAW_LEAVE, [(now, account_id, key) for key in keys])
        return len(keys)

    median = _measure(run, run.source, posts, raw_apply)
    label = "REMOVE_CONTACTS_FROM_LISTS"
    first = f"{label} {run.rows:,}-row activities, big list"
    raw = "raw executemany: membership DELETE + contact UPDATE per row"
    return _figures("sv-remove", first, label, median, raw, len(posts))


def _peak_rss_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(match.group(1)) / 1024 if match else float("nan")


def _raw_export_rate(db_path: Path, list_id: int) -> float:
    with sqlite3.connect(db_path) as db, tempfile.TemporaryFile("w", newline="") as out:
        writer = csv.writer(out, lineterminator="\r\n")
        started = time.perf_counter()
        cursor = db.execute(
            "SELECT c.EmailAddress, c.FirstName, c.LastName, c.City, m.opt_in_time "
            "FROM membership m JOIN contact c ON c.id = m.contact_id WHERE m.list_id = ? "
            "ORDER BY c.email_key",
            (list_id,),
        )
        count = 0
        while batch := cursor.fetchmany(2000):
            writer.writerows(batch)
            count += len(batch)
        return count / (time.perf_counter() - started)


@case("export")
def export(run: Run) -> list[Figure]:
    """Export rows/s and peak RSS for a small and a big list, each in a fresh process (with
    ``--check``, one process for both)."""
    served = _copy(run.source, run.scratch / "export.db")
    figures: list[Figure] = []
    sizes = [("small list", run.list_ids[2]), ("big list", run.list_ids[0])]
    with ExitStack() as shared:
        one = shared.enter_context(serving(served)) if run.check else None
        for label, list_id in sizes:
            with ExitStack() as own:
                origin, proc = one or own.enter_context(serving(served))
                figures += _export_list(served, origin, proc, label, list_id)
    return figures


def _export_list(
    served: Path, origin: str, proc: subprocess.Popen[bytes], label: str, list_id: int
) -> list[Figure]:
    """One list's export on the server at ``origin``: its figures."""
    with _client(origin) as client:
        client.get("")  # warm: authenticated once, connections open
        before = _peak_rss_mib(proc.pid)
        response = client.post(
            "activities",
            data={
                "activityType": "EXPORT_CONTACTS",
                "listId": _list_uri(list_id),
                "columns": ["FIRST NAME", "LAST NAME", "CITY"],
                "exportOptDate": "true",
                "sortBy": "EMAIL_ADDRESS",
            },
        )
        fields = _wait(client, response.headers["location"])
        after = _peak_rss_mib(proc.pid)
        rows = int(fields["TransactionCount"])
        rate = rows / _worker_seconds(fields)
        download_started = time.perf_counter()
        size = 0
        with client.stream("GET", response.headers["location"] + ".csv") as stream:
            for chunk in stream.iter_bytes():
                size += len(chunk)
        download = size / (time.perf_counter() - download_started) / 2**20
        after_download = _peak_rss_mib(proc.pid)
    raw = _raw_export_rate(served, list_id)
    print(
        f"  {label}: {rows:,} rows, {rate:,.0f} rows/s, peak RSS {before:.0f} → {after:.0f}"
        f" → {after_download:.0f} MiB, download {download:.0f} MiB/s",
        file=sys.stderr,
    )
    return [
        Figure(
            case="export",
            metric=f"{label}: {rows:,} rows written",
            value=rate,
            unit="rows/s",
            baseline=raw,
            baseline_name="sqlite3 → csv.writer in-process",
        ),
        Figure(
            case="export",
            metric=f"{label}: server peak RSS after export and download",
            value=after_download,
            unit="MiB",
            baseline=before,
            baseline_name="before the export",
        ),
        Figure(case="export", metric=f"{label}: download", value=download, unit="MiB/s"),
    ]


def main(argv: list[str] | None = None, *, check: bool = False) -> int:
    """Run the chosen cases and print their figures (``check``: verify them, see harness)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--case", action="append", choices=sorted(CASES))
    parser.add_argument("--contacts", type=int, default=1_000_000, help="account size")
    parser.add_argument("--activities", type=int, default=5, help="activities per case")
    parser.add_argument("--rows", type=int, default=40_000, help="rows per activity")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the generators")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("TMPDIR", "/tmp")) / "bulkops-bench",
        help="where seeded databases are kept (default %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_check(parser)
    args = parser.parse_args(argv)
    if args.check:
        return _check(args)
    args.cache.mkdir(parents=True, exist_ok=True)
    source, list_ids = prepare_db(args.cache, args.contacts, args.seed, fresh=False)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(dir=args.cache, prefix="activities-") as scratch:
        run = Run(
            source=source,
            scratch=Path(scratch),
            list_ids=list_ids,
            contacts=args.contacts,
            seed=args.seed,
            activities=args.activities,
            rows=args.rows,
            check=check,
        )
        for name in args.case or sorted(CASES, reverse=True):
            print(f"running {name} ...", file=sys.stderr)
            figures.extend(CASES[name](run))
    if check:
        check_figures(figures)
    if args.json:
        meta = {
            "contacts": args.contacts,
            "rows": args.rows,
            "activities": args.activities,
            "seed": args.seed,
            "cpus": os.cpu_count(),
        }
        out = [{**attrs.asdict(f), "ratio": f.ratio} for f in figures]
        print(json.dumps({"meta": meta, "figures": out}, indent=2))
    else:
        print_table(figures)
    return 0


def _check(args: argparse.Namespace) -> int:
    """Every case at small sizes in a scratch cache (``--check``)."""
    with tempfile.TemporaryDirectory(prefix="bench-activities-check-") as cache:
        argv = ["--contacts", "2000", "--activities", "2", "--rows", "500", "--cache", cache]
        argv += ["--json"] if args.json else []
        return main(argv, check=True)


if __name__ == "__main__":
    sys.exit(main())
