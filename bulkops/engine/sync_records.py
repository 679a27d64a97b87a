"""The raw records of a sync's file, and the record set that lets the next sync skip them.

A CSV file is read as bytes and cut into **units**: one physical line, or several when a
quoted field holds line breaks. Each unit's exact bytes (its line break left out) get an
8-byte BLAKE2b digest. The **record set** of a snapshot holds, in the order of the file of
the sync that saved it, one entry per unit that was the winning row of its email and ended
``unchanged``, ``added`` or ``updated``: its digest, the **tag** of its email (4 bytes of
BLAKE2b of the lower-cased key) and the ``rowid`` of its member in the snapshot. The set is
bound to a **record key** (the header unit's bytes and the reading options): any change to
those and it is not used.

:func:`scan` matches the units of a new file against an old set: a unit whose digest is an
old entry's, met in (mostly) the same order, is *matched*; any other is *fresh*. Matching
is a hint: a unit wrongly left fresh only costs it a parse (the diff decides exactly), and
a digest equal to an old one means the same bytes (2**-64 per pair otherwise).

Invariants:

* **Units are records.** The cut is exact only for files every CSV reader agrees on: no
  bare ``\\r``, no ``sep=`` line or blank line before the header, a comma, semicolon, tab or
  pipe delimiter, and every unit holding a ``"`` a strict RFC 4180 record
  (:func:`strict_pattern`). :class:`NotSimple` is raised otherwise, and the sync reads the
  file in full.
* **Compact.** 4 bytes per unit of the new file (its match) and one per old entry (seen);
  the old digests are read through :class:`Digests` (a snapshot's: a window of them at a
  time), the resynchronising index holds 12 bytes per :data:`_ANCHOR_EVERY` entries: a
  5M-row file and set in about 25 MB.

Pure but for reading the file.
"""

from __future__ import annotations

import hashlib
import re
import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from functools import partial
from operator import methodcaller
from pathlib import Path
from typing import Any, Protocol, overload

import attrs

__all__ = [
    "BLOCK",
    "NotSimple",
    "OldSet",
    "Scan",
    "Unit",
    "digest",
    "iter_units",
    "record_key",
    "scan",
    "strict_pattern",
    "tag",
    "units_at",
]

#: Bytes read at a time (a block's lines as bytes objects are ~1.5x its size in memory).
BLOCK = 1 << 20
#: How far ahead of the expected old entry a unit is looked for (deleted rows).
_WINDOW = 64
#: Every how many old entries one goes in the resynchronising index.
_ANCHOR_EVERY = 32
#: Units compared at once with the old digests (a slice of each array, in C).
_RUN = 16
_ONES = b"\1" * _RUN
_QUOTE = b'"'
_BREAK = b"\n"
_CR = b"\r"
_LITTLE = sys.byteorder == "little"


class NotSimple(Exception):
    """The file cannot be cut into units safely (the message says why)."""


def digest(content: bytes) -> int:
    """The 64-bit digest of a unit's bytes."""
    return int.from_bytes(hashlib.blake2b(content, digest_size=8).digest())


def tag(key: str) -> int:
    """The 32-bit tag of an email key (lower-cased again: any spelling, one tag)."""
    data = key.lower().encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=4).digest())


def record_key(header: bytes, options: str) -> str:
    """What a record set is bound to: the header unit and the reading options."""
    return hashlib.blake2b(header + b"\0" + options.encode(), digest_size=16).hexdigest()


def strict_pattern(delimiter: str) -> re.Pattern[bytes]:
    """A strict RFC 4180 record with ``delimiter`` (fields quoted whole, ``""`` inside)."""
    d = re.escape(delimiter.encode())
    plain = rb'[^"\r\n' + d + rb"]*"
    quoted = rb'"(?:[^"]|"")*"'
    field = rb"(?:" + quoted + rb"|" + plain + rb")"
    return re.compile(field + rb"(?:" + d + field + rb")*\r?")


@attrs.frozen
class Unit:
    """A unit of the file: its bytes (no final line break), first line, physical lines."""

    content: bytes
    line: int
    lines: int


class _Cutter:
    """Cuts blocks of the file into units; ``pending`` holds a record still open."""

    def __init__(self, delimiter: str | None) -> None:
        self.strict = None if delimiter is None else strict_pattern(delimiter)
        self.line = 1
        self.pending: list[bytes] = []
        self.quotes = 0

    def cut(self, pieces: list[bytes], quoted: bool) -> tuple[list[bytes], list[int] | None]:
        """The units of whole lines ``pieces``: contents, and the lines they start on
        (None: one line each, from :attr:`line` on). :attr:`line` moves past them."""
        if not self.pending and not quoted:
            self.line += len(pieces)
            return pieces, None
        contents: list[bytes] = []
        lines: list[int] = []
        for piece in pieces:
            if self.pending or _QUOTE in piece:
                self.pending.append(piece)
                self.quotes += piece.count(_QUOTE)
                if self.quotes & 1:
                    continue
                content = b"\n".join(self.pending)
                count = len(self.pending)
                self.pending = []
                self.quotes = 0
                if self.strict is not None and self.strict.fullmatch(content) is None:
                    raise NotSimple(f"the record on line {self.line} is not strict CSV")
                contents.append(content)
                lines.append(self.line)
                self.line += count
            else:
                contents.append(piece)
                lines.append(self.line)
                self.line += 1
        return contents, lines


def _blocks(
    path: Path, cutter: _Cutter, start: int = 0
) -> Iterator[tuple[list[bytes], list[int] | None, int, int]]:
    """``(contents, lines or None, first line, offset)`` of each block of whole lines from
    byte ``start`` on; ``offset`` is where the block's first unit begins in the file (-1
    when it began in an earlier block)."""
    rest = b""
    offset = start
    with path.open("rb") as handle:
        handle.seek(start)
        while True:
            block = handle.read(BLOCK)
            data = rest + block
            if block:
                # Whole lines up to ``cut``; the rest (after the last break) waits for the
                # next block. No copy of the block is made but the split.
                cut = data.rfind(_BREAK) + 1
                pieces = data.split(_BREAK)
                rest = pieces.pop()
            else:
                cut = len(data)
                pieces = [data] if data else []
            if data.find(_CR, 0, cut) >= 0 and data.count(_CR, 0, cut) != data.count(
                b"\r\n", 0, cut
            ):
                raise NotSimple("a line ends with a bare carriage return")
            first = cutter.line
            # A block that begins inside a quoted record cannot be cut again from its start.
            at = -1 if cutter.pending else offset
            offset += cut
            contents, lines = cutter.cut(pieces, data.find(_QUOTE, 0, cut) >= 0)
            del data
            if contents:
                yield contents, lines, first, at
            if not block:
                break
    if cutter.pending:
        raise NotSimple("the file ends inside a quoted field")


def iter_units(path: Path, delimiter: str | None = None) -> Iterator[Unit]:
    """Every unit of the file in order, the header first.

    Raises:
        NotSimple: the file is not one :func:`scan` can cut (see the module's invariants).
        OSError: it cannot be read.
    """
    cutter = _Cutter(delimiter)
    for contents, lines, first, _at in _blocks(path, cutter):
        starts = lines if lines is not None else range(first, first + len(contents))
        ends = [*starts[1:], cutter.line]
        for content, start, end in zip(contents, starts, ends, strict=True):
            yield Unit(content, start, end - start)


def units_at(
    path: Path, delimiter: str, restarts: list[tuple[int, int, int]], indexes: list[int]
) -> list[Unit]:
    """The data units at ``indexes`` (0-based, the header not counted; ascending), cutting
    only the blocks that hold them, from the scan's ``restarts``."""
    found: list[Unit] = []
    wanted = iter(indexes)
    want = next(wanted, None)
    while want is not None:
        index, offset, line = restarts[bisect_right(restarts, (want, 1 << 62, 0)) - 1]
        cutter = _Cutter(delimiter)
        cutter.line = line
        for contents, lines, first, at in _blocks(path, cutter, offset):
            starts = lines if lines is not None else range(first, first + len(contents))
            skip = 1 if at == 0 else 0  # the header
            count = len(contents) - skip
            while want is not None and want < index + count:
                j = want - index + skip
                end = starts[j + 1] if j + 1 < len(starts) else cutter.line
                found.append(Unit(contents[j], starts[j], end - starts[j]))
                want = next(wanted, None)
            index += count
            if want is None or restarts[bisect_right(restarts, (want, 1 << 62, 0)) - 1][0] > index:
                break  # the next one wanted is further: restart nearer to it
    return found


class Digests(Protocol):
    """The old digests as :func:`scan` reads them: an ``array("Q")``, or a reader of a
    snapshot's that holds only a window of them (``sync_snap.DigestWindow``)."""

    def __len__(self) -> int: ...

    @overload
    def __getitem__(self, key: int) -> int: ...

    @overload
    def __getitem__(self, key: slice) -> array[int]: ...

    def index(self, value: int, start: int, stop: int, /) -> int: ...


@attrs.define
class OldSet:
    """A record set as read from a snapshot: digests, in the old file's order (and its tags,
    for a set built in memory; a snapshot's stay on disk: ``sync_snap.BlobColumn``)."""

    digests: Digests = attrs.field(factory=lambda: array("Q"))
    tags: array[int] = attrs.field(factory=lambda: array("I"))

    def __len__(self) -> int:
        return len(self.digests)


@attrs.define
class Scan:
    """A file's units against an old record set.

    Attributes:
        header: the header unit's bytes.
        header_lines: its physical lines.
        match: per data unit, the old entry it matched, or -1 (fresh).
        fresh: the fresh units (blank ones included).
        seen: per old entry, 1 when a unit matched it.
        lines: physical lines in the file.
        fresh_at: the index of each fresh unit.
        restarts: ``(data unit index, byte offset, line)`` where a block of whole records
            begins (:func:`units_at` cuts from there).
    """

    header: bytes
    header_lines: int
    match: array[int]
    fresh: list[Unit]
    seen: bytearray
    lines: int
    fresh_at: list[int] = attrs.field(factory=list)
    restarts: list[tuple[int, int, int]] = attrs.field(factory=list)

    def disappeared(self) -> Iterator[int]:
        """Old entries no unit matched (found by ``find``, in C: no copy of ``seen``)."""
        seen = self.seen
        at = seen.find(0)
        while at >= 0:
            yield at
            at = seen.find(0, at + 1)


def scan(path: Path, old: OldSet, delimiter: str) -> Scan:
    """Cut ``path`` into units and match each against ``old`` (see the module docstring).

    Raises:
        NotSimple: the file cannot be cut safely.
    """
    olds = old.digests
    total = len(olds)
    anchors = _Anchors(olds)
    seen = bytearray(total)
    match = array("i")
    fresh: list[Unit] = []
    hasher = partial(hashlib.blake2b, digest_size=8)
    to_digest = methodcaller("digest")
    j = 0
    header: Unit | None = None
    fresh_at: list[int] = []
    restarts: list[tuple[int, int, int]] = []
    cutter = _Cutter(delimiter)
    # The hot loop (one pass over a million units): kept inline on purpose; the digests
    # of a block are made in C (map), the loop only compares.
    for contents, lines, first, at in _blocks(path, cutter):
        starts = lines if lines is not None else range(first, first + len(contents))
        if at >= 0:
            restarts.append((len(match), at, first))
        if header is None:
            end = starts[1] if len(starts) > 1 else cutter.line
            header = Unit(contents[0], first, end - first)
            _check_header(header)
            contents, starts = contents[1:], starts[1:]
        digests = _digests(contents, hasher, to_digest)
        for a in range(0, len(digests), _RUN):
            b = min(a + _RUN, len(digests))
            if digests[a:b] == olds[j : j + b - a] and seen.find(1, j, j + b - a) < 0:
                match.extend(range(j, j + b - a))
                seen[j : j + b - a] = _ONES[: b - a]
                j += b - a
                continue
            for i in range(a, b):
                d = digests[i]
                if j < total and olds[j] == d and not seen[j]:
                    k = j
                else:
                    k = _find(olds, anchors, d, j, total)
                if k >= 0 and not seen[k]:
                    seen[k] = 1
                    match.append(k)
                    j = k + 1
                else:
                    match.append(-1)
                    fresh_at.append(len(match) - 1)
                    end = starts[i + 1] if i + 1 < len(starts) else cutter.line
                    fresh.append(Unit(contents[i], starts[i], end - starts[i]))
    if header is None:
        raise NotSimple("no header on the first line")
    total_lines = cutter.line - 1
    return Scan(header.content, header.lines, match, fresh, seen, total_lines, fresh_at, restarts)


def _digests(contents: list[bytes], hasher: Any, to_digest: Any) -> array[int]:
    """:func:`digest` of each of ``contents``, in C: the digests joined and read as one
    array (big-endian, as :func:`digest` reads them)."""
    out = array("Q")
    out.frombytes(b"".join(map(to_digest, map(hasher, contents))))
    if _LITTLE:
        out.byteswap()
    return out


def _check_header(header: Unit) -> None:
    if header.line != 1 or not header.content.strip():
        raise NotSimple("no header on the first line")
    if header.content.lower().startswith(b"sep="):
        raise NotSimple("an Excel sep= line")


class _Anchors:
    """The resynchronising index: every :data:`_ANCHOR_EVERY`-th old entry, found by its
    digest. Two sorted arrays and a bisect (12 bytes an anchor), not a dict (~100)."""

    def __init__(self, olds: Digests) -> None:
        entries = range(0, len(olds), _ANCHOR_EVERY)
        digests = array("Q", map(olds.__getitem__, entries))  # in order: read once
        order = sorted(range(len(digests)), key=digests.__getitem__)
        self.digests = array("Q", map(digests.__getitem__, order))
        self.entries = array("I", map(entries.__getitem__, order))

    def get(self, d: int) -> int:
        """The old entry of the anchor with digest ``d``, or -1."""
        i = bisect_left(self.digests, d)
        if i < len(self.digests) and self.digests[i] == d:
            return self.entries[i]
        return -1


def _find(olds: Digests, anchors: _Anchors, d: int, j: int, total: int) -> int:
    """Where ``d`` is among the old digests near ``j`` or at an anchor; -1 if not found."""
    try:
        return olds.index(d, j + 1, min(total, j + _WINDOW))
    except ValueError:
        return anchors.get(d)
