"""The lists resources: ``/lists``, ``/lists/{id}`` and ``/lists/{id}/members`` (spec §4, §5).

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
* Our extension (an era server sends neither): ``GET lists/{id}`` of a user list asked with
  the request header ``X-Bulkops-Write-Seq: ?`` answers with ``X-Bulkops-Write-Seq`` (the
  account's write sequence, :mod:`bulkops.server.store`) and ``X-Bulkops-Write-Time`` (the
  server clock in ms since the epoch), both read under the write lock: every write not
  counted in that sequence commits after it and stamps its contacts at or after that time
  less ``X-Bulkops-Write-Margin`` (ms: 0 on SQLite, one host; 1000 on PostgreSQL, whose
  writers may run on several hosts with their own clocks).
  ``bulkops sync`` uses it to prove its snapshot exact. Only a request that asks waits for
  the write lock (behind a running apply); every other GET of a list reads without it.
"""

from __future__ import annotations

from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bulkops.server.feeds import clock_ms, feed_response, from_ms, next_key, source_meta
from bulkops.server.http import (
    PREFIX,
    ApiProblem,
    atom_body,
    atom_response,
    authenticate,
    base_for,
    parse_body,
    path_id,
    state_of,
)
from bulkops.server.paging import PAGE_SIZE
from bulkops.server.store import Account, now_ms
from bulkops.wire.atom.lists import list_entry, member_entry, parse_list_entry
from bulkops.wire.atom.writing import document
from bulkops.wire.model import ContactList
from bulkops.wire.uris import SYSTEM_LISTS
from bulkops.wire.writeseq import WRITE_MARGIN_HEADER, WRITE_SEQ_HEADER, WRITE_TIME_HEADER

__all__ = ["MAX_LIST_NAME", "routes"]


#: Longest list name accepted (characters); the spec gives none, names are shown in feeds.
MAX_LIST_NAME = 100


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
    now = from_ms(clock_ms(state_of(request)))
    system = [] if key is not None else [_system_list(name, now) for name in SYSTEM_LISTS]
    limit = PAGE_SIZE - len(system)
    after = 0 if key is None else key[0]
    rows = await state_of(request).store.list_page(account.id, after, limit + 1)
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
    created = await state.store.create_list(account.id, spec, now_ms())
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
        await state.store.update_list(account.id, list_id, spec, now_ms())
    else:  # DELETE
        if list_id is None:
            raise ApiProblem(404, "No such contact list")
        await state.store.delete_list(account.id, list_id, now_ms())
    return Response(status_code=204)


async def _get_list(request: Request, account: Account, key: str) -> Response:
    base = base_for(request, account)
    found: ContactList | None
    headers: dict[str, str] | None = None
    if key in SYSTEM_LISTS:
        found = _system_list(key, from_ms(clock_ms(state_of(request))))
    else:
        list_id = path_id(request, "list_id")
        store = state_of(request).store
        found = None if list_id is None else await store.get_list(account.id, list_id)
        if found is not None and request.headers.get(WRITE_SEQ_HEADER) == "?":
            seq, stamp = await store.write_seq(account.id)
            headers = {
                WRITE_SEQ_HEADER: str(seq),
                WRITE_TIME_HEADER: str(stamp),
                WRITE_MARGIN_HEADER: str(store.write_margin_ms),
            }
    if found is None:
        raise ApiProblem(404, "No such contact list")
    source = source_meta(base, "lists", _lists_title(account), clock_ms(state_of(request)))
    return atom_response(document(list_entry(base, found, source=source)), headers=headers)


# -- /lists/{id}/members ------------------------------------------------------------------


async def _members(request: Request) -> Response:
    account = await authenticate(request)
    key = str(request.path_params["list_id"])
    if key not in SYSTEM_LISTS and path_id(request, "list_id") is None:
        raise ApiProblem(404, "No such contact list")
    key = key if key in SYSTEM_LISTS else str(int(key))
    token = next_key(request, "members", 1)
    before = None if token is None else token[0]
    rows = await state_of(request).store.member_page(account.id, key, before, PAGE_SIZE + 1)
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
