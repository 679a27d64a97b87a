"""Contact lists and their members (spec §4–5): entries, record parsers, the list request.

:func:`list_entry`/:func:`member_entry` build; :func:`list_from_entry`/:func:`member_from_entry`
read an ``<entry>`` back (a members feed's list id comes from its edit links, cached per link
prefix); :func:`parse_list_entry` reads the body of a list POST/PUT.
"""

from __future__ import annotations

import re

from lxml import etree

from bulkops.errors import XmlError
from bulkops.wire.atom.reading import (
    _CACHE_MAX,
    _CACHED_KEY_MAX,
    _XML_WS,
    _children,
    _Entry,
    _first_children,
    _optional_bool,
    _optional_int,
    _request_payload,
    _squeeze,
    _string,
    links_of,
)
from bulkops.wire.atom.syntax import CTCT_NS, DEFAULT_MAX_BYTES, _attr, _text, format_time
from bulkops.wire.atom.writing import _AUTHOR_CC, _CONTENT_OPEN, _ENTRY_OPEN, _bool, _source
from bulkops.wire.model import Base, ContactList, ContactListMember, FeedMeta, ListInput
from bulkops.wire.uris import SYSTEM_LISTS

__all__ = ["list_entry", "list_from_entry", "member_entry", "member_from_entry", "parse_list_entry"]


def list_entry(base: Base, lst: ContactList, *, source: FeedMeta | None = None) -> str:
    """A ``ContactList`` entry (``lists-feed.xml``, ``list-entry.xml``; spec §4.1).

    System lists carry only ``Name`` and ``ShortName``; user lists ``OptInDefault, Name,
    ShortName, DisplayOnSignup, SortOrder, Members, ContactCount``, each optional one
    omitted while None. ``source`` adds the ``<source>`` of a single-resource GET.
    """
    suffix = f"lists/{lst.id}"
    uri = _attr(base.id(suffix))
    name = _text(lst.name)
    body = f"<Name>{name}</Name><ShortName>{_text(lst.short_name)}</ShortName>"
    if lst.id not in SYSTEM_LISTS:
        parts = []
        if lst.opt_in_default is not None:
            parts.append(f"<OptInDefault>{_bool(lst.opt_in_default)}</OptInDefault>")
        parts.append(body)
        if lst.display_on_signup is not None:
            shown = "Yes" if lst.display_on_signup else "No"
            parts.append(f"<DisplayOnSignup>{shown}</DisplayOnSignup>")
        if lst.sort_order is not None:
            parts.append(f"<SortOrder>{lst.sort_order}</SortOrder>")
        parts.append(f'<Members id="{uri}/members"></Members>')
        if lst.contact_count is not None:
            parts.append(f"<ContactCount>{lst.contact_count}</ContactCount>")
        body = "".join(parts)
    return (
        f'{_ENTRY_OPEN}<link href="{_attr(base.href(suffix))}" rel="edit" />'
        f'<id>{uri}</id><title type="text">{name}</title>'
        f"<updated>{format_time(lst.updated)}</updated>{_AUTHOR_CC}{_CONTENT_OPEN}"
        f'<ContactList xmlns="{CTCT_NS}" id="{uri}">{body}</ContactList></content>'
        f"{_source(base, source)}</entry>"
    )


def member_entry(base: Base, member: ContactListMember) -> str:
    """A ``ContactListMember`` entry (``members-feed-page1.xml``; spec §5).

    The edit link is ``/lists/{list_id}/members/{contact_id}`` while the ids are the
    contact's URI.
    """
    contact = _attr(base.id(f"contacts/{member.contact_id}"))
    edit = _attr(base.href(f"lists/{member.list_id}/members/{member.contact_id}"))
    email = _text(member.email)
    return (
        f'{_ENTRY_OPEN}<link href="{edit}" rel="edit" /><id>{contact}</id>'
        f'<title type="text">Contact: {email}</title>'
        f"<updated>{format_time(member.updated)}</updated>{_AUTHOR_CC}{_CONTENT_OPEN}"
        f'<ContactListMember xmlns="{CTCT_NS}" id="{contact}">'
        f"<EmailAddress>{email}</EmailAddress><Name>{_text(member.name)}</Name>"
        "</ContactListMember></content></entry>"
    )


def _list_record(entry: _Entry) -> ContactList:
    payload = entry.required_payload("ContactList")
    values = _first_children(payload)
    name_el, short_el = values.get("Name"), values.get("ShortName")
    name = entry.title if name_el is None else _string(name_el)
    opt_in, display, sort, count = (
        values.get(key) for key in ("OptInDefault", "DisplayOnSignup", "SortOrder", "ContactCount")
    )
    return ContactList(
        id=entry.resource_id(payload, "lists"),
        name=name,
        short_name=name if short_el is None else _string(short_el),
        updated=entry.required_updated(),
        opt_in_default=None if opt_in is None else _optional_bool(opt_in, "OptInDefault"),
        display_on_signup=None if display is None else _optional_bool(display, "DisplayOnSignup"),
        sort_order=None if sort is None else _optional_int(sort, "SortOrder"),
        contact_count=None if count is None else _optional_int(count, "ContactCount"),
    )


def list_from_entry(el: etree._Element) -> ContactList:
    """The :class:`ContactList` of a list ``<entry>`` element.

    ``ShortName`` defaults to ``Name``, ``Name`` to the entry title; optional elements that
    are absent or empty give None.

    Raises:
        XmlError: not an entry, no ``ContactList`` payload, no list id, no ``updated``, or a
            bad value.
    """
    return _list_record(_Entry(el))


def _list_uri(ref: etree._Element) -> str:
    uri = _squeeze(ref.get("id") or "")
    if not uri:
        uri = _squeeze(links_of(ref).get("self", ""))
    if not uri:
        raise XmlError("ContactList without an id")
    return uri


_MEMBER_EDIT_RE = re.compile(r"/lists/([^/?#]+)/members/[^/?#]+/?(?:[?#].*)?$")
# The last segment of a member edit link is the contact id; the list id is in the part
# before it, which every entry of a members feed shares: a squeezed link's "head" -> the
# list id _MEMBER_EDIT_RE finds in head + "/0" (None: no match).
_EDIT_HEADS: dict[str, str | None] = {}


def _member_list_id(edit: str) -> str | None:
    """The list id ``_MEMBER_EDIT_RE`` finds in a squeezed edit link, else None.

    When the last segment has no ``/ ? #`` (and no whitespace: squeezed), the regex reads
    it as it reads ``0`` (``[^/?#]+`` or ``.*``), so the answer depends on the head only.
    """
    head, _, tail = edit.rpartition("/")
    if tail and "?" not in tail and "#" not in tail:
        if head in _EDIT_HEADS:
            return _EDIT_HEADS[head]
        match = _MEMBER_EDIT_RE.search(head + "/0")
        found = None if match is None else match.group(1)
        if len(_EDIT_HEADS) < _CACHE_MAX and len(head) <= _CACHED_KEY_MAX:
            _EDIT_HEADS[head] = found
        return found
    match = _MEMBER_EDIT_RE.search(edit)
    return None if match is None else match.group(1)


def _member_record(entry: _Entry, list_id: str | None) -> ContactListMember:
    payload = entry.required_payload("ContactListMember")
    values = _first_children(payload)
    email, name = values.get("EmailAddress"), values.get("Name")
    edit = entry.links.get("edit")
    found_list = (None if edit is None else _member_list_id(_squeeze(edit))) or list_id
    if not found_list:
        raise XmlError("member entry has no list id (no /lists/{id}/members/ edit link)")
    return ContactListMember(
        contact_id=entry.resource_id(payload, "contacts"),
        email="" if email is None else _string(email),
        name="" if name is None else _string(name),
        list_id=found_list,
        updated=entry.required_updated(),
    )


def member_from_entry(el: etree._Element, *, list_id: str | None = None) -> ContactListMember:
    """The :class:`ContactListMember` of a members-feed ``<entry>`` element.

    The list id comes from the edit link (``/lists/{list_id}/members/{contact_id}``), else
    from ``list_id`` (the list whose members feed is being read).

    Raises:
        XmlError: not an entry, no ``ContactListMember`` payload, no contact id, no list id,
            or no ``updated``.
    """
    return _member_record(_Entry(el), list_id)


def parse_list_entry(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> ListInput:
    """Parse the body of ``POST /lists`` or ``PUT /lists/{id}``.

    ``OptInDefault`` and ``DisplayOnSignup`` accept ``true/false/yes/no/1/0`` in any case;
    each value is None when its element is absent or empty. Read-only elements are ignored.

    Raises:
        XmlError: hostile or malformed XML, no entry with a ``ContactList``, or a bad value.
    """
    payload = _request_payload(data, "ContactList", max_bytes)
    values: dict[str, etree._Element] = {}
    for local, child in _children(payload):
        values.setdefault(local, child)
    name, opt_in, sort, display = (
        values.get(key) for key in ("Name", "OptInDefault", "SortOrder", "DisplayOnSignup")
    )
    return ListInput(
        name=None if name is None else (_string(name).strip(_XML_WS) or None),
        opt_in_default=None if opt_in is None else _optional_bool(opt_in, "OptInDefault"),
        sort_order=None if sort is None else _optional_int(sort, "SortOrder"),
        display_on_signup=None if display is None else _optional_bool(display, "DisplayOnSignup"),
    )
