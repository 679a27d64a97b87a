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

from collections.abc import Iterable
from typing import Any

import attrs

from bulkops.errors import ConfigError, InputError
from bulkops.stream.chunking import ChunkOptions
from bulkops.stream.csvrows import CsvRows
from bulkops.stream.options import ChunkLimits, ReadOptions
from bulkops.stream.records import ChunkKind, Event, PipelineStatistics
from bulkops.stream.sources import RowSource, Tally
from bulkops.stream.text import Transcoder

__all__ = ["Pipeline", "PipelineOptions"]

#: Pieces bigger than this are processed in slices (bounds the per-piece working memory).
_SLICE = 1 << 20


def _uris(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


_READ_FIELDS = frozenset(attrs.fields_dict(ReadOptions))
_LIMIT_FIELDS = frozenset(attrs.fields_dict(ChunkLimits))


@attrs.frozen(init=False)
class PipelineOptions:
    """Everything that decides how an input becomes chunks (same options, same chunks).

    ``PipelineOptions(lists=..., encoding=..., max_rows=...)`` also builds its
    :class:`~bulkops.stream.options.ReadOptions` and
    :class:`~bulkops.stream.options.ChunkLimits` from their fields by name (the engine
    passes the objects themselves); a setting is read from the object that owns it
    (``options.read.encoding``, ``options.limits.max_rows``), under one name.

    Attributes:
        lists: list URIs every activity names (at least one).
        kind: add (``SV_ADD``, the default) or remove (``REMOVE_CONTACTS_FROM_LISTS``:
            only the email column is sent).
        read: how the input is read (format, encoding, delimiter, mapping, ...).
        limits: how rows are cut into requests (form, rows and bytes per request).
        capacity: expected number of distinct emails (sizes the email table; a hint only,
            it never changes the output).
        size_hint: the input's size in bytes, when known (the engine knows the file's): after
            the first MiB the email table is sized for the rows the whole input should hold,
            once, instead of growing in steps. A hint only: it never changes the output.
        keep_emails: chunks carry their rows' emails and the candidate repeats across
            chunks (see :class:`~bulkops.stream.chunking.ChunkOptions`); the chunks and
            other events are the same either way.
        bodies: build the chunks' bodies and digests (the default); without, multipart
            chunks carry their ``body_bytes`` only (see
            :class:`~bulkops.stream.chunking.ChunkOptions`). The chunks are the same.
    """

    lists: tuple[str, ...]
    kind: ChunkKind
    read: ReadOptions
    limits: ChunkLimits
    capacity: int
    size_hint: int | None
    keep_emails: bool
    bodies: bool

    def __init__(
        self,
        *,
        lists: Iterable[str],
        kind: ChunkKind | str = ChunkKind.ADD,
        read: ReadOptions | None = None,
        limits: ChunkLimits | None = None,
        capacity: int = 0,
        size_hint: int | None = None,
        keep_emails: bool = False,
        bodies: bool = True,
        **fields: Any,
    ) -> None:
        unknown = set(fields) - _READ_FIELDS - _LIMIT_FIELDS
        if unknown:
            raise TypeError(f"PipelineOptions got unexpected fields {sorted(unknown)}")
        read_fields = {k: v for k, v in fields.items() if k in _READ_FIELDS}
        limit_fields = {k: v for k, v in fields.items() if k in _LIMIT_FIELDS}
        if (read is not None and read_fields) or (limits is not None and limit_fields):
            raise ConfigError("give either read/limits or their fields, not both")
        self.__attrs_init__(
            lists=_uris(lists),
            kind=ChunkKind(kind),
            read=read if read is not None else ReadOptions(**read_fields),
            limits=limits if limits is not None else ChunkLimits(**limit_fields),
            capacity=capacity,
            size_hint=size_hint,
            keep_emails=keep_emails,
            bodies=bodies,
        )

    def __attrs_post_init__(self) -> None:
        self.chunk_options()

    def chunk_options(self) -> ChunkOptions:
        """The chunker's part of the options (the same limits object)."""
        return ChunkOptions(
            kind=self.kind,
            lists=self.lists,
            limits=self.limits,
            keep_emails=self.keep_emails,
            bodies=self.bodies,
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
        self._text = Transcoder(options.read.encoding)
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
            fmt = self._options.read.format
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
