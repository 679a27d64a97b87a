"""Where the records of a CSV input are: runs of records on their way to the chunker, and
the index that answers for their source offsets later.

A :class:`Run` is one region's records (or lines) between the bulk reading and the batch:
their ``data`` lines and email keys, how many were handled, the line each starts on when
some span several lines. :class:`LineIndex` keeps, per committed run, what it takes to
answer ``locate(line) -> (start_offset, end_offset)`` for the few records the chunker asks
about (chunk ends, dropped duplicates), and forgets runs as chunks go out.

Pure: no IO, no clock.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from itertools import accumulate
from typing import Any

__all__ = ["LineIndex", "Run"]


class LineIndex:
    """Source offsets of the records the chunker may still ask about (chunk ends, dropped
    duplicates), per run of records: its first line, its source offset, the source length
    of each record, and the line each record starts on when some span several lines (else
    record ``i`` is on line ``first + i``). A run's offsets are summed up once, when one of
    its records is first asked about.
    A record's end is given apart where its length is not known (a refused record the
    exact reading ended elsewhere than the fast pattern)."""

    def __init__(self) -> None:
        self._firsts: list[int] = []
        # offset, sizes, starts, and the sizes' prefix sums once a record of it is asked for
        self._runs: list[list[Any]] = []
        self._ends: dict[int, int] = {}
        self.eof: int | None = None

    def add(
        self,
        line: int,
        offset: int,
        sizes: list[int],
        starts: list[int] | None = None,
    ) -> None:
        """A run: the records' source lengths, and the line each starts on."""
        if sizes:
            self._firsts.append(line)
            self._runs.append([offset, sizes, starts, None])

    def end_at(self, line: int, offset: int) -> None:
        self._ends[line] = offset

    def locate(self, line: int) -> tuple[int, int]:
        k = bisect_right(self._firsts, line) - 1
        run = self._runs[k]
        offset, sizes, starts, prefix = run
        if prefix is None:  # the run's first question: its offsets, once
            # (an array: a list would hold an int object per record, ~2.5 MiB per chunk)
            prefix = run[3] = array("q", accumulate(sizes, initial=offset))
        i = line - self._firsts[k] if starts is None else bisect_left(starts, line)
        start: int = prefix[i]
        end = self._ends.get(line, prefix[i + 1])
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
        "utf8",
    )

    def __init__(
        self,
        a: int,
        b: int,
        line0: int,
        src0: int,
        units: list[bytes],
        sizes: list[int],
        *,
        utf8: bool,
    ) -> None:
        self.a = a
        self.b = b
        self.line0 = line0
        self.src0 = src0
        self.units = units
        """The records (or lines) without their LF."""
        self.sizes = sizes
        """Their source lengths, LF included."""
        self.utf8 = utf8
        """The source is UTF-8 (buffer positions move as source offsets do)."""
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

    def seek(self, i: int) -> tuple[int, int]:
        """``(source offset, buffer position)`` of unit ``i`` (never before the last)."""
        skipped = sum(self.sizes[self._cursor : i])
        self._offset += skipped
        if not self.utf8:
            skipped = sum(map(len, self.units[self._cursor : i])) + i - self._cursor
        self._at += skipped
        self._cursor = i
        return self._offset, self._at

    def stop_at(self, upto: int, stop: int, line_after: int) -> None:
        """Only the first ``upto`` units are handled; they end at ``stop``."""
        self.records -= self.upto - upto
        self.upto, self.stop, self.line_after = upto, stop, line_after
