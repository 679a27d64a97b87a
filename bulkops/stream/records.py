"""The records the import pipeline hands out: one outcome per input row, and chunks.

Every data record of an input ends in exactly one of three places:

* a :class:`Rejected` event (the row is invalid; it is never sent),
* a :class:`Duplicate` event (a later row with the same email replaced it inside the same
  chunk; it is never sent), or
* the :attr:`Chunk.lines` of exactly one :class:`Chunk` (it is sent in that activity).

Blank records (no non-space character in any field) are not rows: they are counted in
:class:`PipelineStatistics` and produce no event. The header record is line 1 and produces a
:class:`Header` event.

Lines are physical lines of the source file (CR, LF and CRLF each end one, inside quoted
fields too), 1-based; offsets are byte offsets into the source file as given (a byte-order
mark included), ``end_offset`` exclusive and past the record's line break.
"""

from __future__ import annotations

import enum
from array import array

import msgspec

__all__ = [
    "Chunk",
    "ChunkKind",
    "Duplicate",
    "Event",
    "Header",
    "PipelineStatistics",
    "Rejected",
]


class ChunkKind(enum.StrEnum):
    """What a chunk's activity does with its rows."""

    ADD = "add"
    """``SV_ADD``: add or update the contacts and put them on the lists."""
    REMOVE = "remove"
    """``REMOVE_CONTACTS_FROM_LISTS``: take the emails off the lists (email column only)."""


class Header(msgspec.Struct, frozen=True, kw_only=True):
    """How the input's columns were read and mapped; always the first event.

    Attributes:
        sources: the header cells as written in the file (CSV) or the contact element names
            met first (XML), in order.
        columns: for each source, the canonical activity column it fills, or None when the
            column is ignored.
        sent: the canonical columns sent in ``data``, in the order they are sent.
        delimiter: the CSV delimiter used (``""`` for XML).
        encoding: the text encoding used (``"utf-8"``, ``"utf-16-le"``, ``"cp1252"``, ...).
        line_count: physical lines taken by the header record (usually 1).
    """

    sources: tuple[str, ...]
    columns: tuple[str | None, ...]
    sent: tuple[str, ...]
    delimiter: str
    encoding: str
    line_count: int = 1


class Rejected(msgspec.Struct, frozen=True, kw_only=True):
    """A row that is not sent because it is invalid.

    Attributes:
        line: the physical line where the record starts.
        start_offset: the record's first byte in the source file.
        end_offset: one past the record's last byte (its line break included).
        field: the source column at fault (its header as written), or None when the record as
            a whole is at fault (wrong number of fields, undecodable bytes, too long).
        reason: what is wrong, in words a user can act on.
    """

    line: int
    start_offset: int
    end_offset: int
    field: str | None
    reason: str


class Duplicate(msgspec.Struct, frozen=True, kw_only=True):
    """A row that is not sent because a later row with the same email replaced it.

    Attributes:
        line: the physical line where the record starts.
        start_offset: the record's first byte in the source file.
        end_offset: one past the record's last byte.
        replaced_by: the line of the row that replaced it (the next occurrence of the email).
        email: the email address, as the replacing row normalised it (lower case).
    """

    line: int
    start_offset: int
    end_offset: int
    replaced_by: int
    email: str


class Chunk(msgspec.Struct, frozen=True, kw_only=True):
    """One activity request, ready to POST.

    Attributes:
        seq: 0-based sequence number; chunks are emitted in ``seq`` order.
        kind: add or remove.
        rows: the number of data rows in ``data`` (the header line not counted).
        lines: the source line of each row, in ``data`` order (``array('I')``): row ``i`` of
            ``data`` is the activity's ``LineNumber`` ``i + 2``.
        first_line: the first source line the chunk covers (its first row's line).
        last_line: the last row's line.
        start_offset: the first byte of the source the chunk covers (its first row's).
        end_offset: one past the last byte of the last row it covers. The rows between
            ``start_offset`` and ``end_offset`` that are not in ``lines`` were rejected, are
            duplicates, or are blank.
        columns: the canonical columns of ``data``'s header line.
        body: the request body; ``b""`` when the options asked for sizes only
            (``bodies=False``: a dry run), then ``body_bytes`` still says how long it is.
        content_type: the request's ``Content-Type`` header value.
        data_bytes: the length of the ``data`` field as it appears in ``body`` (percent-
            encoded for urlencoded bodies); never more than the configured byte limit.
        digest: SHA-256 of ``body``, hex (``""`` when the body was not built).
        waits_for: every earlier chunk that shares an email with this one, ascending. The
            final state equals applying the rows in input order when this chunk is applied
            only after all of these were (each of them waits for its own in turn).
        after: the latest of ``waits_for`` (None when it is empty). Waiting for ``after``
            alone is enough only if chunks are also applied in ``seq`` order; otherwise
            wait for every chunk in ``waits_for``.
        emails: the lower-cased email (UTF-8) of each row, in ``lines`` order, joined by
            LF (no valid address holds one); only when the options ask for them
            (``keep_emails``), else None.
        repeated: emails of this chunk's rows that the email table had seen in an earlier
            chunk (candidates: a fingerprint clash adds one too many, a repeat is never
            missed); only with ``keep_emails``.
        body_bytes: the length of the body, built or not (given as ``len(body)`` when
            left out).
    """

    seq: int
    kind: ChunkKind
    rows: int
    lines: array[int]
    first_line: int
    last_line: int
    start_offset: int
    end_offset: int
    columns: tuple[str, ...]
    body: bytes
    content_type: str
    data_bytes: int
    digest: str
    waits_for: tuple[int, ...]
    after: int | None
    emails: bytes | None = None
    repeated: tuple[bytes, ...] = ()
    body_bytes: int = -1

    def __post_init__(self) -> None:
        if self.body_bytes < 0:
            msgspec.structs.force_setattr(self, "body_bytes", len(self.body))


#: What ``Pipeline.decode`` and ``Pipeline.flush`` return, in input order.
Event = Header | Rejected | Duplicate | Chunk


class PipelineStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """Counters of a pipeline so far.

    Attributes:
        bytes_in: source bytes fed.
        records: data records read (blank ones included, the header not).
        blank: blank records skipped.
        rejected: rows rejected.
        duplicates: rows replaced by a later duplicate inside a chunk.
        rows_sent: rows placed in chunks (emitted or not yet).
        chunks: chunks emitted.
        unique_emails: distinct emails seen (counted by fingerprint: exact up to the rare
            clash, see :mod:`bulkops.stream.dedupe`), in the chunks cut so far (all of
            them after ``flush``).
        dedupe_bytes: memory held by the email table.
    """

    bytes_in: int
    records: int
    blank: int
    rejected: int
    duplicates: int
    rows_sent: int
    chunks: int
    unique_emails: int
    dedupe_bytes: int
