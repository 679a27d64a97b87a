"""When the tracker polls: the interval rule as properties, and the request count of a real
import against the server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from bulkops.engine.client import open_client
from bulkops.engine.imports import ImportOptions, run_import
from bulkops.engine.tracker import FINAL_MARGIN, HEARTBEAT, PREDICTION_MAX, poll_interval
from bulkops.server.app import ServerConfig
from bulkops.stream.options import ChunkLimits
from tests.enginekit import client_config, contact_rows, write_csv
from tests.serverkit import RunningServer, make_state, start_server

rows_ahead = st.lists(st.integers(min_value=1, max_value=40_000), min_size=1, max_size=60)
rates = st.one_of(st.none(), st.floats(min_value=1.0, max_value=1e6))
bounds = st.tuples(
    st.floats(min_value=0.01, max_value=2.0), st.floats(min_value=2.0, max_value=30.0)
)


def interval(**kwargs: object) -> float:
    settings: dict[str, object] = {
        "rows_ahead": [40_000],
        "rate": 20_000.0,
        "clean": True,
        "blocked": False,
        "submitting": False,
        "backoff": 0.5,
        "poll_min": 0.5,
        "poll_max": 10.0,
    }
    settings.update(kwargs)
    return poll_interval(**settings)  # type: ignore[arg-type]


@given(rows_ahead, rates, st.booleans(), st.booleans(), st.booleans(), bounds, st.data())
def test_the_interval_stays_within_its_bounds(
    ahead: list[int],
    rate: float | None,
    clean: bool,
    blocked: bool,
    submitting: bool,
    limits: tuple[float, float],
    data: st.DataObject,
) -> None:
    poll_min, poll_max = limits
    backoff = data.draw(st.floats(min_value=poll_min, max_value=poll_max))
    value = interval(
        rows_ahead=ahead,
        rate=rate,
        clean=clean,
        blocked=blocked,
        submitting=submitting,
        backoff=backoff,
        poll_min=poll_min,
        poll_max=poll_max,
    )
    assert poll_min <= value <= max(PREDICTION_MAX, HEARTBEAT, poll_max)


@given(rows_ahead, rates)
def test_while_submitting_and_waiting_for_nothing_only_the_heartbeat_polls(
    ahead: list[int], rate: float | None
) -> None:
    assert interval(rows_ahead=ahead, rate=rate, submitting=True, poll_max=7.0) == HEARTBEAT
    assert interval(rows_ahead=ahead, rate=rate, submitting=True, poll_max=99.0) == 99.0


@given(rows_ahead, st.floats(min_value=100.0, max_value=1e6))
def test_a_clean_rate_aims_just_past_the_predicted_finish(ahead: list[int], rate: float) -> None:
    """A little past it: only this poll costs wall time when late, and run times vary."""
    value = interval(rows_ahead=ahead, rate=rate, poll_min=0.01, backoff=0.01)
    finish = sum(ahead) / rate
    assert value == pytest.approx(min(PREDICTION_MAX, max(0.01, finish * (1 + FINAL_MARGIN))))


@given(rows_ahead, st.floats(min_value=100.0, max_value=1e6))
def test_blocked_it_aims_at_the_oldest_activity_only(ahead: list[int], rate: float) -> None:
    """The scheduler waits for the oldest: whatever follows it does not matter."""
    value = interval(rows_ahead=ahead, rate=rate, blocked=True, poll_min=0.01, backoff=0.01)
    assert value == pytest.approx(min(PREDICTION_MAX, max(0.01, ahead[0] / rate)))


@given(rows_ahead, st.floats(min_value=100.0, max_value=1e6))
def test_unsure_of_the_rate_it_aims_at_the_first_activity_run_alone(
    ahead: list[int], rate: float
) -> None:
    """A rate measured while POSTs were still arriving may be several times too low:
    predicting the whole queue with it would poll long after the server finished. The
    second-oldest activity is the first to run wholly alone; its finish gives a clean rate."""
    value = interval(rows_ahead=ahead, rate=rate, clean=False, poll_min=0.01, backoff=0.01)
    assert value == pytest.approx(min(PREDICTION_MAX, max(0.01, sum(ahead[:2]) / rate)))


@given(rows_ahead, rows_ahead, st.floats(min_value=100.0, max_value=1e6))
def test_more_work_ahead_never_means_an_earlier_poll(
    ahead: list[int], more: list[int], rate: float
) -> None:
    assert interval(rows_ahead=ahead, rate=rate) <= interval(rows_ahead=ahead + more, rate=rate)


def test_without_a_rate_the_backoff_decides() -> None:
    assert interval(rate=None, backoff=3.0) == 3.0
    assert interval(rate=None, backoff=3.0, blocked=True) == 3.0
    # A poll that showed no progress doubled the backoff: an early prediction waits for it.
    assert interval(rows_ahead=[100], rate=1e6, backoff=4.0) == 4.0


@pytest.fixture
async def slow(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[RunningServer]:
    """A server that takes 0.2 s to answer every request."""
    state = make_state(tmp_path / "srv", ServerConfig(faults="latency=1:0.2,seed=1"))
    try:
        yield await start_server(nursery, state)
    finally:
        state.store.close()


async def test_no_polls_while_chunks_are_still_being_posted(
    slow: RunningServer, tmp_path: Path
) -> None:
    """Twelve activities POSTed one at a time take 2.4 s; nobody needs a completion until the
    last is sent, so the poller stays quiet until then, and one feed GET covers all twelve.
    (Polling from the first activity on, as a fixed cadence does, made ten polls or more.)"""
    path = write_csv(tmp_path / "in.csv", contact_rows(600))
    options = ImportOptions(
        lists=("Polls",),
        create_lists=True,
        concurrency=1,
        poll_min=0.05,
        poll_max=5.0,
        limits=ChunkLimits(max_rows=50),
    )
    async with open_client(client_config(slow)) as client:
        with trio.fail_after(120):
            report = await run_import(client, path, options=options, run_dir=tmp_path / "run")
    assert report.counts.applied == 600
    posts = len(report.activities)
    assert posts == 12
    polls = report.requests - posts - 2  # the lists feed, the new list
    assert 1 <= polls <= 3, report.requests
