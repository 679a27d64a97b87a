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
import secrets
import sqlite3
import string
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import trio
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from bulkops.server import paging
from bulkops.server.app import (
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
from bulkops.server.datafile import (
    ActivityRequest,
    RequestProblem,
    encode_request,
    parse_activity_form,
)
from bulkops.server.exports import export_file_path, media_type_for
from bulkops.server.store import Account, now_ms, write_tx
from bulkops.server.throttle import queue_limit_message, retry_after_headers
from bulkops.server.worker import RowError, decode_errors, worker_for
from bulkops.wire.activity import ActivityStatus, ActivityType, reported_type
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

#: Every activity id starts with this (spec §7.6), then 14 random lower-case alphanumerics.
ACTIVITY_ID_PREFIX = "a07e1"
FEED_TITLE = "Bulk Activity"
PAGE_SIZE = paging.PAGE_SIZE
_TOKEN_KIND = "activities"

_ID_ALPHABET = string.ascii_lowercase + string.digits
_ID_RE = re.compile(r"[a-z0-9]{1,64}")
_FINAL = (ActivityStatus.COMPLETE.value, ActivityStatus.ERROR.value)
_UNFINISHED = (
    ActivityStatus.UNCONFIRMED.value,
    ActivityStatus.PENDING.value,
    ActivityStatus.QUEUED.value,
    ActivityStatus.RUNNING.value,
)
_COLUMNS = (
    "seq, id, type, status, error_count, file_name, transaction_count, insert_time, "
    "run_start_time, run_finish_time, updated"
)


def new_activity_id() -> str:
    """A fresh activity id: ``a07e1`` + 14 random lower-case letters and digits."""
    return ACTIVITY_ID_PREFIX + "".join(secrets.choice(_ID_ALPHABET) for _ in range(14))


def body_limit(max_activity_bytes: int) -> int:
    """The largest ``POST /activities`` body: ``data`` at its limit, urlencoded, plus room."""
    return max_activity_bytes * 3 + 1_048_576


def _time(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def activity_record(row: tuple[Any, ...], errors: list[RowError]) -> Activity:
    """The wire record of an activity row (``SELECT`` of the feed's columns) and its errors."""
    (
        _seq,
        activity_id,
        activity_type,
        status,
        _error_count,
        file_name,
        transaction_count,
        insert_time,
        run_start_time,
        run_finish_time,
        updated,
    ) = row
    return Activity(
        id=activity_id,
        type=activity_type,
        status=status,
        insert_time=datetime.fromtimestamp(insert_time / 1000, UTC),
        updated=datetime.fromtimestamp(updated / 1000, UTC),
        errors=tuple(ActivityError(line=e.line, email=e.email, message=e.message) for e in errors),
        file_name=file_name,
        transaction_count=transaction_count,
        run_start_time=_time(run_start_time),
        run_finish_time=_time(run_finish_time),
    )


def _cutoff(state: ApiState) -> int:
    return now_ms() - int(state.config.retention_days * 86_400_000)


def _feed_meta(account: Account, *, next_href: str | None, first: str, current: str) -> FeedMeta:
    return FeedMeta(
        id_path="activities",
        title=FEED_TITLE,
        updated=datetime.now(UTC),
        author=account.username,
        next_href=next_href,
        first_href=first,
        current_href=current,
    )


def _source(account: Account, base: Base) -> FeedMeta:
    """The ``<source>`` of a single activity entry: the collection, unpaged."""
    href = base.href("activities")
    return _feed_meta(account, next_href=None, first=href, current=href)


# -- POST /activities -------------------------------------------------------------------------


def _create(
    db: sqlite3.Connection,
    account_id: int,
    request: ActivityRequest,
    blob: bytes,
    max_queued: int | None,
) -> tuple[Any, ...]:
    """Insert a PENDING activity after checking its lists and the queue; return its row.

    Raises:
        RequestProblem: 404 for a list that does not exist; 429 over the queue limit.
    """
    wanted = list(request.list_ids)
    if request.export is not None and request.export.list_id.isdigit():
        wanted.append(int(request.export.list_id))
    now = now_ms()
    activity_type = ActivityType(request.type)
    shown_type = reported_type(activity_type, request.column_count)
    with write_tx(db):
        if wanted:
            marks = ",".join("?" * len(wanted))
            found = {
                r[0]
                for r in db.execute(
                    f"SELECT id FROM list WHERE account_id = ? AND id IN ({marks})",
                    (account_id, *wanted),
                )
            }
            for list_id in wanted:
                if list_id not in found:
                    raise RequestProblem(f"List {list_id} does not exist", status=404)
        if max_queued is not None:
            marks = ",".join("?" * len(_UNFINISHED))
            (unfinished,) = db.execute(
                f"SELECT count(*) FROM activity WHERE account_id = ? AND status IN ({marks})",
                (account_id, *_UNFINISHED),
            ).fetchone()
            if unfinished >= max_queued:
                raise RequestProblem("", status=429)
        activity_id = new_activity_id()
        cursor = db.execute(
            "INSERT INTO activity (id, account_id, requested_type, type, status, "
            "insert_time, updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                activity_id,
                account_id,
                activity_type.value,
                shown_type.value,
                ActivityStatus.PENDING.value,
                now,
                now,
            ),
        )
        # Apart from the activity row: its status changes then never rewrite the request.
        db.execute(
            "INSERT INTO activity_request (seq, request) VALUES (?, ?)", (cursor.lastrowid, blob)
        )
        row: tuple[Any, ...] = db.execute(
            f"SELECT {_COLUMNS} FROM activity WHERE id = ?", (activity_id,)
        ).fetchone()
    return row


def _parse_and_encode(
    body: bytes, content_type: str, max_rows: int, max_bytes: int
) -> tuple[ActivityRequest, bytes]:
    request = parse_activity_form(body, content_type, max_rows=max_rows, max_bytes=max_bytes)
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
        )
        del body
        row = await state.store.run(_create, account.id, parsed, blob, config.max_queued_activities)
    except RequestProblem as exc:
        if exc.status == 429:
            limit = config.max_queued_activities or 0
            raise ApiProblem(
                429,
                queue_limit_message(limit, account.username),
                headers=retry_after_headers(config.retry_after),
            ) from None
        raise ApiProblem(exc.status, exc.message) from None
    worker_for(state).wake()
    base = base_for(request, account)
    record = activity_record(row, [])
    body_out = document(activity_entry(base, record, source=_source(account, base)))
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


def _page(
    db: sqlite3.Connection,
    account_id: int,
    before: int | None,
    status: str | None,
    activity_type: str | None,
    cutoff: int,
) -> list[tuple[Any, ...]]:
    where = ["account_id = ?", "NOT (status IN (?, ?) AND updated < ?)"]
    params: list[Any] = [account_id, *_FINAL, cutoff]
    if before is not None:
        where.append("seq < ?")
        params.append(before)
    if status is not None:
        where.append("status = ?")
        params.append(status)
    if activity_type is not None:
        where.append("(type = ? OR requested_type = ?)")
        params.extend((activity_type, activity_type))
    sql = (
        f"SELECT {_COLUMNS} FROM activity WHERE {' AND '.join(where)} "
        f"ORDER BY seq DESC LIMIT {PAGE_SIZE + 1}"
    )
    return db.execute(sql, params).fetchall()


def _errors_of(db: sqlite3.Connection, activity_id: str) -> list[RowError]:
    row = db.execute("SELECT errors FROM activity WHERE id = ?", (activity_id,)).fetchone()
    return [] if row is None else decode_errors(row[0])


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
    rows = await state.store.run(_page, account.id, before, status, activity_type, _cutoff(state))
    base = base_for(request, account)
    filters = [(k, v) for k, v in (("status", status), ("type", activity_type)) if v]
    collection = base.href("activities")
    first = collection + (f"?{urlencode(filters)}" if filters else "")
    current_query = request.url.query
    current = collection + (f"?{current_query}" if current_query else "")
    next_href = None
    if len(rows) > PAGE_SIZE:
        rows = rows[:PAGE_SIZE]
        token = paging.encode_token(_TOKEN_KIND, rows[-1][0])
        next_href = paging.next_href(collection, filters, token)
    meta = _feed_meta(account, next_href=next_href, first=first, current=current)

    async def chunks() -> AsyncIterator[bytes]:
        yield document(feed_head(base, meta))
        for row in rows:
            errors = await state.store.run(_errors_of, row[1]) if row[4] else []
            yield activity_entry(base, activity_record(row, errors)).encode("utf-8")
        yield feed_tail().encode("utf-8")

    return StreamingResponse(chunks(), media_type=ATOM_MEDIA_TYPE)


# -- GET /activities/{id}[.csv|.txt] ----------------------------------------------------------


def _one(
    db: sqlite3.Connection, account_id: int, activity_id: str, cutoff: int
) -> tuple[tuple[Any, ...], list[RowError]] | None:
    row = db.execute(
        f"SELECT {_COLUMNS}, errors FROM activity WHERE id = ? AND account_id = ? "
        "AND NOT (status IN (?, ?) AND updated < ?)",
        (activity_id, account_id, *_FINAL, cutoff),
    ).fetchone()
    if row is None:
        return None
    return tuple(row[:-1]), decode_errors(row[-1])


async def _get_activity(request: Request) -> Response:
    state = state_of(request)
    account = await authenticate(request)
    name = str(request.path_params["name"])
    stem, dot, suffix = name.partition(".")
    if dot and suffix.lower() not in ("csv", "txt"):
        raise ApiProblem(404, "No such resource")
    if not _ID_RE.fullmatch(stem):
        raise ApiProblem(404, "No such activity")
    found = await state.store.run(_one, account.id, stem, _cutoff(state))
    if found is None:
        raise ApiProblem(404, f"Activity {stem} does not exist")
    row, errors = found
    if dot:
        return _download(state, row, suffix.lower())
    base = base_for(request, account)
    entry = activity_entry(base, activity_record(row, errors), source=_source(account, base))
    return atom_response(document(entry))


def _download(state: ApiState, row: tuple[Any, ...], suffix: str) -> Response:
    activity_id, status, file_name = row[1], row[3], row[5]
    if not file_name:
        if status in _FINAL:
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
