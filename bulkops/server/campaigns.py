"""The campaigns resources: ``/campaigns``, ``/campaigns/{id}`` and its schedule (spec §8).

Routes:

* ``GET /campaigns[?status=SENT|SCHEDULED|DRAFT|RUNNING]`` (any case) — newest first,
  ``Name, Status, Date`` only, 50 per page (keyset on the id, token kind ``campaigns``);
  links in the order of ``campaigns-feed.xml`` (``next``, ``current``, ``first``);
* ``POST /campaigns`` → 201 + ``Location`` + the full entry; ``GET /campaigns/{id}`` → the
  full entry with ``<source>``; ``PUT`` → 204; ``DELETE`` → 204;
* ``GET /campaigns/{id}/schedules`` → a feed of at most one entry; ``POST`` → 201 +
  ``Location`` + the schedule entry; ``GET``/``DELETE /campaigns/{id}/schedules/1`` → the
  entry / 204 (unschedule).

Invariants:

* SQL, counters, ids, status rules and lazy sending: :mod:`bulkops.server.campaign_queries`.
* Counters, ids, tracked URLs and lazy sending are the store's
  (:mod:`bulkops.server.campaign_queries`); this module checks requests and renders.
* **Status rules.** A new campaign is ``Draft``. Only a ``Draft`` may be changed (PUT),
  deleted or scheduled; otherwise **409** naming its status. Scheduling needs a
  ``ScheduledTime`` in the future (400) and at least one contact list (400); it makes the
  campaign ``Scheduled``, and ``DELETE …/schedules/1`` makes it ``Draft`` again (404 when it
  has no schedule). ``Date`` is the last edit of a draft, the scheduled time of a scheduled
  campaign, and the run time of a sent one.
* **Scheduled campaigns are sent lazily**: before any campaign request of an account is
  answered, its campaigns whose time has come are sent.
* **Validation (400 naming the element).** ``Name`` (≤ 80), ``Subject`` (≤ 200),
  ``EmailContentFormat`` (``HTML``/``XHTML``, any case), ``EmailContent`` (well-formed XML
  when XHTML), ``EmailTextContent``, ``FromEmail`` and ``ReplyToEmail`` naming an address of
  the account (by ``Email`` id, else by ``EmailAddress``) are required; ``FromName`` (≤ 100)
  defaults to the from address; YES/NO elements must be YES or NO; ``ContactLists`` must
  name user lists of the account. PUT merges: absent or empty elements keep their value.
  Server-set elements (``SharePageURL``, ``CampaignType``, ``ArchiveStatus``,
  ``ArchiveURL``), ``Status``, dates and counters in a body are ignored.
* "Now" is :func:`~bulkops.server.feeds.clock_ms`, which tests pin through ``ApiState.clock``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bulkops.server.feeds import clock_ms, feed_response, next_key, source_meta, to_ms
from bulkops.server.http import (
    PREFIX,
    ApiProblem,
    atom_body,
    atom_response,
    authenticate,
    base_for,
    parse_body,
    required_path_id,
    state_of,
)
from bulkops.server.paging import PAGE_SIZE
from bulkops.wire.atom.campaigns import (
    campaign_entry,
    parse_campaign_entry,
    parse_schedule_entry,
    schedule_entry,
)
from bulkops.wire.atom.writing import document
from bulkops.wire.model import CampaignInput

__all__ = [
    "MAX_NAME",
    "MAX_SUBJECT",
    "campaign_id_of",
    "checked_campaign",
    "routes",
]

MAX_NAME = 80
MAX_SUBJECT = 200
MAX_FROM_NAME = 100
MAX_SHORT_FIELD = 1000

_STATUS_FILTERS = {"sent": "Sent", "scheduled": "Scheduled", "draft": "Draft", "running": "Running"}
_YES_NO = frozenset(
    {"ViewAsWebpage", "PermissionReminder", "IncludeForwardEmail", "IncludeSubscribeLink"}
)
# Elements whose value is kept exactly as sent (markup, multi-line text); others are trimmed.
_LONG_FIELDS = frozenset(
    {"EmailContent", "EmailTextContent", "StyleSheet", "PermissionReminderText"}
)
_REQUIRED = ("Subject", "EmailContentFormat", "EmailContent", "EmailTextContent")
_LIMITS = {"Subject": MAX_SUBJECT, "FromName": MAX_FROM_NAME}


def campaign_id_of(request: Request) -> int:
    """The ``campaign_id`` path parameter, or a 404."""
    return required_path_id(request, "campaign_id", "No such campaign")


def _title(username: str) -> str:
    return f"Campaigns for customer: {username}"


# -- validation ----------------------------------------------------------------------------


def checked_campaign(data: CampaignInput, *, creating: bool) -> CampaignInput:
    """The request's values, checked and normalised (YES/NO and ``EmailContentFormat`` in
    upper case, short elements trimmed).

    Args:
        data: the parsed body.
        creating: POST (every required element must be there) rather than PUT.

    Raises:
        ApiProblem: 400 naming the first element that is missing or unacceptable.
    """
    if data.name is None:
        if creating:
            raise ApiProblem(400, "Name: a campaign name is required")
    elif len(data.name) > MAX_NAME:
        raise ApiProblem(400, f"Name: longer than {MAX_NAME} characters")
    fields: dict[str, str] = {}
    for name, value in data.fields.items():
        if name not in _LONG_FIELDS:
            value = value.strip()
            limit = _LIMITS.get(name, MAX_SHORT_FIELD)
            if len(value) > limit:
                raise ApiProblem(400, f"{name}: longer than {limit} characters")
        if name in _YES_NO:
            value = value.upper()
            if value not in ("YES", "NO"):
                raise ApiProblem(400, f"{name}: must be YES or NO")
        elif name == "EmailContentFormat":
            value = value.upper()
            if value not in ("HTML", "XHTML"):
                raise ApiProblem(400, "EmailContentFormat: must be HTML or XHTML")
        fields[name] = value
    if creating:
        for name in _REQUIRED:
            if name not in fields:
                raise ApiProblem(400, f"{name}: required")
        for what, ref in (("FromEmail", data.from_email), ("ReplyToEmail", data.reply_to_email)):
            if ref is None or (ref.uri is None and ref.email is None):
                raise ApiProblem(400, f"{what}: required (an Email id of settings/emailaddresses)")
    return CampaignInput(
        name=data.name,
        fields=fields,
        list_uris=data.list_uris,
        from_email=data.from_email,
        reply_to_email=data.reply_to_email,
    )


# -- handlers ------------------------------------------------------------------------------


async def _campaigns(request: Request) -> Response:
    account = await authenticate(request)
    state = state_of(request)
    now = clock_ms(state)
    base = base_for(request, account)
    if request.method == "POST":
        data = await parse_body(request, parse_campaign_entry, await atom_body(request))
        spec = checked_campaign(data, creating=True)
        created = await state.store.create_campaign(account.id, spec, now)
        return atom_response(
            document(campaign_entry(base, created, view="full")),
            status=201,
            headers={"Location": base.id(f"campaigns/{created.id}")},
        )
    status: str | None = None
    raw = request.query_params.get("status")
    if raw is not None:
        status = _STATUS_FILTERS.get(raw.strip().lower())
        if status is None:
            raise ApiProblem(400, "status must be one of SENT, SCHEDULED, DRAFT, RUNNING")
    token = next_key(request, "campaigns", 1)
    rows = await state.store.campaign_page(
        account.id, status, None if token is None else token[0], PAGE_SIZE + 1, now=now
    )
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return feed_response(
        request,
        base,
        collection="campaigns",
        title=_title(account.username),
        entries=(campaign_entry(base, row, view="summary") for row in rows),
        next_values=(int(rows[-1].id),) if more else None,
        kind="campaigns",
        current_first=True,
    )


async def _one_campaign(request: Request) -> Response:
    account = await authenticate(request)
    state = state_of(request)
    now = clock_ms(state)
    if request.method in ("GET", "HEAD"):
        campaign_id = campaign_id_of(request)
        found = await state.store.get_campaign(account.id, campaign_id, now=now)
        if found is None:
            raise ApiProblem(404, "No such campaign")
        base = base_for(request, account)
        source = source_meta(base, "campaigns", _title(account.username), now)
        return atom_response(document(campaign_entry(base, found, view="full", source=source)))
    if request.method == "PUT":
        data = await parse_body(request, parse_campaign_entry, await atom_body(request))
        campaign_id = campaign_id_of(request)
        spec = checked_campaign(data, creating=False)
        await state.store.update_campaign(account.id, campaign_id, spec, now)
        return Response(status_code=204)
    campaign_id = campaign_id_of(request)
    await state.store.delete_campaign(account.id, campaign_id, now)
    return Response(status_code=204)


async def _schedules(request: Request) -> Response:
    account = await authenticate(request)
    state = state_of(request)
    now = clock_ms(state)
    base = base_for(request, account)
    if request.method == "POST":
        when = await parse_body(request, parse_schedule_entry, await atom_body(request))
        campaign_id = campaign_id_of(request)
        created = await state.store.schedule_campaign(account.id, campaign_id, to_ms(when), now)
        return atom_response(
            document(schedule_entry(base, created)),
            status=201,
            headers={"Location": base.id(f"campaigns/{campaign_id}/schedules/{created.id}")},
        )
    campaign_id = campaign_id_of(request)
    found = await state.store.get_schedule(account.id, campaign_id, now=now)
    return feed_response(
        request,
        base,
        collection=f"campaigns/{campaign_id}/schedules",
        title=f"Schedules for Campaign: {campaign_id}",
        entries=[] if found is None else [schedule_entry(base, found)],
        next_values=None,
        kind="schedules",
    )


async def _one_schedule(request: Request) -> Response:
    account = await authenticate(request)
    state = state_of(request)
    now = clock_ms(state)
    campaign_id = campaign_id_of(request)
    if request.path_params.get("schedule_id") != "1":
        raise ApiProblem(404, "No such schedule")
    if request.method == "DELETE":
        await state.store.unschedule_campaign(account.id, campaign_id, now)
        return Response(status_code=204)
    found = await state.store.get_schedule(account.id, campaign_id, now=now)
    if found is None:
        raise ApiProblem(404, "The campaign has no schedule")
    return atom_response(document(schedule_entry(base_for(request, account), found)))


routes: list[BaseRoute] = [
    Route(f"{PREFIX}/campaigns", _campaigns, methods=["GET", "POST"]),
    Route(f"{PREFIX}/campaigns/{{campaign_id}}", _one_campaign, methods=["GET", "PUT", "DELETE"]),
    Route(f"{PREFIX}/campaigns/{{campaign_id}}/schedules", _schedules, methods=["GET", "POST"]),
    Route(
        f"{PREFIX}/campaigns/{{campaign_id}}/schedules/{{schedule_id}}",
        _one_schedule,
        methods=["GET", "DELETE"],
    ),
]
