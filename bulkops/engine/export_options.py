"""What an export is asked to do (:class:`ExportOptions`) and what it did
(:class:`ExportReport`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import attrs
import msgspec

from bulkops.engine.rundirs import REPORT_NAME
from bulkops.errors import ConfigError
from bulkops.stream.export import FEED_FIELDS, OutputFormat, export_columns
from bulkops.wire.atom.syntax import parse_time
from bulkops.wire.columns import Column
from bulkops.wire.model import Contact, ContactListMember

__all__ = ["ExportOptions", "ExportReport", "ExportWhat", "Via", "summary"]

ExportWhat = Literal["members", "contacts", "lists", "activities", "campaigns", "collection"]
Via = Literal["activity", "feed"]

_WHATS: tuple[str, ...] = get_args(ExportWhat)
_LIST_TYPES = ("active", "removed", "do-not-mail")
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


def _positive(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ConfigError(f"{attribute.name} must be at least 1")


def _prefetch(_instance: object, _attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= 4:
        raise ConfigError("prefetch must be between 0 and 4 pages")


@attrs.frozen(kw_only=True)
class ExportOptions:
    """What to export and how (stored in the journal, so ``resume`` repeats it).

    Attributes:
        what: ``members`` (of ``list``), ``contacts`` (all, or updated since a time on a list
            or a list type), ``lists``, ``activities``, ``campaigns``, or ``collection``
            (any paged collection path, in ``collection``).
        list: the list's name or id (members; contacts with ``updated_since``).
        list_type: ``active``, ``removed`` or ``do-not-mail`` (contacts with
            ``updated_since``).
        updated_since: ISO-8601 time: contacts updated at or after it (``/contacts?
            updatedsince=``).
        collection: the collection path below the account, for ``what="collection"``
            (``campaigns/7/events/opens``).
        format: ``csv`` or ``jsonl``; None: from the output file's name (``.jsonl``,
            ``.ndjson`` and ``.json`` are JSON Lines, anything else CSV).
        columns: contact columns to write (members, contacts), any spelling; email always
            first. None: every column via an activity, the columns the feed carries via the
            feed. ``("all",)``: every column (via the feed: one GET per contact).
        via: ``activity`` (an ``EXPORT_CONTACTS`` activity; members only) or ``feed``.
        prefetch: feed pages requested ahead of the one being written (0–4).
        detail_concurrency: contact GETs in flight when columns need the full contacts.
        checkpoint_rows: rows between two checkpoints of the journal.
        poll_min / poll_max / stall_timeout: activity polling (see ``ActivityTracker``);
            one export activity is polled at most ``poll_max`` (2 s) apart, so its file is
            read at most that long after it is ready.
    """

    what: ExportWhat = "members"
    list: str | None = None
    list_type: str | None = None
    updated_since: str | None = None
    collection: str | None = None
    format: OutputFormat | None = None
    columns: tuple[str, ...] | None = None
    via: Via = "activity"
    prefetch: int = attrs.field(default=2, validator=_prefetch)
    detail_concurrency: int = attrs.field(default=8, validator=_positive)
    checkpoint_rows: int = attrs.field(default=10_000, validator=_positive)
    poll_min: float = 0.5
    poll_max: float = 2.0
    stall_timeout: float = 600.0

    def __attrs_post_init__(self) -> None:
        what = self.what
        if what not in _WHATS:
            raise ConfigError(f"cannot export {what!r}; choose one of {', '.join(_WHATS)}")
        if self.format not in (None, "csv", "jsonl"):
            raise ConfigError("format must be csv or jsonl")
        if self.via not in ("activity", "feed"):
            raise ConfigError("via must be activity or feed")
        if self.via == "activity" and what != "members":
            raise ConfigError("`via` activity exports a list's members only; use `via` feed")
        if what == "members" and not self.list:
            raise ConfigError("name the list to export (`list`)")
        if self.list_type is not None and self.list_type not in _LIST_TYPES:
            raise ConfigError(f"`list_type` must be one of {', '.join(_LIST_TYPES)}")
        if what == "contacts":
            if self.updated_since is not None:
                if (self.list is None) == (self.list_type is None):
                    raise ConfigError("`updated_since` needs exactly one of `list` or `list_type`")
                try:
                    parse_time(self.updated_since)
                except ValueError as exc:
                    raise ConfigError(f"`updated_since`: {exc}") from None
            elif self.list is not None or self.list_type is not None:
                raise ConfigError("`list` and `list_type` select contacts with `updated_since`")
        elif self.updated_since is not None or self.list_type is not None:
            raise ConfigError("`updated_since` and `list_type` are for exporting contacts")
        if what not in ("members", "contacts") and self.list is not None:
            raise ConfigError(f"`list` does not apply to {what}")
        if what == "collection":
            if not self.collection or not self.collection.strip("/"):
                raise ConfigError("name the collection path (`collection`)")
        elif self.collection is not None:
            raise ConfigError("`collection` goes with exporting a collection")
        if self.columns is not None:
            if what not in ("members", "contacts"):
                raise ConfigError(f"`columns` applies to contact exports, not to {what}")
            try:
                export_columns(self.columns)
            except ValueError as exc:
                raise ConfigError(f"`columns`: {exc}") from None

    def for_output(self, output: Path) -> ExportOptions:
        """These options with :attr:`format` decided (from ``output``'s name when None)."""
        if self.format is not None:
            return self
        fmt: OutputFormat = "jsonl" if output.suffix.lower() in _JSONL_SUFFIXES else "csv"
        return attrs.evolve(self, format=fmt)

    @property
    def output_format(self) -> OutputFormat:
        """The output format (``csv`` until :meth:`for_output` has decided it)."""
        return self.format or "csv"

    @property
    def contact_rows(self) -> bool:
        """True when rows are contact columns (members, contacts), not whole records."""
        return self.what in ("members", "contacts")

    def resolved_columns(self) -> tuple[Column, ...]:
        """The contact columns to write (see :attr:`columns`)."""
        if self.columns is not None:
            return export_columns(self.columns)
        if self.via == "activity":
            return export_columns(None)
        carried = FEED_FIELDS[ContactListMember if self.what == "members" else Contact]
        return tuple(c for c in export_columns(None) if c.field in carried)

    def to_meta(self) -> dict[str, Any]:
        """A JSON-ready form (msgspec, from the attrs fields)."""
        meta: dict[str, Any] = msgspec.to_builtins(self)
        return meta

    @classmethod
    def from_meta(cls, data: object) -> ExportOptions:
        """The inverse of :meth:`to_meta` (validators run again).

        Raises:
            ConfigError: the stored options are not valid options.
        """
        try:
            return msgspec.convert(data, cls)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"the run's stored options are not valid: {exc}") from None


class ExportReport(msgspec.Struct, frozen=True, kw_only=True):
    """What an export did; written to ``report.json`` in the run directory.

    Attributes:
        state: ``complete`` or ``interrupted`` (resumable).
        output: the target file (it exists only when complete).
        header: the column names written (CSV header, JSON keys for contact rows).
        rows: rows written.
        expected_rows: what the server said there are (None when it says nothing).
        expected_from: ``ContactCount`` or ``TransactionCount``, None with no expectation.
        count_check: ``match``, ``mismatch`` or ``unchecked``.
        high_water_mark: contacts: the latest update time seen (the next sync's start).
        activity_id: the export activity (``via="activity"``).
        pages: feed pages written.
        detail_requests: contact GETs made for columns the feed lacks.
        resumes: how many times the run was resumed.
    """

    command: str
    state: str
    what: str
    via: str
    format: str
    output: str
    run_dir: str
    header: list[str]
    rows: int
    expected_rows: int | None
    expected_from: str | None
    count_check: str
    high_water_mark: str | None
    activity_id: str | None
    pages: int
    detail_requests: int
    resumes: int
    requests: int
    retries: int
    throttled: int
    wall_seconds: float
    rows_per_second: float
    peak_rss_bytes: int
    message: str

    @property
    def exit_code(self) -> int:
        """0 complete, 2 complete with a count mismatch, 3 interrupted (resumable)."""
        if self.state != "complete":
            return 3
        return 2 if self.count_check == "mismatch" else 0


def summary(report: ExportReport) -> str:
    """A few lines for people."""
    expected = (
        ""
        if report.expected_rows is None
        else f" ({report.expected_from} {report.expected_rows:,}: {report.count_check})"
    )
    lines = [
        f"export {report.what} via {report.via} {report.state}: {report.rows:,} rows{expected}",
        f"{report.requests} requests ({report.retries} retries, {report.throttled} throttled), "
        f"{report.wall_seconds:.1f} s wall, {report.rows_per_second:,.0f} rows/s, "
        f"peak RSS {report.peak_rss_bytes / 1048576:.0f} MiB",
    ]
    if report.state == "complete":
        lines.append(f"  output: {report.output}")
    if report.high_water_mark:
        lines.append(f"  high-water mark: {report.high_water_mark}")
    lines.append(f"  report: {Path(report.run_dir) / REPORT_NAME}")
    if report.message:
        lines.append(report.message)
    return "\n".join(lines)
