"""Accounts and credentials: salted scrypt hashes, HTTP Basic ``APIKEY%user`` and Bearer tokens.

Invariants:

* Secrets are stored only as ``scrypt$n$r$p$salt$hash``; they never reach a log line, a
  ``repr`` or an error message. :class:`Secret` wraps them in memory and hides its value.
* scrypt is deliberately slow (~50 ms), so verified credentials are remembered in memory,
  keyed by an HMAC of the presented credential under a per-process random key: a request
  with known-good credentials costs one HMAC, and nothing derivable from the secret is kept.
  Failed attempts are remembered the same way (bounded), so repeating a wrong password
  does not cost a scrypt each time.
* Basic credentials of account A on account B's URL are *forbidden* (403), not
  *unauthorized* (401); the same for a bearer token of another account.
* Timing tells nothing about which accounts exist: Basic credentials of an unknown user are
  checked against a dummy hash with the same scrypt parameters, so the 401 costs what a
  known user's wrong password costs.
* Failed attempts are throttled (:class:`FailureThrottle`, limits in :class:`LoginLimits`):
  per claimed account name and per client address, a token bucket of failures; once one
  is empty, attempts for that name or from that address are answered 429 with
  ``Retry-After`` *before* any scrypt runs, and only after :data:`THROTTLED_DELAY`, so a
  flood of wrong passwords cannot take the CPU from other accounts. Credentials already
  verified (in the cache) are never throttled: a client that is logged in keeps working
  while its account or its address is flooded.
* With ``shared=True`` (every server ``bulkops serve`` starts) the failure buckets live in
  the database (``login_failure``) on the wall clock, read and written in one transaction
  per decision with the same :class:`FailureThrottle` arithmetic: every process of
  ``--processes N`` (and every server on the database) sees the same failures, so N
  processes allow what one does. Rows whose bucket is full again are deleted as new keys
  arrive.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import math
import os
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TypeVar

import attrs

from bulkops.errors import ConfigError
from bulkops.server.store import Account, now_ms, write_tx

__all__ = [
    "THROTTLED_DELAY",
    "AccountSpec",
    "Authenticator",
    "Denied",
    "FailureThrottle",
    "LoginLimits",
    "Secret",
    "TokenSpec",
    "count_accounts",
    "ensure_account",
    "ensure_token",
    "hash_secret",
    "parse_account_spec",
    "parse_token_spec",
    "verify_secret",
]

T_ = TypeVar("T_")

_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
_SCRYPT_DKLEN = 64  # hashlib.scrypt's default

#: Seconds a throttled attempt waits before its 429 is sent (the caller sleeps, costing no
#: CPU): a client flooding on one connection then makes about one attempt a second, so a
#: flood cannot take the event loop from other accounts either.
THROTTLED_DELAY = 1.0

#: What an unknown user's credentials are checked against: the cost of a real hash, a
#: digest no secret has.
_DUMMY_HASH = f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${'00' * 16}${'00' * _SCRYPT_DKLEN}"


@attrs.frozen(repr=False)
class Secret:
    """A secret string that never shows itself in ``repr`` or ``str``."""

    value: str

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def hash_secret(secret: str, *, n: int = _SCRYPT_N) -> str:
    """A salted scrypt hash of ``secret`` as ``scrypt$n$r$p$salt_hex$hash_hex``."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(
        secret.encode(), salt=salt, n=n, r=_SCRYPT_R, p=_SCRYPT_P, maxmem=64 * 1024 * 1024
    )
    return f"scrypt${n}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_secret(secret: str, stored: str) -> bool:
    """Whether ``secret`` matches a hash made by :func:`hash_secret` (constant-time compare)."""
    try:
        scheme, n, r, p, salt_hex, digest_hex = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(
            secret.encode(),
            salt=bytes.fromhex(salt_hex),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=64 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, bytes.fromhex(digest_hex))


@attrs.frozen(kw_only=True)
class AccountSpec:
    """``NAME:PASSWORD:APIKEY`` as given to ``bulkops serve --account``."""

    username: str
    password: Secret
    api_key: Secret


@attrs.frozen(kw_only=True)
class TokenSpec:
    """``NAME:TOKEN`` as given to ``bulkops serve --token``."""

    username: str
    token: Secret


def _check_username(username: str, spec: str) -> str:
    if not username or any(ch in username for ch in "/%:?#") or username != username.strip():
        raise ConfigError(f"invalid account name in {spec}")
    return username.lower()


def parse_account_spec(text: str) -> AccountSpec:
    """Parse ``NAME:PASSWORD:APIKEY`` (the password may not contain ':'; the key may not).

    Raises:
        ConfigError: the text is not of that form. The message never repeats the secrets.
    """
    parts = text.strip().split(":")
    if len(parts) != 3 or not all(parts):
        raise ConfigError("an account must be given as NAME:PASSWORD:APIKEY")
    username = _check_username(parts[0], "an account spec")
    return AccountSpec(username=username, password=Secret(parts[1]), api_key=Secret(parts[2]))


def parse_token_spec(text: str) -> TokenSpec:
    """Parse ``NAME:TOKEN``.

    Raises:
        ConfigError: the text is not of that form.
    """
    name, sep, token = text.strip().partition(":")
    if not sep or not name or not token:
        raise ConfigError("a token must be given as NAME:TOKEN")
    return TokenSpec(username=_check_username(name, "a token spec"), token=Secret(token))


def _claimed_username(header: str, url_username: str) -> str:
    """The account name a credential claims (lower case): Basic's ``APIKEY%name``, else the
    URL's (a bearer token names no account). Cheap: no database, no scrypt."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "basic":
        try:
            user = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return url_username
        claimed = user.partition(":")[0].partition("%")[2]
        if claimed:
            # A bucket's key; PostgreSQL cannot take a NUL in text (no account has one).
            return claimed.lower().replace("\x00", "\\0")
    return url_username


def _account_row(db: sqlite3.Connection, username: str) -> Account | None:
    row = db.execute("SELECT id, username FROM account WHERE username = ?", (username,)).fetchone()
    return None if row is None else Account(id=row[0], username=row[1])


def ensure_account(db: sqlite3.Connection, spec: AccountSpec) -> tuple[Account, bool]:
    """Create the account, or set its password and API key when it exists (idempotent).

    Returns:
        The account and whether it was created.
    """
    password_hash = hash_secret(spec.password.value)
    key_hash = hash_secret(spec.api_key.value)
    with write_tx(db):
        account = _account_row(db, spec.username)
        created = account is None
        if account is None:
            cursor = db.execute(
                "INSERT INTO account (username, created) VALUES (?, ?)", (spec.username, now_ms())
            )
            assert cursor.lastrowid is not None
            account = Account(id=cursor.lastrowid, username=spec.username)
        db.execute(
            "DELETE FROM credential WHERE account_id = ? AND kind IN ('password', 'api_key')",
            (account.id,),
        )
        db.executemany(
            "INSERT INTO credential (account_id, kind, hash) VALUES (?, ?, ?)",
            [(account.id, "password", password_hash), (account.id, "api_key", key_hash)],
        )
    return account, created


def ensure_token(db: sqlite3.Connection, spec: TokenSpec) -> None:
    """Add a bearer token to an existing account, unless it already has that token.

    Raises:
        ConfigError: the account does not exist.
    """
    account = _account_row(db, spec.username)
    if account is None:
        raise ConfigError(f"--token names account {spec.username!r}, which does not exist")
    stored = db.execute(
        "SELECT hash FROM credential WHERE account_id = ? AND kind = 'token'", (account.id,)
    ).fetchall()
    if any(verify_secret(spec.token.value, row[0]) for row in stored):
        return
    with write_tx(db):
        db.execute(
            "INSERT INTO credential (account_id, kind, hash) VALUES (?, 'token', ?)",
            (account.id, hash_secret(spec.token.value)),
        )


def count_accounts(db: sqlite3.Connection) -> int:
    """How many accounts the database holds."""
    return int(db.execute("SELECT count(*) FROM account").fetchone()[0])


@attrs.frozen
class Denied(Exception):
    """Authentication failed: ``status`` is 401 (who are you?), 403 (not yours) or 429 (too
    many failed attempts: retry after ``retry_after`` seconds)."""

    status: int
    reason: str
    retry_after: float | None = None

    def headers(self, realm: str) -> dict[str, str]:
        """The answer's headers: a Basic challenge with a 401, ``Retry-After`` with a 429."""
        if self.status == 401:
            return {"WWW-Authenticate": f'Basic realm="{realm}"'}
        if self.retry_after is not None:
            return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}
        return {}


def _positive(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{attribute.name} must be positive, not {value}")


@attrs.frozen(kw_only=True)
class LoginLimits:
    """How many failed logins are allowed before 429.

    Each account name and each client address has a bucket of failures: ``account_failures``
    (or ``address_failures``) in a burst, refilled evenly over ``window`` seconds. So an
    account name may fail 10 times at once, then once every 6 s (the defaults).

    Attributes:
        account_failures: failures per claimed account name per ``window``.
        address_failures: failures per client address per ``window``.
        window: seconds in which a whole bucket refills.
        max_tracked: names and addresses remembered at most (least recently failed first
            forgotten), bounding memory.
    """

    account_failures: float = attrs.field(default=10.0, validator=_positive)
    address_failures: float = attrs.field(default=100.0, validator=_positive)
    window: float = attrs.field(default=60.0, validator=_positive)
    max_tracked: int = 100_000


class FailureThrottle:
    """Token buckets of failures, one per key; pure: every call is given ``now`` (seconds).

    A key starts with ``burst`` tokens, regains ``burst / window`` per second up to
    ``burst``, and loses one per :meth:`fail`. While it holds less than one token it is
    blocked: :meth:`wait` says for how long, ``(1 - tokens) / rate`` seconds. Keys whose
    bucket would be full again are the first forgotten when more than ``max_keys`` are held.
    """

    def __init__(self, burst: float, window: float, *, max_keys: int = 100_000) -> None:
        self._burst = burst
        self._rate = burst / window
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def _tokens(self, key: str, now: float) -> float:
        found = self._buckets.get(key)
        if found is None:
            return self._burst
        tokens, at = found
        return min(self._burst, tokens + max(0.0, now - at) * self._rate)

    def wait(self, key: str, now: float) -> float:
        """Seconds until ``key`` may fail again (0 when it is not blocked)."""
        tokens = self._tokens(key, now)
        return 0.0 if tokens >= 1 else (1 - tokens) / self._rate

    def fail(self, key: str, now: float) -> None:
        """Record one failure of ``key`` at ``now``."""
        self._buckets[key] = (self._tokens(key, now) - 1, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)

    def state(self, key: str) -> tuple[float, float] | None:
        """``(tokens, at)`` of ``key``'s bucket as last written, None when it has none."""
        return self._buckets.get(key)

    def set_state(self, key: str, value: tuple[float, float] | None) -> None:
        """Replace ``key``'s bucket (None: forget it) — to load one kept elsewhere."""
        if value is None:
            self._buckets.pop(key, None)
        else:
            self._buckets[key] = value

    def refund(self, key: str, now: float) -> None:
        """Give back one failure of ``key`` (an attempt counted in advance that succeeded)."""
        if key in self._buckets:
            self._buckets[key] = (min(self._burst, self._tokens(key, now) + 1), now)

    def __len__(self) -> int:
        return len(self._buckets)


class Authenticator:
    """Checks the ``Authorization`` header of a request against the store.

    :meth:`check` is synchronous and may run scrypt: call it in a worker thread (through
    ``Store.run``). Results are cached as described in the module docstring.
    """

    def __init__(
        self,
        *,
        cache_size: int = 4096,
        limits: LoginLimits | None = None,
        clock: Callable[[], float] | None = None,
        shared: bool = False,
    ) -> None:
        self._key = secrets.token_bytes(32)
        self._good: OrderedDict[bytes, Account] = OrderedDict()
        self._bad: OrderedDict[bytes, Denied] = OrderedDict()
        self._cache_size = cache_size
        self.limits = limits or LoginLimits()
        # Shared buckets are compared across processes: the wall clock, not this one's.
        self._clock = clock or (time.time if shared else time.monotonic)
        self.shared = shared
        self._lock = threading.Lock()  # check() runs in several worker threads at once
        self._accounts = FailureThrottle(
            self.limits.account_failures, self.limits.window, max_keys=self.limits.max_tracked
        )
        self._addresses = FailureThrottle(
            self.limits.address_failures, self.limits.window, max_keys=self.limits.max_tracked
        )

    def _fingerprint(self, header: str) -> bytes:
        return hmac.new(self._key, header.encode("utf-8", "surrogatepass"), "sha256").digest()

    def _remember(self, cache: OrderedDict[bytes, T_], key: bytes, value: T_) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > self._cache_size:
            cache.popitem(last=False)

    def forget(self) -> None:
        """Drop every cached decision (after credentials change)."""
        self._good.clear()
        self._bad.clear()

    def check(
        self, db: sqlite3.Connection, header: str | None, url_username: str, client: str = ""
    ) -> Account:
        """The account that owns ``url_username``, if ``header`` proves access to it.

        Args:
            db: a store connection.
            header: the ``Authorization`` header, or None.
            url_username: the account name in the URL (lower case).
            client: the client's address, for the per-address throttle.

        Raises:
            Denied: 401 for missing or wrong credentials, 403 for another account's, 429 when
                the claimed account name or the client address failed too often lately.
        """
        if not header:
            raise Denied(401, "Authentication required")
        key = self._fingerprint(f"{url_username}\n{header}")
        account = self._good.get(key)
        if account is not None:
            return account
        name = "user:" + _claimed_username(header, url_username)
        address = "addr:" + client
        denied = self._bad.get(key)
        if denied is not None:
            self._throttle(db, name, address, take=False)
            raise denied  # a repeated failure costs nothing: not counted again
        # Counted as a failure before scrypt runs, refunded if it is not one: however many
        # attempts arrive at once, no more than the allowance are checked. Shared buckets are
        # only read here and written for a real failure: a login that succeeds takes no write
        # lock, which a running activity may hold for seconds.
        self._throttle(db, name, address, take=True)
        try:
            account = self._verify(db, header, url_username)
        except Denied as exc:
            if exc.status == 401 and self.shared:
                self._count_failure(db, name, address)
            elif exc.status != 401 and not self.shared:
                self._refund(db, name, address)
            self._remember(self._bad, key, exc)
            raise
        if not self.shared:
            self._refund(db, name, address)
        self._remember(self._good, key, account)
        return account

    def _throttle(self, db: sqlite3.Connection, name: str, address: str, *, take: bool) -> None:
        """429 if the name or the address is blocked; else, with ``take``, count a failure
        (in this process: shared buckets are written by :meth:`_count_failure`)."""
        write = take and not self.shared
        with self._lock, self._shared_buckets(db, name, address, write=write) as now:
            wait = max(self._accounts.wait(name, now), self._addresses.wait(address, now))
            if wait == 0 and take:
                self._accounts.fail(name, now)
                self._addresses.fail(address, now)
        if wait > 0:
            raise Denied(429, "Too many failed logins; retry later", retry_after=wait)

    def _count_failure(self, db: sqlite3.Connection, name: str, address: str) -> None:
        """Store one failure of ``name`` and ``address`` in the shared buckets."""
        with self._lock, self._shared_buckets(db, name, address, write=True) as now:
            self._accounts.fail(name, now)
            self._addresses.fail(address, now)

    def _refund(self, db: sqlite3.Connection, name: str, address: str) -> None:
        with self._lock, self._shared_buckets(db, name, address, write=True) as now:
            self._accounts.refund(name, now)
            self._addresses.refund(address, now)

    @contextlib.contextmanager
    def _shared_buckets(
        self, db: sqlite3.Connection, name: str, address: str, *, write: bool
    ) -> Iterator[float]:
        """Yield "now"; when shared, around a transaction that loads the two buckets from
        ``login_failure`` first and (with ``write``) stores them back after."""
        now = self._clock()
        if not self.shared:
            yield now
            return
        pairs = ((self._accounts, "user", name), (self._addresses, "addr", address))
        with write_tx(db) if write else contextlib.nullcontext(db):
            for throttle, kind, key in pairs:
                row = db.execute(
                    "SELECT tokens, stamp FROM login_failure WHERE key = ?", (f"{kind}:{key}",)
                ).fetchone()
                throttle.set_state(key, None if row is None else (row[0], row[1] / 1000))
            yield now
            if write:
                self._store_buckets(db, pairs, now)

    def _store_buckets(
        self,
        db: sqlite3.Connection,
        pairs: tuple[tuple[FailureThrottle, str, str], ...],
        now: float,
    ) -> None:
        now_ms_ = int(now * 1000)
        for throttle, kind, key in pairs:
            state = throttle.state(key)
            if state is None:
                continue
            cursor = db.execute(
                "UPDATE login_failure SET tokens = ?, stamp = ? WHERE key = ?",
                (state[0], int(state[1] * 1000), f"{kind}:{key}"),
            )
            if cursor.rowcount == 0:
                # A new key: first drop the buckets that are full again (they carry nothing).
                full_ms = int(self.limits.window * 1000) + 1
                db.execute("DELETE FROM login_failure WHERE stamp < ?", (now_ms_ - full_ms,))
                db.execute(
                    "INSERT INTO login_failure (key, tokens, stamp) VALUES (?, ?, ?)",
                    (f"{kind}:{key}", state[0], int(state[1] * 1000)),
                )

    def _verify(self, db: sqlite3.Connection, header: str, url_username: str) -> Account:
        scheme, _, value = header.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            return self._verify_basic(db, value.strip(), url_username)
        if scheme == "bearer":
            return self._verify_bearer(db, value.strip(), url_username)
        raise Denied(401, "Unsupported authentication scheme")

    def _verify_basic(self, db: sqlite3.Connection, value: str, url_username: str) -> Account:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise Denied(401, "Malformed Basic credentials") from None
        user, sep, password = decoded.partition(":")
        api_key, pct, username = user.partition("%")
        if not sep or not pct or not api_key or not username:
            raise Denied(401, "Basic user must be APIKEY%username")
        # A NUL cannot be in a stored name (nor in a PostgreSQL query): no such account.
        account = None if "\x00" in username else _account_row(db, username.lower())
        if account is None:
            # The same two scrypt runs as a known user's: the 401 does not say who exists.
            verify_secret(api_key, _DUMMY_HASH)
            verify_secret(password, _DUMMY_HASH)
            raise Denied(401, "Invalid credentials")
        hashes = dict(
            db.execute(
                "SELECT kind, hash FROM credential WHERE account_id = ? "
                "AND kind IN ('password', 'api_key')",
                (account.id,),
            ).fetchall()
        )
        key_ok = verify_secret(api_key, hashes.get("api_key", _DUMMY_HASH))
        password_ok = verify_secret(password, hashes.get("password", _DUMMY_HASH))
        if not (key_ok and password_ok):
            raise Denied(401, "Invalid credentials")
        if account.username != url_username:
            raise Denied(403, "These credentials are not for this account")
        return account

    def _verify_bearer(self, db: sqlite3.Connection, token: str, url_username: str) -> Account:
        if not token:
            raise Denied(401, "Empty bearer token")
        rows = db.execute(
            "SELECT a.id, a.username, c.hash FROM credential c"
            " JOIN account a ON a.id = c.account_id"
            " WHERE c.kind = 'token' ORDER BY a.username = ? DESC",
            (url_username,),
        ).fetchall()
        for account_id, username, stored in rows:
            if verify_secret(token, stored):
                if username != url_username:
                    raise Denied(403, "This token is not for this account")
                return Account(id=account_id, username=username)
        raise Denied(401, "Invalid token")
