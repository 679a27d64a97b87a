"""Connections: hypercorn's timeouts, plus what it lacks — a connection cap and a body rate.

``bulkops serve`` runs hypercorn's trio worker pieces (``TCPServer`` per connection, its
``Lifespan`` and ``WorkerContext``) under an accept loop of its own, so that the listener
can be capped. What each limit is and who enforces it:

* **Request head and keep-alive** — hypercorn's ``keep_alive_timeout``: a connection is
  "idle" from its opening, and again from the end of each response, until a complete
  request head has arrived; an idle connection is closed after that many seconds. So one
  setting bounds both the wait between requests and a request head sent slowly.
  ``h11_max_incomplete_size`` bounds the bytes of an incomplete head.
* **Request body** — :class:`BodyRateGuard` (ASGI middleware): once a request head is in,
  its body must arrive at ``min_body_rate`` bytes/s on average after a grace of
  ``body_timeout`` seconds (the deadline for byte ``n`` is ``start + body_timeout +
  n / min_body_rate``). Past it the client gets ``408`` with ``Connection: close`` and the
  app sees a disconnect. Only waits for body bytes are timed, never the app's own work or
  a long response (hypercorn's ``read_timeout`` would time every read, even while a
  client waits for a long export, so it stays off). An answer given before the body was
  read (413, 408, ...) discards what hypercorn queued for the app while it ends, so that
  the connection closes (:func:`_send_draining`).
* **Descriptors** — :class:`ConnectionTracker` and :func:`accept_connections`: at most
  ``max_connections`` connections are open (default: the descriptor limit less
  :data:`RESERVED_DESCRIPTORS` for the database, logs and threads), so ``accept`` never
  meets ``EMFILE`` in normal operation. When the cap is reached and a client is waiting,
  the connection idle the longest (no request in progress, idle for :data:`EVICTION_GRACE`
  at least, so that a client that just connected has time to send its request) is closed to
  make room; with none such, accepting waits (new clients queue in the kernel's backlog).
  Should ``accept`` fail for lack of descriptors anyway, that is logged once per
  ``exhaustion_log_interval`` as one warning line with a count — never a traceback per
  accept.
* **One sender at a time** — :class:`SerialSendStream` under hypercorn's ``TCPServer``:
  its ``send_eof`` (closing) never overlaps a ``send_all`` (answering), whichever task
  calls them.

Invariants: every counter only grows (:meth:`ConnectionTracker.statistics`); open
connections never exceed the cap; a connection is evicted only while no request is in
progress on it; no two tasks ever send on one connection's socket at once.
"""

from __future__ import annotations

import errno
import logging
import math
import resource
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.statsd import StatsdLogger
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ConnectionState
from hypercorn.utils import repr_socket_addr, wrap_app

from bulkops.errors import ConfigError

__all__ = [
    "CAPACITY_ERRNOS",
    "EVICTION_GRACE",
    "RESERVED_DESCRIPTORS",
    "ASGIApp",
    "Accepting",
    "BodyRateGuard",
    "ConnectionLimits",
    "ConnectionStatistics",
    "ConnectionTracker",
    "SerialSendStream",
    "accept_connections",
    "connection_handler",
    "default_max_connections",
    "hypercorn_config",
    "serve_hypercorn",
]

logger = logging.getLogger("bulkops.server")

#: Descriptors kept free of connections: SQLite files of the store's threads, the log, the
#: listener, trio's wakeup pipes (generous: a few dozen are in use).
RESERVED_DESCRIPTORS = 128

#: Seconds a connection may be idle before it can be closed to make room: enough for a
#: client that just connected to send its request head, however many idle ones arrive after.
EVICTION_GRACE = 1.0

#: ``accept`` errors that mean "out of descriptors or memory", not "this client failed".
CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:
        raise ConfigError(f"{attribute.name} must be positive, not {value}")


@attrs.frozen(kw_only=True)
class ConnectionLimits:
    """How long and how many connections may stay open (module docstring: who enforces what).

    Attributes:
        keep_alive_timeout: seconds a connection may wait for a complete request head, from
            its opening or from its previous response.
        body_timeout: seconds of grace for a request body before ``min_body_rate`` applies.
        min_body_rate: bytes per second a request body must average after the grace.
        max_connections: open connections at most; None: the descriptor limit less
            :data:`RESERVED_DESCRIPTORS` (see :func:`default_max_connections`).
        max_head_bytes: bytes of an incomplete request head at most (431/400 above).
        exhaustion_log_interval: seconds between two "out of descriptors" warnings.
    """

    keep_alive_timeout: float = attrs.field(default=15.0, validator=_positive)
    body_timeout: float = attrs.field(default=10.0, validator=_positive)
    min_body_rate: float = attrs.field(default=1024.0, validator=_positive)
    max_connections: int | None = attrs.field(default=None, validator=_positive)
    max_head_bytes: int = attrs.field(default=16 * 1024, validator=_positive)
    exhaustion_log_interval: float = attrs.field(default=60.0, validator=_positive)

    def connection_cap(self) -> int:
        """``max_connections``, or the default for this process's descriptor limit."""
        return self.max_connections or default_max_connections()


def default_max_connections(ceiling: int = 4096) -> int:
    """The soft ``RLIMIT_NOFILE`` less :data:`RESERVED_DESCRIPTORS`, within ``[16, ceiling]``."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return ceiling
    return max(16, min(ceiling, soft - RESERVED_DESCRIPTORS))


@attrs.frozen(kw_only=True)
class ConnectionStatistics:
    """Counters of a :class:`ConnectionTracker` (all but ``open`` and ``busy`` only grow).

    ``busy`` counts the open connections with a request in progress.
    """

    open: int
    busy: int
    cap: int
    accepted: int
    evicted: int
    exhausted: int
    slow_bodies: int


@attrs.define
class _Connection:
    scope: trio.CancelScope
    idle_since: float | None  # None while a request is in progress
    requests: int = 0


class ConnectionTracker:
    """The open connections, which of them are idle, and the counters.

    Connections are keyed by the client's ``(host, port)``, the same pair the ASGI scope
    carries as ``client``: the accept loop registers them, :class:`BodyRateGuard` marks
    requests in progress.
    """

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.cap = limits.connection_cap()
        self._open: dict[tuple[str, int], _Connection] = {}
        self._changed = trio.Event()
        self._accepted = 0
        self._evicted = 0
        self._exhausted = 0
        self._slow_bodies = 0
        self._exhausted_logged_at = -math.inf
        self._exhausted_unlogged = 0

    def statistics(self) -> ConnectionStatistics:
        """The counters now."""
        return ConnectionStatistics(
            open=len(self._open),
            busy=sum(
                1
                for conn in self._open.values()
                if conn.idle_since is None and not conn.scope.cancel_called
            ),
            cap=self.cap,
            accepted=self._accepted,
            evicted=self._evicted,
            exhausted=self._exhausted,
            slow_bodies=self._slow_bodies,
        )

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- the accept loop's side -----------------------------------------------------------

    async def wait_for_room(self) -> None:
        """Return once a connection may be accepted: evict the longest-idle one when full."""
        while len(self._open) >= self.cap:
            if self.evict_idle():
                await self._changed.wait()  # the evicted connection's task has ended
                continue
            oldest = self._oldest_idle()
            # Nothing to evict yet: wait for a change, or for the oldest idle one to age.
            wake = math.inf if oldest is None else oldest[0] + EVICTION_GRACE
            with trio.move_on_at(wake):
                await self._changed.wait()

    def _oldest_idle(self) -> tuple[float, tuple[str, int]] | None:
        idle = [
            (conn.idle_since, key)
            for key, conn in self._open.items()
            if conn.idle_since is not None
        ]
        return min(idle) if idle else None

    def evict_idle(self) -> bool:
        """Close the connection idle the longest (no request in progress), if it has been
        idle :data:`EVICTION_GRACE` seconds at least; False if none has."""
        oldest = self._oldest_idle()
        if oldest is None or oldest[0] > trio.current_time() - EVICTION_GRACE:
            return False
        key = oldest[1]
        conn = self._open[key]
        conn.idle_since = None  # never picked twice
        conn.scope.cancel()
        self._evicted += 1
        return True

    def add(self, stream: trio.SocketStream) -> tuple[str, int] | None:
        """Count an accepted connection as open (at once: the cap counts it from here on);
        its key, or None when the client is gone already."""
        try:
            key = _peer(stream.socket.getpeername())
        except OSError:
            return None
        self._open[key] = _Connection(scope=trio.CancelScope(), idle_since=trio.current_time())
        self._accepted += 1
        return key

    async def run(
        self,
        handler: Callable[[trio.SocketStream], Awaitable[object]],
        stream: trio.SocketStream,
        key: tuple[str, int],
    ) -> None:
        """Serve a connection :meth:`add` counted with ``handler``, until it closes."""
        conn = self._open[key]
        try:
            with conn.scope:
                await handler(stream)
        finally:
            if self._open.get(key) is conn:
                del self._open[key]
            with trio.CancelScope(shield=True):
                await stream.aclose()
            self._notify()

    def note_exhaustion(self, exc: OSError) -> None:
        """Count an ``accept`` that failed for lack of descriptors; log once per interval."""
        self._exhausted += 1
        self._exhausted_unlogged += 1
        now = trio.current_time()
        if now - self._exhausted_logged_at >= self.limits.exhaustion_log_interval:
            logger.warning(
                "cannot accept connections: %s (%d failed accepts since the last warning;"
                " %d of at most %d connections open)",
                errno.errorcode.get(exc.errno or 0, exc.errno),
                self._exhausted_unlogged,
                len(self._open),
                self.cap,
            )
            self._exhausted_logged_at = now
            self._exhausted_unlogged = 0

    # -- the ASGI side ------------------------------------------------------------------

    def request_started(self, client: object) -> None:
        """A request is in progress on the connection of ``client`` (``(host, port)``)."""
        conn = self._open.get(_peer(client))
        if conn is not None:
            conn.idle_since = None
            conn.requests += 1

    def request_finished(self, client: object) -> None:
        """The request on the connection of ``client`` is answered: idle again."""
        conn = self._open.get(_peer(client))
        if conn is not None and not conn.scope.cancel_called:
            conn.idle_since = trio.current_time()
            self._notify()

    def slow_body(self) -> None:
        """Count a request refused for a body slower than the minimum rate."""
        self._slow_bodies += 1


def _peer(address: object) -> tuple[str, int]:
    if isinstance(address, (tuple, list)) and len(address) >= 2:
        return (str(address[0]), int(address[1]))
    return ("", 0)


# -- the body rate ------------------------------------------------------------------------


class BodyRateGuard:
    """ASGI middleware: request bodies at ``min_body_rate`` after ``body_timeout`` (or 408).

    It also tells the tracker when a request is in progress, so that only idle connections
    are evicted.
    """

    def __init__(self, app: ASGIApp, tracker: ConnectionTracker) -> None:
        self.app = app
        self.tracker = tracker
        self.grace = tracker.limits.body_timeout
        self.rate = tracker.limits.min_body_rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        self.tracker.request_started(client)
        try:
            await self._guarded(scope, receive, send)
        finally:
            self.tracker.request_finished(client)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = trio.current_time()
        received = 0
        body_done = False
        timed_out = False
        responded = False
        disconnected = False  # the disconnect was discarded by _send_draining

        async def timed_receive() -> Message:
            nonlocal received, body_done, timed_out
            if disconnected:
                return {"type": "http.disconnect"}
            if body_done:
                return await receive()  # e.g. waiting for a disconnect: never timed
            if timed_out:
                return {"type": "http.disconnect"}
            with trio.move_on_at(started + self.grace + received / self.rate):
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    body_done = not message.get("more_body", False)
                return message
            timed_out = True
            self.tracker.slow_body()
            logger.info(
                "%s %s: request body slower than %.0f bytes/s (%d bytes in %.1fs): 408",
                scope.get("method"),
                scope.get("path"),
                self.rate,
                received,
                trio.current_time() - started,
            )
            if not responded:
                await _send_408(send_answer)
            return {"type": "http.disconnect"}

        async def send_answer(message: Message) -> None:
            nonlocal disconnected
            ends = message["type"] == "http.response.body" and not message.get("more_body")
            if ends and not body_done and (timed_out or _declares_body(scope)):
                disconnected = await _send_draining(send, message, receive) or disconnected
            else:
                await send(message)

        async def guarded_send(message: Message) -> None:
            nonlocal responded
            if timed_out:
                return  # the 408 went out instead
            if message["type"] == "http.response.start":
                responded = True
            await send_answer(message)

        await self.app(scope, timed_receive, _SendWrapper(guarded_send, send))


def _declares_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"transfer-encoding":
            return True
        if name.lower() == b"content-length":
            return bytes(value).strip() not in (b"", b"0")
    return False


async def _send_draining(send: Send, message: Message, receive: Receive) -> bool:
    """``send`` the answer's last message while discarding what hypercorn queued for the
    app; True when that included the disconnect.

    Why: hypercorn queues the request's body for the app (``max_app_queue_size`` messages
    at most: then the task reading the connection waits for room), and when the answer
    ends it queues ``http.disconnect`` too, inside the app's last ``send``. An app that
    answers without reading the body (413, 401, 408, ...) can find the queue full: that
    send waited for room only the app's reading makes, the reading task waited as well,
    and the connection stayed open, busy, for ever. Discarding takes what is queued (the
    rest of the body is never read: hypercorn closes the connection).
    """
    disconnected = False

    async def discard() -> None:
        nonlocal disconnected
        while (await receive())["type"] != "http.disconnect":
            pass
        disconnected = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(discard)
        await send(message)
        nursery.cancel_scope.cancel()
    return disconnected


class _SendWrapper:
    """``send`` for the app, showing the ``__self__`` of the server's own ``send``: the fault
    plan (``faults._drop_connection``) reaches hypercorn's stream through it."""

    def __init__(self, send: Send, inner: Send) -> None:
        self._send = send
        self.__self__ = getattr(inner, "__self__", None)

    async def __call__(self, message: Message) -> None:
        await self._send(message)


async def _send_408(send: Send) -> None:
    body = b"The request body arrived too slowly\n"
    await send(
        {
            "type": "http.response.start",
            "status": 408,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# -- the accept loop and the server -------------------------------------------------------


class Accepting(Protocol):
    """What :func:`accept_connections` needs of a listener (``trio.SocketListener`` has it)."""

    async def accept(self) -> trio.SocketStream:
        """The next connection."""
        ...


async def accept_connections(
    listener: Accepting,
    handler: Callable[[trio.SocketStream], Awaitable[object]],
    tracker: ConnectionTracker,
    handler_nursery: trio.Nursery,
) -> None:
    """Accept connections until cancelled, each served by ``handler`` in ``handler_nursery``.

    Never more than ``tracker.cap`` at once: once a client is waiting in the backlog (the
    listening socket is readable), room is made for it (see
    :meth:`ConnectionTracker.wait_for_room`) — so an idle connection is evicted only for a
    client that is really there. An ``accept`` failing with one of :data:`CAPACITY_ERRNOS`
    is counted, logged once per interval (:meth:`ConnectionTracker.note_exhaustion`), makes
    room by evicting an idle connection, and is retried after 0.1 s.
    """
    sock = getattr(listener, "socket", None)
    while True:
        if sock is not None:
            await trio.lowlevel.wait_readable(sock)
        await tracker.wait_for_room()
        try:
            stream = await listener.accept()
        except OSError as exc:
            if exc.errno not in CAPACITY_ERRNOS:
                raise
            tracker.note_exhaustion(exc)
            tracker.evict_idle()
            await trio.sleep(0.1)
            continue
        key = tracker.add(stream)
        if key is None:
            await stream.aclose()
            continue
        handler_nursery.start_soon(tracker.run, handler, stream, key)


class SerialSendStream(trio.abc.HalfCloseableStream):
    """The connection's stream as hypercorn's ``TCPServer`` gets it: ``send_eof`` and
    ``send_all`` take turns.

    Why: ``TCPServer`` sends the answer's bytes (``send_all``, from the app's task) under
    its ``send_lock``, but its ``_close`` calls ``send_eof`` without that lock, and runs in
    the task reading the request when h11 finds the client broke the protocol — e.g. a
    client that read the answer's head and closed before sending the whole body it
    announced. trio's ``SocketStream.send_eof`` holds the stream across a checkpoint; a
    ``send_all`` from the app's task in that moment raised ``BusyResourceError`` into the
    app (an "unhandled error" on a loaded machine).

    Here a send that meets an EOF under way waits for it, then fails as any send after the
    EOF fails (``ClosedResourceError``, which hypercorn expects and ignores); an EOF that
    meets a send under way is refused at once with ``BusyResourceError``, as trio refuses
    it (hypercorn's ``_close`` ignores that and closes the stream, which ends the send) —
    never waiting, since a client that stops reading can hold a send forever.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.socket = stream.socket  # TCPServer reads the addresses from it
        self._turn = trio.Lock()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """``send_all`` of the stream, after any EOF under way."""
        async with self._turn:
            await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        """As the stream's."""
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        """``send_eof`` of the stream; ``BusyResourceError`` while a send is under way."""
        try:
            self._turn.acquire_nowait()
        except trio.WouldBlock:
            raise trio.BusyResourceError("a send is under way on this connection") from None
        try:
            await self.stream.send_eof()
        finally:
            self._turn.release()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """As the stream's."""
        return await self.stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        """As the stream's (it ends a send under way with ``ClosedResourceError``)."""
        await self.stream.aclose()


def connection_handler(
    app: AppWrapper, config: HypercornConfig, context: WorkerContext, state: ConnectionState
) -> Callable[[trio.SocketStream], Awaitable[None]]:
    """What serves one accepted connection: hypercorn's ``TCPServer`` for ``app``, on a
    :class:`SerialSendStream`."""

    async def serve_connection(stream: trio.SocketStream) -> None:
        # hypercorn annotates an SSLStream, but takes any stream with a ``socket`` (its own
        # worker hands it plain SocketStreams).
        serial = SerialSendStream(stream)
        await TCPServer(app, config, context, state, serial)  # type: ignore[arg-type]

    return serve_connection


def hypercorn_config(
    host: str, port: int, limits: ConnectionLimits, *, fd: int | None = None
) -> HypercornConfig:
    """hypercorn's settings for ``bulkops serve``: bind, logs, and its own timeouts.

    With ``fd``, the server accepts on that inherited listening socket instead of binding
    ``host:port`` (``bulkops serve --processes N``: every process runs this accept loop on
    the one socket its parent bound, and the kernel hands each connection to one of them).
    """
    config = HypercornConfig()
    bind_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    config.bind = [f"fd://{fd}"] if fd is not None else [f"{bind_host}:{port}"]
    config.accesslog = None  # AccessLog middleware writes one line per request
    config.errorlog = logging.getLogger("bulkops.server.hypercorn")
    config.graceful_timeout = 5.0
    config.keep_alive_timeout = limits.keep_alive_timeout
    config.h11_max_incomplete_size = limits.max_head_bytes
    config.read_timeout = None  # would cut long responses; the body guard times bodies
    config.include_server_header = False
    return config


async def serve_hypercorn(
    app: ASGIApp,
    config: HypercornConfig,
    tracker: ConnectionTracker,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """hypercorn's trio worker (``hypercorn.trio.run.worker_serve``) with our accept loop.

    Reports the bound origins through ``task_status``. On ``shutdown_trigger`` it stops
    accepting, lets idle connections close and gives requests in progress
    ``config.graceful_timeout`` seconds, as hypercorn does.
    """
    config.set_statsd_logger_class(StatsdLogger)
    wrapped = wrap_app(BodyRateGuard(app, tracker), config.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]
    lifespan_state: dict[str, Any] = {}
    lifespan = Lifespan(wrapped, config, lifespan_state)
    context = WorkerContext(None)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as server_nursery:
            sockets = config.create_sockets()
            listeners = []
            binds = []
            for sock in sockets.insecure_sockets:
                sock.listen(config.backlog)
                listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
                binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
            handler = connection_handler(
                wrapped, config, context, ConnectionState(lifespan_state.copy())
            )
            task_status.started(binds)
            try:
                async with trio.open_nursery() as accepting:
                    for listener in listeners:
                        accepting.start_soon(
                            accept_connections, listener, handler, tracker, server_nursery
                        )
                    if shutdown_trigger is None:
                        await trio.sleep_forever()
                    await shutdown_trigger()
                    accepting.cancel_scope.cancel()
            finally:
                await context.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
