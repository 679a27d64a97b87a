"""The activity lifecycle table and type rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkops.errors import LifecycleError
from bulkops.wire.activity import (
    FINAL_STATUSES,
    TRANSITIONS,
    ActivityEvent,
    ActivityStatus,
    ActivityType,
    check_observations,
    may_follow,
    next_status,
    reported_type,
)


@given(st.sampled_from(ActivityStatus), st.sampled_from(ActivityEvent))
def test_every_pair_gives_a_legal_status_or_a_protocol_error(status, event) -> None:  # type: ignore[no-untyped-def]
    """For every (status, event) the table answers with a status or raises LifecycleError."""
    if (status, event) in TRANSITIONS:
        new = next_status(status, event)
        assert new in ActivityStatus
        assert may_follow(status, new)
    else:
        with pytest.raises(LifecycleError):
            next_status(status, event)


@given(st.sampled_from(sorted(FINAL_STATUSES)), st.sampled_from(ActivityEvent))
def test_final_statuses_are_final(status, event) -> None:  # type: ignore[no-untyped-def]
    """Nothing happens after COMPLETE or ERROR."""
    assert status.is_final
    with pytest.raises(LifecycleError):
        next_status(status, event)


@given(st.lists(st.sampled_from(ActivityEvent), max_size=12))
def test_any_legal_event_sequence_is_a_legal_observation_sequence(events) -> None:  # type: ignore[no-untyped-def]
    """What the server can drive, the engine accepts when it polls, even with gaps."""
    status = ActivityStatus.PENDING
    seen = [status]
    for event in events:
        try:
            status = next_status(status, event)
        except LifecycleError:
            continue
        seen.append(status)
    check_observations(seen)
    check_observations(seen[::2])


def test_going_back_from_a_final_status_is_a_protocol_error() -> None:
    """A poll that sees COMPLETE then RUNNING means the server broke the contract."""
    with pytest.raises(LifecycleError):
        check_observations(
            [ActivityStatus.RUNNING, ActivityStatus.COMPLETE, ActivityStatus.RUNNING]
        )
    assert may_follow(ActivityStatus.RUNNING, ActivityStatus.QUEUED)  # recovery after restart


def test_reported_type_follows_the_column_rule() -> None:
    """Add types report ADD_CONTACTS for email-only data, else ADD_CONTACT_DETAIL."""
    assert reported_type(ActivityType.SV_ADD, 1) is ActivityType.ADD_CONTACTS
    assert reported_type(ActivityType.ADD_CONTACTS, 3) is ActivityType.ADD_CONTACT_DETAIL
    assert reported_type(ActivityType.ADD_CONTACT_DETAIL, 1) is ActivityType.ADD_CONTACTS
    assert (
        reported_type(ActivityType.REMOVE_CONTACTS_FROM_LISTS, 1)
        is ActivityType.REMOVE_CONTACTS_FROM_LISTS
    )
