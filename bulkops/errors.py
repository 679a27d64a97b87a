"""The one exception tree of bulkops.

Every failure the package reports is an instance of :class:`BulkOpsError`. Lower layers raise
the narrowest class; the engine maps httpx exceptions and HTTP error statuses into this tree
exactly once, at the seam (``raise Mapped(...) from exc``), and the CLI turns the tree into
messages and exit codes in one place.

::

    BulkOpsError
    ├── ConfigError              bad options or settings (CLI exit 64)
    ├── InputError               an input file is unreadable or a row is bad: file, line, field
    ├── ProtocolError            the peer broke the wire contract
    │   ├── XmlError             malformed, hostile or oversized XML
    │   └── LifecycleError       an activity status change the lifecycle table forbids
    ├── ApiError                 the server answered with an HTTP error status
    │   ├── AuthError            401 / 403
    │   ├── NotFound             404
    │   ├── Conflict             409
    │   └── Throttled            429 (``retry_after`` in seconds when the server gave one)
    ├── TransportError           connect/read/write failures that outlived the retries
    │   ├── OutcomeUnknown       a POST was sent but its answer was lost: it may have been applied
    │   └── BodyBrokenOff        a response body broke off while it streamed (read it again)
    ├── ActivityFailed           an activity ended in ERROR
    │   └── ActivityStalled      an activity made no progress for the stall timeout
    └── StateError               a transition a state table forbids (a bug, or an edited journal)

Concurrent tasks report errors as (nested) exception groups; :func:`single_errors` turns a
group back into one error of the tree, by one rule used by the CLI, imports and exports.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = [
    "ActivityFailed",
    "ActivityStalled",
    "ApiError",
    "AuthError",
    "BodyBrokenOff",
    "BulkOpsError",
    "ConfigError",
    "Conflict",
    "InputError",
    "LifecycleError",
    "NotFound",
    "OutcomeUnknown",
    "ProtocolError",
    "StateError",
    "Throttled",
    "TransportError",
    "XmlError",
    "collapse_group",
    "single_errors",
]


class BulkOpsError(Exception):
    """Base class of every error bulkops raises."""


class ConfigError(BulkOpsError):
    """Invalid options, settings or credentials configuration."""


class InputError(BulkOpsError):
    """An input file cannot be read, or one of its rows is invalid.

    Args:
        message: what is wrong, in words a user can act on.
        path: the input file, when known.
        line: the 1-based physical line where the offending record starts.
        field: the column or element name at fault.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.path = path
        self.line = line
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.path is not None:
            where.append(self.path)
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return f"{', '.join(where)}: {self.message}" if where else self.message


class ProtocolError(BulkOpsError):
    """The other side sent something that breaks the wire contract."""


class XmlError(ProtocolError):
    """XML that is malformed, hostile (entities, DTDs), too deep or too large."""


class LifecycleError(ProtocolError):
    """An activity status change that the lifecycle table does not allow."""


class ApiError(BulkOpsError):
    """The server answered with an HTTP error status.

    Args:
        status: the HTTP status code.
        message: the server's short text body, or a description.
        method: the request method, when known.
        url: the request URL (never carrying credentials), when known.
    """

    def __init__(
        self, status: int, message: str, *, method: str | None = None, url: str | None = None
    ) -> None:
        self.status = status
        self.message = message
        self.method = method
        self.url = url
        super().__init__(str(self))

    def __str__(self) -> str:
        request = f" ({self.method} {self.url})" if self.method and self.url else ""
        return f"HTTP {self.status}{request}: {self.message}"


class AuthError(ApiError):
    """Missing, wrong, or foreign credentials (401 or 403)."""


class NotFound(ApiError):
    """The resource does not exist (404)."""


class Conflict(ApiError):
    """The resource already exists (409)."""


class Throttled(ApiError):
    """A rate, quota or queue limit was hit (429).

    Args:
        retry_after: seconds the server asked us to wait, or None when it did not say.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        retry_after: float | None = None,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(status, message, method=method, url=url)


class TransportError(BulkOpsError):
    """The connection failed (connect, read, write, reset) and retries did not help."""


class OutcomeUnknown(TransportError):
    """A non-idempotent request was sent but its answer never came: it may have been applied.

    The caller must reconcile (look for its effect) before it sends the request again.
    """


class BodyBrokenOff(TransportError):
    """The connection failed while a response body was streaming (after its headers came).

    Whatever was already received is incomplete; a caller reading a document reads it again.
    """


class ActivityFailed(BulkOpsError):
    """An activity ended in the ERROR status.

    Args:
        activity_id: the server's activity id.
        message: what is known about the failure.
    """

    def __init__(self, activity_id: str, message: str) -> None:
        self.activity_id = activity_id
        self.message = message
        super().__init__(f"activity {activity_id}: {message}")


class ActivityStalled(ActivityFailed):
    """An activity showed no progress for longer than the stall timeout."""


class StateError(BulkOpsError):
    """A transition that a state table (an import chunk's, for instance) does not allow."""


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for item in group.exceptions:
        found.extend(_leaves(item) if isinstance(item, BaseExceptionGroup) else [item])
    return found


def collapse_group(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception that stands for ``group``, or None when it must stay a group.

    The rule: a group holding one exception (through any nesting) is that exception; a
    group of errors of the tree and Ctrl-Cs only (several requests failing together) is its
    first one, the others added to it as notes (``also: ...``); anything else (a bug beside
    an error) stays a group, so its traceback is not lost.
    """
    leaves = _leaves(group)
    if not leaves:
        return None
    if len(leaves) == 1 or all(
        isinstance(leaf, BulkOpsError | KeyboardInterrupt) for leaf in leaves
    ):
        first = leaves[0]
        for other in leaves[1:]:
            first.add_note(f"also: {other!r}")
        return first
    return None


@contextlib.contextmanager
def single_errors() -> Iterator[None]:
    """Re-raise an exception group leaving the block as :func:`collapse_group` says."""
    try:
        yield
    except BaseExceptionGroup as group:
        single = collapse_group(group)
        if single is None:
            raise
        raise single from None
