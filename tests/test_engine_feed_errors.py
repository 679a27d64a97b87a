"""A feed walk that fails is never mistaken for one that ended: the error always reaches
the consumer (it used to be swallowed about one time in four, and an export of an
unreachable server then "completed" with 0 rows and exit 0)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from trio.testing import MockClock

from bulkops.engine.client import ClientConfig, Credentials, open_client
from bulkops.engine.feeds import open_pages
from bulkops.errors import TransportError


@pytest.fixture
def patient_clock() -> MockClock:
    """A virtual clock that jumps only after 0.2 s of real idleness (loopback I/O first)."""
    return MockClock(autojump_threshold=0.2)


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port bound by nobody who listens: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_a_walk_whose_first_page_fails_always_raises(
    patient_clock: MockClock, refusing_port: int
) -> None:
    """20 walks of an unreachable server: 20 TransportErrors, no walk that just ends."""
    config = ClientConfig(
        server=f"http://127.0.0.1:{refusing_port}",
        credentials=Credentials(username="demo", token="t"),
    )
    outcomes = []
    for _ in range(20):
        async with open_client(config) as client:
            try:
                async with open_pages(client, "lists") as walk:
                    pages = [page async for page in walk]
                outcomes.append(f"ended after {len(pages)} pages")
            except TransportError:
                outcomes.append("raised")
    assert outcomes == ["raised"] * 20
