"""Atom/AtomPub for the CTCT v1 API: hardened parsing, fast builders, tolerant parsers.

Three parts, shared by the server and the client (spec §1.3, §3–11):

* :func:`parse_xml` turns untrusted bytes into an element tree, or raises
  :class:`~bulkops.errors.XmlError`.
* Builders (:func:`feed_head`, :func:`list_entry`, :func:`contact_entry`,
  :func:`campaign_entry`, :func:`event_entry`, …) render records
  as ``str`` fragments with f-strings, so the server can stream a feed entry by entry.
* Parsers (:func:`parse_feed`, :func:`parse_contact_entry`, the ``*_from_entry`` element
  functions, …) turn documents and ``<entry>`` elements back into the records of
  :mod:`bulkops.wire.model`.

Invariants:

* **Hostile input costs O(bytes), bounded.** :func:`parse_xml` checks, in this order and
  before libxml2 builds anything: the size (O(1)), any ``<!DOCTYPE``/``<!ENTITY`` (one
  ``bytes.find`` each; no DTD is ever read, so no entity is ever defined or expanded), and a
  UTF-16/32 byte-order mark; libxml2 then decodes UTF-8 whatever the document declares, and
  stops by itself at depth 256; one XPath existence test enforces ``max_depth``.
* **Record parsers run once per feed entry**, so they keep per-process caches of what every
  entry of a feed repeats: tag → local name, and per URI prefix the answer of
  ``resource_id_from_uri`` and of the member edit-link pattern (each equal to the uncached
  answer; tests/test_atom.py compares them). The caches are bounded in entries and in key
  length, whatever the input.
* **Output is always well-formed.** Every value goes through :func:`_text` or :func:`_attr`,
  which drop characters XML 1.0 forbids (C0 controls except tab/LF/CR, lone surrogates,
  U+FFFE/U+FFFF) and escape ``& < >`` (so ``]]>`` is harmless), plus ``"``, tab, LF and CR in
  attributes, and CR in text, so attribute normalisation and line-end normalisation give back
  exactly the value that was written.
* **Parsers are prefix- and namespace-agnostic**: elements are matched by local name, so
  ``atom:`` prefixes, a payload without the CTCT namespace (fixture ``list-entry.xml``) and
  the nested Atom links inside payloads all read the same. Element order never matters and
  unknown elements are ignored.
* **Round trip.** For every record ``r`` and view, ``*_from_entry(build(r))`` equals ``r``
  as that view carries it (with illegal characters stripped); tests/test_atom_roundtrip.py
  checks it with hypothesis.
* Timestamps are written as UTC with milliseconds and ``Z`` (``2009-11-20T20:41:19.243Z``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from typing import Literal
from urllib.parse import unquote, urljoin, urlsplit

from lxml import etree

from bulkops.errors import XmlError
from bulkops.wire.columns import CONTACT_FIELDS
from bulkops.wire.model import (
    CAMPAIGN_FIELDS,
    CAMPAIGN_READ_ONLY_FIELDS,
    EVENT_ELEMENTS,
    AccountEmail,
    Activity,
    ActivityError,
    Base,
    Campaign,
    CampaignCounts,
    CampaignInput,
    CampaignUrl,
    Collection,
    Contact,
    ContactInput,
    ContactList,
    ContactListMember,
    ContactListRef,
    EmailRef,
    EmailRefInput,
    Event,
    EventSummary,
    Feed,
    FeedEntry,
    FeedMeta,
    GenericEntry,
    Link,
    ListInput,
    Schedule,
    ServiceDocument,
)
from bulkops.wire.uris import SYSTEM_LISTS, list_id_from_uri, resource_id_from_uri

__all__ = [
    "APP_NS",
    "ATOM_MEDIA_TYPE",
    "ATOM_NS",
    "CTCT_MEDIA_TYPE",
    "CTCT_NS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "HARDENED_PARSER_OPTIONS",
    "LOCAL_NAMES",
    "XML_DECLARATION",
    "AccountEmail",
    "Activity",
    "ActivityError",
    "Base",
    "Campaign",
    "CampaignCounts",
    "CampaignInput",
    "CampaignUrl",
    "CampaignView",
    "Collection",
    "Contact",
    "ContactInput",
    "ContactList",
    "ContactListMember",
    "ContactListRef",
    "ContactView",
    "EmailRef",
    "EmailRefInput",
    "Event",
    "EventSummary",
    "Feed",
    "FeedEntry",
    "FeedMeta",
    "GenericEntry",
    "Link",
    "ListInput",
    "Schedule",
    "ServiceDocument",
    "activity_entry",
    "activity_from_entry",
    "campaign_entry",
    "campaign_from_entry",
    "contact_entry",
    "contact_from_entry",
    "document",
    "email_address_entry",
    "email_address_from_entry",
    "event_entry",
    "event_from_entry",
    "event_summary_entry",
    "event_summary_from_entry",
    "events_service_document",
    "feed_head",
    "feed_tail",
    "format_time",
    "generic_from_entry",
    "hardened_parser",
    "links_of",
    "list_entry",
    "list_from_entry",
    "local_name",
    "local_name_of",
    "member_entry",
    "member_from_entry",
    "parse_campaign",
    "parse_campaign_entry",
    "parse_contact_entry",
    "parse_entry",
    "parse_feed",
    "parse_list_entry",
    "parse_schedule_entry",
    "parse_service_document",
    "parse_time",
    "parse_xml",
    "record_from_entry",
    "resolve_href",
    "schedule_entry",
    "schedule_from_entry",
    "service_document",
    "strip_illegal_xml_chars",
]

ATOM_NS = "http://www.w3.org/2005/Atom"
CTCT_NS = "http://ws.constantcontact.com/ns/1.0/"
APP_NS = "http://www.w3.org/2007/app"
ATOM_MEDIA_TYPE = "application/atom+xml"
CTCT_MEDIA_TYPE = "application/vnd.ctct+xml"

#: The declaration :func:`document` prepends, as the real service wrote it.
XML_DECLARATION = "<?xml version='1.0' encoding='UTF-8'?>"

DEFAULT_MAX_BYTES = 1_048_576
DEFAULT_MAX_DEPTH = 100

#: The three contact renderings: collection (summary), email search, single resource (full).
ContactView = Literal["summary", "search", "full"]

# ---------------------------------------------------------------------------------------------
# Hardened parsing
# ---------------------------------------------------------------------------------------------


#: The options every parser of untrusted XML uses (whole-document and pull parsers alike):
#: no entities, no DTD, no network, no huge trees, no recovery; comments, PIs and CDATA
#: wrappers dropped; input decoded as UTF-8.
HARDENED_PARSER_OPTIONS: dict[str, str | bool] = {
    "encoding": "utf-8",
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "attribute_defaults": False,
    "huge_tree": False,
    "recover": False,
    "collect_ids": False,
    "remove_comments": True,
    "remove_pis": True,
    "strip_cdata": True,
}


def hardened_parser() -> etree.XMLParser:
    """A new lxml parser that never reads a DTD, resolves an entity or touches the network.

    Options: ``resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
    dtd_validation=False, attribute_defaults=False, recover=False, collect_ids=False``;
    comments and processing instructions are dropped, CDATA becomes text, and the input is
    always decoded as UTF-8 (a declared encoding cannot switch it). Parsers are not
    thread-safe: make one per parse, or per thread.

    Returns:
        an ``lxml.etree.XMLParser``.
    """
    return etree.XMLParser(**HARDENED_PARSER_OPTIONS)


_UTF16_32_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")


@lru_cache(maxsize=8)
def _too_deep_xpath(max_depth: int) -> str:
    # "/*/*/…" with max_depth+1 steps selects an element nested deeper than max_depth; libxml2
    # evaluates it level by level, O(elements), in C.
    return "boolean(/" + "/".join(["*"] * (max_depth + 1)) + ")"


def parse_xml(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH
) -> etree._Element:
    """Parse untrusted XML into its root element.

    Args:
        data: the document, UTF-8 (a UTF-8 byte-order mark is allowed).
        max_bytes: reject longer documents before looking at them.
        max_depth: reject documents nesting elements deeper than this (the root is depth 1).
            libxml2 never goes beyond 256 whatever this says.

    Returns:
        the root ``lxml.etree._Element``.

    Raises:
        XmlError: the document is longer than ``max_bytes``; contains a DOCTYPE or ENTITY
            declaration; is not UTF-8 (UTF-16/32, invalid sequences, NUL); is malformed or
            not namespace-well-formed; or nests deeper than ``max_depth``.
    """
    if len(data) > max_bytes:
        raise XmlError(f"XML document of {len(data)} bytes exceeds the limit of {max_bytes}")
    # Like defusedxml's forbid_dtd, but before parsing: a DOCTYPE can only be spelled this way
    # in UTF-8, and entities can only be declared inside one.
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise XmlError("XML with a DOCTYPE or ENTITY declaration is not accepted")
    if data.startswith(_UTF16_32_BOMS):
        raise XmlError("XML must be encoded as UTF-8")
    parser = hardened_parser()
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise XmlError(f"malformed XML: {exc}") from exc
    except (ValueError, TypeError) as exc:  # lxml's complaints about the input object
        raise XmlError(f"unparseable XML: {exc}") from exc
    if root is None:  # pragma: no cover - recover=False never yields an empty tree
        raise XmlError("empty XML document")
    if root.getroottree().docinfo.doctype:  # pragma: no cover - rejected above
        raise XmlError("XML with a DOCTYPE declaration is not accepted")
    if root.xpath(_too_deep_xpath(max_depth)):
        raise XmlError(f"XML nests elements deeper than {max_depth} levels")
    return root


# ---------------------------------------------------------------------------------------------
# Timestamps
# ---------------------------------------------------------------------------------------------

_ZERO = timedelta(0)

_TIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?)?",
    re.ASCII,
)


def format_time(dt: datetime) -> str:
    """The wire form of a moment: UTC, milliseconds (truncated), ``Z``.

    ``format_time(datetime(2009, 11, 20, 20, 41, 19, 243999, tzinfo=UTC))
    == "2009-11-20T20:41:19.243Z"``. A naive datetime is taken to be UTC already.
    """
    offset = dt.utcoffset()
    if offset is not None and offset != _ZERO:
        dt = dt.astimezone(UTC)
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T"
        f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}.{dt.microsecond // 1000:03d}Z"
    )


# The form every timestamp on the wire has (format_time's): datetime.fromisoformat reads it
# in ~0.1 µs, a tenth of the general path below, and to the same value (UTC, milliseconds).
# Hours are 00-23 here: some Pythons' fromisoformat accept 24:00 as the next midnight.
_CANONICAL_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{3}Z"
).fullmatch
_fromisoformat = datetime.fromisoformat


def _canonical_time(text: str) -> datetime | None:
    """``text`` read by the fast path when it has the wire's own form; None otherwise (also
    for an impossible date such as 2023-02-30: the general path then says what is wrong)."""
    if _CANONICAL_TIME(text) is None:
        return None
    try:
        return _fromisoformat(text)
    except ValueError:
        return None


def parse_time(text: str) -> datetime:
    """Parse a wire timestamp into an aware UTC datetime.

    Accepts ``2009-11-20T20:41:19.243Z``, any number of fraction digits (beyond microseconds
    they are dropped), no fraction, no seconds, offsets (``+05:00``, ``+0500``, ``-07``), no
    zone at all (taken as UTC), and a bare date (``2008-04-16``, midnight UTC), with
    surrounding whitespace.

    Raises:
        ValueError: anything else, or an impossible date or time.
    """
    fast = _canonical_time(text)
    if fast is not None:
        return fast
    match = _TIME_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not an ISO-8601 timestamp: {text!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    tz = UTC
    if zone and zone not in ("Z", "z"):
        digits = zone[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:] or "0")
        if minutes > 59:
            raise ValueError(f"bad UTC offset in {text!r}")
        delta = timedelta(hours=hours, minutes=minutes)
        tz = timezone(-delta if zone[0] == "-" else delta)  # ValueError when >= 24 h
    try:
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            micro,
            tzinfo=tz,
        )
        return moment if tz is UTC else moment.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError(f"timestamp out of range: {text!r}") from exc


# ---------------------------------------------------------------------------------------------
# Escaping
# ---------------------------------------------------------------------------------------------

# Characters outside XML 1.0's Char production that a Python str can hold.
_ILLEGAL = "\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff"
_ILLEGAL_RE = re.compile(f"[{_ILLEGAL}]")
_TEXT_SPECIAL_RE = re.compile(f"[{_ILLEGAL}&<>\r]")
_ATTR_SPECIAL_RE = re.compile(f'[{_ILLEGAL}&<>"\t\n\r]')


def strip_illegal_xml_chars(value: str) -> str:
    """``value`` without the characters XML 1.0 cannot carry (C0 controls other than tab,
    LF and CR; lone surrogates; U+FFFE and U+FFFF). The builders apply it to every value."""
    return _ILLEGAL_RE.sub("", value)


def _text(value: str) -> str:
    """Escape element content; CR becomes ``&#13;`` so a parser does not turn it into LF."""
    if _TEXT_SPECIAL_RE.search(value) is None:
        return value
    return (
        _ILLEGAL_RE.sub("", value)
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("\r", "&#13;")
    )


def _attr(value: str) -> str:
    """Escape a double-quoted attribute value so normalisation gives back ``value``."""
    if _ATTR_SPECIAL_RE.search(value) is None:
        return value
    return (
        _ILLEGAL_RE.sub("", value)
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("\t", "&#9;")
        .replace("\n", "&#10;")
        .replace("\r", "&#13;")
    )


# ---------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------

_ENTRY_OPEN = f'<entry xmlns="{ATOM_NS}">'
_CONTENT_OPEN = f'<content type="{CTCT_MEDIA_TYPE}">'
_AUTHOR_CC = "<author><name>Constant Contact</name></author>"
_SUMMARY_FIELDS = ("EmailAddress", "EmailType", "Name")
# (name, open tag, close tag) of every writable contact field, in full-view order.
_FIELD_TAGS = tuple((name, f"<{name}>", f"</{name}>") for name in CONTACT_FIELDS)


def _element(name: str, value: str) -> str:
    return f"<{name}>{_text(value)}</{name}>"


def _optional_time(name: str, value: datetime | None) -> str:
    return "" if value is None else f"<{name}>{format_time(value)}</{name}>"


def _optional_text(name: str, value: str | None) -> str:
    return "" if value is None else f"<{name}>{_text(value)}</{name}>"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _source(base: Base, meta: FeedMeta | None) -> str:
    if meta is None:
        return ""
    feed_id = _attr(base.id(meta.id_path))
    return (
        f'<source><id>{feed_id}</id><title type="text">{_text(meta.title)}</title>'
        f'<link href="{feed_id}" /><link href="{feed_id}" rel="self" />'
        f"<author><name>{_text(meta.author)}</name></author>"
        f"<updated>{format_time(meta.updated)}</updated></source>"
    )


def document(fragment: str) -> bytes:
    """A complete UTF-8 document: the XML declaration, a newline, then ``fragment``."""
    return (XML_DECLARATION + "\n" + fragment).encode("utf-8")


def service_document(base: Base) -> bytes:
    """The AtomPub service document of ``GET /ws/customers/{user}/`` (spec §1.3).

    The two documented collections (Contact Lists, Bulk Activity) in the documented shape,
    then a Contacts collection, which the real service did not list.
    """
    lists, activities, contacts = (
        _attr(base.href(name)) for name in ("lists", "activities", "contacts")
    )
    entry_accept = f"<accept>{ATOM_MEDIA_TYPE}; type=entry</accept>"
    return document(
        f'<service xmlns="{APP_NS}" xmlns:atom="{ATOM_NS}"><workspace>'
        '<atom:title type="text">Constant Contact Web Services Customer Workspace</atom:title>'
        f'<collection href="{lists}"><atom:title type="text">Contact Lists</atom:title>'
        f"{entry_accept}</collection>"
        f'<collection href="{activities}"><atom:title type="text">Bulk Activity</atom:title>'
        "<accept>application/x-www-form-urlencoded</accept>"
        "<accept>multipart/form-data</accept></collection>"
        f'<collection href="{contacts}"><atom:title type="text">Contacts</atom:title>'
        f"{entry_accept}</collection>"
        "</workspace></service>"
    )


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


def activity_entry(base: Base, activity: Activity, *, source: FeedMeta | None = None) -> str:
    """An ``Activity`` entry (``activities-feed.xml``, ``activity-entry.xml``; spec §7.6).

    Edit link, id, empty title, updated, no author; ``Errors`` is always present (possibly
    empty); ``RunStartTime`` and ``RunFinishTime`` are omitted while None.
    """
    suffix = f"activities/{activity.id}"
    uri = _attr(base.id(suffix))
    errors = "".join(
        f"<Error><LineNumber>{error.line}</LineNumber>"
        f"<EmailAddress>{_text(error.email)}</EmailAddress>"
        f"<Message>{_text(error.message)}</Message></Error>"
        for error in activity.errors
    )
    return (
        f'{_ENTRY_OPEN}<link href="{_attr(base.href(suffix))}" rel="edit" />'
        f'<id>{uri}</id><title type="text"></title>'
        f"<updated>{format_time(activity.updated)}</updated>{_CONTENT_OPEN}"
        f'<Activity xmlns="{CTCT_NS}" id="{uri}">'
        f"<Type>{_text(activity.type)}</Type><Status>{_text(activity.status)}</Status>"
        f"<Errors>{errors}</Errors><FileName>{_text(activity.file_name)}</FileName>"
        f"<TransactionCount>{activity.transaction_count}</TransactionCount>"
        f"{_optional_time('RunStartTime', activity.run_start_time)}"
        f"{_optional_time('RunFinishTime', activity.run_finish_time)}"
        f"<InsertTime>{format_time(activity.insert_time)}</InsertTime>"
        f"</Activity></content>{_source(base, source)}</entry>"
    )


# ---------------------------------------------------------------------------------------------
# Element helpers
# ---------------------------------------------------------------------------------------------


def local_name(el: etree._Element) -> str:
    """The local name of an element (``"entry"`` for ``{http://www.w3.org/2005/Atom}entry``),
    ``""`` for comments and processing instructions."""
    tag = el.tag
    if not isinstance(tag, str):
        return ""
    return tag[tag.rfind("}") + 1 :]


# Clark tag ("{ns}name") -> local name; "" for comments and processing instructions (whose
# .tag is a function). Tags repeat in every entry, so this replaces a slice per child by one
# dict hit. Bounded, as hostile input may use any number of names, of any length: past
# _LOCAL_NAMES_MAX tags, and for tags longer than _CACHED_KEY_MAX, names are computed but
# not kept (at most ~2 MB).
LOCAL_NAMES: dict[object, str] = {}
_LOCAL_NAMES_MAX = 4096
_CACHED_KEY_MAX = 256


def local_name_of(tag: object) -> str:
    """The local name of a tag (``""`` for a comment's or processing instruction's), kept in
    :data:`LOCAL_NAMES`: the cache's miss path. Hot loops look a tag up in
    ``LOCAL_NAMES`` first and call this only when it is missing."""
    if isinstance(tag, str):
        name = tag[tag.rfind("}") + 1 :]
        if len(tag) > _CACHED_KEY_MAX:
            return name
    else:
        name = ""
    if len(LOCAL_NAMES) < _LOCAL_NAMES_MAX:
        LOCAL_NAMES[tag] = name
    return name


def _children(el: etree._Element) -> Iterator[tuple[str, etree._Element]]:
    """(local name, element) of the element children, in document order."""
    names = LOCAL_NAMES
    for child in el:
        tag = child.tag
        local = names.get(tag)
        if local is None:
            local = local_name_of(tag)
        if local:
            yield local, child


def _child(el: etree._Element, name: str) -> etree._Element | None:
    for local, child in _children(el):
        if local == name:
            return child
    return None


def _string(el: etree._Element) -> str:
    """All text inside an element (children's text too, for tolerance)."""
    if len(el):
        return "".join(el.itertext())
    text = el.text
    return "" if text is None else text


def _squeeze(value: str) -> str:
    # URIs carry no whitespace; the docs samples wrap long ids onto two lines, which
    # attribute normalisation turns into spaces (contacts-feed.xml).
    if value.isprintable() and " " not in value:
        return value  # (every character str.split() splits at is unprintable, or " ")
    return "".join(value.split())


_XML_WS = " \t\r\n"


def links_of(el: etree._Element) -> dict[str, str]:
    """``rel -> href`` of the element's direct ``<link>`` children.

    A link without ``rel`` is ``"alternate"`` (RFC 4287); the first link of each rel wins;
    hrefs are returned as written (possibly relative or empty), trimmed.
    """
    links: dict[str, str] = {}
    for local, child in _children(el):
        if local == "link":
            rel = (child.get("rel") or "alternate").strip() or "alternate"
            links.setdefault(rel, (child.get("href") or "").strip())
    return links


def _link_tuple(el: etree._Element) -> tuple[Link, ...]:
    found = []
    for local, child in _children(el):
        if local == "link":
            rel = (child.get("rel") or "alternate").strip() or "alternate"
            found.append(Link(rel=rel, href=(child.get("href") or "").strip()))
    return tuple(found)


def resolve_href(document_url: str, href: str) -> str | None:
    """Where a link points, as an absolute URL; None for an empty href.

    Absolute hrefs are returned as they are (``http://`` ids included: mapping them to
    https is the caller's business); root-relative (``/ws/…``) and document-relative
    (``lists?next=6``) ones are resolved against ``document_url``, the URL the document was
    fetched from (RFC 3986). Whitespace inside the href (line-wrapped samples) is removed.
    """
    cleaned = _squeeze(href)
    if not cleaned:
        return None
    return urljoin(document_url, cleaned)


def _time(text: str, what: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise XmlError(f"bad timestamp in <{what}>: {text.strip()[:40]!r}") from exc


def _optional_time_of(el: etree._Element, what: str) -> datetime | None:
    text = el.text
    if text is not None and not len(el):
        fast = _canonical_time(text)  # parse_time's fast path, without its other calls
        if fast is not None:
            return fast
    text = _string(el).strip(_XML_WS)
    return _time(text, what) if text else None


_INT_RE = re.compile(r"[+-]?[0-9]+")
_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _int(text: str, what: str) -> int:
    stripped = text.strip(_XML_WS)
    if _INT_RE.fullmatch(stripped) is None or len(stripped) > 18:
        raise XmlError(f"bad integer in <{what}>: {stripped[:40]!r}")
    return int(stripped)


def _optional_int(el: etree._Element, what: str) -> int | None:
    text = _string(el).strip(_XML_WS)
    return _int(text, what) if text else None


def _optional_bool(el: etree._Element, what: str) -> bool | None:
    text = _string(el).strip(_XML_WS)
    if not text:
        return None
    value = _BOOLS.get(text.lower())
    if value is None:
        raise XmlError(f"bad boolean in <{what}>: {text[:40]!r}")
    return value


class _Entry:
    """The Atom parts of one ``<entry>``, gathered in one pass over its children.

    This runs once per entry of every feed (a million times for a million members), so it
    does the least it can: each child is told by a dict hit on its tag, the title is read
    only when a record asks for it, and links stay ``(rel, href)`` pairs.
    """

    __slots__ = ("_title", "id", "kind", "link_list", "links", "payload", "updated")

    def __init__(self, entry: etree._Element) -> None:
        names = LOCAL_NAMES
        tag = entry.tag
        if (names.get(tag) or local_name_of(tag)) != "entry":
            raise XmlError(f"expected an <entry>, found <{local_name(entry) or '?'}>")
        self.id: str | None = None
        self._title: etree._Element | None = None
        self.updated: datetime | None = None
        self.links: dict[str, str] = {}
        self.link_list: list[tuple[str, str]] = []
        self.payload: etree._Element | None = None
        self.kind = ""  # the payload's local name
        for child in entry:
            tag = child.tag
            local = names.get(tag)
            if local is None:
                local = local_name_of(tag)
            if local == "id":
                if self.id is None:
                    self.id = _squeeze(_string(child))
            elif local == "updated":
                if self.updated is None:
                    self.updated = _optional_time_of(child, "updated")
            elif local == "link":
                rel = child.get("rel")
                rel = (rel.strip() or "alternate") if rel else "alternate"
                href = child.get("href")
                href = href.strip() if href else ""
                if rel not in self.links:
                    self.links[rel] = href
                self.link_list.append((rel, href))
            elif local == "title":
                if self._title is None:
                    self._title = child
            elif local == "content" and self.payload is None:
                for sub in child:  # the first element child
                    tag = sub.tag
                    local = names.get(tag)
                    if local is None:
                        local = local_name_of(tag)
                    if local:
                        self.payload, self.kind = sub, local
                        break

    @property
    def title(self) -> str:
        """The text of the first ``<title>``; ``""`` without one."""
        return "" if self._title is None else _string(self._title)

    def required_payload(self, kind: str) -> etree._Element:
        payload = self.payload
        if payload is None or self.kind != kind:
            raise XmlError(f"entry has no {kind} payload")
        return payload

    def required_updated(self) -> datetime:
        if self.updated is None:
            raise XmlError("entry has no <updated>")
        return self.updated

    def resource_id(self, payload: etree._Element, collection: str) -> str:
        """The resource id from the entry id, else the payload id, else the edit link."""
        uri = self.id  # squeezed already
        if uri:
            found = _resource_id(uri, collection)
            if found is not None:
                return found
        for uri in (payload.get("id"), self.links.get("edit")):
            if uri:
                found = _resource_id(_squeeze(uri), collection)
                if found is not None:
                    return found
        raise XmlError(f"entry has no id of a {collection} resource")


_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # wire.uris's: what an id may be
_CACHE_MAX = 1024  # entries of each per-prefix cache below (a hostile feed has any number;
# prefixes longer than _CACHED_KEY_MAX are not kept either)
# (collection, a URI up to its last "/") -> whether resource_id_from_uri reads an id in the
# last segment after it. Every entry of a feed shares that prefix, so urlsplit runs once
# per feed instead of once per entry (~2 µs).
_ID_HEADS: dict[tuple[str, str], bool] = {}


def _resource_id(uri: str, collection: str) -> str | None:
    """``wire.uris.resource_id_from_uri(uri, collection)`` for a squeezed URI.

    When the part before the last ``/`` has no query or fragment, and the last segment
    ``tail`` is an id (``_ID_RE``), the answer is ``tail`` exactly when it is ``"0"`` for
    the same URI ending in ``/0``: such a segment holds none of the characters ``urlsplit``
    or the path rules treat apart (``/ ? # [ ] :``, whitespace), so it splits the same way
    and ends the path. tests/test_atom.py compares the two on generated URIs.
    """
    head, _, tail = uri.rpartition("/")
    key = (collection, head)
    ok = _ID_HEADS.get(key)
    if ok is None:
        ok = (
            "?" not in head
            and "#" not in head
            and resource_id_from_uri(head + "/0", collection) == "0"
        )
        if len(_ID_HEADS) < _CACHE_MAX and len(head) <= _CACHED_KEY_MAX:
            _ID_HEADS[key] = ok
    if ok and _ID_RE.fullmatch(tail) is not None:
        return tail
    return resource_id_from_uri(uri, collection)


# ---------------------------------------------------------------------------------------------
# Element-level record parsers (an incremental feed decoder calls these per <entry>)
# ---------------------------------------------------------------------------------------------


def _first_children(el: etree._Element) -> dict[str, etree._Element]:
    """Element children by local name; the first of each name wins."""
    found: dict[str, etree._Element] = {}
    names = LOCAL_NAMES
    for child in el:
        tag = child.tag
        local = names.get(tag)
        if local is None:
            local = local_name_of(tag)
        if local and local not in found:
            found[local] = child
    return found


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


_FIELD_NAMES = frozenset(CONTACT_FIELDS)


def _list_uri(ref: etree._Element) -> str:
    uri = _squeeze(ref.get("id") or "")
    if not uri:
        uri = _squeeze(links_of(ref).get("self", ""))
    if not uri:
        raise XmlError("ContactList without an id")
    return uri


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


def _activity_error(el: etree._Element) -> ActivityError:
    values = _first_children(el)
    line, email, message = (values.get(key) for key in ("LineNumber", "EmailAddress", "Message"))
    return ActivityError(
        line=0 if line is None else (_optional_int(line, "LineNumber") or 0),
        email="" if email is None else _string(email),
        message="" if message is None else _string(message),
    )


def _activity_record(entry: _Entry) -> Activity:
    payload = entry.required_payload("Activity")
    values: dict[str, etree._Element] = {}
    errors: list[ActivityError] = []
    for local, child in _children(payload):
        if local == "Errors":
            if "Errors" not in values:
                values["Errors"] = child
                errors.extend(
                    _activity_error(sub) for name, sub in _children(child) if name == "Error"
                )
        else:
            values.setdefault(local, child)

    def text(name: str) -> str:
        found = values.get(name)
        return "" if found is None else _string(found)

    def when(name: str) -> datetime | None:
        found = values.get(name)
        return None if found is None else _optional_time_of(found, name)

    insert_time = when("InsertTime")
    if insert_time is None:
        raise XmlError("activity has no <InsertTime>")
    count = values.get("TransactionCount")
    return Activity(
        id=entry.resource_id(payload, "activities"),
        type=text("Type").strip(_XML_WS),
        status=text("Status").strip(_XML_WS),
        insert_time=insert_time,
        updated=entry.required_updated(),
        errors=tuple(errors),
        file_name=text("FileName"),
        transaction_count=0 if count is None else (_optional_int(count, "TransactionCount") or 0),
        run_start_time=when("RunStartTime"),
        run_finish_time=when("RunFinishTime"),
    )


def activity_from_entry(el: etree._Element) -> Activity:
    """The :class:`Activity` of an activity ``<entry>`` element.

    Empty ``LineNumber`` and ``TransactionCount`` read as 0, ``FileName`` as written.

    Raises:
        XmlError: not an entry, no ``Activity`` payload, no activity id, no ``updated`` or
            ``InsertTime``, or a bad value.
    """
    return _activity_record(_Entry(el))


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


# ---------------------------------------------------------------------------------------------
# Document-level parsers
# ---------------------------------------------------------------------------------------------


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


def parse_service_document(data: bytes) -> ServiceDocument:
    """Parse an AtomPub service document (the first workspace).

    Raises:
        XmlError: hostile or malformed XML, or a root other than ``<service>``.
    """
    root = parse_xml(data)
    if local_name(root) != "service":
        raise XmlError(f"expected a <service>, found <{local_name(root)}>")
    workspace = _child(root, "workspace")
    if workspace is None:
        return ServiceDocument(title="", collections=())
    title_el = _child(workspace, "title")
    collections = []
    for local, child in _children(workspace):
        if local == "collection":
            name = _child(child, "title")
            collections.append(
                Collection(
                    href=(child.get("href") or "").strip(),
                    title="" if name is None else _string(name),
                    accept=tuple(
                        _string(sub).strip(_XML_WS)
                        for kind, sub in _children(child)
                        if kind == "accept"
                    ),
                )
            )
    return ServiceDocument(
        title="" if title_el is None else _string(title_el), collections=tuple(collections)
    )


def _request_payload(data: bytes, kind: str, max_bytes: int) -> etree._Element:
    root = parse_xml(data, max_bytes=max_bytes)
    if local_name(root) != "entry":
        raise XmlError(f"expected an <entry> with a {kind}, found <{local_name(root)}>")
    content = _child(root, "content")
    payload = None if content is None else _child(content, kind)
    if payload is None:
        raise XmlError(f"the entry has no <content> with a {kind}")
    return payload


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


# ---------------------------------------------------------------------------------------------
# Campaigns, schedules, account e-mail addresses and events (spec §8–10)
# ---------------------------------------------------------------------------------------------

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
_ATOM_SELF = f'<link xmlns="{ATOM_NS}" href="{{href}}" rel="self" />'

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


def _self_ref(base: Base, element: str, suffix: str, inner: str = "") -> str:
    """``<{element} id="{abs}"><link … rel="self" />{inner}</{element}>`` (a nested reference)."""
    return (
        f'<{element} id="{_attr(base.id(suffix))}">'
        f"{_ATOM_SELF.format(href=_attr(base.href(suffix)))}{inner}</{element}>"
    )


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


def email_address_entry(base: Base, email: AccountEmail, *, source: FeedMeta | None = None) -> str:
    """An ``Email`` entry of ``settings/emailaddresses`` (``settings-emailaddresses.xml``,
    ``settings-emailaddress-entry.xml``; spec §9).

    The title is the address; ``VerifiedTime`` is omitted while None (a ``Pending`` address).
    """
    suffix = f"settings/emailaddresses/{email.id}"
    uri = _attr(base.id(suffix))
    address = _text(email.email)
    return (
        f'{_ENTRY_OPEN}<link href="{_attr(base.href(suffix))}" rel="edit" />'
        f'<id>{uri}</id><title type="text">{address}</title>'
        f"<updated>{format_time(email.updated)}</updated>{_AUTHOR_CC}{_CONTENT_OPEN}"
        f'<Email xmlns="{CTCT_NS}" id="{uri}"><EmailAddress>{address}</EmailAddress>'
        f"<Status>{_text(email.status)}</Status>"
        f"{_optional_time('VerifiedTime', email.verified_time)}</Email></content>"
        f"{_source(base, source)}</entry>"
    )


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


# -- parsers ---------------------------------------------------------------------------------


def _ref_uri(el: etree._Element) -> str:
    """The URI a nested reference names: its ``id``, else its self link (whitespace removed)."""
    return _squeeze(el.get("id") or "") or _squeeze(links_of(el).get("self", ""))


def _id_or_uri(uri: str, collection: str) -> str:
    return resource_id_from_uri(uri, collection) or uri


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


def email_address_from_entry(el: etree._Element) -> AccountEmail:
    """The :class:`AccountEmail` of a ``settings/emailaddresses`` ``<entry>`` element.

    ``EmailAddress`` defaults to the entry title.

    Raises:
        XmlError: not an entry, no ``Email`` payload, no address id, no ``updated``, or a
            bad ``VerifiedTime``.
    """
    return _email_record(_Entry(el))


def _email_record(entry: _Entry) -> AccountEmail:
    payload = entry.required_payload("Email")
    values = _first_children(payload)
    address, status, verified = (
        values.get(key) for key in ("EmailAddress", "Status", "VerifiedTime")
    )
    return AccountEmail(
        id=entry.resource_id(payload, "emailaddresses"),
        email=entry.title.strip(_XML_WS) if address is None else _string(address).strip(_XML_WS),
        status="" if status is None else _string(status).strip(_XML_WS),
        updated=entry.required_updated(),
        verified_time=None if verified is None else _optional_time_of(verified, "VerifiedTime"),
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
