"""The activity form (spec §7.3) both ways: fields to request bodies, request bodies to fields.

Field names and order follow spec §7.3: ``activityType``, then ``data``, then one ``lists``
field per list URI (an export sends ``listId``, ``columns``, … instead). Two encodings:

* **multipart** (the engine's default): ``data`` travels as its own bytes (a file part,
  ``text/csv; charset=utf-8``): nothing is escaped, so the bytes of a row are the bytes of the
  source. The boundary is fixed, so bodies are reproducible; in the unlikely case the data
  holds it, a numbered variant that it does not hold is used instead.
* **urlencoded**: percent-encoding in Python costs a function call per byte; this module
  does it at C speed with :func:`binascii.b2a_qp` (quoted-printable escapes ``=XX`` become
  ``%XX``, its soft line breaks are removed, and the four characters that matter to a form
  decoder and that QP leaves alone, ``% & + ;``, plus ``#``, are escaped first).

Decoding (:class:`FormDecoder`, :func:`decode_form`) is what the server answers with and what
the engine reads its own chunks back with: python-multipart's push parser for multipart (fed
any pieces; a part is kept only until it ends), :func:`urllib.parse.parse_qsl` for urlencoded
(buffered: the caller bounds the body). Both bound the number of fields, and every name and
value must be UTF-8. The tests check that ``decode(encode(fields)) == fields`` for any cut of
the body, and that the stdlib (``email``, ``parse_qs``) reads the same fields.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterable, Sequence
from urllib.parse import parse_qsl, quote_plus

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from bulkops.errors import ProtocolError

__all__ = [
    "BOUNDARY",
    "MAX_FORM_FIELDS",
    "MULTIPART",
    "URLENCODED",
    "Form",
    "FormDecoder",
    "FormError",
    "decode_form",
    "multipart_body",
    "multipart_body_of_lines",
    "multipart_size",
    "percent_encode",
    "percent_encoded_size",
    "urlencoded_body",
]

MULTIPART = "multipart/form-data"
URLENCODED = "application/x-www-form-urlencoded"
#: Most form fields one body may carry (``lists`` and ``columns`` repeat).
MAX_FORM_FIELDS = 2_000
#: The multipart boundary (``-{n}`` is appended in the rare case the data contains it).
BOUNDARY = b"bulkops-form-boundary-5f0d1c9a7e3b"

# Bytes that travel as themselves in percent_encode (everything else becomes %XX). '.' is
# left out on purpose: quoted-printable escapes a '.' that starts a line before a line
# break, which percent_encoded_size cannot predict cheaply, so it is counted as escaped.
_LITERAL = bytes(b for b in range(33, 127) if b not in b"=%&+;#.")
_PRE_ESCAPES = ((b"%", b"%25"), (b"&", b"%26"), (b"+", b"%2B"), (b";", b"%3B"), (b"#", b"%23"))


def percent_encode(data: bytes) -> bytes:
    """``data`` percent-encoded for an ``application/x-www-form-urlencoded`` value.

    Every byte outside printable ASCII, and ``= % & + ; #``, becomes ``%XX``; what
    :func:`urllib.parse.unquote_to_bytes` gives back is ``data``.
    """
    for raw, escaped in _PRE_ESCAPES:
        if raw in data:
            data = data.replace(raw, escaped)
    qp = binascii.b2a_qp(data, quotetabs=True, istext=False, header=False)
    if b"\n" in qp:  # soft line breaks ("=\n", or "=\r\n" when data holds CRLF)
        qp = qp.replace(b"=\r\n", b"").replace(b"=\n", b"")
    return qp.replace(b"=", b"%")


def percent_encoded_size(data: bytes) -> int:
    """An upper bound of ``len(percent_encode(data))``: exact except that every ``.`` is
    counted as escaped (3 bytes)."""
    return len(data) + 2 * len(data.translate(None, _LITERAL))


def _boundary_for(data: bytes, others: Sequence[bytes]) -> bytes:
    boundary = BOUNDARY
    n = 0
    while boundary in data or any(boundary in other for other in others):
        n += 1
        boundary = BOUNDARY + b"-%d" % n
    return boundary


def multipart_body(activity_type: str, data: bytes, lists: Sequence[str]) -> tuple[bytes, str, int]:
    """A multipart/form-data activity body.

    Args:
        activity_type: the ``activityType`` value.
        data: the ``data`` file (header line and rows).
        lists: list URIs, one ``lists`` field each.

    Returns:
        ``(body, content_type, data_bytes)``; ``data_bytes`` is ``len(data)``.
    """
    uris = [uri.encode("utf-8") for uri in lists]
    boundary = _boundary_for(data, uris)
    parts = [*_multipart_head(activity_type, boundary), data, *_multipart_tail(boundary, uris)]
    content_type = f"{MULTIPART}; boundary={boundary.decode('ascii')}"
    return b"".join(parts), content_type, len(data)


def _multipart_head(activity_type: str, boundary: bytes) -> list[bytes]:
    """The parts before the ``data`` value: ``activityType``, then the file part's headers."""
    dash = b"--" + boundary
    return [
        dash,
        b'\r\nContent-Disposition: form-data; name="activityType"\r\n\r\n',
        activity_type.encode("ascii"),
        b"\r\n",
        dash,
        b'\r\nContent-Disposition: form-data; name="data"; filename="contacts.csv"\r\n'
        b"Content-Type: text/csv; charset=utf-8\r\n\r\n",
    ]


def _multipart_tail(boundary: bytes, uris: Sequence[bytes]) -> list[bytes]:
    """The parts after the ``data`` value: one ``lists`` part per list, the closing line."""
    dash = b"--" + boundary
    tail = [b"\r\n"]
    for uri in uris:
        tail += [dash, b'\r\nContent-Disposition: form-data; name="lists"\r\n\r\n', uri, b"\r\n"]
    tail += [dash, b"--\r\n"]
    return tail


def multipart_body_of_lines(
    activity_type: str, header: bytes, rows: Sequence[bytes], lists: Sequence[str]
) -> tuple[bytes, str, int]:
    """:func:`multipart_body` of ``data = header + LF + rows joined by LF + LF``, built
    with one copy of the rows (``data`` itself is never built: a chunk's body is ~4 MB).

    Returns:
        The same ``(body, content_type, data_bytes)`` as
        ``multipart_body(activity_type, data, lists)``.
    """
    data_bytes = len(header) + 1 + sum(map(len, rows)) + len(rows)
    uris = [uri.encode("utf-8") for uri in lists]
    if not rows or any(BOUNDARY in uri for uri in uris):
        return multipart_body(activity_type, header + b"\n" + b"\n".join(rows) + b"\n", lists)
    head = b"".join([*_multipart_head(activity_type, BOUNDARY), header])
    tail = _multipart_tail(BOUNDARY, uris)
    body = b"\n".join([head, *rows, b"".join(tail)])
    if body.count(BOUNDARY) != 3 + len(uris):  # the data holds the boundary: another one
        return multipart_body(activity_type, header + b"\n" + b"\n".join(rows) + b"\n", lists)
    content_type = f"{MULTIPART}; boundary={BOUNDARY.decode('ascii')}"
    return body, content_type, data_bytes


def multipart_size(
    activity_type: str, data_bytes: int, lists: Sequence[str]
) -> tuple[int, str] | None:
    """The length and content type of the body :func:`multipart_body_of_lines` builds for
    a ``data`` field of ``data_bytes`` bytes (at least one row) that does not hold
    :data:`BOUNDARY`, without building it; None when a list URI holds the boundary (the
    body would need another one). A dry run counts its requests' bytes this way.
    """
    uris = [uri.encode("utf-8") for uri in lists]
    if any(BOUNDARY in uri for uri in uris):
        return None
    around = sum(map(len, _multipart_head(activity_type, BOUNDARY)))
    around += sum(map(len, _multipart_tail(BOUNDARY, uris)))
    return around + data_bytes, f"{MULTIPART}; boundary={BOUNDARY.decode('ascii')}"


def urlencoded_body(
    activity_type: str, data: bytes, lists: Sequence[str]
) -> tuple[bytes, str, int]:
    """An application/x-www-form-urlencoded activity body.

    Returns:
        ``(body, content_type, data_bytes)``; ``data_bytes`` is the length of the encoded
        ``data`` value.
    """
    encoded = percent_encode(data)
    parts = [b"activityType=", quote_plus(activity_type).encode("ascii"), b"&data=", encoded]
    for uri in lists:
        parts += [b"&lists=", quote_plus(uri, safe="").encode("ascii")]
    return b"".join(parts), URLENCODED, len(encoded)


# -- decoding ---------------------------------------------------------------------------------


class FormError(ProtocolError):
    """A form body that cannot be decoded; the message says why, in a line (for a 400)."""


class Form:
    """Decoded form fields: every value of each name, in order."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._values: dict[str, list[str]] = {}
        for name, value in pairs:
            self._values.setdefault(name, []).append(value)

    def all(self, name: str) -> list[str]:
        """Every value given for ``name`` (``[]`` when absent)."""
        return self._values.get(name, [])

    def first(self, name: str) -> str | None:
        """The first value given for ``name``, or None."""
        values = self._values.get(name)
        return values[0] if values else None

    def names(self) -> list[str]:
        """The field names present."""
        return list(self._values)


def decode_form(body: bytes, content_type: str, *, max_fields: int = MAX_FORM_FIELDS) -> Form:
    """The fields of a whole urlencoded or multipart body.

    Args:
        body: the request body.
        content_type: its ``Content-Type`` header, parameters included.
        max_fields: the most fields accepted.

    Raises:
        FormError: an unknown media type, a malformed body, text that is not UTF-8, more than
            ``max_fields`` fields.
    """
    decoder = FormDecoder(content_type, max_fields=max_fields)
    pairs = decoder.decode(body)
    pairs += decoder.flush()
    return Form(pairs)


class FormDecoder:
    """An incremental form decoder: ``decode(piece)`` for each piece of the body as it
    arrives, then ``flush()`` once; each returns the ``(name, value)`` fields completed.

    The fields are the same whatever the pieces. Multipart holds only the part being read;
    urlencoded is decoded at :meth:`flush` (the caller bounds the body). After a
    :class:`FormError` the decoder must not be fed again.

    Raises:
        FormError: (from the constructor) a media type other than the two form types, or
            multipart without a boundary.
    """

    def __init__(self, content_type: str, *, max_fields: int = MAX_FORM_FIELDS) -> None:
        media_type, options = parse_options_header(content_type)
        self._max_fields = max_fields
        self._buffer: bytearray | None = None
        self._parts: _PartCollector | None = None
        self._parser: MultipartParser | None = None
        if media_type == URLENCODED.encode():
            self._buffer = bytearray()
        elif media_type == MULTIPART.encode():
            boundary = options.get(b"boundary")
            if not boundary:
                raise FormError("multipart/form-data without a boundary parameter")
            parts = self._parts = _PartCollector(max_fields)
            try:
                self._parser = MultipartParser(
                    boundary,
                    {
                        "on_part_begin": parts.on_part_begin,
                        "on_header_field": parts.on_header_field,
                        "on_header_value": parts.on_header_value,
                        "on_header_end": parts.on_header_end,
                        "on_part_data": parts.on_part_data,
                        "on_part_end": parts.on_part_end,
                        "on_end": parts.on_end,
                    },
                )
            except (MultipartParseError, ValueError) as exc:
                raise FormError(f"malformed multipart/form-data body ({exc})") from None
        else:
            raise FormError(f"cannot decode a form of type {media_type.decode('latin-1')}")

    def decode(self, data: bytes) -> list[tuple[str, str]]:
        """Feed the next piece of the body; the fields it completes."""
        if self._buffer is not None:
            self._buffer += data
            return []
        assert self._parser is not None
        assert self._parts is not None
        try:
            self._parser.write(data)
        except (MultipartParseError, ValueError) as exc:
            raise FormError(f"malformed multipart/form-data body ({exc})") from None
        return self._parts.take()

    def flush(self) -> list[tuple[str, str]]:
        """The body has ended: the fields not returned yet."""
        if self._buffer is not None:
            body, self._buffer = bytes(self._buffer), bytearray()
            return _parse_urlencoded(body, self._max_fields)
        assert self._parser is not None
        assert self._parts is not None
        try:
            self._parser.finalize()
        except (MultipartParseError, ValueError) as exc:
            raise FormError(f"malformed multipart/form-data body ({exc})") from None
        if not self._parts.finished:
            raise FormError("malformed multipart/form-data body (no closing boundary)")
        return self._parts.take()


def _parse_urlencoded(body: bytes, max_fields: int) -> list[tuple[str, str]]:
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        # Raw non-ASCII bytes are not urlencoded, but some clients send UTF-8 unescaped.
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise FormError("the form is not UTF-8 text") from None
    try:
        return parse_qsl(
            text,
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=max_fields,
        )
    except UnicodeDecodeError:
        raise FormError("a form value is not UTF-8 once percent-decoded") from None
    except ValueError:
        raise FormError(f"the form has more than {max_fields} fields") from None


class _PartCollector:
    """Callbacks for python-multipart: collects ``(name, text)`` for every finished part."""

    def __init__(self, max_fields: int) -> None:
        self.finished = False
        self._max_fields = max_fields
        self._count = 0
        self._done: list[tuple[str, str]] = []
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._name: str | None = None
        self._data = bytearray()

    def take(self) -> list[tuple[str, str]]:
        done, self._done = self._done, []
        return done

    def on_part_begin(self) -> None:
        self._name = None
        self._data = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if bytes(self._header_field).strip().lower() == b"content-disposition":
            _disposition, params = parse_options_header(bytes(self._header_value))
            name = params.get(b"name")
            if name is not None:
                try:
                    self._name = name.decode("utf-8")
                except UnicodeDecodeError:
                    self._name = name.decode("latin-1")
        self._header_field = bytearray()
        self._header_value = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._data += data[start:end]

    def on_part_end(self) -> None:
        if self._name is None:
            raise FormError("a multipart part has no Content-Disposition name")
        if self._count >= self._max_fields:
            raise FormError(f"the form has more than {self._max_fields} fields")
        try:
            text = self._data.decode("utf-8")
        except UnicodeDecodeError:
            raise FormError(f"form field {self._name!r} is not UTF-8 text") from None
        self._count += 1
        self._done.append((self._name, text))
        self._data = bytearray()

    def on_end(self) -> None:
        self.finished = True
