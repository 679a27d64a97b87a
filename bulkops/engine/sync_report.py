"""What a sync is asked to do (:class:`SyncOptions`, stored in the run's journal so
``resume`` repeats it) and what it did (:class:`SyncReport`, ``report.json``)."""

from __future__ import annotations

import re
from typing import Any

import attrs
import msgspec

from bulkops.engine.import_options import ImportOptions
from bulkops.engine.sync_diff import DiffCounts
from bulkops.errors import ConfigError

__all__ = ["DEFAULT_MAX_REMOVE", "SyncCounts", "SyncOptions", "SyncReport", "removal_limit"]

#: ``--max-remove`` when not given: a tenth of the list.
DEFAULT_MAX_REMOVE = "10%"

_LIMIT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*")


def removal_limit(spec: str, members: int) -> int:
    """The most members a sync may remove: ``N`` members, or ``P%`` of ``members`` (rounded
    down).

    Raises:
        ConfigError: neither a count nor a percentage.
    """
    found = _LIMIT.fullmatch(spec)
    if found is None:
        raise ConfigError(f"`max_remove` must be a count or a percentage (N or P%), not {spec!r}")
    number, percent = found.groups()
    if percent:
        if float(number) > 100:
            raise ConfigError(f"`max_remove` of {spec} is more than the whole list")
        return int(members * float(number) / 100)
    if "." in number:
        raise ConfigError(f"`max_remove` must be a whole number of members, not {spec!r}")
    return int(number)


def _check_limit(_instance: object, _attribute: object, value: str) -> None:
    removal_limit(value, 0)


@attrs.frozen(kw_only=True)
class SyncOptions:
    """What a sync does (stored in the journal).

    Attributes:
        list: the list's name or id.
        remove_missing: remove members whose email no valid row of the file has.
        max_remove: the most members that may be removed without ``yes``: ``N`` or ``P%``
            of the list's members (default 10%).
        yes: remove more than ``max_remove`` anyway.
        dry_run: plan only: counts, outcome files, nothing sent.
        full: read the list in full, whatever snapshot there is.
        put_concurrency: ``PUT /contacts/{id}`` requests in flight at once.
        send: how rows are read and sent (the import engine's options; its ``lists`` and
            ``kind`` are set by the sync).
    """

    list: str
    remove_missing: bool = False
    max_remove: str = attrs.field(default=DEFAULT_MAX_REMOVE, validator=_check_limit)
    yes: bool = False
    dry_run: bool = False
    full: bool = False
    put_concurrency: int = 4
    send: ImportOptions = attrs.field(factory=ImportOptions)

    def __attrs_post_init__(self) -> None:
        if not self.list or not self.list.strip():
            raise ConfigError("name the list to sync (`list`)")
        if self.put_concurrency < 1:
            raise ConfigError("`put_concurrency` must be at least 1")

    def to_meta(self) -> dict[str, Any]:
        """A JSON-ready form."""
        meta: dict[str, Any] = msgspec.to_builtins(self)
        return meta

    @classmethod
    def from_meta(cls, data: object) -> SyncOptions:
        """The inverse of :meth:`to_meta` (validators run again).

        Raises:
            ConfigError: the stored options are not valid options.
        """
        try:
            return msgspec.convert(data, cls)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"the run's stored options are not valid: {exc}") from None


class SyncCounts(msgspec.Struct, frozen=True, kw_only=True):
    """Rows of the file per outcome, and members removed.

    ``read == added + updated + unchanged + opted_out + rejected + duplicate + failed +
    pending`` (:attr:`balanced`).
    """

    read: int
    added: int
    updated: int
    unchanged: int
    opted_out: int
    rejected: int
    duplicate: int
    failed: int
    removed: int
    remove_failed: int
    pending: int = 0

    @property
    def balanced(self) -> bool:
        """The sum check."""
        total = (
            self.added
            + self.updated
            + self.unchanged
            + self.opted_out
            + self.rejected
            + self.duplicate
            + self.failed
            + self.pending
        )
        return total == self.read


class BaseSummary(msgspec.Struct, frozen=True, kw_only=True):
    """How the list's base was read."""

    members: int
    opted_out: int
    source: str
    reason: str | None
    requests: int
    as_of: str
    snapshot_as_of: str | None = None
    snapshot_as_of_reason: str | None = None


class SyncReport(msgspec.Struct, frozen=True, kw_only=True):
    """The result of a sync (``report.json``).

    ``state``: complete | dry-run | refused (more removals than allowed; nothing sent) |
    interrupted | stalled.
    """

    command: str
    state: str
    input: str | None
    run_dir: str
    list: str
    counts: SyncCounts
    plan: DiffCounts
    base: BaseSummary | None
    #: rows sent in add activities, emails in remove activities, PUTs of contacts
    rows_sent: int
    removes_sent: int
    puts: int
    requests: int
    bytes_sent: int
    wall_seconds: float
    peak_rss_bytes: int
    files: dict[str, str]
    message: str = ""
    #: rows read through the import pipeline: all of them, or with the fast plan only those
    #: whose bytes changed or whose email was dirty (the others are ``unchanged``)
    rows_parsed: int = 0

    @property
    def exit_code(self) -> int:
        """0 all done, 1 refused, 2 rows not applied, 3 interrupted or stalled."""
        if self.state in ("interrupted", "stalled"):
            return 3
        if self.state == "refused":
            return 1
        c = self.counts
        return 0 if c.failed + c.rejected + c.duplicate + c.remove_failed == 0 else 2
