"""Contacts from XML, read incrementally: an Atom feed of Contact entries (as the API itself
emits them) or a plain ``<Contacts><Contact>...</Contact></Contacts>`` document.

:class:`XmlContactDecoder` follows the decoder protocol (``decode(data)``, ``flush()``) and
returns one :class:`XmlRecord` per ``Contact`` element (any namespace, at any depth): its
child elements by local name (``EmailAddress``, ``FirstName``, ``CustomField3``, ...) with
their text. A ``Contact`` nested in another is a record too, and both it and every
``Contact`` around it carry a ``problem`` (which one is meant cannot be told), so every
record the reader counts gets an outcome and none is silently dropped.

:class:`XmlRows` is the pipeline's XML row source (:class:`~bulkops.stream.sources.RowSource`):
it validates those records and hands the good ones to the chunker.

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
* Lines are libxml2's (``sourceline``: the line where the ``Contact`` start tag ends).
  Offsets come from finding each start tag in the raw bytes, in order: a record spans from
  its ``<Contact`` to the next record's (or the end of the input), a nested one included.
  A ``<Contact`` inside a comment, CDATA section or processing instruction is skipped (one
  ``find`` per record tells whether any can lie between two tags; only then is the span
  scanned with :data:`_MARKUP`).

Errors are :class:`~bulkops.errors.InputError` with the line; after one the decoder is spent.
"""

from __future__ import annotations

import operator
import re

import msgspec
from lxml import etree

from bulkops.errors import InputError
from bulkops.stream.chunking import Chunker, RowBatch
from bulkops.stream.records import ChunkKind, Event, Header, PipelineStatistics, Rejected
from bulkops.stream.sources import SourceOptions, Tally
from bulkops.stream.text import Transcoder
from bulkops.stream.validate import encode_row
from bulkops.wire.atom.reading import LOCAL_NAMES, local_name_of
from bulkops.wire.atom.syntax import HARDENED_PARSER_OPTIONS
from bulkops.wire.columns import (
    COLUMNS,
    CONTROL_BYTES,
    EMAIL_COLUMN,
    STATE_CODES,
    control_problem,
    email_problem,
    field_problem,
    is_valid_email,
)

__all__ = ["XML_SLICE_BYTES", "XmlContactDecoder", "XmlRecord", "XmlRows"]

#: The pull parser is fed at most this many bytes at a time.
XML_SLICE_BYTES = 64 * 1024
_DEFAULT_MAX_RECORD_BYTES = 1024 * 1024
_FORBIDDEN = (b"<!DOCTYPE", b"<!ENTITY")
_OVERLAP = max(len(token) for token in _FORBIDDEN) - 1


class XmlRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One ``Contact`` element.

    Attributes:
        line: the line of the ``Contact`` start tag (where it ends).
        start_offset: the source offset of its ``<``.
        end_offset: the source offset of the next record's ``<`` (or the end of the input).
        fields: ``(local name, text)`` of each child element, in document order (``""``
            for an empty element; for one with children of its own, such as
            ``ContactLists``, the text before its first child).
        problem: why the record cannot be read as one contact (it holds, or is inside,
            another ``Contact``), or None.
    """

    line: int
    start_offset: int
    end_offset: int
    fields: tuple[tuple[str, str], ...]
    problem: str | None = None


class _Open(msgspec.Struct):
    """A record whose start tag was read and that is not handed out yet."""

    line: int
    start: int
    end: int | None = None  # the next record's start, once known
    fields: tuple[tuple[str, str], ...] | None = None  # once its end tag was read
    problem: str | None = None


def _pull_parser() -> etree.XMLPullParser:
    return etree.XMLPullParser(
        events=("start", "end"),
        tag="{*}Contact",
        **HARDENED_PARSER_OPTIONS,
    )


_TAG = operator.attrgetter("tag")
_TAG_ENDS = frozenset((b" ", b">", b"/", b"\t", b"\n", b"\r"))
_TEXT = operator.attrgetter("text")
# Markup in which a "<Contact" is not a tag, and the tag itself (any prefix).
_MARKUP = re.compile(
    rb"<!--.*?-->|<!\[CDATA\[.*?\]\]>|<\?.*?\?>|(?P<tag><(?:[^\s/>!?:<]+:)?Contact[\s/>])",
    re.DOTALL,
)


def _fields(el: etree._Element) -> tuple[tuple[str, str], ...]:
    """``(local name, text)`` of the element's children.

    A function of its own so that the children's proxies are gone when it returns: lxml
    clears an element much faster when no Python object refers to its children (a proxy
    keeps its node alive, so each one is detached on its own: 3-4 µs per 14-field contact).
    """
    # Comments, processing instructions and entities never reach the tree (parser options;
    # declarations are refused), so every child is an element.
    children = el[:]
    # Tag -> local name: wire.atom's bounded cache (tags repeat for every record).
    try:
        names = list(map(LOCAL_NAMES.__getitem__, map(_TAG, children)))
    except KeyError:
        names = [LOCAL_NAMES.get(tag) or local_name_of(tag) for tag in map(_TAG, children)]
    texts = list(map(_TEXT, children))
    if None in texts:
        texts = [text or "" for text in texts]
    return tuple(zip(names, texts, strict=True))


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
        self._open: list[_Open] = []  # records not handed out yet, in document order
        self._depth = 0  # Contact elements open (the last ``_depth`` of ``_open``)
        self._tail = b""
        self._pending_bytes = 0
        self._error: InputError | None = None
        self._root: etree._Element | None = None  # kept to check that the tree stays small
        # Offsets: raw UTF-8 kept from _raw_pos (the last record's start tag), which is at
        # source offset _raw_src; compacted when the dead part grows (O(bytes) overall).
        self._raw = b""
        self._raw_pos = 0
        self._raw_src = 0
        self._lines = 0  # line breaks fed so far
        self._started = False
        self._tags = 0  # Contact start tags found in the raw bytes
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
            at = window.find(token)
            if at >= 0:
                before = self._lines - self._tail.count(b"\n") + window[:at].count(b"\n")
                raise InputError(
                    f"the XML holds {token[2:].decode()}; declarations are not accepted",
                    line=before + 1,
                )
        self._tail = window[-_OVERLAP:]
        self._lines += data.count(b"\n")
        if self._raw_pos > len(self._raw) // 2:
            self._raw = self._raw[self._raw_pos :]
            self._raw_pos = 0
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
                    line=self._lines + 1,
                )
        if final:
            if not self._started or self._fed_utf8 == 0:
                raise InputError("the input is empty: no XML document")
            parser.close()
            self._events(out)
            if self._open:
                self._open[-1].end = self._raw_src + self._text.source_length(
                    self._raw[self._raw_pos :]
                )
                self._hand_out(out)
        return out

    def _events(self, out: list[XmlRecord]) -> None:
        pending = self._open
        for event, el in self._parser.read_events():
            if event == "start":
                if self._root is None:
                    self._root = el.getroottree().getroot()
                start = self._tag_offset()
                if pending:
                    pending[-1].end = start
                    if not self._depth:  # every earlier record is closed, its end known
                        self._hand_out(out)
                record = _Open(el.sourceline, start)
                if self._depth:
                    self._nested(record)
                pending.append(record)
                self._depth += 1
                continue
            self._depth -= 1
            if self._depth:  # a nested Contact (its outer one still needs its head)
                record = next(r for r in reversed(pending) if r.fields is None)
                record.fields = ()
                el.clear(keep_tail=True)
                continue
            record = pending[0]  # the outermost: earlier ones were handed out at its start
            record.fields = _fields(el) if record.problem is None else ()
            self._pending_bytes = 0
            el.clear(keep_tail=True)
            # Drop what came before the record at every level up to the root: earlier
            # records beside it, an entry's link, id, title..., earlier entries.
            node = el
            parent = node.getparent()
            while parent is not None:
                if node.getprevious() is not None:
                    del parent[: parent.index(node)]
                node, parent = parent, parent.getparent()

    def _nested(self, record: _Open) -> None:
        """Mark a Contact that starts inside another, and every one around it."""
        around = [r for r in self._open if r.fields is None]
        record.problem = (
            f"a Contact inside the Contact on line {around[-1].line}; "
            "nested contacts are not imported"
        )
        for outer in around:
            if outer.problem is None:
                outer.problem = (
                    f"holds another Contact (line {record.line}); nested contacts are not imported"
                )

    def _hand_out(self, out: list[XmlRecord]) -> None:
        """Hand out every pending record (all closed, their ends known)."""
        for record in self._open:
            out.append(
                XmlRecord(
                    line=record.line,
                    start_offset=record.start,
                    end_offset=record.end,  # type: ignore[arg-type]
                    fields=record.fields,  # type: ignore[arg-type]
                    problem=record.problem,
                )
            )
        self.records += len(self._open)
        self._open.clear()

    def _tag_offset(self) -> int:
        """The source offset of the next ``Contact`` start tag in the raw bytes (the one the
        parser just reported); forgets the raw bytes before it."""
        raw = self._raw
        start = self._raw_pos
        p = start + 1 if self._tags else start  # past the previous record's tag
        self._tags += 1
        i = raw.find(b"<Contact", p)  # the usual, unprefixed tag: one find
        while i >= 0 and raw[i + 8 : i + 9] not in _TAG_ENDS:
            i = raw.find(b"<Contact", i + 8)
        if (
            i < 0
            or raw.find(b":Contact", p, i) >= 0
            or raw.find(b"<!", p, i) >= 0
            or raw.find(b"<?", p, i) >= 0
        ):
            # A prefixed tag, or a comment, CDATA section or processing instruction that
            # may hold a "<Contact": scan the markup.
            i = len(raw)  # (not found: cannot happen for a start tag the parser just read)
            for match in _MARKUP.finditer(raw, p):
                if match.lastgroup == "tag":
                    i = match.start()
                    break
        if self._text.passthrough:
            self._raw_src += i - start
        else:
            self._raw_src += self._text.source_length(raw[start:i])
        self._raw_pos = i
        return self._raw_src


# -- the pipeline's XML side ------------------------------------------------------------------

_ALL = tuple(COLUMNS)
_INDEX_OF = {column.field: i for i, column in enumerate(_ALL)}
_EMAIL_AT = _ALL.index(EMAIL_COLUMN)
assert _EMAIL_AT == 0  # the quick check below skips values[0]
_STATE_AT = _INDEX_OF["StateCode"]
_TYPE_AT = _INDEX_OF["EmailType"]
# Every limit but the state code's (2) and the email type's (4, both checked apart) is at
# least this, so values no longer pass the length checks.
_QUICK_LIMIT = min(c.limit for c in _ALL if c.field not in ("StateCode", "EmailType"))
_QUICK_EMAIL = re.compile(r"\S{1,80}")
_NEEDS_QUOTES = re.compile(r'[,"\r\n]')
_CONTROL_RE = re.compile("[" + re.escape(CONTROL_BYTES.decode("latin-1")) + "]")


class XmlRows:
    """Validate XML contact records and chunk them (the XML half of ``Pipeline``).

    Every column present in the schema is carried per row; a chunk's ``data`` keeps only the
    columns some of its rows fill (the server keeps a stored value when a cell is empty).
    """

    def __init__(self, options: SourceOptions, text: Transcoder) -> None:
        self._options = options
        self._decoder = XmlContactDecoder(
            max_record_bytes=options.read.max_record_bytes, transcoder=text
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
        self._tally = Tally()

    def statistics(self, bytes_in: int) -> PipelineStatistics:
        """Counters so far."""
        return self._tally.statistics(bytes_in, self._chunker)

    def feed(self, data: bytes, events: list[Event]) -> None:
        """Read the next piece of the input (UTF-8)."""
        self._feed(data, False, events)

    def flush(self, events: list[Event]) -> None:
        """Read the end of the input; emit the last chunks."""
        self._feed(b"", True, events)

    def _feed(self, data: bytes, final: bool, events: list[Event]) -> None:
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
        self._tally.records += 1
        values = [""] * len(_ALL)
        for name, text in record.fields:
            at = _INDEX_OF.get(name)
            if at is not None:
                values[at] = text.strip()
        if not any(values) and record.problem is None:
            self._tally.blank += 1
            return
        joined = "\uffff".join(values)  # a separator XML text cannot hold
        if record.problem is not None:  # the record as a whole: no field at fault
            problem: tuple[str | None, str] | None = (None, record.problem)
        elif self._quick_ok(values, joined):
            problem = None
        else:
            problem = self._problem(values)
        if problem is not None:
            self._tally.rejected += 1
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
        elif _NEEDS_QUOTES.search(joined) is None:
            out = "\x00".join(values).encode("utf-8")  # nothing to quote: values as they are
        else:
            out = b"\x00".join([encode_row((value,)) if value else b"" for value in values])
        batch.append(out, email.lower().encode("utf-8"), record.line)
        known = self._where.get(record.line)
        if known is None:
            self._where[record.line] = (record.start_offset, record.end_offset)
        else:  # several records on one line (a one-line document): the line's span
            self._where[record.line] = (known[0], max(known[1], record.end_offset))

    def _forget(self, line: int) -> None:
        for old in [x for x in self._where if x < line]:
            del self._where[old]

    def _quick_ok(self, values: list[str], joined: str) -> bool:
        """A sufficient check: short values, no control character, a plain valid email,
        a known state code (the usual row passes; any other goes to :meth:`_problem`)."""
        email = values[_EMAIL_AT]
        state = values[_STATE_AT]
        kind = values[_TYPE_AT]
        return (
            max(map(len, values[1:])) <= _QUICK_LIMIT
            and _CONTROL_RE.search(joined) is None
            and (not state or state.upper() in STATE_CODES)
            and (not kind or kind.casefold() in ("html", "text"))
            and _QUICK_EMAIL.fullmatch(email) is not None
            and is_valid_email(email)
        )

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
