"""The chunker: valid rows in, activity request bodies out, within every limit.

:class:`Chunker` takes rows already validated and encoded as ``data`` lines (batches of
parallel lists: line bytes, lower-cased email, source line, start and end offsets) and cuts
them into :class:`~bulkops.stream.records.Chunk` records.

Rules (tests/test_stream_chunking.py checks each with hypothesis):

* **Limits, measured on the bytes sent.** A chunk has at most ``max_rows`` rows and its
  ``data`` field, as it appears in the body (percent-encoded for urlencoded forms), at most
  ``max_bytes`` bytes. Rows are added greedily in input order; a chunk is cut before the
  first row that would break a limit. Rows removed as duplicates free their room.
* **No chunk is empty; none is smaller than ``min_rows``** when the input has that many
  rows to send: a cut chunk is held back until the next one has ``min_rows`` rows, and at
  the end a short last chunk is merged into the one before it, or takes rows from its end.
  (``max_rows >= 2 * min_rows`` is required; the byte limit must also hold ``2 * min_rows``
  rows, which any realistic limit does: a valid row is at most about 10 KB.)
* **Duplicates.** The same email (lower case) twice: the last occurrence wins. Within a
  chunk the earlier row is dropped and reported as :class:`~bulkops.stream.records.Duplicate`
  naming the line that replaced it. An earlier occurrence in a chunk already cut stays there
  and the later chunk lists it in ``waits_for``: applying every chunk after those it waits
  for gives the state of applying all rows in order.
* **Every row lands once**: in one chunk's ``lines``, or in one ``Duplicate`` or
  ``Rejected`` event; chunks are emitted in ``seq`` order, 0, 1, 2, ...
* **Deterministic**: cuts depend on the rows only, never on how the input was split into
  batches; the same rows and options give the same bodies and digests.

Duplicates inside a chunk are found in C (``dict.setdefault`` over a batch's emails; Python
runs only for the repeats); the email table (:mod:`bulkops.stream.dedupe`) is given a
chunk's distinct emails once, when it is cut, and answers which earlier chunks it waits for.

Memory is one chunk's rows (plus the held-back one until the next reaches ``min_rows``: it
goes out as soon as it does) and the email table. The body is joined from the rows in one
copy (:func:`~bulkops.wire.forms.multipart_body_of_lines`), after the chunk's emails are
released.
"""

from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate, compress
from operator import itemgetter, ne
from typing import Any

import attrs

from bulkops.errors import ConfigError
from bulkops.stream.dedupe import CODE_PERIOD, EmailTable, chunk_code, code_distance
from bulkops.stream.options import ChunkLimits
from bulkops.stream.records import Chunk, ChunkKind, Duplicate, Event, Rejected
from bulkops.wire.activity import (
    ActivityType,
)
from bulkops.wire.forms import (
    BOUNDARY,
    multipart_body_of_lines,
    multipart_size,
    percent_encoded_size,
    urlencoded_body,
)

__all__ = ["ChunkOptions", "Chunker", "Locate", "RowBatch"]

_one_more = (1).__add__


def _uris(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen(init=False)
class ChunkOptions:
    """How rows are cut into activity requests: the activity's kind and lists, and the
    :class:`~bulkops.stream.options.ChunkLimits` (the very object the caller configured).

    ``ChunkOptions(lists=..., max_rows=...)`` also builds the limits from their fields by
    name; they are read from :attr:`limits` (``options.limits.max_rows``).

    Attributes:
        kind: add (``SV_ADD``) or remove (``REMOVE_CONTACTS_FROM_LISTS``).
        lists: the list URIs every chunk's activity names (at least one).
        limits: form encoding, rows and bytes per chunk.
        keep_emails: each chunk also carries its rows' emails and the candidates repeated
            from earlier chunks (:attr:`Chunk.emails`, :attr:`Chunk.repeated`): the engine
            finds the rows replaced across chunks from them. Never changes the chunks.
        bodies: build each chunk's body and its digest (the default). Without, a
            multipart chunk comes with its ``body_bytes`` only (``body`` empty, no
            digest): a dry run, which sends nothing, counts the same bytes without
            copying the input into bodies and hashing them. Never changes the chunks.
    """

    kind: ChunkKind
    lists: tuple[str, ...]
    limits: ChunkLimits
    keep_emails: bool
    bodies: bool

    def __init__(
        self,
        *,
        lists: Iterable[str],
        kind: ChunkKind | str = ChunkKind.ADD,
        limits: ChunkLimits | None = None,
        keep_emails: bool = False,
        bodies: bool = True,
        **limit_fields: Any,
    ) -> None:
        if limits is not None and limit_fields:
            raise ConfigError("give either limits or their fields, not both")
        self.__attrs_init__(
            kind=ChunkKind(kind),
            lists=_uris(lists),
            limits=limits if limits is not None else ChunkLimits(**limit_fields),
            keep_emails=keep_emails,
            bodies=bodies,
        )

    def __attrs_post_init__(self) -> None:
        if not self.lists or not all(uri.strip() for uri in self.lists):
            raise ConfigError("an activity needs at least one list URI")

    @property
    def activity_type(self) -> ActivityType:
        """The ``activityType`` the chunks carry."""
        if self.kind is ChunkKind.REMOVE:
            return ActivityType.REMOVE_CONTACTS_FROM_LISTS
        return ActivityType.SV_ADD


#: Where a record is in the source: ``locate(line) -> (start_offset, end_offset)`` for the
#: record that starts on ``line``.
Locate = Callable[[int], tuple[int, int]]


@attrs.define(slots=True)
class RowBatch:
    """Rows ready for the chunker, as parallel sequences (one entry per row, input order).

    Attributes:
        outs: the row as a ``data`` line, without its final LF (a CR before it may stay).
        emails: the lower-cased email, UTF-8.
        lines: the source line where the record starts (its offsets come from the
            chunker's ``locate``).
    """

    outs: list[bytes] = attrs.Factory(list)
    emails: list[bytes] = attrs.Factory(list)
    lines: array[int] = attrs.Factory(lambda: array("I"))

    def __len__(self) -> int:
        return len(self.outs)

    def append(self, out: bytes, email: bytes, line: int) -> None:
        """Add one row."""
        self.outs.append(out)
        self.emails.append(email)
        self.lines.append(line)


class _Building:
    """A chunk being filled (or held back): its rows, live or dropped (``out == b""``)."""

    __slots__ = (
        "alive",
        "batch",
        "code",
        "index",
        "nbytes",
        "registered",
        "repeated",
        "seq",
        "waits",
    )

    def __init__(self, seq: int, header_bytes: int) -> None:
        self.seq = seq
        self.code = chunk_code(seq)
        self.batch = RowBatch()
        self.alive = 0
        self.nbytes = header_bytes
        self.waits: set[int] = set()
        # email -> row of its latest (live) occurrence in this chunk: built in C by
        # dict.setdefault, batch by batch; its keys are the chunk's distinct emails.
        self.index: dict[bytes, int] = {}
        self.registered = False  # its emails are in the email table (done once, at the cut)
        self.repeated: list[bytes] = []  # emails the table had seen in an earlier chunk


class Chunker:
    """Cut validated rows into chunks.

    Args:
        options: limits, kind, lists and form.
        header: the ``data`` header line (canonical column names), without line break.
        columns: the canonical column names of ``header``.
        locate: the source offsets of the record on a line (asked for chunk ends and
            dropped rows only).
        forget: told the first line the chunker may still ask about, as chunks go out.
        capacity: expected distinct emails (sizes the email table; a hint).
        nul_separated: rows hold a value for every column of ``columns``, separated by NUL
            bytes (which no valid value holds); a chunk's ``data`` keeps only the columns
            some of its rows fill, the email always. Sizes are counted as if every column
            were kept, so the limits hold a fortiori.
    """

    def __init__(
        self,
        options: ChunkOptions,
        *,
        header: bytes,
        columns: tuple[str, ...],
        locate: Locate,
        forget: Callable[[int], None] | None = None,
        capacity: int = 0,
        nul_separated: bool = False,
    ) -> None:
        self._options = options
        self._locate = locate
        self._forget = forget
        self._nul = nul_separated
        self._header = header
        self._columns = columns
        self._urlencoded = options.limits.form == "urlencoded"
        # Sizes only (no bodies): multipart, whole rows, and no row holding the boundary
        # (checked batch by batch; once one does, bodies are built from then on).
        self._sizes_only = not options.bodies and not self._urlencoded and not nul_separated
        self._header_bytes = self._size(header)
        if self._header_bytes >= options.limits.max_bytes:
            # Every row would be "too big" and the cutting loop could not make progress.
            raise ConfigError(
                f"max_bytes ({options.limits.max_bytes:,}) cannot hold even the data's header "
                f"({self._header_bytes:,} bytes) and a row"
            )
        self._table = EmailTable(capacity)
        self._pending: list[_Building] = []
        self._open = _Building(0, self._header_bytes)
        self._emitted = 0
        self.rows_sent = 0
        """Rows placed in chunks so far (duplicates dropped since not counted)."""
        self.duplicates = 0
        """Rows dropped as duplicates so far."""
        self.rejected = 0
        """Rows refused because one alone exceeds the byte limit."""

    @property
    def chunks(self) -> int:
        """Chunks emitted so far."""
        return self._emitted

    @property
    def table(self) -> EmailTable:
        """The email table."""
        return self._table

    def _size(self, out: bytes) -> int:
        """Bytes a row (or the header) takes in ``data`` as sent, line break included."""
        if self._urlencoded:
            return percent_encoded_size(out) + 3
        return len(out) + 1

    def add(self, batch: RowBatch, events: list[Event]) -> None:
        """Place a batch of rows; append the events it causes (duplicates, chunks).

        Args:
            batch: the rows, in input order.
            events: where events are appended.
        """
        n = len(batch)
        if n == 0:
            return
        if self._sizes_only and BOUNDARY in b"\n".join(batch.outs):
            self._sizes_only = False
        opts = self._options.limits
        outs = batch.outs
        prefix: list[int] | None = None
        i = 0
        while i < n:
            b = self._open
            room_rows = opts.max_rows - b.alive
            room_bytes = opts.max_bytes - b.nbytes
            j = min(n, i + room_rows)
            need = -1
            if j > i:
                if prefix is None:
                    need = self._bytes_of(outs[i:j])
                    if need > room_bytes:
                        sizes = (
                            map(self._size, outs)
                            if self._urlencoded
                            else map(_one_more, map(len, outs))
                        )
                        prefix = list(accumulate(sizes, initial=0))
                if prefix is not None:
                    if prefix[j] - prefix[i] > room_bytes:
                        j = bisect_right(prefix, prefix[i] + room_bytes, i, j + 1) - 1
                    need = prefix[j] - prefix[i]
            if j == i:
                if b.alive == 0 and not b.batch.outs:
                    self._too_big(batch, i, events)
                    i += 1
                else:
                    self._cut()
                continue
            self._take(b, batch, i, j, need, events)
            i = j
            if self._pending and b.alive >= opts.min_rows:
                # Out as soon as allowed: a held-back chunk's rows are the biggest memory.
                self._emit_pending(events)
        if self._pending and self._open.alive >= opts.min_rows:
            self._emit_pending(events)

    def finish(self, events: list[Event]) -> None:
        """Emit what is left (called once, at the end of the input)."""
        last = self._open
        if last.alive:
            self._register(last)
        if last.alive and last.alive < self._options.limits.min_rows and self._pending:
            self._rebalance(self._pending[-1], last, events)
        self._emit_pending(events)
        if last.alive:
            events.append(self._finalize(last))
        self._table.release()  # every email is registered: the table's work is done

    # -- filling --------------------------------------------------------------------------

    def _bytes_of(self, outs: Sequence[bytes]) -> int:
        if self._urlencoded:
            return sum(map(self._size, outs))
        return sum(map(len, outs)) + len(outs)

    def _too_big(self, batch: RowBatch, i: int, events: list[Event]) -> None:
        self.rejected += 1
        start, end = self._locate(batch.lines[i])
        events.append(
            Rejected(
                line=batch.lines[i],
                start_offset=start,
                end_offset=end,
                field=None,
                reason=(
                    f"the row takes {self._size(batch.outs[i])} bytes, more than a request "
                    f"may carry with its header ({self._options.limits.max_bytes} bytes)"
                ),
            )
        )

    def _take(
        self,
        b: _Building,
        batch: RowBatch,
        i: int,
        j: int,
        need: int,
        events: list[Event],
    ) -> None:
        rows = b.batch
        base = len(rows.outs)
        if i == 0 and j == len(batch.outs):
            emails = batch.emails
            rows.outs += batch.outs
            rows.lines += batch.lines
        else:
            emails = batch.emails[i:j]
            rows.outs += batch.outs[i:j]
            rows.lines += batch.lines[i:j]
        rows.emails += emails
        b.alive += j - i
        b.nbytes += need
        self.rows_sent += j - i
        # Repeats inside the chunk, found in C: setdefault returns another row's number
        # only for an email the chunk already holds. The Python loop runs over repeats only.
        index = b.index
        before = len(index)
        positions = range(base, base + j - i)
        found = list(map(index.setdefault, emails, positions))
        if len(index) - before == j - i:
            return
        for r in compress(positions, map(ne, found, positions)):
            email = rows.emails[r]
            q = index[email]
            index[email] = r
            if rows.outs[q]:
                self._drop(b, q, rows.lines[r], events)

    def _register(self, b: _Building) -> None:
        """Put the chunk's distinct emails in the email table (once, when it is cut or at
        the end): an email last seen in an earlier chunk makes this one wait for it."""
        if b.registered:
            return
        b.registered = True
        keys = list(b.index)
        for k, previous in self._table.insert(keys, b.code):
            # Its own code: a fingerprint clash, or a chunk a whole period back.
            distance = CODE_PERIOD if previous == b.code else code_distance(b.code, previous)
            if distance <= b.seq:
                b.waits.add(b.seq - distance)
            if self._options.keep_emails:
                b.repeated.append(keys[k])

    def _drop(self, b: _Building, q: int, replaced_by: int, events: list[Event]) -> None:
        rows = b.batch
        b.nbytes -= self._size(rows.outs[q])
        rows.outs[q] = b""
        b.alive -= 1
        self.rows_sent -= 1
        self.duplicates += 1
        start, end = self._locate(rows.lines[q])
        events.append(
            Duplicate(
                line=rows.lines[q],
                start_offset=start,
                end_offset=end,
                replaced_by=replaced_by,
                email=rows.emails[q].decode("utf-8", "replace"),
            )
        )

    def _cut(self) -> None:
        self._register(self._open)
        self._pending.append(self._open)
        self._open = _Building(self._open.seq + 1, self._header_bytes)

    # -- emitting -------------------------------------------------------------------------

    def _emit_pending(self, events: list[Event]) -> None:
        for b in self._pending:
            if b.alive:
                events.append(self._finalize(b))
        self._pending.clear()
        if self._forget is not None:
            lines = self._open.batch.lines
            self._forget(lines[0] if lines else 1 << 62)

    def _finalize(self, b: _Building) -> Chunk:
        opts = self._options
        rows = b.batch
        emails: bytes | None = None
        if opts.keep_emails:  # the live rows' emails, in ``lines`` order, joined (1/3 the RAM)
            live = compress(rows.emails, rows.outs) if b.alive < len(rows.outs) else rows.emails
            emails = b"\n".join(live)
        # Registered (or never to be): its emails are not needed any more; let them go
        # before the body is built (a chunk's emails and index are ~4 MB).
        rows.emails = []
        b.index = {}
        lines = (
            array("I", compress(rows.lines, rows.outs)) if b.alive < len(rows.outs) else rows.lines
        )
        body, content_type, data_bytes, columns, size = self._body(b)
        assert data_bytes <= opts.limits.max_bytes, "byte limit broken"
        assert len(lines) <= opts.limits.max_rows, "row limit broken"
        assert b.seq == self._emitted, "chunks out of order"
        self._emitted += 1
        waits = tuple(sorted(w for w in b.waits if w < b.seq))
        if opts.kind is ChunkKind.REMOVE:
            waits = ()  # removing an email twice is idempotent: order does not matter
        return Chunk(
            seq=b.seq,
            kind=opts.kind,
            rows=len(lines),
            lines=lines,
            first_line=lines[0],
            last_line=lines[-1],
            start_offset=self._locate(rows.lines[0])[0],
            end_offset=self._locate(rows.lines[-1])[1],
            columns=columns,
            body=body,
            content_type=content_type,
            data_bytes=data_bytes,
            digest=hashlib.sha256(body).hexdigest() if body else "",
            waits_for=waits,
            after=waits[-1] if waits else None,
            emails=emails,
            repeated=tuple(b.repeated),
            body_bytes=size,
        )

    def _body(self, b: _Building) -> tuple[bytes, str, int, tuple[str, ...], int]:
        """The chunk's body (``b""`` when only its size is asked for), content type,
        ``data`` bytes, columns and body length."""
        opts = self._options
        outs = b.batch.outs
        header, columns = self._header, self._columns
        if self._sizes_only:
            # data = header LF, then each live row and LF (dropped rows are b"": length 0)
            data_bytes = len(header) + 1 + sum(map(len, outs)) + b.alive
            sized = multipart_size(opts.activity_type.value, data_bytes, opts.lists)
            if sized is not None:
                return b"", sized[1], data_bytes, columns, sized[0]
        if b.alive < len(outs):
            outs = list(filter(None, outs))
        if self._nul:
            header, columns, outs = self._project(outs)
        if self._urlencoded:
            data = b"".join((header, b"\n", b"\n".join(outs), b"\n"))
            body, content_type, data_bytes = urlencoded_body(
                opts.activity_type.value, data, opts.lists
            )
            del data
        else:
            body, content_type, data_bytes = multipart_body_of_lines(
                opts.activity_type.value, header, outs, opts.lists
            )
        return body, content_type, data_bytes, columns, len(body)

    def _project(self, outs: list[bytes]) -> tuple[bytes, tuple[str, ...], list[bytes]]:
        """Keep the columns some row fills (and the first, the email). Rows are split one
        at a time (twice), never all at once: a chunk of 40,000 rows of 34 values would
        otherwise hold over a million small objects."""
        width = len(self._columns)
        filled = bytearray(width)
        filled[0] = 1
        for out in outs:
            for k, value in enumerate(out.split(b"\x00")):
                if value:
                    filled[k] = 1
        used = [k for k in range(width) if filled[k]]
        columns = tuple(self._columns[k] for k in used)
        if len(used) == 1:
            return columns[0].encode("ascii"), columns, [out.split(b"\x00", 1)[0] for out in outs]
        pick = itemgetter(*used)
        projected = [b",".join(pick(out.split(b"\x00"))) for out in outs]
        return ",".join(columns).encode("ascii"), columns, projected

    # -- the end: no chunk below min_rows -------------------------------------------------

    def _rebalance(self, p: _Building, f: _Building, events: list[Event]) -> None:
        """Make the short last chunk ``f`` reach ``min_rows``: merge it into the chunk
        before it, or move rows from that chunk's end into it."""
        opts = self._options.limits
        prows, frows = p.batch, f.batch
        f_emails = {
            email: line
            for email, line, out in zip(frows.emails, frows.lines, frows.outs, strict=True)
            if out
        }
        # Merged, the rows of p that f repeats would go: count without them.
        repeated = [
            out
            for email, out in zip(prows.emails, prows.outs, strict=True)
            if out and email in f_emails
        ]
        if (
            p.alive + f.alive - len(repeated) <= opts.max_rows
            and p.nbytes + f.nbytes - self._header_bytes - self._bytes_of(repeated)
            <= opts.max_bytes
        ):
            self._merge(p, f, events)
            return
        moved = RowBatch()
        while f.alive < opts.min_rows and p.alive > opts.min_rows and prows.outs:
            out = prows.outs[-1]
            size = self._size(out) if out else 0
            if out and (f.alive + 1 > opts.max_rows or f.nbytes + size > opts.max_bytes):
                break
            email, line = prows.emails.pop(), prows.lines.pop()
            prows.outs.pop()
            if out:
                p.alive -= 1
                p.nbytes -= size
                if email in f_emails:
                    self.rows_sent -= 1
                    self.duplicates += 1
                    start, end = self._locate(line)
                    events.append(
                        Duplicate(
                            line=line,
                            start_offset=start,
                            end_offset=end,
                            replaced_by=f_emails[email],
                            email=email.decode("utf-8", "replace"),
                        )
                    )
                    out = b""
                else:
                    f.alive += 1
                    f.nbytes += size
                    f_emails[email] = line
            moved.append(out, email, line)
        if not moved.outs:
            return
        # moved holds rows in reverse order; they go in front of f's rows.
        rest = RowBatch(
            outs=moved.outs[::-1] + frows.outs,
            emails=moved.emails[::-1] + frows.emails,
            lines=array("I", moved.lines[::-1]) + frows.lines,
        )
        f.batch = rest
        f.waits |= p.waits
        p_alive = {email for email, out in zip(prows.emails, prows.outs, strict=True) if out}
        if p_alive & set(f_emails):
            f.waits.add(p.seq)
        else:
            f.waits.discard(p.seq)

    def _merge(self, p: _Building, f: _Building, events: list[Event]) -> None:
        prows, frows = p.batch, f.batch
        p_rows = {
            email: q
            for q, (email, out) in enumerate(zip(prows.emails, prows.outs, strict=True))
            if out
        }
        for email, out, line in zip(frows.emails, frows.outs, frows.lines, strict=True):
            if out and email in p_rows:
                self._drop(p, p_rows.pop(email), line, events)
        prows.outs += frows.outs
        prows.emails += frows.emails
        prows.lines += frows.lines
        p.alive += f.alive
        p.nbytes += f.nbytes - self._header_bytes
        p.waits |= f.waits
        p.waits.discard(p.seq)
        p.repeated += f.repeated
        f.alive = 0
        f.batch = RowBatch()
