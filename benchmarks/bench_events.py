"""Benchmarks of campaign events: seeding a million events, and exporting a campaign's opens.

One fresh database per run (the API shows the last 90 days, so the data is made "now"): an
account of ``--contacts`` contacts on one list and one sent campaign to all of them, which
gives about 1.45 events per recipient (sends, opens, clicks, bounces, forwards, opt-outs,
spam reports). Cases (design.md §2.8: the figure, a baseline from the same run, the ratio):

* ``seed`` — :func:`bulkops.server.seed_events.seed_campaigns` for that campaign: events/s
  and seconds per million events (target: 1,000,000 events in under a minute on 2 cores).
  Baseline: the same number of ready-made event rows inserted by one ``executemany`` into
  the same schema (no generation, no recipient query, no opt-out bookkeeping).
* ``seed-command`` — the whole ``bulkops seed --contacts 110000 --campaigns 12`` (about a
  million events over seven sent campaigns) as a child process: wall seconds, events/s.
  Baseline: the raw ``executemany`` rate above.
* ``export-opens`` — ``bulkops export campaign-events ID --type opens -o opens.csv`` run as
  a child process against ``bulkops serve`` (another process) on loopback; its RSS is sampled
  every 50 ms with the size of its temporary output file, so the RSS can be read against the
  progress (25%, 50%, 75%, 100% of the bytes). Target: peak RSS ≤ 64 MiB, flat. (VmHWM
  from ``/proc``, not ``ru_maxrss``, which a child inherits from its parent on Linux.) Baseline: a
  naive client in a child process, the fastest one would write: it walks the same feed with
  httpx, parses each page once (``parse_feed``: the records and the next link from one
  parse) and keeps every record until the end, then writes them (peak RSS grows with the
  export). Both ask for 200-entry pages (``pageSize=200``, the most the API allows; the
  export's own pages are counted in its report). Beside the rows/s (wall time, start-up
  included, so load on the machine moves it) each process's CPU seconds, which it does not.

Usage::

    python benchmarks/bench_events.py                      # every case, 820,000 contacts
    python benchmarks/bench_events.py --contacts 100000 --json
    python benchmarks/bench_events.py --check              # seconds: the test suite's smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_server import API_KEY, PASSWORD, USER, Figure, print_table, serving
from harness import add_check, check_figures

from bulkops.server.seed import seed_contacts
from bulkops.server.seed_cli import ensure_account_row
from bulkops.server.seed_events import seed_campaigns
from bulkops.server.settings import add_email_address
from bulkops.server.store import Store, now_ms, write_tx

MIB = 1024 * 1024

# The naive baseline client: every record kept in memory, written at the end. Each page is
# parsed once: parse_feed gives its records and its next link.
_NAIVE = r"""
import csv, sys, httpx
from bulkops.wire.atom.events import event_from_entry
from bulkops.wire.atom.feeds import parse_feed
from bulkops.wire.atom.reading import local_name
from bulkops.wire.atom.syntax import parse_xml
origin, user, key, password, path, out = sys.argv[1:7]
base = f"{origin}/ws/customers/{user}/"
records = []
with httpx.Client(auth=httpx.BasicAuth(f"{key}%{user}", password), timeout=60) as client:
    url = base + path
    while url:
        feed = parse_feed(client.get(url).content, max_bytes=1 << 30)
        records.extend(feed.entries)
        href = feed.link("next")
        url = None if href is None else origin + href
with open(out, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["id", "kind", "contact_id", "email", "campaign_id", "time"])
    w.writerows([r.id, r.kind, r.contact_id, r.email, r.campaign_id, r.time.isoformat()]
                for r in records)
print(len(records))
"""


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes ({} once it has gone)."""
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    found[name] = int(value.split()[0]) * 1024
    except (OSError, ValueError):
        return {}
    return found


def _watch(
    proc: subprocess.Popen[bytes], progress: Path | None, pattern: str
) -> tuple[list[tuple[int, int]], int]:
    """Sample (bytes written, RSS) every 50 ms until the process exits; return the samples
    and the last VmHWM seen."""
    samples: list[tuple[int, int]] = []
    peak = 0
    while proc.poll() is None:
        status = _status(proc.pid)
        if status:
            peak = max(peak, status.get("VmHWM", 0))
            size = 0
            if progress is not None:
                for part in progress.glob(pattern):
                    with contextlib.suppress(OSError):
                        size = part.stat().st_size
            samples.append((size, status.get("VmRSS", 0)))
        time.sleep(0.05)
    return samples, peak


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's children that have ended: taken before
    and after one child, the difference is that child's (load on the machine stretches its
    wall time, not this)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _rss_at(samples: list[tuple[int, int]], total: int, share: float) -> int:
    """The RSS of the first sample at or past ``share`` of the output."""
    for size, rss in samples:
        if size >= share * total:
            return rss
    return samples[-1][1] if samples else 0


def prepare(directory: Path, contacts: int, seed: int) -> tuple[Path, int, list[Figure], float]:
    """A fresh database with one big sent campaign; the ``seed`` case's figures and the raw
    baseline rate (events/s)."""
    path = directory / "events.db"
    store = Store(path)
    db = store.connection()
    now = now_ms()
    account, _created = ensure_account_row(db, USER, now)
    sender = add_email_address(db, account, f"{USER}@example.com", verified=True, now=now)
    with write_tx(db):
        db.execute(
            "INSERT INTO list (account_id, name, short_name, updated) VALUES (?, 'All', 'All', ?)",
            (account, now),
        )
    (list_id,) = db.execute("SELECT id FROM list WHERE account_id = ?", (account,)).fetchone()
    started = time.perf_counter()
    seed_contacts(db, account, contacts, lists=[list_id], seed=seed, until_ms=now - 86_400_000)
    contact_seconds = time.perf_counter() - started
    report = seed_campaigns(
        db,
        account,
        1,
        lists=[list_id],
        seed=seed,
        now_ms=now,
        from_email=int(sender.id),
        sent_ratio=1.0,
        scheduled_ratio=0.0,
    )
    (campaign,) = report.campaign_ids
    events = report.total_events
    # Baseline: the same number of ready-made rows into an identical, empty schema.
    # (Recipients in id order, as the seed writes them; kinds and times vary.)
    rnd = random.Random(seed)
    kinds = ("sends", "opens", "clicks", "bounces")
    rows = [
        (1, 1, 1 + i % contacts, kinds[int(rnd.random() * 4)], now - i, None, None, None)
        for i in range(events)
    ]
    raw_store = Store(directory / "raw.db")
    raw = raw_store.connection()
    started = time.perf_counter()
    with write_tx(raw):
        raw.executemany(
            "INSERT INTO event (account_id, campaign_id, contact_id, kind, time, url_id, code,"
            " detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    raw_seconds = time.perf_counter() - started
    raw_store.close()
    del rows
    store.close()
    figures = [
        Figure(
            case="seed",
            metric=f"{events:,} events of one campaign to {contacts:,} contacts",
            value=events / report.seconds,
            unit="events/s",
            baseline=events / raw_seconds,
            baseline_name="ready-made rows, one executemany",
        ),
        Figure(
            case="seed",
            metric="seconds per 1,000,000 events (target < 60)",
            value=report.seconds * 1_000_000 / events,
            unit="s",
            baseline=raw_seconds * 1_000_000 / events,
            baseline_name="ready-made rows",
        ),
        Figure(
            case="seed",
            metric=f"{contacts:,} contacts before it (seed_contacts)",
            value=contact_seconds,
            unit="s",
        ),
    ]
    return path, campaign, figures, events / raw_seconds


def seed_command(
    directory: Path, raw_rate: float, contacts: int = 110_000, campaigns: int = 12
) -> list[Figure]:
    """``bulkops seed`` as a user runs it, for about a million events (a child process)."""
    command = [
        sys.executable, "-m", "bulkops", "seed", "--db", str(directory / "command.db"),
        "--account", "acme", "--contacts", str(contacts), "--campaigns", str(campaigns),
        "--json",
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    wall = time.perf_counter() - started
    summary = json.loads(done.stdout)
    events = summary["total_events"]
    return [
        Figure(
            case="seed-command",
            metric=f"`bulkops seed --contacts {contacts} --campaigns {campaigns}`: {events:,}"
            f" events ({summary['sent']} sent campaigns), wall incl. start-up (target < 60 s"
            " per 1 M)",
            value=wall,
            unit="s",
        ),
        Figure(
            case="seed-command",
            metric="events/s over the whole command (contacts included)",
            value=events / wall,
            unit="events/s",
            baseline=raw_rate,
            baseline_name="ready-made rows, one executemany",
        ),
    ]


def export_opens(directory: Path, origin: str, campaign: int, db_path: Path) -> list[Figure]:
    """The streaming export vs the naive client, as child processes; RSS sampled."""
    db = sqlite3.connect(db_path)
    (opens,) = db.execute(
        "SELECT count(*) FROM event WHERE campaign_id = ? AND kind = 'opens'", (campaign,)
    ).fetchone()
    (total,) = db.execute(
        "SELECT count(*) FROM event WHERE campaign_id = ?", (campaign,)
    ).fetchone()
    db.close()
    credentials = directory / "credentials"
    credentials.write_text(f"username = {USER}\napi_key = {API_KEY}\npassword = {PASSWORD}\n")
    out = directory / "opens.csv"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKOPS_")}
    command = [
        sys.executable, "-m", "bulkops", "export", "campaign-events", str(campaign),
        "--type", "opens", "-o", str(out), "--server", origin,
        "--credentials-file", str(credentials), "--run-dir", str(directory / "run"),
        "--json", "--quiet",
    ]  # fmt: skip
    started, cpu_before = time.perf_counter(), _children_cpu()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    samples, peak = _watch(proc, directory, ".opens.csv.*.part")
    stdout, stderr = proc.communicate()
    seconds, cpu = time.perf_counter() - started, _children_cpu() - cpu_before
    if proc.returncode != 0:
        raise RuntimeError(f"export failed ({proc.returncode}): {stderr.decode()[-2000:]}")
    report = json.loads(stdout.decode().splitlines()[-1])["report"]
    size = out.stat().st_size
    rss = {share: _rss_at(samples, size, share) for share in (0.25, 0.5, 0.75, 1.0)}

    naive_out = directory / "naive.csv"
    naive = subprocess.Popen(
        [sys.executable, "-c", _NAIVE, origin, USER, API_KEY, PASSWORD,
         f"campaigns/{campaign}/events/opens?pageSize=200", str(naive_out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    naive_started = time.perf_counter()
    naive_samples, naive_peak = _watch(naive, None, "")
    naive_stdout, naive_stderr = naive.communicate()
    naive_seconds = time.perf_counter() - naive_started
    naive_cpu = _children_cpu() - cpu_before - cpu
    if naive.returncode != 0:
        raise RuntimeError(f"naive client failed: {naive_stderr.decode()[-2000:]}")
    naive_rows = int(naive_stdout.split()[-1])
    half = len(naive_samples) // 2
    naive_mid = naive_samples[half][1] if naive_samples else 0
    label = f"{opens:,} opens of a campaign with {total:,} events"
    figures = [
        Figure(
            case="export-opens",
            metric=f"{label}: rows/s (report: {report['rows']:,} rows)",
            value=report["rows"] / seconds,
            unit="rows/s",
            baseline=naive_rows / naive_seconds,
            baseline_name="naive client, all records in memory",
        ),
        Figure(
            case="export-opens",
            metric="CPU seconds of the export process (user + system, start-up included)",
            value=cpu,
            unit="s",
            baseline=naive_cpu,
            baseline_name="naive client",
        ),
        Figure(
            case="export-opens",
            metric="peak RSS of the export process (VmHWM; target ≤ 64 MiB)",
            value=peak / MIB,
            unit="MiB",
            baseline=naive_peak / MIB,
            baseline_name="naive client",
        ),
    ]
    figures.extend(
        Figure(
            case="export-opens",
            metric=f"RSS at {int(share * 100)}% of the output",
            value=value / MIB,
            unit="MiB",
            baseline=naive_mid / MIB if share == 0.5 else None,
            baseline_name="naive client at half time" if share == 0.5 else "",
        )
        for share, value in rss.items()
    )
    figures.append(
        Figure(
            case="export-opens",
            metric="RSS growth from 25% to 100% of the output",
            value=(rss[1.0] - rss[0.25]) / MIB,
            unit="MiB",
        )
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    """Seed, serve, export, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--contacts", type=int, default=820_000, help="contacts (recipients of the campaign)"
    )
    parser.add_argument("--seed", type=int, default=2024, help="seed of the generator")
    parser.add_argument("--case", action="append", choices=["seed", "seed-command", "export-opens"])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_check(parser)
    args = parser.parse_args(argv)
    cases = args.case or ["seed", "seed-command", "export-opens"]
    command_size = (110_000, 12)
    if args.check:
        cases, args.contacts, command_size = (
            ["seed", "seed-command", "export-opens"],
            2_000,
            (500, 2),
        )
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="bulkops-bench-events-") as tmp:
        directory = Path(tmp)
        db_path, campaign, seed_figures, raw_rate = prepare(directory, args.contacts, args.seed)
        if "seed" in cases:
            figures.extend(seed_figures)
        if "seed-command" in cases:
            figures.extend(seed_command(directory, raw_rate, *command_size))
        if "export-opens" in cases:
            with serving(db_path) as (origin, _proc):
                figures.extend(export_opens(directory, origin, campaign, db_path))
    if args.check:
        check_figures(figures)
    if args.json:
        payload: list[dict[str, Any]] = [{**fig.__dict__, "ratio": fig.ratio} for fig in figures]
        print(json.dumps(payload, indent=2))
    else:
        print_table(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
