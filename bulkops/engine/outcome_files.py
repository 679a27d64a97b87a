"""An import's outcome files: ``rejected.csv``, ``duplicates.csv``, ``failed.csv`` and
``applied.csv``, written after the run from the journal and the input.

The journal keeps each outcome's line (and, for rows never sent, its byte range), not the
row: the files are written by reading the input once more and joining it, in line order,
with the journal's outcomes, so memory stays O(1) in the number of outcomes. Rows are
copied as written (their own bytes, under the input's own header), never with U+FFFD.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from itertools import accumulate, repeat
from pathlib import Path
from typing import Any, NamedTuple

from bulkops.engine.chunks import ChunkState
from bulkops.engine.journal import Journal, OutcomeRecord
from bulkops.engine.ledger import write_atomically, write_outcome_file
from bulkops.engine.planner import PlannedChunk, Planner, chunk_rows, csv_reader, replay
from bulkops.stream.options import ChunkLimits, ReadOptions
from bulkops.stream.records import Header

__all__ = ["Span", "write_outcome_files"]

#: Encodings (codecs names) whose CR and LF are the single ASCII bytes and never part of
#: another character: a record's lines can be found in the raw bytes.
_ASCII_BREAKS = frozenset({"utf-8", "ascii", "cp1252", "latin-1", "iso8859-1", "iso8859-15"})
#: A CR that does not start a CRLF (a line break of its own).
_BARE_CR = re.compile(rb"\r(?!\n)")
#: Line breaks are counted per this many bytes to find a record's line.
_COUNT_BLOCK = 4096


class Span(NamedTuple):
    """Where a chunk's rows are in the source: its first and last row's lines, and the
    byte range from its first row's first byte to one past its last row's last."""

    first_line: int
    last_line: int
    start_offset: int
    end_offset: int


def _plan_of(meta: dict[str, Any]) -> dict[str, Any]:
    """The planner's ``lists`` and ``kind`` for reading a run's input again, from its journal
    (the bodies are not sent again: a run without lists gets a stand-in)."""
    return {
        "lists": [item["uri"] for item in meta.get("lists") or []] or ["x"],
        "kind": "remove" if meta.get("command") == "remove" else "add",
    }


def _decoded(data: bytes, encoding: str) -> str:
    """A source record's text for an outcome file, keeping every byte of it.

    A record that is not valid in the file's encoding (a cp1252 row in a UTF-8 file: the
    reason it was rejected) is read as cp1252, else latin-1, never with U+FFFD: the row
    in rejected.csv can then be fixed and imported again.
    """
    for candidate in (encoding, "cp1252", "latin-1"):
        try:
            return data.decode(candidate)
        except UnicodeDecodeError:
            continue
    return data.decode(encoding, errors="replace")  # pragma: no cover - latin-1 decodes all


def _record_reader(source: Path, header: Header | None) -> Any:
    """A function reading one source record by its byte range into its fields."""
    encoding = header.encoding if header is not None else "utf-8"
    delimiter = header.delimiter if header is not None and header.delimiter else ","
    handle = source.open("rb")

    def read(start: int | None, end: int | None) -> list[str]:
        if start is None or end is None:
            return []
        handle.seek(start)
        raw = _decoded(handle.read(end - start), encoding)
        if header is not None and not header.delimiter:  # XML: the element as written
            return [raw.strip()]
        fields: list[str] = next(csv_reader(raw, delimiter), [])
        return fields

    read.close = handle.close  # type: ignore[attr-defined]
    return read


def write_outcome_files(
    journal: Journal,
    source: Path | None,
    read: ReadOptions,
    limits: ChunkLimits,
    *,
    write_applied: bool,
    header: Header | None = None,
    spans: Sequence[Span] | None = None,
) -> dict[str, str]:
    """Write ``rejected.csv``, ``duplicates.csv``, ``failed.csv`` (and ``applied.csv``).

    Rejected and duplicate rows are copied from the source by their byte ranges, under the
    input's own header. Failed and applied rows are written as they were sent (the
    canonical columns), taken from a replay of the input, since the journal keeps only
    their lines. Files are written only when they have rows (``applied.csv`` on request).
    A sent row replaced by a row of a later activity is found in its chunk's span of the
    source: ``spans`` (in line order) when given (a dry run keeps no chunks in the
    journal), else the journal's chunks.

    Returns:
        name -> path of each file written.
    """
    files: dict[str, str] = {}
    if source is None:
        return files
    meta = journal.meta()
    counts = journal.outcome_counts()
    run_dir = journal.run_dir
    if header is None and (counts["rejected"] or counts["duplicate"]):
        header = _header_of(source, read, limits, meta)
    sources = list(header.sources) if header is not None else []
    if header is not None and not header.delimiter:
        sources = ["record"]
    for kind, name in (("rejected", "rejected"), ("duplicate", "duplicates")):
        if not counts[kind]:
            continue
        reader = _record_reader(source, header)
        # Rows replaced by a row of a later activity were found after the run, by line:
        # their original rows are read from their chunks' byte ranges.
        later = (
            _rows_by_line(journal, source, read, limits, meta, header, spans)
            if kind == "duplicate"
            else {}
        )
        try:
            path = run_dir / f"{name}.csv"
            write_outcome_file(
                path,
                journal.outcomes(kind),
                header=sources,
                record_fields=lambda o, reader=reader, later=later: (
                    reader(o.start_offset, o.end_offset)
                    if o.start_offset is not None
                    else later.get(o.line, [])
                ),
            )
        finally:
            reader.close()
        files[name] = str(path)
    if counts["failed"] > 0 or write_applied:
        if header is None:
            header = _header_of(source, read, limits, meta)
        files.update(
            _write_sent_rows(
                journal, source, read, limits, meta, write_applied=write_applied, header=header
            )
        )
    return files


def _rows_by_line(
    journal: Journal,
    source: Path,
    read: ReadOptions,
    limits: ChunkLimits,
    meta: dict[str, Any],
    header: Header | None,
    spans: Sequence[Span] | None = None,
) -> dict[int, list[str]]:
    """The original fields of each duplicate that has no byte range (sent, then replaced by
    a row of a later activity), by line. Only those rows are kept: O(such rows)."""
    wanted = sorted({o.line for o in journal.outcomes("duplicate") if o.start_offset is None})
    found: dict[int, list[str]] = {}
    if not wanted or header is None:
        return found
    if header.delimiter:
        if spans is None:
            spans = [
                Span(c.first_line, c.last_line, c.start_offset, c.end_offset)
                for c in journal.chunks()
                if c.kind != "clear"
            ]
        for span in spans:
            # Chunks cover disjoint runs of lines: the wanted lines inside this one.
            lines = wanted[
                bisect_left(wanted, span.first_line) : bisect_right(wanted, span.last_line)
            ]
            if lines:
                found.update(_records_at(source, header, span, lines))
        return found
    # XML: the record as written is not kept by line; the row as it was sent stands for it.
    wanted_set = set(wanted)
    for event in replay(source, read, limits, **_plan_of(meta)):
        if isinstance(event, PlannedChunk) and not wanted_set.isdisjoint(event.record.lines):
            _sent_header, rows = chunk_rows(event.body, event.content_type)
            for line, row in zip(event.record.lines, rows, strict=True):
                if line in wanted_set:
                    found[line] = row
    return found


def _header_of(
    source: Path, read: ReadOptions, limits: ChunkLimits, meta: dict[str, Any]
) -> Header | None:
    planner = Planner(read, limits, **_plan_of(meta), path=str(source))
    with source.open("rb") as handle:
        while planner.header is None and (block := handle.read(1 << 16)):
            planner.decode(block)
        if planner.header is None:  # a file shorter than the encoding's sample
            planner.flush()
    return planner.header


def _records_at(
    source: Path, header: Header, span: Span, lines: Sequence[int], *, block: int = _COUNT_BLOCK
) -> Iterator[tuple[int, list[str]]]:
    """The CSV records starting on ``lines`` (ascending) inside ``span``, with their lines.

    Only those records are parsed: the byte range is read once, its LFs counted per
    ``block`` bytes (in C), and each wanted line found from its block's count (a CR before
    a LF stays with its line); each record is parsed from the start of its line. A range
    with a lone CR (which ends a line too) is read record by record instead, as is one in
    an encoding whose line breaks are not the ASCII bytes (UTF-16).
    """
    with source.open("rb") as handle:
        handle.seek(span.start_offset)
        data = handle.read(span.end_offset - span.start_offset)
    encoding, delimiter = header.encoding, header.delimiter
    if codecs.lookup(encoding).name not in _ASCII_BREAKS or _BARE_CR.search(data):
        wanted = set(lines)
        text = data.decode(encoding, errors="replace")
        for line, fields in _records_of(text, delimiter, span.first_line):
            if line in wanted:
                yield line, fields
        return
    n = len(data)
    if n >= csv.field_size_limit():  # as csv_reader: any field of the range fits
        csv.field_size_limit(n + 1)
    # before[j]: LFs in data[: j * block]
    before = list(
        accumulate(
            map(data.count, repeat(b"\n"), range(0, n, block), range(block, n + block, block)),
            initial=0,
        )
    )

    def text_from(pos: int) -> Iterator[str]:
        while pos < n:  # each line with its LF (the last one given one, as split lines)
            end = data.find(b"\n", pos) + 1
            yield (data[pos:end] if end else data[pos:] + b"\n").decode(encoding, "replace")
            pos = end or n

    for line in lines:
        k = line - span.first_line  # LFs before the line
        if k < 0 or k > before[-1]:
            continue
        j = bisect_left(before, k) - 1 if k else 0  # the k-th LF is in block j
        pos = j * block - 1
        for _ in range(k - before[j] if k else 0):
            pos = data.find(b"\n", pos + 1)
        yield line, next(csv.reader(text_from(pos + 1), delimiter=delimiter), [])


def _records_in(
    source: Path, header: Header, start: int, end: int, first_line: int
) -> Iterator[tuple[int, list[str]]]:
    """The CSV records between two byte offsets, each with the physical line it starts on.

    Lines are counted the way the stream counts them (CR, LF and CRLF each end one), so
    they match the journal's.
    """
    with source.open("rb") as handle:
        handle.seek(start)
        text = handle.read(end - start).decode(header.encoding, errors="replace")
    yield from _records_of(text, header.delimiter, first_line)


def _records_of(text: str, delimiter: str, first_line: int) -> Iterator[tuple[int, list[str]]]:
    """The CSV records of ``text``, each with the physical line it starts on."""
    reader = csv_reader(text, delimiter)
    consumed = 0
    for fields in reader:
        yield first_line + consumed, fields
        consumed = reader.line_num


def _write_sent_rows(
    journal: Journal,
    source: Path,
    read: ReadOptions,
    limits: ChunkLimits,
    meta: dict[str, Any],
    *,
    write_applied: bool,
    header: Header | None,
) -> dict[str, str]:
    """``failed.csv`` and ``applied.csv``: CSV rows copied from the source under its own
    header (each chunk's byte range is read once); XML rows as they were sent."""
    done = [c for c in journal.chunks(ChunkState.DONE) if c.kind != "clear"]
    failed: dict[int, OutcomeRecord] = {o.line: o for o in journal.outcomes("failed")}
    not_applied = {o.line for kind in ("rejected", "duplicate") for o in journal.outcomes(kind)}
    run_dir = journal.run_dir
    failed_rows: list[bytes] = []
    applied_rows: list[bytes] = []
    columns: list[str] = []
    if header is not None and header.delimiter:
        columns = list(header.sources)
        for chunk in done:
            complete = chunk.status == "COMPLETE"
            wanted = {
                line
                for line in chunk.lines
                if line not in not_applied and (line in failed or (write_applied and complete))
            }
            if not wanted:
                continue
            for line, fields in _records_in(
                source, header, chunk.start_offset, chunk.end_offset, chunk.first_line
            ):
                if line not in wanted:
                    continue
                outcome = failed.get(line)
                if outcome is not None:
                    failed_rows.append(_csv_row([line, outcome.reason, "", "", *fields]))
                else:
                    applied_rows.append(_csv_row([line, *fields]))
    else:
        by_seq = {c.seq: c for c in done}
        for event in replay(source, read, limits, **_plan_of(meta)):
            if not isinstance(event, PlannedChunk) or event.record.seq not in by_seq:
                continue
            complete = by_seq[event.record.seq].status == "COMPLETE"
            sent_header, rows = chunk_rows(event.body, event.content_type)
            columns = columns or sent_header
            for line, row in zip(event.record.lines, rows, strict=True):
                if line in not_applied:
                    continue
                outcome = failed.get(line)
                if outcome is not None:
                    failed_rows.append(_csv_row([line, outcome.reason, "", "", *row]))
                elif write_applied and complete:
                    applied_rows.append(_csv_row([line, *row]))
    files: dict[str, str] = {}
    if failed_rows:
        path = run_dir / "failed.csv"
        head = _csv_row(["line", "reason", "field", "replaced_by_line", *columns])
        write_atomically(path, [head, *failed_rows])
        files["failed"] = str(path)
    if write_applied:
        path = run_dir / "applied.csv"
        write_atomically(path, [_csv_row(["line", *columns]), *applied_rows])
        files["applied"] = str(path)
    return files


def _csv_row(values: Sequence[Any]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue().encode("utf-8")
