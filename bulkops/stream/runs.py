"""Where the records of a CSV input are: runs of records on their way to the chunker, and
the index that answers for their source offsets later.

A :class:`Run` is one region's records (or lines) between the bulk reading and the batch:
their ``data`` lines and email keys, how many were handled, the line each starts on when
some span several lines. :class:`LineIndex` keeps, per committed run, what it takes to
answer ``locate(line) -> (start_offset, end_offset)`` for the few records the chunker asks
about (chunk ends, dropped duplicates), and forgets runs as chunks go out.

For UTF-8 input the records themselves stand for their lengths (a record's source length
is its length plus its LF): the reading never makes a list of lengths that is hardly ever
used.

Pure: no IO, no clock.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

__all__ = ["LineIndex", "Run"]


class LineIndex:
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


class Run:
    """One region's records (or lines) on their way to the batch, and how far they got."""

    __slots__ = (
        "_at",
        "_cursor",
        "_offset",
        "a",
        "b",
        "keys",
        "line0",
        "line_after",
        "outs",
        "records",
        "sizes",
        "src0",
        "starts",
        "stop",
        "units",
        "upto",
    )

    def __init__(self, a: int, b: int, line0: int, src0: int, units: list[bytes]) -> None:
        self.a = a
        self.b = b
        self.line0 = line0
        self.src0 = src0
        self.units = units
        """The records (or lines) without their LF."""
        self.sizes: list[int] | list[bytes] = units
        """Source lengths, or the units themselves when the source is UTF-8."""
        self.starts: list[int] | None = None
        """The line each unit starts on, and the line after (None: one line each)."""
        self.outs: list[bytes] = []
        self.keys: list[bytes] = []
        n = len(units)
        self.upto = n  # units handled
        self.records = n  # records among them
        self.stop = b  # where they end in the buffer
        self.line_after = line0 + n
        self._cursor, self._offset, self._at = 0, src0, a

    def numbers(self) -> range | list[int]:
        """The line each unit starts on (one more entry: the line after the last)."""
        if self.starts is None:
            return range(self.line0, self.line0 + len(self.units) + 1)
        return self.starts

    def size(self, i: int) -> int:
        """The source length of unit ``i`` with its LF."""
        size = self.sizes[i]
        return len(size) + 1 if isinstance(size, bytes) else size

    def seek(self, i: int) -> tuple[int, int]:
        """``(source offset, buffer position)`` of unit ``i`` (never before the last)."""
        units = self.units
        skipped = sum(map(len, units[self._cursor : i])) + i - self._cursor
        self._at += skipped
        if isinstance(self.sizes[0], bytes):
            self._offset += skipped
        else:
            self._offset += sum(self.sizes[self._cursor : i])
        self._cursor = i
        return self._offset, self._at

    def stop_at(self, upto: int, stop: int, line_after: int) -> None:
        """Only the first ``upto`` units are handled; they end at ``stop``."""
        self.records -= self.upto - upto
        self.upto, self.stop, self.line_after = upto, stop, line_after
