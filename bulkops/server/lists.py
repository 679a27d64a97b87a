"""The lists resources: ``/lists``, ``/lists/{id}`` and ``/lists/{id}/members`` (spec §4, §5).

Also the request helpers the contacts resources share: :func:`atom_body`, :func:`parse_body`,
:func:`path_id`, :func:`feed_response`.

Invariants:

* The lists feed shows the three system lists first (Active, Do Not Mail, Removed; only
  ``Name`` and ``ShortName``), then user lists by ascending id, 50 entries per page; the
  page after the first continues after the last user list id shown (keyset, kind ``lists``).
* A members feed lists contacts by descending id, 50 per page, keyset on the contact id;
  the members of a system list are the contacts with that status.
* System lists are read-only: PUT and DELETE answer 403. Unknown or malformed ids answer
  404. A request body must be ``application/atom+xml`` (415 otherwise, checked before the
  body is read) and within ``max_xml_bytes`` (413); a ``Content-Type`` on a GET or DELETE is
  ignored. Bad XML or values answer 400 with a short reason, never 500.
* Credentials are checked before anything else looks at the request.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TypeVar

import trio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bulkops.errors import XmlError
from bulkops.server import queries
from bulkops.server.app import (
    PREFIX,
    ApiProblem,
    atom_response,
    authenticate,
    base_for,
    read_body,
    require_content_type,
    state_of,
)
from bulkops.server.paging import PAGE_SIZE, BadToken, decode_token, encode_token, next_href
from bulkops.server.store import Account, now_ms
from bulkops.wire.atom.feeds import feed_head, feed_tail
from bulkops.wire.atom.lists import list_entry, member_entry, parse_list_entry
from bulkops.wire.atom.syntax import ATOM_MEDIA_TYPE
from bulkops.wire.atom.writing import document
from bulkops.wire.model import Base, ContactList, FeedMeta
from bulkops.wire.uris import SYSTEM_LISTS

__all__ = [
    "MAX_LIST_NAME",
    "atom_body",
    "current_href",
    "feed_response",
    "next_key",
    "parse_body",
    "path_id",
    "routes",
    "source_meta",
]

T = TypeVar("T")

#: Longest list name accepted (characters); the spec gives none, names are shown in feeds.
MAX_LIST_NAME = 100

_ID_RE = re.compile(r"[0-9]{1,18}")


# -- helpers shared with the contacts resources -------------------------------------------


def path_id(request: Request, name: str) -> int | None:
    """The numeric path parameter ``name`` (at most 18 ASCII digits), else None."""
    text = str(request.path_params.get(name, ""))
    return int(text) if _ID_RE.fullmatch(text) else None


async def atom_body(request: Request) -> bytes:
    """The body of a POST or PUT: ``application/atom+xml`` and within ``max_xml_bytes``.

    Raises:
        ApiProblem: 415 for another content type (before reading), 413 for a body too big.
    """
    require_content_type(request, ATOM_MEDIA_TYPE)
    return await read_body(request, state_of(request).config.max_xml_bytes)


async def parse_body(request: Request, parse: Callable[..., T], body: bytes) -> T:
    """Parse a request body with one of the hardened parsers, in a worker thread.

    Raises:
        ApiProblem: 400 with the parser's reason.
    """
    limit = state_of(request).config.max_xml_bytes
    try:
        return await trio.to_thread.run_sync(functools.partial(parse, body, max_bytes=limit))
    except XmlError as exc:
        raise ApiProblem(400, f"Invalid request body: {exc}") from None


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
) -> Response:
    """A feed page: head, entries, tail (spec §3.2).

    Args:
        collection: the collection below the account (``"lists/7/members"``).
        title: the feed title.
        entries: rendered entries.
        next_values: the keyset of the next page, None on the last page.
        kind: the token kind of this feed.
    """
    path = base.href(collection)
    meta = FeedMeta(
        id_path=collection,
        title=title,
        updated=datetime.now(UTC),
        author=base.username,
        next_href=None
        if next_values is None
        else next_href(path, request.query_params.multi_items(), encode_token(kind, *next_values)),
        first_href=path,
        current_href=current_href(base, collection, request),
    )
    return atom_response(document(feed_head(base, meta) + "".join(entries) + feed_tail()))


def source_meta(base: Base, collection: str, title: str) -> FeedMeta:
    """The ``<source>`` of a single-resource GET: its collection's feed, without paging."""
    path = base.href(collection)
    return FeedMeta(
        id_path=collection,
        title=title,
        updated=datetime.now(UTC),
        author=base.username,
        next_href=None,
        first_href=path,
        current_href=path,
    )


def _lists_title(account: Account) -> str:
    return f"Contact Lists for Customer: {account.username}"


def _system_list(key: str, when: datetime) -> ContactList:
    name = SYSTEM_LISTS[key]
    return ContactList(id=key, name=name, short_name=name, updated=when)


def _check_name(name: str | None, *, required: bool) -> None:
    if name is None:
        if required:
            raise ApiProblem(400, "ContactList Name is required")
        return
    if len(name) > MAX_LIST_NAME:
        raise ApiProblem(400, f"ContactList Name is longer than {MAX_LIST_NAME} characters")


# -- /lists -------------------------------------------------------------------------------


async def _lists(request: Request) -> Response:
    account = await authenticate(request)
    if request.method == "POST":
        return await _create_list(request, account)
    return await _lists_feed(request, account)


async def _lists_feed(request: Request, account: Account) -> Response:
    base = base_for(request, account)
    key = next_key(request, "lists", 1)
    now = datetime.now(UTC)
    system = [] if key is not None else [_system_list(name, now) for name in SYSTEM_LISTS]
    limit = PAGE_SIZE - len(system)
    after = 0 if key is None else key[0]
    rows = await state_of(request).store.run(queries.list_page, account.id, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return feed_response(
        request,
        base,
        collection="lists",
        title=_lists_title(account),
        entries=(list_entry(base, lst) for lst in [*system, *rows]),
        next_values=(int(rows[-1].id),) if more else None,
        kind="lists",
    )


async def _create_list(request: Request, account: Account) -> Response:
    spec = await parse_body(request, parse_list_entry, await atom_body(request))
    _check_name(spec.name, required=True)
    state = state_of(request)
    created = await state.store.run(queries.create_list, account.id, spec, now_ms())
    base = base_for(request, account)
    return atom_response(
        document(list_entry(base, created)),
        status=201,
        headers={"Location": base.id(f"lists/{created.id}")},
    )


# -- /lists/{id} --------------------------------------------------------------------------


async def _one_list(request: Request) -> Response:
    account = await authenticate(request)
    key = str(request.path_params["list_id"])
    if request.method in ("GET", "HEAD"):
        return await _get_list(request, account, key)
    if key in SYSTEM_LISTS:
        raise ApiProblem(403, f"The system list {key} cannot be changed or deleted")
    list_id = path_id(request, "list_id")
    state = state_of(request)
    if request.method == "PUT":
        spec = await parse_body(request, parse_list_entry, await atom_body(request))
        if list_id is None:
            raise ApiProblem(404, "No such contact list")
        _check_name(spec.name, required=False)
        await state.store.run(queries.update_list, account.id, list_id, spec, now_ms())
    else:  # DELETE
        if list_id is None:
            raise ApiProblem(404, "No such contact list")
        await state.store.run(queries.delete_list, account.id, list_id, now_ms())
    return Response(status_code=204)


async def _get_list(request: Request, account: Account, key: str) -> Response:
    base = base_for(request, account)
    found: ContactList | None
    if key in SYSTEM_LISTS:
        found = _system_list(key, datetime.now(UTC))
    else:
        list_id = path_id(request, "list_id")
        found = (
            None
            if list_id is None
            else await state_of(request).store.run(queries.get_list, account.id, list_id)
        )
    if found is None:
        raise ApiProblem(404, "No such contact list")
    source = source_meta(base, "lists", _lists_title(account))
    return atom_response(document(list_entry(base, found, source=source)))


# -- /lists/{id}/members ------------------------------------------------------------------


async def _members(request: Request) -> Response:
    account = await authenticate(request)
    key = str(request.path_params["list_id"])
    if key not in SYSTEM_LISTS and path_id(request, "list_id") is None:
        raise ApiProblem(404, "No such contact list")
    key = key if key in SYSTEM_LISTS else str(int(key))
    token = next_key(request, "members", 1)
    before = None if token is None else token[0]
    rows = await state_of(request).store.run(
        queries.member_page, account.id, key, before, PAGE_SIZE + 1
    )
    if rows is None:
        raise ApiProblem(404, "No such contact list")
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    base = base_for(request, account)
    return feed_response(
        request,
        base,
        collection=f"lists/{key}/members",
        title=f"Contacts for Customer: {account.username}",
        entries=(member_entry(base, member) for member in rows),
        next_values=(int(rows[-1].contact_id),) if more else None,
        kind="members",
    )


routes: list[BaseRoute] = [
    Route(f"{PREFIX}/lists", _lists, methods=["GET", "POST"]),
    Route(f"{PREFIX}/lists/{{list_id}}", _one_list, methods=["GET", "PUT", "DELETE"]),
    Route(f"{PREFIX}/lists/{{list_id}}/members", _members, methods=["GET"]),
]
