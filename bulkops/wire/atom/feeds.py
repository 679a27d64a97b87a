"""Whole feeds and single-entry documents, of any resource family.

:func:`feed_head` and :func:`feed_tail` wrap entries the server streams one by one;
:func:`record_from_entry` reads any ``<entry>`` into its record, chosen by its payload (an
incremental feed decoder calls it per entry); :func:`parse_feed` and :func:`parse_entry`
read whole (small) documents.
"""

from __future__ import annotations

from datetime import datetime

from lxml import etree

from bulkops.errors import XmlError
from bulkops.wire.atom.activities import _activity_record
from bulkops.wire.atom.campaigns import _campaign_record, _schedule_record
from bulkops.wire.atom.contacts import _contact_record
from bulkops.wire.atom.email_addresses import _email_record
from bulkops.wire.atom.events import _EVENT_KIND_OF, _event_record, _summary_record
from bulkops.wire.atom.lists import _list_record, _member_record
from bulkops.wire.atom.reading import (
    _child,
    _children,
    _Entry,
    _link_tuple,
    _optional_time_of,
    _squeeze,
    _string,
    local_name,
)
from bulkops.wire.atom.syntax import (
    ATOM_NS,
    DEFAULT_MAX_BYTES,
    _attr,
    _text,
    format_time,
    parse_xml,
)
from bulkops.wire.model import Base, Feed, FeedEntry, FeedMeta, GenericEntry, Link

__all__ = [
    "feed_head",
    "feed_tail",
    "generic_from_entry",
    "parse_entry",
    "parse_feed",
    "record_from_entry",
]


def feed_head(base: Base, meta: FeedMeta, *, current_first: bool = False) -> str:
    """The start of a feed, up to its first entry (spec §3.2).

    Link order as in ``contacts-feed.xml``: unlabeled and ``self`` (both the absolute feed
    id), author, updated, then ``next`` (only when ``meta.next_href``), ``first``, ``current``;
    with ``current_first``, ``current`` before ``first`` (``campaigns-feed.xml``).
    Close it with :func:`feed_tail`.
    """
    feed_id = _attr(base.id(meta.id_path))
    next_link = (
        "" if meta.next_href is None else f'<link href="{_attr(meta.next_href)}" rel="next" />'
    )
    first = f'<link href="{_attr(meta.first_href)}" rel="first" />'
    current = f'<link href="{_attr(meta.current_href)}" rel="current" />'
    return (
        f'<feed xmlns="{ATOM_NS}"><id>{feed_id}</id>'
        f'<title type="text">{_text(meta.title)}</title>'
        f'<link href="{feed_id}" /><link href="{feed_id}" rel="self" />'
        f"<author><name>{_text(meta.author)}</name></author>"
        f"<updated>{format_time(meta.updated)}</updated>{next_link}"
        + (current + first if current_first else first + current)
    )


def feed_tail() -> str:
    """The end of a feed."""
    return "</feed>"


def _generic_record(entry: _Entry) -> GenericEntry:
    payload = entry.payload
    values: dict[str, str] = {}
    payload_id: str | None = None
    if payload is not None:
        payload_id = _squeeze(payload.get("id") or "") or None
        for local, child in _children(payload):
            if len(child) == 0 and local not in values:
                values[local] = _string(child)
    return GenericEntry(
        id=entry.id or "",
        title=entry.title,
        kind=entry.kind,
        updated=entry.updated,
        payload_id=payload_id,
        values=values,
        links=tuple(Link(rel=rel, href=href) for rel, href in entry.link_list),
    )


def generic_from_entry(el: etree._Element) -> GenericEntry:
    """A :class:`GenericEntry` for any ``<entry>`` (campaigns, events, settings, …).

    Raises:
        XmlError: not an entry, or a bad ``updated``.
    """
    return _generic_record(_Entry(el))


def record_from_entry(el: etree._Element, *, list_id: str | None = None) -> FeedEntry:
    """The record of any ``<entry>`` element, chosen by its payload's local name:
    ``ContactList``, ``Contact``, ``ContactListMember`` (``list_id`` as in
    :func:`member_from_entry`), ``Activity``, ``Campaign``, ``Schedule``, ``Email``
    (:class:`AccountEmail`), the event elements (``SentEvent`` … ``OptoutEvent``/
    ``OptOutEvent``: :class:`Event`), ``ReportsSummary`` (:class:`EventSummary`), else a
    :class:`GenericEntry`.

    Raises:
        XmlError: as the chosen parser does.
    """
    entry = _Entry(el)
    kind = entry.kind
    if kind == "ContactList":
        return _list_record(entry)
    if kind == "Contact":
        return _contact_record(entry)
    if kind == "ContactListMember":
        return _member_record(entry, list_id)
    if kind == "Activity":
        return _activity_record(entry)
    if kind == "Campaign":
        return _campaign_record(entry)
    if kind in _EVENT_KIND_OF:
        return _event_record(entry)
    if kind == "ReportsSummary":
        return _summary_record(entry)
    if kind == "Email":
        return _email_record(entry)
    if kind == "Schedule":
        return _schedule_record(entry)
    return _generic_record(entry)


def parse_feed(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Feed:
    """Parse a whole feed page (small feeds only; large ones belong to a streaming decoder).

    Raises:
        XmlError: hostile or malformed XML (see :func:`parse_xml`), a root other than
            ``<feed>``, or an entry its parser rejects.
    """
    root = parse_xml(data, max_bytes=max_bytes)
    if local_name(root) != "feed":
        raise XmlError(f"expected a <feed>, found <{local_name(root)}>")
    feed_id = title = ""
    updated: datetime | None = None
    author: str | None = None
    entries: list[FeedEntry] = []
    seen: set[str] = set()
    for local, child in _children(root):
        if local == "entry":
            entries.append(record_from_entry(child))
            continue
        if local in seen:
            continue
        if local == "id":
            feed_id = _squeeze(_string(child))
        elif local == "title":
            title = _string(child)
        elif local == "updated":
            updated = _optional_time_of(child, "updated")
        elif local == "author":
            name = _child(child, "name")
            author = None if name is None else _string(name)
        elif local == "link":
            continue
        seen.add(local)
    return Feed(
        id=feed_id,
        title=title,
        links=_link_tuple(root),
        entries=entries,
        updated=updated,
        author=author,
    )


def parse_entry(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> FeedEntry:
    """Parse a single-entry document (a GET of one resource, a 201 body) into its record.

    Raises:
        XmlError: hostile or malformed XML, a root other than ``<entry>``, or a bad entry.
    """
    return record_from_entry(parse_xml(data, max_bytes=max_bytes))
