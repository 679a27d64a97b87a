"""Shared test configuration: hypothesis profiles and the fixture directory."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings

FIXTURES = Path(__file__).parent / "fixtures" / "ctct-v1"

# "ci" is the default: bounded examples, no deadline and no too_slow health check (both time
# each example on the wall clock, which a loaded 2-core machine stretches many times over).
# A test's own @settings inherits these; one that lists suppress_health_check replaces the
# list, so it names too_slow again.
_SLOW_OK = [HealthCheck.too_slow]
settings.register_profile(
    "ci", max_examples=100, deadline=None, suppress_health_check=_SLOW_OK, print_blob=True
)
settings.register_profile("dev", max_examples=30, deadline=None, suppress_health_check=_SLOW_OK)
settings.register_profile(
    "thorough", max_examples=2000, deadline=None, suppress_health_check=_SLOW_OK
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# -- scrypt, once per input ----------------------------------------------------------------
#
# Every server state hashes the demo account's password and API key (scrypt, ~50 ms of CPU
# each, on purpose) and its first request verifies both: about 0.2 s of CPU per test, which
# was a good part of the suite. In this process scrypt is memoized (a pure function: the same
# inputs give the same digest) and so is hash_secret per secret (a valid salted hash, its salt
# drawn once). Every check still runs: a wrong secret gives another input, hence a real
# scrypt and a mismatch; tests that count scrypt runs patch hashlib.scrypt over this and see
# every call. Servers in child processes are untouched.

import functools  # noqa: E402
import hashlib  # noqa: E402

from bulkops.server import auth as _auth  # noqa: E402

_real_scrypt = hashlib.scrypt


@functools.lru_cache(maxsize=4096)
def _memo_scrypt(password: bytes, **kwargs: object) -> bytes:
    return _real_scrypt(password, **kwargs)  # type: ignore[arg-type]


def _scrypt(password: bytes, **kwargs: object) -> bytes:
    try:
        return _memo_scrypt(bytes(password), **kwargs)
    except TypeError:  # an argument that cannot be a cache key
        return _real_scrypt(password, **kwargs)  # type: ignore[arg-type]


hashlib.scrypt = _scrypt  # type: ignore[assignment]
_auth.hash_secret = functools.lru_cache(maxsize=1024)(_auth.hash_secret)  # type: ignore[assignment]


# -- the API server -------------------------------------------------------------------------

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402
import trio  # noqa: E402

from tests.pgkit import fresh_database  # noqa: E402
from tests.serverkit import RunningServer, make_state, start_server  # noqa: E402


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Modules with ``STORES = BOTH_STORES`` run each test using ``store_db`` (directly or
    through ``server_state``/``server``) once per store."""
    stores = getattr(metafunc.module, "STORES", None)
    if stores and "store_db" in metafunc.fixturenames:
        metafunc.parametrize("store_db", stores, indirect=True)


@pytest.fixture
def store_db(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The database of the test's server: None (SQLite in tmp_path) unless the module runs
    on both stores (``STORES = BOTH_STORES``), where "postgres" gives a fresh PostgreSQL
    database's URL (or skips, see :mod:`tests.pgkit`)."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield None
        return
    with fresh_database() as url:
        yield url


@pytest.fixture
def server_state(tmp_path: Path, store_db: str | None) -> Iterator[object]:
    """A fresh server state (database in tmp_path or on PostgreSQL, demo account)."""
    state = make_state(tmp_path, db=store_db)
    yield state
    state.store.close()


@pytest.fixture
async def server(server_state: object, nursery: trio.Nursery) -> RunningServer:
    """The API served over real HTTP on 127.0.0.1, port 0."""
    return await start_server(nursery, server_state)  # type: ignore[arg-type]
