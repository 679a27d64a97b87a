"""The encoding decision from a file's first MiB (stream/encoding.py)."""

from __future__ import annotations

import codecs

from hypothesis import given
from hypothesis import strategies as st

from bulkops.stream.encoding import detect_encoding

HEADER = "Email Address,First Name,Last Name\n"
_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200)
_CP1252 = st.text(
    st.characters(codec="cp1252", exclude_characters="\x00"), min_size=0, max_size=200
)


@given(text=_TEXT, cut=st.integers(0, 10_000))
def test_utf8_is_utf8_wherever_the_sample_ends(text: str, cut: int) -> None:
    """Valid UTF-8 (the sample may end inside a character) keeps the default."""
    data = (HEADER + text).encode()
    assert detect_encoding(data[:cut], complete=False) is None
    assert detect_encoding(data, complete=True) is None


@given(text=_TEXT, bom=st.sampled_from([codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE]))
def test_a_byte_order_mark_is_left_to_the_transcoder(text: str, bom: bytes) -> None:
    """With a mark, the transcoder's own sniffing decides."""
    assert detect_encoding(bom + (HEADER + text).encode("utf-16-le"), complete=True) is None


# Names in any script of the basic plane, but none of the rare U+xx00 characters (a NUL
# on the other side) nor surrogates.
_NAMES = st.text(
    st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs", "Cc")).filter(
        lambda c: ord(c) & 0xFF != 0
    ),
    max_size=200,
)


@given(text=_NAMES, order=st.sampled_from(["utf-16-le", "utf-16-be"]))
def test_utf16_without_a_mark_is_told_by_its_nuls(text: str, order: str) -> None:
    """ASCII headers written as UTF-16 without a mark: the NULs' side gives the order."""
    data = (HEADER * 3 + text).encode(order)
    assert detect_encoding(data, complete=True) == order


@given(text=_CP1252)
def test_cp1252_that_is_not_utf8_is_cp1252(text: str) -> None:
    """Bytes that are not UTF-8 but decode as cp1252 are cp1252 (Excel on Windows)."""
    data = (HEADER + text + "Zoë\n").encode("cp1252")
    assert detect_encoding(data, complete=True) == "cp1252"


def test_bytes_neither_utf8_nor_cp1252_keep_the_default() -> None:
    """0x81 is undefined in cp1252: the default stays, and bad rows are rejected."""
    assert detect_encoding(HEADER.encode() + b"a@example.org,\x81\xff\n", complete=True) is None
