"""What an import is asked to do (:class:`ImportOptions`, stored in the journal so
``resume`` repeats it) and what a run spent over all its processes (:class:`RunTotals`)."""

from __future__ import annotations

from typing import Any, Literal

import attrs
import msgspec

from bulkops.errors import ConfigError
from bulkops.stream.options import ChunkLimits, ReadOptions

__all__ = ["ImportOptions", "RunTotals"]


@attrs.frozen(kw_only=True)
class ImportOptions:
    """Everything that shapes a run (stored in the journal, so ``resume`` repeats it).

    Attributes:
        kind: ``add`` (add or update contacts on the lists) or ``remove`` (take them off).
        lists: list names or ids.
        create_lists: create named lists that do not exist.
        concurrency: requests in flight at once (lowered on 429s, raised again slowly).
        uploads: chunks being POSTed at once, at most ``concurrency``. Each holds its body
            (up to 4 MiB) until answered, so memory is O(uploads × 4 MiB); over one link,
            more parallel uploads do not finish the set sooner (a local server parses them
            one at a time anyway).
        max_queued: activities submitted but not finished, at most (one feed page is 50).
        poll_min / poll_max: bounds of the interval between polls, in seconds.
        stall_timeout: seconds without a status change before an activity counts as stalled.
        write_applied: also write ``applied.csv``.
        read: how the input is read (format, encoding, delimiter, mapping, ...).
        limits: how rows are cut into requests (form, rows and bytes per request).
    """

    kind: Literal["add", "remove"] = "add"
    lists: tuple[str, ...] = ()
    create_lists: bool = False
    concurrency: int = 4
    uploads: int = 2
    max_queued: int = 50
    poll_min: float = 0.5
    poll_max: float = 10.0
    stall_timeout: float = 600.0
    write_applied: bool = False
    read: ReadOptions = attrs.field(factory=ReadOptions)
    limits: ChunkLimits = attrs.field(factory=ChunkLimits)

    def to_meta(self) -> dict[str, Any]:
        """A JSON-ready form (msgspec, from the attrs fields)."""
        meta: dict[str, Any] = msgspec.to_builtins(self)
        return meta

    @classmethod
    def from_meta(cls, data: object) -> ImportOptions:
        """The inverse of :meth:`to_meta` (validators run again).

        Raises:
            ConfigError: the stored options are not valid options.
        """
        try:
            return msgspec.convert(data, cls)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"the run's stored options are not valid: {exc}") from None


@attrs.frozen(kw_only=True)
class RunTotals:
    """What a run has spent, summed over the processes that worked on it."""

    wall_seconds: float = 0.0
    requests: int = 0
    retries: int = 0
    throttled: int = 0

    def to_meta(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return attrs.asdict(self)

    @classmethod
    def from_meta(cls, data: object) -> RunTotals:
        """The inverse of :meth:`to_meta`; anything unreadable counts as nothing spent."""
        if not isinstance(data, dict):
            return cls()
        try:
            return cls(
                wall_seconds=max(0.0, float(data.get("wall_seconds", 0.0))),
                requests=max(0, int(data.get("requests", 0))),
                retries=max(0, int(data.get("retries", 0))),
                throttled=max(0, int(data.get("throttled", 0))),
            )
        except (TypeError, ValueError):
            return cls()
