"""Activity request bodies: multipart/form-data (the default) and urlencoded.

Field names and order follow spec §7.3: ``activityType``, then ``data``, then one ``lists``
field per list URI. The server decodes either encoding (python-multipart, ``parse_qsl``).

* **multipart**: ``data`` travels as its own bytes (a file part, ``text/csv; charset=utf-8``):
  nothing is escaped, so the bytes of a row are the bytes of the source. The boundary is
  fixed, so bodies are reproducible; in the unlikely case the data holds it, a numbered
  variant that it does not hold is used instead.
* **urlencoded**: percent-encoding in Python costs a function call per byte; this module
  does it at C speed with :func:`binascii.b2a_qp` (quoted-printable escapes ``=XX`` become
  ``%XX``, its soft line breaks are removed, and the four characters that matter to a form
  decoder and that QP leaves alone, ``% & + ;``, plus ``#``, are escaped first). The result
  is checked against :func:`urllib.parse.parse_qs` in the tests.
"""

from __future__ import annotations

import binascii
from collections.abc import Sequence
from urllib.parse import quote_plus

__all__ = [
    "BOUNDARY",
    "MULTIPART",
    "URLENCODED",
    "multipart_body",
    "multipart_body_of_lines",
    "percent_encode",
    "percent_encoded_size",
    "urlencoded_body",
]

MULTIPART = "multipart/form-data"
URLENCODED = "application/x-www-form-urlencoded"
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
