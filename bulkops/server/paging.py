"""Keyset paging: opaque ``next`` tokens and the ``first``/``current``/``next`` links of a feed.

Every feed of the server is paged by keyset: a page is "the ``PAGE_SIZE`` rows after this
key" on an index, so the cost of a page never depends on its position (no OFFSET).

Invariants:

* A token is the keyset of the last row of the previous page (one or more integers) and a
  *kind* (which feed it belongs to), written as base-36 numbers joined by ``-`` and followed
  by one check letter: ``51`` → ``1fw`` (kind ``lists``), ``(1262304000000, 51)`` →
  ``g3w77k00-1fs`` (kind ``updated``). Tokens are url-safe, short, never plain numbers (the
  check letter), and the check letter makes a mistyped token, or one from another kind of
  feed, fail 25 times in 26.
* :func:`decode_token` gives back what :func:`encode_token` was given, for integers in
  ``[-2**63, 2**63)`` (so a value always fits SQLite), and raises :class:`BadToken` for
  anything it could not have produced (leading zeros aside) — never another exception,
  whatever the input.
* A feed's ``id`` and ``first`` link never carry a token; ``current`` echoes the request's
  query as it was sent; ``next`` keeps the request's other parameters and replaces ``next``.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from urllib.parse import urlencode

__all__ = [
    "PAGE_SIZE",
    "BadToken",
    "decode_token",
    "encode_token",
    "next_href",
]

#: Entries per page of every feed (spec §3.2).
PAGE_SIZE = 50

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_CHECK = "abcdefghijklmnopqrstuvwxyz"
_LIMIT = 2**63
_PART_RE = re.compile(r"_?[0-9a-z]{1,13}")
_MAX_TOKEN = 80


class BadToken(ValueError):
    """A ``next`` token that this server did not issue (for this feed)."""


def _base36(value: int) -> str:
    if value < 0:
        return "_" + _base36(-value)
    if value == 0:
        return "0"
    digits = []
    while value:
        value, rest = divmod(value, 36)
        digits.append(_DIGITS[rest])
    return "".join(reversed(digits))


def _check(kind: str, body: str) -> str:
    return _CHECK[zlib.crc32(f"{kind}:{body}".encode()) % len(_CHECK)]


def encode_token(kind: str, *values: int) -> str:
    """The token of a keyset for one kind of feed.

    Args:
        kind: a short name of the feed (``"contacts"``, ``"members"``, …); it is not written
            into the token, only into its check letter.
        values: the keyset, integers in ``[-2**63, 2**63)``.

    Raises:
        ValueError: no values, or a value out of range.
    """
    if not values:
        raise ValueError("a token needs at least one value")
    for value in values:
        if not -_LIMIT <= value < _LIMIT:
            raise ValueError(f"token value out of range: {value}")
    body = "-".join(_base36(value) for value in values)
    return body + _check(kind, body)


def decode_token(kind: str, token: str, arity: int) -> tuple[int, ...]:
    """The keyset a token holds.

    Args:
        kind: the feed the token must belong to.
        token: the ``next`` query parameter as received.
        arity: how many values the keyset of this feed has.

    Raises:
        BadToken: anything :func:`encode_token` would not have produced for ``kind`` and
            ``arity`` values.
    """
    if not 2 <= len(token) <= _MAX_TOKEN or not token.isascii():
        raise BadToken("malformed next token")
    body, check = token[:-1], token[-1]
    if _check(kind, body) != check:
        raise BadToken("unknown next token")
    parts = body.split("-")
    if len(parts) != arity or any(_PART_RE.fullmatch(part) is None for part in parts):
        raise BadToken("malformed next token")
    values = []
    for part in parts:
        negative = part.startswith("_")
        value = int(part[1:] if negative else part, 36)
        value = -value if negative else value
        if not -_LIMIT <= value < _LIMIT or (negative and value == 0):
            raise BadToken("malformed next token")
        values.append(value)
    return tuple(values)


def next_href(path: str, params: Iterable[tuple[str, str]], token: str) -> str:
    """The root-relative ``next`` link: ``path?{params without next}&next={token}``.

    Args:
        path: the collection's root-relative path (``/ws/customers/joe/contacts``).
        params: the request's query parameters in order; any ``next`` among them is dropped.
        token: the token of the next page.
    """
    kept = [(key, value) for key, value in params if key != "next"]
    kept.append(("next", token))
    return f"{path}?{urlencode(kept)}"
