"""The server on PostgreSQL (issue 14): apply rate, members feed over 1 vs 2 processes, import.

The script runs on a throwaway PostgreSQL cluster of its own: unless ``BULKOPS_TEST_POSTGRES``
already names one, it runs itself again under ``.ci/with-postgres`` (``initdb`` into a
temporary directory, ``pg_ctl start`` on a free port, deleted at exit). Without PostgreSQL
binaries it prints why and exits with status 77 (``tests/test_benchmarks.py`` skips it) —
or 1 under ``BULKOPS_REQUIRE_POSTGRES=1``.

Cases (each prints the project's figure, a baseline measured in the same run, the ratio):

* ``sv-add`` — ``--activities`` SV_ADD activities of ``--rows`` rows (half update existing
  contacts of a ``--apply-contacts`` account, half add new ones; 5 columns; one list),
  applied by the store as the worker applies them (load the stored request, validate, COPY,
  upsert, memberships, complete, **COMMIT**). Baseline: the same rows into a copy of the same
  database (``CREATE DATABASE … TEMPLATE``) with ``BEGIN`` → ``COPY`` into a temporary table
  → one ``INSERT … ON CONFLICT DO UPDATE`` into ``contact`` → ``COMMIT``, on a plain psycopg
  connection: no validation, no memberships, no activity. Target ≥ 0.7×. Best of the
  activities, both sides.
* ``members-feed`` — ``--walkers`` clients at once each walk ``--pages`` pages of the members
  feed of the big list of a ``--contacts`` account (following ``next`` links, a new
  connection per walker), against ``bulkops serve --processes 2``. Baseline: the same
  against ``--processes 1``. Pages per second, all walkers together.
* ``import`` — ``bulkops import FILE --list Bench --create-lists`` of ``--import-rows`` rows
  (``bench_engine.input_file``) as its own process, the whole command's wall time, against
  ``bulkops serve`` on a fresh PostgreSQL database. Baseline: the same against a fresh SQLite
  database. Lower is better (ratio: SQLite time / PostgreSQL time).

Usage::

    python benchmarks/bench_pg.py                     # all cases at the README's sizes
    python benchmarks/bench_pg.py --case sv-add --apply-contacts 100000 --json
    python benchmarks/bench_pg.py --check             # seconds: the test suite's run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import httpx
import psycopg
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_engine import input_file
from bench_server import API_KEY, PASSWORD, USER, add_account_and_lists
from harness import Figure, add_check, check_figures, machine, print_table, to_json

from bulkops.server.activity_queries import load_request
from bulkops.server.datafile import ActivityRequest, encode_request
from bulkops.server.pg_schema import migrate
from bulkops.server.pg_storage import PgStorage

__all__ = ["CASES", "main"]

#: Exit status when PostgreSQL is missing and that is allowed (the suite reads it as a skip).
SKIPPED = 77

ROOT = Path(__file__).resolve().parent.parent
WITH_POSTGRES = ROOT / ".ci" / "with-postgres"
FIELDS = ("EmailAddress", "FirstName", "LastName", "City", "StateCode")
_STATES = ("MA", "NY", "CA", "TX", "ON", "QC", "BC", "WA", "IL", "FL")
_NEXT = re.compile(rb'<link href="([^"]+)" rel="next" />')


def _admin(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True)


def _named(url: str, name: str) -> str:
    return urlsplit(url)._replace(path="/" + name).geturl()


@attrs.define
class Cluster:
    """The cluster's URL (``BULKOPS_TEST_POSTGRES``) and the databases made on it."""

    url: str
    made: list[str] = attrs.field(factory=list)

    def database(self, name: str, *, template: str | None = None) -> str:
        """A new database ``name`` (migrated, or a copy of ``template``): its URL."""
        with _admin(self.url) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            copy = f" TEMPLATE {template}" if template else ""
            admin.execute(f"CREATE DATABASE {name}{copy}")
        self.made.append(name)
        url = _named(self.url, name)
        if template is None:
            with _admin(url) as conn:
                migrate(conn)
        return url

    def drop_all(self) -> None:
        with _admin(self.url) as admin:
            for name in self.made:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _seeded(cluster: Cluster, name: str, contacts: int, seed: int, home: Path) -> list[int]:
    """Database ``name``: the benchmark account and its lists, with ``contacts`` contacts
    made by set-based SQL (``generate_series``: ``bulkops seed`` inserts row by row, about
    150 contacts/s on PostgreSQL on this machine); ~97% on the first list, ~30% on each
    other, 1% Do Not Mail. Returns the lists' ids."""
    url = cluster.database(name)
    store = PgStorage(url, data_dir=home)
    try:
        account_id, list_ids = add_account_and_lists(store.connection())  # type: ignore[arg-type]
    finally:
        store.close()
    started = time.perf_counter()
    with _admin(url) as conn, conn.transaction():
        conn.execute(
            "INSERT INTO contact (account_id, email_key, emailaddress, firstname, lastname,"
            " city, statecode, postalcode, status, opt_in_source, opt_in_time, insert_time,"
            " last_update_time)"
            " SELECT %(a)s, 'c' || i || '.' || %(s)s || '@bench.example',"
            " 'c' || i || '.' || %(s)s || '@Bench.example',"
            " (ARRAY['Ana','Bo','Zoë','José','Li','Mary','Chen','Olu'])[1 + i %% 8],"
            " 'Last' || (i * 7919 %% 100003),"
            " (ARRAY['Boston','Québec','Austin','Reno'])[1 + i %% 4],"
            " (ARRAY['MA','QC','TX','NV'])[1 + i %% 4], lpad((i %% 99999)::text, 5, '0'),"
            " CASE WHEN i %% 100 = 7 THEN 'Do Not Mail' ELSE 'Active' END,"
            " 'ACTION_BY_CUSTOMER', 1700000000000 + i, 1700000000000 + i, 1700000000000 + i"
            " FROM generate_series(1::bigint, %(n)s) AS i",
            {"a": account_id, "s": seed, "n": contacts},
        )
        for k, list_id in enumerate(list_ids):
            share = "c.id %% 33 <> 0" if k == 0 else f"(c.id * {k + 7}) %% 10 < 3"
            conn.execute(
                "INSERT INTO membership (account_id, list_id, contact_id, opt_in_source,"
                " opt_in_time) SELECT c.account_id, %s, c.id, 'ACTION_BY_CUSTOMER',"
                f" c.opt_in_time FROM contact c WHERE c.status = 'Active' AND {share}"
                " ORDER BY c.id",
                (list_id,),
            )
    with _admin(url) as conn:
        conn.execute("VACUUM ANALYZE")
        (members,) = conn.execute("SELECT count(*) FROM membership").fetchone() or (0,)
    print(
        f"seeded {contacts:,} contacts, {members:,} memberships on PostgreSQL in"
        f" {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    return list_ids


# -- sv-add ----------------------------------------------------------------------------------


def _batches(url: str, args: argparse.Namespace) -> list[list[tuple[str, ...]]]:
    """``activities`` batches of ``rows`` rows: half existing contacts, half new ones."""
    rng = random.Random(args.seed)
    with _admin(url) as conn:
        existing_all = [
            r[0]
            for r in conn.execute(
                "SELECT emailaddress FROM contact WHERE status <> 'Do Not Mail' ORDER BY id"
            )
        ]
    batches = []
    for k in range(args.activities):
        existing = rng.sample(existing_all, min(len(existing_all), args.rows // 2))
        new = [f"fresh{k}.{i}@bench-new.example" for i in range(args.rows - len(existing))]
        emails = existing + new
        rng.shuffle(emails)
        batches.append(
            [
                (e, f"First{i}", f"Last{k}", f"City{i % 211}", _STATES[i % len(_STATES)])
                for i, e in enumerate(emails)
            ]
        )
    return batches


def _apply_seconds(url: str, home: Path, list_id: int, batch: list[tuple[str, ...]]) -> float:
    """The store's apply of one SV_ADD (stored request → COMMIT), timed."""
    store = PgStorage(url, data_dir=home)
    try:
        request = ActivityRequest(
            type="SV_ADD",
            list_ids=(list_id,),
            fields=FIELDS,
            columns=[list(column) for column in zip(*batch, strict=True)],
        )

        async def run() -> float:
            row = await store.create_activity(1, request, encode_request(request), None)
            claim = await store.claim_activity("bench:1:x", int(time.time() * 1000), 600.0)
            assert claim is not None
            assert claim.activity_id == row.id
            started = time.perf_counter()
            stored = await store.run(load_request, row.id)
            count, errors = await store.apply_activity(row.id, 1, stored)
            elapsed = time.perf_counter() - started
            assert (count, errors) == (len(batch), 0), (count, errors)
            return elapsed

        return trio.run(run)
    finally:
        store.close()


def _raw_upsert_seconds(url: str, batch: list[tuple[str, ...]]) -> float:
    """BEGIN → COPY into a temporary table → INSERT … ON CONFLICT into contact → COMMIT."""
    with psycopg.connect(url) as conn:
        now = int(time.time() * 1000)
        started = time.perf_counter()
        conn.execute(
            "CREATE TEMP TABLE raw (email_key TEXT, emailaddress TEXT, firstname TEXT,"
            " lastname TEXT, city TEXT, statecode TEXT) ON COMMIT DROP"
        )
        with conn.cursor().copy("COPY raw FROM STDIN") as copy:
            for row in batch:
                copy.write_row((row[0].lower(), *row))
        conn.execute(
            "INSERT INTO contact (account_id, email_key, emailaddress, firstname, lastname,"
            " city, statecode, status, opt_in_source, opt_in_time, insert_time,"
            " last_update_time) SELECT 1, email_key, emailaddress, firstname, lastname, city,"
            " statecode, 'Active', 'ACTION_BY_CUSTOMER', %s, %s, %s FROM raw"
            " ON CONFLICT (account_id, email_key) DO UPDATE SET"
            " emailaddress = excluded.emailaddress, firstname = excluded.firstname,"
            " lastname = excluded.lastname, city = excluded.city,"
            " statecode = excluded.statecode, last_update_time = excluded.last_update_time",
            (now, now, now),
        )
        conn.commit()
        return time.perf_counter() - started


def case_sv_add(cluster: Cluster, args: argparse.Namespace, work: Path) -> list[Figure]:
    list_ids = _seeded(cluster, "bench_apply_src", args.apply_contacts, args.seed, work)
    source = _named(cluster.url, "bench_apply_src")
    batches = _batches(source, args)
    ours_url = cluster.database("bench_apply_ours", template="bench_apply_src")
    raw_url = cluster.database("bench_apply_raw", template="bench_apply_src")
    ours, raw = [], []
    for batch in batches:  # alternated, so that both sides meet the same machine
        ours.append(_apply_seconds(ours_url, work, list_ids[0], batch))
        raw.append(_raw_upsert_seconds(raw_url, batch))
    rows = args.rows
    return [
        Figure(
            case=f"sv-add, {rows:,}-row activities, {args.apply_contacts:,}-contact account",
            metric="apply rate, stored request → COMMIT (validate, COPY, upsert, members)",
            value=rows / min(ours),
            unit="rows/s",
            baseline=rows / min(raw),
            baseline_label="raw COPY + INSERT … ON CONFLICT → COMMIT",
        )
    ]


# -- members-feed ----------------------------------------------------------------------------


@contextlib.contextmanager
def _serving(url: str, home: Path, *extra: str) -> Iterator[str]:
    """``bulkops serve`` on the database (its URL through BULKOPS_DB); yields its origin."""
    env = {
        **os.environ,
        "BULKOPS_DB": url,
        "BULKOPS_HOME": str(home),
        "BULKOPS_SERVE_ACCOUNTS": f"{USER}:{PASSWORD}:{API_KEY}",
    }
    log = home / f"serve-{time.monotonic_ns()}.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bulkops", "serve", "--port", "0", *extra],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        deadline = time.monotonic() + 120
        # With --processes N > 1, wait until every child serves (each logs "[pid] serving").
        children = int(extra[extra.index("--processes") + 1]) if "--processes" in extra else 0
        children = children if children > 1 else 0
        while True:
            text = log.read_text()
            found = re.search(r"serving the API at (http://\S+?)/ws/", text)
            if found and len(re.findall(r"\[\d+\] serving", text)) >= children:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("bulkops serve did not start:\n" + text)
            time.sleep(0.05)
        yield found.group(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _walk(origin: str, list_id: int, pages: int, walkers: int) -> float:
    """``walkers`` clients at once each following ``pages`` next links: pages per second."""
    first = f"{origin}/ws/customers/{USER}/lists/{list_id}/members"
    auth = httpx.BasicAuth(f"{API_KEY}%{USER}", PASSWORD)
    failures: list[BaseException] = []

    def walker() -> None:
        try:
            with httpx.Client(auth=auth, timeout=120) as http:
                url = first
                for _ in range(pages):
                    response = http.get(url)
                    response.raise_for_status()
                    found = _NEXT.search(response.content[:4096])
                    # A short feed (--check) starts again from the top.
                    url = first if found is None else origin + found.group(1).decode()
        except BaseException as exc:  # reported below, in the main thread
            failures.append(exc)

    threads = [threading.Thread(target=walker) for _ in range(walkers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise failures[0]
    return pages * walkers / elapsed


def case_members_feed(cluster: Cluster, args: argparse.Namespace, work: Path) -> list[Figure]:
    list_ids = _seeded(cluster, "bench_feed", args.contacts, args.seed, work)
    url = _named(cluster.url, "bench_feed")
    rates = {}
    for processes in (1, 2):
        with _serving(url, work, "--processes", str(processes), "--no-worker") as origin:
            _walk(origin, list_ids[0], 2, args.walkers)  # warm both processes' caches
            rates[processes] = _walk(origin, list_ids[0], args.pages, args.walkers)
    return [
        Figure(
            case=f"members-feed, {args.contacts:,}-contact account",
            metric=f"{args.walkers} walkers × {args.pages:,} pages of 50, serve --processes 2",
            value=rates[2],
            unit="pages/s",
            baseline=rates[1],
            baseline_label="--processes 1",
        )
    ]


# -- import ----------------------------------------------------------------------------------


def _import_seconds(db: str, home: Path, source: Path) -> tuple[float, dict[str, int]]:
    """``bulkops import`` (the whole command) against ``bulkops serve`` on ``db``: its wall
    time and the report's counts."""
    home.mkdir(parents=True, exist_ok=True)
    with _serving(db, home) as origin:
        env = {
            **os.environ,
            "BULKOPS_HOME": str(home),
            "BULKOPS_USERNAME": USER,
            "BULKOPS_API_KEY": API_KEY,
            "BULKOPS_PASSWORD": PASSWORD,
        }
        started = time.perf_counter()
        done = subprocess.run(
            [
                *(sys.executable, "-m", "bulkops", "import", str(source), "--list", "Bench"),
                *("--create-lists", "--server", origin, "--run-dir", str(home / "run"), "--quiet"),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - started
    if done.returncode not in (0, 2):  # 2: some rows rejected (the generator's bad ones)
        raise RuntimeError(f"bulkops import failed ({done.returncode}):\n{done.stderr}")
    counts: dict[str, int] = json.loads((home / "run" / "report.json").read_text())["counts"]
    return elapsed, counts


def case_import(cluster: Cluster, args: argparse.Namespace, work: Path) -> list[Figure]:
    # --check: a file of its own (another run at once may be writing the shared cache's)
    source = input_file(args.import_rows, args.seed, **({"cache": work} if args.check else {}))
    pg_url = cluster.database("bench_import")
    sqlite_seconds, sqlite_counts = _import_seconds(
        str(work / "import-sqlite" / "server.db"), work / "import-sqlite", source
    )
    pg_seconds, pg_counts = _import_seconds(pg_url, work / "import-pg", source)
    if pg_counts != sqlite_counts or pg_counts["pending"]:
        raise RuntimeError(f"the imports differ: {pg_counts} vs {sqlite_counts}")
    return [
        Figure(
            case=f"import, {args.import_rows:,} rows",
            metric="bulkops import, whole command, against bulkops serve on PostgreSQL",
            value=pg_seconds,
            unit="s",
            baseline=sqlite_seconds,
            baseline_label="on SQLite",
            higher_is_better=False,
        )
    ]


CaseFn = Callable[[Cluster, argparse.Namespace, Path], list[Figure]]
CASES: dict[str, CaseFn] = {
    "sv-add": case_sv_add,
    "members-feed": case_members_feed,
    "import": case_import,
}


def _case_in(name: str, cluster: Cluster, args: argparse.Namespace, scratch: Path) -> list[Figure]:
    """Case ``name`` in a directory of its own under ``scratch``."""
    work = scratch / name
    work.mkdir()
    return CASES[name](cluster, args, work)


# -- the cluster -----------------------------------------------------------------------------


def _under_a_cluster(argv: list[str]) -> int | None:
    """Run this script again under ``.ci/with-postgres`` unless a cluster is given; None
    when one is (go on here), else the exit status to return."""
    if os.environ.get("BULKOPS_TEST_POSTGRES"):
        return None
    bindir = Path(os.environ.get("BULKOPS_PG_BINDIR", "/usr/lib/postgresql/15/bin"))
    if not (bindir / "initdb").exists() or shutil.which("bash") is None:
        required = os.environ.get("BULKOPS_REQUIRE_POSTGRES") == "1"
        print(
            f"bench_pg: no PostgreSQL binaries in {bindir} (set BULKOPS_PG_BINDIR): "
            + ("failed, BULKOPS_REQUIRE_POSTGRES=1" if required else "skipped"),
            file=sys.stderr,
        )
        return 1 if required else SKIPPED
    return subprocess.run(
        [str(WITH_POSTGRES), sys.executable, str(Path(__file__).resolve()), *argv],
        check=False,
    ).returncode


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--case", choices=sorted(CASES), action="append")
    parser.add_argument("--rows", type=int, default=40_000, help="rows per SV_ADD activity")
    parser.add_argument("--activities", type=int, default=3)
    parser.add_argument("--apply-contacts", type=int, default=200_000)
    parser.add_argument("--contacts", type=int, default=1_000_000, help="members-feed account")
    parser.add_argument("--pages", type=int, default=500, help="pages per walker")
    parser.add_argument("--walkers", type=int, default=4)
    parser.add_argument("--import-rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--json", action="store_true")
    add_check(parser)
    args = parser.parse_args(argv)
    status = _under_a_cluster(argv)
    if status is not None:
        return status
    if args.check:
        args.rows, args.activities, args.apply_contacts = 400, 1, 500
        args.contacts, args.pages, args.walkers, args.import_rows = 300, 3, 2, 2_000
    cluster = Cluster(os.environ["BULKOPS_TEST_POSTGRES"])
    figures: list[Figure] = []
    names = args.case or list(CASES)
    with tempfile.TemporaryDirectory(prefix="bulkops-bench-pg-") as scratch:
        try:
            if args.check:  # the cases at once (own databases, servers, dirs): a short run
                with ThreadPoolExecutor(len(names)) as pool:
                    runs = [
                        pool.submit(_case_in, name, cluster, args, Path(scratch)) for name in names
                    ]
                    for run in runs:
                        figures += run.result()
            else:
                for name in names:
                    figures += _case_in(name, cluster, args, Path(scratch))
        finally:
            cluster.drop_all()
    if args.check:
        check_figures(figures)
    if args.json:
        print(to_json(figures, **machine()))
    else:
        print_table(figures)
        print(f"\nload average: {os.getloadavg()[0]:.2f} (2-core machine shared)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
