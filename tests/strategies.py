"""Shared hypothesis strategies.

Each section belongs to the module it feeds; add new sections rather than editing others.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import strategies as st

from bulkops.wire.activity import ActivityStatus, ActivityType
from bulkops.wire.columns import CONTACT_FIELDS, CONTACT_STATUSES, OPT_IN_SOURCES
from bulkops.wire.model import (
    Activity,
    ActivityError,
    Contact,
    ContactList,
    ContactListMember,
    ContactListRef,
)
from bulkops.wire.uris import SYSTEM_LISTS

# =============================================================================================
# Atom records (bulkops.wire.atom / bulkops.wire.model)
# =============================================================================================


def is_xml_char(ch: str) -> bool:
    """XML 1.0's ``Char`` production, written out independently of the code under test."""
    code = ord(ch)
    return (
        code in (0x9, 0xA, 0xD)
        or 0x20 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or 0x10000 <= code <= 0x10FFFF
    )


def xml_clean(text: str) -> str:
    """What a value becomes after a build/parse round trip: the non-XML characters dropped."""
    return "".join(ch for ch in text if is_xml_char(ch))


#: Pieces that break naive XML writers: markup, entity syntax, CDATA ends, line ends that
#: parsers normalise, non-ASCII, and characters XML 1.0 forbids (which must be stripped).
HOSTILE_PIECES = (
    '"',
    "'",
    "&",
    "&amp;",
    "&#0;",
    "&lol;",
    "<",
    ">",
    "]]>",
    "<![CDATA[x]]>",
    "<!DOCTYPE x>",
    "<!ENTITY e 'x'>",
    "</entry>",
    "\r\n",
    "\r",
    "\n",
    "\t",
    " ",
    "é",
    "ß",
    "中文",
    "😀",
    "\u200b",
    "\x85",
    "\x7f",
    "\x00",
    "\x01",
    "\x0b",
    "\x1f",
    "\ufffe",
    "\uffff",
    "\ud800",
    "\udfff",
)

#: Any text at all, lone surrogates included.
any_char = st.characters(exclude_categories=())

hostile_text = st.lists(
    st.one_of(st.sampled_from(HOSTILE_PIECES), st.text(any_char, max_size=4)), max_size=6
).map("".join)

#: Hostile text that survives the trip unchanged: no stripped characters.
clean_text = hostile_text.map(xml_clean)


def _to_millis(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


#: Aware UTC moments with millisecond precision, as the wire carries them.
wire_times = st.datetimes(
    min_value=datetime(1900, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.just(UTC),
).map(_to_millis)

optional_times = st.none() | wire_times
optional_bools = st.none() | st.booleans()

user_list_ids = st.integers(min_value=1, max_value=10**12).map(str)
list_ids = st.sampled_from(tuple(SYSTEM_LISTS)) | user_list_ids
contact_ids = st.integers(min_value=1, max_value=10**15).map(str)
activity_ids = st.from_regex(r"a07e1[a-z0-9]{14}", fullmatch=True)


@st.composite
def contact_lists(draw: st.DrawFn) -> ContactList:
    """A system list (name and short name only) or a user list with hostile names."""
    list_id = draw(list_ids)
    updated = draw(wire_times)
    if list_id in SYSTEM_LISTS:
        name = SYSTEM_LISTS[list_id]
        return ContactList(id=list_id, name=name, short_name=name, updated=updated)
    return ContactList(
        id=list_id,
        name=draw(hostile_text),
        short_name=draw(hostile_text),
        updated=updated,
        opt_in_default=draw(optional_bools),
        display_on_signup=draw(optional_bools),
        sort_order=draw(st.none() | st.integers(min_value=-(10**9), max_value=10**9)),
        contact_count=draw(st.none() | st.integers(min_value=0, max_value=10**9)),
    )


contact_fields = st.dictionaries(st.sampled_from(CONTACT_FIELDS), hostile_text)

contact_list_refs = st.builds(
    ContactListRef,
    list_id=user_list_ids,
    opt_in_source=st.none() | st.sampled_from(OPT_IN_SOURCES),
    opt_in_time=optional_times,
)


@st.composite
def contacts(draw: st.DrawFn) -> Contact:
    """A contact with every optional part drawn, hostile field values included."""
    return Contact(
        id=draw(contact_ids),
        status=draw(st.sampled_from(CONTACT_STATUSES)),
        updated=draw(wire_times),
        fields=draw(contact_fields),
        lists=tuple(draw(st.lists(contact_list_refs, max_size=4))),
        opt_in_source=draw(st.none() | st.sampled_from(OPT_IN_SOURCES)),
        opt_in_time=draw(optional_times),
        opt_out_source=draw(st.none() | st.sampled_from(OPT_IN_SOURCES)),
        opt_out_time=draw(optional_times),
        opt_out_reason=draw(st.none() | hostile_text),
        confirmed=draw(optional_bools),
        insert_time=draw(optional_times),
        last_update_time=draw(optional_times),
    )


members = st.builds(
    ContactListMember,
    contact_id=contact_ids,
    email=hostile_text,
    name=hostile_text,
    list_id=user_list_ids,
    updated=wire_times,
)

activity_errors = st.builds(
    ActivityError,
    line=st.integers(min_value=0, max_value=2**31),
    email=hostile_text,
    message=hostile_text,
)


@st.composite
def activities(draw: st.DrawFn) -> Activity:
    """An activity in any status, with hostile error texts and file name."""
    return Activity(
        id=draw(activity_ids),
        type=draw(st.sampled_from(tuple(ActivityType))),
        status=draw(st.sampled_from(tuple(ActivityStatus))),
        insert_time=draw(wire_times),
        updated=draw(wire_times),
        errors=tuple(draw(st.lists(activity_errors, max_size=4))),
        file_name=draw(hostile_text),
        transaction_count=draw(st.integers(min_value=0, max_value=10**12)),
        run_start_time=draw(optional_times),
        run_finish_time=draw(optional_times),
    )


#: Root-relative paging hrefs whose query needs escaping in an attribute.
paging_hrefs = st.from_regex(
    r"/ws/customers/joe/contacts\?next=[A-Za-z0-9&\"<>'%=;\t\n\r-]{0,20}x", fullmatch=True
)

# =============================================================================================
