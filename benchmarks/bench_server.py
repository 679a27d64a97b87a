"""Benchmarks of the API server: feeds over real HTTP on an account of a million contacts.

The account is made once by :func:`bulkops.server.seed.seed_contacts` (seeded, so every run
measures the same data) and cached as a database file per ``(contacts, seed)``; the server
runs as a ``bulkops serve`` subprocess on loopback and the benchmark is its client (sync
httpx, one keep-alive connection, requests one after another, as a feed walker does).

Every case prints the project's figure, a baseline measured in the same run, and the ratio
(design.md §2.8):

* ``members-walk`` — walk the whole members feed of the big list by following ``next`` links:
  pages/s and entries/s; then the latency of the first page, of the real last page (however
  many entries it has; the row says how many) and of the last full page (the same 50 entries
  as the first), median of repeated GETs. Baseline: the same page position paged by
  ``OFFSET`` in SQLite directly — what keyset paging avoids. Target: last page within 2× of
  the first.
* ``email-search`` — latency of ``GET /contacts?email=`` for random existing addresses (and of
  a 50-address search). Baseline: ``GET /`` (service document), the fixed cost of a request.
* ``contacts-depth`` — first vs last page of ``GET /contacts`` and of an ``updatedsince`` feed,
  reached by a token of the last keyset (cost must not grow with position).

More cases register themselves with :func:`case` (``@case("name")``); ``--case`` picks some.

Usage::

    python benchmarks/bench_server.py                      # all cases, 1,000,000 contacts
    python benchmarks/bench_server.py --case email-search --contacts 100000 --json
    python benchmarks/bench_server.py --check              # seconds: the test suite's smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import add_check, check_figures

from bulkops.server.auth import AccountSpec, Secret, ensure_account
from bulkops.server.paging import encode_token
from bulkops.server.seed import seed_contacts
from bulkops.server.store import Store, now_ms, write_tx

__all__ = [
    "API_KEY",
    "CASES",
    "PASSWORD",
    "USER",
    "Bench",
    "Figure",
    "add_account_and_lists",
    "case",
    "main",
    "prepare_db",
    "print_table",
    "serving",
]

USER, PASSWORD, API_KEY = "bench", "bench-password", "bench-key"
LISTS = ("Newsletter", "Customers", "Events")


@attrs.frozen(kw_only=True)
class Figure:
    """One measured figure, with its baseline from the same run."""

    case: str
    metric: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""

    @property
    def ratio(self) -> float | None:
        """value / baseline."""
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline


@attrs.define
class Bench:
    """What a case gets: the running server, an authenticated client, the database."""

    origin: str
    client: httpx.Client
    db_path: Path
    contacts: int
    list_ids: list[int]
    seed: int
    samples: int = 50  # GETs per latency figure (fewer with --check)

    def url(self, path: str) -> str:
        """Absolute URL of a path below the account (or of a root-relative href)."""
        if path.startswith("/"):
            return self.origin + path
        return f"{self.origin}/ws/customers/{USER}/{path}"

    def get(self, url: str) -> httpx.Response:
        """GET, asserting 200."""
        response = self.client.get(url)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: {response.status_code} {response.text[:200]}")
        return response

    def timed(self, url: str, repeat: int) -> list[float]:
        """Seconds per GET of ``url``, ``repeat`` times (after one warm-up GET)."""
        self.get(url)
        found = []
        for _ in range(repeat):
            started = time.perf_counter()
            self.get(url)
            found.append(time.perf_counter() - started)
        return found

    def sql(self) -> sqlite3.Connection:
        """A read-only connection to the server's database (for baselines)."""
        return sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)


CaseFn = Callable[[Bench], list[Figure]]
CASES: dict[str, CaseFn] = {}


def case(name: str) -> Callable[[CaseFn], CaseFn]:
    """Register a benchmark case under ``name``."""

    def register(fn: CaseFn) -> CaseFn:
        CASES[name] = fn
        return fn

    return register


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def _next_href(body: bytes) -> str | None:
    # Cheaper than a parse; the feed head is small and comes first.
    match = re.search(rb'<link href="([^"]+)" rel="next" />', body[:4096])
    return None if match is None else match.group(1).decode()


# -- cases ----------------------------------------------------------------------------------


@case("members-walk")
def members_walk(bench: Bench) -> list[Figure]:
    """Walk the biggest members feed; first vs last page; keyset vs OFFSET."""
    list_id = bench.list_ids[0]
    first_url = bench.url(f"lists/{list_id}/members")
    url: str | None = first_url
    pages = entries = first_entries = last_entries = 0
    last_url = last_full_url = first_url
    started = time.perf_counter()
    while url is not None:
        body = bench.get(url).content
        pages += 1
        found = body.count(b"<entry ")
        entries += found
        first_entries = first_entries or found
        if found == 50:
            last_full_url = url  # the last full page: same work as the first
        last_url, last_entries = url, found  # the real last page, however short
        href = _next_href(body)
        url = None if href is None else bench.url(href)
    elapsed = time.perf_counter() - started
    n = bench.samples
    first = bench.timed(first_url, n)
    last_full = bench.timed(last_full_url, n)
    last = bench.timed(last_url, n)

    with bench.sql() as db:
        (count,) = db.execute("SELECT member_count FROM list WHERE id = ?", (list_id,)).fetchone()
        offset = max(count - 50, 0)
        (before,) = db.execute(
            "SELECT contact_id FROM membership WHERE list_id = ? ORDER BY contact_id DESC"
            " LIMIT 1 OFFSET ?",
            (list_id, max(offset - 1, 0)),
        ).fetchone()

        def keyset() -> None:
            db.execute(
                "SELECT contact_id FROM membership WHERE list_id = ? AND contact_id < ?"
                " ORDER BY contact_id DESC LIMIT 51",
                (list_id, before),
            ).fetchall()

        def by_offset() -> None:
            db.execute(
                "SELECT contact_id FROM membership WHERE list_id = ? ORDER BY contact_id DESC"
                " LIMIT 51 OFFSET ?",
                (list_id, offset),
            ).fetchall()

        keyset_s = _best_of(keyset, 20)
        offset_s = _best_of(by_offset, 5)
    name = "members-walk"
    first_label = f"first page, {first_entries} entries"
    return [
        Figure(
            case=name,
            metric=f"whole members feed: {pages:,} pages, {entries:,} entries",
            value=pages / elapsed,
            unit="pages/s",
        ),
        Figure(case=name, metric="same walk", value=entries / elapsed, unit="entries/s"),
        Figure(
            case=name,
            metric=f"last page, {last_entries} entries (HTTP, median of {n})",
            value=_median_ms(last),
            unit="ms",
            baseline=_median_ms(first),
            baseline_name=first_label,
        ),
        Figure(
            case=name,
            metric=f"last full page, 50 entries (HTTP, median of {n})",
            value=_median_ms(last_full),
            unit="ms",
            baseline=_median_ms(first),
            baseline_name=first_label,
        ),
        Figure(
            case=name,
            metric="last page query, keyset (SQL, best of 20)",
            value=keyset_s * 1000,
            unit="ms",
            baseline=offset_s * 1000,
            baseline_name=f"`LIMIT 51 OFFSET {offset}`, best of 5",
        ),
    ]


def _best_of(fn: Callable[[], None], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


@case("email-search")
def email_search(bench: Bench) -> list[Figure]:
    """?email= latency for random existing addresses, one and fifty at a time."""
    rng = random.Random(bench.seed)
    with bench.sql() as db:
        (top,) = db.execute("SELECT max(id) FROM contact").fetchone()
        ids = [rng.randrange(1, top + 1) for _ in range(6 * bench.samples)]
        emails = [
            row[0]
            for cid in ids
            for row in db.execute("SELECT EmailAddress FROM contact WHERE id = ?", (cid,))
        ]
    service = bench.timed(bench.url(""), len(emails))
    single = []
    for email in emails:
        started = time.perf_counter()
        response = bench.client.get(bench.url("contacts"), params={"email": email.upper()})
        single.append(time.perf_counter() - started)
        if response.status_code != 200 or response.content.count(b"<entry ") != 1:
            raise RuntimeError(f"search for {email} did not find it")
    fifty = []
    for start in range(0, len(emails) - 49, 50):
        batch = emails[start : start + 50]
        begun = time.perf_counter()
        response = bench.client.get(bench.url("contacts"), params={"email": batch})
        fifty.append(time.perf_counter() - begun)
        if response.content.count(b"<entry ") != len(set(e.lower() for e in batch)):
            raise RuntimeError("a 50-address search missed some")
    name = "email-search"
    return [
        Figure(
            case=name,
            metric=f"`?email=` one address (median of {len(single)})",
            value=_median_ms(single),
            unit="ms",
            baseline=_median_ms(service),
            baseline_name="`GET /`, service doc",
        ),
        Figure(
            case=name,
            metric="`?email=` one address (p95)",
            value=sorted(single)[int(len(single) * 0.95)] * 1000,
            unit="ms",
        ),
        Figure(
            case=name,
            metric=f"`?email=` fifty addresses (median of {len(fifty)})",
            value=_median_ms(fifty),
            unit="ms",
            baseline=_median_ms(single),
            baseline_name="one address",
        ),
    ]


@case("contacts-depth")
def contacts_depth(bench: Bench) -> list[Figure]:
    """First vs last page of /contacts and of an updatedsince feed."""
    with bench.sql() as db:
        ids = [r[0] for r in db.execute("SELECT id FROM contact ORDER BY id LIMIT 51")]
        (t, cid) = db.execute(
            "SELECT last_update_time, id FROM contact WHERE status = 'Active'"
            " ORDER BY last_update_time DESC, id DESC LIMIT 1 OFFSET 50"
        ).fetchone()
    last_contacts = bench.url(f"contacts?next={encode_token('contacts', ids[-1])}")
    since = "updatedsince=2000-01-01T00:00:00.000Z&listtype=active"
    first_updated = bench.url(f"contacts?{since}")
    last_updated = bench.url(f"contacts?{since}&next={encode_token('updated', t, cid)}")
    name = "contacts-depth"
    return [
        Figure(
            case=name,
            metric=f"`/contacts` last page (median of {bench.samples})",
            value=_median_ms(bench.timed(last_contacts, bench.samples)),
            unit="ms",
            baseline=_median_ms(bench.timed(bench.url("contacts"), bench.samples)),
            baseline_name="first page",
        ),
        Figure(
            case=name,
            metric=f"`updatedsince` last page (median of {bench.samples})",
            value=_median_ms(bench.timed(last_updated, bench.samples)),
            unit="ms",
            baseline=_median_ms(bench.timed(first_updated, bench.samples)),
            baseline_name="first page",
        ),
    ]


# -- the account and the server -------------------------------------------------------------


def add_account_and_lists(db: sqlite3.Connection) -> tuple[int, list[int]]:
    """The benchmark account and its :data:`LISTS` in a new database: the account's id and
    the lists' ids."""
    account, _created = ensure_account(
        db, AccountSpec(username=USER, password=Secret(PASSWORD), api_key=Secret(API_KEY))
    )
    with write_tx(db):
        for name in LISTS:
            db.execute(
                "INSERT INTO list (account_id, name, short_name, updated) VALUES (?, ?, ?, ?)",
                (account.id, name, name, now_ms()),
            )
    return account.id, [r[0] for r in db.execute("SELECT id FROM list ORDER BY id")]


def prepare_db(cache: Path, contacts: int, seed: int, *, fresh: bool) -> tuple[Path, list[int]]:
    """The database of the benchmark account, made (and cached) when missing.

    Returns:
        The database path and the ids of its lists (the first holds ~97% of contacts).
    """
    path = cache / f"bench-{contacts}-{seed}.db"
    if fresh:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    if not path.exists():
        partial = path.with_suffix(".partial")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{partial}{suffix}").unlink(missing_ok=True)
        store = Store(partial)
        db = store.connection()
        account_id, ids = add_account_and_lists(db)
        report = seed_contacts(db, account_id, contacts, lists=ids, seed=seed)
        print(
            f"seeded {report.contacts:,} contacts, {report.memberships:,} memberships"
            f" in {report.seconds:.1f} s ({report.rate:,.0f} contacts/s)",
            file=sys.stderr,
        )
        db.execute("ANALYZE")
        # Leave WAL mode so the file is complete on its own before it is renamed (the
        # server turns WAL back on when it opens it).
        (mode,) = db.execute("PRAGMA journal_mode=DELETE").fetchone()
        store.close()
        if mode != "delete" or Path(f"{partial}-wal").exists():
            raise RuntimeError(f"could not finish {partial} (journal mode {mode})")
        os.replace(partial, path)
    with sqlite3.connect(path) as db:
        ids = [r[0] for r in db.execute("SELECT id FROM list ORDER BY id")]
    return path, ids


@contextmanager
def serving(db_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``bulkops serve`` on the database, port 0, logging (at its default level) to a file
    beside it; yields its origin and process."""
    env = {**os.environ, "BULKOPS_SERVE_ACCOUNTS": f"{USER}:{PASSWORD}:{API_KEY}"}
    log = db_path.with_suffix(".log")
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bulkops", "serve", "--port", "0", "--db", str(db_path)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            found = re.search(r"serving the API at (http://\S+?)/ws/", log.read_text())
            if found:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("bulkops serve did not start:\n" + log.read_text())
            time.sleep(0.05)
        yield found.group(1), proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- reporting ------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 0.1:
        return f"{value:.2f}"
    return f"{value:.2g}"  # 0.014 ms, not 0.01


def print_table(figures: list[Figure], out: Any = sys.stdout) -> None:
    """A Markdown table: case, metric, value, baseline, vs."""
    print("| case | metric | value | baseline | vs. |", file=out)
    print("|---|---|---:|---:|---:|", file=out)
    for fig in figures:
        base = (
            "" if fig.baseline is None else f"{_fmt(fig.baseline)} {fig.unit} ({fig.baseline_name})"
        )
        ratio = "" if fig.ratio is None else f"{_fmt(fig.ratio)}×"
        print(
            f"| {fig.case} | {fig.metric} | {_fmt(fig.value)} {fig.unit} | {base} | {ratio} |",
            file=out,
        )


def main(argv: list[str] | None = None) -> int:
    """Run the chosen cases and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    import bench_activities  # its cases (SV_ADD apply rate, exports) belong to this table too

    activity_cases = set(bench_activities.CASES)
    parser.add_argument(
        "--case",
        action="append",
        choices=sorted(set(CASES) | activity_cases),
        help="a case to run (repeatable; default: all, the activity cases included)",
    )
    parser.add_argument("--contacts", type=int, default=1_000_000, help="account size")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the generator")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("TMPDIR", "/tmp")) / "bulkops-bench",
        help="where seeded databases are kept (default %(default)s)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="re-seed even if cached (never while another benchmark uses the cache)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_check(parser)
    args = parser.parse_args(argv)
    wanted = args.case or [*sorted(CASES), *sorted(activity_cases)]
    samples = 50
    cleanup = ExitStack()
    if args.check:  # the server cases only: bench_activities.py has its own --check
        wanted, args.contacts, samples = sorted(CASES), 2_000, 10
        args.cache = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
    server_cases = [c for c in wanted if c in CASES]
    for name in (c for c in wanted if c in activity_cases):
        extra = ["--json"] if args.json else []
        bench_activities.main(["--case", name, "--contacts", str(args.contacts), *extra])
    if not server_cases:
        return 0
    args.cache.mkdir(parents=True, exist_ok=True)
    db_path, list_ids = prepare_db(args.cache, args.contacts, args.seed, fresh=args.fresh)
    figures: list[Figure] = []
    with cleanup, serving(db_path) as (origin, _proc):
        auth = httpx.BasicAuth(f"{API_KEY}%{USER}", PASSWORD)
        with httpx.Client(auth=auth, timeout=60) as client:
            bench = Bench(
                origin=origin,
                client=client,
                db_path=db_path,
                contacts=args.contacts,
                list_ids=list_ids,
                seed=args.seed,
                samples=samples,
            )
            for name in server_cases:
                print(f"running {name} ...", file=sys.stderr)
                figures.extend(CASES[name](bench))
    if args.check:
        check_figures(figures)
    if args.json:
        meta = {"contacts": args.contacts, "seed": args.seed, "cpus": os.cpu_count()}
        rows = [{**attrs.asdict(f), "ratio": f.ratio} for f in figures]
        print(json.dumps({"meta": meta, "figures": rows}, indent=2))
    else:
        print_table(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
