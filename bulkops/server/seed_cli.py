"""``bulkops seed``: fill an account of a server database with realistic, deterministic data.

``bulkops seed [--db PATH] [--account NAME] [--contacts N] [--lists N] [--campaigns N]
[--seed S] [--now TIME] [--json]`` creates the account when it is missing (without credentials:
``bulkops serve --db PATH --account NAME:PASSWORD:KEY`` sets them later), gives it a verified
and a pending sender address, ``--lists`` contact lists, ``--contacts`` contacts
(:func:`bulkops.server.seed.seed_contacts`) and ``--campaigns`` campaigns with their events
(:func:`bulkops.server.seed_events.seed_campaigns`).

Without ``--db`` it fills the database a bare ``bulkops serve`` and the CLI's embedded
server use (``$BULKOPS_HOME/server.db``), set up as they set it up (the demo account on a
new database), and ``--account`` defaults to ``demo``: ``bulkops seed`` then ``bulkops
export lists -o -`` shows the data with nothing else configured.

Invariants:

* The same arguments on the same starting database give the same data. ``--now`` (default:
  today, 00:00 UTC) is the data's "now": sent campaigns and their events lie in the 80 days
  before it, so a server started within ten days of it shows them all in its 90-day event
  window.
* Running it again on an account adds to it: contacts are numbered on from those already
  there, lists are reused by name, addresses are not duplicated.
* Nothing secret is read or written.
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from datetime import UTC, datetime

import msgspec

from bulkops.errors import ConfigError
from bulkops.server.seed import seed_contacts
from bulkops.server.seed_events import seed_campaigns
from bulkops.server.setting_queries import add_email_address
from bulkops.server.store import to_ms, write_tx
from bulkops.wire.atom.syntax import parse_time

__all__ = ["SeedSummary", "add_arguments", "ensure_account_row", "run", "seed_account"]

_LIST_NAMES = (
    "General Interest",
    "Newsletter",
    "VIP Customers",
    "Events",
    "Partners",
    "Spring Promotions",
    "Wholesale",
    "Press",
)


class SeedSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What one ``bulkops seed`` run wrote (``--json`` prints it)."""

    account: str
    account_created: bool
    lists: list[int]
    contacts: int
    do_not_mail: int
    campaigns: list[int]
    sent: int
    scheduled: int
    drafts: int
    events: dict[str, int]
    total_events: int
    opted_out: int
    now: str
    seconds: float
    has_credentials: bool


def ensure_account_row(db: sqlite3.Connection, username: str, now: int) -> tuple[int, bool]:
    """The id of the account named ``username`` (lower case), inserting the row (and no
    credentials) when missing.

    Returns:
        (account id, whether it was created).
    """
    with write_tx(db):
        row = db.execute("SELECT id FROM account WHERE username = ?", (username,)).fetchone()
        if row is not None:
            return int(row[0]), False
        cursor = db.execute(
            "INSERT INTO account (username, created) VALUES (?, ?)", (username, now)
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid, True


def _ensure_lists(db: sqlite3.Connection, account_id: int, count: int, now: int) -> list[int]:
    ids: list[int] = []
    with write_tx(db):
        for i in range(count):
            name = _LIST_NAMES[i] if i < len(_LIST_NAMES) else f"List {i + 1}"
            db.execute(
                "INSERT INTO list (account_id, name, short_name, opt_in_default,"
                " display_on_signup, sort_order, updated) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (account_id, name) DO NOTHING",
                (account_id, name, name, int(i == 0), int(i < 2), i + 1, now),
            )
            (list_id,) = db.execute(
                "SELECT id FROM list WHERE account_id = ? AND name = ?", (account_id, name)
            ).fetchone()
            ids.append(int(list_id))
    return ids


def seed_account(
    db: sqlite3.Connection,
    username: str,
    *,
    contacts: int,
    lists: int,
    campaigns: int,
    seed: int,
    now_ms: int,
) -> SeedSummary:
    """Everything ``bulkops seed`` does, on an open store connection.

    Raises:
        ValueError: a negative count.
    """
    if min(contacts, lists, campaigns) < 0:
        raise ValueError("counts must be >= 0")
    started = time.perf_counter()
    account_id, created = ensure_account_row(db, username, now_ms)
    sender = add_email_address(db, account_id, f"{username}@example.com", verified=True, now=now_ms)
    add_email_address(db, account_id, f"{username}.news@example.com", verified=False, now=now_ms)
    list_ids = _ensure_lists(db, account_id, lists, now_ms)
    (existing,) = db.execute(
        "SELECT count(*) FROM contact WHERE account_id = ?", (account_id,)
    ).fetchone()
    people = seed_contacts(
        db, account_id, contacts, lists=list_ids, seed=seed, start=int(existing), until_ms=now_ms
    )
    report = seed_campaigns(
        db,
        account_id,
        campaigns,
        lists=list_ids,
        seed=seed,
        now_ms=now_ms,
        from_email=int(sender.id),
    )
    return SeedSummary(
        account=username,
        account_created=created,
        lists=list_ids,
        contacts=people.contacts,
        do_not_mail=people.do_not_mail,
        campaigns=list(report.campaign_ids),
        sent=report.sent,
        scheduled=report.scheduled,
        drafts=report.drafts,
        events=report.events,
        total_events=report.total_events,
        opted_out=report.opted_out,
        now=datetime.fromtimestamp(now_ms / 1000, UTC).isoformat(),
        seconds=round(time.perf_counter() - started, 3),
        has_credentials=db.execute(
            "SELECT count(*) FROM credential WHERE account_id = ?", (account_id,)
        ).fetchone()[0]
        > 0,
    )


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bulkops seed``."""
    parser.add_argument(
        "--db",
        default=None,
        help="the server's SQLite file or postgresql://USER@HOST:PORT/DBNAME URL (password "
        "from PGPASSWORD or ~/.pgpass; default $BULKOPS_DB, else $BULKOPS_HOME/server.db, "
        "as `bulkops serve`)",
    )
    parser.add_argument(
        "--account", default="demo", help="the account to fill, created if missing (default demo)"
    )
    parser.add_argument("--contacts", type=_count, default=1000, help="contacts (default 1000)")
    parser.add_argument("--lists", type=_count, default=3, help="contact lists (default 3)")
    parser.add_argument(
        "--campaigns", type=_count, default=5, help="campaigns, 60%% of them sent (default 5)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--now",
        help="the data's 'now', ISO-8601 (default: today 00:00 UTC); events are never later",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    """Seed the account and print what was written."""
    username = str(args.account)
    if not username or username != username.strip() or any(ch in username for ch in "/%:?#"):
        raise ConfigError("--account must be an account name (no spaces around, no / % : ? #)")
    username = username.lower()
    if args.now is None:
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        now = to_ms(today)
    else:
        try:
            now = to_ms(parse_time(args.now))
        except ValueError:
            raise ConfigError("--now must be an ISO-8601 time, like 2024-05-01T00:00:00Z") from None
    # Imported here: serve imports the whole server, seeding needs only its store opener.
    from bulkops.server.http import ServerConfig
    from bulkops.server.serve import open_state, open_storage, resolve_db

    db = resolve_db(args.db)
    if args.db is None:
        # As `bulkops serve` and the embedded server open it: the demo account (with its
        # credentials) on a new database, so that seeding it first does not lock them out.
        open_state(db, ServerConfig()).store.close()
    store = open_storage(db)
    try:
        summary = seed_account(
            store.connection(),  # type: ignore[attr-defined]
            username,
            contacts=args.contacts,
            lists=args.lists,
            campaigns=args.campaigns,
            seed=args.seed,
            now_ms=now,
        )
    finally:
        store.close()
    if args.json:
        print(msgspec.json.encode(summary).decode())
    else:
        created = "created" if summary.account_created else "existing"
        print(f"account {summary.account} ({created}) in {store.location}")
        print(f"  lists {', '.join(map(str, summary.lists)) or 'none'}")
        print(f"  contacts +{summary.contacts:,} ({summary.do_not_mail:,} do-not-mail)")
        print(
            f"  campaigns +{len(summary.campaigns)}: {summary.sent} sent, "
            f"{summary.scheduled} scheduled, {summary.drafts} draft"
        )
        kinds = ", ".join(f"{kind} {n:,}" for kind, n in summary.events.items())
        print(f"  events +{summary.total_events:,}: {kinds}")
        print(f"  opted out by campaigns: {summary.opted_out:,}; data 'now' {summary.now}")
        print(f"  {summary.seconds:.1f} s")
        if not summary.has_credentials:
            print(
                f"  no credentials yet: `bulkops serve --db {store.location} --account "
                f"{summary.account}:PASSWORD:APIKEY` sets them"
            )
    return 0
