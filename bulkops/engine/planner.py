"""The engine's view of ``bulkops.stream``: a file's bytes in, chunks and local outcomes out.

:class:`Planner` wraps the stream pipeline (decoder → header mapping → validation →
dedupe → chunker) behind the decode/flush protocol and turns what it yields into journal
records: :class:`PlannedChunk` (a chunk's plan record plus its body) and
:class:`PlannedOutcome` (a rejected or duplicate row). It is deterministic: the same bytes
and options give the same chunks and digests, which is what makes ``resume`` possible.

What the engine does with a plan beside sending it lives next door: the outcome files
(``engine/outcome_files.py``), emails repeated across chunks (``engine/repeats.py``) and
``--dry-run`` (``engine/dry_run.py``).
"""

from __future__ import annotations

import _csv
import csv
import functools
import hashlib
import io
from array import array
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import msgspec

from bulkops.engine.chunks import ChunkState
from bulkops.engine.journal import ChunkRecord, Journal, OutcomeRecord
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
    "ChunkEmails",
    "PlannedChunk",
    "PlannedOutcome",
    "Planner",
    "chunk_data",
    "chunk_rows",
    "csv_reader",
    "input_digest",
    "replan",
    "replay",
]

_BLOCK = 1 << 20
_NO_STATISTICS = msgspec.convert(
    dict.fromkeys(PipelineStatistics.__struct_fields__, 0), PipelineStatistics
)


#: ``emails(seq, emails, lines, repeated)``: a planned chunk's rows (see :class:`Planner`).
ChunkEmails = Callable[[int, bytes, "array[int]", tuple[bytes, ...]], None]


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
        emails: told each chunk's rows (seq, lower-cased emails joined by LF, lines) and
            its candidate repeats from earlier chunks, as it is planned
            (``engine/repeats.py`` keeps them to find the rows replaced across chunks
            without reading the input again).
        bodies: build the chunks' bodies and digests (a dry run, which sends nothing,
            asks for their sizes only: ``PlannedChunk.body`` is then empty and the
            record's ``digest`` too; its ``body_bytes`` is the same).

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
        emails: ChunkEmails | None = None,
        bodies: bool = True,
    ) -> None:
        self.path = path
        self._emails = emails
        self.kind = kind
        self._read = read
        self._options = functools.partial(  # size_hint: the email table is sized once
            PipelineOptions,
            lists=[str(uri) for uri in lists],
            kind=ChunkKind.REMOVE if kind == "remove" else ChunkKind.ADD,
            limits=limits,
            size_hint=_file_size(path),
            keep_emails=emails is not None,
            bodies=bodies,
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
        if self._emails is not None and chunk.emails is not None:
            self._emails(chunk.seq, chunk.emails, chunk.lines, chunk.repeated)
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
            body_bytes=chunk.body_bytes,
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


def csv_reader(text: str, delimiter: str = ",") -> _csv.Reader:
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
    reader = csv_reader(chunk_data(body, content_type).decode("utf-8"))
    header = next(reader, [])
    return header, list(reader)


def replay(
    source: Path, read: ReadOptions, limits: ChunkLimits, *, lists: Sequence[str], kind: str
) -> Iterator[PlannedChunk | PlannedOutcome]:
    """The run's chunks and outcomes again, from the same file and options (deterministic:
    the same bytes and options give the same chunks)."""
    planner = Planner(read, limits, lists=lists, kind=kind, path=str(source))
    with source.open("rb") as handle:
        while block := handle.read(_BLOCK):
            yield from planner.decode(block)
    yield from planner.flush()


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


# -- dry run -----------------------------------------------------------------------------------
