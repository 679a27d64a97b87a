"""Campaign events (spec §10): event and summary entries, their parsers, the events service
document.

An event's collection (opens, clicks, bounces, …) is told by its payload element; both
spellings of the opt-out element are read (spec §10.1, fact 9).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal
from urllib.parse import unquote

from lxml import etree

from bulkops.errors import XmlError
from bulkops.wire.atom.reading import (
    _XML_WS,
    _child,
    _Entry,
    _first_children,
    _id_or_uri,
    _optional_int,
    _optional_time_of,
    _ref_uri,
    _squeeze,
    _string,
    local_name,
)
from bulkops.wire.atom.syntax import (
    APP_NS,
    ATOM_MEDIA_TYPE,
    ATOM_NS,
    CTCT_NS,
    _attr,
    _text,
    format_time,
)
from bulkops.wire.atom.writing import (
    _ATOM_SELF,
    _AUTHOR_CC,
    _CONTENT_OPEN,
    _ENTRY_OPEN,
    _optional_text,
    _self_ref,
    document,
)
from bulkops.wire.model import EVENT_ELEMENTS, Base, Event, EventSummary

__all__ = [
    "event_entry",
    "event_from_entry",
    "event_summary_entry",
    "event_summary_from_entry",
    "events_service_document",
]

# Words of titles: "Email Open Event for Customer: …", "Open Events for Customer: …".
_EVENT_LABELS = {
    "sends": "Send",
    "opens": "Open",
    "clicks": "Click",
    "bounces": "Bounce",
    "forwards": "Forward",
    "optouts": "Opt-out",
}
# Payload element -> collection; both spellings of the opt-out element (spec §10.1, fact 9).
_EVENT_KIND_OF = {element: kind for kind, element in EVENT_ELEMENTS.items()} | {
    "OptOutEvent": "optouts"
}


def event_entry(base: Base, event: Event, *, collection: str) -> str:
    """An event entry (``contact-events-sends.xml``, ``campaign-events-bounces-page1.xml``;
    spec §10).

    No edit link; the entry id and the payload id are ``{collection}/{event.id}``; the title is
    "Email {Kind} Event for Customer: {user}, Campaign: {campaign URI}". The payload is the
    element of :data:`EVENT_ELEMENTS` (``OptoutEvent`` for opt-outs) with ``Contact``
    (``EmailAddress`` and a self link), ``Campaign`` (a self link, then ``Name`` when known),
    ``EventTime``, then ``LinkUrl`` for a click and ``Code, Description, BounceMessage`` for a
    bounce (each omitted while None).

    Args:
        collection: the collection the entry is listed in, below the account
            (``"campaigns/1100000000001/events/opens"``, ``"contacts/7/events/sends"``).

    Raises:
        KeyError: an unknown ``event.kind``.
    """
    element = EVENT_ELEMENTS[event.kind]
    uri = _attr(base.id(f"{collection}/{event.id}"))
    contact = _attr(base.id(f"contacts/{event.contact_id}"))
    campaign = _attr(base.id(f"campaigns/{event.campaign_id}"))
    when = format_time(event.time)
    extra = ""
    if event.kind == "clicks":
        extra = _optional_text("LinkUrl", event.link_url)
    elif event.kind == "bounces":
        extra = (
            _optional_text("Code", event.code)
            + _optional_text("Description", event.description)
            + _optional_text("BounceMessage", event.bounce_message)
        )
    return (
        f'{_ENTRY_OPEN}<id>{uri}</id><title type="text">Email {_EVENT_LABELS[event.kind]} Event '
        f"for Customer: {_text(base.username)}, Campaign: {campaign}</title>"
        f"<updated>{when}</updated>{_AUTHOR_CC}{_CONTENT_OPEN}"
        f'<{element} xmlns="{CTCT_NS}" id="{uri}"><Contact id="{contact}">'
        f"<EmailAddress>{_text(event.email)}</EmailAddress>"
        f'{_ATOM_SELF.format(href=contact)}</Contact><Campaign id="{campaign}">'
        f"{_ATOM_SELF.format(href=campaign)}{_optional_text('Name', event.campaign_name)}"
        f"</Campaign><EventTime>{when}</EventTime>{extra}</{element}></content></entry>"
    )


def event_summary_entry(base: Base, summary: EventSummary) -> str:
    """A ``ReportsSummary`` entry of ``contacts/{id}/events/summary`` (``contact-events-
    summary.xml``; spec §10.1): the contact, the campaign with its name, ``Opens, Clicks,
    Forwards``.

    The entry and payload ids are the edit link's resource
    (``contacts/{contact}/events/summary/{campaign}``), unique per contact and campaign; the
    fixture's id without the contact is not copied.
    """
    suffix = f"contacts/{summary.contact_id}/events/summary/{summary.campaign_id}"
    uri = _attr(base.id(suffix))
    contact = f"contacts/{summary.contact_id}"
    campaign = f"campaigns/{summary.campaign_id}"
    return (
        f'{_ENTRY_OPEN}<link href="{_attr(base.href(suffix))}" rel="edit" />'
        f'<id>{uri}</id><title type="text">Events Summary for Customer: '
        f"{_text(base.username)}, Contact id: {_text(base.id(contact))}</title>"
        f"<updated>{format_time(summary.updated)}</updated>{_AUTHOR_CC}{_CONTENT_OPEN}"
        f'<ReportsSummary xmlns="{CTCT_NS}" id="{uri}">'
        + f'<Contact id="{_attr(base.id(contact))}">'
        f"<EmailAddress>{_text(summary.email)}</EmailAddress>"
        f"{_ATOM_SELF.format(href=_attr(base.href(contact)))}</Contact>"
        + _self_ref(base, "Campaign", campaign, f"<Name>{_text(summary.campaign_name)}</Name>")
        + f"<Opens>{summary.opens}</Opens><Clicks>{summary.clicks}</Clicks>"
        f"<Forwards>{summary.forwards}</Forwards></ReportsSummary></content></entry>"
    )


def events_service_document(
    base: Base, *, owner: Literal["campaigns", "contacts"], owner_id: str, kinds: Sequence[str]
) -> bytes:
    """The service document of ``{owner}/{owner_id}/events/`` (spec §10,
    ``campaign-events-service-document.xml``): the event workspace with one collection per
    kind, in the order given; ``"summary"`` is allowed among ``kinds``.

    Titles read "Open Events for Customer: {user}, Campaign id: {id}" (the fixture's doubled
    colon, "Campaign id: : {id}", is not copied).
    """
    label = "Campaign id" if owner == "campaigns" else "Contact id"
    user = _text(base.username)
    collections = []
    for kind in kinds:
        title = "Events Summary" if kind == "summary" else f"{_EVENT_LABELS[kind]} Events"
        href = _attr(base.href(f"{owner}/{owner_id}/events/{kind}"))
        collections.append(
            f'<collection href="{href}"><atom:title type="text">{title} for Customer: {user}, '
            f"{label}: {_text(owner_id)}</atom:title>"
            f"<accept>{ATOM_MEDIA_TYPE}; type=entry</accept></collection>"
        )
    return document(
        f'<service xmlns="{APP_NS}" xmlns:atom="{ATOM_NS}"><workspace>'
        '<atom:title type="text">Constant Contact Web Services Event Workspace</atom:title>'
        + "".join(collections)
        + "</workspace></service>"
    )


def _last_segment(uri: str) -> str:
    """The last path segment of a URI (query and fragment cut), percent-decoded."""
    path = _squeeze(uri).partition("#")[0].partition("?")[0]
    segment = path.rstrip("/").rpartition("/")[2]
    return unquote(segment) if "%" in segment else segment


def _nested(el: etree._Element, name: str, collection: str) -> tuple[str, etree._Element | None]:
    """The id of the nested ``Contact``/``Campaign`` reference, and the element."""
    found = _child(el, name)
    if found is None:
        return "", None
    uri = _ref_uri(found)
    return _id_or_uri(uri, collection) if uri else "", found


def event_from_entry(el: etree._Element) -> Event:
    """The :class:`Event` of an event ``<entry>`` element (any of the six collections).

    The kind comes from the payload element (``OptoutEvent`` and ``OptOutEvent`` both read as
    ``"optouts"``); the event id is the last segment of the payload id, else of the entry id.
    ``EventTime`` defaults to ``updated``. Bounces read ``Code``/``BounceCode`` and
    ``Description``/``BounceDescription``.

    Raises:
        XmlError: not an entry, no event payload, no event id, no time, or a bad value.
    """
    return _event_record(_Entry(el))


def _event_record(entry: _Entry) -> Event:
    payload = entry.payload
    kind = None if payload is None else _EVENT_KIND_OF.get(local_name(payload))
    if payload is None or kind is None:
        raise XmlError("entry has no event payload")
    event_id = _last_segment(payload.get("id") or "") or _last_segment(entry.id or "")
    if not event_id:
        raise XmlError("event entry has no id")
    contact_id, contact = _nested(payload, "Contact", "contacts")
    campaign_id, campaign = _nested(payload, "Campaign", "campaigns")
    values = _first_children(payload)

    def text(*names: str) -> str | None:
        for name in names:
            found = values.get(name)
            if found is not None:
                return _string(found).strip(_XML_WS)
        return None

    email = None if contact is None else _child(contact, "EmailAddress")
    name = None if campaign is None else _child(campaign, "Name")
    time_el = values.get("EventTime")
    moment = None if time_el is None else _optional_time_of(time_el, "EventTime")
    moment = moment or entry.updated
    if moment is None:
        raise XmlError("event entry has no <EventTime>")
    return Event(
        id=event_id,
        kind=kind,
        contact_id=contact_id,
        email="" if email is None else _string(email).strip(_XML_WS),
        campaign_id=campaign_id,
        time=moment,
        campaign_name=None if name is None else _string(name),
        link_url=text("LinkUrl"),
        code=text("Code", "BounceCode"),
        description=text("Description", "BounceDescription"),
        bounce_message=text("BounceMessage"),
    )


def event_summary_from_entry(el: etree._Element) -> EventSummary:
    """The :class:`EventSummary` of a ``ReportsSummary`` ``<entry>`` element.

    Raises:
        XmlError: not an entry, no ``ReportsSummary`` payload, no ``updated``, or a bad count.
    """
    return _summary_record(_Entry(el))


def _summary_record(entry: _Entry) -> EventSummary:
    payload = entry.required_payload("ReportsSummary")
    contact_id, contact = _nested(payload, "Contact", "contacts")
    campaign_id, campaign = _nested(payload, "Campaign", "campaigns")
    email = None if contact is None else _child(contact, "EmailAddress")
    name = None if campaign is None else _child(campaign, "Name")
    values = _first_children(payload)

    def count(element: str) -> int:
        found = values.get(element)
        return 0 if found is None else (_optional_int(found, element) or 0)

    return EventSummary(
        contact_id=contact_id,
        email="" if email is None else _string(email).strip(_XML_WS),
        campaign_id=campaign_id,
        campaign_name="" if name is None else _string(name),
        updated=entry.required_updated(),
        opens=count("Opens"),
        clicks=count("Clicks"),
        forwards=count("Forwards"),
    )
