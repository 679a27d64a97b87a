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

* **Counters are the events.** ``Sent, Opens, Clicks, Bounces, Forwards, OptOuts,
  SpamReports`` are computed on every read as ``count(*) … GROUP BY kind`` over the
  campaign's rows of the ``event`` table (index ``event_campaign``), and each ``Url/Clicks``
  as the count of its click events (index ``event_url``); nothing is cached, so a counter
  cannot disagree with the events behind it. Counters cover all of the campaign's events;
  the event collections show the last 90 days (:mod:`bulkops.server.events`).
* **Ids** are 13-digit numbers, ``1100000000000 + n``, allocated inside the creating
  transaction.
* **Status rules.** A new campaign is ``Draft``. Only a ``Draft`` may be changed (PUT),
  deleted or scheduled; otherwise **409** naming its status. Scheduling needs a
  ``ScheduledTime`` in the future (400) and at least one contact list (400); it makes the
  campaign ``Scheduled``, and ``DELETE …/schedules/1`` makes it ``Draft`` again (404 when it
  has no schedule). ``Date`` is the last edit of a draft, the scheduled time of a scheduled
  campaign, and the run time of a sent one.
* **Scheduled campaigns are sent lazily**: before any campaign or event request of an
  account is answered, its campaigns whose time has come are sent — one ``sends`` event per
  ``Active`` contact on their lists, at the scheduled time, and status ``Sent`` — in one
  transaction each (:func:`send_due_campaigns`).
* **Validation (400 naming the element).** ``Name`` (≤ 80), ``Subject`` (≤ 200),
  ``EmailContentFormat`` (``HTML``/``XHTML``, any case), ``EmailContent`` (well-formed XML
  when XHTML), ``EmailTextContent``, ``FromEmail`` and ``ReplyToEmail`` naming an address of
  the account (by ``Email`` id, else by ``EmailAddress``) are required; ``FromName`` (≤ 100)
  defaults to the from address; YES/NO elements must be YES or NO; ``ContactLists`` must
  name user lists of the account. PUT merges: absent or empty elements keep their value.
  Server-set elements (``SharePageURL``, ``CampaignType``, ``ArchiveStatus``,
  ``ArchiveURL``), ``Status``, dates and counters in a body are ignored.
* Tracked URLs are the ``http(s)`` ``href`` values of ``EmailContent`` (at most 100,
  distinct, in order), recomputed on each change of a draft.
* "Now" is :func:`clock_ms`, which tests can pin through ``ApiState.extras[CLOCK_KEY]``.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bulkops.errors import XmlError
from bulkops.server.app import (
    PREFIX,
    ApiProblem,
    ApiState,
    atom_response,
    authenticate,
    base_for,
    state_of,
)
from bulkops.server.lists import atom_body, current_href, next_key, parse_body, path_id
from bulkops.server.paging import PAGE_SIZE, encode_token, next_href
from bulkops.server.store import STATUS_ACTIVE, now_ms, write_tx
from bulkops.wire.atom.campaigns import (
    campaign_entry,
    parse_campaign_entry,
    parse_schedule_entry,
    schedule_entry,
)
from bulkops.wire.atom.feeds import feed_head, feed_tail
from bulkops.wire.atom.syntax import parse_xml
from bulkops.wire.atom.writing import document
from bulkops.wire.model import (
    Base,
    Campaign,
    CampaignCounts,
    CampaignInput,
    CampaignUrl,
    EmailRef,
    EmailRefInput,
    FeedMeta,
    Schedule,
)
from bulkops.wire.uris import list_id_from_uri, resource_id_from_uri

__all__ = [
    "CAMPAIGN_ID_BASE",
    "CLOCK_KEY",
    "COUNTER_KINDS",
    "MAX_NAME",
    "MAX_SUBJECT",
    "MAX_URLS",
    "after_due",
    "campaign_counts",
    "campaign_id_of",
    "campaign_page",
    "checked_campaign",
    "clock_ms",
    "create_campaign",
    "delete_campaign",
    "encode_doc",
    "extract_urls",
    "feed_page",
    "from_ms",
    "get_campaign",
    "get_schedule",
    "routes",
    "schedule_campaign",
    "send_due_campaigns",
    "source_for",
    "to_ms",
    "unschedule_campaign",
    "update_campaign",
]

T = TypeVar("T")

#: Campaign ids are ``CAMPAIGN_ID_BASE + n`` (13 digits, like the real service's).
CAMPAIGN_ID_BASE = 1_100_000_000_000

#: Key of ``ApiState.extras`` holding a ``() -> int`` clock (ms since the epoch) that replaces
#: the wall clock for schedules, lazy sending and the 90-day event window.
CLOCK_KEY = "bulkops.clock"

#: ``event.kind`` -> the :class:`CampaignCounts` attribute it counts.
COUNTER_KINDS: dict[str, str] = {
    "sends": "sent",
    "opens": "opens",
    "clicks": "clicks",
    "bounces": "bounces",
    "forwards": "forwards",
    "optouts": "opt_outs",
    "spam": "spam_reports",
}

MAX_NAME = 80
MAX_SUBJECT = 200
MAX_FROM_NAME = 100
MAX_SHORT_FIELD = 1000
MAX_URLS = 100

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
_DEFAULTS = {
    "CampaignType": "CUSTOM",
    "ViewAsWebpage": "NO",
    "PermissionReminder": "NO",
    "IncludeForwardEmail": "NO",
    "IncludeSubscribeLink": "NO",
}
_HREF_RE = re.compile(r"""href\s*=\s*["']?\s*(https?://[^"'\s<>]+)""", re.IGNORECASE)


# -- shared helpers (also used by the events and settings resources) ------------------------


def clock_ms(state: ApiState) -> int:
    """The server's "now" in ms: ``state.extras[CLOCK_KEY]()`` when set, else the wall clock."""
    clock = state.extras.get(CLOCK_KEY)
    return int(clock()) if clock is not None else now_ms()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    """An aware UTC datetime from ms since the epoch (exact: no float on the way)."""
    return _EPOCH + ms * _MS


def to_ms(moment: datetime) -> int:
    """Ms since the epoch of an aware datetime, truncated (the inverse of :func:`from_ms`)."""
    return (moment - _EPOCH) // _MS


def source_for(base: Base, collection: str, title: str, now: int) -> FeedMeta:
    """The ``<source>`` of a single-resource GET: its collection, without paging."""
    path = base.href(collection)
    return FeedMeta(
        id_path=collection,
        title=title,
        updated=from_ms(now),
        author=base.username,
        next_href=None,
        first_href=path,
        current_href=path,
    )


def feed_page(
    request: Request,
    base: Base,
    *,
    collection: str,
    title: str,
    entries: Iterable[str],
    next_values: tuple[int, ...] | None,
    kind: str,
    current_first: bool = False,
) -> Response:
    """A feed page: head, entries, tail (spec §3.2); ``updated`` is :func:`clock_ms`.

    Args:
        collection: the collection below the account (``"campaigns/1100000000001/events/opens"``).
        title: the feed title.
        entries: rendered entries.
        next_values: the keyset of the next page, None on the last page.
        kind: the token kind of this feed.
        current_first: the campaigns feed's link order (``current`` before ``first``).
    """
    path = base.href(collection)
    meta = FeedMeta(
        id_path=collection,
        title=title,
        updated=from_ms(clock_ms(state_of(request))),
        author=base.username,
        next_href=None
        if next_values is None
        else next_href(path, request.query_params.multi_items(), encode_token(kind, *next_values)),
        first_href=path,
        current_href=current_href(base, collection, request),
    )
    head = feed_head(base, meta, current_first=current_first)
    return atom_response(document(head + "".join(entries) + feed_tail()))


def campaign_id_of(request: Request) -> int:
    """The ``campaign_id`` path parameter, or a 404."""
    found = path_id(request, "campaign_id")
    if found is None:
        raise ApiProblem(404, "No such campaign")
    return found


def _title(username: str) -> str:
    return f"Campaigns for customer: {username}"


# -- the stored document -------------------------------------------------------------------


class _Doc(msgspec.Struct, frozen=True, kw_only=True):
    """What ``campaign.doc`` holds: the text elements and the sender address ids."""

    fields: dict[str, str] = msgspec.field(default_factory=dict)
    from_email: int | None = None
    reply_to_email: int | None = None


_encode_doc = msgspec.msgpack.Encoder().encode
_decode_doc = msgspec.msgpack.Decoder(_Doc).decode


def encode_doc(fields: dict[str, str], from_email: int | None, reply_to_email: int | None) -> bytes:
    """The ``campaign.doc`` blob for these values (the seed writes campaigns with it too)."""
    return _encode_doc(_Doc(fields=fields, from_email=from_email, reply_to_email=reply_to_email))


# -- SQL -----------------------------------------------------------------------------------


def campaign_counts(db: sqlite3.Connection, campaign_id: int) -> CampaignCounts:
    """The campaign's counters: its events counted by kind (covering index ``event_campaign``)."""
    values = {
        COUNTER_KINDS[kind]: count
        for kind, count in db.execute(
            "SELECT kind, count(*) FROM event WHERE campaign_id = ? GROUP BY kind", (campaign_id,)
        )
        if kind in COUNTER_KINDS
    }
    return CampaignCounts(**values)


def _summary_record(row: Any) -> Campaign:
    campaign_id, name, status, date, updated = row
    return Campaign(
        id=str(campaign_id),
        name=name,
        status=status,
        date=from_ms(date),
        updated=from_ms(updated),
    )


def campaign_page(
    db: sqlite3.Connection, account_id: int, status: str | None, before: int | None, limit: int
) -> list[Campaign]:
    """Up to ``limit`` campaigns (summary view) with ids below ``before``, newest first."""
    where = "account_id = ?"
    args: list[object] = [account_id]
    if status is not None:
        where += " AND status = ?"
        args.append(status)
    if before is not None:
        where += " AND id < ?"
        args.append(before)
    rows = db.execute(
        f"SELECT id, name, status, date, updated FROM campaign WHERE {where}"
        " ORDER BY id DESC LIMIT ?",
        (*args, limit),
    ).fetchall()
    return [_summary_record(row) for row in rows]


def _email_refs(
    db: sqlite3.Connection, account_id: int, ids: Sequence[int | None]
) -> dict[int, str]:
    wanted = [i for i in ids if i is not None]
    if not wanted:
        return {}
    marks = ", ".join("?" * len(wanted))
    return dict(
        db.execute(
            f"SELECT id, email FROM email_address WHERE account_id = ? AND id IN ({marks})",
            (account_id, *wanted),
        ).fetchall()
    )


def get_campaign(db: sqlite3.Connection, account_id: int, campaign_id: int) -> Campaign | None:
    """The full campaign with its counters, URLs and their clicks, lists and senders; or None."""
    row = db.execute(
        "SELECT id, name, status, date, updated, doc, last_edit_date, last_run_date,"
        " next_run_date FROM campaign WHERE id = ? AND account_id = ?",
        (campaign_id, account_id),
    ).fetchone()
    if row is None:
        return None
    doc = _decode_doc(row[5])
    urls = tuple(
        CampaignUrl(id=str(url_id), url=url, clicks=clicks)
        for url_id, url, clicks in db.execute(
            "SELECT u.id, u.url, (SELECT count(*) FROM event e WHERE e.url_id = u.id)"
            " FROM campaign_url u WHERE u.campaign_id = ? ORDER BY u.id",
            (campaign_id,),
        )
    )
    list_ids = tuple(
        str(list_id)
        for (list_id,) in db.execute(
            "SELECT list_id FROM campaign_list WHERE campaign_id = ? ORDER BY list_id",
            (campaign_id,),
        )
    )
    emails = _email_refs(db, account_id, (doc.from_email, doc.reply_to_email))

    def ref(address_id: int | None) -> EmailRef | None:
        if address_id is None or address_id not in emails:
            return None
        return EmailRef(id=str(address_id), email=emails[address_id])

    last_edit, last_run, next_run = row[6], row[7], row[8]
    return Campaign(
        id=str(row[0]),
        name=row[1],
        status=row[2],
        date=from_ms(row[3]),
        updated=from_ms(row[4]),
        last_edit_date=None if last_edit is None else from_ms(last_edit),
        last_run_date=None if last_run is None else from_ms(last_run),
        next_run_date=None if next_run is None else from_ms(next_run),
        counts=campaign_counts(db, campaign_id),
        fields=doc.fields,
        urls=urls,
        list_ids=list_ids,
        from_email=ref(doc.from_email),
        reply_to_email=ref(doc.reply_to_email),
    )


def _resolve_email(
    db: sqlite3.Connection, account_id: int, ref: EmailRefInput | None, what: str
) -> int:
    if ref is None or (ref.uri is None and ref.email is None):
        raise ApiProblem(400, f"{what}: an Email id or an EmailAddress is required")
    if ref.uri is not None:
        key = resource_id_from_uri(ref.uri, "emailaddresses")
        if key is not None and "/settings/emailaddresses/" in ref.uri and key.isdigit():
            found = db.execute(
                "SELECT id FROM email_address WHERE account_id = ? AND id = ?",
                (account_id, int(key[:18])),
            ).fetchone()
            if found is not None:
                return int(found[0])
        raise ApiProblem(400, f"{what}: {ref.uri[:200]} names no e-mail address of this account")
    assert ref.email is not None
    found = db.execute(
        "SELECT id FROM email_address WHERE account_id = ? AND lower(email) = ?",
        (account_id, ref.email.lower()),
    ).fetchone()
    if found is None:
        raise ApiProblem(400, f"{what}: {ref.email[:200]} is not an e-mail address of this account")
    return int(found[0])


def _resolve_lists(db: sqlite3.Connection, account_id: int, uris: Iterable[str]) -> list[int]:
    ids: list[int] = []
    for uri in uris:
        key = list_id_from_uri(uri)
        if key is not None and not key.isdigit():
            raise ApiProblem(400, f"ContactLists: the system list {key} cannot be sent to")
        found = (
            None
            if key is None or len(key) > 18
            else db.execute(
                "SELECT id FROM list WHERE account_id = ? AND id = ?", (account_id, int(key))
            ).fetchone()
        )
        if found is None:
            raise ApiProblem(
                400, f"ContactLists: {uri[:200]} names no contact list of this account"
            )
        if found[0] not in ids:
            ids.append(int(found[0]))
    return ids


def extract_urls(content: str) -> list[str]:
    """The tracked URLs of an e-mail body: distinct ``http(s)`` ``href`` values, in order,
    at most :data:`MAX_URLS` (entities such as ``&amp;`` are decoded)."""
    found: list[str] = []
    for match in _HREF_RE.finditer(content):
        url = unescape(match.group(1))[:2000]
        if url not in found:
            found.append(url)
            if len(found) == MAX_URLS:
                break
    return found


def _write_parts(
    db: sqlite3.Connection, campaign_id: int, list_ids: list[int] | None, fields: dict[str, str]
) -> None:
    """Replace the campaign's lists (unless None) and tracked URLs."""
    if list_ids is not None:
        db.execute("DELETE FROM campaign_list WHERE campaign_id = ?", (campaign_id,))
        db.executemany(
            "INSERT INTO campaign_list (campaign_id, list_id) VALUES (?, ?)",
            [(campaign_id, list_id) for list_id in list_ids],
        )
    db.execute("DELETE FROM campaign_url WHERE campaign_id = ?", (campaign_id,))
    db.executemany(
        "INSERT INTO campaign_url (campaign_id, url) VALUES (?, ?)",
        [(campaign_id, url) for url in extract_urls(fields.get("EmailContent", ""))],
    )


def create_campaign(
    db: sqlite3.Connection, account_id: int, spec: CampaignInput, now: int
) -> Campaign:
    """Create a ``Draft`` campaign from a checked request (see :func:`checked_campaign`).

    Raises:
        ApiProblem: 400 for sender addresses or lists that are not the account's.
    """
    assert spec.name is not None
    with write_tx(db):
        from_id = _resolve_email(db, account_id, spec.from_email, "FromEmail")
        reply_id = _resolve_email(db, account_id, spec.reply_to_email, "ReplyToEmail")
        list_ids = _resolve_lists(db, account_id, spec.list_uris or ())
        fields = dict(_DEFAULTS) | spec.fields
        _check_xhtml(fields)
        if "FromName" not in fields:
            (fields["FromName"],) = db.execute(
                "SELECT email FROM email_address WHERE id = ?", (from_id,)
            ).fetchone()
        (top,) = db.execute("SELECT coalesce(max(id), 0) FROM campaign").fetchone()
        campaign_id = max(int(top), CAMPAIGN_ID_BASE) + 1
        db.execute(
            "INSERT INTO campaign (id, account_id, name, status, date, doc, updated,"
            " last_edit_date) VALUES (?, ?, ?, 'Draft', ?, ?, ?, ?)",
            (
                campaign_id,
                account_id,
                spec.name,
                now,
                encode_doc(fields, from_id, reply_id),
                now,
                now,
            ),
        )
        _write_parts(db, campaign_id, list_ids, fields)
        created = get_campaign(db, account_id, campaign_id)
    assert created is not None
    return created


def _draft(db: sqlite3.Connection, account_id: int, campaign_id: int) -> tuple[str, bytes]:
    """(name, doc) of a Draft campaign of the account; 404 when missing, 409 when not Draft."""
    row = db.execute(
        "SELECT status, name, doc FROM campaign WHERE id = ? AND account_id = ?",
        (campaign_id, account_id),
    ).fetchone()
    if row is None:
        raise ApiProblem(404, "No such campaign")
    if row[0] != "Draft":
        raise ApiProblem(409, f"The campaign is {row[0]}: only a Draft campaign can be changed")
    return row[1], row[2]


def update_campaign(
    db: sqlite3.Connection, account_id: int, campaign_id: int, spec: CampaignInput, now: int
) -> None:
    """Merge a checked request into a ``Draft`` campaign (absent elements keep their value).

    Raises:
        ApiProblem: 404 (no such campaign), 409 (not a Draft), 400 (bad senders or lists).
    """
    with write_tx(db):
        name, blob = _draft(db, account_id, campaign_id)
        doc = _decode_doc(blob)
        from_id = (
            doc.from_email
            if spec.from_email is None
            else _resolve_email(db, account_id, spec.from_email, "FromEmail")
        )
        reply_id = (
            doc.reply_to_email
            if spec.reply_to_email is None
            else _resolve_email(db, account_id, spec.reply_to_email, "ReplyToEmail")
        )
        list_ids = (
            None if spec.list_uris is None else _resolve_lists(db, account_id, spec.list_uris)
        )
        fields = doc.fields | spec.fields
        _check_xhtml(fields)
        db.execute(
            "UPDATE campaign SET name = ?, doc = ?, date = ?, updated = ?, last_edit_date = ?"
            " WHERE id = ?",
            (
                spec.name or name,
                encode_doc(fields, from_id, reply_id),
                now,
                now,
                now,
                campaign_id,
            ),
        )
        _write_parts(db, campaign_id, list_ids, fields)


def delete_campaign(db: sqlite3.Connection, account_id: int, campaign_id: int) -> None:
    """Delete a ``Draft`` campaign with its lists and URLs.

    Raises:
        ApiProblem: 404 (no such campaign), 409 (not a Draft).
    """
    with write_tx(db):
        _draft(db, account_id, campaign_id)
        db.execute("DELETE FROM campaign WHERE id = ?", (campaign_id,))


def _schedule_of(db: sqlite3.Connection, account_id: int, campaign_id: int) -> Schedule | None:
    row = db.execute(
        "SELECT status, next_run_date, updated FROM campaign WHERE id = ? AND account_id = ?",
        (campaign_id, account_id),
    ).fetchone()
    if row is None:
        raise ApiProblem(404, "No such campaign")
    status, when, updated = row
    if status != "Scheduled" or when is None:
        return None
    return Schedule(campaign_id=str(campaign_id), time=from_ms(when), updated=from_ms(updated))


def get_schedule(db: sqlite3.Connection, account_id: int, campaign_id: int) -> Schedule | None:
    """The campaign's schedule, None when it is not ``Scheduled``.

    Raises:
        ApiProblem: 404 when the account has no such campaign.
    """
    return _schedule_of(db, account_id, campaign_id)


def schedule_campaign(
    db: sqlite3.Connection, account_id: int, campaign_id: int, when: int, now: int
) -> Schedule:
    """Schedule a ``Draft`` campaign for ``when`` (ms).

    Raises:
        ApiProblem: 404 (no such campaign), 409 (not a Draft), 400 (``when`` not after
            ``now``, or no contact list to send to).
    """
    with write_tx(db):
        _draft(db, account_id, campaign_id)
        if when <= now:
            raise ApiProblem(400, "ScheduledTime must be in the future")
        (lists,) = db.execute(
            "SELECT count(*) FROM campaign_list WHERE campaign_id = ?", (campaign_id,)
        ).fetchone()
        if not lists:
            raise ApiProblem(400, "ContactLists: the campaign has no contact list to send to")
        db.execute(
            "UPDATE campaign SET status = 'Scheduled', next_run_date = ?, date = ?, updated = ?"
            " WHERE id = ?",
            (when, when, now, campaign_id),
        )
        found = _schedule_of(db, account_id, campaign_id)
    assert found is not None
    return found


def unschedule_campaign(
    db: sqlite3.Connection, account_id: int, campaign_id: int, now: int
) -> None:
    """Take a ``Scheduled`` campaign back to ``Draft``.

    Raises:
        ApiProblem: 404 (no such campaign, or not scheduled), 409 (``Running``).
    """
    with write_tx(db):
        row = db.execute(
            "SELECT status FROM campaign WHERE id = ? AND account_id = ?", (campaign_id, account_id)
        ).fetchone()
        if row is None:
            raise ApiProblem(404, "No such campaign")
        if row[0] == "Running":
            raise ApiProblem(409, "The campaign is Running: it can no longer be unscheduled")
        if row[0] != "Scheduled":
            raise ApiProblem(404, "The campaign has no schedule")
        db.execute(
            "UPDATE campaign SET status = 'Draft', next_run_date = NULL, date = ?, updated = ?"
            " WHERE id = ?",
            (now, now, campaign_id),
        )


def send_due_campaigns(db: sqlite3.Connection, account_id: int, now: int) -> int:
    """Send the account's ``Scheduled`` campaigns whose time is at or before ``now``.

    Each is one transaction: a ``sends`` event at its scheduled time for every ``Active``
    contact on any of its lists, then status ``Sent`` with ``LastRunDate`` and ``Date`` set to
    that time. Costs one indexed query when nothing is due.

    Returns:
        How many campaigns were sent.
    """
    due = db.execute(
        "SELECT id FROM campaign WHERE account_id = ? AND status = 'Scheduled'"
        " AND next_run_date <= ?",
        (account_id, now),
    ).fetchall()
    sent = 0
    for (campaign_id,) in due:
        with write_tx(db):
            row = db.execute(
                "SELECT next_run_date FROM campaign WHERE id = ? AND status = 'Scheduled'",
                (campaign_id,),
            ).fetchone()
            if row is None:  # another request sent it first
                continue
            (when,) = row
            db.execute(
                "INSERT INTO event (account_id, campaign_id, contact_id, kind, time)"
                " SELECT ?, ?, c.id, 'sends', ? FROM contact c"
                " WHERE c.status = ? AND c.id IN (SELECT m.contact_id FROM membership m"
                " JOIN campaign_list cl ON cl.list_id = m.list_id WHERE cl.campaign_id = ?)"
                " ORDER BY c.id",
                (account_id, campaign_id, when, STATUS_ACTIVE, campaign_id),
            )
            db.execute(
                "UPDATE campaign SET status = 'Sent', last_run_date = ?, next_run_date = NULL,"
                " date = ?, updated = ? WHERE id = ?",
                (when, when, now, campaign_id),
            )
            sent += 1
    return sent


def after_due(
    db: sqlite3.Connection, account_id: int, now: int, fn: Callable[..., T], *args: object
) -> T:
    """Send what is due (:func:`send_due_campaigns`), then return ``fn(db, *args)``."""
    send_due_campaigns(db, account_id, now)
    return fn(db, *args)


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


def _check_xhtml(fields: dict[str, str]) -> None:
    """400 unless XHTML content is well-formed XML (checked on the merged values)."""
    if fields.get("EmailContentFormat") == "XHTML" and "EmailContent" in fields:
        content = fields["EmailContent"].encode("utf-8", "surrogatepass")
        try:
            parse_xml(content, max_bytes=len(content) + 1)
        except XmlError as exc:
            raise ApiProblem(400, f"EmailContent: not well-formed XHTML ({exc})") from None


# -- handlers ------------------------------------------------------------------------------


async def _campaigns(request: Request) -> Response:
    account = await authenticate(request)
    state = state_of(request)
    now = clock_ms(state)
    base = base_for(request, account)
    if request.method == "POST":
        data = await parse_body(request, parse_campaign_entry, await atom_body(request))
        spec = checked_campaign(data, creating=True)
        created = await state.store.run(create_campaign, account.id, spec, now)
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
    rows = await state.store.run(
        after_due,
        account.id,
        now,
        campaign_page,
        account.id,
        status,
        None if token is None else token[0],
        PAGE_SIZE + 1,
    )
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return feed_page(
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
        found = await state.store.run(
            after_due, account.id, now, get_campaign, account.id, campaign_id
        )
        if found is None:
            raise ApiProblem(404, "No such campaign")
        base = base_for(request, account)
        source = source_for(base, "campaigns", _title(account.username), now)
        return atom_response(document(campaign_entry(base, found, view="full", source=source)))
    if request.method == "PUT":
        data = await parse_body(request, parse_campaign_entry, await atom_body(request))
        campaign_id = campaign_id_of(request)
        spec = checked_campaign(data, creating=False)
        await state.store.run(
            after_due, account.id, now, update_campaign, account.id, campaign_id, spec, now
        )
        return Response(status_code=204)
    campaign_id = campaign_id_of(request)
    await state.store.run(after_due, account.id, now, delete_campaign, account.id, campaign_id)
    return Response(status_code=204)


async def _schedules(request: Request) -> Response:
    account = await authenticate(request)
    state = state_of(request)
    now = clock_ms(state)
    base = base_for(request, account)
    if request.method == "POST":
        when = await parse_body(request, parse_schedule_entry, await atom_body(request))
        campaign_id = campaign_id_of(request)
        created = await state.store.run(
            after_due,
            account.id,
            now,
            schedule_campaign,
            account.id,
            campaign_id,
            to_ms(when),
            now,
        )
        return atom_response(
            document(schedule_entry(base, created)),
            status=201,
            headers={"Location": base.id(f"campaigns/{campaign_id}/schedules/{created.id}")},
        )
    campaign_id = campaign_id_of(request)
    found = await state.store.run(after_due, account.id, now, get_schedule, account.id, campaign_id)
    return feed_page(
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
        await state.store.run(
            after_due, account.id, now, unschedule_campaign, account.id, campaign_id, now
        )
        return Response(status_code=204)
    found = await state.store.run(after_due, account.id, now, get_schedule, account.id, campaign_id)
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
