"""Map an input file's header cells to the API's activity columns (spec §7.4).

Matching goes through :func:`bulkops.wire.columns.lookup_column`: case, accents, spaces and
punctuation do not matter, and the aliases people actually have ("E-mail", "email_address",
"firstname", "Zip", "Postal Code", "Custom Field 3", "Vorname", ...) are known. The caller
may map any source header explicitly (``{"Mail 1": "EMAIL ADDRESS"}``) or drop it
(``{"Internal id": ""}``); the explicit mapping wins over the table.

Rules, the same as the server's for ``data`` headers: a cell that is empty after stripping
spaces is dropped with its column; two cells naming one column, or no email column, is an
error; an unknown name is an error that lists the known names, unless the caller chooses to
ignore unknown columns. For a remove activity only the email column matters: every other
column is dropped, known or not.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence

import attrs

from bulkops.errors import ConfigError, InputError
from bulkops.stream.records import ChunkKind
from bulkops.wire.columns import EMAIL_COLUMN, Column, header_key, known_column_names, lookup_column

__all__ = ["IGNORE_TARGETS", "ColumnMap", "map_header", "mapping_pairs"]

#: Explicit targets that drop a column.
IGNORE_TARGETS = frozenset({"", "-", "ignore", "skip", "none"})


@attrs.frozen(kw_only=True)
class ColumnMap:
    """The columns of an input and what each one fills.

    Attributes:
        sources: the header cells as written (surrounding spaces stripped).
        columns: the column each source fills, or None when it is dropped.
    """

    sources: tuple[str, ...]
    columns: tuple[Column | None, ...]

    @property
    def email_index(self) -> int:
        """The position of the email column among the sources."""
        return self.columns.index(EMAIL_COLUMN)

    @property
    def kept(self) -> tuple[int, ...]:
        """Positions of the sources that are sent, in order."""
        return tuple(i for i, column in enumerate(self.columns) if column is not None)

    @property
    def sent(self) -> tuple[Column, ...]:
        """The columns sent, in source order."""
        return tuple(column for column in self.columns if column is not None)

    @property
    def keeps_all(self) -> bool:
        """True when every source column is sent (rows can travel as they are)."""
        return all(column is not None for column in self.columns)

    def header_line(self) -> bytes:
        """The ``data`` header line: canonical names, comma-separated, no line break."""
        return ",".join(column.name for column in self.sent).encode("ascii")


def mapping_pairs(
    mapping: Mapping[str, str] | Iterable[tuple[str, str]] | Iterable[str],
) -> tuple[tuple[str, str], ...]:
    """Normalise explicit mappings: a mapping, ``(source, target)`` pairs or
    ``"source=TARGET"`` strings.

    Raises:
        ConfigError: a string without ``=``.
    """
    items = mapping.items() if isinstance(mapping, Mapping) else mapping
    pairs: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, str):
            source, sep, target = item.partition("=")
            if not sep:
                raise ConfigError(f"a column mapping reads source=TARGET, not {item!r}")
            pairs.append((source.strip(), target.strip()))
        else:
            source, target = item
            pairs.append((source.strip(), target.strip()))
    return tuple(pairs)


def _resolve_target(source: str, target: str) -> Column | None:
    if target.strip().lower() in IGNORE_TARGETS:
        return None
    column = lookup_column(target)
    if column is None:
        known = ", ".join(known_column_names())
        raise ConfigError(f"the mapping {source}={target} names no column; known columns: {known}")
    return column


#: Error messages name this many header cells at most, each cut to ``_NAME_CHARS``: a header
#: of 100,000 columns gets a message of a few lines, not megabytes.
_SHOWN_NAMES = 10
_NAME_CHARS = 60


def _short(name: str) -> str:
    return name if len(name) <= _NAME_CHARS else name[: _NAME_CHARS - 1] + "…"


def _some_names(names: Sequence[str], *, quote: Callable[[str], str] = '"{}"'.format) -> str:
    """The first few names, quoted, and how many more there are."""
    shown = ", ".join(quote(_short(name)) for name in names[:_SHOWN_NAMES])
    rest = len(names) - _SHOWN_NAMES
    return f"{shown} and {rest:,} more" if rest > 0 else shown


_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _check_controls(sources: Sequence[str], line: int) -> None:
    """Refuse a header cell holding a control character (``First\\0Name``): matching
    ignores everything but letters and digits, so it would be mapped without a word.

    Raises:
        InputError: naming the cell, and the encoding when NULs alternate with text
            (UTF-16 read as UTF-8).
    """
    for source in sources:
        found = _CONTROLS.search(source)
        if found is None:
            continue
        hint = ""
        text = "".join(sources)
        if text.count("\0") * 3 >= len(text):
            order = "utf-16-be" if text.startswith("\0") else "utf-16-le"
            hint = (
                f"; every other byte is NUL: the file looks like {order.upper()} without a "
                f"byte-order mark: use --encoding {order}"
            )
        raise InputError(
            f"the header cell {_short(source)!r} holds the control character "
            f"U+{ord(found.group()):04X}{hint}",
            line=line,
            field=_short(source),
        )


def map_header(
    cells: Sequence[str],
    *,
    mapping: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    ignore_unknown: bool = False,
    kind: ChunkKind = ChunkKind.ADD,
    line: int = 1,
) -> ColumnMap:
    """Map header cells to columns.

    Args:
        cells: the header record's fields as read.
        mapping: explicit ``source -> target`` mappings; a target of ``""``, ``"-"`` or
            ``"ignore"`` drops the column. Sources match exactly or by
            :func:`~bulkops.wire.columns.header_key`.
        ignore_unknown: drop unknown columns instead of failing.
        kind: for :attr:`ChunkKind.REMOVE` only the email column is kept.
        line: the header's line, for error messages.

    Returns:
        The column map.

    Raises:
        InputError: an unknown column (the message lists the known names), two columns
            naming the same one, or no email column.
        ConfigError: an explicit mapping names no known column, or a source the header
            does not have.
    """
    pairs = mapping_pairs(mapping)
    explicit: dict[str, Column | None] = {}
    explicit_keys: dict[str, Column | None] = {}
    for source, target in pairs:
        resolved = _resolve_target(source, target)
        explicit[source] = resolved
        explicit_keys[header_key(source)] = resolved
    sources = tuple(cell.strip() for cell in cells)
    _check_controls(sources, line)
    used: set[str] = set()
    columns: list[Column | None] = []
    unknown: list[str] = []
    owner: dict[str, str] = {}
    for source in sources:
        column: Column | None
        if source in explicit:
            column = explicit[source]
            used.add(source)
        elif source and header_key(source) in explicit_keys:
            column = explicit_keys[header_key(source)]
            used.update(s for s, _ in pairs if header_key(s) == header_key(source))
        elif not source:
            column = None
        else:
            column = lookup_column(source)
            if column is None and kind is ChunkKind.ADD and not ignore_unknown:
                unknown.append(source)
        if kind is ChunkKind.REMOVE and column is not EMAIL_COLUMN:
            column = None
        if column is not None:
            if column.name in owner:
                raise InputError(
                    f'columns "{owner[column.name]}" and "{source}" both name {column.name}',
                    line=line,
                    field=source,
                )
            owner[column.name] = source
        columns.append(column)
    missing = [source for source, _ in pairs if source not in used]
    if missing:
        raise ConfigError(f"the mapping names columns the file does not have: {', '.join(missing)}")
    _check_mapped(sources, columns, unknown, line)
    return ColumnMap(sources=sources, columns=tuple(columns))


def _check_mapped(
    sources: tuple[str, ...], columns: list[Column | None], unknown: list[str], line: int
) -> None:
    """Refuse a header with unknown columns or without an email column."""
    if unknown:
        known = ", ".join(known_column_names())
        raise InputError(
            f"unknown column{'s' if len(unknown) > 1 else ''} {_some_names(unknown)}"
            f"{f' ({len(unknown):,} of {len(sources):,} columns)' if len(unknown) > 1 else ''}"
            f"; known columns are {known} (and their usual spellings); map a column "
            "explicitly with source=TARGET or ignore unknown columns",
            line=line,
            field=_short(unknown[0]),
        )
    if EMAIL_COLUMN not in columns:
        raise InputError(
            "the header has no email address column (EMAIL ADDRESS, Email, E-mail, ...); "
            f"columns found: {_some_names(sources, quote=repr) or 'none'}",
            line=line,
        )
