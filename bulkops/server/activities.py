"""The Bulk Activity resources (spec §7): create, list, read, and download exports.

Routes (under ``/ws/customers/{username}``):

* ``POST /activities`` — a form, urlencoded or multipart (:mod:`bulkops.server.datafile`).
  Answers 201 with ``Location`` (the absolute id URI) and the new activity's entry; 400 with
  a short text for a bad form (unknown type, bad list URI, no email column, unknown column,
  data over the limits); 404 for a list that does not exist; 413 past the body limit; 415
  for another content type; 429 when the account has ``--max-queued-activities`` unfinished.
* ``GET /activities`` — the "Bulk Activity" feed, newest first, 50 per page, ``next`` links,
  ``?status=`` and ``?type=`` filters (``type`` matches the reported or the requested type).
* ``GET /activities/{id}`` — one entry, with ``<source>``.
* ``GET /activities/{id}.csv`` / ``.txt`` — an export file, streamed (``text/csv`` /
  ``text/plain``).

Invariants:

* A new activity is created PENDING, with everything the worker needs in ``activity_request``,
  in one write transaction that also checks the lists exist and the queued-activity limit
  (so concurrent POSTs cannot exceed it); the worker is woken after the commit.
* Form decoding and ``data`` parsing run in a worker thread: a 4 MB body never stalls the
  event loop.
* Finished activities last changed more than ``retention_days`` ago answer 404 at once (the
  worker deletes them later).
* Feeds are streamed entry by entry; an entry's ``Errors`` are loaded only when it is
  rendered, so memory stays bounded by one activity's errors.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import urlencode

import trio
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from bulkops.server import paging
from bulkops.server.activity_queries import ACTIVITY_ID_PREFIX, FINAL, new_activity_id
from bulkops.server.datafile import (
    ActivityRequest,
    RequestProblem,
    encode_request,
    parse_activity_form,
)
from bulkops.server.exports import export_file_path, media_type_for
from bulkops.server.feeds import clock_ms, from_ms
from bulkops.server.http import (
    PREFIX,
    ApiProblem,
    ApiState,
    atom_response,
    authenticate,
    base_for,
    read_body,
    require_content_type,
    state_of,
)
from bulkops.server.records import ActivityRow, RowError
from bulkops.server.store import Account, now_ms
from bulkops.wire.activity import ActivityStatus, ActivityType
from bulkops.wire.atom.activities import activity_entry
from bulkops.wire.atom.feeds import feed_head, feed_tail
from bulkops.wire.atom.syntax import ATOM_MEDIA_TYPE
from bulkops.wire.atom.writing import document
from bulkops.wire.forms import MULTIPART, URLENCODED
from bulkops.wire.model import Activity, ActivityError, Base, FeedMeta

__all__ = [
    "ACTIVITY_ID_PREFIX",
    "FEED_TITLE",
    "PAGE_SIZE",
    "activity_record",
    "body_limit",
    "new_activity_id",
    "routes",
]

FEED_TITLE = "Bulk Activity"
PAGE_SIZE = paging.PAGE_SIZE
_TOKEN_KIND = "activities"

_ID_RE = re.compile(r"[a-z0-9]{1,64}")


def body_limit(max_activity_bytes: int) -> int:
    """The largest ``POST /activities`` body: ``data`` at its limit, urlencoded, plus room."""
    return max_activity_bytes * 3 + 1_048_576


def _time(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def activity_record(row: ActivityRow, errors: list[RowError]) -> Activity:
    """The wire record of a stored activity and its errors."""
    return Activity(
        id=row.id,
        type=row.type,
        status=row.status,
        insert_time=datetime.fromtimestamp(row.insert_time / 1000, UTC),
        updated=datetime.fromtimestamp(row.updated / 1000, UTC),
        errors=tuple(ActivityError(line=e.line, email=e.email, message=e.message) for e in errors),
        file_name=row.file_name,
        transaction_count=row.transaction_count,
        run_start_time=_time(row.run_start_time),
        run_finish_time=_time(row.run_finish_time),
    )


def _cutoff(state: ApiState) -> int:
    # The wall clock, as the worker's purge and the stored ``updated`` times use.
    return now_ms() - int(state.config.retention_days * 86_400_000)


def _feed_meta(
    account: Account, now: int, *, next_href: str | None, first: str, current: str
) -> FeedMeta:
    return FeedMeta(
        id_path="activities",
        title=FEED_TITLE,
        updated=from_ms(now),
        author=account.username,
        next_href=next_href,
        first_href=first,
        current_href=current,
    )


def _source(account: Account, base: Base, now: int) -> FeedMeta:
    """The ``<source>`` of a single activity entry: the collection, unpaged."""
    href = base.href("activities")
    return _feed_meta(account, now, next_href=None, first=href, current=href)


# -- POST /activities -------------------------------------------------------------------------


def _parse_and_encode(
    body: bytes, content_type: str, max_rows: int, max_bytes: int, username: str
) -> tuple[ActivityRequest, bytes]:
    request = parse_activity_form(
        body, content_type, max_rows=max_rows, max_bytes=max_bytes, username=username
    )
    return request, encode_request(request)


async def _post_activity(request: Request) -> Response:
    state = state_of(request)
    account = await authenticate(request)
    require_content_type(request, URLENCODED, MULTIPART)
    config = state.config
    body = await read_body(request, body_limit(config.max_activity_bytes))
    content_type = request.headers.get("content-type", "")
    try:
        parsed, blob = await trio.to_thread.run_sync(
            _parse_and_encode,
            body,
            content_type,
            config.max_activity_rows,
            config.max_activity_bytes,
            account.username,
        )
    except RequestProblem as exc:
        raise ApiProblem(exc.status, exc.message) from None
    del body
    row = await state.store.create_activity(account.id, parsed, blob, config.max_queued_activities)
    if state.worker is not None:
        state.worker.wake()
    base = base_for(request, account)
    record = activity_record(row, [])
    body_out = document(
        activity_entry(base, record, source=_source(account, base, clock_ms(state)))
    )
    return atom_response(
        body_out, status=201, headers={"Location": base.id(f"activities/{record.id}")}
    )


# -- GET /activities --------------------------------------------------------------------------


def _decode_token(token: str) -> int:
    try:
        (seq,) = paging.decode_token(_TOKEN_KIND, token, 1)
    except paging.BadToken:
        raise ApiProblem(400, "Invalid next token") from None
    return seq


def _filter(
    request: Request, name: str, allowed: type[ActivityStatus] | type[ActivityType]
) -> str | None:
    value = request.query_params.get(name)
    if value is None or not value.strip():
        return None
    wanted = value.strip().upper()
    if wanted not in {member.value for member in allowed}:
        known = ", ".join(member.value for member in allowed)
        raise ApiProblem(400, f'Unknown {name} "{value.strip()}"; use one of {known}')
    return wanted


async def _list_activities(request: Request) -> Response:
    state = state_of(request)
    account = await authenticate(request)
    status = _filter(request, "status", ActivityStatus)
    activity_type = _filter(request, "type", ActivityType)
    token = request.query_params.get("next")
    before = _decode_token(token) if token else None
    rows = await state.store.activity_page(
        account.id, before, status, activity_type, _cutoff(state)
    )
    base = base_for(request, account)
    filters = [(k, v) for k, v in (("status", status), ("type", activity_type)) if v]
    collection = base.href("activities")
    first = collection + (f"?{urlencode(filters)}" if filters else "")
    current_query = request.url.query
    current = collection + (f"?{current_query}" if current_query else "")
    next_href = None
    if len(rows) > PAGE_SIZE:
        rows = rows[:PAGE_SIZE]
        token = paging.encode_token(_TOKEN_KIND, rows[-1].seq)
        next_href = paging.next_href(collection, filters, token)
    meta = _feed_meta(account, clock_ms(state), next_href=next_href, first=first, current=current)

    async def chunks() -> AsyncIterator[bytes]:
        yield document(feed_head(base, meta))
        for row in rows:
            errors = await state.store.activity_errors(row.id) if row.error_count else []
            yield activity_entry(base, activity_record(row, errors)).encode("utf-8")
        yield feed_tail().encode("utf-8")

    return StreamingResponse(chunks(), media_type=ATOM_MEDIA_TYPE)


# -- GET /activities/{id}[.csv|.txt] ----------------------------------------------------------


async def _get_activity(request: Request) -> Response:
    state = state_of(request)
    account = await authenticate(request)
    name = str(request.path_params["name"])
    stem, dot, suffix = name.partition(".")
    if dot and suffix.lower() not in ("csv", "txt"):
        raise ApiProblem(404, "No such resource")
    if not _ID_RE.fullmatch(stem):
        raise ApiProblem(404, "No such activity")
    found = await state.store.get_activity(account.id, stem, _cutoff(state))
    if found is None:
        raise ApiProblem(404, f"Activity {stem} does not exist")
    row, errors = found
    if dot:
        return _download(state, row, suffix.lower())
    base = base_for(request, account)
    entry = activity_entry(
        base, activity_record(row, errors), source=_source(account, base, clock_ms(state))
    )
    return atom_response(document(entry))


def _download(state: ApiState, row: ActivityRow, suffix: str) -> Response:
    activity_id, status, file_name = row.id, row.status, row.file_name
    if not file_name:
        if status in FINAL:
            raise ApiProblem(404, f"Activity {activity_id} has no export file")
        raise ApiProblem(404, f"The export file of activity {activity_id} is not ready")
    if not file_name.lower().endswith("." + suffix):
        raise ApiProblem(404, f"The export file of activity {activity_id} is {file_name}")
    path = export_file_path(state.store.data_dir, activity_id, file_name)
    if not path.is_file():
        raise ApiProblem(404, f"The export file of activity {activity_id} is gone")
    return FileResponse(path, media_type=media_type_for(file_name))


routes: list[BaseRoute] = [
    Route(f"{PREFIX}/activities", _post_activity, methods=["POST"]),
    Route(f"{PREFIX}/activities", _list_activities, methods=["GET"]),
    Route(f"{PREFIX}/activities/{{name}}", _get_activity, methods=["GET"]),
]
