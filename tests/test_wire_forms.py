"""The activity form codec: what the decoder (and the stdlib) reads from a body is what went in."""

from __future__ import annotations

from urllib.parse import parse_qs, unquote_to_bytes

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bulkops.stream.records import Chunk, ChunkKind
from bulkops.wire.activity import ActivityType
from bulkops.wire.forms import (
    BOUNDARY,
    FormDecoder,
    FormError,
    decode_form,
    multipart_body,
    multipart_body_of_lines,
    percent_encode,
    percent_encoded_size,
    urlencoded_body,
)
from tests.stream_strategies import form_fields

MP_B = "multipart/form-data; boundary=b"
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


# -- decoding ---------------------------------------------------------------------------------

_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
_AWKWARD = st.sampled_from(
    [
        "\r\n",
        "\r",
        "\n",
        ",",
        '"',
        "é",
        "日本語",
        "Ελλάδα",
        "\x00",
        "--",
        "%",
        "&",
        "+",
        "=",
        ";",
        " ",
        BOUNDARY.decode(),
        "\r\n--" + BOUNDARY.decode() + "--\r\n",
        "\r\n--" + BOUNDARY.decode() + "-1\r\n",
    ]
)
_DATA = st.lists(_AWKWARD | _TEXT, max_size=12).map("".join)


def _encode(encoding: str, activity_type: str, data: str, lists: list[str]) -> tuple[bytes, str]:
    encode = multipart_body if encoding == "multipart" else urlencoded_body
    body, content_type, _ = encode(activity_type, data.encode("utf-8"), lists)
    return body, content_type


def _decode_in_pieces(body: bytes, content_type: str, cuts: list[int]) -> list[tuple[str, str]]:
    decoder = FormDecoder(content_type)
    fields: list[tuple[str, str]] = []
    start = 0
    for cut in sorted(c % (len(body) + 1) for c in cuts):
        fields += decoder.decode(body[start:cut])
        start = cut
    fields += decoder.decode(body[start:])
    return fields + decoder.flush()


@given(
    encoding=st.sampled_from(["multipart", "urlencoded"]),
    activity_type=st.sampled_from([t.value for t in ActivityType]),
    data=_DATA,
    lists=st.lists(_TEXT | _AWKWARD, max_size=4),
    cuts=st.lists(st.integers(min_value=0), max_size=6),
)
@example(
    encoding="multipart",
    activity_type="SV_ADD",
    data="EMAIL ADDRESS\r\n--" + BOUNDARY.decode() + "\r\nana@example.org,Zoë\r\n",
    lists=[LISTS[0]],
    cuts=[1, 40, 41],
)
def test_decoding_an_encoded_form_gives_its_fields_back(
    encoding: str, activity_type: str, data: str, lists: list[str], cuts: list[int]
) -> None:
    """decode(encode(fields)) == fields, in order, however the body is cut into pieces."""
    body, content_type = _encode(encoding, activity_type, data, lists)
    fields = _decode_in_pieces(body, content_type, cuts)
    assert fields == [
        ("activityType", activity_type),
        ("data", data),
        *(("lists", uri) for uri in lists),
    ]


@given(
    rows=st.lists(_DATA.map(lambda row: row.replace("\n", "")), max_size=8),
    cuts=st.lists(st.integers(min_value=0), max_size=4),
)
def test_a_body_built_from_lines_decodes_to_its_data(rows: list[str], cuts: list[int]) -> None:
    """The chunker's builder (no ``data`` joined first) decodes to header + rows, LF-ended."""
    encoded = [row.encode("utf-8") for row in rows]
    body, content_type, _ = multipart_body_of_lines("SV_ADD", b"EMAIL ADDRESS", encoded, LISTS)
    form = dict(_decode_in_pieces(body, content_type, cuts))
    assert form["data"] == "EMAIL ADDRESS\n" + "\n".join(rows) + "\n"


@given(
    encoding=st.sampled_from(["multipart", "urlencoded"]),
    data=_DATA,
    lists=st.lists(_TEXT, max_size=3),
)
def test_the_decoder_agrees_with_the_stdlib(encoding: str, data: str, lists: list[str]) -> None:
    """The codec and the stdlib oracle (``email`` / ``parse_qs``) read the same fields."""
    body, content_type = _encode(encoding, "ADD_CONTACTS", data, lists)
    form = decode_form(body, content_type)
    oracle = form_fields(as_chunk(body, content_type))
    assert {name: [v.encode("utf-8") for v in form.all(name)] for name in form.names()} == oracle


@pytest.mark.parametrize("encoding", ["multipart", "urlencoded"])
def test_big_fields_decode_whole_and_in_64k_pieces(encoding: str) -> None:
    """A 3 MB ``data`` of non-ASCII rows with CRLF and quoted line breaks comes back intact."""
    row = 'zoë.ñandú@example.org,"Zürich, CH","two\r\nlines",日本語\r\n'
    data = "EMAIL ADDRESS,CITY,NOTE,NAME\r\n" + row * (3_000_000 // len(row.encode()))
    body, content_type = _encode(encoding, "SV_ADD", data, LISTS)
    assert decode_form(body, content_type).first("data") == data
    cuts = list(range(1 << 16, len(body), 1 << 16))
    assert dict(_decode_in_pieces(body, content_type, cuts))["data"] == data


@settings(max_examples=300)
@given(
    body=st.binary(max_size=300)
    | st.lists(
        st.sampled_from([b"--b\r\n", b"--b--\r\n", b"\r\n", b"Content-Disposition: form-data"])
        | st.sampled_from([b'; name="data"', b"x=1&", b"%FF", b"\xff", b"&"]),
        max_size=10,
    ).map(b"".join),
    content_type=st.sampled_from(
        ["application/x-www-form-urlencoded", "multipart/form-data; boundary=b"]
    ),
    cuts=st.lists(st.integers(min_value=0), max_size=4),
)
@example(body=b"\n\x00--b--", content_type="multipart/form-data; boundary=b", cuts=[1])
def test_any_body_decodes_to_fields_or_a_form_error(
    body: bytes, content_type: str, cuts: list[int]
) -> None:
    """Hostile bytes, whole or in pieces: fields or FormError (with a reason), nothing else;
    when both readings succeed they agree. (python-multipart may refuse in pieces junk before
    the first boundary that it skips in one piece: the server decodes whole bodies.)"""
    whole, in_pieces = (_outcome(body, content_type, pieces) for pieces in ([], cuts))
    assert ("FormError", "") not in (whole, in_pieces)
    if isinstance(whole, list) and isinstance(in_pieces, list):
        assert whole == in_pieces
    if content_type.startswith("application/"):
        assert whole == in_pieces


def _outcome(body: bytes, content_type: str, cuts: list[int]) -> object:
    try:
        return _decode_in_pieces(body, content_type, cuts)
    except FormError as exc:
        return ("FormError", str(exc)[:1])


@pytest.mark.parametrize(
    ("body", "content_type", "says"),
    [
        (b"a=1", "text/plain", "cannot decode a form of type text/plain"),
        (b"a=1", "multipart/form-data", "without a boundary"),
        (b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\n1", MP_B, "no closing"),
        (b"--b\r\nX: y\r\n\r\n1\r\n--b--\r\n", MP_B, "no Content-Disposition name"),
        (b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\n\xff\r\n--b--", MP_B, "UTF-8"),
        (b"a=%FF", "application/x-www-form-urlencoded", "not UTF-8 once percent-decoded"),
        (b"\xff=1", "application/x-www-form-urlencoded", "not UTF-8 text"),
        (b"a=1&a=2&a=3&a=4", "application/x-www-form-urlencoded", "more than 3 fields"),
        (b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n" * 5, MP_B, "more than 3"),
    ],
)
def test_undecodable_forms_raise_form_error_with_a_reason(
    body: bytes, content_type: str, says: str
) -> None:
    """Each way a body can be wrong has its own message (the server's 400 text)."""
    with pytest.raises(FormError, match=says):
        decode_form(body, content_type, max_fields=3)
