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
  at or after ``now - 90 days`` (``now`` is :func:`~bulkops.server.feeds.clock_ms`,
  pinned in tests). Campaign counters are not windowed (see :mod:`bulkops.server.campaign_queries`).
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

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bulkops.server.feeds import clock_ms, feed_response, next_key
from bulkops.server.http import (
    PREFIX,
    ApiProblem,
    atom_response,
    authenticate,
    base_for,
    path_id,
    required_path_id,
    state_of,
)
from bulkops.server.paging import PAGE_SIZE
from bulkops.wire.atom.events import event_entry, event_summary_entry, events_service_document
from bulkops.wire.model import EVENT_ELEMENTS, EVENT_KINDS, Event

__all__ = [
    "CAMPAIGN_WORKSPACE",
    "CONTACT_WORKSPACE",
    "MAX_PAGE_SIZE",
    "WINDOW_MS",
    "routes",
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
    fetch: Callable[..., Awaitable[list[Event] | None]],
    owner_missing: str,
    args: tuple[object, ...],
) -> Response:
    account = await authenticate(request)
    state = state_of(request)
    now = clock_ms(state)
    token = next_key(request, f"events.{kind}", 2)
    after = None if token is None else (token[0], token[1])
    rows = await fetch(account.id, *args, now - WINDOW_MS, after, page_size + 1, now=now)
    if rows is None:
        raise ApiProblem(404, owner_missing)
    more = len(rows) > page_size
    rows = rows[:page_size]
    base = base_for(request, account)
    # The keyset is in the last event's id: "{campaign},{row id},{ms}" (exact, unlike a float).
    last = rows[-1].id.split(",") if more else None
    return feed_response(
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
    campaign_id = _campaign_id_of(request)
    state = state_of(request)
    name = await state.store.campaign_name(account.id, campaign_id)
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
    campaign_id = _campaign_id_of(request)
    return await _event_feed(
        request,
        collection=f"campaigns/{campaign_id}/events/{kind}",
        title=f"{_LABELS[kind]} Events for Customer: {{user}}, Campaign id: {campaign_id}",
        kind=kind,
        page_size=_page_size(request, allowed=True),
        fetch=state_of(request).store.campaign_events,
        owner_missing="No such campaign",
        args=(campaign_id, kind),
    )


async def _campaign_url(request: Request) -> Response:
    campaign_id = _campaign_id_of(request)
    url_id = path_id(request, "url_id")
    if url_id is None:
        raise ApiProblem(404, "No such link of this campaign")
    return await _event_feed(
        request,
        collection=f"campaigns/{campaign_id}/events/urls/{url_id}",
        title=f"Click Events for Customer: {{user}}, Campaign id: {campaign_id}, Url id: {url_id}",
        kind="clicks",
        page_size=_page_size(request, allowed=True),
        fetch=state_of(request).store.url_events,
        owner_missing="No such link of this campaign",
        args=(campaign_id, url_id),
    )


def _campaign_id_of(request: Request) -> int:
    return required_path_id(request, "campaign_id", "No such campaign")


def _contact_id_of(request: Request) -> int:
    found = path_id(request, "contact_id")
    if found is None:
        raise ApiProblem(404, "No such contact")
    return found


async def _contact_workspace(request: Request) -> Response:
    account = await authenticate(request)
    contact_id = _contact_id_of(request)
    email = await state_of(request).store.contact_email(account.id, contact_id)
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
        fetch=state_of(request).store.contact_events,
        owner_missing="No such contact",
        args=(contact_id, kind),
    )


async def _contact_summary(request: Request) -> Response:
    account = await authenticate(request)
    contact_id = _contact_id_of(request)
    state = state_of(request)
    now = clock_ms(state)
    token = next_key(request, "events.summary", 1)
    rows = await state.store.contact_summary(
        account.id,
        contact_id,
        now - WINDOW_MS,
        None if token is None else token[0],
        PAGE_SIZE + 1,
        now=now,
    )
    if rows is None:
        raise ApiProblem(404, "No such contact")
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    base = base_for(request, account)
    return feed_response(
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
