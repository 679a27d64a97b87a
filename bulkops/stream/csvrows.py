"""The CSV row source of the import pipeline: UTF-8 in; rejections and chunks out.

:class:`CsvRows` is a :class:`~bulkops.stream.sources.RowSource`. It reads the header
(an Excel ``sep=`` line, blank lines before it, the delimiter sniffed), then the records,
without a Python step per field and, for the usual row, none per record either
(benchmarks/bench_stream.py measures it against a bare ``csv.reader``; see
benchmarks/README.md):

* Input is cut at its last line break, then into regions of about 96 KiB of whole lines.
* A region with few quotes is split with ``bytes.split``; lines without a quote go through
  one compiled pattern (:attr:`RowRules.plain <bulkops.stream.rowcheck.RowRules.plain>`)
  in a single ``findall``, which yields every line's email when the line certainly passes
  the exact check; lines holding quotes through a second ``findall`` of the single-line
  quoted pattern.
* A region dense in quotes (exports that quote ``"Blue Sky, Inc."`` or ``"Chicago, IL"``
  on most lines) is read record by record in one ``findall`` of
  :func:`~bulkops.stream.validate.record_pattern`: strict RFC 4180 records, multi-line ones
  included, each with its email; the line each record starts on is counted in C.
* Only what the patterns refuse is read and checked one record at a time
  (:func:`~bulkops.stream.csv.parse_record`, as the stdlib reads it, and
  :meth:`RowRules.check <bulkops.stream.rowcheck.RowRules.check>`). When that reading ends a
  refused record elsewhere than the dense pattern did (stray quotes), the rest of the
  region is read line by line.
* Control characters, UTF-8 and the record bound are checked on the whole region at once,
  and emails lower-cased in bulk. When the delimiter is a comma and every column is sent,
  an accepted row travels as its original bytes; otherwise it is rewritten.
* Source offsets are kept per run of records (their lengths) and summed only for chunk ends
  and dropped duplicates (:class:`~bulkops.stream.runs.LineIndex`).

Invariants:

* **Any split, same result**: which check accepts a row (a fast pattern or the exact one)
  depends on the row alone, and every path gives an accepted row the same ``data`` line and
  key, so events do not depend on how the input was cut or on which path a region took.
* **O(bytes fed), constant memory**: nothing is parsed twice except a partial record when a
  line break arrives; a record longer than ``max_record_bytes`` is skipped without being
  held (:class:`~bulkops.stream.csv.RecordSkipper`) and rejected.

Pure: no IO, no clock.
"""

from __future__ import annotations

import operator
import re
from bisect import bisect_right
from itertools import accumulate, chain, compress, repeat

from bulkops.errors import InputError
from bulkops.stream.chunking import Chunker, RowBatch
from bulkops.stream.csv import (
    ParsedRecord,
    RecordSkipper,
    count_breaks,
    normalize_delimiter,
    parse_record,
    sniff_delimiter,
)
from bulkops.stream.header import ColumnMap, map_header
from bulkops.stream.records import ChunkKind, Event, Header, PipelineStatistics, Rejected
from bulkops.stream.rowcheck import Problem, Row, RowRules
from bulkops.stream.runs import LineIndex, Run
from bulkops.stream.sources import SourceOptions, Tally
from bulkops.stream.text import Transcoder
from bulkops.stream.validate import NOT_CONTROL, fast_email_ok
from bulkops.wire.columns import EMAIL_MAX_LENGTH

__all__ = ["CsvRows"]

#: Lines are checked in regions of about this many bytes (fits the CPU caches).
_REGION = 96 * 1024
#: A region is read record by record when its first bytes hold more than one quote per
#: this many lines (any choice gives the same rows: only the speed differs).
DENSE_QUOTES = 1
_CR = 0x0D
_LF = 0x0A
_one_more = (1).__add__
_first = operator.itemgetter(0)
_second = operator.itemgetter(1)
_third = operator.itemgetter(2)
_BARE_CR = re.compile(rb"\r(?!\n)")


class CsvRows:
    """The CSV rows of an input (a :class:`~bulkops.stream.sources.RowSource`).

    Args:
        options: how to read, validate and chunk.
        text: the pipeline's transcoder (it feeds this source UTF-8).
    """

    def __init__(self, options: SourceOptions, text: Transcoder) -> None:
        self._options = options
        self._text = text
        self._delimiter = normalize_delimiter(options.read.delimiter)
        self._max_record = options.read.max_record_bytes
        self._buf = b""
        self._line = 1
        self._src = 0  # source offset of _buf[0] (passthrough) or of _buf[_src_pos]
        self._src_pos = 0
        self._started = False
        self._waiting = False
        self._virtual = False  # a LF was appended at the end of the input
        self._eof = 0  # source length, known at the end
        self._rules: RowRules | None = None
        self._chunker: Chunker | None = None
        self._index = LineIndex()
        self._sized = False
        self._skipper: RecordSkipper | None = None
        self._skip_line = 0
        self._skip_start = 0
        self._skip_field: str | None = None
        self._skip_reason = ""
        self._tally = Tally()

    # -- statistics -----------------------------------------------------------------------

    def statistics(self, bytes_in: int) -> PipelineStatistics:
        """Counters so far."""
        return self._tally.statistics(bytes_in, self._chunker)

    # -- feeding --------------------------------------------------------------------------

    def feed(self, data: bytes, events: list[Event]) -> None:
        """Read the next piece of the input (UTF-8)."""
        self._feed(data, False, events)

    def flush(self, events: list[Event]) -> None:
        """Read the end of the input; emit the last chunks."""
        self._feed(b"", True, events)

    def _feed(self, data: bytes, final: bool, events: list[Event]) -> None:
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
            and self._rules is not None
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
        if self._rules is None:
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
        if hint is None or self._sized or self._src < (1 << 20) or self._tally.records < 100:
            return
        self._sized = True
        assert self._chunker is not None
        self._chunker.table.reserve(int(hint / self._src * self._tally.records * 1.05))

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
            mapping=opts.read.mapping,
            ignore_unknown=opts.read.ignore_unknown,
            kind=opts.kind,
            line=self._line,
        )
        self._setup(columns, delimiter, parsed.breaks, events)
        self._line += parsed.breaks
        self._tally.records = 0
        return parsed.end

    def _setup(
        self, columns: ColumnMap, delimiter: bytes, breaks: int, events: list[Event]
    ) -> None:
        """The header is read: the rules, the chunker and the Header event."""
        rules = RowRules(
            columns,
            delimiter,
            remove=self._options.kind is ChunkKind.REMOVE,
            encoding=self._text.encoding,
            max_record=self._max_record,
        )
        self._rules = rules
        self._chunker = Chunker(
            self._options.chunk_options(),
            header=rules.header_line,
            columns=rules.sent,
            locate=self._index.locate,
            forget=self._index.forget,
            capacity=self._options.capacity,
        )
        events.append(
            Header(
                sources=columns.sources,
                columns=tuple(c.name if c is not None else None for c in columns.columns),
                sent=rules.sent,
                delimiter=delimiter.decode("ascii"),
                encoding=self._text.encoding,
                line_count=breaks,
            )
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
            self._tally.records += 1
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
        """The complete lines ``buf[a:b]`` (LF or CRLF ends), checked in bulk; what the fast
        patterns refuse, one record at a time. Returns where the records handled end (past
        ``b`` when a quoted record runs on; before it when such a record is incomplete)."""
        region = buf[a:b]
        rules = self._rules
        assert rules is not None
        # Dense in quotes (judged on its first bytes: any choice gives the same rows)?
        if (
            dense
            and rules.records is not None
            and region.count(b'"', 0, 8192) * DENSE_QUOTES > region.count(b"\n", 0, 8192)
        ):
            return self._records_region(buf, a, b, region, final, batch, events)
        lines = region.split(b"\n")
        lines.pop()
        run = self._run_of(buf, a, b, lines)
        qlines = (
            list(compress(range(len(lines)), map(bytes.__contains__, lines, repeat(b'"'))))
            if b'"' in region
            else []
        )
        emails, blob = self._screen(region, lines, self._scan(region, lines, qlines))
        run.keys = blob.lower().split(b"\n")
        mode = rules.mode
        if mode == "raw":
            run.outs = lines
        elif mode == "email":
            run.outs = emails
        elif mode == "delimiter" and b"," not in region:
            run.outs = region.replace(rules.delimiter, b",").split(b"\n")
            run.outs.pop()
        else:
            rewrite = rules.rewrite
            run.outs = [rewrite(x) if e else b"" for e, x in zip(emails, lines, strict=True)]
        if b"" not in emails:
            return self._commit(buf, run, batch)
        return self._refused_lines(buf, run, emails, set(qlines), final, batch, events)

    def _run_of(self, buf: bytes, a: int, b: int, units: list[bytes]) -> Run:
        """A run of records (or lines) ``units`` from ``buf[a]`` to ``buf[b]``."""
        utf8 = self._text.passthrough
        if utf8:
            sizes = list(map(_one_more, map(len, units)))
        else:
            size = self._text.source_length
            sizes = [size(x + b"\n") for x in units]
        return Run(a, b, self._line, self._src_at(buf, a), units, sizes, utf8=utf8)

    def _commit(self, buf: bytes, run: Run, batch: RowBatch, keep: bytearray | None = None) -> int:
        """Hand the run's rows to the batch (those ``keep`` marks, else all of them), its
        records to the line index; move on to where it ends."""
        upto = run.upto
        starts = run.starts
        self._index.add(
            run.line0, run.src0, run.sizes[:upto], None if starts is None else starts[:upto]
        )
        numbers = run.numbers()
        if keep is None:
            batch.outs += run.outs
            batch.emails += run.keys
            batch.lines.extend(numbers[:upto])
        else:
            batch.outs += compress(run.outs, keep)
            batch.emails += compress(run.keys, keep)
            batch.lines.extend(compress(numbers, keep))
        self._line = run.line_after
        self._tally.records += run.records
        if not self._text.passthrough:
            self._source_offset(buf, run.stop)
        return run.stop

    def _refused_lines(
        self,
        buf: bytes,
        run: Run,
        emails: list[bytes],
        quote_set: set[int],
        final: bool,
        batch: RowBatch,
        events: list[Event],
    ) -> int:
        """The lines the fast patterns refused, read and checked one by one: a quote-free
        line alone, a line holding quotes as the record that starts there (it may take the
        next lines with it, or run past the region)."""
        lines = run.units
        n = len(lines)
        outs = run.outs = list(run.outs)
        keys = run.keys
        keep = bytearray(b"\x01") * n
        skip_to = 0  # lines before it belong to a record already handled
        for i in compress(range(n), map(operator.not_, emails)):
            if i < skip_to:
                continue
            offset, at = run.seek(i)
            number = run.line0 + i
            if i not in quote_set:
                end = self._end_offset(offset + run.sizes[i])
                row = self._outcome(self._rules.check_line(lines[i]), number, offset, end, events)  # type: ignore[union-attr]
                if row is None:
                    keep[i] = 0
                else:
                    outs[i], keys[i] = row
                continue
            found = self._record_at(buf, at, final, number, offset, events)
            if found is None:  # runs past the input so far: stop before it
                run.stop_at(i, at, number)
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
                run.records -= j - i - 1  # lines inside a record are no records
                skip_to = i + breaks
                if i + breaks > n:  # the record runs past the region
                    run.stop, run.line_after = end, number + breaks
                    break
        return self._commit(buf, run, batch, keep)

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
        included, with their emails; the line each starts on is counted in C. The records
        it refuses are read exactly, one by one (:meth:`_refused_records`)."""
        rules = self._rules
        assert rules is not None
        assert rules.records is not None
        found = rules.records.findall(buf, a, b)
        recs: list[bytes] = list(map(_first, found))
        emails: list[bytes] = list(map(_third, found))
        del found
        run = self._run_of(buf, a, b, recs)
        lines = region.count(b"\n")
        if lines != len(recs):  # some span several lines
            run.starts = _record_lines(recs, run.line0)
        run.line_after = run.line0 + lines
        emails, blob = self._screen(region, recs, emails)
        run.keys = blob.lower().split(b"\n")
        run.outs = recs if rules.mode == "raw" else emails
        if b"" not in emails:
            return self._commit(buf, run, batch)
        return self._refused_records(buf, run, emails, final, batch, events)

    def _refused_records(
        self,
        buf: bytes,
        run: Run,
        emails: list[bytes],
        final: bool,
        batch: RowBatch,
        events: list[Event],
    ) -> int:
        """The records the dense pattern refused, read and checked one by one. When the
        exact reading ends one elsewhere than the pattern did (stray quotes), the records
        after it are dropped and the rest of the region is read line by line."""
        recs = run.units
        n = len(recs)
        outs = run.outs = list(run.outs)
        keys = run.keys
        numbers = run.numbers()
        keep = bytearray(b"\x01") * n
        for k in compress(range(n), map(operator.not_, emails)):
            offset, at = run.seek(k)
            number = numbers[k]
            found = self._record_at(buf, at, final, number, offset, events)
            if found is None:  # runs past the input so far: stop before it
                run.stop_at(k, at, number)
                keep[k:] = bytes(n - k)
                break
            end, breaks, end_offset, row = found
            if row is None:
                keep[k] = 0
            else:
                outs[k], keys[k] = row
            if end != at + len(recs[k]) + 1:  # the exact reading ends it elsewhere
                self._index.end_at(number, end_offset)
                run.stop_at(k + 1, end, number + breaks)
                keep[k + 1 :] = bytes(n - k - 1)
                stop = self._commit(buf, run, batch, keep)
                if stop >= run.b:
                    return stop
                return self._region(buf, stop, run.b, final, batch, events, dense=False)
        return self._commit(buf, run, batch, keep)

    def _scan(self, region: bytes, lines: list[bytes], qlines: list[int]) -> list[bytes]:
        """The fast patterns' verdict per line: the email, or ``b""`` (check exactly).

        Lines without quotes go through the plain pattern in one ``findall``; lines holding
        a quote are blanked for it (a quoted field spanning lines cannot mislead it) and,
        when rows may travel as they are, go through the single-line quoted pattern in a
        second ``findall``. Both verdicts depend on the line alone."""
        rules = self._rules
        assert rules is not None
        pattern = rules.plain
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
            if rules.mode in ("raw", "email"):
                quoted = rules.quoted_lines.findall(
                    b"\n".join(map(lines.__getitem__, qlines)) + b"\n"
                )
                for q, email in zip(qlines, map(_second, quoted), strict=True):
                    emails[q] = email
            else:
                for q in qlines:
                    emails[q] = b""
        return emails

    def _outcome(
        self, result: Row | Problem | None, number: int, start: int, end: int, events: list[Event]
    ) -> Row | None:
        """Count and report what the exact check decided; the row when it is accepted."""
        if result is None:
            self._tally.blank += 1
            return None
        if isinstance(result, Problem):
            self._reject(result, number, start, end, events)
            return None
        return result

    def _reject(
        self, problem: Problem, number: int, start: int, end: int, events: list[Event]
    ) -> None:
        self._tally.rejected += 1
        events.append(
            Rejected(
                line=number,
                start_offset=start,
                end_offset=self._end_offset(end),
                field=problem.field,
                reason=problem.reason,
            )
        )

    def _record_at(
        self, buf: bytes, pos: int, final: bool, number: int, start: int, events: list[Event]
    ) -> tuple[int, int, int, Row | None] | None:
        """Read and check the record at ``pos`` (whatever it holds).

        Returns:
            ``(end, line breaks, end offset, row)`` where row is ``(data line, email key)``
            or None when the record is rejected or blank; None when it is incomplete.
        """
        rules = self._rules
        assert rules is not None
        m = rules.quoted.match(buf, pos)
        if m is not None:
            end = m.end()
            if end == len(buf) and buf[end - 1] == _CR and not final:
                return None
            record = m.group()
            email = m.group(2)
            if (
                rules.mode in ("raw", "email")
                and len(record) <= self._max_record
                and (record.isascii() or _is_utf8(record))
                and not record.translate(None, NOT_CONTROL)
                and fast_email_ok((email,))
            ):
                stop = self._end_offset(self._src_at(buf, end))
                out = record[:-1] if rules.mode == "raw" else email
                return end, count_breaks(record), stop, Row(out, email.lower())
        delimiter = self._delimiter
        assert delimiter is not None
        parsed = parse_record(buf, pos, delimiter, final=final)
        if parsed is None:
            return None
        if self._virtual and parsed.end == len(buf) and parsed.unterminated:
            again = parse_record(buf[:-1], pos, delimiter, final=True)
            assert again is not None
            # Its terminator is the LF added at the end: count it, as for every record.
            parsed = ParsedRecord(again.fields, len(buf), again.breaks + 1, True, again.lenient)
        end = parsed.end
        stop = self._src_at(buf, end)
        record = buf[pos:end]
        if len(record) > self._max_record:
            self._reject(rules.oversized(record), number, start, stop, events)
            return end, parsed.breaks, self._end_offset(stop), None
        if parsed.unterminated:
            self._tally.rejected += 1
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
        checked = rules.check(parsed.fields, raw, lenient=parsed.lenient, plain=plain)
        row = self._outcome(checked, number, start, stop, events)
        return end, parsed.breaks, self._end_offset(stop), row

    # -- records too long to hold ---------------------------------------------------------

    def _maybe_skip(self, final: bool, events: list[Event]) -> None:
        if final or len(self._buf) <= self._max_record or self._rules is None:
            return
        delimiter = self._delimiter
        assert delimiter is not None
        buf, self._buf = self._buf, b""
        self._waiting = False
        problem = self._rules.oversized(buf)
        self._skip_field = problem.field
        self._skip_reason = problem.reason
        self._skip_line = self._line
        self._skip_start = self._source_offset(buf, 0)
        self._skipper = RecordSkipper(delimiter)
        rest = self._skip(buf, final, events)
        if rest:
            self._feed(rest, final, events)

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
        self._tally.records += 1
        self._tally.rejected += 1
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


def _record_lines(recs: list[bytes], line0: int) -> list[int]:
    """The line each record starts on, and the line after the last, for consecutive
    records (without their final LF) of which some span several lines.

    The records' own line breaks are found in one joined copy (a few per region) and placed
    by bisecting the records' ends, so the list is built from a few ``range`` pieces in C:
    counting each record's LFs (``bytes.count`` mapped over them) cost ~2.4x as much.
    """
    joined = b"".join(recs)
    ends = list(accumulate(map(len, recs)))
    pieces: list[range] = []
    first = extra = 0  # the next piece's first record; LFs inside records so far
    p = joined.find(b"\n")
    while p >= 0:
        k = bisect_right(ends, p)  # the record holding this LF
        pieces.append(range(line0 + first + extra, line0 + k + 1 + extra))
        first = k + 1
        while p >= 0 and p < ends[k]:  # this record's LFs
            extra += 1
            p = joined.find(b"\n", p + 1)
    pieces.append(range(line0 + first + extra, line0 + len(recs) + 1 + extra))
    return list(chain.from_iterable(pieces))


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
