"""Activity types, statuses, form field names, limits, and the lifecycle table.

The server drives an activity through the table; the engine only observes statuses through
polling and checks each observation against the same table (h11-style: the transitions are
data, not code scattered across both sides). Spec §7.

Lifecycle::

    UNCONFIRMED --CONFIRM--> PENDING --ENQUEUE--> QUEUED --START--> RUNNING --FINISH--> COMPLETE
         |                      |                   ^  |               |
         +-------FAIL-----------+-------FAIL--------|--+----FAIL-------+--------> ERROR
                                                    +----RECOVER-------+

``RECOVER`` is the server taking a RUNNING activity back after a restart: its transaction never
committed, so it is queued again. COMPLETE and ERROR are final.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from bulkops.errors import LifecycleError

__all__ = [
    "ADD_TYPES",
    "DATA_TYPES",
    "DEFAULT_MAX_ACTIVITY_BYTES",
    "DEFAULT_MAX_ACTIVITY_ROWS",
    "FINAL_STATUSES",
    "MIN_ACTIVITY_ROWS",
    "TRANSITIONS",
    "ActivityEvent",
    "ActivityStatus",
    "ActivityType",
    "Field",
    "check_observations",
    "may_follow",
    "next_status",
    "reported_type",
]

#: Default server limits on one activity's ``data``: data rows (the header line not counted)
#: and bytes of the ``data`` value as sent. The chunker uses the same numbers.
DEFAULT_MAX_ACTIVITY_ROWS = 40_000
DEFAULT_MAX_ACTIVITY_BYTES = 4 * 1024 * 1024
#: The v1 terms: activities are for 25 contacts or more.
MIN_ACTIVITY_ROWS = 25


class Field(enum.StrEnum):
    """Form field names of ``POST /activities`` (spec §7.3)."""

    ACTIVITY_TYPE = "activityType"
    DATA = "data"
    LISTS = "lists"
    LIST_ID = "listId"
    FILE_TYPE = "fileType"
    EXPORT_OPT_DATE = "exportOptDate"
    EXPORT_OPT_SOURCE = "exportOptSource"
    EXPORT_LIST_NAME = "exportListName"
    SORT_BY = "sortBy"
    COLUMNS = "columns"


class ActivityType(enum.StrEnum):
    """Activity types a client may send (spec §7.2)."""

    SV_ADD = "SV_ADD"
    ADD_CONTACTS = "ADD_CONTACTS"
    ADD_CONTACT_DETAIL = "ADD_CONTACT_DETAIL"
    REMOVE_CONTACTS_FROM_LISTS = "REMOVE_CONTACTS_FROM_LISTS"
    CLEAR_CONTACTS_FROM_LISTS = "CLEAR_CONTACTS_FROM_LISTS"
    EXPORT_CONTACTS = "EXPORT_CONTACTS"


#: The three spellings of "add or update contacts from data onto lists".
ADD_TYPES = frozenset(
    {ActivityType.SV_ADD, ActivityType.ADD_CONTACTS, ActivityType.ADD_CONTACT_DETAIL}
)
#: Types that carry a ``data`` field.
DATA_TYPES = ADD_TYPES | {ActivityType.REMOVE_CONTACTS_FROM_LISTS}


def reported_type(requested: ActivityType, column_count: int) -> ActivityType:
    """The ``Type`` the server reports for a requested type.

    Add types report ``ADD_CONTACTS`` when the email address is the only column, else
    ``ADD_CONTACT_DETAIL`` (spec §7.2); every other type reports itself.
    """
    if requested in ADD_TYPES:
        return ActivityType.ADD_CONTACTS if column_count <= 1 else ActivityType.ADD_CONTACT_DETAIL
    return requested


class ActivityStatus(enum.StrEnum):
    """Activity statuses (spec §7.7)."""

    UNCONFIRMED = "UNCONFIRMED"
    PENDING = "PENDING"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    ERROR = "ERROR"

    @property
    def is_final(self) -> bool:
        """True for COMPLETE and ERROR, after which nothing changes."""
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({ActivityStatus.COMPLETE, ActivityStatus.ERROR})


class ActivityEvent(enum.StrEnum):
    """What happens to an activity on the server."""

    CONFIRM = "CONFIRM"
    ENQUEUE = "ENQUEUE"
    START = "START"
    FINISH = "FINISH"
    FAIL = "FAIL"
    RECOVER = "RECOVER"


_S = ActivityStatus
_E = ActivityEvent

#: (status, event) -> new status. A pair that is absent is a protocol error.
TRANSITIONS: dict[tuple[ActivityStatus, ActivityEvent], ActivityStatus] = {
    (_S.UNCONFIRMED, _E.CONFIRM): _S.PENDING,
    (_S.UNCONFIRMED, _E.FAIL): _S.ERROR,
    (_S.PENDING, _E.ENQUEUE): _S.QUEUED,
    (_S.PENDING, _E.FAIL): _S.ERROR,
    (_S.QUEUED, _E.START): _S.RUNNING,
    (_S.QUEUED, _E.FAIL): _S.ERROR,
    (_S.RUNNING, _E.FINISH): _S.COMPLETE,
    (_S.RUNNING, _E.FAIL): _S.ERROR,
    (_S.RUNNING, _E.RECOVER): _S.QUEUED,
}


def next_status(status: ActivityStatus, event: ActivityEvent) -> ActivityStatus:
    """The status after ``event`` happens in ``status``.

    Raises:
        LifecycleError: the table has no such transition (for example anything after a
            final status).
    """
    try:
        return TRANSITIONS[status, event]
    except KeyError:
        raise LifecycleError(f"activity event {event} is not allowed in status {status}") from None


def _reachable(start: ActivityStatus) -> frozenset[ActivityStatus]:
    seen = {start}
    frontier: list[ActivityStatus] = [start]
    while frontier:
        current = frontier.pop()
        for (status, _event), target in TRANSITIONS.items():
            if status is current and target not in seen:
                seen.add(target)
                frontier.append(target)
    return frozenset(seen)


_REACHABLE = {status: _reachable(status) for status in ActivityStatus}


def may_follow(previous: ActivityStatus, observed: ActivityStatus) -> bool:
    """Whether a poll may observe ``observed`` after having observed ``previous``.

    Polls can miss intermediate states, so any status reachable through the table (or the
    same status again) is legal.
    """
    return observed in _REACHABLE[previous]


def check_observations(statuses: Iterable[ActivityStatus]) -> None:
    """Check a sequence of polled statuses against the table.

    Raises:
        LifecycleError: one observation cannot follow the one before it.
    """
    previous: ActivityStatus | None = None
    for status in statuses:
        if previous is not None and not may_follow(previous, status):
            raise LifecycleError(f"activity status went from {previous} to {status}")
        previous = status
