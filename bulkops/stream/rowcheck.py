"""How the rows of one CSV input are checked and written, as its header decides.

:class:`RowRules` is built once the header is mapped. It holds the compiled fast patterns
of :mod:`bulkops.stream.validate` for these columns and this delimiter, how an accepted row
becomes a ``data`` line (:attr:`RowRules.mode`), and the exact check of one record
(:meth:`RowRules.check`): fields in; ``(data line, email key)``, a :class:`Problem`, or None
for a blank record out. It knows nothing of lines, offsets or events: the CSV row source
(:mod:`bulkops.stream.csvrows`) reports what it decides.

Pure: no IO, no clock.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from bulkops.stream.csv import oversized_field
from bulkops.stream.header import ColumnMap
from bulkops.stream.validate import (
    encode_row,
    plain_row_pattern,
    quoted_row_pattern,
    record_pattern,
    row_problem_of,
)
from bulkops.wire.columns import EMAIL_COLUMN

__all__ = ["Mode", "Problem", "Row", "RowRules"]

#: How an accepted row becomes a ``data`` line: as it is (``raw``), the email alone
#: (``email``, remove activities), the delimiter swapped for commas (``delimiter``), or
#: projected onto the kept columns (``project``).
Mode = Literal["raw", "email", "delimiter", "project"]


class Row(NamedTuple):
    """An accepted row."""

    out: bytes
    """Its ``data`` line, without the final LF."""
    key: bytes
    """Its email, lower-cased, UTF-8."""


class Problem(NamedTuple):
    """Why a record is rejected."""

    field: str | None
    """The source column at fault (its header as written), or None for the whole record."""
    reason: str
    """In words a user can act on."""


class RowRules:
    """The rules of one CSV input, fixed by its header.

    Args:
        columns: the mapped header.
        delimiter: the input's one-byte delimiter.
        remove: a remove activity (only the email is sent).
        encoding: the source encoding's name (for messages).
        max_record: the longest record accepted, in UTF-8 bytes with its line break.
    """

    def __init__(
        self,
        columns: ColumnMap,
        delimiter: bytes,
        *,
        remove: bool,
        encoding: str,
        max_record: int,
    ) -> None:
        self.columns = columns
        self.delimiter = delimiter
        self.encoding = encoding
        self.max_record = max_record
        self.ncols = len(columns.columns)
        self.email_at = columns.email_index
        self.kept = columns.kept
        self.sent: tuple[str, ...] = (
            (EMAIL_COLUMN.name,) if remove else tuple(c.name for c in columns.sent)
        )
        self.mode: Mode
        if remove:
            self.mode = "email"
        elif delimiter == b"," and columns.keeps_all:
            self.mode = "raw"
        elif columns.keeps_all:
            self.mode = "delimiter"
        else:
            self.mode = "project"
        self.plain = plain_row_pattern(columns, delimiter)
        """Quote-free lines (:func:`~bulkops.stream.validate.plain_row_pattern`)."""
        self.quoted = quoted_row_pattern(columns, delimiter)
        """One record from a given position, multi-line ones included."""
        self.quoted_lines = quoted_row_pattern(columns, delimiter, single_line=True)
        """Lines holding quotes, each alone."""
        # Rows that travel as they are (or as their email) may be taken whole from a
        # region dense in quotes; the others need their fields.
        self.records = record_pattern(columns, delimiter) if self.mode in ("raw", "email") else None
        """Whole regions, record by record (:func:`~bulkops.stream.validate.record_pattern`),
        or None when rows must be rewritten."""

    @property
    def header_line(self) -> bytes:
        """The ``data`` header line: the sent columns' names, comma-separated."""
        return ",".join(self.sent).encode("ascii")

    def rewrite(self, line: bytes) -> bytes:
        """A quote-free line in the ``data`` format: commas, kept columns only, values as
        they are (a CR before the line break stays, as when the delimiter is swapped)."""
        cr = line.endswith(b"\r")
        values = (line[:-1] if cr else line).split(self.delimiter)
        if self.mode == "project":
            values = [values[k] for k in self.kept]
        out = b",".join(v if b"," not in v else b'"' + v + b'"' for v in values)
        return out + b"\r" if cr else out

    def check_line(self, line: bytes) -> Row | Problem | None:
        """:meth:`check` for a quote-free line (without its LF)."""
        if len(line) + 1 > self.max_record:
            return self.oversized(line + b"\n")
        content = line[:-1] if line.endswith(b"\r") else line
        fields = content.split(self.delimiter) if content else []
        return self.check(fields, line, lenient=False, plain=line)

    def check(
        self, fields: list[bytes], raw: bytes, *, lenient: bool, plain: bytes | None
    ) -> Row | Problem | None:
        """The exact check of one record.

        Args:
            fields: its values, unquoted, as bytes.
            raw: its data line as it would travel as it is (no final line break).
            lenient: the stdlib's lenient quoting was used (then it cannot travel as is).
            plain: ``raw`` when the record holds no quote, else None.

        Returns:
            The accepted row, the problem, or None for a blank record.
        """
        if not any(field.strip() for field in fields):
            return None
        if len(fields) != self.ncols:
            return Problem(None, f"the row has {len(fields)} fields; the header has {self.ncols}")
        columns = self.columns
        values: list[str] = []
        for i, field in enumerate(fields):
            try:
                values.append(field.decode("utf-8"))
            except UnicodeDecodeError as exc:
                bad = field[exc.start : exc.start + 1].hex().upper()
                return Problem(
                    columns.sources[i],
                    f"byte 0x{bad} is not valid {self.encoding} text; name the "
                    "file's encoding (for example cp1252)",
                )
        problem = row_problem_of(columns, values)
        if problem is not None:
            return Problem(*problem)
        email = values[self.email_at].strip()
        key = email.lower().encode("utf-8")
        mode = self.mode
        if mode == "email":
            return Row(email.encode("utf-8"), key)
        if mode == "raw":
            if not lenient:
                return Row(raw, key)
        elif plain is not None:
            return Row(self.rewrite(plain), key)
        return Row(encode_row([values[k].strip() for k in self.kept]), key)

    def oversized(self, head: bytes) -> Problem:
        """The problem of a record longer than the bound; ``head`` is its first bytes (at
        least ``max_record + 1`` of them when it has that many)."""
        field = oversized_field(head[: self.max_record + 1], self.delimiter)
        sources = self.columns.sources
        return Problem(
            sources[field] if field < len(sources) else None,
            f"the record is longer than {self.max_record} bytes",
        )
