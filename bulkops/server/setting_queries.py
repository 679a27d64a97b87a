"""The account's sender addresses in SQL (spec §9): add (idempotent), page, get.

Invariants: an address is unique per account, compared case-insensitively; ids are SQLite
rowids; ``Status`` is ``Verified`` (with ``VerifiedTime``) or ``Pending`` (without).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from bulkops.server.store import from_ms, write_tx
from bulkops.wire.model import AccountEmail

__all__ = [
    "STATUS_PENDING",
    "STATUS_VERIFIED",
    "add_email_address",
    "email_address_page",
    "get_email_address",
]

STATUS_VERIFIED = "Verified"
STATUS_PENDING = "Pending"


def _record(row: Any) -> AccountEmail:
    address_id, email, status, verified, updated = row
    return AccountEmail(
        id=str(address_id),
        email=email,
        status=status,
        updated=from_ms(updated),
        verified_time=None if verified is None else from_ms(verified),
    )


_COLUMNS = "id, email, status, verified_time, updated"


def add_email_address(
    db: sqlite3.Connection, account_id: int, email: str, *, verified: bool, now: int
) -> AccountEmail:
    """Give the account a sender address, or return the one it already has (idempotent).

    Args:
        db: a store connection (autocommit; this function runs its own transaction).
        account_id: the account.
        email: the address; an existing address that differs only in case is returned.
        verified: ``Verified`` (verified at ``now``) or ``Pending``.
        now: ms since the epoch.

    Raises:
        ValueError: an empty address.
    """
    email = email.strip()
    if not email:
        raise ValueError("an e-mail address must not be empty")
    with write_tx(db):
        row = db.execute(
            f"SELECT {_COLUMNS} FROM email_address WHERE account_id = ? AND lower(email) = ?",
            (account_id, email.lower()),
        ).fetchone()
        if row is None:
            db.execute(
                "INSERT INTO email_address (account_id, email, status, verified_time, updated)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    account_id,
                    email,
                    STATUS_VERIFIED if verified else STATUS_PENDING,
                    now if verified else None,
                    now,
                ),
            )
            row = db.execute(
                f"SELECT {_COLUMNS} FROM email_address WHERE rowid = last_insert_rowid()"
            ).fetchone()
    return _record(row)


def email_address_page(
    db: sqlite3.Connection, account_id: int, after: int, limit: int
) -> list[AccountEmail]:
    """Up to ``limit`` addresses of the account with ids above ``after``, ascending."""
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM email_address WHERE account_id = ? AND id > ? ORDER BY id LIMIT ?",
        (account_id, after, limit),
    ).fetchall()
    return [_record(row) for row in rows]


def get_email_address(
    db: sqlite3.Connection, account_id: int, address_id: int
) -> AccountEmail | None:
    """One address of the account, or None."""
    row = db.execute(
        f"SELECT {_COLUMNS} FROM email_address WHERE account_id = ? AND id = ?",
        (account_id, address_id),
    ).fetchone()
    return None if row is None else _record(row)
