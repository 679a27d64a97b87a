"""Contacts (spec §6): entries in three views, the record parser, the contact request.

:func:`contact_entry` builds a ``summary``, ``search`` or ``full`` entry (:data:`ContactView`);
:func:`contact_from_entry` reads one back; :func:`parse_contact_entry` reads the body of a
contact POST/PUT.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from lxml import etree

from bulkops.wire.atom.lists import _list_uri
from bulkops.wire.atom.reading import (
    _XML_WS,
    _children,
    _Entry,
    _first_children,
    _optional_bool,
    _optional_time_of,
    _request_payload,
    _string,
)
from bulkops.wire.atom.syntax import ATOM_NS, CTCT_NS, DEFAULT_MAX_BYTES, _attr, _text, format_time
from bulkops.wire.atom.writing import (
    _AUTHOR_CC,
    _CONTENT_OPEN,
    _ENTRY_OPEN,
    _bool,
    _element,
    _optional_text,
    _optional_time,
    _source,
)
from bulkops.wire.columns import CONTACT_FIELDS
from bulkops.wire.model import Base, Contact, ContactInput, ContactListRef, FeedMeta
from bulkops.wire.uris import list_id_from_uri

__all__ = ["ContactView", "contact_entry", "contact_from_entry", "parse_contact_entry"]

#: The three contact renderings: collection (summary), email search, single resource (full).
ContactView = Literal["summary", "search", "full"]
_SUMMARY_FIELDS = ("EmailAddress", "EmailType", "Name")
# (name, open tag, close tag) of every writable contact field, in full-view order.
_FIELD_TAGS = tuple((name, f"<{name}>", f"</{name}>") for name in CONTACT_FIELDS)


def _contact_lists(base: Base, contact: Contact) -> str:
    parts = ["<ContactLists>"]
    for ref in contact.lists:
        suffix = f"lists/{ref.list_id}"
        parts.append(
            f'<ContactList id="{_attr(base.id(suffix))}">'
            f'<link xmlns="{ATOM_NS}" href="{_attr(base.href(suffix))}" rel="self" />'
            f"{_optional_text('OptInSource', ref.opt_in_source)}"
            f"{_optional_time('OptInTime', ref.opt_in_time)}</ContactList>"
        )
    parts.append("</ContactLists>")
    return "".join(parts)


def contact_entry(
    base: Base,
    contact: Contact,
    *,
    view: ContactView,
    source: FeedMeta | None = None,
) -> str:
    """A ``Contact`` entry in one of its three views (spec §6).

    * ``"summary"`` (``GET /contacts``): ``Status, EmailAddress, EmailType, Name, OptInTime,
      OptInSource``.
    * ``"search"`` (``GET /contacts?email=``): the summary, then ``Confirmed, InsertTime``.
    * ``"full"`` (``GET /contacts/{id}``): ``Status``, every field of ``CONTACT_FIELDS`` in
      order (missing ones as ``<X></X>``), ``ContactLists`` (each with its Atom self link,
      ``OptInSource``, ``OptInTime``), ``Confirmed, InsertTime, LastUpdateTime``, then
      ``OptOutSource, OptOutTime, OptOutReason`` when set (their place is a guess; the
      fixtures show no opted-out contact). No top-level opt-in, like ``contact-full.xml``.

    Text fields are always written (empty when missing); times, sources and ``Confirmed``
    are omitted while None.

    Raises:
        ValueError: an unknown ``view``.
    """
    fields = contact.fields
    uri = _attr(base.id(f"contacts/{contact.id}"))
    email = _text(fields.get("EmailAddress", ""))
    parts = [
        f'{_ENTRY_OPEN}<link href="{_attr(base.href(f"contacts/{contact.id}"))}" rel="edit" />'
        f'<id>{uri}</id><title type="text">Contact: {email}</title>'
        f"<updated>{format_time(contact.updated)}</updated>{_AUTHOR_CC}{_CONTENT_OPEN}"
        f'<Contact xmlns="{CTCT_NS}" id="{uri}"><Status>{_text(contact.status)}</Status>'
    ]
    confirmed = (
        "" if contact.confirmed is None else f"<Confirmed>{_bool(contact.confirmed)}</Confirmed>"
    )
    if view == "full":
        parts.extend(
            f"{open_}{_text(fields.get(name, ''))}{close}" for name, open_, close in _FIELD_TAGS
        )
        parts.append(_contact_lists(base, contact))
        parts.append(confirmed)
        parts.append(_optional_time("InsertTime", contact.insert_time))
        parts.append(_optional_time("LastUpdateTime", contact.last_update_time))
        parts.append(_optional_text("OptOutSource", contact.opt_out_source))
        parts.append(_optional_time("OptOutTime", contact.opt_out_time))
        parts.append(_optional_text("OptOutReason", contact.opt_out_reason))
    elif view in ("summary", "search"):
        parts.extend(_element(name, fields.get(name, "")) for name in _SUMMARY_FIELDS)
        parts.append(_optional_time("OptInTime", contact.opt_in_time))
        parts.append(_optional_text("OptInSource", contact.opt_in_source))
        if view == "search":
            parts.append(confirmed)
            parts.append(_optional_time("InsertTime", contact.insert_time))
    else:
        raise ValueError(f"unknown contact view {view!r}")
    parts.append(f"</Contact></content>{_source(base, source)}</entry>")
    return "".join(parts)


_FIELD_NAMES = frozenset(CONTACT_FIELDS)


def _list_ref(ref: etree._Element) -> ContactListRef:
    uri = _list_uri(ref)
    values = _first_children(ref)
    source, when = values.get("OptInSource"), values.get("OptInTime")
    return ContactListRef(
        list_id=list_id_from_uri(uri) or uri,
        opt_in_source=None if source is None else (_string(source).strip(_XML_WS) or None),
        opt_in_time=None if when is None else _optional_time_of(when, "OptInTime"),
    )


def _contact_record(entry: _Entry) -> Contact:
    payload = entry.required_payload("Contact")
    fields: dict[str, str] = {}
    scalars: dict[str, etree._Element] = {}
    lists: list[ContactListRef] = []
    seen_lists = False
    for local, child in _children(payload):
        if local in _FIELD_NAMES:
            if local not in fields:
                value = _string(child)
                if value:
                    fields[local] = value
        elif local == "ContactLists":
            if not seen_lists:
                seen_lists = True
                lists.extend(
                    _list_ref(sub) for name, sub in _children(child) if name == "ContactList"
                )
        else:
            scalars.setdefault(local, child)

    def text(name: str, *, trim: bool = True) -> str | None:
        found = scalars.get(name)
        if found is None:
            return None
        value = _string(found)
        return (value.strip(_XML_WS) if trim else value) or None

    def when(name: str) -> datetime | None:
        found = scalars.get(name)
        return None if found is None else _optional_time_of(found, name)

    confirmed = scalars.get("Confirmed")
    return Contact(
        id=entry.resource_id(payload, "contacts"),
        status=text("Status") or "",
        updated=entry.required_updated(),
        fields=fields,
        lists=tuple(lists),
        opt_in_source=text("OptInSource"),
        opt_in_time=when("OptInTime"),
        opt_out_source=text("OptOutSource"),
        opt_out_time=when("OptOutTime"),
        opt_out_reason=text("OptOutReason", trim=False),
        confirmed=None if confirmed is None else _optional_bool(confirmed, "Confirmed"),
        insert_time=when("InsertTime"),
        last_update_time=when("LastUpdateTime"),
    )


def contact_from_entry(el: etree._Element) -> Contact:
    """The :class:`Contact` of a contact ``<entry>`` element, in whichever view it was sent.

    Field values are kept as written (not trimmed); empty fields are left out of ``fields``.
    ``ContactList`` references keep their list id, or their raw URI when it names no list.

    Raises:
        XmlError: not an entry, no ``Contact`` payload, no contact id, no ``updated``, or a
            bad value.
    """
    return _contact_record(_Entry(el))


def parse_contact_entry(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> ContactInput:
    """Parse the body of ``POST /contacts`` or ``PUT /contacts/{id}``.

    The whole entry a GET returned parses too (``<source>``, links and read-only elements
    are ignored: ``Status``, ids, times, ``Confirmed``). Values are trimmed of XML
    whitespace; an empty element means "not given". See :class:`ContactInput`.

    Raises:
        XmlError: hostile or malformed XML, no entry with a ``Contact``, or a ``ContactList``
            without an id.
    """
    payload = _request_payload(data, "Contact", max_bytes)
    fields: dict[str, str] = {}
    list_uris: tuple[str, ...] | None = None
    opt_in_source: str | None = None
    seen_opt_in = False
    for local, child in _children(payload):
        if local in _FIELD_NAMES:
            if local not in fields:
                value = _string(child).strip(_XML_WS)
                if value:
                    fields[local] = value
        elif local == "ContactLists":
            if list_uris is None:
                list_uris = tuple(
                    _list_uri(sub) for name, sub in _children(child) if name == "ContactList"
                )
        elif local == "OptInSource" and not seen_opt_in:
            seen_opt_in = True
            opt_in_source = _string(child).strip(_XML_WS) or None
    return ContactInput(fields=fields, list_uris=list_uris, opt_in_source=opt_in_source)
