"""The domain errors of the server's store and queries: what went wrong, never an HTTP status.

Storage code (the SQL modules, and any other database behind
:class:`~bulkops.server.storage.Storage`) raises these; the HTTP edge maps them to statuses in
one place (:func:`bulkops.server.http.problem_for`)::

    StoreError            a request the data refuses (message: a short reason for the client)
     ├── Invalid           the request names something unusable (a list of no account)   400
     ├── Forbidden         allowed to nobody in this state (re-subscribing Do Not Mail)  403
     ├── NotFound          no such resource of this account                              404
     ├── Conflict          clashes with what exists (a taken name, a non-Draft campaign) 409
     └── QueueFull         the account has its limit of unfinished activities            429
"""

from __future__ import annotations

__all__ = ["Conflict", "Forbidden", "Invalid", "NotFound", "QueueFull", "StoreError"]


class StoreError(Exception):
    """A request the stored data refuses; ``message`` is a short reason for the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Invalid(StoreError):
    """The request names something this account cannot use (a list it has no such of, …)."""


class Forbidden(StoreError):
    """The change is refused in the resource's current state, whoever asks."""


class NotFound(StoreError):
    """The account has no such resource."""


class Conflict(StoreError):
    """The change clashes with what is stored (a name taken, a status that forbids it)."""


class QueueFull(StoreError):
    """The account already has ``limit`` unfinished activities."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} unfinished activities")
        self.limit = limit
