"""An incremental CSV decoder that knows where every record came from.

:class:`CsvDecoder` is fed bytes (``decode(data) -> list[Record]``, then ``flush()``) and
returns records with the physical line where each starts and its byte range in the source.
It reads what the stdlib :mod:`csv` module reads with its default dialect (and the chosen
delimiter): RFC 4180 quoting (delimiters, quotes doubled, CR and LF inside quoted fields),
records ended by CRLF, LF or CR, and the module's lenient handling of stray quotes (a quote
inside an unquoted field is a character; characters after a closing quote are appended).
The stdlib cannot report lines and offsets incrementally, hence this module; the stdlib
stays its oracle in the tests.

The record-level functions here (:func:`parse_record`, :class:`RecordSkipper`,
:func:`sniff_delimiter`) are shared with the import pipeline's slow path.

Invariants:

* Any split of the input gives the same records (a record is only parsed once its
  terminating line break, or the end of input, is in the buffer).
* O(bytes fed): a pending partial record is parsed again only when a line break arrives, and
  a record longer than ``max_record_bytes`` is not buffered: it is skipped by a streaming
  state machine and reported as a record with an ``error``.
* Lines: every CR, LF or CRLF is one line break, inside quoted fields too; line 1 is the
  first line of the input. Offsets are source offsets (a byte-order mark counts).
"""

from __future__ import annotations

import re
from functools import lru_cache

import msgspec

from bulkops.errors import ConfigError
from bulkops.stream.text import Transcoder

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "DELIMITERS",
    "CsvDecoder",
    "ParsedRecord",
    "Record",
    "RecordSkipper",
    "count_breaks",
    "normalize_delimiter",
    "parse_record",
    "sniff_delimiter",
]

#: Delimiters recognised by :func:`sniff_delimiter`, in order of preference on a tie.
DELIMITERS = (b",", b";", b"\t", b"|")
#: Default bound on one record: far above any valid contact row (about 10 KB at most).
DEFAULT_MAX_RECORD_BYTES = 1024 * 1024

_CR = 0x0D
_LF = 0x0A
_QUOTE = 0x22
_BREAK = re.compile(rb"[\r\n]")


def count_breaks(data: bytes) -> int:
    """Physical line breaks in ``data``: each CR, LF and CRLF counts once."""
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


def normalize_delimiter(delimiter: str | bytes | None) -> bytes | None:
    """The delimiter as one byte, or None to sniff it.

    Raises:
        ConfigError: not a single ASCII character, or a quote, CR or LF.
    """
    if delimiter is None:
        return None
    raw = delimiter.encode("ascii", "replace") if isinstance(delimiter, str) else delimiter
    if raw == b"\\t":
        raw = b"\t"
    if len(raw) != 1 or raw in (b'"', b"\r", b"\n") or not raw.isascii() or raw == b"?":
        raise ConfigError(f"the delimiter must be one ASCII character, not {delimiter!r}")
    return raw


class _Dialect:
    """Compiled patterns for one delimiter."""

    def __init__(self, delimiter: bytes) -> None:
        self.delimiter = delimiter
        self.code = delimiter[0]
        d = re.escape(delimiter)
        # A quoted field: runs of non-quotes or doubled quotes, then the closing quote.
        self.quoted = re.compile(rb'"((?:[^"]++|"")*+)"')
        # Characters up to the next delimiter or line break (quotes included: lenient).
        self.plain = re.compile(rb"[^" + d + rb"\r\n]*+")
        self.stop = re.compile(rb"[" + d + rb"\r\n]")


@lru_cache(maxsize=16)
def _dialect(delimiter: bytes) -> _Dialect:
    return _Dialect(delimiter)


class ParsedRecord(msgspec.Struct, frozen=True):
    """One record as :func:`parse_record` found it.

    Attributes:
        fields: the field values, unquoted, as bytes (``[]`` for an empty line).
        end: the buffer position just past the record's line break (or the end of input).
        breaks: physical line breaks the record spans, its own terminator included.
        unterminated: a quoted field was still open at the end of input.
        lenient: the record used the stdlib's lenient quoting (a quote inside an unquoted
            field, or characters after a closing quote); RFC 4180 records never do.
    """

    fields: list[bytes]
    end: int
    breaks: int
    unterminated: bool = False
    lenient: bool = False


def parse_record(buf: bytes, pos: int, delimiter: bytes, *, final: bool) -> ParsedRecord | None:
    """Parse the record that starts at ``buf[pos]``.

    Args:
        buf: UTF-8 (or any ASCII-compatible) bytes.
        pos: where the record starts; ``pos < len(buf)``.
        delimiter: the one-byte delimiter.
        final: no more input will follow ``buf``.

    Returns:
        The record, or None when ``buf`` ends before the record does and more input may come.
    """
    dialect = _dialect(delimiter)
    quoted_match = dialect.quoted.match
    plain_match = dialect.plain.match
    delim = dialect.code
    n = len(buf)
    fields: list[bytes] = []
    breaks = 0
    lenient = False
    p = pos
    first = buf[p]
    if first in (_LF, _CR):
        return _terminate(buf, p, fields, breaks, final=final, lenient=False)
    while True:
        if p < n and buf[p] == _QUOTE:
            m = quoted_match(buf, p)
            if m is None or (m.end() == n and not final):
                if not final:
                    return None
                raw = buf[p + 1 :]
                fields.append(raw.replace(b'""', b'"'))
                return ParsedRecord(
                    fields, n, breaks + count_breaks(raw), unterminated=True, lenient=lenient
                )
            raw = m.group(1)
            value = raw.replace(b'""', b'"') if b'"' in raw else raw
            if b"\r" in raw or b"\n" in raw:
                breaks += count_breaks(raw)
            p = m.end()
            after = plain_match(buf, p)
            t = after.end() if after is not None else p
            if t > p:
                value += buf[p:t]
                lenient = True
                p = t
        else:
            plain = plain_match(buf, p)
            t = plain.end() if plain is not None else p
            value = buf[p:t]
            if b'"' in value:
                lenient = True
            p = t
        fields.append(value)
        if p >= n:
            if not final:
                return None
            return ParsedRecord(fields, n, breaks, lenient=lenient)
        if buf[p] == delim:
            p += 1
            continue
        return _terminate(buf, p, fields, breaks, final=final, lenient=lenient)


def _terminate(
    buf: bytes, p: int, fields: list[bytes], breaks: int, *, final: bool, lenient: bool
) -> ParsedRecord | None:
    """Finish a record at the line break at ``buf[p]``."""
    if buf[p] == _LF:
        return ParsedRecord(fields, p + 1, breaks + 1, lenient=lenient)
    if p + 1 < len(buf):
        end = p + 2 if buf[p + 1] == _LF else p + 1
        return ParsedRecord(fields, end, breaks + 1, lenient=lenient)
    if final:
        return ParsedRecord(fields, p + 1, breaks + 1, lenient=lenient)
    return None  # a CR at the end of the buffer: an LF may follow


def sniff_delimiter(first_record: bytes) -> bytes:
    """The delimiter of a file from its first record (the header).

    Counts commas, semicolons, tabs and pipes outside quoted sections; the most frequent
    wins, ties going to the earlier one in :data:`DELIMITERS`; a comma when there is none.
    """
    outside = re.sub(rb'"(?:[^"]|"")*"?', b"", first_record)
    best, best_count = b",", 0
    for candidate in DELIMITERS:
        count = outside.count(candidate)
        if count > best_count:
            best, best_count = candidate, count
    return best


# -- skipping records too long to buffer ------------------------------------------------------

_START, _IN_FIELD, _IN_QUOTED, _QUOTE_IN_QUOTED, _CR_SEEN = range(5)


class RecordSkipper:
    """Find the end of a record without keeping it: the stdlib state machine, streamed.

    Used for records longer than the buffering bound. Fed the record from its first byte,
    piece by piece, it tracks quoting, counts line breaks and fields, and says where the
    record ends.

    Args:
        delimiter: the one-byte delimiter.
    """

    def __init__(self, delimiter: bytes) -> None:
        self._dialect = _dialect(delimiter)
        self._state = _START
        self._cr_in_quotes = False  # the last quoted byte seen was a CR (CRLF across pieces)
        self.breaks = 0
        """Line breaks seen so far, the terminator included once the record has ended."""
        self.field = 0
        """The 0-based index of the field being read."""

    def feed(self, data: bytes, *, final: bool) -> int | None:
        """Consume the next piece of the record.

        Args:
            data: the next bytes.
            final: no more input follows ``data``.

        Returns:
            The index in ``data`` just past the record's end, or None when it goes on.
        """
        delim = self._dialect.code
        stop = self._dialect.stop.search
        n = len(data)
        i = 0
        while i < n:
            state = self._state
            if state == _IN_QUOTED:
                j = data.find(b'"', i)
                segment = data[i : j if j >= 0 else n]
                if segment:
                    breaks = count_breaks(segment)
                    if self._cr_in_quotes and segment[0] == _LF:
                        breaks -= 1
                    self.breaks += breaks
                    self._cr_in_quotes = segment[-1] == _CR
                if j < 0:
                    return self._end_of(n, final)
                self._cr_in_quotes = False
                self._state = _QUOTE_IN_QUOTED
                i = j + 1
            elif state == _QUOTE_IN_QUOTED:
                c = data[i]
                if c == _QUOTE:
                    self._state = _IN_QUOTED
                    i += 1
                elif c == delim:
                    self.field += 1
                    self._state = _START
                    i += 1
                elif c == _LF:
                    self.breaks += 1
                    return i + 1
                elif c == _CR:
                    self._state = _CR_SEEN
                    i += 1
                else:
                    self._state = _IN_FIELD
                    i += 1
            elif state == _CR_SEEN:
                self.breaks += 1
                return i + 1 if data[i] == _LF else i
            else:
                if state == _START and data[i] == _QUOTE:
                    self._state = _IN_QUOTED
                    i += 1
                    continue
                m = stop(data, i)
                if m is None:
                    self._state = _IN_FIELD
                    return self._end_of(n, final)
                i = m.start()
                c = data[i]
                if c == delim:
                    self.field += 1
                    self._state = _START
                    i += 1
                elif c == _LF:
                    self.breaks += 1
                    return i + 1
                else:
                    self._state = _CR_SEEN
                    i += 1
        return self._end_of(n, final)

    def _end_of(self, n: int, final: bool) -> int | None:
        if not final:
            return None
        if self._state == _CR_SEEN:
            self.breaks += 1
        return n


# -- the public decoder -----------------------------------------------------------------------


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """One CSV record and where it came from.

    Attributes:
        line: the physical line where the record starts (1-based).
        start_offset: its first byte in the source.
        end_offset: one past its last byte, line break included.
        fields: the values, as the stdlib ``csv.reader`` returns them (``()`` for an empty
            line).
        error: why the record could not be read faithfully (not UTF-8 in the chosen
            encoding, longer than the bound, a quoted field still open at the end of the
            input), or None. With an error, ``fields`` holds what could be read, undecodable
            bytes replaced by U+FFFD.
    """

    line: int
    start_offset: int
    end_offset: int
    fields: tuple[str, ...]
    error: str | None = None


def decode_fields(fields: list[bytes]) -> tuple[tuple[str, ...], bool]:
    """Decode UTF-8 field values; the flag is False when one was not valid UTF-8."""
    try:
        return tuple(value.decode("utf-8") for value in fields), True
    except UnicodeDecodeError:
        return tuple(value.decode("utf-8", "replace") for value in fields), False


class CsvDecoder:
    """Incremental CSV reader: bytes in, :class:`Record` out.

    Args:
        encoding: the source encoding, or None to sniff a byte-order mark (else UTF-8).
        delimiter: one character, or None to sniff it from the first record
            (:func:`sniff_delimiter`).
        max_record_bytes: records longer than this are not buffered; they come out with
            ``error`` set and no fields.

    Raises:
        ConfigError: an unusable encoding or delimiter.
    """

    def __init__(
        self,
        *,
        encoding: str | None = None,
        delimiter: str | bytes | None = None,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> None:
        if max_record_bytes < 1:
            raise ConfigError("max_record_bytes must be positive")
        self._text = Transcoder(encoding)
        self._delimiter = normalize_delimiter(delimiter)
        self._max = max_record_bytes
        self._buf = b""
        self._line = 1
        self._offset = 0  # source offset of _buf[0]
        self._started = False
        self._skipper: RecordSkipper | None = None
        self._skip_line = 0
        self._skip_start = 0
        self._skip_reason = ""
        self._skip_len = 0  # source bytes of the skipped record so far
        self._waiting = False  # the buffer holds a partial record awaiting a line break

    @property
    def delimiter(self) -> str | None:
        """The delimiter in use (None until sniffed)."""
        return None if self._delimiter is None else self._delimiter.decode("ascii")

    @property
    def encoding(self) -> str:
        """The source encoding in use."""
        return self._text.encoding

    def decode(self, data: bytes) -> list[Record]:
        """Read the next piece of input.

        Args:
            data: the next bytes of the source.

        Returns:
            The records completed by this piece, in order.
        """
        return self._run(self._text.decode(data), final=False)

    def flush(self) -> list[Record]:
        """Read what is left at the end of the input.

        Returns:
            The last records.
        """
        return self._run(self._text.flush(), final=True)

    def _run(self, data: bytes, *, final: bool) -> list[Record]:
        if not self._started and (data or final):
            self._started = True
            self._offset = self._text.bom_length
        out: list[Record] = []
        if self._skipper is not None:
            data = self._skip(data, final, out)
            if self._skipper is not None:
                return out
        if (
            self._waiting
            and not final
            and self._delimiter is not None
            and _BREAK.search(data) is None
        ):
            self._buf += data  # the pending record cannot end without a line break
            self._check_size(final, out)
            return out
        buf = self._buf + data
        pos = 0
        if self._delimiter is None:
            if not buf:
                return out
            first = _first_record_extent(buf, final)
            if first is None and len(buf) <= self._max:
                self._buf = buf
                self._waiting = True
                return out
            self._delimiter = sniff_delimiter(buf[: first if first is not None else self._max])
        delimiter = self._delimiter
        n = len(buf)
        while pos < n:
            parsed = parse_record(buf, pos, delimiter, final=final)
            if parsed is None:
                break
            out.append(self._record(buf, pos, parsed))
            pos = parsed.end
        self._buf = buf[pos:]
        self._waiting = bool(self._buf)
        self._check_size(final, out)
        return out

    def _record(self, buf: bytes, pos: int, parsed: ParsedRecord) -> Record:
        raw = buf[pos : parsed.end]
        size = self._text.source_length(raw)
        error = None
        fields: tuple[str, ...] = ()
        if len(raw) > self._max:
            assert self._delimiter is not None
            error = oversized_reason(raw[: self._max + 1], self._delimiter, self._max)
        else:
            fields, ok = decode_fields(parsed.fields)
            if not ok:
                error = f"the record is not valid {self._text.encoding} text"
            elif parsed.unterminated:
                error = "a quoted field is not closed before the end of the input"
        record = Record(
            line=self._line,
            start_offset=self._offset,
            end_offset=self._offset + size,
            fields=fields,
            error=error,
        )
        self._line += parsed.breaks
        self._offset += size
        return record

    def _check_size(self, final: bool, out: list[Record]) -> None:
        """Start skipping when the pending partial record outgrows the bound."""
        if len(self._buf) <= self._max or final:
            return
        assert self._delimiter is not None
        self._skipper = RecordSkipper(self._delimiter)
        self._skip_line = self._line
        self._skip_start = self._offset
        self._skip_len = 0
        self._skip_reason = oversized_reason(self._buf[: self._max + 1], self._delimiter, self._max)
        data, self._buf = self._buf, b""
        self._waiting = False
        rest = self._skip(data, final, out)
        if rest:
            out.extend(self._run(rest, final=final))

    def _skip(self, data: bytes, final: bool, out: list[Record]) -> bytes:
        """Feed the skipper; when the record ends, report it and return the bytes after it."""
        skipper = self._skipper
        assert skipper is not None
        end = skipper.feed(data, final=final)
        consumed = data if end is None else data[:end]
        self._skip_len += self._text.source_length(consumed)
        if end is None:
            return b""
        self._skipper = None
        out.append(
            Record(
                line=self._skip_line,
                start_offset=self._skip_start,
                end_offset=self._skip_start + self._skip_len,
                fields=(),
                error=self._skip_reason,
            )
        )
        self._line = self._skip_line + skipper.breaks
        self._offset = self._skip_start + self._skip_len
        return data[end:]


def oversized_field(head: bytes, delimiter: bytes) -> int:
    """The 0-based index of the field being read at the last byte of ``head``.

    ``head`` is the first bytes of a record that is too long; the answer does not depend on
    how the record was fed, so the report is the same for every split of the input.
    """
    skipper = RecordSkipper(delimiter)
    skipper.feed(head[:-1], final=False)
    return skipper.field


def oversized_reason(head: bytes, delimiter: bytes, limit: int) -> str:
    """The error text of a record longer than ``limit`` bytes; ``head`` is its first
    ``limit + 1`` bytes."""
    field = oversized_field(head, delimiter)
    return f"the record is longer than {limit} bytes (field {field + 1} reaches the limit)"


def _first_record_extent(buf: bytes, final: bool) -> int | None:
    """Where the first record ends if it were comma-separated (quotes decide, not commas)."""
    parsed = parse_record(buf, 0, b",", final=final)
    return None if parsed is None else parsed.end
