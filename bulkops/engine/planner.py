"""The engine's view of ``bulkops.stream``: a file's bytes in, chunks and local outcomes out.

:class:`Planner` wraps the stream pipeline (decoder → header mapping → validation →
dedupe → chunker) behind the decode/flush protocol and turns what it yields into journal
records: :class:`PlannedChunk` (a chunk's plan record plus its body) and
:class:`PlannedOutcome` (a rejected or duplicate row). It is deterministic: the same bytes
and options give the same chunks and digests, which is what makes ``resume`` possible.

Outcome files are written after a run by reading the input once more and joining it, in
line order, with the journal's outcomes: memory stays O(1) in the number of outcomes.
"""

from __future__ import annotations

import _csv
import csv
import functools
import hashlib
import io
import sqlite3
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import msgspec

from bulkops.engine.chunks import ChunkState
from bulkops.engine.journal import ChunkRecord, Journal, OutcomeRecord
from bulkops.engine.ledger import write_atomically, write_outcome_file
from bulkops.engine.rundirs import command_name, default_run_dir
from bulkops.errors import ConfigError, InputError
from bulkops.stream.encoding import SAMPLE_BYTES, detect_encoding
from bulkops.stream.options import ChunkLimits, ReadOptions
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
from bulkops.wire.activity import Field
from bulkops.wire.forms import decode_form

__all__ = [
    "DryRunPlan",
    "PlannedChunk",
    "PlannedOutcome",
    "Planner",
    "chunk_data",
    "chunk_rows",
    "dry_run",
    "find_repeated_emails",
    "input_digest",
    "replan",
    "write_outcome_files",
]

_BLOCK = 1 << 20
_NO_STATISTICS = msgspec.convert(
    dict.fromkeys(PipelineStatistics.__struct_fields__, 0), PipelineStatistics
)


@attrs.frozen
class PlannedChunk:
    """A chunk ready to send: its journal record, its body and content type.

    ``waits_for`` lists every earlier chunk that shares an email with this one: this chunk
    may be sent only when all of them have finished (the rows' order is kept that way).
    """

    record: ChunkRecord
    body: bytes
    content_type: str
    waits_for: tuple[int, ...] = ()
    columns: tuple[str, ...] = ()


@attrs.frozen
class PlannedOutcome:
    """A row that will not be sent: rejected locally, or superseded by a later duplicate."""

    record: OutcomeRecord


def input_digest(path: Path) -> tuple[int, str]:
    """The file's size and the SHA-256 of its first and last MiB (cheap change detection)."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        digest.update(handle.read(_BLOCK))
        if size > 2 * _BLOCK:
            handle.seek(size - _BLOCK)
            digest.update(handle.read(_BLOCK))
    return size, digest.hexdigest()


def _file_size(path: str) -> int | None:
    """The size of the file at ``path``, or None when it is not a regular file."""
    try:
        return Path(path).stat().st_size if Path(path).is_file() else None
    except OSError:
        return None


class Planner:
    """The stream pipeline behind the engine's decode/flush protocol.

    Args:
        read: how the input is read.
        limits: how rows are cut into requests.
        lists: the list URIs every activity names.
        kind: ``add`` or ``remove``.
        path: the input's name, for error messages.

    Raises:
        ConfigError: unusable options.
    """

    def __init__(
        self,
        read: ReadOptions,
        limits: ChunkLimits,
        *,
        lists: Sequence[str],
        kind: str,
        path: str,
    ) -> None:
        self.path = path
        self.kind = kind
        self._read = read
        self._options = functools.partial(  # size_hint: the email table is sized once
            PipelineOptions,
            lists=[str(uri) for uri in lists],
            kind=ChunkKind.REMOVE if kind == "remove" else ChunkKind.ADD,
            limits=limits,
            size_hint=_file_size(path),
        )
        # Without a named encoding, the first MiB decides it (stream/encoding.py): the
        # pipeline starts once that much has come, or the input ended.
        self._sample: list[bytes] = []
        self._sampled = 0
        self._pipeline: Pipeline | None = None
        if read.encoding is not None or read.format == "xml":
            self._pipeline = Pipeline(self._options(read=read))
        self.header: Header | None = None
        #: Chunks that share an email with another chunk (either side of a dependency).
        self.linked_chunks: set[int] = set()

    @property
    def repeats_across_chunks(self) -> bool:
        """Whether some chunk depends on an earlier one (an email repeated across chunks)."""
        return bool(self.linked_chunks)

    @property
    def rows_read(self) -> int:
        """Data rows read so far (blank records are not rows)."""
        stats = self.statistics()
        return stats.records - stats.blank

    def statistics(self) -> PipelineStatistics:
        """The pipeline's counters."""
        if self._pipeline is None:
            return _NO_STATISTICS
        return self._pipeline.statistics()

    def decode(self, data: bytes) -> list[PlannedChunk | PlannedOutcome]:
        """Feed the next block of the input.

        Raises:
            InputError: the input cannot be imported (naming the file, line and field).
        """
        pipeline = self._pipeline
        if pipeline is None:
            self._sample.append(data)
            self._sampled += len(data)
            if self._sampled < SAMPLE_BYTES:
                return []
            pipeline, data = self._start(complete=False)
        return self._convert(self._call(pipeline.decode, data))

    def flush(self) -> list[PlannedChunk | PlannedOutcome]:
        """Finish the input."""
        if self._pipeline is None:
            pipeline, data = self._start(complete=True)
            events = self._call(pipeline.decode, data)
            return self._convert(events + self._call(pipeline.flush))
        return self._convert(self._call(self._pipeline.flush))

    def _start(self, *, complete: bool) -> tuple[Pipeline, bytes]:
        """Decide the encoding from the sample, start the pipeline; the sample's bytes."""
        data = b"".join(self._sample)
        self._sample = []
        read = self._read
        if not (read.format is None and data.lstrip()[:1] == b"<"):  # not XML
            encoding = detect_encoding(data[:SAMPLE_BYTES], complete=complete)
            if encoding is not None:
                read = attrs.evolve(read, encoding=encoding)
        pipeline = self._pipeline = Pipeline(self._options(read=read))
        return pipeline, data

    def _call(self, fn: Any, *args: Any) -> list[Event]:
        try:
            events: list[Event] = fn(*args)
        except InputError as exc:
            if exc.path is None:
                exc.path = self.path
                exc.args = (str(exc),)
            raise
        return events

    def _convert(self, events: Sequence[Event]) -> list[PlannedChunk | PlannedOutcome]:
        out: list[PlannedChunk | PlannedOutcome] = []
        for event in events:
            if isinstance(event, Header):
                self.header = event
            elif isinstance(event, Rejected):
                out.append(
                    PlannedOutcome(
                        OutcomeRecord(
                            line=event.line,
                            kind="rejected",
                            reason=event.reason,
                            start_offset=event.start_offset,
                            end_offset=event.end_offset,
                            field=event.field,
                        )
                    )
                )
            elif isinstance(event, Duplicate):
                out.append(
                    PlannedOutcome(
                        OutcomeRecord(
                            line=event.line,
                            kind="duplicate",
                            reason=f"replaced by line {event.replaced_by} (same email)",
                            start_offset=event.start_offset,
                            end_offset=event.end_offset,
                            replaced_by=event.replaced_by,
                        )
                    )
                )
            else:
                out.append(self._chunk(event))
        return out

    def _chunk(self, chunk: Chunk) -> PlannedChunk:
        if chunk.waits_for:
            self.linked_chunks.add(chunk.seq)
            self.linked_chunks.update(chunk.waits_for)
        record = ChunkRecord(
            seq=chunk.seq,
            kind=str(chunk.kind),
            rows=chunk.rows,
            first_line=chunk.first_line,
            last_line=chunk.last_line,
            start_offset=chunk.start_offset,
            end_offset=chunk.end_offset,
            digest=chunk.digest,
            body_bytes=len(chunk.body),
            lines=array("Q", chunk.lines),
            after=chunk.after,
            state=ChunkState.PLANNED,
        )
        return PlannedChunk(
            record=record,
            body=chunk.body,
            content_type=chunk.content_type,
            waits_for=chunk.waits_for,
            columns=chunk.columns,
        )


def chunk_data(body: bytes, content_type: str) -> bytes:
    """The ``data`` field of an activity request body (multipart or urlencoded).

    Raises:
        FormError: the body is not a form the codec decodes.
    """
    data = decode_form(body, content_type).first(Field.DATA)
    return b"" if data is None else data.encode("utf-8")


def _csv_reader(text: str, delimiter: str = ",") -> _csv.Reader:
    """``csv.reader`` over ``text`` that takes any field ``text`` can hold.

    The stream's own decoder accepts records up to ``max_record_bytes`` (1 MiB by default),
    while stdlib ``csv`` refuses fields over 131,072 characters: re-reading such a record
    (an over-long note, a pasted blob) must not crash the run after its rows were applied.
    The limit is process-wide; it is only ever raised, to the size of text already in memory.
    """
    if len(text) >= csv.field_size_limit():
        csv.field_size_limit(len(text) + 1)
    return csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)


def chunk_rows(body: bytes, content_type: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of a chunk's ``data``, as sent."""
    reader = _csv_reader(chunk_data(body, content_type).decode("utf-8"))
    header = next(reader, [])
    return header, list(reader)


def _chunk_emails(chunk: PlannedChunk) -> Iterator[str]:
    """The lower-cased email of each row of a chunk's ``data``, one row at a time."""
    reader = _csv_reader(chunk_data(chunk.body, chunk.content_type).decode("utf-8"))
    header = next(reader, [])
    at = header.index("EMAIL ADDRESS") if "EMAIL ADDRESS" in header else 0
    for row in reader:
        yield row[at].strip().lower() if at < len(row) else ""


def _replay(
    source: Path, read: ReadOptions, limits: ChunkLimits, *, lists: Sequence[str], kind: str
) -> Iterator[PlannedChunk | PlannedOutcome]:
    """The run's events again, from the same file and options (deterministic)."""
    planner = Planner(read, limits, lists=lists, kind=kind, path=str(source))
    with source.open("rb") as handle:
        while block := handle.read(_BLOCK):
            yield from planner.decode(block)
    yield from planner.flush()


def find_repeated_emails(
    journal: Journal,
    source: Path,
    read: ReadOptions,
    limits: ChunkLimits,
    *,
    lists: Sequence[str],
    kind: str,
    chunks: set[int] | None = None,
) -> int:
    """Record a ``duplicate`` outcome for every sent row whose email a later chunk sent again.

    The stream dedupes inside a chunk; across chunks it only orders them (a repeated email
    makes the later chunk wait). This pass finds those repeats exactly: it replays the
    input, indexes every sent row's email in a temporary SQLite table next to the journal,
    and marks each occurrence but the last as replaced by the next one. Only run when some
    chunk depended on another. Only the rows of ``chunks`` (those on either side of a
    dependency; default all) are indexed, and only their email column is kept.

    Returns:
        how many rows it marked.
    """
    db = sqlite3.connect(journal.run_dir / "emails.tmp")
    try:
        db.execute("DROP TABLE IF EXISTS sent")
        db.execute("CREATE TABLE sent (email TEXT NOT NULL, line INTEGER NOT NULL)")
        with db:
            for event in _replay(source, read, limits, lists=lists, kind=kind):
                if not isinstance(event, PlannedChunk):
                    continue
                if chunks is not None and event.record.seq not in chunks:
                    continue
                db.executemany(
                    "INSERT INTO sent (email, line) VALUES (?, ?)",
                    zip(_chunk_emails(event), event.record.lines, strict=True),
                )
        db.execute("CREATE INDEX sent_email ON sent(email, line)")
        repeats = db.execute(
            "SELECT email, line FROM sent WHERE email IN"
            " (SELECT email FROM sent GROUP BY email HAVING count(*) > 1) ORDER BY email, line"
        )
        marked: list[OutcomeRecord] = []
        previous: tuple[str, int] | None = None
        for email_key, line in repeats:
            if previous is not None and previous[0] == email_key:
                marked.append(
                    OutcomeRecord(
                        line=previous[1],
                        kind="duplicate",
                        reason=f"replaced by line {line} (same email, applied in a later activity)",
                        replaced_by=line,
                    )
                )
            previous = (email_key, line)
        journal.add_outcomes(marked)
        return len(marked)
    finally:
        db.close()
        (journal.run_dir / "emails.tmp").unlink(missing_ok=True)


def replan(journal: Journal, old: ChunkLimits, new: ChunkLimits) -> None:
    """Let a run's remaining rows be cut with other limits (``resume --max-rows``).

    Chunks are cut deterministically from the start of the file, so new limits move every
    cut: that is safe only while the server has accepted none of the run's chunks (a run
    stopped by a server refusing its first requests, ``400 more than N rows``). Then the
    plan is forgotten and the whole input is cut again when the run resumes. A chunk whose
    POST was in flight when the run stopped is taken as not accepted (a refusal is the
    usual reason a run stops before any answer); if it was, its rows are applied again
    with the same values, which leaves the same contacts.

    Raises:
        ConfigError: some chunk was accepted; the message says what to do instead.
    """
    sent = [
        c
        for c in journal.chunks()
        if c.activity_id is not None or c.state in (ChunkState.POSTED, ChunkState.DONE)
    ]
    if sent:
        meta = journal.meta()
        raise ConfigError(
            f"{len(sent)} activities of this run were already accepted with --max-rows "
            f"{old.max_rows} --max-bytes {old.max_bytes}, so its rows cannot be cut again: "
            "resume it without --max-rows/--max-bytes, or start a new run of "
            f"{meta.get('input', 'the file')} with the new limits (rows it applied are "
            "applied again with the same values)"
        )
    journal.forget_plan()


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
        fields: list[str] = next(_csv_reader(raw, delimiter), [])
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
) -> dict[str, str]:
    """Write ``rejected.csv``, ``duplicates.csv``, ``failed.csv`` (and ``applied.csv``).

    Rejected and duplicate rows are copied from the source by their byte ranges, under the
    input's own header. Failed and applied rows are written as they were sent (the
    canonical columns), taken from a replay of the input, since the journal keeps only
    their lines. Files are written only when they have rows (``applied.csv`` on request).

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
            _rows_by_line(journal, source, read, limits, meta, header)
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
) -> dict[int, list[str]]:
    """The original fields of each duplicate that has no byte range (sent, then replaced by
    a row of a later activity), by line. Only those rows are kept: O(such rows)."""
    wanted = {o.line for o in journal.outcomes("duplicate") if o.start_offset is None}
    found: dict[int, list[str]] = {}
    if not wanted or header is None:
        return found
    if header.delimiter:
        for chunk in journal.chunks():
            if chunk.kind == "clear" or wanted.isdisjoint(chunk.lines):
                continue
            for line, fields in _records_in(
                source, header, chunk.start_offset, chunk.end_offset, chunk.first_line
            ):
                if line in wanted:
                    found[line] = fields
        return found
    # XML: the record as written is not kept by line; the row as it was sent stands for it.
    lists = [item["uri"] for item in meta.get("lists", [])] or ["x"]
    kind = "remove" if meta.get("command") == "remove" else "add"
    for event in _replay(source, read, limits, lists=lists, kind=kind):
        if isinstance(event, PlannedChunk) and not wanted.isdisjoint(event.record.lines):
            _sent_header, rows = chunk_rows(event.body, event.content_type)
            for line, row in zip(event.record.lines, rows, strict=True):
                if line in wanted:
                    found[line] = row
    return found


def _header_of(
    source: Path, read: ReadOptions, limits: ChunkLimits, meta: dict[str, Any]
) -> Header | None:
    lists = [item["uri"] for item in meta.get("lists", [])] or ["x"]
    kind = "remove" if meta.get("command") == "remove" else "add"
    planner = Planner(read, limits, lists=lists, kind=kind, path=str(source))
    with source.open("rb") as handle:
        while planner.header is None and (block := handle.read(1 << 16)):
            planner.decode(block)
        if planner.header is None:  # a file shorter than the encoding's sample
            planner.flush()
    return planner.header


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
    reader = _csv_reader(text, header.delimiter)
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
        lists = [item["uri"] for item in meta.get("lists", [])]
        kind = "remove" if meta.get("command") == "remove" else "add"
        by_seq = {c.seq: c for c in done}
        for event in _replay(source, read, limits, lists=lists, kind=kind):
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


# -- dry run -----------------------------------------------------------------------------------


class DryRunPlan(msgspec.Struct, kw_only=True):
    """What an import would do: chunks, rows, bytes, requests; and where the outcomes are."""

    input: str
    kind: str
    encoding: str
    rows_read: int
    rows_to_send: int
    rejected: int
    duplicate: int
    chunks: int
    body_bytes: int
    largest_body: int
    requests_estimate: int
    run_dir: str
    files: dict[str, str]
    chunk_plan: list[dict[str, int]]

    @property
    def exit_code(self) -> int:
        """0 when every row would be sent, 2 otherwise."""
        return 0 if self.rejected == 0 and self.duplicate == 0 else 2

    def render(self, *, json_output: bool) -> str:
        """The plan as JSON, or as a few lines for people."""
        if json_output:
            return msgspec.json.encode({"event": "plan", "plan": self}).decode()
        lines = [
            f"dry run of {command_name(self.kind)} from {self.input} (read as {self.encoding}): "
            f"{self.rows_read:,} rows read, "
            f"{self.rows_to_send:,} to send, {self.rejected:,} rejected, "
            f"{self.duplicate:,} duplicate",
            f"{self.chunks} activities ({self.body_bytes:,} bytes of requests, largest "
            f"{self.largest_body:,}); about {self.requests_estimate} requests in all",
        ]
        for item in self.chunk_plan[:20]:
            lines.append(
                f"  chunk {item['seq']}: lines {item['first_line']}-{item['last_line']}, "
                f"{item['rows']} rows, {item['bytes']:,} bytes"
            )
        if len(self.chunk_plan) > 20:
            lines.append(f"  … {len(self.chunk_plan) - 20} more chunks")
        for name, path in sorted(self.files.items()):
            lines.append(f"  {name}: {path}")
        return "\n".join(lines)


def dry_run(
    path: Path,
    read: ReadOptions,
    limits: ChunkLimits,
    *,
    kind: str,
    lists: Sequence[str],
    run_dir: Path | None,
) -> DryRunPlan:
    """Read, validate, chunk and encode everything; send nothing; write the local outcomes.

    Raises:
        InputError: the input cannot be read or imported.
    """
    source = Path(path)
    if not source.is_file():
        raise InputError("no such file", path=str(source))
    directory = Path(run_dir) if run_dir is not None else default_run_dir(source, "dry-run")
    journal = Journal(directory, create=True)
    try:
        uris = [
            f"http://api.constantcontact.com/ws/customers/dry-run/lists/{name}" for name in lists
        ]
        journal.set_meta(
            command=command_name(kind),
            input=str(source.resolve()),
            lists=[{"uri": u} for u in uris],
            state="dry-run",
        )
        planner = Planner(read, limits, lists=uris, kind=kind, path=str(source))
        plan: list[dict[str, int]] = []
        outcomes: list[OutcomeRecord] = []
        body_bytes = largest = sent = 0
        with source.open("rb") as handle:
            while True:
                block = handle.read(_BLOCK)
                events = planner.decode(block) if block else planner.flush()
                for event in events:
                    if isinstance(event, PlannedOutcome):
                        outcomes.append(event.record)
                    else:
                        record = event.record
                        size = len(event.body)
                        body_bytes += size
                        largest = max(largest, size)
                        sent += record.rows
                        plan.append(
                            {
                                "seq": record.seq,
                                "first_line": record.first_line,
                                "last_line": record.last_line,
                                "rows": record.rows,
                                "bytes": size,
                            }
                        )
                if len(outcomes) > 10_000 or not block:
                    journal.add_outcomes(outcomes)
                    outcomes = []
                if not block:
                    break
        if planner.repeats_across_chunks:  # the same duplicates as the real run finds
            find_repeated_emails(
                journal, source, read, limits, lists=uris, kind=kind, chunks=planner.linked_chunks
            )
        files = write_outcome_files(
            journal, source, read, limits, write_applied=False, header=planner.header
        )
        counts = journal.outcome_counts()
        # lists lookup + one POST per chunk + about one poll per four activities + final poll
        requests = 1 + len(plan) + max(1, len(plan) // 4) + 1
        return DryRunPlan(
            input=str(source),
            kind=command_name(kind),  # the command as typed: import, not the engine's add
            encoding=planner.header.encoding if planner.header is not None else "utf-8",
            rows_read=planner.rows_read,
            rows_to_send=sent,
            rejected=counts["rejected"],
            duplicate=counts["duplicate"],
            chunks=len(plan),
            body_bytes=body_bytes,
            largest_body=largest,
            requests_estimate=requests,
            run_dir=str(directory),
            files=files,
            chunk_plan=plan,
        )
    finally:
        journal.close()
