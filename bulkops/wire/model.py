"""The records the Atom layer renders and parses: lists, contacts, members, activities, feeds,
campaigns, account e-mail addresses and tracking events.

One set of records for both halves: the server renders them with the builders of
:mod:`bulkops.wire.atom` and the client gets them back from its parsers, so a record that
round-trips through ``build → parse`` is the contract (tests/test_atom.py checks it).

Invariants:

* Records are ``msgspec.Struct(frozen=True, kw_only=True)``: construct them with keywords.
* Ids are the short resource ids (``"7"``, ``"active"``, ``"22199"``, ``"a07e1ffaxjxffmvj6qd"``),
  never URIs; :class:`Base` turns them into ids and links.
* Every ``datetime`` is timezone-aware UTC with millisecond precision when it comes out of a
  parser (the wire carries milliseconds).
* Text fields hold the value as the XML carried it, after XML's own normalisations: no
  trimming. Request inputs (:class:`ListInput`, :class:`ContactInput`) are the exception: they
  are trimmed, and empty means "not given".
"""

from __future__ import annotations

from datetime import datetime

import attrs
import msgspec

from bulkops.wire.uris import account_path

__all__ = [
    "BOUNCE_CODES",
    "CAMPAIGN_FIELDS",
    "CAMPAIGN_READ_ONLY_FIELDS",
    "CAMPAIGN_STATUSES",
    "EVENT_ELEMENTS",
    "EVENT_KINDS",
    "AccountEmail",
    "Activity",
    "ActivityError",
    "Base",
    "Campaign",
    "CampaignCounts",
    "CampaignInput",
    "CampaignUrl",
    "Collection",
    "Contact",
    "ContactInput",
    "ContactList",
    "ContactListMember",
    "ContactListRef",
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
]


def _strip_trailing_slash(origin: str) -> str:
    return origin.rstrip("/")


@attrs.frozen
class Base:
    """Where ids and links of one account point.

    Ids (``<id>``, ``id="…"``) are absolute on ``origin``; ``rel="edit"`` and paging links are
    root-relative (spec §1.1).

    Attributes:
        origin: scheme and authority, no trailing slash (one is removed if given):
            ``"http://127.0.0.1:8080"`` or ``"http://api.constantcontact.com"``.
        username: the account name; lower-cased and percent-encoded in paths.
    """

    origin: str = attrs.field(converter=_strip_trailing_slash)
    username: str
    _path: str = attrs.field(init=False, repr=False, eq=False, hash=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_path", account_path(self.username))

    @property
    def path(self) -> str:
        """The root-relative base path of the account, slash-terminated: ``/ws/customers/joe/``."""
        return self._path

    def id(self, suffix: str = "") -> str:
        """Absolute id of a resource: ``id("lists/7") == "http://…/ws/customers/joe/lists/7"``.

        A leading ``/`` on ``suffix`` is ignored; ``id()`` is the account's base URI.
        """
        return self.origin + self._path + suffix.lstrip("/")

    def href(self, suffix: str = "") -> str:
        """Root-relative link to a resource: ``href("lists/7") == "/ws/customers/joe/lists/7"``."""
        return self._path + suffix.lstrip("/")


@attrs.frozen
class FeedMeta:
    """What a feed (or an entry's ``<source>``) says about its collection.

    Attributes:
        id_path: the collection below the account, as in :meth:`Base.id`: ``"lists"``,
            ``"lists/7/members"``, ``"contacts"``, ``"activities"``.
        title: the feed title (``"Contacts for Customer: joe"``).
        updated: when the page was rendered.
        author: the account name.
        next_href: root-relative link to the next page (query included), None on the last page.
        first_href: root-relative link to the first page.
        current_href: root-relative link to this page, echoing the query.
    """

    id_path: str
    title: str
    updated: datetime
    author: str
    next_href: str | None
    first_href: str
    current_href: str


class Link(msgspec.Struct, frozen=True, kw_only=True):
    """An Atom ``<link>``: ``rel`` is ``"alternate"`` when the element has none (RFC 4287)."""

    rel: str
    href: str


class ContactList(msgspec.Struct, frozen=True, kw_only=True):
    """A contact list (spec §4).

    System lists (``active``, ``do-not-mail``, ``removed``) carry only ``name`` and
    ``short_name``; the optional attributes are None for them, and None wherever the XML
    lacked the element.
    """

    id: str
    name: str
    short_name: str
    updated: datetime
    opt_in_default: bool | None = None
    display_on_signup: bool | None = None
    sort_order: int | None = None
    contact_count: int | None = None


class ContactListRef(msgspec.Struct, frozen=True, kw_only=True):
    """A contact's membership of one list, as listed in its ``ContactLists``.

    ``list_id`` is the list's id (``"3"``), or the raw URI when it names no list.
    """

    list_id: str
    opt_in_source: str | None = None
    opt_in_time: datetime | None = None


class Contact(msgspec.Struct, frozen=True, kw_only=True):
    """A contact (spec §6.1).

    ``fields`` maps ``Contact`` element names (keys from
    :data:`bulkops.wire.columns.CONTACT_FIELDS`) to values; empty values are absent. What a
    parsed record holds depends on the view it was rendered in: summary entries carry no
    lists, times or ``confirmed`` (None / empty), full entries no top-level opt-in.
    """

    id: str
    status: str
    updated: datetime
    fields: dict[str, str] = msgspec.field(default_factory=dict)
    lists: tuple[ContactListRef, ...] = ()
    opt_in_source: str | None = None
    opt_in_time: datetime | None = None
    opt_out_source: str | None = None
    opt_out_time: datetime | None = None
    opt_out_reason: str | None = None
    confirmed: bool | None = None
    insert_time: datetime | None = None
    last_update_time: datetime | None = None


class ContactListMember(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of a list's members feed (spec §5): only the address and display name."""

    contact_id: str
    email: str
    name: str
    list_id: str
    updated: datetime


class ActivityError(msgspec.Struct, frozen=True, kw_only=True):
    """One row an activity could not apply: the 1-based line (header = line 1), the address,
    and the server's message."""

    line: int
    email: str
    message: str


class Activity(msgspec.Struct, frozen=True, kw_only=True):
    """A bulk activity (spec §7.6). ``type`` and ``status`` are the strings the server sent
    (see :mod:`bulkops.wire.activity` for the known values)."""

    id: str
    type: str
    status: str
    insert_time: datetime
    updated: datetime
    errors: tuple[ActivityError, ...] = ()
    file_name: str = ""
    transaction_count: int = 0
    run_start_time: datetime | None = None
    run_finish_time: datetime | None = None


class GenericEntry(msgspec.Struct, frozen=True, kw_only=True):
    """An entry whose payload has no record of its own (image library, EventSpot, …).

    Attributes:
        id: the entry's ``<id>`` text.
        title: the entry's ``<title>`` text.
        updated: the entry's ``<updated>``, None when absent.
        kind: the local name of the payload element (``"Campaign"``), ``""`` without one.
        payload_id: the payload's ``id`` attribute, whitespace removed, or None.
        values: text of the payload's leaf children, by local name (first one wins).
        links: the entry's direct ``<link>`` children, in document order.
    """

    id: str
    title: str
    kind: str
    updated: datetime | None = None
    payload_id: str | None = None
    values: dict[str, str] = msgspec.field(default_factory=dict)
    links: tuple[Link, ...] = ()


class Feed(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed feed page: its id, title, links in document order, and records."""

    id: str
    title: str
    links: tuple[Link, ...]
    entries: list[FeedEntry]
    updated: datetime | None = None
    author: str | None = None

    def link(self, rel: str) -> str | None:
        """The ``href`` of the first link with this ``rel``, or None (``link("next")``)."""
        for link in self.links:
            if link.rel == rel:
                return link.href
        return None


class Collection(msgspec.Struct, frozen=True, kw_only=True):
    """A collection of a service document: its link, title and accepted media types."""

    href: str
    title: str
    accept: tuple[str, ...] = ()


class ServiceDocument(msgspec.Struct, frozen=True, kw_only=True):
    """An AtomPub service document (spec §1.3): the workspace title and its collections."""

    title: str
    collections: tuple[Collection, ...]


class ListInput(msgspec.Struct, frozen=True, kw_only=True):
    """The writable parts of a ``ContactList`` request body (POST/PUT ``/lists``).

    Each attribute is None when its element is absent or empty; ``name`` is trimmed.
    """

    name: str | None = None
    opt_in_default: bool | None = None
    sort_order: int | None = None
    display_on_signup: bool | None = None


class ContactInput(msgspec.Struct, frozen=True, kw_only=True):
    """The writable parts of a ``Contact`` request body (POST/PUT ``/contacts``).

    Attributes:
        fields: writable elements that are present and non-empty after trimming XML
            whitespace, by element name (keys from ``CONTACT_FIELDS``).
        list_uris: the ``ContactList`` ids as sent (whitespace removed); None when the body
            has no ``ContactLists`` element, ``()`` when it is present but empty.
        opt_in_source: the top-level ``OptInSource``, trimmed, or None.
    """

    fields: dict[str, str] = msgspec.field(default_factory=dict)
    list_uris: tuple[str, ...] | None = None
    opt_in_source: str | None = None


# ---------------------------------------------------------------------------------------------
# Campaigns, account e-mail addresses and tracking events (spec §8–10)
# ---------------------------------------------------------------------------------------------

#: Campaign status values as the wire writes them (spec §8.1); filters are case-insensitive.
CAMPAIGN_STATUSES: tuple[str, ...] = ("Draft", "Scheduled", "Running", "Sent")

#: The text elements of a full ``Campaign``, in the order the server writes them (between
#: the counters and ``Urls``; spec §8.2, fixtures ``campaign-entry.xml`` and
#: ``malformed/campaign-entry-with-stats.xml``).
CAMPAIGN_FIELDS: tuple[str, ...] = (
    "SharePageURL",
    "Subject",
    "FromName",
    "CampaignType",
    "ViewAsWebpage",
    "ViewAsWebpageLinkText",
    "ViewAsWebpageText",
    "PermissionReminder",
    "PermissionReminderText",
    "GreetingSalutation",
    "GreetingName",
    "GreetingString",
    "OrganizationName",
    "OrganizationAddress1",
    "OrganizationAddress2",
    "OrganizationAddress3",
    "OrganizationCity",
    "OrganizationState",
    "OrganizationInternationalState",
    "OrganizationCountry",
    "OrganizationPostalCode",
    "IncludeForwardEmail",
    "ForwardEmailLinkText",
    "IncludeSubscribeLink",
    "SubscribeLinkText",
    "ArchiveStatus",
    "ArchiveURL",
    "EmailContentFormat",
    "EmailContent",
    "EmailTextContent",
    "StyleSheet",
)

#: Elements of :data:`CAMPAIGN_FIELDS` the server sets; a request's values for them are ignored.
CAMPAIGN_READ_ONLY_FIELDS: frozenset[str] = frozenset(
    {"SharePageURL", "CampaignType", "ArchiveStatus", "ArchiveURL"}
)

#: The event collections, as path segments, and the payload element of each (spec §10.1).
EVENT_ELEMENTS: dict[str, str] = {
    "sends": "SentEvent",
    "opens": "OpenEvent",
    "clicks": "ClickEvent",
    "bounces": "BounceEvent",
    "forwards": "ForwardEvent",
    "optouts": "OptoutEvent",
}

#: Every event collection name, in the order service documents list them.
EVENT_KINDS: tuple[str, ...] = ("bounces", "clicks", "forwards", "opens", "optouts", "sends")

#: Bounce codes and their descriptions (spec §10.1).
BOUNCE_CODES: dict[str, str] = {
    "B": "Non-existent address",
    "D": "Undeliverable",
    "F": "Mailbox full",
    "S": "Suspended",
    "V": "Vacation or autoreply",
    "X": "Other",
    "Z": "Blocked",
}


class CampaignCounts(msgspec.Struct, frozen=True, kw_only=True):
    """The summary results of a campaign: one counter per kind of event (spec §8.2).

    ``spam_reports`` counts spam complaints, which have no event collection in v1.
    """

    sent: int = 0
    opens: int = 0
    clicks: int = 0
    bounces: int = 0
    forwards: int = 0
    opt_outs: int = 0
    spam_reports: int = 0


class CampaignUrl(msgspec.Struct, frozen=True, kw_only=True):
    """A tracked link of a campaign: its id (the click collection is
    ``campaigns/{campaign}/events/urls/{id}``), the URL and its click count."""

    id: str
    url: str
    clicks: int = 0


class EmailRef(msgspec.Struct, frozen=True, kw_only=True):
    """A campaign's ``FromEmail`` or ``ReplyToEmail``: the id of the account address
    (``settings/emailaddresses/{id}``; the raw URI when it names none) and the address."""

    id: str
    email: str


class Campaign(msgspec.Struct, frozen=True, kw_only=True):
    """A campaign (spec §8).

    The collection view carries ``name``, ``status`` and ``date`` only: ``counts`` is None and
    the rest empty. The full view adds the dates, the counters, every element of
    :data:`CAMPAIGN_FIELDS` in ``fields`` (empty values are absent), the tracked URLs, the
    list ids and the sender addresses.
    """

    id: str
    name: str
    status: str
    date: datetime
    updated: datetime
    last_edit_date: datetime | None = None
    last_run_date: datetime | None = None
    next_run_date: datetime | None = None
    counts: CampaignCounts | None = None
    fields: dict[str, str] = msgspec.field(default_factory=dict)
    urls: tuple[CampaignUrl, ...] = ()
    list_ids: tuple[str, ...] = ()
    from_email: EmailRef | None = None
    reply_to_email: EmailRef | None = None


class EmailRefInput(msgspec.Struct, frozen=True, kw_only=True):
    """A ``FromEmail``/``ReplyToEmail`` as a request sent it: the ``Email`` id (whitespace
    removed) and the ``EmailAddress``, each None when absent or empty."""

    uri: str | None = None
    email: str | None = None


class CampaignInput(msgspec.Struct, frozen=True, kw_only=True):
    """The writable parts of a ``Campaign`` request body (POST/PUT ``/campaigns``).

    Attributes:
        name: ``Name``, trimmed; None when absent or empty.
        fields: writable elements of :data:`CAMPAIGN_FIELDS` that are present and not empty
            after trimming XML whitespace; the value is kept as sent (untrimmed).
        list_uris: the ``ContactList`` ids as sent; None without a ``ContactLists`` element.
        from_email: ``FromEmail``, None when absent.
        reply_to_email: ``ReplyToEmail``, None when absent.
    """

    name: str | None = None
    fields: dict[str, str] = msgspec.field(default_factory=dict)
    list_uris: tuple[str, ...] | None = None
    from_email: EmailRefInput | None = None
    reply_to_email: EmailRefInput | None = None


class Schedule(msgspec.Struct, frozen=True, kw_only=True):
    """The schedule of a campaign (``campaigns/{id}/schedules/1``, spec §8.3)."""

    campaign_id: str
    time: datetime
    updated: datetime
    id: str = "1"


class AccountEmail(msgspec.Struct, frozen=True, kw_only=True):
    """An address of the account's settings (spec §9): ``Verified`` (with the time) or
    ``Pending`` (``verified_time`` None)."""

    id: str
    email: str
    status: str
    updated: datetime
    verified_time: datetime | None = None


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One tracking event (spec §10).

    Attributes:
        id: the event's own id, the last segment of its URI:
            ``"{campaign id},{n},{epoch ms}"`` from this server.
        kind: the collection it belongs to, a key of :data:`EVENT_ELEMENTS`.
        contact_id: the contact's id.
        email: the contact's address.
        campaign_id: the campaign's id.
        time: ``EventTime``.
        campaign_name: ``Campaign/Name``, None when the entry carries none.
        link_url: ``LinkUrl`` of a click.
        code: ``Code`` of a bounce (a key of :data:`BOUNCE_CODES`).
        description: ``Description`` of a bounce.
        bounce_message: ``BounceMessage`` of a bounce.
    """

    id: str
    kind: str
    contact_id: str
    email: str
    campaign_id: str
    time: datetime
    campaign_name: str | None = None
    link_url: str | None = None
    code: str | None = None
    description: str | None = None
    bounce_message: str | None = None


class EventSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of ``contacts/{id}/events/summary``: a contact's events for one campaign."""

    contact_id: str
    email: str
    campaign_id: str
    campaign_name: str
    updated: datetime
    opens: int = 0
    clicks: int = 0
    forwards: int = 0


#: Anything :func:`bulkops.wire.atom.feeds.record_from_entry` returns.
FeedEntry = (
    ContactList
    | Contact
    | ContactListMember
    | Activity
    | Campaign
    | Schedule
    | AccountEmail
    | Event
    | EventSummary
    | GenericEntry
)
