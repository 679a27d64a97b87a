"""The account-scoped SQL of the tracking events (spec §10): pages of one kind, summaries.

Every function takes a connection first and the account id second; an owner (campaign,
link or contact) that is not the account's gives None, which the resource answers with 404.

Invariants:

* **Paging.** Newest first: ``ORDER BY time DESC, id DESC``, keyset ``(time, id)`` on the
  indexes ``event_campaign``, ``event_contact`` and ``event_url``, so every page is a range
  scan of at most a page of rows whatever its position, and the window bound (``since``) is
  part of the range.
* Event ids are ``{campaign id},{event row id},{epoch ms}``: the keyset travels in the id.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from bulkops.server.campaign_queries import campaign_name
from bulkops.server.store import from_ms
from bulkops.wire.model import BOUNCE_CODES, Event, EventSummary

__all__ = [
    "Keyset",
    "campaign_events",
    "campaign_name",
    "contact_email",
    "contact_events",
    "contact_summary",
    "url_events",
]

Keyset = tuple[int, int] | None


def _keyset_sql(after: Keyset) -> tuple[str, tuple[int, ...]]:
    if after is None:
        return "", ()
    return " AND (e.time, e.id) < (?, ?)", after


def _event(kind: str, row: Any, campaign_name: str | None) -> Event:
    event_id, contact_id, campaign_id, time, code, detail, email, url = row
    return Event(
        id=f"{campaign_id},{event_id},{time}",
        kind=kind,
        contact_id=str(contact_id),
        email=email,
        campaign_id=str(campaign_id),
        time=from_ms(time),
        campaign_name=campaign_name,
        link_url=url if kind == "clicks" else None,
        code=code if kind == "bounces" else None,
        description=BOUNCE_CODES.get(code or "", "Other") if kind == "bounces" else None,
        bounce_message=detail if kind == "bounces" else None,
    )


_CAMPAIGN_SELECT = (
    "SELECT e.id, e.contact_id, e.campaign_id, e.time, e.code, e.detail, c.EmailAddress, u.url"
    " FROM event e JOIN contact c ON c.id = e.contact_id"
    " LEFT JOIN campaign_url u ON u.id = e.url_id"
)


def campaign_events(
    db: sqlite3.Connection,
    account_id: int,
    campaign_id: int,
    kind: str,
    since: int,
    after: Keyset,
    limit: int,
) -> list[Event] | None:
    """Up to ``limit`` events of one kind of a campaign, newest first.

    Args:
        since: the window's start (ms); older events are not returned.
        after: the keyset ``(time, id)`` of the previous page's last event, or None.

    Returns:
        The events, or None when the account has no such campaign.
    """
    name = campaign_name(db, account_id, campaign_id)
    if name is None:
        return None
    more, args = _keyset_sql(after)
    rows = db.execute(
        f"{_CAMPAIGN_SELECT} WHERE e.campaign_id = ? AND e.kind = ? AND e.time >= ?{more}"
        " ORDER BY e.time DESC, e.id DESC LIMIT ?",
        (campaign_id, kind, since, *args, limit),
    ).fetchall()
    return [_event(kind, row, name) for row in rows]


def url_events(
    db: sqlite3.Connection,
    account_id: int,
    campaign_id: int,
    url_id: int,
    since: int,
    after: Keyset,
    limit: int,
) -> list[Event] | None:
    """Up to ``limit`` click events of one tracked link, newest first; None when the account's
    campaign has no such link."""
    name = campaign_name(db, account_id, campaign_id)
    owner = db.execute("SELECT campaign_id FROM campaign_url WHERE id = ?", (url_id,)).fetchone()
    if name is None or owner is None or owner[0] != campaign_id:
        return None
    more, args = _keyset_sql(after)
    rows = db.execute(
        f"{_CAMPAIGN_SELECT} WHERE e.url_id = ? AND e.time >= ?{more}"
        " ORDER BY e.time DESC, e.id DESC LIMIT ?",
        (url_id, since, *args, limit),
    ).fetchall()
    return [_event("clicks", row, name) for row in rows]


def contact_email(db: sqlite3.Connection, account_id: int, contact_id: int) -> str | None:
    """The address of the account's contact, or None when it has no such contact."""
    row = db.execute(
        "SELECT EmailAddress FROM contact WHERE id = ? AND account_id = ?", (contact_id, account_id)
    ).fetchone()
    return None if row is None else str(row[0])


def contact_events(
    db: sqlite3.Connection,
    account_id: int,
    contact_id: int,
    kind: str,
    since: int,
    after: Keyset,
    limit: int,
) -> list[Event] | None:
    """Up to ``limit`` events of one kind of a contact, newest first; None when the account
    has no such contact."""
    email = contact_email(db, account_id, contact_id)
    if email is None:
        return None
    more, args = _keyset_sql(after)
    rows = db.execute(
        "SELECT e.id, e.contact_id, e.campaign_id, e.time, e.code, e.detail, cm.name, u.url"
        " FROM event e JOIN campaign cm ON cm.id = e.campaign_id"
        " LEFT JOIN campaign_url u ON u.id = e.url_id"
        f" WHERE e.contact_id = ? AND e.kind = ? AND e.time >= ?{more}"
        " ORDER BY e.time DESC, e.id DESC LIMIT ?",
        (contact_id, kind, since, *args, limit),
    ).fetchall()
    return [_event(kind, (*row[:6], email, row[7]), row[6]) for row in rows]


def contact_summary(
    db: sqlite3.Connection,
    account_id: int,
    contact_id: int,
    since: int,
    before: int | None,
    limit: int,
) -> list[EventSummary] | None:
    """Up to ``limit`` per-campaign summaries of a contact's events in the window, by
    descending campaign id below ``before``; None when the account has no such contact."""
    email = contact_email(db, account_id, contact_id)
    if email is None:
        return None
    rows = db.execute(
        "SELECT e.campaign_id, cm.name, sum(e.kind = 'opens'), sum(e.kind = 'clicks'),"
        " sum(e.kind = 'forwards'), max(e.time)"
        " FROM event e JOIN campaign cm ON cm.id = e.campaign_id"
        " WHERE e.contact_id = ? AND e.time >= ? AND e.campaign_id < ?"
        " GROUP BY e.campaign_id ORDER BY e.campaign_id DESC LIMIT ?",
        (contact_id, since, 2**63 - 1 if before is None else before, limit),
    ).fetchall()
    return [
        EventSummary(
            contact_id=str(contact_id),
            email=email,
            campaign_id=str(campaign_id),
            campaign_name=name,
            updated=from_ms(last),
            opens=opens,
            clicks=clicks,
            forwards=forwards,
        )
        for campaign_id, name, opens, clicks, forwards, last in rows
    ]
