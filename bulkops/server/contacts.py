"""The contacts resources: ``/contacts`` and ``/contacts/{id}`` (spec §6).

Routes:

* ``GET /contacts`` — every contact, newest first, summary view, 50 per page (keyset on the
  id, token kind ``contacts``);
* ``GET /contacts?email=a&email=b`` — exact, case-insensitive search for 1–50 addresses,
  search view, no paging (addresses are unique, so at most 50 entries); no match is an
  empty feed;
* ``GET /contacts?updatedsince=T&listtype=active|removed|do-not-mail``, ``…&listid=N``, or
  ``GET /contacts?updatedsince=T`` alone (every contact of the account, whatever its status
  or lists) — contacts updated at or after ``T``, oldest update first, summary view (which
  carries the status), keyset on ``(last_update_time, id)`` (token kind ``updated``);
* ``POST /contacts`` → 201 + ``Location`` + the full entry (``EmailType`` defaults to
  ``HTML``, ``OptInSource`` to ``ACTION_BY_CUSTOMER``); ``GET /contacts/{id}`` → the full
  entry with ``<source>``; ``PUT`` → 204; ``DELETE`` (opt-out) → 204.

Invariants:

* Request bodies are read as :mod:`bulkops.server.http` reads them (415, 413, 400); values
  are checked with :func:`~bulkops.wire.columns.email_problem` and
  :func:`~bulkops.wire.columns.field_problem` before any SQL runs, and a 400 names the field.
* What old clients send is accepted: every element present but empty (on POST, empty = not
  given), read-only elements (``Status``, ids, times), and the whole entry a GET returned,
  with its ``<source>`` and links. List URIs are matched by path, whatever their origin.
* PUT is "GET, edit, PUT the whole entry" (spec §6.6): a field element present but empty
  empties the field (a GET shows empty fields as empty elements, so the whole entry a GET
  returned changes nothing); an absent element keeps its value. ``EmailAddress`` and
  ``EmailType`` cannot be emptied (an empty one is not given).
* The status rules are applied in :mod:`bulkops.server.queries`, in one transaction per
  request.

``updatedsince`` (spec §6.4; §14 question 10 — this server's answers):

* **Without ``listtype``/``listid``** it answers every contact of the account updated at or
  after ``T``, in all statuses. With ``listid=N`` it answers only *current* members of N, so
  a contact removed from N but left on another list is seen only by the unfiltered query
  (its ``last_update_time`` changed): a client keeping a copy of N's members learns who left
  N as "updated, not returned for ``listid=N``".
* **What moves ``last_update_time``**: every change of a contact's fields, status or lists —
  bulk add/update (every row of the activity, changed or not), remove-from-list and clear
  (every contact taken off), ``POST``/``PUT``/``DELETE`` (opt-out) here, and a list's
  deletion (its former members). Nothing is ever deleted outright, so no change escapes it.
* **Stamp skew**: a change is stamped when its transaction starts (an activity: once it
  holds the write lock; a request: when it is handled, before it waits for that lock) and
  committed at most 30 s later on a healthy server (an activity applies 40,000 rows in
  about a second); a client's next window starts that much before the time it last read.
* **History horizon**: ``last_update_time`` is never pruned, so ``updatedsince`` shows every
  change however old ``T`` is; clients still treat 30 days as the horizon they may rely on
  (a real service keeps less), and read anew beyond it.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bulkops.server import queries
from bulkops.server.feeds import clock_ms, feed_response, next_key, source_meta, to_ms
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
from bulkops.wire.atom.contacts import contact_entry, parse_contact_entry
from bulkops.wire.atom.reading import local_name
from bulkops.wire.atom.syntax import CTCT_NS, parse_time, parse_xml
from bulkops.wire.atom.writing import document
from bulkops.wire.columns import CONTACT_FIELDS, OPT_IN_SOURCES, email_problem, field_problem
from bulkops.wire.model import Contact, ContactInput
from bulkops.wire.uris import SYSTEM_LISTS, list_id_from_uri

__all__ = ["MAX_SEARCH_EMAILS", "checked_fields", "checked_source", "routes"]

#: Most addresses one ``?email=`` search may name (spec §6.3).
MAX_SEARCH_EMAILS = 50

_EMAIL_TYPES = {"html": "HTML", "text": "Text"}


def checked_fields(data: ContactInput) -> dict[str, str]:
    """The request's field values, checked and normalised (``EmailType`` → ``HTML``/``Text``,
    ``StateCode`` upper case).

    Raises:
        ApiProblem: 400 naming the first field whose value is unacceptable.
    """
    fields: dict[str, str] = {}
    for name, value in data.fields.items():
        problem = email_problem(value) if name == "EmailAddress" else field_problem(name, value)
        if problem is not None:
            raise ApiProblem(400, f"{name}: {problem}")
        if name == "EmailType":
            value = _EMAIL_TYPES[value.casefold()]
        elif name == "StateCode":
            value = value.upper()
        fields[name] = value
    return fields


def checked_source(data: ContactInput) -> str | None:
    """The request's ``OptInSource`` in upper case, None when not given.

    Raises:
        ApiProblem: 400 for another value.
    """
    if data.opt_in_source is None:
        return None
    source = data.opt_in_source.upper()
    if source not in OPT_IN_SOURCES:
        raise ApiProblem(400, f"OptInSource: must be one of {', '.join(OPT_IN_SOURCES)}")
    return source


def _title(account: Account) -> str:
    return f"Contacts for Customer: {account.username}"


# -- /contacts ----------------------------------------------------------------------------


async def _contacts(request: Request) -> Response:
    account = await authenticate(request)
    if request.method == "POST":
        return await _create(request, account)
    params = request.query_params
    if "email" in params:
        if "updatedsince" in params:
            raise ApiProblem(400, "Give either email or updatedsince, not both")
        return await _search(request, account, params.getlist("email"))
    if "updatedsince" in params:
        return await _updated_since(request, account)
    key = next_key(request, "contacts", 1)
    rows = await state_of(request).store.contact_page(
        account.id, None if key is None else key[0], PAGE_SIZE + 1
    )
    return _summary_feed(request, account, rows, "contacts", lambda c: (int(c.id),))


def _summary_feed(
    request: Request,
    account: Account,
    rows: list[Contact],
    kind: str,
    keyset: Callable[[Contact], tuple[int, ...]],
) -> Response:
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    base = base_for(request, account)
    return feed_response(
        request,
        base,
        collection="contacts",
        title=_title(account),
        entries=(contact_entry(base, contact, view="summary") for contact in rows),
        next_values=keyset(rows[-1]) if more else None,
        kind=kind,
    )


async def _search(request: Request, account: Account, emails: list[str]) -> Response:
    if len(emails) > MAX_SEARCH_EMAILS:
        raise ApiProblem(400, f"At most {MAX_SEARCH_EMAILS} email parameters per search")
    wanted = [email.strip() for email in emails if email.strip()]
    rows = await state_of(request).store.contacts_by_email(account.id, wanted)
    base = base_for(request, account)
    return feed_response(
        request,
        base,
        collection="contacts",
        title=_title(account),
        entries=(contact_entry(base, contact, view="search") for contact in rows),
        next_values=None,
        kind="contacts",
    )


async def _updated_since(request: Request, account: Account) -> Response:
    params = request.query_params
    try:
        since = to_ms(parse_time(params["updatedsince"]))
    except (ValueError, OverflowError):
        raise ApiProblem(
            400, "updatedsince must be an ISO-8601 UTC time, like 2008-07-23T14:21:06.407Z"
        ) from None
    list_type, list_ref = params.get("listtype"), params.get("listid")
    if list_type is not None and list_ref is not None:
        raise ApiProblem(400, "updatedsince takes at most one of listtype or listid")
    status: str | None = None
    list_id: int | None = None
    if list_type is not None:
        status = queries.SYSTEM_LIST_STATUS.get(list_type.strip().lower())
        if status is None:
            raise ApiProblem(400, "listtype must be active, removed or do-not-mail")
    elif list_ref is not None:
        key = list_ref.strip() if "/" not in list_ref else list_id_from_uri(list_ref)
        if key is not None and key in SYSTEM_LISTS:
            status = queries.SYSTEM_LIST_STATUS[key]
        elif key is not None and key.isascii() and key.isdigit() and len(key) <= 18:
            list_id = int(key)
            found = await state_of(request).store.get_list(account.id, list_id)
            if found is None:
                raise ApiProblem(400, "listid names no contact list of this account")
        else:
            raise ApiProblem(400, "listid must be a list id")
    token = next_key(request, "updated", 2)
    after = None if token is None else (token[0], token[1])
    rows = await state_of(request).store.contacts_updated_since(
        account.id, since, after, status=status, list_id=list_id, limit=PAGE_SIZE + 1
    )

    def keyset(contact: Contact) -> tuple[int, int]:
        return (to_ms(contact.updated), int(contact.id))

    return _summary_feed(request, account, rows, "updated", keyset)


async def _create(request: Request, account: Account) -> Response:
    data = await parse_body(request, parse_contact_entry, await atom_body(request))
    fields = checked_fields(data)
    source = checked_source(data) or queries.ACTION_BY_CUSTOMER
    if "EmailAddress" not in fields:
        raise ApiProblem(400, "EmailAddress: Email address is missing")
    if not data.list_uris:
        raise ApiProblem(400, "ContactLists: a new contact needs at least one ContactList")
    fields.setdefault("EmailType", "HTML")
    created = await state_of(request).store.create_contact(
        account.id, fields, data.list_uris, source, now_ms()
    )
    base = base_for(request, account)
    return atom_response(
        document(contact_entry(base, created, view="full")),
        status=201,
        headers={"Location": base.id(f"contacts/{created.id}")},
    )


# -- /contacts/{id} -----------------------------------------------------------------------


async def _one_contact(request: Request) -> Response:
    account = await authenticate(request)
    contact_id = path_id(request, "contact_id")
    state = state_of(request)
    if request.method in ("GET", "HEAD"):
        found = (
            None if contact_id is None else await state.store.get_contact(account.id, contact_id)
        )
        if found is None:
            raise ApiProblem(404, "No such contact")
        base = base_for(request, account)
        meta = source_meta(base, "contacts", _title(account), clock_ms(state))
        return atom_response(document(contact_entry(base, found, view="full", source=meta)))
    if request.method == "PUT":
        body = await atom_body(request)
        data = await parse_body(request, parse_contact_entry, body)
        if contact_id is None:
            raise ApiProblem(404, "No such contact")
        emptied = await parse_body(request, _emptied_fields, body)
        fields = {**dict.fromkeys(emptied, ""), **checked_fields(data)}
        opt_in = checked_source(data)
        update = ContactInput(fields=fields, list_uris=data.list_uris, opt_in_source=opt_in)
        await state.store.update_contact(account.id, contact_id, update, opt_in, now_ms())
        return Response(status_code=204)
    # DELETE: opt out
    if contact_id is None:
        raise ApiProblem(404, "No such contact")
    await state.store.opt_out_contact(account.id, contact_id, now_ms())
    return Response(status_code=204)


#: Fields a PUT may empty (the address is required; a contact always has an email type).
_EMPTIABLE = frozenset(CONTACT_FIELDS) - {"EmailAddress", "EmailType"}
_XML_WS = " \t\r\n"


def _emptied_fields(body: bytes, *, max_bytes: int) -> list[str]:
    """The field elements of a PUT's ``Contact`` that are present and empty (after trimming
    XML whitespace): the fields the PUT empties. The body was parsed (and checked) already."""
    payload = next(parse_xml(body, max_bytes=max_bytes).iter(f"{{{CTCT_NS}}}Contact"), None)
    if payload is None:
        return []
    return [
        name
        for child in payload
        if (name := local_name(child)) in _EMPTIABLE
        and not "".join(child.itertext()).strip(_XML_WS)
    ]


routes: list[BaseRoute] = [
    Route(f"{PREFIX}/contacts", _contacts, methods=["GET", "POST"]),
    Route(f"{PREFIX}/contacts/{{contact_id}}", _one_contact, methods=["GET", "PUT", "DELETE"]),
]
