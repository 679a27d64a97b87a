"""The import pipeline: a contact file's bytes in; rejections, duplicates and chunks out.

:class:`Pipeline` follows the decoder protocol (``decode(data) -> list[Event]``, then
``flush()``): feed it a CSV or XML file of any size in pieces of any size; it returns a
:class:`~bulkops.stream.records.Header`, then for every data record exactly one outcome
(a :class:`~bulkops.stream.records.Rejected`, a :class:`~bulkops.stream.records.Duplicate`,
or a place in a :class:`~bulkops.stream.records.Chunk`), chunks in ``seq`` order.

How CSV gets through without a Python step per field (benchmarks/bench_stream.py measures
it: about 0.5x the rate of a bare ``csv.reader`` iterating the same file, 3.4-5x the obvious
``csv.reader`` + ``csv.writer`` + ``urlencode`` pipeline; see benchmarks/README.md):

* Input is cut at the last line break of each piece, then into regions of about 96 KiB of
  whole lines. A region is split with ``bytes.split``; lines without a quote character
  (nearly all of a typical file) are checked by one compiled pattern
  (:func:`~bulkops.stream.validate.plain_row_pattern`) in a single ``findall``, which yields
  every line's email when the line certainly passes the exact check; lines holding quotes
  by a second ``findall`` of the single-line quoted pattern. Only the lines they refuse are
  parsed field by field and checked exactly, and accepted or rejected with line and field.
* A record whose quoted field runs over several lines is matched as a whole by the quoted
  pattern (strict RFC 4180: :func:`~bulkops.stream.validate.quoted_row_pattern`); failing
  that, it is parsed by :func:`~bulkops.stream.csv.parse_record`, as the stdlib reads it.
* When the file's delimiter is a comma and every column is sent, an accepted row travels as
  its original bytes (multipart needs no escaping); otherwise it is rewritten, quoted
  minimally.
* Emails are lower-cased in bulk; the chunker finds repeats inside a chunk in C, keeps the
  email table (:mod:`bulkops.stream.dedupe`: one Python step per distinct email of a chunk,
  when it is cut — the only one on the common path, and the largest cost) and cuts chunks
  (:mod:`bulkops.stream.chunking`). Source offsets are kept per region
  (line lengths) and looked up only for chunk ends and dropped duplicates.

Invariants:

* **Any split, same result**: the events of all ``decode`` calls and ``flush`` do not depend
  on how the input was cut (only on when they come out). Which check accepts a row (fast or
  exact) depends on the row alone, and so does its ``data`` line.
* **O(bytes fed), constant memory**: nothing is parsed twice except a partial record when a
  line break arrives; a record longer than ``max_record_bytes`` is skipped without being
  held (:class:`~bulkops.stream.csv.RecordSkipper`) and rejected. Memory is one piece, one
  chunk and the email table.
* **Deterministic**: the same bytes and options give the same events, bodies and digests in
  every process (resume re-derives the plan this way).

Pure: no IO, no clock.
"""

from __future__ import annotations

import operator
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from itertools import accumulate, compress, repeat
from typing import TYPE_CHECKING, Literal

import attrs

from bulkops.errors import ConfigError, InputError
from bulkops.stream.chunking import Chunker, ChunkOptions, Form, RowBatch
from bulkops.stream.csv import (
    DEFAULT_MAX_RECORD_BYTES,
    ParsedRecord,
    RecordSkipper,
    count_breaks,
    normalize_delimiter,
    oversized_field,
    parse_record,
    sniff_delimiter,
)
from bulkops.stream.header import ColumnMap, map_header, mapping_pairs
from bulkops.stream.records import ChunkKind, Event, Header, PipelineStatistics, Rejected
from bulkops.stream.text import Transcoder
from bulkops.stream.validate import (
    NOT_CONTROL,
    encode_row,
    fast_email_ok,
    plain_row_pattern,
    quoted_row_pattern,
    record_pattern,
    row_problem_of,
)
from bulkops.wire.activity import (
    DEFAULT_MAX_ACTIVITY_BYTES,
    DEFAULT_MAX_ACTIVITY_ROWS,
    MIN_ACTIVITY_ROWS,
)
from bulkops.wire.columns import EMAIL_COLUMN, EMAIL_MAX_LENGTH

if TYPE_CHECKING:
    from bulkops.stream.xml import XmlRows

__all__ = ["Pipeline", "PipelineOptions"]

Format = Literal["csv", "xml"]

#: Pieces bigger than this are processed in slices (bounds the per-piece working memory).
_SLICE = 1 << 20
#: Lines are checked in regions of about this many bytes (fits the CPU caches).
_REGION = 96 * 1024
_CR = 0x0D
_LF = 0x0A
_one_more = (1).__add__
_first = operator.itemgetter(0)
_second = operator.itemgetter(1)
_third = operator.itemgetter(2)
_BARE_CR = re.compile(rb"\r(?!\n)")


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
        self._core: _CsvCore | XmlRows | None = None
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
        core = self._core
        if core is None:
            return PipelineStatistics(
                bytes_in=self._bytes_in,
                records=0,
                blank=0,
                rejected=0,
                duplicates=0,
                rows_sent=0,
                chunks=0,
                unique_emails=0,
                dedupe_bytes=0,
            )
        return core.statistics(self._bytes_in)

    def _feed(self, data: bytes, final: bool, events: list[Event]) -> None:
        if self._core is None:
            self._head += data
            head = self._head.lstrip(b" \t\r\n")
            if not head and not final:
                return
            fmt = self._options.format
            if fmt is None:
                fmt = "xml" if head.startswith(b"<") else "csv"
            if fmt == "xml":
                from bulkops.stream.xml import XmlRows  # lxml only when needed

                self._core = XmlRows(self._options, self._text)
            else:
                self._core = _CsvCore(self._options, self._text)
            data, self._head = self._head, b""
        self._core.feed(data, final, events)


# -- CSV --------------------------------------------------------------------------------------


class _LineIndex:
    """Source offsets of the records the chunker may still ask about (chunk ends, dropped
    duplicates), per run of records: its first line, its source offset, and either the
    source length of each record or (UTF-8 input) the records themselves without their LF
    (lengths are taken only when asked: most records never are), and the line each record
    starts on when some span several lines (else record ``i`` is on line ``first + i``).
    A record's end is given apart where its length is not known (a refused record the
    exact reading ended elsewhere than the fast pattern)."""

    def __init__(self) -> None:
        self._firsts: list[int] = []
        self._runs: list[tuple[int, list[int] | list[bytes], list[int] | None]] = []
        self._ends: dict[int, int] = {}
        self.eof: int | None = None

    def add(
        self,
        line: int,
        offset: int,
        sizes: list[int] | list[bytes],
        starts: list[int] | None = None,
    ) -> None:
        """A run: ``sizes`` are source lengths, or UTF-8 records without their LF."""
        if sizes:
            self._firsts.append(line)
            self._runs.append((offset, sizes, starts))

    def end_at(self, line: int, offset: int) -> None:
        self._ends[line] = offset

    def locate(self, line: int) -> tuple[int, int]:
        k = bisect_right(self._firsts, line) - 1
        offset, sizes, starts = self._runs[k]
        i = line - self._firsts[k] if starts is None else bisect_left(starts, line)
        first = sizes[0]
        if isinstance(first, bytes):
            records: list[bytes] = sizes  # type: ignore[assignment]
            start = offset + sum(map(len, records[:i])) + i
            length = len(records[i]) + 1
        else:
            lengths: list[int] = sizes  # type: ignore[assignment]
            start = offset + sum(lengths[:i])
            length = lengths[i]
        end = self._ends.get(line, start + length)
        if self.eof is not None:
            end = min(end, self.eof)
        return start, end

    def forget(self, line: int) -> None:
        k = bisect_right(self._firsts, line) - 1
        if k > 0:
            del self._firsts[:k]
            del self._runs[:k]
        if self._ends:
            for old in [x for x in self._ends if x < line]:
                del self._ends[old]


class _CsvCore:
    """The CSV side of :class:`Pipeline`."""

    def __init__(self, options: PipelineOptions, text: Transcoder) -> None:
        self._options = options
        self._text = text
        self._delimiter = normalize_delimiter(options.delimiter)
        self._max_record = options.max_record_bytes
        self._buf = b""
        self._line = 1
        self._src = 0  # source offset of _buf[0] (passthrough) or of _buf[_src_pos]
        self._src_pos = 0
        self._started = False
        self._waiting = False
        self._virtual = False  # a LF was appended at the end of the input
        self._eof = 0  # source length, known at the end
        self._columns: ColumnMap | None = None
        self._chunker: Chunker | None = None
        self._index = _LineIndex()
        self._sized = False
        self._skipper: RecordSkipper | None = None
        self._skip_line = 0
        self._skip_start = 0
        self._skip_field: str | None = None
        self._skip_reason = ""
        self._records = 0
        self._blank = 0
        self._rejected = 0

    # -- statistics -----------------------------------------------------------------------

    def statistics(self, bytes_in: int) -> PipelineStatistics:
        chunker = self._chunker
        return PipelineStatistics(
            bytes_in=bytes_in,
            records=self._records,
            blank=self._blank,
            rejected=self._rejected + (chunker.rejected if chunker else 0),
            duplicates=chunker.duplicates if chunker else 0,
            rows_sent=chunker.rows_sent if chunker else 0,
            chunks=chunker.chunks if chunker else 0,
            unique_emails=len(chunker.table) if chunker else 0,
            dedupe_bytes=chunker.table.nbytes if chunker else 0,
        )

    # -- feeding --------------------------------------------------------------------------

    def feed(self, data: bytes, final: bool, events: list[Event]) -> None:
        if not self._started and (data or final):
            self._started = True
            self._src = self._text.bom_length
        if self._skipper is not None:
            data = self._skip(data, final, events)
            if self._skipper is not None:
                return
        if (
            self._waiting
            and not final
            and self._columns is not None
            and b"\n" not in data
            and b"\r" not in data
        ):
            self._buf += data
            self._maybe_skip(final, events)
            return
        buf = self._buf + data
        if final:
            if self._text.passthrough:
                self._eof = self._src + len(buf)
            else:
                self._eof = self._src + self._text.source_length(buf[self._src_pos :])
            if buf and buf[-1] not in (_CR, _LF):
                buf += b"\n"
                self._virtual = True
                self._index.eof = self._eof
        pos = 0
        if self._columns is None:
            header_end = self._read_header(buf, final, events)
            if header_end is None:
                self._buf = buf
                self._waiting = True
                return
            pos = header_end
        pos = self._process(buf, pos, final, events)
        self._advance(buf, pos)
        self._size_table()
        self._buf = buf[pos:]
        self._waiting = bool(self._buf)
        if final:
            assert self._chunker is not None
            self._chunker.finish(events)
        else:
            self._maybe_skip(final, events)

    def _size_table(self) -> None:
        """Once enough is read, size the email table for the rows the input should hold."""
        hint = self._options.size_hint
        if hint is None or self._sized or self._src < (1 << 20) or self._records < 100:
            return
        self._sized = True
        assert self._chunker is not None
        self._chunker.table.reserve(int(hint / self._src * self._records * 1.05))

    def _source_offset(self, buf: bytes, x: int) -> int:
        """The source offset of ``buf[x]`` (positions asked for never decrease)."""
        if self._text.passthrough:
            return self._src + x
        self._src += self._text.source_length(buf[self._src_pos : x])
        self._src_pos = x
        return self._src

    def _advance(self, buf: bytes, pos: int) -> None:
        """Drop ``buf[:pos]``: rebase the source offset bookkeeping."""
        if self._text.passthrough:
            self._src += pos
        else:
            self._source_offset(buf, pos)
            self._src_pos = 0

    def _end_offset(self, offset: int) -> int:
        return min(offset, self._eof) if self._virtual else offset

    # -- header ---------------------------------------------------------------------------

    def _read_header(self, buf: bytes, final: bool, events: list[Event]) -> int | None:
        """Read the header record; None when more input is needed. Returns where it ends.

        An Excel ``sep=X`` first line sets the delimiter; blank lines before the header are
        skipped (their lines counted)."""
        pos = 0
        line = self._line
        delimiter = self._delimiter
        parsed: ParsedRecord | None = None
        while parsed is None:
            if pos >= len(buf):
                if final:
                    raise InputError(
                        "the input is empty: it needs a header line naming its columns "
                        "(Email, First Name, ...)",
                        line=line,
                    )
                return None
            found = parse_record(buf, pos, delimiter or b",", final=final)
            if found is None:
                if len(buf) - pos > self._max_record:
                    raise InputError(
                        f"the header is longer than {self._max_record} bytes", line=line
                    )
                return None
            raw = buf[pos : found.end].strip()
            if line == 1 and raw[:4].lower() == b"sep=" and len(raw) == 5:
                delimiter = normalize_delimiter(raw[4:5])
            elif any(field.strip() for field in found.fields):
                parsed = found
                break
            line += found.breaks
            pos = found.end
        if delimiter is None:
            delimiter = sniff_delimiter(buf[pos : parsed.end])
            again = parse_record(buf, pos, delimiter, final=final)
            if again is None:
                return None
            parsed = again
        self._line = line
        self._delimiter = delimiter
        try:
            cells = [field.decode("utf-8") for field in parsed.fields]
        except UnicodeDecodeError:
            raise InputError(
                f"the header is not valid {self._text.encoding} text; name the encoding "
                "(for example cp1252 or utf-16)",
                line=self._line,
            ) from None
        opts = self._options
        columns = map_header(
            cells,
            mapping=opts.mapping,
            ignore_unknown=opts.ignore_unknown,
            kind=opts.kind,
            line=self._line,
        )
        self._columns = columns
        self._setup(columns, delimiter)
        events.append(
            Header(
                sources=columns.sources,
                columns=tuple(c.name if c is not None else None for c in columns.columns),
                sent=self._sent,
                delimiter=delimiter.decode("ascii"),
                encoding=self._text.encoding,
                line_count=parsed.breaks,
            )
        )
        self._line += parsed.breaks
        self._records = 0
        return parsed.end

    def _setup(self, columns: ColumnMap, delimiter: bytes) -> None:
        opts = self._options
        remove = opts.kind is ChunkKind.REMOVE
        self._ncols = len(columns.columns)
        self._email_at = columns.email_index
        self._kept = columns.kept
        self._sent = (EMAIL_COLUMN.name,) if remove else tuple(c.name for c in columns.sent)
        header = ",".join(self._sent).encode("ascii")
        # How an accepted row becomes a data line: as it is, the email alone, the delimiter
        # swapped for commas, or projected onto the kept columns.
        if remove:
            self._mode = "email"
        elif delimiter == b"," and columns.keeps_all:
            self._mode = "raw"
        elif columns.keeps_all:
            self._mode = "delimiter"
        else:
            self._mode = "project"
        self._plain = plain_row_pattern(columns, delimiter)
        self._quoted = quoted_row_pattern(columns, delimiter)
        self._quoted_lines = quoted_row_pattern(columns, delimiter, single_line=True)
        # Regions dense in quotes are read record by record in one findall (rows that may
        # travel as they are only: the others need their fields).
        self._records_re = (
            record_pattern(columns, delimiter) if self._mode in ("raw", "email") else None
        )
        self._chunker = Chunker(
            opts.chunk_options(),
            header=header,
            columns=self._sent,
            locate=self._index.locate,
            forget=self._index.forget,
            capacity=opts.capacity,
        )

    # -- body -----------------------------------------------------------------------------

    def _process(self, buf: bytes, pos: int, final: bool, events: list[Event]) -> int:
        """Handle every complete record from ``pos``; return where the rest starts."""
        n = len(buf)
        limit = n if final else max(buf.rfind(b"\n") + 1, buf.rfind(b"\r", 0, n - 1) + 1)
        batch = RowBatch()
        while pos < limit:
            # Regions of about _REGION bytes of whole lines: small enough for the CPU caches.
            cut = buf.find(b"\n", pos + _REGION, limit) + 1 if limit - pos > 2 * _REGION else 0
            b = cut or limit
            if buf.find(b"\r", pos, b) >= 0 and _BARE_CR.search(buf, pos, b) is not None:
                end = self._one_by_one(buf, pos, b, final, batch, events)  # bare CRs
            else:
                end = self._region(buf, pos, b, final, batch, events)
            if end < b:  # a record is incomplete
                pos = end
                break
            pos = end
        assert self._chunker is not None
        self._chunker.add(batch, events)
        return pos

    def _src_at(self, buf: bytes, x: int) -> int:
        """The source offset of ``buf[x]``; calls come in increasing ``x``."""
        if self._text.passthrough:
            return self._src + x
        return self._source_offset(buf, x)

    def _one_by_one(
        self, buf: bytes, a: int, b: int, final: bool, batch: RowBatch, events: list[Event]
    ) -> int:
        """Records one at a time (for runs with CR-only line ends, as old Mac files have)."""
        pos = a
        while pos < b:
            number = self._line
            start = self._src_at(buf, pos)
            found = self._record_at(buf, pos, final, number, start, events)
            if found is None:
                break
            end, breaks, stop, row = found
            self._index.add(number, start, [stop - start])
            self._line += breaks
            self._records += 1
            if row is not None:
                batch.append(row[0], row[1], number)
            pos = end
        return pos

    def _region(
        self,
        buf: bytes,
        a: int,
        b: int,
        final: bool,
        batch: RowBatch,
        events: list[Event],
        *,
        dense: bool = True,
    ) -> int:
        """The complete lines ``buf[a:b]`` (LF or CRLF ends): checked in bulk; lines the
        fast patterns refuse, one by one; a record that runs over several lines, as a
        whole. Returns where the records handled end (past ``b`` when a quoted record runs
        on; before it when such a record is incomplete)."""
        region = buf[a:b]
        # Dense in quotes (judged on its first bytes: any choice gives the same rows)?
        if (
            dense
            and self._records_re is not None
            and region.count(b'"', 0, 8192) > region.count(b"\n", 0, 8192) // 4
        ):
            return self._records_region(buf, a, b, region, final, batch, events)
        lines = region.split(b"\n")
        lines.pop()
        n = len(lines)
        line0 = self._line
        src0 = self._src_at(buf, a)
        passthrough = self._text.passthrough
        sizes: list[int] | list[bytes] = lines
        if not passthrough:
            size = self._text.source_length
            sizes = [size(x + b"\n") for x in lines]
        qlines = (
            list(compress(range(n), map(bytes.__contains__, lines, repeat(b'"'))))
            if b'"' in region
            else []
        )
        emails, blob = self._screen(region, lines, self._scan(region, lines, qlines))
        keys = blob.lower().split(b"\n")
        mode = self._mode
        if mode == "raw":
            outs = lines
        elif mode == "email":
            outs = emails
        elif mode == "delimiter" and b"," not in region:
            outs = region.replace(self._delimiter or b",", b",").split(b"\n")
            outs.pop()
        else:
            outs = [self._rewrite(x) if e else b"" for e, x in zip(emails, lines, strict=True)]
        if b"" not in emails:
            self._index.add(line0, src0, sizes)
            self._line += n
            self._records += n
            batch.outs += outs
            batch.emails += keys
            batch.lines.extend(range(line0, line0 + n))
            return b
        keep = bytearray(b"\x01") * n
        outs = list(outs)
        quote_set = set(qlines)
        upto, stop, line_after = n, b, line0 + n  # lines handled, where they end, next line
        skip_to = 0  # lines before it belong to a record already handled
        continuation = 0  # lines inside multi-line records (no records of their own)
        cursor, offset = 0, src0  # offset is where line `cursor` starts
        for i in compress(range(n), map(operator.not_, emails)):
            if i < skip_to:
                continue
            if passthrough:
                offset += sum(map(len, lines[cursor:i])) + i - cursor
            else:
                offset += sum(sizes[cursor:i])  # type: ignore[arg-type]
            cursor = i
            number = line0 + i
            if i not in quote_set:
                length = len(lines[i]) + 1 if passthrough else sizes[i]
                row = self._exact_line(
                    lines[i],
                    number,
                    offset,
                    self._end_offset(offset + length),  # type: ignore[operator]
                    events,
                )
                if row is None:
                    keep[i] = 0
                else:
                    outs[i], keys[i] = row
                continue
            pos = a + (offset - src0) if passthrough else a + sum(map(len, lines[:i])) + i
            found = self._record_at(buf, pos, final, number, offset, events)
            if found is None:  # runs past the input so far: stop before it
                upto, stop, line_after = i, pos, number
                keep[i:] = bytes(n - i)
                break
            end, breaks, end_offset, row = found
            if row is None:
                keep[i] = 0
            else:
                outs[i], keys[i] = row
            if breaks > 1:
                self._index.end_at(number, end_offset)
                j = min(i + breaks, n)
                keep[i + 1 : j] = bytes(j - i - 1)
                continuation += j - i - 1
                skip_to = i + breaks
                if i + breaks > n:  # the record runs past the region
                    stop, line_after = end, number + breaks
                    break
        self._index.add(line0, src0, sizes[:upto])
        self._line = line_after
        self._records += upto - continuation
        batch.outs += compress(outs, keep)
        batch.emails += compress(keys, keep)
        batch.lines.extend(compress(range(line0, line0 + n), keep))
        if not passthrough:
            self._source_offset(buf, stop)
        return stop

    def _screen(
        self, region: bytes, units: list[bytes], emails: list[bytes]
    ) -> tuple[list[bytes], bytes]:
        """The checks the fast patterns leave out, on the whole region at once: control
        characters, UTF-8, the record bound, the email post-checks. ``units`` are the lines
        or records of ``region``, ``emails`` their fast verdicts; refused ones become
        ``b""``. Returns them, and joined by LFs."""
        if region.translate(None, NOT_CONTROL):
            emails = [
                e if not x.translate(None, NOT_CONTROL) else b""
                for e, x in zip(emails, units, strict=True)
            ]
        if not region.isascii() and not _is_utf8(region):
            emails = [e if _is_utf8(x) else b"" for e, x in zip(emails, units, strict=True)]
        if len(region) > self._max_record and max(map(len, units)) >= self._max_record:
            emails = [
                e if len(x) < self._max_record else b"" for e, x in zip(emails, units, strict=True)
            ]
        blob = b"\n".join(emails)
        if b"-." in blob or max(map(len, emails)) > EMAIL_MAX_LENGTH:
            emails = [e if fast_email_ok((e,)) else b"" for e in emails]
            blob = b"\n".join(emails)
        return emails, blob

    def _records_region(
        self,
        buf: bytes,
        a: int,
        b: int,
        region: bytes,
        final: bool,
        batch: RowBatch,
        events: list[Event],
    ) -> int:
        """The records of ``buf[a:b]`` (LF or CRLF ends, quotes everywhere): one ``findall``
        of :func:`~bulkops.stream.validate.record_pattern` reads them, multi-line ones
        included, with their emails; the records it refuses are read exactly, one by one.
        When the exact reading ends a refused record elsewhere than the pattern did (stray
        quotes), the rest of the region is read line by line (:meth:`_region`). Returns
        where the records handled end, as :meth:`_region` does."""
        assert self._records_re is not None
        found = self._records_re.findall(buf, a, b)
        recs: list[bytes] = list(map(_first, found))
        emails: list[bytes] = list(map(_third, found))
        del found
        n = len(recs)
        nlines = region.count(b"\n")
        line0 = self._line
        src0 = self._src_at(buf, a)
        passthrough = self._text.passthrough
        sizes: list[int] | list[bytes] = recs
        if not passthrough:
            size = self._text.source_length
            sizes = [size(x + b"\n") for x in recs]
        # The line each record starts on (None: one line each).
        starts = (
            None
            if n == nlines
            else list(
                accumulate(map(_one_more, map(bytes.count, recs, repeat(b"\n"))), initial=line0)
            )
        )
        numbers = range(line0, line0 + n + 1) if starts is None else starts
        emails, blob = self._screen(region, recs, emails)
        keys = blob.lower().split(b"\n")
        outs = recs if self._mode == "raw" else emails
        if b"" not in emails:
            self._index.add(line0, src0, sizes, None if starts is None else starts[:-1])
            self._line += nlines
            self._records += n
            batch.outs += outs
            batch.emails += keys
            batch.lines.extend(numbers[:-1])
            return b
        keep = bytearray(b"\x01") * n
        outs = list(outs)
        upto, stop, line_after = n, b, line0 + nlines  # records handled, their end, next line
        rest = False  # the rest of the region is to be read line by line
        cursor, offset, at = 0, src0, a  # record `cursor` starts at source `offset`, buf[at]
        for k in compress(range(n), map(operator.not_, emails)):
            skipped = sum(map(len, recs[cursor:k])) + k - cursor
            at += skipped
            offset += skipped if passthrough else sum(sizes[cursor:k])  # type: ignore[arg-type]
            cursor = k
            number = numbers[k]
            record = self._record_at(buf, at, final, number, offset, events)
            if record is None:  # runs past the input so far: stop before it
                upto, stop, line_after = k, at, number
                keep[k:] = bytes(n - k)
                break
            end, breaks, end_offset, row = record
            if row is None:
                keep[k] = 0
            else:
                outs[k], keys[k] = row
            if end != at + len(recs[k]) + 1:  # the exact reading ends it elsewhere
                self._index.end_at(number, end_offset)
                upto, stop, line_after = k + 1, end, number + breaks
                keep[k + 1 :] = bytes(n - k - 1)
                rest = end < b
                break
        self._index.add(line0, src0, sizes[:upto], None if starts is None else starts[:upto])
        self._line = line_after
        self._records += upto
        batch.outs += compress(outs, keep)
        batch.emails += compress(keys, keep)
        batch.lines.extend(compress(numbers, keep))
        if not passthrough:
            self._source_offset(buf, stop)
        if rest:
            return self._region(buf, stop, b, final, batch, events, dense=False)
        return stop

    def _scan(self, region: bytes, lines: list[bytes], qlines: list[int]) -> list[bytes]:
        """The fast patterns' verdict per line: the email, or ``b""`` (check exactly).

        Lines without quotes go through the plain pattern in one ``findall``; lines holding
        a quote are blanked for it (a quoted field spanning lines cannot mislead it) and,
        when rows may travel as they are, go through the single-line quoted pattern in a
        second ``findall``. Both verdicts depend on the line alone."""
        pattern = self._plain
        if qlines:
            blanked = list(lines)
            for q in qlines:
                blanked[q] = b""
            region = b"\n".join(blanked) + b"\n"
        emails: list[bytes] = pattern.findall(region)
        if len(emails) != len(lines):
            # A line short of delimiters let a match run into the next line: line by line.
            emails = [pattern.findall(x + b"\n")[0] if x else b"" for x in lines]
        if qlines:
            if self._mode in ("raw", "email"):
                quoted = self._quoted_lines.findall(
                    b"\n".join(map(lines.__getitem__, qlines)) + b"\n"
                )
                for q, email in zip(qlines, map(_second, quoted), strict=True):
                    emails[q] = email
            else:
                for q in qlines:
                    emails[q] = b""
        return emails

    def _rewrite(self, line: bytes) -> bytes:
        """A quote-free line in the ``data`` format: commas, kept columns only, values as
        they are (a CR before the line break stays, as when the delimiter is swapped)."""
        cr = line.endswith(b"\r")
        values = (line[:-1] if cr else line).split(self._delimiter or b",")
        if self._mode == "project":
            values = [values[k] for k in self._kept]
        out = b",".join(v if b"," not in v else b'"' + v + b'"' for v in values)
        return out + b"\r" if cr else out

    def _exact_line(
        self, line: bytes, number: int, start: int, end: int, events: list[Event]
    ) -> tuple[bytes, bytes] | None:
        """Check a quote-free line exactly; the accepted ``(data line, email key)`` or None."""
        if len(line) + 1 > self._max_record:
            self._reject_oversized(line + b"\n", number, start, end, events)
            return None
        content = line[:-1] if line.endswith(b"\r") else line
        fields = content.split(self._delimiter or b",") if content else []
        return self._exact(fields, line, False, number, start, end, events, plain=line)

    def _exact(
        self,
        fields: list[bytes],
        raw: bytes,
        lenient: bool,
        number: int,
        start: int,
        end: int,
        events: list[Event],
        *,
        plain: bytes | None,
    ) -> tuple[bytes, bytes] | None:
        """The exact check of one record. ``raw`` is its data line as it would travel;
        ``plain`` the same when the record holds no quote (else None)."""
        if not any(field.strip() for field in fields):
            self._blank += 1
            return None
        columns = self._columns
        assert columns is not None
        problem: tuple[str | None, str] | None = None
        values: list[str] = []
        if len(fields) != self._ncols:
            problem = (
                None,
                f"the row has {len(fields)} fields; the header has {self._ncols}",
            )
        else:
            for i, field in enumerate(fields):
                try:
                    values.append(field.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    bad = field[exc.start : exc.start + 1].hex().upper()
                    problem = (
                        columns.sources[i],
                        f"byte 0x{bad} is not valid {self._text.encoding} text; name the "
                        "file's encoding (for example cp1252)",
                    )
                    break
            if problem is None:
                problem = row_problem_of(columns, values)
        if problem is not None:
            self._rejected += 1
            events.append(
                Rejected(
                    line=number,
                    start_offset=start,
                    end_offset=self._end_offset(end),
                    field=problem[0],
                    reason=problem[1],
                )
            )
            return None
        email = values[self._email_at].strip()
        key = email.lower().encode("utf-8")
        mode = self._mode
        if mode == "email":
            return email.encode("utf-8"), key
        if mode == "raw":
            if not lenient:
                return raw, key
        elif plain is not None:
            return self._rewrite(plain), key
        return encode_row([values[k].strip() for k in self._kept]), key

    def _reject_oversized(
        self, head: bytes, number: int, start: int, end: int, events: list[Event]
    ) -> None:
        assert self._delimiter is not None
        assert self._columns is not None
        field = oversized_field(head[: self._max_record + 1], self._delimiter)
        sources = self._columns.sources
        self._rejected += 1
        events.append(
            Rejected(
                line=number,
                start_offset=start,
                end_offset=self._end_offset(end),
                field=sources[field] if field < len(sources) else None,
                reason=f"the record is longer than {self._max_record} bytes",
            )
        )

    def _record_at(
        self, buf: bytes, pos: int, final: bool, number: int, start: int, events: list[Event]
    ) -> tuple[int, int, int, tuple[bytes, bytes] | None] | None:
        """Read and check the record at ``pos`` (whatever it holds).

        Returns:
            ``(end, line breaks, end offset, row)`` where row is ``(data line, email key)``
            or None when the record is rejected or blank; None when it is incomplete.
        """
        m = self._quoted.match(buf, pos)
        if m is not None:
            end = m.end()
            if end == len(buf) and buf[end - 1] == _CR and not final:
                return None
            record = m.group()
            email = m.group(2)
            if (
                self._mode in ("raw", "email")
                and len(record) <= self._max_record
                and (record.isascii() or _is_utf8(record))
                and not record.translate(None, NOT_CONTROL)
                and fast_email_ok((email,))
            ):
                stop = self._end_offset(self._src_at(buf, end))
                out = record[:-1] if self._mode == "raw" else email
                return end, count_breaks(record), stop, (out, email.lower())
        delimiter = self._delimiter
        assert delimiter is not None
        parsed = parse_record(buf, pos, delimiter, final=final)
        if parsed is None:
            return None
        if self._virtual and parsed.end == len(buf) and parsed.unterminated:
            again = parse_record(buf[:-1], pos, delimiter, final=True)
            assert again is not None
            parsed = ParsedRecord(again.fields, len(buf), again.breaks, True, again.lenient)
        end = parsed.end
        stop = self._src_at(buf, end)
        record = buf[pos:end]
        if len(record) > self._max_record:
            self._reject_oversized(record, number, start, stop, events)
            return end, parsed.breaks, self._end_offset(stop), None
        if parsed.unterminated:
            self._rejected += 1
            events.append(
                Rejected(
                    line=number,
                    start_offset=start,
                    end_offset=self._end_offset(stop),
                    field=None,
                    reason="a quoted field is not closed before the end of the file",
                )
            )
            return end, parsed.breaks, self._end_offset(stop), None
        raw = record[:-1] if record[-1:] in (b"\n", b"\r") else record
        plain = raw if b'"' not in record else None
        row = self._exact(
            parsed.fields, raw, parsed.lenient, number, start, stop, events, plain=plain
        )
        return end, parsed.breaks, self._end_offset(stop), row

    # -- records too long to hold ---------------------------------------------------------

    def _maybe_skip(self, final: bool, events: list[Event]) -> None:
        if final or len(self._buf) <= self._max_record or self._columns is None:
            return
        delimiter = self._delimiter
        assert delimiter is not None
        buf, self._buf = self._buf, b""
        self._waiting = False
        field = oversized_field(buf[: self._max_record + 1], delimiter)
        sources = self._columns.sources
        self._skip_field = sources[field] if field < len(sources) else None
        self._skip_reason = f"the record is longer than {self._max_record} bytes"
        self._skip_line = self._line
        self._skip_start = self._source_offset(buf, 0)
        self._skipper = RecordSkipper(delimiter)
        rest = self._skip(buf, final, events)
        if rest:
            self.feed(rest, final, events)

    def _skip(self, data: bytes, final: bool, events: list[Event]) -> bytes:
        skipper = self._skipper
        assert skipper is not None
        end = skipper.feed(data, final=final)
        stop = len(data) if end is None else end
        if not self._text.passthrough:
            self._src_pos = 0
            self._src += self._text.source_length(data[:stop])
        else:
            self._src += stop
        if end is None:
            return b""
        self._skipper = None
        self._records += 1
        self._rejected += 1
        events.append(
            Rejected(
                line=self._skip_line,
                start_offset=self._skip_start,
                end_offset=self._src,
                field=self._skip_field,
                reason=self._skip_reason,
            )
        )
        self._line = self._skip_line + skipper.breaks
        return data[end:]


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
