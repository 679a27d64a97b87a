"""The ASGI application of the Web Services API v1: assembly only.

:func:`create_app` builds a Starlette app from the route lists of the resource modules
(``lists``, ``contacts``, ``activities``, …) and wraps it in the server-wide middleware. The
kit those modules share lives below them (:mod:`bulkops.server.http`,
:mod:`bulkops.server.feeds`); nothing imports this module but the server's entry points.
Cross-cutting rules applied here, once:

* every request is logged as one line — method, path (never the query), status, ms — and
  never a credential;
* an uncaught exception becomes a plain 500, and is logged with its traceback;
* :class:`~bulkops.server.http.ApiProblem` and the store's domain errors
  (:mod:`bulkops.server.errors`, mapped by :func:`~bulkops.server.http.problem_for`) answer
  with a short ``text/plain`` body;
* an unsupported method is **415**, not 405 (spec §11), an unknown URI 404.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Iterable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from bulkops.server import faults, resources, throttle, worker
from bulkops.server.asgi import ASGIApp, Message, Receive, Scope, Send
from bulkops.server.errors import StoreError
from bulkops.server.http import (
    PREFIX,
    ApiProblem,
    ApiState,
    ServerConfig,
    atom_response,
    authenticate,
    base_for,
    on_problem,
    on_store_error,
    unread_body,
)
from bulkops.wire.atom.service import service_document

__all__ = [
    # Re-exported for the entry points and tests that build a server.
    "ApiState",
    "ServerConfig",
    "create_app",
]

logger = logging.getLogger("bulkops.server")

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


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return PlainTextResponse(
            f"Method {request.method} is not supported on this resource\n",
            status_code=415,
            headers={"Connection": "close"} if unread_body(request) else None,
        )
    if exc.status_code == 404:
        return PlainTextResponse("No such resource\n", status_code=404)
    return PlainTextResponse(f"{exc.detail}\n", status_code=exc.status_code)


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


class RefuseNul:
    """ASGI middleware: a NUL character anywhere in the path or the query string is a 400.

    No resource name, id, email or token holds one, and PostgreSQL cannot take one as text:
    refusing it here gives the same answer on every store, before any query.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope["path"]
            or b"%00" in scope["query_string"]
            or b"\x00" in scope["query_string"]
        ):
            response = PlainTextResponse(
                "A NUL character (%00) is not allowed in the URI\n", status_code=400
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(state: ApiState, *, extra_routes: Iterable[BaseRoute] = ()) -> ASGIApp:
    """The API as an ASGI app, serving ``state``.

    Args:
        state: store, configuration and shared services.
        extra_routes: routes added after the built-in ones (tests, later subsystems).

    Raises:
        ConfigError: the configured fault plan is malformed.
    """
    app = Starlette(
        routes=[*_core_routes(), *resources.routes(), *extra_routes],
        exception_handlers={
            ApiProblem: on_problem,
            StoreError: on_store_error,
            HTTPException: _http_exception,
        },
    )
    app.router.redirect_slashes = False
    app.state.api = state
    worker.register(state)  # serve_api runs it with the other background tasks
    config = state.config
    if config.faults and state.faults is None:
        plan = faults.parse_fault_plan(config.faults)
        state.faults = faults.FaultDice(plan)  # the worker draws its stalls from these dice
        logger.warning("fault plan active: %s", plan.spec())
    throttled = throttle.wrap(
        app,
        rate=config.rate,
        daily_quota=config.daily_quota,
        retry_after=config.retry_after,
        store=state.store,  # counters shared by every process on the database
    )
    # Outermost first: fault plan (needs hypercorn's own send), access log, throttles.
    return faults.wrap(
        AccessLog(RefuseNul(throttled)), state.faults, retry_after=config.retry_after
    )
