"""The tracking events: contact events and campaign events (spec §10).

Routes:

* ``GET /contacts/{id}/events/`` — the event workspace (service document) with the
  collections ``bounces, clicks, forwards, opens, optouts, sends, summary``;
* ``GET /contacts/{id}/events/{kind}`` — the contact's events of one kind;
* ``GET /contacts/{id}/events/summary`` — one ``ReportsSummary`` per campaign the contact has
  events of (``Opens, Clicks, Forwards``), newest campaign first, keyset on the campaign id;
* ``GET /campaigns/{id}/events/`` — the event workspace with ``bounces, forwards, opens,
  optouts, sends``, as ``campaign-events-service-document.xml`` (clicks are per URL);
* ``GET /campaigns/{id}/events/{kind}`` — the campaign's events of one kind, clicks included
  (served though the workspace does not list it, spec §1.1);
* ``GET /campaigns/{id}/events/urls/{urlId}`` — the click events of one tracked link.

Invariants:

* **The 90-day window.** Every collection and the summary show only events whose time is
  at or after ``now - 90 days`` (``now`` is :func:`~bulkops.server.campaigns.clock_ms`,
  pinned in tests). Campaign counters are not windowed (see :mod:`bulkops.server.campaigns`).
* **Paging.** Newest first: ``ORDER BY time DESC, id DESC``, keyset ``(time, id)`` on the
  indexes ``event_campaign``, ``event_contact`` and ``event_url``, so every page is a range
  scan of at most a page of rows whatever its position, and the window bound is part of the
  range. 50 entries per page; campaign collections take ``pageSize`` 1–200 (400 otherwise);
  contact collections ignore it, as the v1 docs give it only for campaign events.
  Tokens are bound to their collection kind.
* Event ids are ``{campaign id},{event row id},{epoch ms}`` below the collection's URI;
  entries have no edit link.
* The owner (contact or campaign) must be the account's, else 404; an unknown kind is 404.
  The URL-less ``…/events`` (no trailing slash) is not a resource (404), as in v1.
* Before answering, the account's due scheduled campaigns are sent (their ``sends`` appear).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bulkops.server.app import PREFIX, ApiProblem, atom_response, authenticate, base_for, state_of
from bulkops.server.campaigns import after_due, campaign_id_of, clock_ms, feed_page, from_ms
from bulkops.server.lists import next_key, path_id
from bulkops.server.paging import PAGE_SIZE
from bulkops.wire.atom.events import event_entry, event_summary_entry, events_service_document
from bulkops.wire.model import BOUNCE_CODES, EVENT_ELEMENTS, EVENT_KINDS, Event, EventSummary

__all__ = [
    "CAMPAIGN_WORKSPACE",
    "CONTACT_WORKSPACE",
    "MAX_PAGE_SIZE",
    "WINDOW_MS",
    "campaign_events",
    "contact_events",
    "contact_summary",
    "routes",
    "url_events",
]

#: Events older than this (ms before "now") are not shown: 90 days (spec §10.1).
WINDOW_MS = 90 * 24 * 3600 * 1000

#: Largest ``pageSize`` of a campaign event collection (spec §3.2).
MAX_PAGE_SIZE = 200

#: The collections the campaign event workspace lists (the fixture's five).
CAMPAIGN_WORKSPACE: tuple[str, ...] = ("bounces", "forwards", "opens", "optouts", "sends")

#: The collections the contact event workspace lists.
CONTACT_WORKSPACE: tuple[str, ...] = (*EVENT_KINDS, "summary")

_LABELS = {
    "sends": "Send",
    "opens": "Open",
    "clicks": "Click",
    "bounces": "Bounce",
    "forwards": "Forward",
    "optouts": "Opt-out",
}

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


def _campaign_name(db: sqlite3.Connection, account_id: int, campaign_id: int) -> str | None:
    row = db.execute(
        "SELECT name FROM campaign WHERE id = ? AND account_id = ?", (campaign_id, account_id)
    ).fetchone()
    return None if row is None else str(row[0])


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
    name = _campaign_name(db, account_id, campaign_id)
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
    name = _campaign_name(db, account_id, campaign_id)
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


def _contact_email(db: sqlite3.Connection, account_id: int, contact_id: int) -> str | None:
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
    email = _contact_email(db, account_id, contact_id)
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
    email = _contact_email(db, account_id, contact_id)
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


# -- handlers ------------------------------------------------------------------------------


def _page_size(request: Request, *, allowed: bool) -> int:
    raw = request.query_params.get("pageSize")
    if raw is None or not allowed:
        return PAGE_SIZE
    text = raw.strip()
    if not (
        text.isascii() and text.isdigit() and len(text) <= 3 and 1 <= int(text) <= MAX_PAGE_SIZE
    ):
        raise ApiProblem(400, f"pageSize must be an integer from 1 to {MAX_PAGE_SIZE}")
    return int(text)


def _kind_of(request: Request) -> str:
    kind = str(request.path_params.get("kind", ""))
    if kind not in EVENT_ELEMENTS:
        raise ApiProblem(404, "No such event collection")
    return kind


async def _event_feed(
    request: Request,
    *,
    collection: str,
    title: str,
    kind: str,
    page_size: int,
    fetch: Callable[..., list[Event] | None],
    owner_missing: str,
    args: tuple[object, ...],
) -> Response:
    account = await authenticate(request)
    state = state_of(request)
    now = clock_ms(state)
    token = next_key(request, f"events.{kind}", 2)
    after = None if token is None else (token[0], token[1])
    rows = await state.store.run(
        after_due, account.id, now, fetch, account.id, *args, now - WINDOW_MS, after, page_size + 1
    )
    if rows is None:
        raise ApiProblem(404, owner_missing)
    more = len(rows) > page_size
    rows = rows[:page_size]
    base = base_for(request, account)
    # The keyset is in the last event's id: "{campaign},{row id},{ms}" (exact, unlike a float).
    last = rows[-1].id.split(",") if more else None
    return feed_page(
        request,
        base,
        collection=collection,
        title=title.format(user=account.username),
        entries=(event_entry(base, event, collection=collection) for event in rows),
        next_values=None if last is None else (int(last[2]), int(last[1])),
        kind=f"events.{kind}",
    )


async def _campaign_workspace(request: Request) -> Response:
    account = await authenticate(request)
    campaign_id = campaign_id_of(request)
    state = state_of(request)
    name = await state.store.run(_campaign_name, account.id, campaign_id)
    if name is None:
        raise ApiProblem(404, "No such campaign")
    return atom_response(
        events_service_document(
            base_for(request, account),
            owner="campaigns",
            owner_id=str(campaign_id),
            kinds=CAMPAIGN_WORKSPACE,
        )
    )


async def _campaign_kind(request: Request) -> Response:
    kind = _kind_of(request)
    campaign_id = campaign_id_of(request)
    return await _event_feed(
        request,
        collection=f"campaigns/{campaign_id}/events/{kind}",
        title=f"{_LABELS[kind]} Events for Customer: {{user}}, Campaign id: {campaign_id}",
        kind=kind,
        page_size=_page_size(request, allowed=True),
        fetch=campaign_events,
        owner_missing="No such campaign",
        args=(campaign_id, kind),
    )


async def _campaign_url(request: Request) -> Response:
    campaign_id = campaign_id_of(request)
    url_id = path_id(request, "url_id")
    if url_id is None:
        raise ApiProblem(404, "No such link of this campaign")
    return await _event_feed(
        request,
        collection=f"campaigns/{campaign_id}/events/urls/{url_id}",
        title=f"Click Events for Customer: {{user}}, Campaign id: {campaign_id}, Url id: {url_id}",
        kind="clicks",
        page_size=_page_size(request, allowed=True),
        fetch=url_events,
        owner_missing="No such link of this campaign",
        args=(campaign_id, url_id),
    )


def _contact_id_of(request: Request) -> int:
    found = path_id(request, "contact_id")
    if found is None:
        raise ApiProblem(404, "No such contact")
    return found


async def _contact_workspace(request: Request) -> Response:
    account = await authenticate(request)
    contact_id = _contact_id_of(request)
    email = await state_of(request).store.run(_contact_email, account.id, contact_id)
    if email is None:
        raise ApiProblem(404, "No such contact")
    return atom_response(
        events_service_document(
            base_for(request, account),
            owner="contacts",
            owner_id=str(contact_id),
            kinds=CONTACT_WORKSPACE,
        )
    )


async def _contact_kind(request: Request) -> Response:
    if request.path_params.get("kind") == "summary":
        return await _contact_summary(request)
    kind = _kind_of(request)
    contact_id = _contact_id_of(request)
    return await _event_feed(
        request,
        collection=f"contacts/{contact_id}/events/{kind}",
        title=f"{_LABELS[kind]} Events for Customer: {{user}}, Contact id: {contact_id}",
        kind=kind,
        page_size=_page_size(request, allowed=False),
        fetch=contact_events,
        owner_missing="No such contact",
        args=(contact_id, kind),
    )


async def _contact_summary(request: Request) -> Response:
    account = await authenticate(request)
    contact_id = _contact_id_of(request)
    state = state_of(request)
    now = clock_ms(state)
    token = next_key(request, "events.summary", 1)
    rows = await state.store.run(
        after_due,
        account.id,
        now,
        contact_summary,
        account.id,
        contact_id,
        now - WINDOW_MS,
        None if token is None else token[0],
        PAGE_SIZE + 1,
    )
    if rows is None:
        raise ApiProblem(404, "No such contact")
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    base = base_for(request, account)
    return feed_page(
        request,
        base,
        collection=f"contacts/{contact_id}/events/summary",
        title=f"Events Summary for Customer: {account.username}, Contact id: {contact_id}",
        entries=(event_summary_entry(base, row) for row in rows),
        next_values=(int(rows[-1].campaign_id),) if more else None,
        kind="events.summary",
    )


routes: list[BaseRoute] = [
    Route(f"{PREFIX}/contacts/{{contact_id}}/events/", _contact_workspace, methods=["GET"]),
    Route(f"{PREFIX}/contacts/{{contact_id}}/events/{{kind}}", _contact_kind, methods=["GET"]),
    Route(f"{PREFIX}/campaigns/{{campaign_id}}/events/", _campaign_workspace, methods=["GET"]),
    Route(
        f"{PREFIX}/campaigns/{{campaign_id}}/events/urls/{{url_id}}",
        _campaign_url,
        methods=["GET"],
    ),
    Route(f"{PREFIX}/campaigns/{{campaign_id}}/events/{{kind}}", _campaign_kind, methods=["GET"]),
]
