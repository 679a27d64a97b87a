"""Pure incremental decoders and the chunker: fed bytes, they return rows and chunks.

Every decoder follows one protocol: ``decode(data: bytes) -> list[...]`` for each piece of
input as it arrives, then ``flush() -> list[...]`` once at the end. No IO, no clock.

The import side, from any contact file to activity request bodies:

* :class:`Pipeline` (with :class:`PipelineOptions`): a CSV or XML file's bytes in; a
  :class:`Header`, then one outcome per data record — :class:`Rejected`, :class:`Duplicate`,
  or a row of a :class:`Chunk` — out. Chunks come in ``seq`` order, each within the row and
  byte limits, each with ``waits_for``/``after``: the earlier chunks it shares an email with.
  Same bytes and options, same chunks and digests. :meth:`Pipeline.statistics` returns a
  :class:`PipelineStatistics`.
* Inside it, one row source per format behind one protocol (:mod:`bulkops.stream.sources`:
  ``feed``, ``flush``, ``statistics``): ``csvrows.CsvRows`` and ``xml.XmlRows``.
* The parts, usable alone: :class:`CsvDecoder` (records with line and offsets, as the stdlib
  ``csv`` reads them), :class:`XmlContactDecoder` (``Contact`` elements of an Atom feed or a
  plain ``<Contacts>`` document), :func:`map_header` (header cells to activity columns,
  :class:`ColumnMap`), :class:`Transcoder` (any encoding to UTF-8, offsets kept),
  :class:`Chunker` (rows to chunks), :class:`EmailTable` (the compact duplicate finder).
  The two request encodings are the activity form codec's, :mod:`bulkops.wire.forms`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bulkops.stream.chunking import Chunker, ChunkOptions, RowBatch
from bulkops.stream.csv import DEFAULT_MAX_RECORD_BYTES, CsvDecoder, Record, sniff_delimiter
from bulkops.stream.dedupe import EmailTable
from bulkops.stream.header import ColumnMap, map_header
from bulkops.stream.pipeline import Pipeline, PipelineOptions
from bulkops.stream.records import (
    Chunk,
    ChunkKind,
    Duplicate,
    Event,
    Header,
    PipelineStatistics,
    Rejected,
)
from bulkops.stream.text import Transcoder

if TYPE_CHECKING:
    from bulkops.stream.xml import XmlContactDecoder, XmlRecord

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "Chunk",
    "ChunkKind",
    "ChunkOptions",
    "Chunker",
    "ColumnMap",
    "CsvDecoder",
    "Duplicate",
    "EmailTable",
    "Event",
    "Header",
    "Pipeline",
    "PipelineOptions",
    "PipelineStatistics",
    "Record",
    "Rejected",
    "RowBatch",
    "Transcoder",
    "XmlContactDecoder",
    "XmlRecord",
    "map_header",
    "sniff_delimiter",
]


def __getattr__(name: str) -> Any:
    """The XML reader on first access (PEP 562): a CSV import never loads lxml (~6 MiB)."""
    if name in ("XmlContactDecoder", "XmlRecord"):
        from bulkops.stream import xml

        value = getattr(xml, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
