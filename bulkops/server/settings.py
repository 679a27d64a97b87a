"""The account's sender addresses: ``/settings/emailaddresses`` and ``/{id}`` (spec §9).

Routes:

* ``GET /settings/emailaddresses`` — the account's addresses by ascending id, 50 per page
  (keyset on the id, token kind ``emailaddresses``); the feed title is empty, as in
  ``settings-emailaddresses.xml``;
* ``GET /settings/emailaddresses/{id}`` — one address with its ``<source>``.

Invariants:

* Read-only, as in v1 (no POST documented): other methods answer 415. Addresses are made
  by :func:`add_email_address` (``bulkops seed``, tests, embedding programs).
* ``Status`` is ``Verified`` (with ``VerifiedTime``) or ``Pending`` (without); never the v2
  names ``CONFIRMED``/``UNCONFIRMED``.
* An address is unique per account, compared case-insensitively; ids are SQLite rowids.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bulkops.server.app import PREFIX, ApiProblem, atom_response, authenticate, base_for, state_of
from bulkops.server.campaigns import clock_ms, feed_page, from_ms, source_for
from bulkops.server.lists import next_key, path_id
from bulkops.server.paging import PAGE_SIZE
from bulkops.server.store import write_tx
from bulkops.wire.atom.email_addresses import email_address_entry
from bulkops.wire.atom.writing import document
from bulkops.wire.model import AccountEmail

__all__ = [
    "STATUS_PENDING",
    "STATUS_VERIFIED",
    "add_email_address",
    "email_address_page",
    "get_email_address",
    "routes",
]

STATUS_VERIFIED = "Verified"
STATUS_PENDING = "Pending"

_COLLECTION = "settings/emailaddresses"
_TITLE = ""  # the documented feed has an empty title


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


async def _addresses(request: Request) -> Response:
    account = await authenticate(request)
    token = next_key(request, "emailaddresses", 1)
    state = state_of(request)
    after = 0 if token is None else token[0]
    rows = await state.store.run(email_address_page, account.id, after, PAGE_SIZE + 1)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    base = base_for(request, account)
    return feed_page(
        request,
        base,
        collection=_COLLECTION,
        title=_TITLE,
        entries=(email_address_entry(base, row) for row in rows),
        next_values=(int(rows[-1].id),) if more else None,
        kind="emailaddresses",
    )


async def _one_address(request: Request) -> Response:
    account = await authenticate(request)
    address_id = path_id(request, "address_id")
    state = state_of(request)
    found = (
        None
        if address_id is None
        else await state.store.run(get_email_address, account.id, address_id)
    )
    if found is None:
        raise ApiProblem(404, "No such e-mail address")
    base = base_for(request, account)
    source = source_for(base, _COLLECTION, _TITLE, clock_ms(state))
    return atom_response(document(email_address_entry(base, found, source=source)))


routes: list[BaseRoute] = [
    Route(f"{PREFIX}/{_COLLECTION}", _addresses, methods=["GET"]),
    Route(f"{PREFIX}/{_COLLECTION}/{{address_id}}", _one_address, methods=["GET"]),
]
