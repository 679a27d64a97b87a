"""Source bytes in any supported encoding to UTF-8 bytes, incrementally, offsets kept.

Every reader in this package works on UTF-8 bytes. :class:`Transcoder` turns the source into
them: it sniffs a byte-order mark (UTF-8, UTF-16 LE/BE), passes UTF-8 through untouched
(zero copies after the mark, no validation: readers validate per record so that one bad
byte rejects one row, not the file), and decodes anything else with an incremental decoder
(:func:`codecs.getincrementaldecoder`) and re-encodes it as UTF-8.

Invariants:

* O(bytes fed); a multi-byte sequence split between two pieces is completed by the next
  piece (the incremental decoder holds it), so any split of the input gives the same output.
* Undecodable bytes survive as invalid UTF-8 (``surrogateescape``) for single-byte and other
  ASCII-compatible encodings, so the reader rejects exactly the rows that hold them. UTF-16
  cannot carry them that way; its few undecodable units become U+FFFD.
* :meth:`Transcoder.source_length` maps UTF-8 output back to the number of source bytes it
  came from, so records keep source offsets whatever the encoding.
"""

from __future__ import annotations

import codecs

from bulkops.errors import ConfigError

__all__ = ["SINGLE_BYTE_ENCODINGS", "Transcoder", "normalize_encoding"]

_BOM_UTF8 = codecs.BOM_UTF8
_BOM_LE = codecs.BOM_UTF16_LE
_BOM_BE = codecs.BOM_UTF16_BE

#: Codecs that use one byte per character (source length = character count).
SINGLE_BYTE_ENCODINGS = frozenset(
    codecs.lookup(name).name
    for name in (
        "ascii",
        "latin-1",
        "iso8859-15",
        "cp1250",
        "cp1251",
        "cp1252",
        "cp1253",
        "cp1254",
        "cp1257",
        "mac-roman",
        "cp437",
        "cp850",
    )
)
_UTF8 = codecs.lookup("utf-8").name
_UTF8_SIG = codecs.lookup("utf-8-sig").name
_UTF16 = codecs.lookup("utf-16").name
_UTF16_LE = codecs.lookup("utf-16-le").name
_UTF16_BE = codecs.lookup("utf-16-be").name
# Stateful, binary or exotic codecs: their output cannot be cut at record boundaries.
_UNUSABLE = (
    "utf_7",
    "utf_32",
    "iso2022",
    "hz",
    "idna",
    "punycode",
    "rot",
    "base64",
    "hex",
    "zlib",
    "bz2",
    "quopri",
    "uu",
    "undefined",
    "unicode_escape",
    "raw_unicode_escape",
)


def normalize_encoding(encoding: str | None) -> str | None:
    """The codec name of ``encoding`` (None stays None: sniff a byte-order mark).

    Raises:
        ConfigError: the encoding is unknown, or not one a contact file can use (stateful or
            binary codecs, UTF-32).
    """
    if encoding is None:
        return None
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise ConfigError(f"unknown encoding {encoding!r}") from None
    name = info.name
    if any(name.replace("-", "_").startswith(prefix) for prefix in _UNUSABLE):
        raise ConfigError(f"encoding {encoding!r} cannot be used for contact files")
    return name


class Transcoder:
    """Incremental source-bytes → UTF-8-bytes converter.

    Args:
        encoding: the source encoding, or None to sniff a byte-order mark (UTF-8 when there
            is none). ``utf-16`` without a mark is read as little-endian.

    Raises:
        ConfigError: an unusable encoding.
    """

    def __init__(self, encoding: str | None = None) -> None:
        self._requested = normalize_encoding(encoding)
        self._head = b""  # bytes held until the byte-order mark is decided
        self._decided = False
        self._passthrough = True
        self._decoder: codecs.IncrementalDecoder | None = None
        self._codec = _UTF8
        self.bom_length = 0
        """Source bytes taken by a byte-order mark (0, 2 or 3)."""

    @property
    def encoding(self) -> str:
        """The codec in use (decided once the first bytes, or the end, have been seen)."""
        return self._codec

    @property
    def passthrough(self) -> bool:
        """True when the source is UTF-8 and its bytes are handed on untouched."""
        return self._passthrough

    def decode(self, data: bytes) -> bytes:
        """Convert the next piece of the source.

        Args:
            data: the next bytes of the source.

        Returns:
            UTF-8 bytes (possibly empty while the byte-order mark is undecided or a
            multi-byte sequence is incomplete).
        """
        if not self._decided:
            self._head += data
            if len(self._head) < 3 and self._could_grow_into_bom():
                return b""
            data, self._head = self._head, b""
            data = self._decide(data)
        return self._convert(data, final=False)

    def flush(self) -> bytes:
        """Convert what is held back at the end of the source.

        Returns:
            The last UTF-8 bytes.
        """
        if not self._decided:
            data, self._head = self._head, b""
            data = self._decide(data)
            return self._convert(data, final=True)
        return self._convert(b"", final=True)

    def source_length(self, utf8: bytes) -> int:
        """How many source bytes the UTF-8 output ``utf8`` came from.

        Args:
            utf8: a run of this transcoder's output that starts and ends on character
                boundaries (records always do).

        Returns:
            The length of the same text in the source encoding.
        """
        if self._passthrough:
            return len(utf8)
        text = utf8.decode("utf-8", "surrogateescape")
        if self._codec in SINGLE_BYTE_ENCODINGS:
            return len(text)
        return len(text.encode(self._codec, "surrogateescape"))

    def _could_grow_into_bom(self) -> bool:
        head = self._head
        return any(bom.startswith(head) for bom in (_BOM_UTF8, _BOM_LE, _BOM_BE))

    def _decide(self, data: bytes) -> bytes:
        """Choose the codec from the request and the byte-order mark; strip the mark."""
        self._decided = True
        requested = self._requested
        codec = requested or _UTF8
        if requested in (None, _UTF8, _UTF8_SIG) and data.startswith(_BOM_UTF8):
            codec, self.bom_length = _UTF8, len(_BOM_UTF8)
        elif requested in (None, _UTF16, _UTF16_LE) and data.startswith(_BOM_LE):
            codec, self.bom_length = _UTF16_LE, len(_BOM_LE)
        elif requested in (None, _UTF16, _UTF16_BE) and data.startswith(_BOM_BE):
            codec, self.bom_length = _UTF16_BE, len(_BOM_BE)
        elif codec == _UTF8_SIG:
            codec = _UTF8
        elif codec == _UTF16:
            codec = _UTF16_LE
        self._codec = codec
        self._passthrough = codec == _UTF8
        if not self._passthrough:
            errors = "replace" if codec in (_UTF16_LE, _UTF16_BE) else "surrogateescape"
            self._decoder = codecs.getincrementaldecoder(codec)(errors)
        return data[self.bom_length :]

    def _convert(self, data: bytes, *, final: bool) -> bytes:
        if self._passthrough:
            return data
        assert self._decoder is not None
        text = self._decoder.decode(data, final)
        return text.encode("utf-8", "surrogateescape")
