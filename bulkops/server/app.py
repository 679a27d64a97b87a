"""The ASGI application of the Web Services API v1.

:func:`create_app` builds a Starlette app from the route lists of the resource modules
(``lists``, ``contacts``, ``activities``, …). Cross-cutting rules live here, once:

* every request is logged as one line — method, path (never the query), status, ms — and
  never a credential;
* an uncaught exception becomes a plain 500, and is logged with its traceback;
* :class:`ApiProblem` is how handlers answer with an error: a short ``text/plain`` body;
* an unsupported method is **415**, not 405 (spec §11), an unknown URI 404;
* request bodies are read through :func:`read_body`, which answers 413 past a limit without
  reading the rest, and bodies are type-checked by :func:`require_content_type` (415);
* :func:`authenticate` checks credentials once per request (401 with a Basic challenge,
  403 for another account's credentials, spec §2.4).
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import attrs
import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from bulkops.server.auth import THROTTLED_DELAY, Authenticator, Denied
from bulkops.server.store import Account, Store
from bulkops.wire.activity import DEFAULT_MAX_ACTIVITY_BYTES, DEFAULT_MAX_ACTIVITY_ROWS
from bulkops.wire.atom.service import service_document
from bulkops.wire.atom.syntax import ATOM_MEDIA_TYPE
from bulkops.wire.model import Base

__all__ = [
    "PREFIX",
    "ApiProblem",
    "ApiState",
    "ServerConfig",
    "atom_response",
    "authenticate",
    "base_for",
    "create_app",
    "read_body",
    "require_content_type",
    "state_of",
]

logger = logging.getLogger("bulkops.server")

#: Path prefix of every account resource; ``username`` is a path parameter.
PREFIX = "/ws/customers/{username}"

REALM = "Constant Contact API"


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
    faults: str | None = attrs.field(default=None, validator=lambda _i, _a, v: _check_faults(v))


def _check_faults(spec: str | None) -> None:
    """Reject a malformed fault plan when the configuration is made (ConfigError)."""
    if spec:
        from bulkops.server.faults import parse_fault_plan

        parse_fault_plan(spec)


@attrs.define(kw_only=True)
class ApiState:
    """What every handler can reach through :func:`state_of`."""

    store: Store
    config: ServerConfig
    authenticator: Authenticator = attrs.field(factory=Authenticator)
    origin: str | None = None  # set once the server knows its address
    extras: dict[str, Any] = attrs.field(factory=dict)  # for subsystems (worker, throttles)

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
        return await state.store.run(state.authenticator.check, header, username, client)
    except Denied as exc:
        if exc.status == 429:
            await trio.sleep(THROTTLED_DELAY)  # a flood waits, without costing CPU
        raise ApiProblem(exc.status, exc.reason, headers=exc.headers(REALM)) from None


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


def _unread_body(request: Request) -> bool:
    """Whether the request declared a body the app did not read to its end. hypercorn then
    closes the connection after the answer, so the answer must say ``Connection: close`` or
    a keep-alive client would send its next request into a closing socket."""
    if getattr(request.state, "body_read", False):
        return False
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "transfer-encoding" in request.headers


def atom_response(
    body: bytes, *, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """An ``application/atom+xml`` response."""
    return Response(body, status_code=status, media_type=ATOM_MEDIA_TYPE, headers=headers)


# -- handlers that belong to no resource module -------------------------------------------


async def _service_document(request: Request) -> Response:
    account = await authenticate(request)
    return atom_response(service_document(base_for(request, account)))


async def _no_trailing_slash(request: Request) -> Response:
    # The real service answered the base URI without its slash with Apache's 403 page.
    path = request.url.path
    body = (
        '<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n'
        "<title>403 Forbidden</title>\n</head><body>\n<h1>Forbidden</h1>\n"
        f"<p>You don't have permission to access {_html_escape(path)}\non this server.</p>\n"
        "</body></html>\n"
    )
    return Response(body, status_code=403, media_type="text/html")


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _core_routes() -> list[BaseRoute]:
    return [
        Route(f"{PREFIX}/", _service_document, methods=["GET"]),
        Route(PREFIX, _no_trailing_slash, methods=["GET"]),
    ]


# -- error handling and logging -----------------------------------------------------------


async def _problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiProblem)
    headers = {**exc.headers, "Connection": "close"} if _unread_body(request) else exc.headers
    return PlainTextResponse(exc.message + "\n", status_code=exc.status, headers=headers)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return PlainTextResponse(
            f"Method {request.method} is not supported on this resource\n",
            status_code=415,
            headers={"Connection": "close"} if _unread_body(request) else None,
        )
    if exc.status_code == 404:
        return PlainTextResponse("No such resource\n", status_code=404)
    return PlainTextResponse(f"{exc.detail}\n", status_code=exc.status_code)


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class AccessLog:
    """ASGI middleware: one log line per request, and a plain 500 for any uncaught error.

    The line holds the method, the path without its query string (queries may carry
    tokens), the status and the time in ms — never a header.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        logged = False

        def log_line() -> None:
            nonlocal logged
            if not logged:
                logged = True
                elapsed = (time.perf_counter() - started) * 1000
                logger.info("%s %s %d %.1fms", scope["method"], scope["path"], status, elapsed)

        async def send_logged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                log_line()  # before the last byte leaves, so the line exists once answered
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        except ClientDisconnect:
            # The client went away mid-request: nobody to answer, nothing went wrong here.
            status = status or 499
        except Exception:
            logger.error(
                "unhandled error on %s %s\n%s",
                scope["method"],
                scope["path"],
                traceback.format_exc(),
            )
            if status == 0:
                status = 500
                await PlainTextResponse("Internal server error\n", status_code=500)(
                    scope, receive, send_logged
                )
        finally:
            log_line()


def create_app(state: ApiState, *, extra_routes: Iterable[BaseRoute] = ()) -> ASGIApp:
    """The API as an ASGI app, serving ``state``.

    Args:
        state: store, configuration and shared services.
        extra_routes: routes added after the built-in ones (tests, later subsystems).
    """
    # The resource modules, gathered in one place; and the subsystems that wrap the app.
    from bulkops.server import faults, resources, throttle, worker

    app = Starlette(
        routes=[*_core_routes(), *resources.routes(), *extra_routes],
        exception_handlers={ApiProblem: _problem, HTTPException: _http_exception},
    )
    app.router.redirect_slashes = False
    app.state.api = state
    worker.register(state)  # serve_api runs it with the other background tasks
    # Outermost first: fault plan (needs hypercorn's own send), access log, throttles.
    return faults.wrap(AccessLog(throttle.wrap(app, state.config)), state)
