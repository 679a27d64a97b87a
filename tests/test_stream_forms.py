"""Request bodies: what the stdlib decodes from them is what went in."""

from __future__ import annotations

from urllib.parse import parse_qs, unquote_to_bytes

from hypothesis import example, given
from hypothesis import strategies as st

from bulkops.stream.forms import (
    BOUNDARY,
    multipart_body,
    multipart_body_of_lines,
    percent_encode,
    percent_encoded_size,
    urlencoded_body,
)
from bulkops.stream.records import Chunk, ChunkKind
from tests.stream_strategies import form_fields

LISTS = ["http://api.constantcontact.com/ws/customers/joe/lists/7", "http://x/lists/9?a=1&b"]


def as_chunk(body: bytes, content_type: str) -> Chunk:
    from array import array

    return Chunk(
        seq=0,
        kind=ChunkKind.ADD,
        rows=0,
        lines=array("I"),
        first_line=0,
        last_line=0,
        start_offset=0,
        end_offset=0,
        columns=(),
        body=body,
        content_type=content_type,
        data_bytes=0,
        digest="",
        waits_for=(),
        after=None,
    )


@given(st.binary(max_size=400))
@example(b"=\r\n" + b"x" * 200 + b".\n")
@example(b"%&+;#= \t\x00\xff" * 30)
def test_percent_encoding_decodes_back_to_the_bytes(data: bytes) -> None:
    """unquote_to_bytes(percent_encode(x)) == x, no byte a form decoder treats specially
    stays literal, and the size bound holds."""
    encoded = percent_encode(data)
    assert unquote_to_bytes(encoded.decode("ascii")) == data
    assert not set(encoded) & set(b"&+; \r\n#=")
    assert len(encoded) <= percent_encoded_size(data)


@given(st.binary(max_size=300))
def test_an_urlencoded_body_parses_back_with_parse_qs(data: bytes) -> None:
    """activityType, data and every lists URI come back from parse_qs."""
    body, content_type, data_bytes = urlencoded_body("SV_ADD", data, LISTS)
    fields = form_fields(as_chunk(body, content_type))
    assert fields == {
        "activityType": [b"SV_ADD"],
        "data": [data],
        "lists": [uri.encode() for uri in LISTS],
    }
    assert data_bytes == len(percent_encode(data))


@given(st.binary(max_size=300))
@example(b"--" + BOUNDARY + b"\r\n")
@example(BOUNDARY + b"-1" + BOUNDARY)
def test_a_multipart_body_parses_back_with_the_email_parser(data: bytes) -> None:
    """The data part holds the data unescaped, whatever it contains (even the boundary)."""
    body, content_type, data_bytes = multipart_body("REMOVE_CONTACTS_FROM_LISTS", data, LISTS)
    fields = form_fields(as_chunk(body, content_type))
    assert fields == {
        "activityType": [b"REMOVE_CONTACTS_FROM_LISTS"],
        "data": [data],
        "lists": [uri.encode() for uri in LISTS],
    }
    assert data_bytes == len(data)
    assert data in body


def test_the_same_data_gives_the_same_body() -> None:
    """Bodies are reproducible (no random boundary), so digests are too."""
    assert multipart_body("SV_ADD", b"a", LISTS) == multipart_body("SV_ADD", b"a", LISTS)


def test_urlencoded_values_decode_as_the_server_does() -> None:
    """The spec's example characters: spaces, commas, quotes, @, line breaks."""
    data = b'EMAIL ADDRESS,CITY\r\nana@example.org,"Boston, MA"\n'
    body, _, _ = urlencoded_body("SV_ADD", data, LISTS[:1])
    parsed = parse_qs(body.decode("ascii"), keep_blank_values=True)
    assert parsed["data"] == [data.decode()]


@given(
    st.lists(st.binary(max_size=40) | st.sampled_from([BOUNDARY, b"x" + BOUNDARY + b"-1"])),
    st.sampled_from([LISTS, [LISTS[0] + BOUNDARY.decode()]]),
)
@example(rows=[b"a,b", b"c\r"], lists=LISTS)
def test_a_body_built_from_lines_equals_the_body_built_from_data(
    rows: list[bytes], lists: list[str]
) -> None:
    """Built without joining ``data`` first: the same bytes, boundary choice included."""
    rows = [r.replace(b"\n", b"") for r in rows]
    data = b"EMAIL ADDRESS\n" + b"\n".join(rows) + b"\n"
    assert multipart_body_of_lines("SV_ADD", b"EMAIL ADDRESS", rows, lists) == multipart_body(
        "SV_ADD", data, lists
    )
