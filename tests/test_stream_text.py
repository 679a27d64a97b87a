"""Any supported encoding to UTF-8, incrementally, with source offsets kept."""

from __future__ import annotations

import codecs

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkops.errors import ConfigError
from bulkops.stream.text import Transcoder
from tests.stream_strategies import cuts, pieces

TEXT = st.text(alphabet='aé€😀,\n\r"Ωß', max_size=30)


def transcode(data: bytes, points: list[int], encoding: str | None = None) -> tuple[bytes, str]:
    text = Transcoder(encoding)
    out = b"".join(text.decode(piece) for piece in pieces(data, points)) + text.flush()
    return out, text.encoding


@pytest.mark.parametrize(
    ("bom", "encoding"),
    [
        (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
    ],
)
@given(data=st.data(), text=TEXT)
def test_a_byte_order_mark_picks_the_encoding_for_any_split(
    data: st.DataObject, bom: bytes, encoding: str, text: str
) -> None:
    """UTF-8 and UTF-16 (LE/BE) marks are recognised and dropped, however the bytes come."""
    raw = bom + text.encode(encoding)
    out, used = transcode(raw, data.draw(cuts(raw)))
    assert out == text.encode("utf-8")
    assert used == codecs.lookup(encoding).name


@given(st.data(), st.text(alphabet="aéÿ€Š,\n", max_size=30))
def test_cp1252_is_transcoded_when_named(data: st.DataObject, text: str) -> None:
    """Bytes of a named single-byte encoding come out as UTF-8."""
    raw = text.encode("cp1252")
    out, _ = transcode(raw, data.draw(cuts(raw)), "cp1252")
    assert out == text.encode("utf-8")


def test_utf8_without_a_mark_passes_through_untouched() -> None:
    """No mark, no encoding named: UTF-8, the very bytes (even invalid ones)."""
    text = Transcoder()
    assert text.decode(b"a\xff,") == b"a\xff,"
    assert text.passthrough
    assert text.flush() == b""


def test_undecodable_single_byte_input_survives_as_invalid_utf8() -> None:
    """cp1252 has no 0x81: it reaches the reader as a bad byte, to reject that row only."""
    out, _ = transcode(b"ok\x81\n", [], "cp1252")
    assert out == b"ok\x81\n"


@given(st.text(alphabet="aé€😀\n", max_size=20))
def test_source_length_maps_output_back_to_source_bytes(text: str) -> None:
    """For each encoding, UTF-8 output maps to the length of the same text in the source."""
    for encoding in ("utf-8", "cp1252", "utf-16-le", "utf-16-be", "latin-1"):
        try:
            raw = text.encode(encoding)
        except UnicodeEncodeError:
            continue
        transcoder = Transcoder(encoding)
        out = transcoder.decode(raw) + transcoder.flush()
        assert transcoder.source_length(out) == len(raw)


def test_a_two_byte_file_still_gets_its_mark_checked() -> None:
    """Input shorter than a mark is decided at the end."""
    out, used = transcode(codecs.BOM_UTF16_LE, [])
    assert (out, used) == (b"", "utf-16-le")


@pytest.mark.parametrize("name", ["utf-7", "base64", "no-such-codec", "utf-32"])
def test_unusable_encodings_are_config_errors(name: str) -> None:
    """Stateful, binary or unknown codecs are refused up front."""
    with pytest.raises(ConfigError):
        Transcoder(name)
