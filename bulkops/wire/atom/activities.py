"""Bulk activities (spec §7): the activity entry and its record parser."""

from __future__ import annotations

from datetime import datetime

from lxml import etree

from bulkops.errors import XmlError
from bulkops.wire.atom.reading import (
    _XML_WS,
    _children,
    _Entry,
    _first_children,
    _optional_int,
    _optional_time_of,
    _string,
)
from bulkops.wire.atom.syntax import CTCT_NS, _attr, _text, format_time
from bulkops.wire.atom.writing import _CONTENT_OPEN, _ENTRY_OPEN, _optional_time, _source
from bulkops.wire.model import Activity, ActivityError, Base, FeedMeta

__all__ = ["activity_entry", "activity_from_entry"]


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
