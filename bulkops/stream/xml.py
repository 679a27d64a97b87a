"""Contacts from XML, read incrementally: an Atom feed of Contact entries (as the API itself
emits them) or a plain ``<Contacts><Contact>...</Contact></Contacts>`` document.

:class:`XmlContactDecoder` follows the decoder protocol (``decode(data)``, ``flush()``) and
returns one :class:`XmlRecord` per ``Contact`` element (any namespace, at any depth, not
nested in another ``Contact``): its child elements by local name (``EmailAddress``,
``FirstName``, ``CustomField3``, ...) with their text. :class:`XmlRows` is the
:class:`~bulkops.stream.pipeline.Pipeline`'s XML side: it validates those records and hands
the good ones to the chunker.

Invariants:

* **Same records for every split** of the input: lxml's :class:`~lxml.etree.XMLPullParser`
  is fed 64 KiB slices (the fastest size, design.md §4) and reports a ``Contact`` only once
  its end tag has been parsed; a record is handed out when the next one starts (that is
  when its end offset is known) or at the end.
* **Constant memory**: a finished ``Contact`` is cleared and every earlier sibling of it and
  of its ancestors deleted, so the tree holds one record and its ancestors' heads; at most
  ``max_record_bytes`` may pass between two finished records, and the raw bytes kept for
  offsets are those since the last record's first line.
* **Hardened** like ``wire.atom``: no DTD is loaded, no entity resolved, no network touched,
  ``huge_tree`` is off (libxml2 bounds depth and text size); a ``<!DOCTYPE`` or ``<!ENTITY``
  anywhere in the byte stream, across piece boundaries too, is refused before the parser
  sees it. The text is UTF-8 after :class:`~bulkops.stream.text.Transcoder`, whatever the
  XML declaration says.
* Lines are libxml2's (``sourceline`` of the ``Contact`` start tag). Offsets are
  line-granular: a record spans from the start of its first line to the start of the next
  record's first line (or the end of the input).

Errors are :class:`~bulkops.errors.InputError` with the line; after one the decoder is spent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from lxml import etree

from bulkops.errors import InputError
from bulkops.stream.chunking import Chunker, RowBatch
from bulkops.stream.records import ChunkKind, Event, Header, PipelineStatistics, Rejected
from bulkops.stream.text import Transcoder
from bulkops.stream.validate import control_problem, encode_row
from bulkops.wire.columns import COLUMNS, EMAIL_COLUMN, email_problem, field_problem

if TYPE_CHECKING:
    from bulkops.stream.pipeline import PipelineOptions

__all__ = ["XML_SLICE_BYTES", "XmlContactDecoder", "XmlRecord", "XmlRows"]

#: The pull parser is fed at most this many bytes at a time.
XML_SLICE_BYTES = 64 * 1024
_DEFAULT_MAX_RECORD_BYTES = 1024 * 1024
_FORBIDDEN = (b"<!DOCTYPE", b"<!ENTITY")
_OVERLAP = max(len(token) for token in _FORBIDDEN) - 1


class XmlRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One ``Contact`` element.

    Attributes:
        line: the line of the ``Contact`` start tag.
        start_offset: the source offset of the start of that line.
        end_offset: the source offset of the start of the next record's line (or the end).
        fields: ``(local name, text)`` of each child element, in document order (text
            ``""`` for an empty element; children with children of their own are left out).
    """

    line: int
    start_offset: int
    end_offset: int
    fields: tuple[tuple[str, str], ...]


def _pull_parser() -> etree.XMLPullParser:
    return etree.XMLPullParser(
        events=("start", "end"),
        tag="{*}Contact",
        encoding="utf-8",
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        attribute_defaults=False,
        huge_tree=False,
        recover=False,
        collect_ids=False,
        remove_comments=True,
        remove_pis=True,
        strip_cdata=True,
    )


_local_of: dict[str, str] = {}  # tag -> local name (tags repeat for every record)


def _local(tag: str) -> str:
    name = _local_of.get(tag)
    if name is None:
        name = tag.rpartition("}")[2]
        _local_of[tag] = name
    return name


class XmlContactDecoder:
    """Incremental reader of ``Contact`` elements.

    Args:
        encoding: the source encoding, or None (byte-order mark, else UTF-8).
        max_record_bytes: the most bytes that may pass between two finished records.
        transcoder: an existing transcoder to share (the pipeline's); then feed UTF-8 with
            :meth:`decode_utf8`.

    Raises:
        ConfigError: an unusable encoding.
    """

    def __init__(
        self,
        *,
        encoding: str | None = None,
        max_record_bytes: int = _DEFAULT_MAX_RECORD_BYTES,
        transcoder: Transcoder | None = None,
    ) -> None:
        self._text = transcoder if transcoder is not None else Transcoder(encoding)
        self._max = max_record_bytes
        self._parser = _pull_parser()
        self._depth = 0  # Contact elements open
        self._tail = b""
        self._pending_bytes = 0
        self._error: InputError | None = None
        self._held: tuple[int, int, tuple[tuple[str, str], ...]] | None = None
        # Offsets: raw UTF-8 kept since _raw_line's start; the source offset of that start.
        self._raw = b""
        self._raw_line = 1
        self._raw_src = 0
        self._started = False
        self._fed_utf8 = 0
        self.records = 0
        """Records handed out so far."""

    def decode(self, data: bytes) -> list[XmlRecord]:
        """Read the next piece of the source.

        Returns:
            The records completed (all but the last one found, which waits for its end).

        Raises:
            InputError: malformed or hostile XML, or a record too long.
        """
        return self.decode_utf8(self._text.decode(data), final=False)

    def flush(self) -> list[XmlRecord]:
        """Read the end of the input.

        Returns:
            The last records.

        Raises:
            InputError: the document is incomplete or malformed.
        """
        return self.decode_utf8(self._text.flush(), final=True)

    def decode_utf8(self, data: bytes, *, final: bool) -> list[XmlRecord]:
        """Read transcoded (UTF-8) input; for the pipeline, which owns the transcoder."""
        if self._error is not None:
            raise self._error
        try:
            return self._decode(data, final)
        except InputError as exc:
            self._error = exc
            raise
        except etree.XMLSyntaxError as exc:
            line = exc.position[0] if exc.position else None
            self._error = InputError(f"the XML is malformed: {exc.msg}", line=line)
            raise self._error from None

    def _decode(self, data: bytes, final: bool) -> list[XmlRecord]:
        if not self._started and (data or final):
            self._started = True
            self._raw_src = self._text.bom_length
        out: list[XmlRecord] = []
        window = self._tail + data
        for token in _FORBIDDEN:
            if token in window:
                raise InputError(
                    f"the XML holds {token[2:].decode()}; declarations are not accepted",
                    line=self._raw_line + self._raw.count(b"\n"),
                )
        self._tail = window[-_OVERLAP:]
        self._raw += data
        self._fed_utf8 += len(data)
        parser = self._parser
        for start in range(0, len(data), XML_SLICE_BYTES):
            piece = data[start : start + XML_SLICE_BYTES]
            parser.feed(piece)
            self._pending_bytes += len(piece)
            self._events(out)
            if self._pending_bytes > self._max:
                raise InputError(
                    f"more than {self._max} bytes of XML without the end of a Contact element",
                    line=self._raw_line,
                )
        if final:
            if not self._started or self._fed_utf8 == 0:
                raise InputError("the input is empty: no XML document")
            parser.close()
            self._events(out)
            if self._held is not None:
                line, start, fields = self._held
                self._held = None
                end = self._raw_src + self._text.source_length(self._raw)
                out.append(XmlRecord(line=line, start_offset=start, end_offset=end, fields=fields))
                self.records += 1
        return out

    def _events(self, out: list[XmlRecord]) -> None:
        for event, el in self._parser.read_events():
            if event == "start":
                self._depth += 1
                if self._depth == 1:
                    self._started_record(el.sourceline, out)
                continue
            self._depth -= 1
            if self._depth:
                continue
            fields = tuple(
                (_local(child.tag), child.text or "")
                for child in el
                if isinstance(child.tag, str) and len(child) == 0
            )
            assert self._held is not None
            line, start, _ = self._held
            self._held = (line, start, fields)
            self._pending_bytes = 0
            el.clear(keep_tail=True)
            for ancestor in el.iterancestors():
                while ancestor.getprevious() is not None:
                    del ancestor.getparent()[0]
            while el.getprevious() is not None:
                del el.getparent()[0]

    def _started_record(self, line: int, out: list[XmlRecord]) -> None:
        start = self._line_offset(line)
        held = self._held
        if held is not None:
            out.append(
                XmlRecord(line=held[0], start_offset=held[1], end_offset=start, fields=held[2])
            )
            self.records += 1
        self._held = (line, start, ())

    def _line_offset(self, line: int) -> int:
        """The source offset where ``line`` starts; forgets the raw bytes before it."""
        raw = self._raw
        p = 0
        for _ in range(line - self._raw_line):
            p = raw.find(b"\n", p) + 1
            if p == 0:  # the line has not been fed yet: cannot happen for a start tag read
                p = len(raw)
                break
        self._raw_src += self._text.source_length(raw[:p])
        self._raw = raw[p:]
        self._raw_line = line
        return self._raw_src


# -- the pipeline's XML side ------------------------------------------------------------------

_ALL = tuple(COLUMNS)
_INDEX_OF = {column.field: i for i, column in enumerate(_ALL)}
_EMAIL_AT = _ALL.index(EMAIL_COLUMN)


class XmlRows:
    """Validate XML contact records and chunk them (the XML half of ``Pipeline``).

    Every column present in the schema is carried per row; a chunk's ``data`` keeps only the
    columns some of its rows fill (the server keeps a stored value when a cell is empty).
    """

    def __init__(self, options: PipelineOptions, text: Transcoder) -> None:
        self._options = options
        self._decoder = XmlContactDecoder(
            max_record_bytes=options.max_record_bytes, transcoder=text
        )
        self._text = text
        remove = options.kind is ChunkKind.REMOVE
        self._remove = remove
        names = (EMAIL_COLUMN.name,) if remove else tuple(c.name for c in _ALL)
        self._where: dict[int, tuple[int, int]] = {}  # line -> offsets of records on it
        self._chunker = Chunker(
            options.chunk_options(),
            header=",".join(names).encode("ascii"),
            columns=names,
            locate=self._where.__getitem__,
            forget=self._forget,
            capacity=options.capacity,
            nul_separated=not remove,
        )
        self._header_sent = False
        self._records = 0
        self._rejected = 0
        self._blank = 0

    def statistics(self, bytes_in: int) -> PipelineStatistics:
        chunker = self._chunker
        return PipelineStatistics(
            bytes_in=bytes_in,
            records=self._records,
            blank=self._blank,
            rejected=self._rejected + chunker.rejected,
            duplicates=chunker.duplicates,
            rows_sent=chunker.rows_sent,
            chunks=chunker.chunks,
            unique_emails=len(chunker.table),
            dedupe_bytes=chunker.table.nbytes,
        )

    def feed(self, data: bytes, final: bool, events: list[Event]) -> None:
        records = self._decoder.decode_utf8(data, final=final)
        if not self._header_sent:
            self._header_sent = True
            names = tuple(c.field for c in _ALL)
            events.append(
                Header(
                    sources=names,
                    columns=tuple(c.name for c in _ALL),
                    sent=(EMAIL_COLUMN.name,) if self._remove else tuple(c.name for c in _ALL),
                    delimiter="",
                    encoding=self._text.encoding,
                    line_count=0,
                )
            )
        batch = RowBatch()
        for record in records:
            self._record(record, batch, events)
        self._chunker.add(batch, events)
        if final:
            self._chunker.finish(events)

    def _record(self, record: XmlRecord, batch: RowBatch, events: list[Event]) -> None:
        self._records += 1
        values = [""] * len(_ALL)
        for name, text in record.fields:
            at = _INDEX_OF.get(name)
            if at is not None:
                values[at] = text.strip()
        if not any(values):
            self._blank += 1
            return
        problem = self._problem(values)
        if problem is not None:
            self._rejected += 1
            events.append(
                Rejected(
                    line=record.line,
                    start_offset=record.start_offset,
                    end_offset=record.end_offset,
                    field=problem[0],
                    reason=problem[1],
                )
            )
            return
        email = values[_EMAIL_AT]
        if self._remove:
            out = email.encode("utf-8")
        else:
            out = b"\x00".join(encode_row((value,)) for value in values)
        batch.append(out, email.lower().encode("utf-8"), record.line)
        known = self._where.get(record.line)
        if known is None:
            self._where[record.line] = (record.start_offset, record.end_offset)
        else:  # several records on one line (a one-line document): the line's span
            self._where[record.line] = (known[0], max(known[1], record.end_offset))

    def _forget(self, line: int) -> None:
        for old in [x for x in self._where if x < line]:
            del self._where[old]

    def _problem(self, values: list[str]) -> tuple[str, str] | None:
        email = values[_EMAIL_AT]
        problem = control_problem(email) or email_problem(email)
        if problem is not None:
            return EMAIL_COLUMN.field, problem
        if self._remove:
            return None
        for column, value in zip(_ALL, values, strict=True):
            if column is EMAIL_COLUMN or not value:
                continue
            problem = control_problem(value) or field_problem(column.field, value)
            if problem is not None:
                return column.field, problem
        return None
