"""Throttles, each off unless configured: requests per second and per day per account.

:class:`Throttle` is pure-ASGI middleware in front of the app. Over a limit it answers 429
with a short ``text/plain`` body naming the limit, and ``Retry-After`` only when
``--retry-after`` is set (the v3 API sends none). The third throttle, unfinished activities
per account (``--max-queued-activities``), needs the database and is checked atomically with
the insert in ``POST /activities``; its message lives here with the others.

Invariants:

* Requests are counted per account, by the ``{username}`` of the URL path, before
  authentication (as an API gateway would); only account requests (``/ws/customers/…``)
  are throttled.
* The per-second limit is a token bucket: capacity ``max(1, rate)``, refilled at ``rate``
  tokens per second of ``trio.current_time()`` (so tests can run it on a mock clock). A
  request refused by it does not count against the daily quota.
* The daily quota counts accepted requests per UTC day.
* **Shared or in memory.** Given a ``store`` (as every server built by ``create_app`` is),
  the counters live in the database (:meth:`~bulkops.server.storage.Storage.take_token`,
  :meth:`~bulkops.server.storage.Storage.count_request`; one transaction per decision, the
  same formulas), on the wall clock in ms: every process on the database counts the same
  requests, so ``--processes N`` allows what one process does, and a restart forgets
  nothing. Without one, they live in this process's memory on ``clock`` (trio's by
  default, so tests can run it on a mock clock) and start again when the server restarts;
  memory is bounded: at most :data:`MAX_TRACKED_ACCOUNTS` accounts are tracked (oldest
  forgotten first), whatever usernames clients put in URLs.
* A refused request's body is read and discarded before the 429 is sent, so the client sees
  the answer rather than a reset while it is still uploading.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import trio

from bulkops.server.asgi import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from bulkops.server.storage import Storage

__all__ = [
    "MAX_TRACKED_ACCOUNTS",
    "Throttle",
    "TokenBucket",
    "account_of",
    "queue_limit_message",
    "respond_plain",
    "retry_after_headers",
    "wrap",
]

#: Accounts whose counters are kept at once.
MAX_TRACKED_ACCOUNTS = 10_000

_ACCOUNT_PREFIX = "/ws/customers/"


def account_of(scope: Scope) -> str | None:
    """The lower-cased ``{username}`` of an account request's path, or None for any other."""
    path: str = scope.get("path", "")
    if not path.startswith(_ACCOUNT_PREFIX):
        return None
    username = path[len(_ACCOUNT_PREFIX) :].split("/", 1)[0]
    return username.lower() or None


def retry_after_headers(retry_after: float | None) -> dict[str, str]:
    """``{"Retry-After": seconds}`` (whole seconds, rounded up), or ``{}`` when not configured."""
    if retry_after is None:
        return {}
    return {"Retry-After": str(max(0, math.ceil(retry_after)))}


def queue_limit_message(limit: int, username: str) -> str:
    """The 429 text for an account over the unfinished-activity limit."""
    return (
        f"Too many activities in progress: account {username} has {limit} unfinished "
        f"activities, the limit (--max-queued-activities); wait for some to finish"
    )


def _rate_message(rate: float, username: str) -> str:
    return (
        f"Too many requests: account {username} is over its rate limit of {rate:g} "
        "requests per second (--rate)"
    )


def _quota_message(quota: int, username: str) -> str:
    return (
        f"Too many requests: account {username} has used its daily quota of {quota} "
        "requests (--daily-quota)"
    )


async def _drain(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


async def respond_plain(
    receive: Receive,
    send: Send,
    status: int,
    text: str,
    headers: dict[str, str] | None = None,
) -> None:
    """Discard the request body, then answer ``status`` with ``text`` as ``text/plain``."""
    await _drain(receive)
    body = (text + "\n").encode("utf-8")
    raw_headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    raw_headers.extend(
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()
    )
    start: Message = {"type": "http.response.start", "status": status, "headers": raw_headers}
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})


class TokenBucket:
    """Tokens for ``rate`` requests per second, at most ``capacity`` saved up.

    Args:
        rate: tokens added per second (> 0).
        capacity: the most tokens held (default ``max(1, rate)``); the bucket starts full.
        now: the current time, in seconds on the clock later calls use.
    """

    def __init__(self, rate: float, now: float, capacity: float | None = None) -> None:
        self.rate = rate
        self.capacity = capacity if capacity is not None else max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = now

    def take(self, now: float) -> bool:
        """Take one token if there is one; return whether there was."""
        elapsed = max(0.0, now - self.stamp)
        self.stamp = now
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def _utc_day() -> int:
    return int(time.time() // 86_400)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _remember(table: MutableMapping[str, Any], key: str, value: Any) -> None:
    table.pop(key, None)
    table[key] = value
    while len(table) > MAX_TRACKED_ACCOUNTS:
        del table[next(iter(table))]


class Throttle:
    """ASGI middleware enforcing ``rate`` and ``daily_quota`` per account.

    Args:
        app: the application behind it.
        rate: requests per second per account, or None.
        daily_quota: requests per UTC day per account, or None.
        retry_after: seconds for ``Retry-After`` on 429s, or None for no header.
        clock: seconds for the in-memory token bucket (default ``trio.current_time``).
        day: the current day number for the quota (default: UTC days since the epoch).
        store: keep the counters in this database, shared by every process on it (then
            ``wall_ms`` is the clock), instead of in memory.
        wall_ms: milliseconds of the wall clock, for the shared counters.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        rate: float | None,
        daily_quota: int | None,
        retry_after: float | None = None,
        clock: Callable[[], float] = trio.current_time,
        day: Callable[[], int] = _utc_day,
        store: Storage | None = None,
        wall_ms: Callable[[], int] = _wall_ms,
    ) -> None:
        if rate is not None and not rate > 0:
            raise ValueError(f"rate must be positive, not {rate}")
        if daily_quota is not None and daily_quota < 0:
            raise ValueError(f"daily_quota must not be negative, not {daily_quota}")
        self.app = app
        self.rate = rate
        self.daily_quota = daily_quota
        self.headers = retry_after_headers(retry_after)
        self._clock = clock
        self._day = day
        self.store = store
        self._wall_ms = wall_ms
        self._buckets: dict[str, TokenBucket] = {}
        self._counts: dict[str, tuple[int, int]] = {}

    def check(self, username: str) -> str | None:
        """Count one request of ``username``; the 429 message if it is over a limit, else None."""
        if self.rate is not None:
            now = self._clock()
            bucket = self._buckets.get(username)
            if bucket is None:
                bucket = TokenBucket(self.rate, now)
                _remember(self._buckets, username, bucket)
            if not bucket.take(now):
                return _rate_message(self.rate, username)
        if self.daily_quota is not None:
            today = self._day()
            day, count = self._counts.get(username, (today, 0))
            if day != today:
                count = 0
            if count >= self.daily_quota:
                return _quota_message(self.daily_quota, username)
            _remember(self._counts, username, (today, count + 1))
        return None

    async def check_shared(self, username: str) -> str | None:
        """:meth:`check` on the counters in ``store`` (shared by every process)."""
        assert self.store is not None
        if self.rate is not None:
            capacity = max(1.0, self.rate)
            key = "rate:" + username
            if not await self.store.take_token(key, self._wall_ms(), self.rate, capacity):
                return _rate_message(self.rate, username)
        if self.daily_quota is not None and not await self.store.count_request(
            username, self._day(), self.daily_quota
        ):
            return _quota_message(self.daily_quota, username)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            username = account_of(scope)
            if username is not None:
                if self.store is not None:
                    problem = await self.check_shared(username)
                else:
                    problem = self.check(username)
                if problem is not None:
                    await respond_plain(receive, send, 429, problem, self.headers)
                    return
        await self.app(scope, receive, send)


def wrap(
    app: ASGIApp,
    *,
    rate: float | None,
    daily_quota: int | None,
    retry_after: float | None,
    store: Storage | None = None,
) -> ASGIApp:
    """``app`` behind a :class:`Throttle` when a rate or a quota is set, else ``app``; the
    counters in ``store`` when given (shared by all processes), else in memory."""
    if rate is None and daily_quota is None:
        return app
    return Throttle(app, rate=rate, daily_quota=daily_quota, retry_after=retry_after, store=store)
