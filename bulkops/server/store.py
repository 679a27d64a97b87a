"""The server's SQLite store: schema, connections, transactions, accounts.

Invariants:

* One database file in WAL mode; every connection is opened by :class:`Store` with the same
  pragmas. Connections are per thread (``threading.local``): request handlers run their
  queries through :meth:`Store.run` in trio worker threads, so a long activity transaction
  never blocks the event loop, and WAL lets readers proceed while it writes.
* Connections run in autocommit mode; writes group their statements in :func:`write_tx`
  (``BEGIN IMMEDIATE`` … ``COMMIT``), so an activity's rows are applied all or nothing.
* Times are integer milliseconds since the Unix epoch (UTC); ids are SQLite rowids, except
  activities whose ids are opaque strings.
* The schema is built for millions of contacts per account: every list and feed is paged by
  keyset (``WHERE key < ? ORDER BY key DESC LIMIT n``) on an index, never by OFFSET.

Schema versions are tracked with ``PRAGMA user_version``; :data:`MIGRATIONS` holds one script
per version and opening a store applies the missing ones.

Contact status rules (spec §6, §7.2), the same for single-contact requests and activities:

* ``Do Not Mail`` (opted out) is sticky: the contact is on no list; only a request with
  ``OptInSource`` ``ACTION_BY_CONTACT`` and at least one list re-subscribes it (Active). An
  add activity row for such a contact is a row error ("… is on the Do Not Mail list"), and a
  customer-sourced PUT that gives it lists is refused with 403.
* Otherwise the status follows membership: on at least one list → ``Active``; on none →
  ``Removed``. Removing a contact from its last list (PUT, remove activity, clear activity,
  list deletion) makes it ``Removed``; adding a Removed contact to a list makes it Active.
* DELETE of a contact opts it out: removed from every list, ``Do Not Mail``, ``opt_out_*``
  set. There is no hard delete.
* ``last_update_time`` changes on every change to the contact's fields, status or lists.

The write sequence (our extension; an era server has none): ``account.write_seq`` counts the
committed write transactions that changed the account's contacts, memberships or lists —
exactly one per applied add/remove/clear activity (whatever it changed), per contact
POST/PUT/DELETE that changed something and per list POST/PUT/DELETE (the seeders write
without counting). Each of those transactions bumps it (:func:`bump_write_seq`) under the
write lock and stamps its ``last_update_time`` with a clock read after taking the lock;
:func:`read_write_seq` reads the counter and the clock under the same lock. So a write not
counted in a reading commits after it, with a ``last_update_time`` at or after its time.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ParamSpec, TypeVar

import attrs
import trio

from bulkops.wire.columns import CONTACT_FIELDS

__all__ = [
    "MIGRATIONS",
    "STATUS_ACTIVE",
    "STATUS_DO_NOT_MAIL",
    "STATUS_REMOVED",
    "STATUS_UNCONFIRMED",
    "WAL_AUTOCHECKPOINT",
    "Account",
    "Store",
    "bump_write_seq",
    "checkpoint_wal",
    "from_ms",
    "now_ms",
    "read_write_seq",
    "to_ms",
    "without_autocheckpoint",
    "write_tx",
]

P = ParamSpec("P")
T = TypeVar("T")

# Contact status values as stored (the wire text, so queries and rendering agree).
STATUS_ACTIVE = "Active"
STATUS_UNCONFIRMED = "Unconfirmed"
STATUS_REMOVED = "Removed"
STATUS_DO_NOT_MAIL = "Do Not Mail"

_CONTACT_FIELD_COLUMNS = ",\n    ".join(
    f"{field} TEXT NOT NULL DEFAULT ''" for field in CONTACT_FIELDS if field != "EmailAddress"
)

_SCHEMA_V1 = f"""
CREATE TABLE account (
    id              INTEGER PRIMARY KEY,
    username        TEXT NOT NULL UNIQUE,          -- lower case, as in URLs
    created         INTEGER NOT NULL
);

-- Salted hashes of passwords, API keys and bearer tokens; never the secrets themselves.
CREATE TABLE credential (
    id              INTEGER PRIMARY KEY,
    account_id      INTEGER NOT NULL REFERENCES account(id) ON DELETE CASCADE,
    kind            TEXT NOT NULL CHECK (kind IN ('password', 'api_key', 'token')),
    hash            TEXT NOT NULL                   -- 'scrypt$n$r$p$salt_hex$hash_hex'
);
CREATE INDEX credential_account ON credential(account_id, kind);

CREATE TABLE list (
    id              INTEGER PRIMARY KEY,
    account_id      INTEGER NOT NULL REFERENCES account(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    short_name      TEXT NOT NULL,
    opt_in_default  INTEGER NOT NULL DEFAULT 0,
    display_on_signup INTEGER NOT NULL DEFAULT 0,
    sort_order      INTEGER NOT NULL DEFAULT 99,
    member_count    INTEGER NOT NULL DEFAULT 0,     -- maintained by the membership triggers
    updated         INTEGER NOT NULL,
    UNIQUE (account_id, name)
);

CREATE TABLE contact (
    id              INTEGER PRIMARY KEY,
    account_id      INTEGER NOT NULL REFERENCES account(id) ON DELETE CASCADE,
    email_key       TEXT NOT NULL,                  -- lower-cased EmailAddress
    EmailAddress    TEXT NOT NULL,
    {_CONTACT_FIELD_COLUMNS},
    status          TEXT NOT NULL,
    opt_in_source   TEXT NOT NULL DEFAULT '',
    opt_in_time     INTEGER,
    opt_out_source  TEXT NOT NULL DEFAULT '',
    opt_out_time    INTEGER,
    opt_out_reason  TEXT NOT NULL DEFAULT '',
    confirmed       INTEGER NOT NULL DEFAULT 0,
    insert_time     INTEGER NOT NULL,
    last_update_time INTEGER NOT NULL
);
CREATE UNIQUE INDEX contact_email ON contact(account_id, email_key);
CREATE INDEX contact_account ON contact(account_id, id);  -- the contacts feed, newest first
CREATE INDEX contact_updated ON contact(account_id, last_update_time, id);
CREATE INDEX contact_status ON contact(account_id, status, id);

CREATE TABLE membership (
    list_id         INTEGER NOT NULL REFERENCES list(id) ON DELETE CASCADE,
    contact_id      INTEGER NOT NULL REFERENCES contact(id) ON DELETE CASCADE,
    opt_in_source   TEXT NOT NULL DEFAULT '',
    opt_in_time     INTEGER NOT NULL,
    PRIMARY KEY (list_id, contact_id)
) WITHOUT ROWID;
CREATE INDEX membership_contact ON membership(contact_id, list_id);

CREATE TRIGGER membership_count_insert AFTER INSERT ON membership BEGIN
    UPDATE list SET member_count = member_count + 1 WHERE id = NEW.list_id;
END;
CREATE TRIGGER membership_count_delete AFTER DELETE ON membership BEGIN
    UPDATE list SET member_count = member_count - 1 WHERE id = OLD.list_id;
END;

-- Bulk activities. `seq` orders the feed newest first; `id` is the opaque public id.
CREATE TABLE activity (
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    account_id      INTEGER NOT NULL REFERENCES account(id) ON DELETE CASCADE,
    requested_type  TEXT NOT NULL,
    type            TEXT NOT NULL,
    status          TEXT NOT NULL,
    request         BLOB,                           -- before version 2: activity_request
    errors          BLOB,                           -- encoded row errors
    error_count     INTEGER NOT NULL DEFAULT 0,
    file_name       TEXT NOT NULL DEFAULT '',
    transaction_count INTEGER NOT NULL DEFAULT 0,
    insert_time     INTEGER NOT NULL,
    run_start_time  INTEGER,
    run_finish_time INTEGER,
    updated         INTEGER NOT NULL
);
CREATE INDEX activity_account ON activity(account_id, seq);
CREATE INDEX activity_status ON activity(status, seq);

-- Campaigns, the account's sender addresses, and tracking events (issue 7 fills these).
CREATE TABLE email_address (
    id              INTEGER PRIMARY KEY,
    account_id      INTEGER NOT NULL REFERENCES account(id) ON DELETE CASCADE,
    email           TEXT NOT NULL,
    status          TEXT NOT NULL,                  -- 'Verified' | 'Pending'
    verified_time   INTEGER,
    updated         INTEGER NOT NULL,
    UNIQUE (account_id, email)
);

-- Campaign ids are the public 13-digit ids (1100000000000 + n), shared by all accounts.
CREATE TABLE campaign (
    id              INTEGER PRIMARY KEY,
    account_id      INTEGER NOT NULL REFERENCES account(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    status          TEXT NOT NULL,                  -- Draft | Scheduled | Running | Sent
    date            INTEGER NOT NULL,
    doc             BLOB NOT NULL,                  -- the remaining elements, encoded
    updated         INTEGER NOT NULL,
    last_edit_date  INTEGER,
    last_run_date   INTEGER,
    next_run_date   INTEGER                         -- the schedule, while Scheduled
);
CREATE INDEX campaign_account ON campaign(account_id, status, id);
CREATE INDEX campaign_feed ON campaign(account_id, id);

CREATE TABLE campaign_list (
    campaign_id     INTEGER NOT NULL REFERENCES campaign(id) ON DELETE CASCADE,
    list_id         INTEGER NOT NULL REFERENCES list(id) ON DELETE CASCADE,
    PRIMARY KEY (campaign_id, list_id)
) WITHOUT ROWID;

CREATE TABLE campaign_url (
    id              INTEGER PRIMARY KEY,
    campaign_id     INTEGER NOT NULL REFERENCES campaign(id) ON DELETE CASCADE,
    url             TEXT NOT NULL
);
CREATE INDEX campaign_url_campaign ON campaign_url(campaign_id, id);

CREATE TABLE event (
    id              INTEGER PRIMARY KEY,
    account_id      INTEGER NOT NULL,
    campaign_id     INTEGER NOT NULL,
    contact_id      INTEGER NOT NULL,
    kind            TEXT NOT NULL,  -- sends|opens|clicks|bounces|forwards|optouts|spam (no feed)
    time            INTEGER NOT NULL,
    url_id          INTEGER,
    code            TEXT,
    detail          TEXT
);
-- Event feeds are newest first within the 90-day window: keyset (time, id) on these.
-- Campaign counters are count(*) ... GROUP BY kind on event_campaign.
CREATE INDEX event_campaign ON event(campaign_id, kind, time, id);
CREATE INDEX event_contact ON event(contact_id, kind, time, id);
CREATE INDEX event_url ON event(url_id, time, id) WHERE url_id IS NOT NULL;
"""

#: WAL pages after which a commit checkpoints (SQLite's default; see without_autocheckpoint).
WAL_AUTOCHECKPOINT = 1000

# Version 2: an activity's request (up to a few MB) lives in a table of its own, so its
# status changes rewrite a small row, not the request with it. ``activity.request`` is
# only read for activities stored by version 1.
_SCHEMA_V2 = """
CREATE TABLE activity_request (
    seq             INTEGER PRIMARY KEY REFERENCES activity(seq) ON DELETE CASCADE,
    request         BLOB NOT NULL                   -- what the worker needs to run it
);
"""

# Version 3: several processes and workers share one database (bulkops.server.leases).
# A RUNNING activity is leased to one worker until ``lease_expires`` (ms); the throttles
# keep their counters here so that every process counts the same requests.
_SCHEMA_V3 = """
ALTER TABLE activity ADD COLUMN lease_owner TEXT;
ALTER TABLE activity ADD COLUMN lease_expires INTEGER;
CREATE TABLE throttle_bucket (
    key             TEXT PRIMARY KEY,               -- 'rate:' + username, 'user:' / 'addr:' …
    tokens          REAL NOT NULL,
    stamp           INTEGER NOT NULL                -- ms of the last change
) WITHOUT ROWID;
CREATE INDEX throttle_bucket_stamp ON throttle_bucket(stamp);
CREATE TABLE login_failure (
    key             TEXT PRIMARY KEY,               -- 'user:' + name or 'addr:' + address
    tokens          REAL NOT NULL,
    stamp           INTEGER NOT NULL                -- ms of the last change
) WITHOUT ROWID;
CREATE INDEX login_failure_stamp ON login_failure(stamp);
CREATE TABLE throttle_day (
    key             TEXT PRIMARY KEY,               -- the username
    day             INTEGER NOT NULL,               -- UTC days since the epoch
    count           INTEGER NOT NULL
) WITHOUT ROWID;
"""

# Version 4: the account's write sequence (our extension, see :func:`bump_write_seq`).
_SCHEMA_V4 = """
ALTER TABLE account ADD COLUMN write_seq INTEGER NOT NULL DEFAULT 0;
"""

#: One script per schema version; index i upgrades version i to i + 1.
MIGRATIONS: tuple[str, ...] = (_SCHEMA_V1, _SCHEMA_V2, _SCHEMA_V3, _SCHEMA_V4)


def now_ms() -> int:
    """The current time in integer milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    """An aware UTC datetime from integer milliseconds since the epoch (exact, no float)."""
    return _EPOCH + ms * _MS


def to_ms(moment: datetime) -> int:
    """Integer milliseconds since the epoch of an aware datetime (sub-ms precision dropped)."""
    return (moment - _EPOCH) // _MS


@attrs.frozen(kw_only=True)
class Account:
    """An account: its row id and its (lower-case) username."""

    id: int
    username: str


@contextlib.contextmanager
def without_autocheckpoint(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Commits on ``db`` inside the block leave the WAL as it is (no automatic checkpoint).

    For a big write whose commit should not also copy everything it wrote into the
    database file: call :func:`checkpoint_wal` afterwards, from any connection.
    """
    db.execute("PRAGMA wal_autocheckpoint=0")
    try:
        yield db
    finally:
        db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT}")


def checkpoint_wal(db: sqlite3.Connection) -> None:
    """Copy the committed WAL frames into the database file, without blocking anyone.

    ``PASSIVE``: readers and the writer go on; whatever cannot be copied yet waits for the
    next checkpoint.
    """
    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


@contextlib.contextmanager
def write_tx(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction: ``BEGIN IMMEDIATE``, then COMMIT, or ROLLBACK on any exception."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def bump_write_seq(db: sqlite3.Connection, account_id: int) -> None:
    """Count one write to the account's contact data (inside its ``write_tx``)."""
    db.execute("UPDATE account SET write_seq = write_seq + 1 WHERE id = ?", (account_id,))


def read_write_seq(db: sqlite3.Connection, account_id: int) -> tuple[int, int]:
    """``(write_seq, now_ms())`` of the account, both read under the write lock."""
    with write_tx(db):
        row = db.execute("SELECT write_seq FROM account WHERE id = ?", (account_id,)).fetchone()
        stamp = now_ms()
    return (0 if row is None else int(row[0])), stamp


class Store:
    """The database of one server: a file path, per-thread connections, a thread limiter.

    Args:
        path: the SQLite file; created (with its schema) when missing.
        max_threads: worker threads that may run queries at once.
    """

    def __init__(self, path: str | Path, *, max_threads: int = 8) -> None:
        self.path = Path(path)
        self.data_dir = self.path.parent
        self._local = threading.local()
        self._limiter = trio.CapacityLimiter(max_threads)
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.RLock()
        # Calls in progress per connection: close() must never close a connection another
        # thread is executing on (sqlite3 would crash); that thread closes it when done.
        self._busy: dict[int, int] = {}
        self._closed = False
        _create_private(self.path)
        with self._migrating() as db:
            self._migrate(db)

    # -- connections ---------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=60.0)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=60000")
        db.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache per connection
        db.execute("PRAGMA temp_store=MEMORY")
        db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT}")
        return db

    @contextlib.contextmanager
    def _migrating(self) -> Iterator[sqlite3.Connection]:
        db = self._open()
        try:
            yield db
        finally:
            db.close()

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        for target in range(version, len(MIGRATIONS)):
            with write_tx(db):
                for statement in _split_statements(MIGRATIONS[target]):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {target + 1}")

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._open()
            self._local.db = db
            with self._all_lock:  # re-entrant: _call holds it already
                self._all.append(db)
        return db

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(connection, *args)`` in a worker thread and return its result."""
        return await trio.to_thread.run_sync(self._call, fn, args, limiter=self._limiter)

    def _call(self, fn: Callable[..., T], args: tuple[object, ...]) -> T:
        # Look the connection up and mark it busy in one step under the lock: close() picks
        # the idle connections under the same lock, so it can never close this one while
        # this thread runs on it (that crashed sqlite3 with a segfault at shutdown).
        with self._all_lock:
            db = self.connection()
            key = id(db)
            self._busy[key] = self._busy.get(key, 0) + 1
        try:
            return fn(db, *args)
        finally:
            with self._all_lock:
                self._busy[key] -= 1
                close_now = self._closed and self._busy[key] == 0
            if close_now:
                with contextlib.suppress(sqlite3.Error):
                    db.close()

    def close(self) -> None:
        """Close every connection this store opened (call once serving has stopped).

        A connection still executing in another thread is closed by that thread when its
        call returns, never from here.
        """
        with self._all_lock:
            self._closed = True
            connections, self._all = self._all, []
            idle = [db for db in connections if not self._busy.get(id(db))]
            self._local = threading.local()  # no later call finds a connection closed below
        for db in idle:
            with contextlib.suppress(sqlite3.Error):
                db.close()


def _create_private(path: Path) -> None:
    """Make the database file owner-only (0600), in an owner-only (0700) directory when the
    directory is created here, whatever the umask.

    The file holds every contact and the credential hashes. SQLite gives its ``-wal`` and
    ``-shm`` files the database file's mode. An existing file is narrowed to 0600; an
    existing directory is left as it is (it may be shared, like ``/tmp``).
    """
    directory = path.parent
    if not directory.exists():
        directory.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
            directory.chmod(0o700)  # mkdir's mode is narrowed by the umask, never widened
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            side = path.with_name(path.name + suffix)
            if side.stat().st_mode & 0o077:
                side.chmod(0o600)


def _split_statements(script: str) -> list[str]:
    """Split a schema script into statements; triggers keep their inner semicolons."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        stripped = line.split("--", 1)[0]
        buffer += stripped
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements
