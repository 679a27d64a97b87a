"""Row sources: what the import pipeline reads a CSV or an XML file with, behind one protocol.

A :class:`RowSource` is fed the input as UTF-8 (the pipeline owns the
:class:`~bulkops.stream.text.Transcoder`) and appends its events to the list it is given:

* ``feed(data, events)`` for each piece, ``flush(events)`` once at the end (the last
  chunks);
* ``statistics(bytes_in)``: its counters as one :class:`~bulkops.stream.records.PipelineStatistics`,
  built by :meth:`Tally.statistics` from the records it read and its chunker's counts.

The two sources are :class:`~bulkops.stream.csvrows.CsvRows` and
:class:`~bulkops.stream.xml.XmlRows`. They read their settings through
:class:`SourceOptions` (the pipeline's options satisfy it), so that neither imports the
pipeline: the pipeline sits on top and chooses a source once the input's first bytes are
known.

Pure: no IO, no clock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from bulkops.stream.records import ChunkKind, Event, PipelineStatistics

if TYPE_CHECKING:
    from bulkops.stream.chunking import Chunker, ChunkOptions
    from bulkops.stream.options import ReadOptions

__all__ = ["RowSource", "SourceOptions", "Tally"]


class SourceOptions(Protocol):
    """The settings a row source reads (see ``PipelineOptions`` for their meaning)."""

    @property
    def kind(self) -> ChunkKind: ...
    @property
    def read(self) -> ReadOptions: ...
    @property
    def capacity(self) -> int: ...
    @property
    def size_hint(self) -> int | None: ...
    def chunk_options(self) -> ChunkOptions:
        """The chunker's part of the options."""
        ...


class RowSource(Protocol):
    """Rows of one input format: UTF-8 in, events out (appended to ``events``)."""

    def feed(self, data: bytes, events: list[Event]) -> None:
        """Read the next piece of the input (UTF-8)."""
        ...

    def flush(self, events: list[Event]) -> None:
        """Read what is left at the end of the input and emit the last chunks."""
        ...

    def statistics(self, bytes_in: int) -> PipelineStatistics:
        """Counters so far; ``bytes_in`` is what the pipeline was fed."""
        ...


class Tally:
    """A source's own counters (the chunker keeps the rest): one statistics code for all."""

    __slots__ = ("blank", "records", "rejected")

    def __init__(self) -> None:
        self.records = 0
        """Data records read, blank ones included."""
        self.blank = 0
        """Blank records (no outcome)."""
        self.rejected = 0
        """Records the source rejected itself (the chunker rejects rows too big to send)."""

    def statistics(self, bytes_in: int, chunker: Chunker | None) -> PipelineStatistics:
        """These counts with the chunker's, as one record (zeros before there is one)."""
        if chunker is None:
            return PipelineStatistics(
                bytes_in=bytes_in,
                records=self.records,
                blank=self.blank,
                rejected=self.rejected,
                duplicates=0,
                rows_sent=0,
                chunks=0,
                unique_emails=0,
                dedupe_bytes=0,
            )
        return PipelineStatistics(
            bytes_in=bytes_in,
            records=self.records,
            blank=self.blank,
            rejected=self.rejected + chunker.rejected,
            duplicates=chunker.duplicates,
            rows_sent=chunker.rows_sent,
            chunks=chunker.chunks,
            unique_emails=len(chunker.table),
            dedupe_bytes=chunker.table.nbytes,
        )
