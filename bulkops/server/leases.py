"""Activity leases: which worker may run an activity, as a table and a pure function.

Several processes (``bulkops serve --processes N``, ``bulkops worker``) run activity workers
on one database. A worker *claims* an activity and holds it under a **lease** — its owner id
and an expiry time — that it renews while it runs it. A worker that dies stops renewing;
once the lease has expired any worker may claim the activity again and runs it from the
start. This module is sans-IO (like :mod:`bulkops.wire.activity`): the store reads a lease
from the activity row, asks :func:`next_lease` what an event makes of it, and writes the
answer in the same transaction.

Invariants (tests/test_server_leases.py checks them with hypothesis):

* **One holder at a time.** A lease is claimed only when free or expired, so at any time
  at most one worker holds an unexpired lease of an activity.
* **Owners keep what nobody took.** Renewing, releasing and finishing need the caller to be
  the owner the row names — not an unexpired lease: a lease that expired but was not claimed
  again is still its owner's. Expiry only makes it claimable.
* **Done is final.** A finished activity is never claimed again; finishing twice is refused.
* **Exactly once, not half.** The apply of an activity and its ``FINISH`` are one
  transaction that checks the activity is still RUNNING: when two workers ran the same
  activity (the first past its lease, say, stalled rather than dead), the second commit
  finds it COMPLETE and rolls back. So a lease decides who *should* run an activity; the
  transaction keeps it applied once.

Times are integer milliseconds since the epoch (the database's clock is the workers' wall
clocks; leases are seconds long, so small clock differences between machines only shift
when an abandoned activity is taken over).
"""

from __future__ import annotations

import enum
import os
import secrets
import socket

import attrs

__all__ = [
    "TRANSITIONS",
    "Claim",
    "Lease",
    "LeaseError",
    "LeaseEvent",
    "LeaseState",
    "claimable",
    "new_worker_id",
    "next_lease",
    "owner_is_dead_here",
]


class LeaseState(enum.Enum):
    """Where an activity stands for the workers."""

    FREE = "FREE"  #: waiting (PENDING or QUEUED): any worker may claim it
    HELD = "HELD"  #: RUNNING under a worker's lease
    DONE = "DONE"  #: COMPLETE or ERROR: never run again


class LeaseEvent(enum.Enum):
    """What a worker does to a lease."""

    CLAIM = "CLAIM"  #: take a free or expired lease for ``lease_ms``
    RENEW = "RENEW"  #: push the owner's expiry to ``now + lease_ms``
    RELEASE = "RELEASE"  #: the owner gives it back unfinished (shutdown): free again
    FINISH = "FINISH"  #: the owner completed or failed the activity


#: ``(state, event) → state``; a pair not here is refused. ``(HELD, CLAIM)`` further needs the
#: lease to have expired, and the owner's events need the caller to be the owner.
TRANSITIONS: dict[tuple[LeaseState, LeaseEvent], LeaseState] = {
    (LeaseState.FREE, LeaseEvent.CLAIM): LeaseState.HELD,
    (LeaseState.HELD, LeaseEvent.CLAIM): LeaseState.HELD,
    (LeaseState.HELD, LeaseEvent.RENEW): LeaseState.HELD,
    (LeaseState.HELD, LeaseEvent.RELEASE): LeaseState.FREE,
    (LeaseState.HELD, LeaseEvent.FINISH): LeaseState.DONE,
}


class LeaseError(Exception):
    """The event is not allowed on this lease (not the owner, not expired, finished)."""


@attrs.frozen(kw_only=True)
class Lease:
    """An activity's lease: its state, and while HELD its owner and expiry (ms).

    A HELD lease with no owner (a RUNNING activity left by a server from before leases)
    has expiry 0: it is claimable at once.
    """

    state: LeaseState
    owner: str | None = None
    expires: int = 0


@attrs.frozen(kw_only=True)
class Claim:
    """An activity a worker has just claimed.

    Attributes:
        activity_id: its public id.
        account_id: its account.
        reclaimed: it was RUNNING under an expired lease (another worker died running it).
    """

    activity_id: str
    account_id: int
    reclaimed: bool


def claimable(lease: Lease, now: int) -> bool:
    """Whether a worker may claim ``lease`` at ``now``: free, or held past its expiry."""
    return lease.state is LeaseState.FREE or (
        lease.state is LeaseState.HELD and lease.expires <= now
    )


def next_lease(lease: Lease, event: LeaseEvent, *, worker: str, now: int, lease_ms: int) -> Lease:
    """The lease after ``worker`` does ``event`` at ``now``.

    Formula: CLAIM and RENEW give ``expires = now + lease_ms`` (RENEW never shortens it).

    Raises:
        LeaseError: the table has no such transition, a CLAIM finds an unexpired lease, or
            RENEW/RELEASE/FINISH come from a worker that is not the owner.
    """
    new = TRANSITIONS.get((lease.state, event))
    if new is None:
        raise LeaseError(f"{event.value} is not allowed on a {lease.state.value} lease")
    if event is LeaseEvent.CLAIM:
        if not claimable(lease, now):
            raise LeaseError(f"the lease of {lease.owner} runs until {lease.expires}")
        return Lease(state=new, owner=worker, expires=now + lease_ms)
    if lease.owner != worker:
        raise LeaseError(f"{worker} does not hold this lease (held by {lease.owner})")
    if event is LeaseEvent.RENEW:
        return Lease(state=new, owner=worker, expires=max(lease.expires, now + lease_ms))
    return Lease(state=new)


# -- worker ids ---------------------------------------------------------------------------


def new_worker_id() -> str:
    """A fresh worker id: ``host:pid:random`` (unique; names where the worker runs)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def owner_is_dead_here(owner: str) -> bool:
    """Whether ``owner`` names a worker process of this host that no longer exists.

    Lets a restarted server take over at once what its killed predecessor held, rather than
    after the lease expires. Unknown formats, other hosts and live (or unknowable) processes
    are False: their leases simply expire.
    """
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False
