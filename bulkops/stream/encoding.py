"""Which encoding a contact file is in, decided from its first MiB before anything is sent.

Rules, in order (the first that applies wins):

1. A byte-order mark (UTF-8, UTF-16 LE/BE): ``None`` — the transcoder reads the mark itself.
2. No mark, and NULs in alternate bytes of the first 4 KiB (at least 30% of one parity,
   at most 10% of the other: the ASCII header and delimiters of UTF-16 text):
   ``utf-16-le`` when the NULs follow the characters, ``utf-16-be`` when they precede them.
3. Valid UTF-8 (a multi-byte sequence cut at the end of the sample allowed): ``None``
   (UTF-8, the default).
4. Decodes as cp1252 (Excel's "CSV" on Windows): ``cp1252``.
5. Else ``None``: read as UTF-8, and the rows holding the bad bytes are rejected by line.

The decision depends on the sample's bytes only (deterministic, so ``resume`` decides the
same), and a file that turns out to be mixed — its first MiB UTF-8, a cp1252 row later —
fails that row alone, keeping its bytes in ``rejected.csv``.
"""

from __future__ import annotations

import codecs

__all__ = ["SAMPLE_BYTES", "detect_encoding"]

#: How much of the file the decision looks at.
SAMPLE_BYTES = 1 << 20

_BOMS = (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# How many leading bytes the NUL pattern is judged on (a header and a few rows).
_NUL_WINDOW = 4096


def _utf16_order(sample: bytes) -> str | None:
    """``utf-16-le``/``utf-16-be`` when NULs fill one parity of the bytes, else None."""
    window = sample[:_NUL_WINDOW]
    window = window[: len(window) - len(window) % 2]
    if len(window) < 4:
        return None
    even, odd = window[0::2], window[1::2]
    half = len(window) // 2
    # Text in UTF-16 whose header and delimiters are ASCII: many bytes of one parity are
    # NUL (every ASCII character's high byte), hardly any of the other (U+xx00 only).
    if odd.count(0) * 10 >= half * 3 and even.count(0) * 10 <= half:
        return "utf-16-le"
    if even.count(0) * 10 >= half * 3 and odd.count(0) * 10 <= half:
        return "utf-16-be"
    return None


def _is_utf8(sample: bytes, *, complete: bool) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        decoder.decode(sample, final=complete)
    except UnicodeDecodeError:
        return False
    return True


def detect_encoding(sample: bytes, *, complete: bool) -> str | None:
    """The encoding to read a file in, from its first bytes (see the module's rules).

    Args:
        sample: the file's first :data:`SAMPLE_BYTES` (or all of it, if shorter).
        complete: ``sample`` is the whole file (a multi-byte sequence cut at its end is
            then an error, not a sequence continued after the sample).

    Returns:
        a codec name, or None for the default (UTF-8, or the byte-order mark's).
    """
    if sample.startswith(_BOMS):
        return None
    order = _utf16_order(sample)
    if order is not None:
        return order
    if _is_utf8(sample, complete=complete):
        return None
    try:
        sample.decode("cp1252")
    except UnicodeDecodeError:
        return None
    return "cp1252"
