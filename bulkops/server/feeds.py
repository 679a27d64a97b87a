"""Feeds and time for every resource: one feed builder, ``next`` keys, one clock.

Invariants:

* **One clock.** "Now" is :func:`clock_ms`: ``ApiState.clock`` when a test pins it, else the
  wall clock, in integer ms since the epoch. Feed ``updated`` times, ``<source>`` times,
  schedules and the event window all read it.
* **One feed builder.** :func:`feed_response` writes every paged feed (spec §3.2): ``id`` and
  ``first`` never carry a token, ``current`` echoes the request's query as sent, ``next``
  keeps the request's other parameters and carries the token of the next keyset (kinds and
  tokens: :mod:`bulkops.server.paging`).
* Times are exact: :func:`from_ms` / :func:`to_ms` never pass through a float.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.requests import Request
from starlette.responses import Response

from bulkops.server.http import ApiProblem, ApiState, atom_response, state_of
from bulkops.server.paging import BadToken, decode_token, encode_token, next_href
from bulkops.server.store import from_ms, now_ms, to_ms
from bulkops.wire.atom.feeds import feed_head, feed_tail
from bulkops.wire.atom.writing import document
from bulkops.wire.model import Base, FeedMeta

__all__ = [
    "clock_ms",
    "current_href",
    "feed_response",
    "from_ms",
    "next_key",
    "source_meta",
    "to_ms",
]


def clock_ms(state: ApiState) -> int:
    """The server's "now" in ms: ``state.clock()`` when set, else the wall clock."""
    return int(state.clock()) if state.clock is not None else now_ms()


def next_key(request: Request, kind: str, arity: int) -> tuple[int, ...] | None:
    """The keyset of the request's ``next`` token, None without one.

    Raises:
        ApiProblem: 400 for a token this server did not issue for this feed.
    """
    token = request.query_params.get("next")
    if token is None:
        return None
    try:
        return decode_token(kind, token, arity)
    except BadToken as exc:
        raise ApiProblem(400, f"Bad next parameter: {exc}") from None


def current_href(base: Base, collection: str, request: Request) -> str:
    """The ``current`` link: the collection's path with the request's query as sent."""
    query = request.url.query
    return base.href(collection) + (f"?{query}" if query else "")


def feed_response(
    request: Request,
    base: Base,
    *,
    collection: str,
    title: str,
    entries: Iterable[str],
    next_values: tuple[int, ...] | None,
    kind: str,
    current_first: bool = False,
) -> Response:
    """A feed page: head, entries, tail (spec §3.2); ``updated`` is :func:`clock_ms`.

    Args:
        collection: the collection below the account (``"lists/7/members"``).
        title: the feed title.
        entries: rendered entries.
        next_values: the keyset of the next page, None on the last page.
        kind: the token kind of this feed.
        current_first: the campaigns feed's link order (``current`` before ``first``).
    """
    path = base.href(collection)
    meta = FeedMeta(
        id_path=collection,
        title=title,
        updated=from_ms(clock_ms(state_of(request))),
        author=base.username,
        next_href=None
        if next_values is None
        else next_href(path, request.query_params.multi_items(), encode_token(kind, *next_values)),
        first_href=path,
        current_href=current_href(base, collection, request),
    )
    head = feed_head(base, meta, current_first=current_first)
    return atom_response(document(head + "".join(entries) + feed_tail()))


def source_meta(base: Base, collection: str, title: str, now: int) -> FeedMeta:
    """The ``<source>`` of a single-resource GET: its collection's feed, without paging."""
    path = base.href(collection)
    return FeedMeta(
        id_path=collection,
        title=title,
        updated=from_ms(now),
        author=base.username,
        next_href=None,
        first_href=path,
        current_href=path,
    )
