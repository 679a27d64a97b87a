"""The kit every resource module builds on: configuration, typed state, problems, auth, bodies.

This module sits at the bottom of the server: resource modules (``lists``, ``contacts``,
``activities``, …) import it, and it imports none of them (nor :mod:`bulkops.server.app`, which
assembles them). Its rules, once for every handler:

* :class:`ApiProblem` is how handlers answer with an error: a short ``text/plain`` body;
  the store's domain errors (:mod:`bulkops.server.errors`) become statuses in one place,
  :func:`problem_for`;
* request bodies are read through :func:`read_body`, which answers 413 past a limit without
  reading the rest; bodies are type-checked by :func:`require_content_type` (415) and Atom
  bodies parsed off the event loop by :func:`parse_body` (400 with the parser's reason);
* :func:`authenticate` checks credentials once per request (401 with a Basic challenge,
  403 for another account's credentials, spec §2.4).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import attrs
import trio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response

from bulkops.errors import XmlError
from bulkops.server.auth import THROTTLED_DELAY, Authenticator, Denied
from bulkops.server.errors import Conflict, Forbidden, Invalid, NotFound, QueueFull, StoreError
from bulkops.server.faults import FaultDice, parse_fault_plan
from bulkops.server.storage import Storage
from bulkops.server.store import Account
from bulkops.server.throttle import queue_limit_message, retry_after_headers
from bulkops.wire.activity import DEFAULT_MAX_ACTIVITY_BYTES, DEFAULT_MAX_ACTIVITY_ROWS
from bulkops.wire.atom.syntax import ATOM_MEDIA_TYPE
from bulkops.wire.model import Base

__all__ = [
    "PREFIX",
    "REALM",
    "ActivityRunner",
    "ApiProblem",
    "ApiState",
    "BackgroundTask",
    "ServerConfig",
    "atom_body",
    "atom_response",
    "authenticate",
    "base_for",
    "on_problem",
    "on_store_error",
    "parse_body",
    "path_id",
    "problem_for",
    "problem_response",
    "read_body",
    "require_content_type",
    "required_path_id",
    "state_of",
    "unread_body",
]

T = TypeVar("T")

#: Path prefix of every account resource; ``username`` is a path parameter.
PREFIX = "/ws/customers/{username}"

REALM = "Constant Contact API"

_ID_RE = re.compile(r"[0-9]{1,18}")


def _check_faults(_instance: object, _attribute: object, spec: str | None) -> None:
    """Reject a malformed fault plan when the configuration is made (ConfigError)."""
    if spec:
        parse_fault_plan(spec)


@attrs.frozen(kw_only=True)
class ServerConfig:
    """Settings of one server.

    Attributes:
        public_url: origin used in ids and ``Location`` headers (``http://HOST:PORT`` when
            None: the address actually bound).
        max_xml_bytes: largest Atom request body accepted (413 above).
        max_activity_rows: data rows allowed in one activity (400 above).
        max_activity_bytes: bytes of ``data`` allowed in one activity (400 above).
        retention_days: finished activities older than this answer 404.
        rate: requests per second per account (token bucket), None for no limit.
        daily_quota: requests per day per account, None for no limit.
        max_queued_activities: unfinished activities per account, None for no limit.
        retry_after: seconds to send in ``Retry-After`` with a 429, None to send none.
        faults: the fault plan, ``KIND=P[:SECONDS],...,seed=N``, or None.
    """

    public_url: str | None = None
    max_xml_bytes: int = 1_048_576
    max_activity_rows: int = DEFAULT_MAX_ACTIVITY_ROWS
    max_activity_bytes: int = DEFAULT_MAX_ACTIVITY_BYTES
    retention_days: float = 14.0
    rate: float | None = None
    daily_quota: int | None = None
    max_queued_activities: int | None = None
    retry_after: float | None = None
    faults: str | None = attrs.field(default=None, validator=_check_faults)


class ActivityRunner(Protocol):
    """What request handlers need of the activity worker: a nudge after a new activity."""

    def wake(self) -> None:
        """A new activity may be waiting."""


#: A long-running task ``serve_api`` starts with the server: ``task(state, task_status=...)``.
BackgroundTask = Callable[..., Awaitable[None]]


@attrs.define(kw_only=True)
class ApiState:
    """What every handler can reach through :func:`state_of`.

    Attributes:
        store: the database, through its one interface.
        config: the server's settings.
        authenticator: checks credentials (with its caches).
        origin: the bound address, set once the server knows it.
        clock: "now" in ms since the epoch for schedules, feeds and the event window
            (tests pin it); None for the wall clock.
        faults: the fault plan's dice when ``config.faults`` is set (made by ``create_app``;
            the worker draws ``stall`` from it).
        worker: the activity worker, once made (``worker.register``).
        background: tasks ``serve_api`` starts with the server (the worker's).
    """

    store: Storage
    config: ServerConfig
    authenticator: Authenticator = attrs.field(factory=Authenticator)
    origin: str | None = None
    clock: Callable[[], int] | None = None
    faults: FaultDice | None = None
    worker: ActivityRunner | None = None
    background: list[BackgroundTask] = attrs.field(factory=list)

    def origin_for(self, request: Request) -> str:
        """The public origin: configured, else bound address, else the request's own host."""
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        if self.origin:
            return self.origin
        return f"{request.url.scheme}://{request.url.netloc}"


class ApiProblem(Exception):
    """Answer the request with ``status`` and a short ``text/plain`` message."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def state_of(request: Request) -> ApiState:
    """The :class:`ApiState` of the app serving ``request``."""
    state: ApiState = request.app.state.api
    return state


def base_for(request: Request, account: Account) -> Base:
    """Where ids and links of ``account`` point, for this request."""
    return Base(origin=state_of(request).origin_for(request), username=account.username)


async def authenticate(request: Request) -> Account:
    """The account of the URL, if the request's credentials grant access to it.

    Raises:
        ApiProblem: 401 (with a Basic challenge), 403, or 429 (with ``Retry-After``) after
            too many failed logins of the account name or from the client's address.
    """
    state = state_of(request)
    username = str(request.path_params.get("username", "")).lower()
    header = request.headers.get("authorization")
    client = request.client.host if request.client else ""
    try:
        return await state.store.check_credentials(state.authenticator, header, username, client)
    except Denied as exc:
        if exc.status == 429:
            await trio.sleep(THROTTLED_DELAY)  # a flood waits, without costing CPU
        raise ApiProblem(exc.status, exc.reason, headers=exc.headers(REALM)) from None


def path_id(request: Request, name: str) -> int | None:
    """The numeric path parameter ``name`` (at most 18 ASCII digits), else None."""
    text = str(request.path_params.get(name, ""))
    return int(text) if _ID_RE.fullmatch(text) else None


def required_path_id(request: Request, name: str, missing: str) -> int:
    """The numeric path parameter ``name``; a 404 saying ``missing`` when it is not one."""
    found = path_id(request, name)
    if found is None:
        raise ApiProblem(404, missing)
    return found


def require_content_type(request: Request, *allowed: str) -> str:
    """The request's media type, if it is one of ``allowed`` (compared without parameters).

    Raises:
        ApiProblem: 415 naming what is accepted.
    """
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type not in allowed:
        shown = media_type or "none"
        raise ApiProblem(
            415, f"Content-Type {shown} is not accepted here; use {', '.join(allowed)}"
        )
    return media_type


async def read_body(request: Request, limit: int) -> bytes:
    """The whole request body, refusing (413) anything over ``limit`` bytes without reading it.

    Raises:
        ApiProblem: 413 when the declared or actual size exceeds ``limit``; 400 for a bad
            Content-Length.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ApiProblem(400, "Content-Length is not a number") from None
        if size > limit:
            raise ApiProblem(413, f"Request body of {size} bytes exceeds the limit of {limit}")
    chunks: list[bytes] = []
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise ApiProblem(413, f"Request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiProblem(400, "The client disconnected before sending the whole body") from None
    request.state.body_read = True
    return b"".join(chunks)


def unread_body(request: Request) -> bool:
    """Whether the request declared a body the app did not read to its end. hypercorn then
    closes the connection after the answer, so the answer must say ``Connection: close`` or
    a keep-alive client would send its next request into a closing socket."""
    if getattr(request.state, "body_read", False):
        return False
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "transfer-encoding" in request.headers


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


def atom_response(
    body: bytes, *, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """An ``application/atom+xml`` response."""
    return Response(body, status_code=status, media_type=ATOM_MEDIA_TYPE, headers=headers)


# -- the one mapping of domain errors to statuses ---------------------------------------------

_STATUSES: dict[type[StoreError], int] = {
    Invalid: 400,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    QueueFull: 429,
}


def problem_for(request: Request, exc: StoreError) -> ApiProblem:
    """The answer to a domain error raised by the store (the only place they get statuses).

    A full queue answers as a throttle does: its limit named, ``Retry-After`` when configured.
    """
    if isinstance(exc, QueueFull):
        config = state_of(request).config
        username = str(request.path_params.get("username", "")).lower()
        return ApiProblem(
            429,
            queue_limit_message(exc.limit, username),
            headers=retry_after_headers(config.retry_after),
        )
    status = next((code for kind, code in _STATUSES.items() if isinstance(exc, kind)), 400)
    return ApiProblem(status, exc.message)


def problem_response(request: Request, problem: ApiProblem) -> Response:
    """The ``text/plain`` answer of a problem (``Connection: close`` over an unread body)."""
    headers = (
        {**problem.headers, "Connection": "close"} if unread_body(request) else problem.headers
    )
    return PlainTextResponse(problem.message + "\n", status_code=problem.status, headers=headers)


async def on_problem(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for :class:`ApiProblem`."""
    assert isinstance(exc, ApiProblem)
    return problem_response(request, exc)


async def on_store_error(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for the store's :class:`StoreError`."""
    assert isinstance(exc, StoreError)
    return problem_response(request, problem_for(request, exc))
