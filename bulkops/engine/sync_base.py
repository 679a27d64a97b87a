# STAND-IN: replaced by dev-sbase
"""The base of a sync (stand-in): the list's members through an EXPORT activity, always a
full read; the account's Do-Not-Mail contacts through the contacts feed. No snapshot kept.

Only the contract (:class:`BaseSpec`, :class:`BaseInfo`, :func:`load_base`,
:func:`save_snapshot`) is for others to use.
"""

from __future__ import annotations

import csv
import sqlite3
import time
from pathlib import Path

import attrs
import msgspec

from bulkops.engine.client import Client
from bulkops.engine.export_options import ExportOptions
from bulkops.engine.exports import run_export
from bulkops.wire.atom.syntax import format_time
from bulkops.wire.columns import column_for_field

__all__ = ["BaseInfo", "BaseSpec", "load_base", "save_snapshot"]


@attrs.frozen
class BaseSpec:
    """What base a sync needs."""

    list_uri: str
    columns: tuple[str, ...]
    full: bool = False
    snapshot_dir: Path | None = None


@attrs.frozen
class BaseInfo:
    """What :func:`load_base` read."""

    members: int
    opted_out: int
    source: str
    reason: str | None
    requests: int
    as_of: str


_SCHEMA = """
CREATE TABLE IF NOT EXISTS base_member (
    email_key TEXT PRIMARY KEY, email TEXT NOT NULL, contact_uri TEXT, vals TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS base_opted_out (email_key TEXT PRIMARY KEY);
"""


def _db_path(db: sqlite3.Connection) -> Path:
    row = db.execute("PRAGMA database_list").fetchone()
    return Path(row[2])


async def load_base(client: Client, spec: BaseSpec, db: sqlite3.Connection) -> BaseInfo:
    """Fill ``base_member`` and ``base_opted_out`` in ``db`` (a full read)."""
    from datetime import UTC, datetime

    before = client.statistics().requests
    as_of = format_time(datetime.fromtimestamp(time.time() - 1 + (client.clock_offset or 0.0), UTC))
    work = _db_path(db).parent / "base"
    work.mkdir(exist_ok=True)
    stamp = str(time.monotonic_ns())
    list_id = spec.list_uri.rstrip("/").rsplit("/", 1)[-1]
    members = work / f"members-{stamp}.csv"
    await run_export(
        client,
        members,
        options=ExportOptions(
            what="members", list=list_id, columns=("EmailAddress", *spec.columns)
        ),
        run_dir=work / f"members-{stamp}",
    )
    opted = work / f"opted-{stamp}.csv"
    await run_export(
        client,
        opted,
        options=ExportOptions(
            what="contacts",
            list_type="do-not-mail",
            updated_since="1970-01-01T00:00:00Z",
            via="feed",
            columns=("EmailAddress",),
        ),
        run_dir=work / f"opted-{stamp}",
    )
    db.executescript(_SCHEMA)
    db.execute("BEGIN")
    db.execute("DELETE FROM base_member")
    db.execute("DELETE FROM base_opted_out")
    headers = ["Email Address", *(column_for_field(f).export_header for f in spec.columns)]
    encode = msgspec.json.encode
    count = 0
    with members.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        head = next(reader, [])
        at = [head.index(h) for h in headers]
        batch: list[tuple[str, str, str]] = []
        for row in reader:
            email = row[at[0]]
            batch.append((email.lower(), email, encode([row[i] for i in at[1:]]).decode()))
            if len(batch) >= 10_000:
                db.executemany("INSERT OR REPLACE INTO base_member VALUES (?, ?, NULL, ?)", batch)
                count += len(batch)
                batch = []
        db.executemany("INSERT OR REPLACE INTO base_member VALUES (?, ?, NULL, ?)", batch)
        count += len(batch)
    opted_count = 0
    with opted.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        head = next(reader, [])
        at0 = head.index("Email Address")
        for row in reader:
            db.execute("INSERT OR IGNORE INTO base_opted_out VALUES (?)", (row[at0].lower(),))
            opted_count += 1
    db.execute("COMMIT")
    members.unlink()
    opted.unlink()
    return BaseInfo(
        members=count,
        opted_out=opted_count,
        source="full",
        reason=None,
        requests=client.statistics().requests - before,
        as_of=as_of,
    )


def save_snapshot(spec: BaseSpec, db: sqlite3.Connection, info: BaseInfo, account: str) -> None:
    """Keep nothing (the stand-in always reads the base in full)."""
    return None
