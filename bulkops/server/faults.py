"""The fault plan: a seeded schedule of failures for tests and benchmarks (``--faults SPEC``).

SPEC is comma-separated ``KIND=PROBABILITY[:SECONDS]`` items and an optional ``seed=N``::

    503=0.05,429=0.05,reset=0.01,lost=0.01,latency=0.1:0.5,stall=0.02:20,seed=7

Kinds (each at most once; PROBABILITY in [0, 1]):

* ``500``, ``503`` — answer with that status and a short text; the app never sees the
  request, so nothing is committed.
* ``429`` — answer as a throttle would (``Retry-After`` only with ``--retry-after``).
* ``reset`` — read the request, then close the connection without an answer; nothing is
  committed.
* ``lost`` — run the request (its effect is committed: the activity exists), then close the
  connection without an answer.
* ``latency=P:S`` — a fraction P of the answered requests start their answer S seconds late
  (after the request was processed).
* ``stall=P:S`` — a fraction P of activities stay RUNNING S seconds longer than needed (the
  worker asks :meth:`FaultDice.stall_seconds`).

Invariants:

* **Repeatable.** Each kind draws from its own ``random.Random`` seeded with ``(seed, kind)``,
  once per eligible event (every account request for the request kinds, every activity
  started for ``stall``), whatever fires; so the n-th request meets the same faults in every
  run with the same SPEC, and adding one kind does not shift the others. Without ``seed=`` a
  random seed is chosen and logged, so any run can be repeated.
* When several request kinds fire for one request the first of ``reset, 500, 503, 429,
  lost`` wins; ``latency`` applies to whatever is answered.
* Only account API requests (``/ws/customers/…``) meet faults.
* A dropped connection carries no HTTP status at all: the client reads EOF before any
  response byte (httpx: ``RemoteProtocolError`` "Server disconnected without sending a
  response"). On hypercorn this is done by closing the HTTP stream from the ASGI ``send``
  callable's stream object, which makes hypercorn close the socket; under another server
  (httpx's in-process ASGI transport) :class:`ConnectionDropped` is raised instead.
"""

from __future__ import annotations

import enum
import logging
import random
import secrets
from collections.abc import Awaitable, Callable

import attrs
import trio

from bulkops.errors import ConfigError
from bulkops.server.asgi import ASGIApp, Message, Receive, Scope, Send
from bulkops.server.throttle import account_of, respond_plain, retry_after_headers

__all__ = [
    "REQUEST_KINDS",
    "ConnectionDropped",
    "FaultDice",
    "FaultInjector",
    "FaultKind",
    "FaultPlan",
    "FaultRule",
    "RequestFaults",
    "parse_fault_plan",
    "wrap",
]

logger = logging.getLogger("bulkops.server")


class FaultKind(enum.StrEnum):
    """The kinds of fault a plan can hold."""

    E500 = "500"
    E503 = "503"
    E429 = "429"
    RESET = "reset"
    LOST = "lost"
    LATENCY = "latency"
    STALL = "stall"


#: Request kinds in order of precedence (the first that fires wins).
REQUEST_KINDS = (FaultKind.RESET, FaultKind.E500, FaultKind.E503, FaultKind.E429, FaultKind.LOST)
_TIMED = frozenset({FaultKind.LATENCY, FaultKind.STALL})
_MESSAGES = {
    FaultKind.E500: (500, "Internal server error (fault plan)"),
    FaultKind.E503: (503, "Service unavailable (fault plan)"),
    FaultKind.E429: (429, "Too many requests (fault plan)"),
}


def _probability(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"probability must be between 0 and 1, not {value}")
    return value


@attrs.frozen(kw_only=True)
class FaultRule:
    """One item of a plan: a kind, how often, and (latency, stall) for how long."""

    kind: FaultKind
    probability: float
    seconds: float = 0.0


@attrs.frozen(kw_only=True)
class FaultPlan:
    """A parsed SPEC: its rules and the seed."""

    rules: tuple[FaultRule, ...]
    seed: int

    def rule(self, kind: FaultKind) -> FaultRule | None:
        """The rule for ``kind``, or None."""
        for rule in self.rules:
            if rule.kind is kind:
                return rule
        return None

    def spec(self) -> str:
        """The plan as a SPEC string (with its seed), for logs."""
        items = []
        for rule in self.rules:
            timed = f":{rule.seconds:g}" if rule.kind in _TIMED else ""
            items.append(f"{rule.kind.value}={rule.probability:g}{timed}")
        items.append(f"seed={self.seed}")
        return ",".join(items)


def parse_fault_plan(spec: str) -> FaultPlan:
    """Parse ``KIND=PROBABILITY[:SECONDS],...,seed=N``.

    Raises:
        ConfigError: an unknown kind, a repeated kind, a probability outside [0, 1], seconds
            missing for latency/stall or given for another kind, or a bad seed.
    """
    rules: list[FaultRule] = []
    seed: int | None = None
    seen: set[str] = set()
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        name, eq, value = item.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not eq or not value:
            raise ConfigError(f"fault plan item {item!r} is not KIND=PROBABILITY[:SECONDS]")
        if name in seen:
            raise ConfigError(f"fault plan names {name!r} twice")
        seen.add(name)
        if name == "seed":
            try:
                seed = int(value)
            except ValueError:
                raise ConfigError(f"fault plan seed {value!r} is not an integer") from None
            continue
        try:
            kind = FaultKind(name)
        except ValueError:
            known = ", ".join(k.value for k in FaultKind)
            raise ConfigError(f"unknown fault kind {name!r}; use one of {known}") from None
        probability_text, colon, seconds_text = value.partition(":")
        try:
            probability = _probability(float(probability_text))
            seconds = float(seconds_text) if colon else 0.0
        except ValueError as exc:
            raise ConfigError(f"fault plan item {item!r}: {exc}") from None
        if kind in _TIMED and (not colon or not seconds > 0):
            raise ConfigError(f"fault plan item {item!r} needs seconds: {name}=P:SECONDS")
        if kind not in _TIMED and colon:
            raise ConfigError(f"fault plan item {item!r}: {name} takes no seconds")
        rules.append(FaultRule(kind=kind, probability=probability, seconds=seconds))
    if seed is None:
        seed = secrets.randbelow(2**31)
    return FaultPlan(rules=tuple(rules), seed=seed)


@attrs.frozen
class RequestFaults:
    """What happens to one request: a request kind (or None) and a delay in seconds."""

    kind: FaultKind | None
    delay: float


class FaultDice:
    """The seeded random streams of a plan, one per kind."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self._streams = {
            rule.kind: (rule, random.Random(f"{plan.seed}/{rule.kind.value}"))
            for rule in plan.rules
        }
        self.counts: dict[FaultKind, int] = dict.fromkeys(FaultKind, 0)

    def _fires(self, kind: FaultKind) -> FaultRule | None:
        entry = self._streams.get(kind)
        if entry is None:
            return None
        rule, stream = entry
        return rule if stream.random() < rule.probability else None

    def for_request(self) -> RequestFaults:
        """Draw the faults of the next account request."""
        fired: FaultKind | None = None
        for kind in REQUEST_KINDS:  # draw every stream, so each stays aligned with requests
            if self._fires(kind) is not None and fired is None:
                fired = kind
        latency = self._fires(FaultKind.LATENCY)
        delay = latency.seconds if latency is not None and fired not in _DROPS else 0.0
        if fired is not None:
            self.counts[fired] += 1
        if delay:
            self.counts[FaultKind.LATENCY] += 1
        return RequestFaults(kind=fired, delay=delay)

    def stall_seconds(self) -> float:
        """Draw for the next activity started: how long it stalls (0 for not at all)."""
        rule = self._fires(FaultKind.STALL)
        if rule is None:
            return 0.0
        self.counts[FaultKind.STALL] += 1
        return rule.seconds


_DROPS = frozenset({FaultKind.RESET, FaultKind.LOST})


class ConnectionDropped(Exception):
    """A fault dropped the connection, and the server offers no way to close it silently."""


async def _drop_connection(send: Send) -> None:
    """Close the client's connection without any response bytes.

    hypercorn hands the app the ``app_send`` method of its ``HTTPStream``; telling that
    stream's protocol the stream is closed before a response started makes hypercorn close
    the connection (h11 cannot reuse it mid-response) and ignore the app's end.
    """
    from hypercorn.protocol.events import StreamClosed
    from hypercorn.protocol.http_stream import HTTPStream

    stream = getattr(send, "__self__", None)
    if isinstance(stream, HTTPStream):
        await stream.send(StreamClosed(stream_id=stream.stream_id))
        return
    raise ConnectionDropped("connection dropped by the fault plan")


async def _drain(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


def _late(send: Send, delay: float) -> Callable[[Message], Awaitable[None]]:
    async def send_late(message: Message) -> None:
        if message["type"] == "http.response.start":
            await trio.sleep(delay)
        await send(message)

    return send_late


async def _swallow(message: Message) -> None:
    """Accept and discard a response message (the ``lost`` fault)."""


class FaultInjector:
    """ASGI middleware that applies a :class:`FaultDice` to account requests.

    Args:
        app: the application behind it.
        dice: the plan's random streams.
        retry_after: seconds for ``Retry-After`` on injected 429s, or None.
    """

    def __init__(self, app: ASGIApp, dice: FaultDice, *, retry_after: float | None = None) -> None:
        self.app = app
        self.dice = dice
        self.headers_429 = retry_after_headers(retry_after)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or account_of(scope) is None:
            await self.app(scope, receive, send)
            return
        faults = self.dice.for_request()
        kind = faults.kind
        if kind is not None:
            logger.info("fault %s on %s %s", kind.value, scope["method"], scope["path"])
        if kind is FaultKind.RESET:
            await _drain(receive)
            await _drop_connection(send)
            return
        if kind is FaultKind.LOST:
            await self.app(scope, receive, _swallow)
            await _drop_connection(send)
            return
        if faults.delay:
            logger.info("fault latency %gs on %s %s", faults.delay, scope["method"], scope["path"])
            send = _late(send, faults.delay)
        if kind is not None:
            status, text = _MESSAGES[kind]
            headers = self.headers_429 if kind is FaultKind.E429 else {}
            await respond_plain(receive, send, status, text, headers)
            return
        await self.app(scope, receive, send)


def wrap(app: ASGIApp, dice: FaultDice | None, *, retry_after: float | None) -> ASGIApp:
    """``app`` behind a :class:`FaultInjector` rolling ``dice``, or ``app`` without dice."""
    if dice is None:
        return app
    return FaultInjector(app, dice, retry_after=retry_after)
