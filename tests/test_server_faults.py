"""The fault plan: grammar, each kind over real HTTP, latency and stall on trio's mock clock,
and seeded repeatability."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import trio

from bulkops.errors import ConfigError
from bulkops.server.app import ApiState, ServerConfig
from bulkops.server.faults import FaultDice, FaultKind, parse_fault_plan
from bulkops.server.worker import serve_worker, worker_for
from bulkops.wire.atom.feeds import parse_entry
from bulkops.wire.model import Activity
from tests.pgkit import BOTH_STORES
from tests.serverkit import HANG_GUARD, RunningServer, asgi_client, make_state, start_server
from tests.test_server_activities import list_uri, make_list

STORES = BOTH_STORES

README_EXAMPLE = "503=0.05,429=0.05,reset=0.01,lost=0.01,latency=0.1:0.5,stall=0.02:20,seed=7"


def _activity_count(state: ApiState) -> int:
    (count,) = state.store.connection().execute("SELECT count(*) FROM activity").fetchone()
    return int(count)


async def _serve(
    tmp_path: Path, nursery: trio.Nursery, db: str | None, **config: object
) -> RunningServer:
    state = make_state(tmp_path, ServerConfig(**config), db=db)  # type: ignore[arg-type]
    make_list(state, "Faulty")
    return await start_server(nursery, state)


def _form() -> dict[str, str]:
    return {"activityType": "SV_ADD", "data": "Email\nf@example.org", "lists": list_uri(1)}


# -- grammar ----------------------------------------------------------------------------------


def test_the_readme_example_parses() -> None:
    """Every kind, probabilities, seconds and the seed come out of the SPEC."""
    plan = parse_fault_plan(README_EXAMPLE)
    assert plan.seed == 7
    assert plan.rule(FaultKind.E503) is not None
    latency = plan.rule(FaultKind.LATENCY)
    stall = plan.rule(FaultKind.STALL)
    assert latency is not None
    assert (latency.probability, latency.seconds) == (0.1, 0.5)
    assert stall is not None
    assert (stall.probability, stall.seconds) == (0.02, 20)
    assert plan.rule(FaultKind.E500) is None
    assert parse_fault_plan(plan.spec()) == plan


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("404=0.1", "unknown fault kind"),
        ("503=1.5", "between 0 and 1"),
        ("503=-0.1", "between 0 and 1"),
        ("503=lots", "503=lots"),
        ("latency=0.1", "needs seconds"),
        ("stall=0.1:0", "needs seconds"),
        ("503=0.1:5", "takes no seconds"),
        ("503=0.1,503=0.2", "twice"),
        ("seed=x", "not an integer"),
        ("reset", "KIND=PROBABILITY"),
    ],
)
def test_malformed_specs_are_configuration_errors(spec: str, says: str) -> None:
    """Each mistake is a ConfigError saying what is wrong; ServerConfig refuses it too."""
    with pytest.raises(ConfigError, match=says):
        parse_fault_plan(spec)
    with pytest.raises(ConfigError):
        ServerConfig(faults=spec)


def test_bulkops_serve_refuses_a_bad_plan_with_exit_64(tmp_path: Path) -> None:
    """`bulkops serve --faults` with a bad SPEC is a usage error, before anything is served."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bulkops",
            "serve",
            "--db",
            str(tmp_path / "x.db"),
            "--faults",
            "x=1",
        ],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )
    assert proc.returncode == 64
    assert "unknown fault kind" in proc.stderr


def test_without_a_seed_one_is_chosen_and_shown() -> None:
    """A plan without seed= still has one (logged through spec()), so a run can be repeated."""
    plan = parse_fault_plan("503=0.5")
    assert f"seed={plan.seed}" in plan.spec()


# -- each kind over real HTTP -----------------------------------------------------------------


@pytest.mark.parametrize(("kind", "status"), [("500", 500), ("503", 503), ("429", 429)])
async def test_error_statuses_are_answered_and_nothing_is_committed(
    tmp_path: Path, store_db: str | None, nursery: trio.Nursery, kind: str, status: int
) -> None:
    """500/503/429 faults answer that status with a short text; the POST never reaches the app."""
    running = await _serve(tmp_path, nursery, store_db, faults=f"{kind}=1,seed=1")
    async with running.client() as client:
        with trio.fail_after(HANG_GUARD):
            response = await client.post("activities", data=_form())
            outside = await client.get(running.origin + "/elsewhere")
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/plain")
    assert "fault plan" in response.text
    assert "retry-after" not in response.headers
    assert _activity_count(running.state) == 0
    assert outside.status_code == 404  # only account requests meet faults
    running.state.store.close()


async def test_an_injected_429_carries_retry_after_when_configured(
    tmp_path: Path, store_db: str | None, nursery: trio.Nursery
) -> None:
    """With --retry-after, injected 429s carry the header as throttles do."""
    running = await _serve(tmp_path, nursery, store_db, faults="429=1", retry_after=4)
    async with running.client() as client:
        with trio.fail_after(HANG_GUARD):
            response = await client.get("activities")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "4"
    running.state.store.close()


async def test_reset_drops_the_connection_and_commits_nothing(
    tmp_path: Path, store_db: str | None, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """reset: the client sees no HTTP status at all, and no activity exists."""
    caplog.set_level(logging.INFO)
    running = await _serve(tmp_path, nursery, store_db, faults="reset=1")
    async with running.client() as client:
        with trio.fail_after(HANG_GUARD):
            with pytest.raises(httpx.TransportError) as caught:
                await client.post("activities", data=_form())
            alive = await client.get(running.origin + "/elsewhere")
    assert isinstance(caught.value, httpx.RemoteProtocolError | httpx.ReadError)
    assert _activity_count(running.state) == 0
    assert alive.status_code == 404  # the server itself is fine
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    running.state.store.close()


async def test_lost_commits_then_drops_the_connection(
    tmp_path: Path, store_db: str | None, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """lost: the activity is created (and runs), but the client gets no answer."""
    caplog.set_level(logging.INFO)
    running = await _serve(tmp_path, nursery, store_db, faults="lost=1")
    async with running.client() as client:
        with trio.fail_after(HANG_GUARD):
            with pytest.raises(httpx.TransportError) as caught:
                await client.post("activities", data=_form())
    assert isinstance(caught.value, httpx.RemoteProtocolError | httpx.ReadError)
    assert _activity_count(running.state) == 1
    db = running.state.store.connection()
    with trio.fail_after(HANG_GUARD):
        while True:
            if db.execute("SELECT status FROM activity").fetchone() == ("COMPLETE",):
                break
            await trio.sleep(0.01)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    running.state.store.close()


async def test_latency_delays_answers_over_real_http(
    tmp_path: Path, store_db: str | None, nursery: trio.Nursery
) -> None:
    """latency=1:0.3: every answer starts at least 0.3 s late (kept tiny: real time)."""
    running = await _serve(tmp_path, nursery, store_db, faults="latency=1:0.3")
    async with running.client() as client:
        with trio.fail_after(HANG_GUARD):
            started = time.monotonic()
            response = await client.get("")
            elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert elapsed >= 0.3
    running.state.store.close()


async def test_stall_over_real_http(
    tmp_path: Path, store_db: str | None, nursery: trio.Nursery
) -> None:
    """stall=1:0.5: the activity's own RunStartTime..RunFinishTime spans the stall (kept tiny:
    real time), and it still completes."""
    running = await _serve(tmp_path, nursery, store_db, faults="stall=1:0.5")
    async with running.client() as client:
        with trio.fail_after(HANG_GUARD):
            response = await client.post("activities", data=_form())
            assert response.status_code == 201
            while True:
                entry = parse_entry((await client.get(response.headers["location"])).content)
                assert isinstance(entry, Activity)
                if entry.status == "COMPLETE":
                    break
                await trio.sleep(0.02)
    assert entry.run_start_time is not None
    assert entry.run_finish_time is not None
    assert (entry.run_finish_time - entry.run_start_time).total_seconds() >= 0.5
    assert entry.transaction_count == 1
    running.state.store.close()


# -- latency and stall on the mock clock -------------------------------------------------------


async def test_latency_on_the_mock_clock(
    tmp_path: Path, store_db: str | None, autojump_clock: trio.abc.Clock
) -> None:
    """latency=1:2 answers exactly 2 s (trio time) late; a plan without it answers at once."""
    slow = make_state(tmp_path / "slow", db=store_db, faults="latency=1:2")
    fast = make_state(tmp_path / "fast", db=store_db)
    async with asgi_client(slow) as slow_client, asgi_client(fast) as fast_client:
        started = trio.current_time()
        assert (await slow_client.get("")).status_code == 200
        slow_elapsed = trio.current_time() - started
        started = trio.current_time()
        assert (await fast_client.get("")).status_code == 200
        fast_elapsed = trio.current_time() - started
    assert 2.0 <= slow_elapsed < 2.1
    assert fast_elapsed < 0.1
    slow.store.close()
    fast.store.close()


def _seed_where_stalls_are(pattern: list[bool], probability: float) -> int:
    for seed in range(1000):
        dice = FaultDice(parse_fault_plan(f"stall={probability}:30,seed={seed}"))
        if [dice.stall_seconds() > 0 for _ in pattern] == pattern:
            return seed
    raise AssertionError("no seed found")


async def test_stall_keeps_an_activity_running_and_lets_others_overtake(
    tmp_path: Path, store_db: str | None, autojump_clock: trio.abc.Clock
) -> None:
    """stall=P:30: a stalled activity completes no sooner than 30 s (trio time) after it was
    posted; the next one, not stalled, starts after it but finishes first."""
    seed = _seed_where_stalls_are([True, False], 0.5)
    state = make_state(tmp_path, db=store_db, faults=f"stall=0.5:30,seed={seed}")
    list_id = make_list(state, "Stall")
    final: dict[str, tuple[float, Activity]] = {}
    async with trio.open_nursery() as nursery, asgi_client(state) as client:
        posted_at = trio.current_time()
        ids = []
        for i in range(2):  # both wait in the queue before the worker starts
            response = await client.post(
                "activities",
                data={
                    "activityType": "SV_ADD",
                    # The stalled one is big, so its apply takes many milliseconds.
                    "data": "Email\n"
                    + "\n".join(f"s{i}-{n}@example.org" for n in range(2000 - 1999 * i)),
                    "lists": list_uri(list_id),
                },
            )
            assert response.status_code == 201
            ids.append(response.headers["location"].rsplit("/", 1)[-1])
        await nursery.start(serve_worker, state)
        while len(final) < 2:
            for activity_id in ids:
                entry = parse_entry((await client.get(f"activities/{activity_id}")).content)
                assert isinstance(entry, Activity)
                if entry.status == "COMPLETE" and activity_id not in final:
                    final[activity_id] = (trio.current_time(), entry)
            await trio.sleep(1)
        nursery.cancel_scope.cancel()
    stalled_id, free_id = ids
    stalled_done, stalled = final[stalled_id]
    _free_done, free = final[free_id]
    assert stalled.run_start_time is not None
    assert free.run_start_time is not None
    assert stalled.run_finish_time is not None
    assert free.run_finish_time is not None
    assert stalled.run_start_time <= free.run_start_time  # started first ...
    assert free.run_finish_time < stalled.run_finish_time  # ... finished last
    assert stalled_done - posted_at >= 30  # (no upper bound: autojump runs ahead of threads)
    assert worker_for(state).statistics().stalled == 1
    state.store.close()


# -- repeatability ----------------------------------------------------------------------------


async def _statuses(tmp_path: Path, nursery: trio.Nursery, spec: str, n: int) -> list[int]:
    running = await _serve(tmp_path, nursery, None, faults=spec)  # the plan, not the store
    out = []
    async with running.client() as client:
        with trio.fail_after(HANG_GUARD):
            for _ in range(n):
                out.append((await client.get("")).status_code)
    running.state.store.close()
    return out


async def test_a_seeded_plan_repeats_exactly(tmp_path: Path, nursery: trio.Nursery) -> None:
    """The same SPEC gives the same faults on the same requests; another seed differs."""
    spec = "503=0.3,429=0.2,seed=7"
    first = await _statuses(tmp_path / "a", nursery, spec, 30)
    second = await _statuses(tmp_path / "b", nursery, spec, 30)
    other = await _statuses(tmp_path / "c", nursery, "503=0.3,429=0.2,seed=8", 30)
    dice = FaultDice(parse_fault_plan(spec))
    predicted = []
    for _ in range(30):
        kind = dice.for_request().kind
        predicted.append(int(kind.value) if kind is not None else 200)
    assert first == second == predicted
    assert other != first
    assert {200, 429, 503} <= set(first)


def test_adding_a_kind_does_not_shift_the_others() -> None:
    """Each kind has its own stream: 503s fall on the same requests with or without latency."""
    plain = FaultDice(parse_fault_plan("503=0.3,seed=3"))
    mixed = FaultDice(parse_fault_plan("503=0.3,latency=0.5:1,seed=3"))
    assert [plain.for_request().kind for _ in range(200)] == [
        mixed.for_request().kind for _ in range(200)
    ]
