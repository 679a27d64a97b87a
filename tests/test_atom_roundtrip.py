"""Hypothesis: every record built and parsed back is the record (as its view carries it)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from bulkops.wire.atom.activities import activity_entry, activity_from_entry
from bulkops.wire.atom.contacts import (
    ContactView,
    contact_entry,
    contact_from_entry,
    parse_contact_entry,
)
from bulkops.wire.atom.feeds import feed_head, feed_tail, parse_feed, record_from_entry
from bulkops.wire.atom.lists import list_entry, list_from_entry, member_entry, member_from_entry
from bulkops.wire.atom.syntax import format_time, parse_time, parse_xml, strip_illegal_xml_chars
from bulkops.wire.atom.writing import document
from bulkops.wire.columns import CONTACT_FIELDS
from bulkops.wire.model import (
    Activity,
    ActivityError,
    Base,
    Contact,
    ContactInput,
    ContactList,
    ContactListMember,
    FeedMeta,
)
from tests import strategies as s

BASE = Base("http://127.0.0.1:8080", "joe")
XML_WS = " \t\r\n"
MS_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def reparse(fragment: str) -> object:
    return parse_xml(document(fragment))


def expected_list(lst: ContactList) -> ContactList:
    return ContactList(
        id=lst.id,
        name=s.xml_clean(lst.name),
        short_name=s.xml_clean(lst.short_name),
        updated=lst.updated,
        opt_in_default=lst.opt_in_default,
        display_on_signup=lst.display_on_signup,
        sort_order=lst.sort_order,
        contact_count=lst.contact_count,
    )


def clean_fields(fields: dict[str, str], names: tuple[str, ...] = CONTACT_FIELDS) -> dict[str, str]:
    cleaned = {name: s.xml_clean(value) for name, value in fields.items() if name in names}
    return {name: value for name, value in cleaned.items() if value}


def expected_contact(contact: Contact, view: ContactView) -> Contact:
    """The contact as a view carries it (see contact_entry's docstring)."""
    if view == "full":
        reason = None if contact.opt_out_reason is None else s.xml_clean(contact.opt_out_reason)
        return Contact(
            id=contact.id,
            status=contact.status,
            updated=contact.updated,
            fields=clean_fields(contact.fields),
            lists=contact.lists,
            opt_out_source=contact.opt_out_source,
            opt_out_time=contact.opt_out_time,
            opt_out_reason=reason or None,
            confirmed=contact.confirmed,
            insert_time=contact.insert_time,
            last_update_time=contact.last_update_time,
        )
    searched = view == "search"
    return Contact(
        id=contact.id,
        status=contact.status,
        updated=contact.updated,
        fields=clean_fields(contact.fields, ("EmailAddress", "EmailType", "Name")),
        opt_in_source=contact.opt_in_source,
        opt_in_time=contact.opt_in_time,
        confirmed=contact.confirmed if searched else None,
        insert_time=contact.insert_time if searched else None,
    )


@given(s.contact_lists(), st.booleans())
def test_lists_round_trip(lst: ContactList, with_source: bool) -> None:
    """list_entry then list_from_entry gives the list back, hostile names included."""
    source = FeedMeta("lists", "Contact Lists", lst.updated, "joe", None, "/f", "/c")
    built = list_entry(BASE, lst, source=source if with_source else None)
    assert list_from_entry(reparse(built)) == expected_list(lst)


@given(s.members)
def test_members_round_trip(member: ContactListMember) -> None:
    """member_entry then member_from_entry gives the member back."""
    back = member_from_entry(reparse(member_entry(BASE, member)))
    assert back == ContactListMember(
        contact_id=member.contact_id,
        email=s.xml_clean(member.email),
        name=s.xml_clean(member.name),
        list_id=member.list_id,
        updated=member.updated,
    )


@given(s.contacts(), st.sampled_from(["summary", "search", "full"]))
def test_contacts_round_trip_in_every_view(contact: Contact, view: ContactView) -> None:
    """contact_entry then contact_from_entry gives what the view carries."""
    back = contact_from_entry(reparse(contact_entry(BASE, contact, view=view)))
    assert back == expected_contact(contact, view)


@given(s.contacts())
def test_full_contacts_parse_back_as_requests(contact: Contact) -> None:
    """A full entry sent back as a PUT body gives its fields (trimmed, empties dropped) and
    the URIs of its lists."""
    parsed = parse_contact_entry(document(contact_entry(BASE, contact, view="full")))
    trimmed = {name: value.strip(XML_WS) for name, value in clean_fields(contact.fields).items()}
    assert parsed == ContactInput(
        fields={name: value for name, value in trimmed.items() if value},
        list_uris=tuple(BASE.id(f"lists/{ref.list_id}") for ref in contact.lists),
        opt_in_source=None,
    )


@given(s.activities())
def test_activities_round_trip(activity: Activity) -> None:
    """activity_entry then activity_from_entry gives the activity back, errors and all."""
    back = activity_from_entry(reparse(activity_entry(BASE, activity)))
    assert back == Activity(
        id=activity.id,
        type=activity.type,
        status=activity.status,
        insert_time=activity.insert_time,
        updated=activity.updated,
        errors=tuple(
            ActivityError(line=e.line, email=s.xml_clean(e.email), message=s.xml_clean(e.message))
            for e in activity.errors
        ),
        file_name=s.xml_clean(activity.file_name),
        transaction_count=activity.transaction_count,
        run_start_time=activity.run_start_time,
        run_finish_time=activity.run_finish_time,
    )


@given(
    st.lists(s.contact_lists(), max_size=5),
    s.hostile_text,
    s.wire_times,
    st.none() | s.paging_hrefs,
    s.paging_hrefs,
)
def test_feeds_round_trip(
    lists: list[ContactList], title: str, updated: datetime, next_href: str | None, current: str
) -> None:
    """A streamed feed parses into its entries, title and paging links."""
    meta = FeedMeta("lists", title, updated, "joe", next_href, "/ws/customers/joe/lists", current)
    page = feed_head(BASE, meta) + "".join(list_entry(BASE, x) for x in lists)
    feed = parse_feed(document(page + feed_tail()))
    assert feed.entries == [expected_list(x) for x in lists]
    assert (feed.title, feed.updated, feed.author) == (s.xml_clean(title), updated, "joe")
    assert (feed.link("next"), feed.link("current")) == (next_href, current)
    assert feed.id == BASE.id("lists")


@given(st.one_of(s.contact_lists(), s.members, s.contacts(), s.activities()))
def test_record_from_entry_picks_the_parser_by_payload(record: object) -> None:
    """Dispatch by payload name gives the same record as the specific parser."""
    specific: Callable[[Any], object]
    if isinstance(record, ContactList):
        built, specific = list_entry(BASE, record), list_from_entry
    elif isinstance(record, ContactListMember):
        built, specific = member_entry(BASE, record), member_from_entry
    elif isinstance(record, Contact):
        built, specific = contact_entry(BASE, record, view="full"), contact_from_entry
    else:
        assert isinstance(record, Activity)
        built, specific = activity_entry(BASE, record), activity_from_entry
    element = reparse(built)
    assert record_from_entry(element) == specific(element)


@given(s.clean_text)
def test_clean_text_survives_unchanged(text: str) -> None:
    """Text made only of XML characters (quotes, &, <, ]]>, CR, non-ASCII) comes back as is."""
    member = ContactListMember(
        contact_id="1", email=text, name=text, list_id="2", updated=datetime(2009, 1, 1, tzinfo=UTC)
    )
    back = member_from_entry(reparse(member_entry(BASE, member)))
    assert (back.email, back.name) == (text, text)


@given(s.hostile_text)
def test_strip_illegal_xml_chars_matches_the_xml_char_production(text: str) -> None:
    """The stripping agrees with an independent reading of XML 1.0's Char."""
    assert strip_illegal_xml_chars(text) == s.xml_clean(text)


@given(
    st.datetimes(
        min_value=datetime(1900, 1, 2),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
        ),
    )
)
def test_time_round_trips_to_the_millisecond(moment: datetime) -> None:
    """format_time then parse_time is the same instant, truncated to milliseconds, in UTC."""
    text = format_time(moment)
    assert MS_UTC.fullmatch(text)
    back = parse_time(text)
    assert back.tzinfo is UTC
    assert timedelta(0) <= moment - back < timedelta(milliseconds=1)
    assert format_time(back) == text
