"""Campaigns and their schedules (spec §8): entries, record parsers, request bodies.

:func:`campaign_entry` (summary or full, :data:`CampaignView`) and :func:`schedule_entry`
build; :func:`campaign_from_entry`, :func:`schedule_from_entry` and :func:`parse_campaign`
read them back; :func:`parse_campaign_entry` and :func:`parse_schedule_entry` read the bodies
of a campaign POST/PUT and a schedule POST.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

from lxml import etree

from bulkops.errors import XmlError
from bulkops.wire.atom.lists import _list_uri
from bulkops.wire.atom.reading import (
    _XML_WS,
    _child,
    _children,
    _Entry,
    _id_or_uri,
    _optional_int,
    _optional_time_of,
    _ref_uri,
    _request_payload,
    _squeeze,
    _string,
)
from bulkops.wire.atom.syntax import (
    CTCT_NS,
    DEFAULT_MAX_BYTES,
    _attr,
    _text,
    format_time,
    parse_xml,
)
from bulkops.wire.atom.writing import (
    _AUTHOR_CC,
    _CONTENT_OPEN,
    _ENTRY_OPEN,
    _optional_time,
    _self_ref,
    _source,
)
from bulkops.wire.model import (
    CAMPAIGN_FIELDS,
    CAMPAIGN_READ_ONLY_FIELDS,
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
from bulkops.wire.uris import list_id_from_uri

__all__ = [
    "CampaignView",
    "campaign_entry",
    "campaign_from_entry",
    "parse_campaign",
    "parse_campaign_entry",
    "parse_schedule_entry",
    "schedule_entry",
    "schedule_from_entry",
]

#: The two campaign renderings: collection (``Name, Status, Date``) and single resource.
CampaignView = Literal["summary", "full"]

# (element, CampaignCounts attribute) in the order the full view writes the counters.
_COUNTERS = (
    ("Sent", "sent"),
    ("Opens", "opens"),
    ("Clicks", "clicks"),
    ("Bounces", "bounces"),
    ("Forwards", "forwards"),
    ("OptOuts", "opt_outs"),
    ("SpamReports", "spam_reports"),
)
_COUNTER_ATTRS = dict(_COUNTERS)
_CAMPAIGN_FIELD_TAGS = tuple((name, f"<{name}>", f"</{name}>") for name in CAMPAIGN_FIELDS)
_CAMPAIGN_FIELD_NAMES = frozenset(CAMPAIGN_FIELDS)
_CAMPAIGN_WRITABLE = _CAMPAIGN_FIELD_NAMES - CAMPAIGN_READ_ONLY_FIELDS


def _email_ref(base: Base, element: str, ref: EmailRef | None) -> str:
    if ref is None:
        return ""
    email = _self_ref(base, "Email", f"settings/emailaddresses/{ref.id}")
    return f"<{element}>{email}<EmailAddress>{_text(ref.email)}</EmailAddress></{element}>"


def campaign_entry(
    base: Base,
    campaign: Campaign,
    *,
    view: CampaignView = "full",
    source: FeedMeta | None = None,
) -> str:
    """A ``Campaign`` entry (``campaigns-feed.xml``, ``campaign-entry.xml``; spec §8).

    * ``"summary"`` (``GET /campaigns``): ``Name, Status, Date``.
    * ``"full"`` (``GET /campaigns/{id}``): then ``LastEditDate, LastRunDate, NextRunDate``
      (each omitted while None), the counters ``Sent … SpamReports`` (when ``counts`` is set),
      every element of :data:`CAMPAIGN_FIELDS` in order (missing ones as ``<X></X>``),
      ``Urls`` (each ``Url`` with its click-collection id, ``Value`` and ``Clicks``),
      ``ContactLists``, ``FromEmail``, ``ReplyToEmail`` (omitted while None).

    The edit link and ``<id>`` name the campaign itself (the fixture's collection URI is a
    docs typo). Text is escaped, so HTML in ``EmailContent`` travels as text.

    Raises:
        ValueError: an unknown ``view``.
    """
    suffix = f"campaigns/{campaign.id}"
    uri = _attr(base.id(suffix))
    name = _text(campaign.name)
    parts = [
        f'{_ENTRY_OPEN}<link href="{_attr(base.href(suffix))}" rel="edit" />'
        f'<id>{uri}</id><title type="text">{name}</title>'
        f"<updated>{format_time(campaign.updated)}</updated>{_AUTHOR_CC}{_CONTENT_OPEN}"
        f'<Campaign xmlns="{CTCT_NS}" id="{uri}"><Name>{name}</Name>'
        f"<Status>{_text(campaign.status)}</Status><Date>{format_time(campaign.date)}</Date>"
    ]
    if view == "full":
        parts.append(_optional_time("LastEditDate", campaign.last_edit_date))
        parts.append(_optional_time("LastRunDate", campaign.last_run_date))
        parts.append(_optional_time("NextRunDate", campaign.next_run_date))
        counts = campaign.counts
        if counts is not None:
            parts.extend(
                f"<{element}>{getattr(counts, attr)}</{element}>" for element, attr in _COUNTERS
            )
        fields = campaign.fields
        parts.extend(
            f"{open_}{_text(fields.get(name, ''))}{close}"
            for name, open_, close in _CAMPAIGN_FIELD_TAGS
        )
        parts.append("<Urls>")
        parts.extend(
            f'<Url id="{_attr(base.id(f"{suffix}/events/urls/{url.id}"))}">'
            f"<Value>{_text(url.url)}</Value><Clicks>{url.clicks}</Clicks></Url>"
            for url in campaign.urls
        )
        parts.append("</Urls><ContactLists>")
        parts.extend(
            _self_ref(base, "ContactList", f"lists/{list_id}") for list_id in campaign.list_ids
        )
        parts.append("</ContactLists>")
        parts.append(_email_ref(base, "FromEmail", campaign.from_email))
        parts.append(_email_ref(base, "ReplyToEmail", campaign.reply_to_email))
    elif view != "summary":
        raise ValueError(f"unknown campaign view {view!r}")
    parts.append(f"</Campaign></content>{_source(base, source)}</entry>")
    return "".join(parts)


def schedule_entry(base: Base, schedule: Schedule) -> str:
    """A ``Schedule`` entry (``campaigns/{id}/schedules/1``, spec §8.3): edit link, id, empty
    title, updated, author, and the payload with its ``ScheduledTime``."""
    suffix = f"campaigns/{schedule.campaign_id}/schedules/{schedule.id}"
    uri = _attr(base.id(suffix))
    return (
        f'{_ENTRY_OPEN}<link href="{_attr(base.href(suffix))}" rel="edit" />'
        f'<id>{uri}</id><title type="text"></title>'
        f"<updated>{format_time(schedule.updated)}</updated>{_AUTHOR_CC}{_CONTENT_OPEN}"
        f'<Schedule xmlns="{CTCT_NS}" id="{uri}">'
        f"<ScheduledTime>{format_time(schedule.time)}</ScheduledTime></Schedule></content></entry>"
    )


def _email_ref_of(el: etree._Element) -> EmailRef:
    ref = _child(el, "Email")
    address = _child(el, "EmailAddress")
    uri = "" if ref is None else _ref_uri(ref)
    return EmailRef(
        id=_id_or_uri(uri, "emailaddresses"),
        email="" if address is None else _string(address).strip(_XML_WS),
    )


def _campaign_url(el: etree._Element) -> CampaignUrl:
    values = {name.lower(): child for name, child in _children(el)}
    value, clicks = values.get("value"), values.get("clicks")
    return CampaignUrl(
        id=_id_or_uri(_squeeze(el.get("id") or ""), "urls"),
        url="" if value is None else _string(value).strip(_XML_WS),
        clicks=0 if clicks is None else (_optional_int(clicks, "Clicks") or 0),
    )


def _campaign_record(entry: _Entry) -> Campaign:
    payload = entry.required_payload("Campaign")
    scalars: dict[str, etree._Element] = {}
    fields: dict[str, str] = {}
    urls: list[CampaignUrl] = []
    list_ids: list[str] = []
    for local, child in _children(payload):
        if local in _CAMPAIGN_FIELD_NAMES:
            if local not in fields:
                value = _string(child)
                if value:
                    fields[local] = value
        elif local in ("Urls", "URLS"):
            if "Urls" not in scalars:
                scalars["Urls"] = child
                urls.extend(_campaign_url(sub) for name, sub in _children(child) if name == "Url")
        elif local == "ContactLists":
            if local not in scalars:
                scalars[local] = child
                list_ids.extend(
                    list_id_from_uri(uri) or uri
                    for uri in (_list_uri(sub) for name, sub in _children(child))
                )
        else:
            scalars.setdefault(local, child)

    def when(name: str) -> datetime | None:
        found = scalars.get(name)
        return None if found is None else _optional_time_of(found, name)

    counts: CampaignCounts | None = None
    if any(element in scalars for element in _COUNTER_ATTRS):
        values = {}
        for element, attr in _COUNTERS:
            found = scalars.get(element)
            values[attr] = 0 if found is None else (_optional_int(found, element) or 0)
        counts = CampaignCounts(**values)
    name_el, status_el = scalars.get("Name"), scalars.get("Status")
    updated = entry.required_updated()
    from_el, reply_el = scalars.get("FromEmail"), scalars.get("ReplyToEmail")
    return Campaign(
        id=entry.resource_id(payload, "campaigns"),
        name=entry.title if name_el is None else _string(name_el),
        status="" if status_el is None else _string(status_el).strip(_XML_WS),
        date=when("Date") or updated,
        updated=updated,
        last_edit_date=when("LastEditDate"),
        last_run_date=when("LastRunDate"),
        next_run_date=when("NextRunDate"),
        counts=counts,
        fields=fields,
        urls=tuple(urls),
        list_ids=tuple(list_ids),
        from_email=None if from_el is None else _email_ref_of(from_el),
        reply_to_email=None if reply_el is None else _email_ref_of(reply_el),
    )


def campaign_from_entry(el: etree._Element) -> Campaign:
    """The :class:`Campaign` of a campaign ``<entry>`` element, in whichever view it was sent.

    The id comes from the entry id, else the payload id (``campaign-entry.xml``'s entry id
    names the collection), else the edit link. ``Urls`` and ``URLS``, ``Value`` and ``value``
    are all read; counters that are absent read as 0 when any counter is present, and
    ``counts`` is None when none is. ``Date`` defaults to ``updated``; text fields are kept as
    written and empty ones are left out.

    Raises:
        XmlError: not an entry, no ``Campaign`` payload, no campaign id, no ``updated``, or a
            bad value.
    """
    return _campaign_record(_Entry(el))


def parse_campaign(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Campaign:
    """Parse a single campaign document (``GET /campaigns/{id}``, a 201 body).

    Raises:
        XmlError: hostile or malformed XML, or a bad campaign entry.
    """
    return campaign_from_entry(parse_xml(data, max_bytes=max_bytes))


def _email_ref_input(el: etree._Element) -> EmailRefInput:
    ref = _child(el, "Email")
    address = _child(el, "EmailAddress")
    uri = None if ref is None else (_ref_uri(ref) or None)
    email = None if address is None else (_string(address).strip(_XML_WS) or None)
    return EmailRefInput(uri=uri, email=email)


def parse_campaign_entry(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> CampaignInput:
    """Parse the body of ``POST /campaigns`` or ``PUT /campaigns/{id}``.

    The whole entry a GET returned parses too: ``<source>``, links, ``Status``, dates,
    counters, ``Urls`` and the server-set elements (:data:`CAMPAIGN_READ_ONLY_FIELDS`) are
    ignored. See :class:`CampaignInput`.

    Raises:
        XmlError: hostile or malformed XML, no entry with a ``Campaign``, or a
            ``ContactList`` without an id.
    """
    payload = _request_payload(data, "Campaign", max_bytes)
    name: str | None = None
    seen: set[str] = set()
    fields: dict[str, str] = {}
    list_uris: tuple[str, ...] | None = None
    from_email: EmailRefInput | None = None
    reply_to_email: EmailRefInput | None = None
    for local, child in _children(payload):
        if local in seen:
            continue
        seen.add(local)
        if local == "Name":
            name = _string(child).strip(_XML_WS) or None
        elif local in _CAMPAIGN_WRITABLE:
            value = _string(child)
            if value.strip(_XML_WS):
                fields[local] = value
        elif local == "ContactLists":
            list_uris = tuple(
                _list_uri(sub) for kind, sub in _children(child) if kind == "ContactList"
            )
        elif local == "FromEmail":
            from_email = _email_ref_input(child)
        elif local == "ReplyToEmail":
            reply_to_email = _email_ref_input(child)
    return CampaignInput(
        name=name,
        fields=fields,
        list_uris=list_uris,
        from_email=from_email,
        reply_to_email=reply_to_email,
    )


def parse_schedule_entry(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> datetime:
    """The ``ScheduledTime`` of a ``POST /campaigns/{id}/schedules`` body.

    Raises:
        XmlError: hostile or malformed XML, no entry with a ``Schedule``, or no valid
            ``ScheduledTime``.
    """
    payload = _request_payload(data, "Schedule", max_bytes)
    found = _child(payload, "ScheduledTime")
    moment = None if found is None else _optional_time_of(found, "ScheduledTime")
    if moment is None:
        raise XmlError("the Schedule has no ScheduledTime")
    return moment


_SCHEDULE_RE = re.compile(r"/campaigns/([^/?#]+)/schedules/([^/?#]+)/?$")


def schedule_from_entry(el: etree._Element) -> Schedule:
    """The :class:`Schedule` of a schedule ``<entry>`` element.

    Raises:
        XmlError: not an entry, no ``Schedule`` payload, no ``…/campaigns/{id}/schedules/{n}``
            id, or no ``ScheduledTime``/``updated``.
    """
    return _schedule_record(_Entry(el))


def _schedule_record(entry: _Entry) -> Schedule:
    payload = entry.required_payload("Schedule")
    for uri in (payload.get("id"), entry.id, entry.links.get("edit")):
        match = _SCHEDULE_RE.search(urlsplit(_squeeze(uri or "")).path)
        if match is not None:
            break
    else:
        raise XmlError("schedule entry has no …/campaigns/{id}/schedules/{n} id")
    found = _child(payload, "ScheduledTime")
    moment = None if found is None else _optional_time_of(found, "ScheduledTime")
    if moment is None:
        raise XmlError("schedule entry has no <ScheduledTime>")
    return Schedule(
        campaign_id=match.group(1), id=match.group(2), time=moment, updated=entry.required_updated()
    )
