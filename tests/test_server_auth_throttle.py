"""Failed logins: unknown users cost a known user's scrypt, and failures are throttled (429).

The throttle is pure (``now`` is passed in) and checked by properties; the authenticator runs
on a fake clock; the 429 and its ``Retry-After`` are checked over real HTTP.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from bulkops.errors import ConfigError
from bulkops.server.app import ApiState, ServerConfig
from bulkops.server.auth import (
    AccountSpec,
    Authenticator,
    Denied,
    FailureThrottle,
    LoginLimits,
    Secret,
    ensure_account,
)
from bulkops.server.serve import open_state
from bulkops.server.store import Store
from tests.serverkit import HANG_GUARD, basic, start_server

# -- the throttle (pure) ----------------------------------------------------------------------


@given(
    burst=st.integers(1, 20),
    window=st.floats(0.5, 600),
    gaps=st.lists(st.floats(0, 50), min_size=1, max_size=200),
)
def test_failures_never_exceed_the_burst_plus_the_refill(
    burst: int, window: float, gaps: list[float]
) -> None:
    """An attacker failing whenever allowed gets at most burst + rate × elapsed failures in any
    span, and is told exactly how long to wait."""
    throttle = FailureThrottle(burst, window)
    rate = burst / window
    now = 0.0
    allowed: list[float] = []
    for gap in gaps:
        now += gap
        wait = throttle.wait("k", now)
        if wait == 0:
            throttle.fail("k", now)
            allowed.append(now)
        else:
            if wait > 1e-6:  # a wait at float resolution (1e-15 s) has no earlier moment
                assert throttle.wait("k", now + wait * 0.999) > 0
            assert throttle.wait("k", now + wait + 1e-6) == 0
    for i, start in enumerate(allowed):
        for j in range(i, len(allowed)):
            assert j - i + 1 <= burst + (allowed[j] - start) * rate + 1e-6


def test_a_key_is_blocked_after_its_burst_and_others_are_not() -> None:
    """Ten failures at once block that key for window/burst seconds; another key is free."""
    throttle = FailureThrottle(10, 60.0)
    for _ in range(9):
        throttle.fail("alice", 100.0)
    assert throttle.wait("alice", 100.0) == 0
    throttle.fail("alice", 100.0)
    assert throttle.wait("alice", 100.0) == pytest.approx(6.0)
    assert throttle.wait("alice", 103.0) == pytest.approx(3.0)
    assert throttle.wait("alice", 106.0) == 0
    assert throttle.wait("bob", 100.0) == 0


def test_a_refund_gives_back_one_failure_up_to_the_burst() -> None:
    """An attempt counted in advance and refunded leaves the bucket as it was."""
    throttle = FailureThrottle(2, 60.0)
    throttle.fail("k", 0.0)
    throttle.fail("k", 0.0)
    assert throttle.wait("k", 0.0) > 0
    throttle.refund("k", 0.0)
    assert throttle.wait("k", 0.0) == 0
    throttle.refund("k", 0.0)
    throttle.refund("k", 0.0)
    throttle.fail("k", 0.0)
    throttle.fail("k", 0.0)
    assert throttle.wait("k", 0.0) > 0  # never more than the burst


async def test_concurrent_attempts_never_run_more_scrypt_checks_than_the_allowance(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twenty wrong passwords at once against an allowance of 3: 3 checked, 17 refused."""
    auth = Authenticator(limits=LoginLimits(account_failures=3), clock=FakeClock())
    checks = 0
    real = auth._verify

    def counted_verify(*args: Any) -> Any:
        nonlocal checks
        checks += 1
        return real(*args)  # scrypt: ~0.1 s, so the twenty threads overlap

    monkeypatch.setattr(auth, "_verify", counted_verify)
    statuses: list[int] = []

    async def attempt(i: int) -> None:
        statuses.append(
            await trio.to_thread.run_sync(_check, auth, store, "alice", f"g{i}", "10.0.0.1")
        )

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(attempt, i)
    assert sorted(statuses) == [401] * 3 + [429] * 17
    assert checks == 3


def test_the_throttle_remembers_a_bounded_number_of_keys() -> None:
    """A flood of distinct keys keeps at most max_keys buckets (the oldest go)."""
    throttle = FailureThrottle(1, 60.0, max_keys=100)
    for i in range(10_000):
        throttle.fail(f"k{i}", float(i))
    assert len(throttle) == 100
    assert throttle.wait("k9999", 9999.0) > 0


def test_limits_must_be_positive() -> None:
    """A zero or negative allowance is a configuration error."""
    with pytest.raises(ConfigError):
        LoginLimits(account_failures=0)
    with pytest.raises(ConfigError):
        LoginLimits(window=-1)


# -- the authenticator on a fake clock --------------------------------------------------------


class FakeClock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A database with alice and bob (made once: scrypt is slow on purpose)."""
    store = Store(tmp_path_factory.mktemp("auth") / "server.db")
    for name in ("alice", "bob"):
        spec = AccountSpec(username=name, password=Secret(f"{name}-pw"), api_key=Secret("k"))
        ensure_account(store.connection(), spec)
    yield store
    store.close()


def _check(auth: Authenticator, store: Store, user: str, password: str, client: str) -> int:
    try:
        auth.check(store.connection(), basic(user, password, "k"), user, client)
    except Denied as exc:
        return exc.status
    return 200


def test_an_unknown_user_costs_the_scrypt_runs_of_a_wrong_password(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both 401s run scrypt twice, with the same parameters."""
    calls: list[tuple[int, int, int]] = []
    real = hashlib.scrypt

    def counting(password: bytes, **kwargs: int) -> bytes:
        calls.append((kwargs["n"], kwargs["r"], kwargs["p"]))
        return real(password, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(hashlib, "scrypt", counting)
    auth = Authenticator()
    assert _check(auth, store, "alice", "wrong", "10.0.0.1") == 401
    known = list(calls)
    calls.clear()
    assert _check(auth, store, "nobody", "wrong", "10.0.0.1") == 401
    assert calls == known
    assert len(known) == 2


def test_failures_of_an_account_answer_429_until_the_window_refills(store: Store) -> None:
    """After N failures the account name is refused (even its right password) with a wait;
    other accounts and, later, the account itself log in."""
    clock = FakeClock()
    auth = Authenticator(limits=LoginLimits(account_failures=3, window=30.0), clock=clock)
    statuses = [_check(auth, store, "alice", f"guess{i}", f"10.0.0.{i}") for i in range(4)]
    assert statuses == [401, 401, 401, 429]
    with pytest.raises(Denied) as refused:
        auth.check(store.connection(), basic("alice", "alice-pw", "k"), "alice", "10.0.1.1")
    assert refused.value.status == 429
    assert refused.value.retry_after == pytest.approx(10.0)
    assert refused.value.headers("r") == {"Retry-After": "10"}
    assert _check(auth, store, "bob", "bob-pw", "10.0.0.1") == 200
    clock.now += 10.0
    assert _check(auth, store, "alice", "alice-pw", "10.0.0.1") == 200


def test_failures_from_an_address_answer_429_but_verified_clients_go_on(store: Store) -> None:
    """Fresh user names from one address: 429 after N; credentials verified before are never
    throttled, new ones from that address are until it refills."""
    clock = FakeClock()
    auth = Authenticator(limits=LoginLimits(address_failures=5, window=50.0), clock=clock)
    assert _check(auth, store, "bob", "bob-pw", "10.9.9.9") == 200
    statuses = [_check(auth, store, f"user{i}", "x", "10.9.9.9") for i in range(6)]
    assert statuses == [401] * 5 + [429]
    assert _check(auth, store, "bob", "bob-pw", "10.9.9.9") == 200  # cached: no throttle
    assert _check(auth, store, "alice", "alice-pw", "10.9.9.9") == 429
    assert _check(auth, store, "alice", "alice-pw", "10.8.8.8") == 200
    clock.now += 10.0
    assert _check(auth, store, "alice", "alice-pw", "10.9.9.9") == 200


def test_a_repeated_wrong_password_is_not_counted_twice(store: Store) -> None:
    """The same wrong credentials again cost nothing (cached 401) and take no allowance."""
    auth = Authenticator(limits=LoginLimits(account_failures=2), clock=FakeClock())
    assert [_check(auth, store, "alice", "same", "10.0.0.1") for _ in range(5)] == [401] * 5
    assert _check(auth, store, "alice", "other", "10.0.0.1") == 401
    assert _check(auth, store, "alice", "third", "10.0.0.1") == 429


# -- over HTTP -------------------------------------------------------------------------------


@pytest.fixture
def limited_state(tmp_path: Path) -> Iterator[ApiState]:
    """alice and bob on a server that allows 3 failed logins per account name per hour."""
    accounts = [
        AccountSpec(username=name, password=Secret(f"{name}-pw"), api_key=Secret("k"))
        for name in ("alice", "bob")
    ]
    state = open_state(
        tmp_path / "server.db",
        ServerConfig(),
        accounts=accounts,
        login_limits=LoginLimits(account_failures=3, window=3600.0),
    )
    yield state
    state.store.close()


async def test_the_429_comes_after_n_failures_and_other_accounts_log_in(
    limited_state: ApiState, nursery: trio.Nursery
) -> None:
    """Three wrong passwords for alice: then 429 with Retry-After; bob's login answers 200."""
    server = await start_server(nursery, limited_state)
    async with httpx.AsyncClient(timeout=HANG_GUARD) as http:

        async def get(user: str, password: str) -> httpx.Response:
            return await http.get(
                f"{server.origin}/ws/customers/{user}/",
                headers={"Authorization": basic(user, password, "k")},
            )

        statuses = [(await get("alice", f"guess{i}")).status_code for i in range(3)]
        assert statuses == [401, 401, 401]
        refused = await get("alice", "guess3")
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= math.ceil(3600 / 3)
        assert (await get("alice", "alice-pw")).status_code == 429
        assert (await get("bob", "bob-pw")).status_code == 200
        unknown = await get("nobody", "x")
        assert unknown.status_code == 401
        assert "www-authenticate" in unknown.headers
