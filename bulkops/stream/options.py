"""The options of an import, one object per concern, from the command line to the chunker.

* :class:`ReadOptions` — how the input is read: format, encoding, delimiter, header
  mapping, unknown columns, the longest record.
* :class:`ChunkLimits` — how rows are cut into activity requests: form encoding, rows and
  bytes per request.

The CLI builds them from its arguments; the engine stores them in the run's journal as they
are (``msgspec.to_builtins`` / ``msgspec.convert``, the validators run again on the way
back) and hands the same objects to the pipeline and the chunker: a setting is named once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

import attrs

from bulkops.errors import ConfigError
from bulkops.stream.csv import DEFAULT_MAX_RECORD_BYTES, normalize_delimiter
from bulkops.stream.header import mapping_pairs
from bulkops.wire.activity import (
    DEFAULT_MAX_ACTIVITY_BYTES,
    DEFAULT_MAX_ACTIVITY_ROWS,
    MIN_ACTIVITY_ROWS,
)

__all__ = ["ChunkLimits", "Form", "Format", "ReadOptions"]

Format = Literal["csv", "xml"]
Form = Literal["multipart", "urlencoded"]


def _mapping(
    value: Mapping[str, str] | Iterable[tuple[str, str]] | Iterable[str],
) -> tuple[tuple[str, str], ...]:
    return mapping_pairs(value)


def _positive(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ConfigError(f"{attribute.name} must be at least 1, not {value}")


@attrs.frozen(kw_only=True)
class ReadOptions:
    """How an input file is read.

    Attributes:
        format: ``csv``, ``xml``, or None to tell from the first character (``<``: XML).
        encoding: source encoding; None sniffs a byte-order mark, else UTF-8. ``cp1252``,
            ``latin-1``, ``utf-16`` and the like must be named.
        delimiter: the CSV delimiter; None detects comma, semicolon, tab or pipe from the
            header (or an Excel ``sep=`` first line).
        mapping: explicit header mappings ``(source, TARGET)`` (or ``"source=TARGET"``);
            a target of ``""`` or ``ignore`` drops the column.
        ignore_unknown: drop unknown columns instead of failing.
        max_record_bytes: longer records are rejected without being buffered.

    Raises:
        ConfigError: an unknown format, an unusable delimiter, a tiny record limit.
    """

    format: Format | None = None
    encoding: str | None = None
    delimiter: str | None = None
    mapping: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_mapping)
    ignore_unknown: bool = False
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES

    def __attrs_post_init__(self) -> None:
        if self.format not in (None, "csv", "xml"):
            raise ConfigError(f"format must be csv or xml, not {self.format!r}")
        if self.max_record_bytes < 64:
            raise ConfigError("max_record_bytes must be at least 64")
        normalize_delimiter(self.delimiter)


@attrs.frozen(kw_only=True)
class ChunkLimits:
    """How rows are cut into activity requests.

    Attributes:
        form: ``multipart`` (default: no escaping at all) or ``urlencoded``.
        max_rows: most data rows per request (the server's default limit: 40,000).
        max_bytes: most bytes of ``data`` per request, as sent (default 4 MiB).
        min_rows: fewest rows per request when the input has that many (the v1 terms: 25).

    Raises:
        ConfigError: an unknown form, a limit below 1, or ``max_rows < 2 * min_rows``.
    """

    form: Form = "multipart"
    max_rows: int = attrs.field(default=DEFAULT_MAX_ACTIVITY_ROWS, validator=_positive)
    max_bytes: int = attrs.field(default=DEFAULT_MAX_ACTIVITY_BYTES, validator=_positive)
    min_rows: int = attrs.field(default=MIN_ACTIVITY_ROWS, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.form not in ("multipart", "urlencoded"):
            raise ConfigError(f"form must be multipart or urlencoded, not {self.form!r}")
        if 2 * self.min_rows > self.max_rows:
            raise ConfigError(
                "max_rows must be at least twice min_rows (so that any number of rows can be "
                "cut into chunks of min_rows to max_rows rows)"
            )
