"""The account's sender addresses: ``/settings/emailaddresses`` and ``/{id}`` (spec §9).

Routes:

* ``GET /settings/emailaddresses`` — the account's addresses by ascending id, 50 per page
  (keyset on the id, token kind ``emailaddresses``); the feed title is empty, as in
  ``settings-emailaddresses.xml``;
* ``GET /settings/emailaddresses/{id}`` — one address with its ``<source>``.

Invariants:

* Read-only, as in v1 (no POST documented): other methods answer 415. Addresses are made
  by :func:`add_email_address` (``bulkops seed``, tests, embedding programs).
* ``Status`` is ``Verified`` (with ``VerifiedTime``) or ``Pending`` (without); never the v2
  names ``CONFIRMED``/``UNCONFIRMED``.
* An address is unique per account, compared case-insensitively; ids are SQLite rowids.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bulkops.server.feeds import clock_ms, feed_response, next_key, source_meta
from bulkops.server.http import (
    PREFIX,
    ApiProblem,
    atom_response,
    authenticate,
    base_for,
    path_id,
    state_of,
)
from bulkops.server.paging import PAGE_SIZE
from bulkops.server.setting_queries import (
    STATUS_PENDING,
    STATUS_VERIFIED,
    add_email_address,
)
from bulkops.wire.atom.email_addresses import email_address_entry
from bulkops.wire.atom.writing import document

__all__ = [
    # Re-exported: the store side lives in setting_queries.
    "STATUS_PENDING",
    "STATUS_VERIFIED",
    "add_email_address",
    "routes",
]

_COLLECTION = "settings/emailaddresses"
_TITLE = ""  # the documented feed has an empty title


async def _addresses(request: Request) -> Response:
    account = await authenticate(request)
    token = next_key(request, "emailaddresses", 1)
    state = state_of(request)
    after = 0 if token is None else token[0]
    rows = await state.store.email_address_page(account.id, after, PAGE_SIZE + 1)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    base = base_for(request, account)
    return feed_response(
        request,
        base,
        collection=_COLLECTION,
        title=_TITLE,
        entries=(email_address_entry(base, row) for row in rows),
        next_values=(int(rows[-1].id),) if more else None,
        kind="emailaddresses",
    )


async def _one_address(request: Request) -> Response:
    account = await authenticate(request)
    address_id = path_id(request, "address_id")
    state = state_of(request)
    found = (
        None if address_id is None else await state.store.get_email_address(account.id, address_id)
    )
    if found is None:
        raise ApiProblem(404, "No such e-mail address")
    base = base_for(request, account)
    source = source_meta(base, _COLLECTION, _TITLE, clock_ms(state))
    return atom_response(document(email_address_entry(base, found, source=source)))


routes: list[BaseRoute] = [
    Route(f"{PREFIX}/{_COLLECTION}", _addresses, methods=["GET"]),
    Route(f"{PREFIX}/{_COLLECTION}/{{address_id}}", _one_address, methods=["GET"]),
]
