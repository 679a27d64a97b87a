"""The AtomPub client: one httpx.AsyncClient on trio, errors mapped once, retries, rate limits.

Invariants:

* Every request goes through :meth:`Client.request`, which is the *only* place where httpx
  exceptions and HTTP error statuses become the bulkops error tree (``raise Mapped from exc``).
* Retries use stamina (capped exponential backoff with jitter); a 429 with ``Retry-After``
  waits exactly that long. Every wait is announced to :attr:`Client.retry_listeners` first
  (a :class:`RetryNotice`: what, why, how long). A server that has not answered yet and
  refuses connections (or cannot be reached within ``connect_timeout``) is given up on after
  ``connect_timeout`` seconds of retries; once it has answered, every transient failure is
  retried until ``retry_timeout`` (the stall timeout, for the CLI). Idempotent requests are
  retried on any transient failure (connect/read errors, 500/502/503/504, 429). A
  non-idempotent request (an activity POST) is retried only when the server certainly did
  not apply it — it refused the connection, or answered 429/5xx; when the request was sent
  and its answer lost, :class:`OutcomeUnknown` is raised for the caller to reconcile.
* Every attempt, retries included, first takes a token from the request-rate bucket and
  counts against the daily budget; the budget running out raises :class:`QuotaExhausted`.
* Credentials live in :class:`Credentials` (``repr`` hides them) and reach the wire only in
  the ``Authorization`` header; URLs in errors and logs never carry them.
* This module is the engine's seam to the wire: the typed methods (:meth:`Client.get_entry`,
  :meth:`Client.iter_feed`, :meth:`Client.post_entry`, :meth:`Client.post_activity`,
  :meth:`Client.stream_download`) parse Atom with one size limit per kind of document
  (:data:`ENTRY_MAX_BYTES`, :data:`PAGE_MAX_BYTES`) and map errors raised while a body
  streams too (:class:`~bulkops.errors.BodyBrokenOff`). Nothing else in the engine or the
  CLI imports httpx or parses Atom by hand.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urljoin, urlsplit, urlunsplit

import attrs
import httpx
import stamina
import trio
from lxml import etree

from bulkops._version import __version__
from bulkops.engine.server_urls import LOOPBACK, split_server_url
from bulkops.errors import (
    ApiError,
    AuthError,
    BodyBrokenOff,
    BulkOpsError,
    ConfigError,
    Conflict,
    NotFound,
    OutcomeUnknown,
    Throttled,
    TransportError,
)
from bulkops.wire.atom.activities import activity_from_entry
from bulkops.wire.atom.reading import links_of, local_name
from bulkops.wire.atom.syntax import parse_xml
from bulkops.wire.model import Activity
from bulkops.wire.writeseq import (
    WRITE_MARGIN_HEADER,
    WRITE_SEQ_HEADER,
    WRITE_TIME_HEADER,
    parse_write_seq,
)

__all__ = [
    "ENTRY_MAX_BYTES",
    "PAGE_MAX_BYTES",
    "Client",
    "ClientConfig",
    "ClientStats",
    "Credentials",
    "QuotaExhausted",
    "RetryNotice",
    "TokenBucket",
    "open_client",
    "same_account",
]

#: The largest single-entry document read: an activity with 40,000 row errors fits.
ENTRY_MAX_BYTES = 64 * 1024 * 1024
#: The largest feed page read whole: 50 activities, each with its row errors.
PAGE_MAX_BYTES = 256 * 1024 * 1024

_T = TypeVar("_T")

_RETRY_STATUSES = frozenset({500, 502, 503, 504})

# Bodies above this size are sent in pieces of this size.
_SEND_PIECE = 256 * 1024


async def _pieces(body: bytes) -> AsyncIterator[bytes]:
    view = memoryview(body)
    for start in range(0, len(body), _SEND_PIECE):
        yield bytes(view[start : start + _SEND_PIECE])


class QuotaExhausted(BulkOpsError):
    """The daily request budget (``--daily-quota``) is used up; the run can be resumed later."""


@attrs.frozen(kw_only=True, repr=False)
class Credentials:
    """Who we are: the username, plus an API key and password (Basic) or a bearer token.

    The ``repr`` shows the username only.
    """

    username: str
    api_key: str | None = None
    password: str | None = None
    token: str | None = None

    def __attrs_post_init__(self) -> None:
        if not self.username:
            raise ConfigError(
                "no username: set BULKOPS_USERNAME (or username in a credentials file)"
            )
        if self.token is None and not (self.api_key and self.password):
            raise ConfigError(
                "no credentials: set BULKOPS_API_KEY and BULKOPS_PASSWORD, or BULKOPS_TOKEN "
                "(or api_key and password, or token, in a credentials file)"
            )

    def __repr__(self) -> str:
        kind = "token" if self.token is not None else "api key + password"
        return f"Credentials(username={self.username!r}, {kind}: ***)"

    def authorization(self) -> str:
        """The ``Authorization`` header value: Bearer, or Basic ``APIKEY%username:password``."""
        if self.token is not None:
            return f"Bearer {self.token}"
        raw = f"{self.api_key}%{self.username}:{self.password}"
        return "Basic " + base64.b64encode(raw.encode()).decode()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Credentials:
        """From the environment: ``BULKOPS_USERNAME``, ``BULKOPS_API_KEY``, ``BULKOPS_PASSWORD``,
        ``BULKOPS_TOKEN``.

        Raises:
            ConfigError: something required is missing.
        """
        env = os.environ if env is None else env
        return cls(
            username=env.get("BULKOPS_USERNAME", ""),
            api_key=env.get("BULKOPS_API_KEY") or None,
            password=env.get("BULKOPS_PASSWORD") or None,
            token=env.get("BULKOPS_TOKEN") or None,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> Credentials:
        """From a file of ``key = value`` lines: ``username``, ``api_key``, ``password``, ``token``.

        ``#`` starts a comment; keys may also be spelled as the environment variables.

        Raises:
            ConfigError: the file cannot be read or lacks something required.
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read credentials file {path}: {exc.strerror}") from None
        values: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            if not sep:
                raise ConfigError(f"{path}, line {number}: expected key = value")
            key = key.strip().lower().removeprefix("bulkops_")
            values[key] = value.strip().strip("'\"")
        return cls(
            username=values.get("username", ""),
            api_key=values.get("api_key") or None,
            password=values.get("password") or None,
            token=values.get("token") or None,
        )


@attrs.frozen(kw_only=True)
class ClientConfig:
    """How to reach the server and how hard to push it.

    Attributes:
        server: the server's root, e.g. ``https://api.constantcontact.com`` or
            ``http://127.0.0.1:8080``; the account path comes from the username. The
            account's URL or ``…/ws/customers`` is accepted too, and a missing scheme is
            supplied (:func:`split_server_url`).
        credentials: who we are.
        rate: requests per second, all requests counted (None: unlimited).
        daily_quota: requests this client may make in total (None: unlimited).
        timeout: seconds for one HTTP exchange.
        connect_timeout: seconds to open a connection; also how long a request keeps
            retrying a server that has never answered this client and cannot be reached
            (connection refused, no route), so that a wrong address fails in seconds.
        retry_attempts: attempts per request, the first included (None: no limit but
            ``retry_timeout``).
        retry_timeout: seconds one request may spend in retries altogether (throttling,
            5xx, lost connections).
        wait_initial: first backoff. Attempt n waits
            ``min(wait_max, wait_initial * 2**(n-1) + U(0, wait_jitter))`` seconds.
        max_connections: size of the HTTP connection pool.
    """

    server: str
    credentials: Credentials
    rate: float | None = None
    daily_quota: int | None = None
    timeout: float = 120.0
    connect_timeout: float = 5.0
    retry_attempts: int | None = None
    retry_timeout: float = 600.0
    wait_initial: float = 0.5
    wait_max: float = 30.0
    wait_jitter: float = 1.0
    max_connections: int = 8

    def __attrs_post_init__(self) -> None:
        _root, username = split_server_url(self.server)
        if username is not None and username.lower() != self.credentials.username.lower():
            raise ConfigError(
                f"the server URL names the account {username!r} but the credentials are "
                f"for {self.credentials.username!r}: give the server's root URL, or the "
                "credentials of that account"
            )

    @property
    def root(self) -> str:
        """The server's root URL, without a trailing slash."""
        return split_server_url(self.server)[0]

    @property
    def account_url(self) -> str:
        """The account's base URI, with the trailing slash."""
        username = quote(self.credentials.username.lower(), safe="")
        return f"{self.root}/ws/customers/{username}/"


@attrs.frozen(kw_only=True)
class RetryNotice:
    """A retry about to wait, as announced to :attr:`Client.retry_listeners`.

    Attributes:
        method: the request's method.
        url: the request's URL (no credentials, no query).
        reason: what went wrong, e.g. ``HTTP 503: …`` or ``connection refused``.
        wait: seconds before the next attempt (at least; stamina may add up to the
            configured jitter unless the server said how long to wait).
        attempt: the number of the attempt that failed, from 1.
        gives_up_in: seconds left before the request is given up on.
    """

    method: str
    url: str
    reason: str
    wait: float
    attempt: int
    gives_up_in: float

    def __str__(self) -> str:
        return (
            f"{self.method} {self.url}: {self.reason}; retrying in {self.wait:.1f} s "
            f"(attempt {self.attempt + 1}; giving up in {max(0.0, self.gives_up_in):.0f} s)"
        )


@attrs.define
class ClientStats:
    """Counters of one client (a snapshot is returned by :meth:`Client.statistics`)."""

    requests: int = 0
    retries: int = 0
    throttled: int = 0
    server_errors: int = 0
    transport_errors: int = 0
    bytes_sent: int = 0

    def snapshot(self) -> ClientStats:
        """A copy that no longer changes."""
        return attrs.evolve(self)


class TokenBucket:
    """A token bucket on trio's clock: ``rate`` tokens per second, bursts up to ``burst``.

    ``await acquire()`` takes one token, sleeping until one is available.
    """

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ConfigError("the request rate must be positive")
        self.rate = rate
        self.capacity = max(1.0, burst if burst is not None else rate)
        self._tokens = self.capacity
        self._stamp: float | None = None
        self._lock = trio.Lock()

    async def acquire(self) -> None:
        """Take one token, waiting for it if the bucket is empty."""
        async with self._lock:
            now = trio.current_time()
            if self._stamp is not None:
                self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens < 1.0:
                wait = (1.0 - self._tokens) / self.rate
                await trio.sleep(wait)
                self._tokens = 1.0
                self._stamp = trio.current_time()
            self._tokens -= 1.0


class _Retry(Exception):
    """Internal: an attempt failed in a way worth retrying; ``cause`` is the mapped error."""

    def __init__(
        self, cause: BulkOpsError, wait: float | None = None, *, unreachable: bool = False
    ) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.wait = wait
        #: the server could not be reached at all (refused, no route, connect timeout)
        self.unreachable = unreachable


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def _safe_url(url: httpx.URL | str) -> str:
    """A URL for messages: no userinfo, no query (queries may carry tokens)."""
    parts = urlsplit(str(url))
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def same_account(recorded: str, current: str) -> bool:
    """Whether two account URLs name the same account of the same server.

    The embedded server binds a new loopback port on every run, so on loopback hosts the
    port does not count; anywhere else the whole URL must match.
    """
    if recorded == current:
        return True
    a, b = urlsplit(recorded), urlsplit(current)
    loopback = a.hostname in LOOPBACK and b.hostname in LOOPBACK
    return loopback and (a.scheme, a.path) == (b.scheme, b.path)


def map_status(response: httpx.Response) -> ApiError:
    """The bulkops error for an HTTP error response (status ≥ 400)."""
    status = response.status_code
    try:
        text = response.text.strip()
    except (httpx.ResponseNotRead, UnicodeDecodeError):
        text = ""
    message = (text.splitlines()[0] if text else response.reason_phrase)[:500]
    method = response.request.method
    url = _safe_url(response.request.url)
    if status == 429:
        return Throttled(
            status,
            message,
            retry_after=_retry_after(response.headers.get("retry-after")),
            method=method,
            url=url,
        )
    if status in (401, 403):
        return AuthError(status, message, method=method, url=url)
    if status == 404:
        return NotFound(status, message, method=method, url=url)
    if status == 409:
        return Conflict(status, message, method=method, url=url)
    return ApiError(status, message, method=method, url=url)


class Client:
    """An authenticated AtomPub client for one account. Make it with :func:`open_client`."""

    def __init__(self, config: ClientConfig, http: httpx.AsyncClient) -> None:
        self.config = config
        self.account_url = config.account_url
        self._http = http
        self._stats = ClientStats()
        self._bucket = TokenBucket(config.rate) if config.rate else None
        #: Called with the server's message on every 429, before the retry waits.
        self.throttle_listeners: list[Callable[[str], None]] = []
        #: Called before every wait between two attempts of a request.
        self.retry_listeners: list[Callable[[RetryNotice], None]] = []
        # Whether the server has answered this client once: until then, a server that
        # cannot be reached is given up on after ``connect_timeout``.
        self._reached = False
        #: Server clock minus ours, in seconds, from the last ``Date`` header (None: unknown).
        self.clock_offset: float | None = None

    def __repr__(self) -> str:
        return f"<Client {self.account_url} as {self.config.credentials!r}>"

    def statistics(self) -> ClientStats:
        """Counters so far (a snapshot)."""
        return self._stats.snapshot()

    def url(self, href: str) -> str:
        """An absolute URL on *our* server for a path relative to the account, or any id/href.

        Ids and links the server sends may name another origin (its public URL, or
        ``http://api.constantcontact.com``); only their path and query are kept.
        """
        if href.startswith(("http://", "https://")):
            parts = urlsplit(href)
            href = urlunsplit(("", "", parts.path, parts.query, ""))
        if href.startswith("/"):
            root = urlsplit(self.account_url)
            return urlunsplit((root.scheme, root.netloc, "", "", "")) + href
        return urljoin(self.account_url, href)

    async def _before_attempt(self) -> None:
        quota = self.config.daily_quota
        if quota is not None and self._stats.requests >= quota:
            raise QuotaExhausted(f"the request budget of {quota} requests is used up")
        if self._bucket is not None:
            await self._bucket.acquire()
        self._stats.requests += 1

    async def _attempt(
        self, method: str, url: str, *, idempotent: bool, stream: bool, **kwargs: Any
    ) -> httpx.Response:
        await self._before_attempt()
        content = kwargs.get("content")
        if isinstance(content, bytes) and len(content) > _SEND_PIECE:
            # A big body goes out in pieces: given whole, h11 copies it before sending, and
            # each chunk POST in flight would cost twice its 4 MiB.
            headers = dict(kwargs.get("headers") or {})
            headers["Content-Length"] = str(len(content))
            kwargs = {**kwargs, "content": _pieces(content), "headers": headers}
        request = self._http.build_request(method, url, **kwargs)
        if isinstance(content, bytes):
            self._stats.bytes_sent += len(content)
        try:
            response = await self._http.send(request, stream=stream)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            # Never reached the server: safe to retry whatever the method.
            self._stats.transport_errors += 1
            reason = _connect_failure(exc)
            error = TransportError(f"cannot connect to {_safe_url(url)}: {reason}")
            raise _Retry(error, unreachable=True) from exc
        except (httpx.TransportError, httpx.StreamError) as exc:
            self._stats.transport_errors += 1
            error = TransportError(f"{method} {_safe_url(url)} failed: {exc!r}")
            if idempotent:
                raise _Retry(error) from exc
            raise OutcomeUnknown(
                f"{method} {_safe_url(url)}: the request was sent but its answer was lost ({exc!r})"
            ) from exc
        self._reached = True
        self._note_clock(response)
        if response.status_code < 400:
            return response
        if stream:
            await response.aread()
        api_error = map_status(response)
        if isinstance(api_error, Throttled):
            self._stats.throttled += 1
            for listener in self.throttle_listeners:
                listener(api_error.message)
            raise _Retry(api_error, api_error.retry_after)
        if response.status_code in _RETRY_STATUSES:
            self._stats.server_errors += 1
            raise _Retry(api_error)
        raise api_error

    def _note_clock(self, response: httpx.Response) -> None:
        date = response.headers.get("date")
        if not date:
            return
        try:
            server_time = email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            return
        # Date has whole seconds: the true offset is within [offset, offset + 1).
        self.clock_offset = server_time + 0.5 - time.time()

    async def request(
        self,
        method: str,
        href: str,
        *,
        idempotent: bool | None = None,
        stream: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a request with retries; return the (successful) response.

        Args:
            method: HTTP method.
            href: path relative to the account, or an absolute id/href from the server.
            idempotent: whether a lost answer may be retried (default: True for GET, PUT,
                DELETE; False for POST).
            stream: return before reading the body (the caller must ``aclose()`` it).
            **kwargs: passed to ``httpx.AsyncClient.build_request`` (content, headers, params).

        Raises:
            ApiError: an HTTP error status (subclasses per status), after retries for 429/5xx.
            TransportError: the connection kept failing.
            OutcomeUnknown: a non-idempotent request was sent and its answer lost.
            QuotaExhausted: the request budget ran out.
        """
        if idempotent is None:
            idempotent = method.upper() != "POST"
        url = self.url(href)
        config = self.config
        started = trio.current_time()
        failures = 0

        def backoff(exc: BaseException) -> bool | float:
            # Decides every retry itself (stamina's own limits are never reached first), so
            # that the retry is counted and announced only when it will happen.
            nonlocal failures
            if not isinstance(exc, _Retry):
                return False
            failures += 1
            wait = exc.wait if exc.wait is not None else self._backoff_wait(failures)
            budget = config.retry_timeout
            if exc.unreachable and not self._reached:
                budget = min(budget, config.connect_timeout)
            left = budget - (trio.current_time() - started)
            attempts_left = config.retry_attempts is None or failures < config.retry_attempts
            if wait >= left or not attempts_left:
                return False
            self._stats.retries += 1
            notice = RetryNotice(
                method=method,
                url=_safe_url(url),
                reason=_reason(exc.cause),
                wait=wait,
                attempt=failures,
                gives_up_in=left,
            )
            for listener in self.retry_listeners:
                listener(notice)
            return exc.wait if exc.wait is not None else True

        try:
            async for attempt in stamina.retry_context(
                on=backoff,
                attempts=None,
                timeout=None,
                wait_initial=config.wait_initial,
                wait_max=config.wait_max,
                wait_jitter=config.wait_jitter,
            ):
                with attempt:
                    return await self._attempt(
                        method, url, idempotent=idempotent, stream=stream, **kwargs
                    )
        except _Retry as exc:
            raise _given_up(exc.cause, failures, trio.current_time() - started) from (exc.__cause__)
        raise AssertionError("unreachable")  # pragma: no cover

    def _backoff_wait(self, failures: int) -> float:
        """stamina's wait after the ``failures``-th failure, without its jitter."""
        config = self.config
        return float(min(config.wait_max, config.wait_initial * 2 ** (failures - 1)))

    async def get(self, href: str, **kwargs: Any) -> httpx.Response:
        """GET with retries."""
        return await self.request("GET", href, **kwargs)

    # -- the typed seam ----------------------------------------------------------------------

    async def get_entry(self, href: str, from_entry: Callable[[etree._Element], _T]) -> _T:
        """GET a single-entry document and read it with ``from_entry`` (an ``*_from_entry``
        of :mod:`bulkops.wire.atom`).

        Raises:
            XmlError: hostile, malformed or larger than :data:`ENTRY_MAX_BYTES`.
            ApiError, TransportError: as :meth:`request`.
        """
        response = await self.request("GET", href)
        return from_entry(parse_xml(response.content, max_bytes=ENTRY_MAX_BYTES))

    async def iter_feed(
        self, href: str, from_entry: Callable[[etree._Element], _T]
    ) -> AsyncGenerator[list[_T], None]:
        """The pages of a feed, each read whole, following ``next`` links to the last.

        For feeds whose pages are small (lists, activities); a members or contacts export
        streams its pages instead (``engine/feeds.py``). Leave the loop early inside
        ``contextlib.aclosing`` to stop the walk at once.

        Raises:
            XmlError: a page is hostile, malformed or larger than :data:`PAGE_MAX_BYTES`.
            ApiError, TransportError: as :meth:`request`.
        """
        next_href: str | None = href
        while next_href:
            response = await self.request("GET", next_href)
            root = parse_xml(response.content, max_bytes=PAGE_MAX_BYTES)
            yield [from_entry(el) for el in root if local_name(el) == "entry"]
            next_href = links_of(root).get("next") or None

    async def post_entry(
        self, href: str, body: bytes, from_entry: Callable[[etree._Element], _T]
    ) -> _T:
        """POST an Atom entry (not retried when its answer is lost) and read the new entry.

        Raises:
            OutcomeUnknown: the request was sent and its answer lost; look before resending.
            XmlError, ApiError, TransportError: as :meth:`get_entry`.
        """
        response = await self.request(
            "POST", href, content=body, headers={"Content-Type": "application/atom+xml"}
        )
        return from_entry(parse_xml(response.content, max_bytes=ENTRY_MAX_BYTES))

    async def post_activity(self, body: bytes, content_type: str) -> Activity:
        """POST an activity form (urlencoded or multipart) and read the activity created.

        Raises:
            OutcomeUnknown: the request was sent and its answer lost: it may have been
                applied (reconcile before sending it again).
            XmlError, ApiError, TransportError: as :meth:`get_entry`.
        """
        response = await self.request(
            "POST", "activities", content=body, headers={"Content-Type": content_type}
        )
        return activity_from_entry(parse_xml(response.content, max_bytes=ENTRY_MAX_BYTES))

    async def post_form(
        self,
        href: str,
        fields: Sequence[tuple[str, str]],
        from_entry: Callable[[etree._Element], _T],
    ) -> _T:
        """POST a small urlencoded form (an export or clear activity) and read the answer.

        Raises:
            as :meth:`post_activity`.
        """
        body = urlencode([(str(key), value) for key, value in fields]).encode()
        response = await self.request(
            "POST",
            href,
            content=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        return from_entry(parse_xml(response.content, max_bytes=ENTRY_MAX_BYTES))

    @asynccontextmanager
    async def stream_download(
        self, href: str, *, read_size: int = 64 * 1024
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """GET a body of any size, read piece by piece; closed on exit::

            async with client.stream_download("activities/7.csv") as pieces:
                async for piece in pieces:
                    ...

        Raises:
            BodyBrokenOff: the connection failed while the body was arriving (what came
                before is incomplete; read it again).
            ApiError, TransportError: as :meth:`request`, before the body.
        """
        response = await self.request("GET", href, stream=True)
        try:
            yield self._pieces_of(response, read_size)
        finally:
            await response.aclose()

    async def get_entry_dated(
        self, href: str, from_entry: Callable[[etree._Element], _T]
    ) -> tuple[_T, dt.datetime | None]:
        """As :meth:`get_entry`, with the server's ``Date`` header: the server's clock when it
        answered, whole seconds (None when absent or unreadable).

        Raises:
            as :meth:`get_entry`.
        """
        response = await self.request("GET", href)
        entry = from_entry(parse_xml(response.content, max_bytes=ENTRY_MAX_BYTES))
        return entry, _date_of(response)

    async def get_entry_sequenced(
        self, href: str, from_entry: Callable[[etree._Element], _T]
    ) -> tuple[_T, dt.datetime | None, tuple[int, int, int | None] | None]:
        """As :meth:`get_entry_dated`, with the account's write sequence: ``(seq, server ms,
        margin ms)`` from ``X-Bulkops-Write-Seq`` / ``X-Bulkops-Write-Time`` /
        ``X-Bulkops-Write-Margin`` (the margin None when not stated; our server's extension on
        ``GET lists/{id}``, asked for with ``X-Bulkops-Write-Seq: ?``,
        :mod:`bulkops.server.lists`); None when either is absent or not a
        plain non-negative integer (an era server sends neither).

        Raises:
            as :meth:`get_entry`.
        """
        response = await self.request("GET", href, headers={WRITE_SEQ_HEADER: "?"})
        entry = from_entry(parse_xml(response.content, max_bytes=ENTRY_MAX_BYTES))
        return entry, _date_of(response), _write_seq_of(response)

    async def _pieces_of(self, response: httpx.Response, read_size: int) -> AsyncIterator[bytes]:
        try:
            async for piece in response.aiter_bytes(read_size):
                yield piece
        except (httpx.TransportError, httpx.StreamError) as exc:
            self._stats.transport_errors += 1
            url = _safe_url(response.request.url)
            raise BodyBrokenOff(f"reading {url} broke off: {exc!r}") from exc


def _date_of(response: httpx.Response) -> dt.datetime | None:
    """The response's ``Date`` header as an aware UTC datetime, or None."""
    try:
        when = email.utils.parsedate_to_datetime(response.headers.get("date", ""))
    except (TypeError, ValueError):
        return None
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def _write_seq_of(response: httpx.Response) -> tuple[int, int, int | None] | None:
    """The write-sequence extension's headers of ``response`` (:func:`parse_write_seq`)."""
    get = response.headers.get
    return parse_write_seq(
        get(WRITE_SEQ_HEADER, ""), get(WRITE_TIME_HEADER, ""), get(WRITE_MARGIN_HEADER, "")
    )


def _connect_failure(exc: BaseException) -> str:
    """Why a connection could not be opened, in the socket's words ("connection refused")."""
    if isinstance(exc, httpx.ConnectTimeout):
        return "no answer to the connection attempt (timed out)"
    seen: BaseException | None = exc
    while seen is not None:
        group = seen.exceptions if isinstance(seen, BaseExceptionGroup) else ()
        for inner in group:
            if isinstance(inner, OSError) and inner.strerror:
                return inner.strerror.lower()
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror.lower()
        seen = seen.__cause__ or seen.__context__
    return str(exc) or type(exc).__name__


def _reason(error: BulkOpsError) -> str:
    """Why an attempt failed, in a few words: the status and message, or the socket error."""
    if isinstance(error, ApiError):
        return f"HTTP {error.status}: {error.message}"
    text = str(error)
    return text.rsplit(": ", 1)[-1] if text.startswith("cannot connect to ") else text


def _given_up(error: BulkOpsError, failures: int, seconds: float) -> BulkOpsError:
    """``error`` once retries are over: a server never reached says so and what to check."""
    if isinstance(error, TransportError) and str(error).startswith("cannot connect to "):
        tries = f"{failures} attempt{'s' if failures != 1 else ''} in {seconds:.1f} s"
        return TransportError(f"{error} ({tries}); is the server running, and is its URL right?")
    return error


@asynccontextmanager
async def open_client(config: ClientConfig) -> AsyncIterator[Client]:
    """An authenticated :class:`Client`, its connection pool closed on exit."""
    limits = httpx.Limits(
        max_connections=config.max_connections,
        max_keepalive_connections=config.max_connections,
    )
    headers = {
        "Authorization": config.credentials.authorization(),
        "Accept": "application/atom+xml",
        "User-Agent": f"bulkops/{__version__}",
    }
    async with httpx.AsyncClient(
        headers=headers,
        timeout=httpx.Timeout(config.timeout, connect=config.connect_timeout),
        limits=limits,
    ) as http:
        yield Client(config, http)
