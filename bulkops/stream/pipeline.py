"""The import pipeline: a contact file's bytes in; rejections, duplicates and chunks out.

:class:`Pipeline` follows the decoder protocol (``decode(data) -> list[Event]``, then
``flush()``): feed it a CSV or XML file of any size in pieces of any size; it returns a
:class:`~bulkops.stream.records.Header`, then for every data record exactly one outcome
(a :class:`~bulkops.stream.records.Rejected`, a :class:`~bulkops.stream.records.Duplicate`,
or a place in a :class:`~bulkops.stream.records.Chunk`), chunks in ``seq`` order.

It owns the :class:`~bulkops.stream.text.Transcoder` (any encoding to UTF-8, source offsets
kept), tells CSV from XML by the first character (``<``: XML) unless told, and hands the
UTF-8 to one row source (:mod:`bulkops.stream.sources`):
:class:`~bulkops.stream.csvrows.CsvRows` (how CSV gets through without a Python step per
field or per usual record is told there; benchmarks/bench_stream.py measures it) or
:class:`~bulkops.stream.xml.XmlRows` (lxml is imported only then). Both validate rows with
the server's rules and hand them to the chunker (:mod:`bulkops.stream.chunking`), which
finds repeated emails, keeps the email table (:mod:`bulkops.stream.dedupe`) and cuts and
encodes chunks.

Invariants:

* **Any split, same result**: the events of all ``decode`` calls and ``flush`` do not depend
  on how the input was cut (only on when they come out).
* **O(bytes fed), constant memory**: memory is one piece, one chunk and the email table;
  records longer than ``max_record_bytes`` are rejected without being held.
* **Deterministic**: the same bytes and options give the same events, bodies and digests in
  every process (resume re-derives the plan this way).

Pure: no IO, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

import attrs

from bulkops.errors import ConfigError, InputError
from bulkops.stream.chunking import ChunkOptions, Form
from bulkops.stream.csv import DEFAULT_MAX_RECORD_BYTES, normalize_delimiter
from bulkops.stream.csvrows import CsvRows
from bulkops.stream.header import mapping_pairs
from bulkops.stream.records import ChunkKind, Event, PipelineStatistics
from bulkops.stream.sources import RowSource, Tally
from bulkops.stream.text import Transcoder
from bulkops.wire.activity import (
    DEFAULT_MAX_ACTIVITY_BYTES,
    DEFAULT_MAX_ACTIVITY_ROWS,
    MIN_ACTIVITY_ROWS,
)

__all__ = ["Pipeline", "PipelineOptions"]

Format = Literal["csv", "xml"]

#: Pieces bigger than this are processed in slices (bounds the per-piece working memory).
_SLICE = 1 << 20


def _uris(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _mapping(
    value: Mapping[str, str] | Iterable[tuple[str, str]] | Iterable[str],
) -> tuple[tuple[str, str], ...]:
    return mapping_pairs(value)


@attrs.frozen(kw_only=True)
class PipelineOptions:
    """Everything that decides how an input becomes chunks (same options, same chunks).

    Attributes:
        lists: list URIs every activity names (at least one).
        kind: add (``SV_ADD``, the default) or remove (``REMOVE_CONTACTS_FROM_LISTS``:
            only the email column is sent).
        format: ``csv``, ``xml``, or None to tell from the first character (``<``: XML).
        encoding: source encoding; None sniffs a byte-order mark, else UTF-8. ``cp1252``,
            ``latin-1``, ``utf-16`` and the like must be named.
        delimiter: the CSV delimiter; None detects comma, semicolon, tab or pipe from the
            header (or an Excel ``sep=`` first line).
        mapping: explicit header mappings ``(source, TARGET)`` (or ``"source=TARGET"``);
            a target of ``""`` or ``ignore`` drops the column.
        ignore_unknown: drop unknown columns instead of failing.
        form: ``multipart`` (default) or ``urlencoded`` request bodies.
        max_rows: most rows per request (default 40,000).
        max_bytes: most bytes of ``data`` per request, as sent (default 4 MiB).
        min_rows: fewest rows per request when the input has that many (default 25).
        max_record_bytes: longer records are rejected without being buffered.
        capacity: expected number of distinct emails (sizes the email table; a hint only,
            it never changes the output).
        size_hint: the input's size in bytes, when known (the engine knows the file's): after
            the first MiB the email table is sized for the rows the whole input should hold,
            once, instead of growing in steps. A hint only: it never changes the output.
    """

    lists: tuple[str, ...] = attrs.field(converter=_uris)
    kind: ChunkKind = attrs.field(default=ChunkKind.ADD, converter=ChunkKind)
    format: Format | None = None
    encoding: str | None = None
    delimiter: str | None = None
    mapping: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_mapping)
    ignore_unknown: bool = False
    form: Form = "multipart"
    max_rows: int = DEFAULT_MAX_ACTIVITY_ROWS
    max_bytes: int = DEFAULT_MAX_ACTIVITY_BYTES
    min_rows: int = MIN_ACTIVITY_ROWS
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    capacity: int = 0
    size_hint: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.format not in (None, "csv", "xml"):
            raise ConfigError(f"format must be csv or xml, not {self.format!r}")
        if self.max_record_bytes < 64:
            raise ConfigError("max_record_bytes must be at least 64")
        normalize_delimiter(self.delimiter)
        self.chunk_options()

    def chunk_options(self) -> ChunkOptions:
        """The chunker's part of the options."""
        return ChunkOptions(
            kind=self.kind,
            lists=self.lists,
            form=self.form,
            max_rows=self.max_rows,
            max_bytes=self.max_bytes,
            min_rows=self.min_rows,
        )


class Pipeline:
    """Incremental import pipeline (CSV or XML): bytes in, events out.

    Args:
        options: how to read, validate and chunk the input.

    Raises:
        ConfigError: unusable options (raised here, before any input).
    """

    def __init__(self, options: PipelineOptions) -> None:
        self._options = options
        self._text = Transcoder(options.encoding)
        self._source: RowSource | None = None
        self._head = b""  # UTF-8 held until the format is known
        self._bytes_in = 0
        self._done = False

    @property
    def options(self) -> PipelineOptions:
        """The options."""
        return self._options

    def decode(self, data: bytes) -> list[Event]:
        """Read the next piece of the input.

        Args:
            data: the next bytes of the source file.

        Returns:
            The events this piece completes, in the order they were decided.

        Raises:
            InputError: the file cannot be imported (no or bad header, unknown columns, no
                email column, malformed XML, ...): the message names the line and field.
        """
        if self._done:
            raise InputError("the pipeline has been flushed already")
        self._bytes_in += len(data)
        events: list[Event] = []
        for start in range(0, len(data), _SLICE):
            self._feed(self._text.decode(data[start : start + _SLICE]), False, events)
        return events

    def flush(self) -> list[Event]:
        """Read the end of the input and emit what is left (the last chunks).

        Returns:
            The last events.

        Raises:
            InputError: as :meth:`decode`; also for an empty input.
        """
        if self._done:
            raise InputError("the pipeline has been flushed already")
        self._done = True
        events: list[Event] = []
        self._feed(self._text.flush(), True, events)
        return events

    def statistics(self) -> PipelineStatistics:
        """Counters so far."""
        if self._source is None:
            return Tally().statistics(self._bytes_in, None)
        return self._source.statistics(self._bytes_in)

    def _feed(self, data: bytes, final: bool, events: list[Event]) -> None:
        source = self._source
        if source is None:
            self._head += data
            head = self._head.lstrip(b" \t\r\n")
            if not head and not final:
                return
            fmt = self._options.format
            if fmt is None:
                fmt = "xml" if head.startswith(b"<") else "csv"
            if fmt == "xml":
                from bulkops.stream.xml import XmlRows  # lxml only when needed

                source = XmlRows(self._options, self._text)
            else:
                source = CsvRows(self._options, self._text)
            self._source = source
            data, self._head = self._head, b""
        if final:
            if data:
                source.feed(data, events)
            source.flush(events)
        else:
            source.feed(data, events)
