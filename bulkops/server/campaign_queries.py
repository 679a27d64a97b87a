"""The account-scoped SQL of campaigns and their schedules (spec §8), and lazy sending.

Every function takes a connection first (``store.run`` calls it in a worker thread) and
touches only the given account's rows. Refusals are the domain errors of
:mod:`bulkops.server.errors` (``NotFound``, ``Conflict``, ``Invalid``), never an HTTP status.

Invariants:

* **Counters are the events.** ``Sent, Opens, Clicks, Bounces, Forwards, OptOuts,
  SpamReports`` are computed on every read as ``count(*) … GROUP BY kind`` over the
  campaign's rows of the ``event`` table (index ``event_campaign``), and each ``Url/Clicks``
  as the count of its click events (index ``event_url``); nothing is cached, so a counter
  cannot disagree with the events behind it. Counters cover all of the campaign's events;
  the event collections show the last 90 days (:mod:`bulkops.server.events`).
* **Ids** are 13-digit numbers, ``1100000000000 + n``, allocated inside the creating
  transaction.
* **Status rules.** A new campaign is ``Draft``. Only a ``Draft`` may be changed, deleted or
  scheduled; otherwise ``Conflict`` naming its status. Scheduling needs a time after "now"
  and at least one contact list (``Invalid``); it makes the campaign ``Scheduled``, and
  unscheduling makes it ``Draft`` again (``NotFound`` when it has no schedule). ``Date`` is
  the last edit of a draft, the scheduled time of a scheduled campaign, and the run time of
  a sent one.
* **Scheduled campaigns are sent lazily**: before any campaign or event request of an
  account is answered, its campaigns whose time has come are sent — one ``sends`` event per
  ``Active`` contact on their lists, at the scheduled time, and status ``Sent`` — in one
  transaction each (:func:`send_due_campaigns`).
* Sender addresses must be the account's (by ``Email`` id, else by ``EmailAddress``), and
  ``ContactLists`` user lists of the account (``Invalid`` naming the element otherwise).
* Tracked URLs are the ``http(s)`` ``href`` values of ``EmailContent`` (at most 100,
  distinct, in order), recomputed on each change of a draft.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from html import unescape
from typing import Any, TypeVar

import msgspec

from bulkops.errors import XmlError
from bulkops.server.errors import Conflict, Invalid, NotFound
from bulkops.server.store import STATUS_ACTIVE, from_ms, write_tx
from bulkops.wire.atom.syntax import parse_xml
from bulkops.wire.model import (
    Campaign,
    CampaignCounts,
    CampaignInput,
    CampaignUrl,
    EmailRef,
    EmailRefInput,
    Schedule,
)
from bulkops.wire.uris import list_id_from_uri, resource_id_from_uri

__all__ = [
    "CAMPAIGN_ID_BASE",
    "COUNTER_KINDS",
    "MAX_URLS",
    "after_due",
    "campaign_counts",
    "campaign_name",
    "campaign_page",
    "create_campaign",
    "delete_campaign",
    "encode_doc",
    "extract_urls",
    "get_campaign",
    "get_schedule",
    "schedule_campaign",
    "send_due_campaigns",
    "unschedule_campaign",
    "update_campaign",
]

T = TypeVar("T")

#: Campaign ids are ``CAMPAIGN_ID_BASE + n`` (13 digits, like the real service's).
CAMPAIGN_ID_BASE = 1_100_000_000_000

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

#: Most tracked URLs of one campaign.
MAX_URLS = 100

_DEFAULTS = {
    "CampaignType": "CUSTOM",
    "ViewAsWebpage": "NO",
    "PermissionReminder": "NO",
    "IncludeForwardEmail": "NO",
    "IncludeSubscribeLink": "NO",
}
_HREF_RE = re.compile(r"""href\s*=\s*["']?\s*(https?://[^"'\s<>]+)""", re.IGNORECASE)


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


# -- reads and writes -----------------------------------------------------------------------


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
        raise Invalid(f"{what}: an Email id or an EmailAddress is required")
    if ref.uri is not None:
        key = resource_id_from_uri(ref.uri, "emailaddresses")
        if key is not None and "/settings/emailaddresses/" in ref.uri and key.isdigit():
            found = db.execute(
                "SELECT id FROM email_address WHERE account_id = ? AND id = ?",
                (account_id, int(key[:18])),
            ).fetchone()
            if found is not None:
                return int(found[0])
        raise Invalid(f"{what}: {ref.uri[:200]} names no e-mail address of this account")
    assert ref.email is not None
    found = db.execute(
        "SELECT id FROM email_address WHERE account_id = ? AND lower(email) = ?",
        (account_id, ref.email.lower()),
    ).fetchone()
    if found is None:
        raise Invalid(f"{what}: {ref.email[:200]} is not an e-mail address of this account")
    return int(found[0])


def _resolve_lists(db: sqlite3.Connection, account_id: int, uris: Iterable[str]) -> list[int]:
    ids: list[int] = []
    for uri in uris:
        key = list_id_from_uri(uri)
        if key is not None and not key.isdigit():
            raise Invalid(f"ContactLists: the system list {key} cannot be sent to")
        found = (
            None
            if key is None or len(key) > 18
            else db.execute(
                "SELECT id FROM list WHERE account_id = ? AND id = ?", (account_id, int(key))
            ).fetchone()
        )
        if found is None:
            raise Invalid(f"ContactLists: {uri[:200]} names no contact list of this account")
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
    """Create a ``Draft`` campaign from a checked request
    (:func:`bulkops.server.campaigns.checked_campaign`).

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
        raise NotFound("No such campaign")
    if row[0] != "Draft":
        raise Conflict(f"The campaign is {row[0]}: only a Draft campaign can be changed")
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
        raise NotFound("No such campaign")
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
            raise Invalid("ScheduledTime must be in the future")
        (lists,) = db.execute(
            "SELECT count(*) FROM campaign_list WHERE campaign_id = ?", (campaign_id,)
        ).fetchone()
        if not lists:
            raise Invalid("ContactLists: the campaign has no contact list to send to")
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
            raise NotFound("No such campaign")
        if row[0] == "Running":
            raise Conflict("The campaign is Running: it can no longer be unscheduled")
        if row[0] != "Scheduled":
            raise NotFound("The campaign has no schedule")
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


def _check_xhtml(fields: dict[str, str]) -> None:
    """``Invalid`` unless XHTML content is well-formed XML (checked on the merged values)."""
    if fields.get("EmailContentFormat") == "XHTML" and "EmailContent" in fields:
        content = fields["EmailContent"].encode("utf-8", "surrogatepass")
        try:
            parse_xml(content, max_bytes=len(content) + 1)
        except XmlError as exc:
            raise Invalid(f"EmailContent: not well-formed XHTML ({exc})") from None


def campaign_name(db: sqlite3.Connection, account_id: int, campaign_id: int) -> str | None:
    """The name of the account's campaign, or None when it has no such campaign."""
    row = db.execute(
        "SELECT name FROM campaign WHERE id = ? AND account_id = ?", (campaign_id, account_id)
    ).fetchone()
    return None if row is None else str(row[0])
