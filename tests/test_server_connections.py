"""Connections: the body rate (autojump clock), the accept loop's cap, eviction and EMFILE log,
and a ``bulkops serve`` subprocess with tiny timeouts closing idle and trickling clients."""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app

from bulkops.errors import ConfigError
from bulkops.server.app import ApiState
from bulkops.server.auth import LoginLimits
from bulkops.server.connections import (
    BodyRateGuard,
    ConnectionLimits,
    ConnectionTracker,
    accept_connections,
    connection_handler,
    default_max_connections,
    hypercorn_config,
)
from bulkops.server.serve import (
    add_arguments,
    connection_limits_from_args,
    login_limits_from_args,
    serve_api,
)
from tests.serverkit import HANG_GUARD, USER, basic, serve_subprocess

Message = dict[str, Any]

# -- the body rate, on trio's autojump clock --------------------------------------------------


class BodyApp:
    """An ASGI app that reads the whole body, answers 200, then waits for the disconnect."""

    def __init__(self) -> None:
        self.body = b""
        self.events: list[tuple[float, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.events.append((trio.current_time(), "disconnect"))
                return
            self.body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.events.append((trio.current_time(), "body"))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        message = await receive()  # as a streaming response listens for the disconnect
        self.events.append((trio.current_time(), message["type"]))


async def _run_guarded(
    chunks: list[tuple[float, bytes]], limits: ConnectionLimits, *, disconnect_at: float
) -> tuple[BodyApp, list[Message], ConnectionTracker]:
    """Feed ``chunks`` (delay before each, bytes) through the guard to a :class:`BodyApp`."""
    tracker = ConnectionTracker(limits)
    app = BodyApp()
    sent: list[Message] = []
    to_app, from_client = trio.open_memory_channel[Message](100)

    async def client() -> None:
        for at, (delay, data) in enumerate(chunks):
            await trio.sleep(delay)
            more = at < len(chunks) - 1
            await to_app.send({"type": "http.request", "body": data, "more_body": more})
        await trio.sleep_until(disconnect_at)
        await to_app.send({"type": "http.disconnect"})

    async def send(message: Message) -> None:
        sent.append({**message, "at": trio.current_time()})

    scope = {"type": "http", "method": "POST", "path": "/x", "client": ("127.0.0.1", 1)}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)
        await BodyRateGuard(app, tracker)(scope, from_client.receive, send)  # type: ignore[arg-type]
        nursery.cancel_scope.cancel()
    return app, sent, tracker


async def test_a_trickling_body_is_answered_408_when_it_falls_below_the_rate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One byte every 2 s: 408 with Connection: close at grace + bytes/rate; the app sees a
    disconnect and its own answer goes nowhere."""
    limits = ConnectionLimits(body_timeout=10.5, min_body_rate=1.0)
    start = trio.current_time()
    app, sent, tracker = await _run_guarded([(2.0, b"x")] * 100, limits, disconnect_at=start + 1000)
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    # 1 byte per 2 s against 1 byte/s after 10.5 s of grace: with n bytes in, the next is due
    # by 10.5 + n s; the 9th arrives at 18 s, the 10th (due 19.5 s) would come at 20 s.
    assert sent[0]["at"] - start == pytest.approx(19.5)
    assert [event for _at, event in app.events] == ["disconnect"]
    assert len(sent) == 2
    assert tracker.statistics().slow_bodies == 1


async def test_a_body_at_the_rate_is_never_cut_nor_the_wait_after_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """2 bytes/s against 1 byte/s: read whole; the later wait for the disconnect is not timed."""
    limits = ConnectionLimits(body_timeout=1.0, min_body_rate=1.0)
    start = trio.current_time()
    app, sent, tracker = await _run_guarded([(0.5, b"x")] * 200, limits, disconnect_at=start + 5000)
    assert app.body == b"x" * 200
    assert [event for _at, event in app.events] == ["body", "http.disconnect"]
    assert app.events[-1][0] - start == pytest.approx(5000)
    assert sent[0]["status"] == 200
    assert tracker.statistics().slow_bodies == 0


def test_limits_must_be_positive() -> None:
    """A zero timeout or rate is a configuration error; the default cap fits the fd limit."""
    with pytest.raises(ConfigError):
        ConnectionLimits(min_body_rate=0)
    with pytest.raises(ConfigError):
        ConnectionLimits(keep_alive_timeout=-1)
    assert 16 <= default_max_connections() <= 4096


# -- the accept loop ---------------------------------------------------------------------------


class ExhaustedListener:
    """A listener whose every accept fails as a process out of descriptors does."""

    def __init__(self) -> None:
        self.calls = 0

    async def accept(self) -> trio.SocketStream:
        await trio.lowlevel.checkpoint()
        self.calls += 1
        raise OSError(errno.EMFILE, "Too many open files")


async def test_descriptor_exhaustion_is_logged_once_per_interval_without_traceback(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Accept failing for 299 s (retried every 0.1 s): five warnings of counts, no traceback."""
    tracker = ConnectionTracker(ConnectionLimits(exhaustion_log_interval=60.0))
    listener = ExhaustedListener()
    caplog.set_level(logging.INFO, logger="bulkops.server")
    with trio.move_on_after(299):
        async with trio.open_nursery() as nursery:
            await accept_connections(listener, _never, tracker, nursery)
    warnings = [r for r in caplog.records if "cannot accept connections" in r.getMessage()]
    assert len(warnings) == 5
    assert all(r.exc_info is None and r.levelno == logging.WARNING for r in warnings)
    assert "EMFILE" in warnings[0].getMessage()
    assert tracker.statistics().exhausted == listener.calls
    assert listener.calls > 2900


async def _never(stream: trio.SocketStream) -> None:
    raise AssertionError("nothing is accepted")


@pytest.fixture
async def capped(server_state: ApiState, nursery: trio.Nursery) -> tuple[str, ConnectionTracker]:
    """The API over loopback with at most 4 connections and long timeouts."""
    tracker = ConnectionTracker(
        ConnectionLimits(max_connections=4, keep_alive_timeout=600, body_timeout=600)
    )
    origin = await nursery.start(
        lambda task_status: serve_api(server_state, tracker=tracker, task_status=task_status)
    )
    return origin, tracker


async def _connect(origin: str, data: bytes) -> trio.SocketStream:
    host, port = origin.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    if data:
        await stream.send_all(data)
    return stream


async def _until(predicate: Any) -> None:
    # Polls the server running in this same trio loop; fail_after only catches a hang.
    with trio.fail_after(HANG_GUARD):
        while not predicate():  # noqa: ASYNC110 - the tracker has no event to wait on
            await trio.sleep(0.01)


async def test_a_full_server_closes_its_longest_idle_connection_for_a_new_client(
    capped: tuple[str, ConnectionTracker],
) -> None:
    """Four connections with half a request line fill the cap; a normal request still gets
    its answer, and the oldest idle socket is closed to make room."""
    origin, tracker = capped
    idle = []
    for _ in range(4):
        idle.append(await _connect(origin, b"GET /ws/cust"))
        await _until(lambda: tracker.statistics().accepted == len(idle))
    async with httpx.AsyncClient(timeout=HANG_GUARD) as http:
        answer = await http.get(
            f"{origin}/ws/customers/{USER}/", headers={"Authorization": basic()}
        )
    assert answer.status_code == 200
    stats = tracker.statistics()
    assert stats.evicted >= 1
    assert stats.open <= 4
    with trio.fail_after(HANG_GUARD):
        assert await idle[0].receive_some(100) == b""  # closed by the server
    for stream in idle:
        await stream.aclose()


async def test_connections_with_a_request_in_progress_are_never_evicted(
    capped: tuple[str, ConnectionTracker],
) -> None:
    """Four bodies in progress hold the cap: a fifth client waits (not accepted) until one
    finishes; then that one, idle, is closed for it, never a busy one."""
    origin, tracker = capped
    head = (
        f"POST /ws/customers/{USER}/lists HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: {basic()}\r\nContent-Type: application/atom+xml\r\n"
        "Content-Length: 20\r\n\r\n<entry"
    ).encode()
    busy = [await _connect(origin, head) for _ in range(4)]
    await _until(lambda: tracker.statistics().busy == 4)  # each one's app is reading its body
    async with trio.open_nursery() as nursery:
        answers: list[int] = []

        async def fifth() -> None:
            async with httpx.AsyncClient(timeout=HANG_GUARD) as http:
                got = await http.get(
                    f"{origin}/ws/customers/{USER}/", headers={"Authorization": basic()}
                )
                answers.append(got.status_code)

        nursery.start_soon(fifth)
        await trio.sleep(0.5)  # whatever the wait, the fifth must not have been accepted
        assert tracker.statistics().accepted == 4
        assert tracker.statistics().evicted == 0
        await busy[0].send_all(b" xmlns='x'/>" + b" " * 2)  # completes the 20-byte body
        await _until(lambda: answers)
    assert answers == [200]
    # Room was made by closing the one that finished (idle now), never a busy one.
    with trio.fail_after(HANG_GUARD):
        answered = b""
        while chunk := await busy[0].receive_some(1000):
            answered += chunk
    assert answered.startswith(b"HTTP/1.1 ")
    assert tracker.statistics().evicted == 1
    assert tracker.statistics().open >= 3
    for stream in busy:
        await stream.aclose()


# -- a bulkops serve subprocess with tiny timeouts ------------------------------------------


def test_idle_and_trickling_clients_are_closed_by_bulkops_serve(tmp_path: Path) -> None:
    """--keep-alive-timeout 0.5 closes a half-sent head; --min-body-rate closes a 1-byte-per-
    0.2-s body with a 408; a normal request answers; no traceback in the log."""
    with serve_subprocess(
        tmp_path,
        "--keep-alive-timeout",
        "0.5",
        "--body-timeout",
        "0.5",
        "--min-body-rate",
        "100",
    ) as served:
        origin, log = served.origin, served.log
        host, port = origin.removeprefix("http://").rsplit(":", 1)
        idle = socket.create_connection((host, int(port)), timeout=HANG_GUARD)
        idle.sendall(b"GET / HT")
        slow = socket.create_connection((host, int(port)), timeout=HANG_GUARD)
        slow.sendall(
            f"POST /ws/customers/{USER}/lists HTTP/1.1\r\nHost: x\r\nAuthorization: {basic()}"
            "\r\nContent-Type: application/atom+xml\r\nContent-Length: 1000\r\n\r\n".encode()
        )
        answer = b""
        slow.settimeout(0.2)
        for _ in range(300):  # at most a minute; closed within about a second
            try:
                slow.sendall(b"x")
                chunk = slow.recv(1000)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if not chunk:
                break
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert idle.recv(100) == b""  # closed (recv blocks up to 60 s otherwise)
        normal = httpx.get(
            f"{origin}/ws/customers/{USER}/", headers={"Authorization": basic()}, timeout=HANG_GUARD
        )
        assert normal.status_code == 200
        idle.close()
        slow.close()
    assert "request body slower than 100 bytes/s" in log.read_text()  # (no traceback: the kit)


def test_serve_options_make_the_limits() -> None:
    """``bulkops serve``'s connection and login options become the configured limits."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--keep-alive-timeout",
            "3",
            "--body-timeout",
            "4",
            "--min-body-rate",
            "5",
            "--max-connections",
            "6",
            "--max-head-bytes",
            "7000",
            "--login-failures",
            "8",
            "--address-login-failures",
            "9",
            "--login-window",
            "10",
        ]
    )
    assert connection_limits_from_args(args) == ConnectionLimits(
        keep_alive_timeout=3,
        body_timeout=4,
        min_body_rate=5,
        max_connections=6,
        max_head_bytes=7000,
    )
    assert login_limits_from_args(args) == LoginLimits(
        account_failures=8, address_failures=9, window=10
    )
    defaults = parser.parse_args([])
    assert connection_limits_from_args(defaults) == ConnectionLimits()
    assert login_limits_from_args(defaults) == LoginLimits()


# -- one sender at a time on a connection ------------------------------------------------------


class EofTakesAWhile(trio.abc.HalfCloseableStream):
    """A server-side socket stream whose ``send_eof`` lets every other task run before it
    shuts the socket (as on a loaded machine), and tells when it begins. A ``send_all``
    meanwhile fails as trio's ``SocketStream`` fails one that meets its own ``send_eof``
    (which holds the stream across a checkpoint): ``BusyResourceError``."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.socket = stream.socket
        self.eof_begun = trio.Event()
        self.eof_under_way = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.eof_under_way:
            raise trio.BusyResourceError(
                "another task is currently sending data on this SocketStream"
            )
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        self.eof_under_way = True
        self.eof_begun.set()
        try:
            await trio.testing.wait_all_tasks_blocked()
            await self.stream.send_eof()
        finally:
            self.eof_under_way = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.stream.aclose()


async def test_closing_a_connection_never_collides_with_the_answer_being_sent() -> None:
    """A client that reads the answer's head, then closes mid-body: hypercorn's reading task
    shuts the socket (send_eof) while the app sends the rest of its answer. The app's send
    never fails (it goes nowhere), the connection ends."""
    tracker = ConnectionTracker(ConnectionLimits())
    config = hypercorn_config("127.0.0.1", 0, tracker.limits)
    failures: list[BaseException] = []
    finished = trio.Event()
    server_side: list[EofTakesAWhile] = []

    async def answer_late(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await server_side[0].eof_begun.wait()  # the server is closing: the client is gone
        try:
            await send({"type": "http.response.body", "body": b"late"})
        except BaseException as exc:
            failures.append(exc)
            raise
        finally:
            finished.set()

    app = wrap_app(BodyRateGuard(answer_late, tracker), 0, "asgi")
    handler = connection_handler(app, config, WorkerContext(None), ConnectionState({}))
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(30):  # a hang guard: nothing here waits on the clock
        async with trio.open_nursery() as nursery:
            client = await trio.open_tcp_stream("127.0.0.1", port)
            server_side.append(EofTakesAWhile(await listeners[0].accept()))
            nursery.start_soon(handler, server_side[0])
            # A body of 10 bytes, 3 sent: the answer comes before the body is in.
            await client.send_all(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
            received = b""
            while b"\r\n\r\n" not in received:
                received += await client.receive_some(1000)
            assert received.startswith(b"HTTP/1.1 200")
            await client.send_eof()  # gone mid-body
            while await client.receive_some(1000):
                pass
            await finished.wait()
            await client.aclose()
    assert failures == []
    await listeners[0].aclose()


async def test_an_answer_before_a_big_body_leaves_no_connection_stuck() -> None:
    """The app refuses a 4 MB body unread once hypercorn has queued all it may for it (its
    reading task waits for room): the answer arrives whole, the connection closes and the
    app returns (hypercorn used to put the disconnect into the full queue, and the app's
    last send waited on it for ever)."""
    tracker = ConnectionTracker(ConnectionLimits())
    config = hypercorn_config("127.0.0.1", 0, tracker.limits)
    returned = trio.Event()

    async def refuse_unread(scope: Any, receive: Any, send: Any) -> None:
        await trio.testing.wait_all_tasks_blocked()  # the queue is full, the client blocked
        body = b"Too big\n"
        headers = [(b"content-length", b"%d" % len(body)), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        returned.set()

    app = wrap_app(BodyRateGuard(refuse_unread, tracker), 0, "asgi")
    handler = connection_handler(app, config, WorkerContext(None), ConnectionState({}))
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    head = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 8000000\r\n\r\n"

    async def send_body(client: trio.SocketStream) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await client.send_all(head + b"x" * 4_000_000)

    with trio.fail_after(30):  # a hang guard; the old hang fails here
        async with trio.open_nursery() as nursery:
            client = await trio.open_tcp_stream("127.0.0.1", port)
            nursery.start_soon(handler, await listeners[0].accept())
            nursery.start_soon(send_body, client)
            received = b""
            with contextlib.suppress(trio.BrokenResourceError):
                while chunk := await client.receive_some(65536):
                    received += chunk
            await returned.wait()
            await client.aclose()
    assert received.startswith(b"HTTP/1.1 413")
    assert received.endswith(b"\r\n\r\nToo big\n")
    await listeners[0].aclose()
