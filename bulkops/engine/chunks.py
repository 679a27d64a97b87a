"""The life of an import chunk: states, events and the transition table (sans-IO).

Modelled on :mod:`bulkops.wire.activity`: the transitions are data, :func:`next_chunk_state`
is a pure function, the journal applies it inside its transactions (refusing any pair the
table lacks), and the import loop (``engine/imports.py``) only asks :func:`next_step` what
to do for the state it finds and reports back with an event.

Lifecycle::

    PLANNED --SEND--> POSTING --ANSWER--> POSTED --FINISH--> DONE
       ^                 |                  ^
       |               LOSE                 |
       |                 v                  |
       +----ABSENT---- UNKNOWN ---ADOPT-----+
       +---AMBIGUOUS----+

    SUSPECT: POSTING -> POSTING, UNKNOWN -> UNKNOWN (marks the chunk ``suspected``)

* ``SEND`` is journaled *before* the POST: a chunk found in POSTING when a run starts has
  an unknown outcome (the process died while it was in flight), the same as a lost answer,
  so the run first applies ``LOSE`` to it.
* An UNKNOWN chunk is reconciled against the activities feed before anything is sent
  again: ``ADOPT`` the one activity its POST created, ``ABSENT`` when it created none, or
  ``AMBIGUOUS`` when that cannot be decided (it is then sent again and flagged
  ``maybe_twice``). ``SUSPECT`` marks an unanswered chunk that another chunk's undecidable
  candidate may belong to: that candidate is blocked, so if this chunk's answer turns out
  lost, finding nothing proves nothing, and its reconciliation says AMBIGUOUS, not ABSENT.
* A lost POST may still create its activity after its chunk was reconciled (the server
  finishes a request whose client is gone), so the possible owners of a candidate are the
  POSTs in flight *and* every lost POST the journal remembers, not only the unanswered
  chunks; a candidate one of them may own is never adopted by another chunk.

Invariants (checked by ``tests/test_engine_chunks.py``, a hypothesis state machine over
every event order, crash point and lost answer):

* A chunk is applied by the server at most once unless its ``maybe_twice`` flag is set.
  The flag is set in the same transaction as the event that allows a second application
  (:data:`FLAGS_TWICE`), so a crash cannot lose it.
* No chunk is lost: a chunk leaves UNKNOWN only through reconciliation, and only DONE is
  final.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping, Sequence

import attrs

from bulkops.errors import StateError

__all__ = [
    "FLAGS_TWICE",
    "NAMES_ACTIVITY",
    "TRANSITIONS",
    "ChunkEvent",
    "ChunkState",
    "Reconciled",
    "Step",
    "next_chunk_state",
    "next_step",
    "reconcile",
]


class ChunkState(enum.StrEnum):
    """Where a chunk is (the journal stores the value)."""

    PLANNED = "planned"
    POSTING = "posting"
    UNKNOWN = "unknown"
    POSTED = "posted"
    DONE = "done"


class ChunkEvent(enum.StrEnum):
    """What happens to a chunk."""

    SEND = "SEND"
    ANSWER = "ANSWER"
    LOSE = "LOSE"
    ADOPT = "ADOPT"
    ABSENT = "ABSENT"
    AMBIGUOUS = "AMBIGUOUS"
    SUSPECT = "SUSPECT"
    FINISH = "FINISH"


_S = ChunkState
_E = ChunkEvent

#: (state, event) -> new state. A pair that is absent is refused.
TRANSITIONS: dict[tuple[ChunkState, ChunkEvent], ChunkState] = {
    (_S.PLANNED, _E.SEND): _S.POSTING,
    (_S.POSTING, _E.ANSWER): _S.POSTED,
    (_S.POSTING, _E.LOSE): _S.UNKNOWN,
    (_S.UNKNOWN, _E.ADOPT): _S.POSTED,
    (_S.UNKNOWN, _E.ABSENT): _S.PLANNED,
    (_S.UNKNOWN, _E.AMBIGUOUS): _S.PLANNED,
    (_S.UNKNOWN, _E.SUSPECT): _S.UNKNOWN,
    (_S.POSTING, _E.SUSPECT): _S.POSTING,
    (_S.POSTED, _E.FINISH): _S.DONE,
}

#: Events that may let the server apply a chunk a second time: they set ``maybe_twice``.
FLAGS_TWICE = frozenset({_E.AMBIGUOUS})

#: Events that name the chunk's activity (the journal requires an activity id with them).
NAMES_ACTIVITY = frozenset({_E.ANSWER, _E.ADOPT})


def next_chunk_state(state: ChunkState, event: ChunkEvent) -> ChunkState:
    """The state after ``event`` happens to a chunk in ``state``.

    Raises:
        StateError: the table has no such transition.
    """
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise StateError(f"chunk event {event} is not allowed in state {state}") from None


class Step(enum.Enum):
    """What the import loop does next for a chunk in a given state."""

    SEND = "send"  #: POST it (PLANNED)
    LOSE = "lose"  #: a POST from a dead process: its outcome is unknown (POSTING)
    RECONCILE = "reconcile"  #: search the activities feed for its activity (UNKNOWN)
    WAIT = "wait"  #: poll its activity until it finishes (POSTED)
    NOTHING = "nothing"  #: it is done (DONE)


_STEPS = {
    _S.PLANNED: Step.SEND,
    _S.POSTING: Step.LOSE,
    _S.UNKNOWN: Step.RECONCILE,
    _S.POSTED: Step.WAIT,
    _S.DONE: Step.NOTHING,
}


def next_step(state: ChunkState) -> Step:
    """What to do with a chunk found in ``state`` (a POSTING chunk found by the loop was
    left by a process that died: the loop itself sends and answers in one step)."""
    return _STEPS[state]


@attrs.frozen
class Reconciled:
    """The verdict of a reconciliation.

    Attributes:
        event: ADOPT, ABSENT or AMBIGUOUS, for the reconciled chunk.
        activity_id: the adopted activity (with ADOPT only).
        suspects: other unanswered chunks an undecidable candidate may belong to (SUSPECT).
        blocked: the undecidable candidates: no chunk may adopt them afterwards.
        twice: other chunks, already past reconciliation, that an undecidable candidate may
            belong to (a lost POST of theirs created it late): flagged ``maybe_twice``.
    """

    event: ChunkEvent
    activity_id: str | None = None
    suspects: frozenset[int] = frozenset()
    blocked: frozenset[str] = frozenset()
    twice: frozenset[int] = frozenset()


def reconcile(
    fitting: Sequence[str],
    owners: Mapping[str, Collection[int]],
    *,
    suspected: bool = False,
    unanswered: Collection[int] | None = None,
) -> Reconciled:
    """Decide a reconciliation from the candidates that fit the chunk.

    Args:
        fitting: activities (not owned by any chunk of the run, not blocked) that the
            chunk's POST could have created, oldest first.
        owners: for each of them, the *other* chunks with a POST (in flight, or lost at any
            time in the run directory's life and not since matched to an activity) that
            could have created it too.
        suspected: the chunk was SUSPECTed: an activity it may have created is blocked.
        unanswered: the owners still POSTING or UNKNOWN (default: all of them). The others
            were reconciled already, so they cannot be SUSPECTed; a lost POST of theirs may
            have created the candidate after that, so they are flagged ``maybe_twice``.

    Returns:
        ADOPT the one candidate that fits this chunk alone; ABSENT when none fits (AMBIGUOUS
        if the chunk is suspected); otherwise AMBIGUOUS, suspecting every other unanswered
        chunk a candidate could belong to, flagging the rest, and blocking the candidates
        (nobody adopts them again).
    """
    if not fitting:
        return Reconciled(ChunkEvent.AMBIGUOUS if suspected else ChunkEvent.ABSENT)
    if len(fitting) == 1 and not owners.get(fitting[0]):
        return Reconciled(ChunkEvent.ADOPT, fitting[0])
    others = {seq for candidate in fitting for seq in owners.get(candidate, ())}
    suspects = others if unanswered is None else others & set(unanswered)
    return Reconciled(
        ChunkEvent.AMBIGUOUS,
        suspects=frozenset(suspects),
        blocked=frozenset(fitting),
        twice=frozenset(others - suspects),
    )
