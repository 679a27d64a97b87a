"""The account's write sequence (``X-Bulkops-Write-Seq``, our server's extension) and what a
sync makes of it, against the real server over HTTP, on both stores.

* the server bumps it exactly once per committed write to contact data, of every kind, and
  never for a read or a refused write; its time is taken under the write lock;
* a sync whose only writes during it were its own saves its snapshot as of its end, so the
  next sync with nothing changed is incremental and cheap;
* an out-of-band write during a sync keeps the snapshot's old ``as_of``, and the next sync
  still sees that change.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from bulkops.engine import sync_files, sync_send
from bulkops.engine.client import Client, open_client
from bulkops.engine.sync import run_sync
from bulkops.engine.sync_base import BaseInfo, snapshot_as_of
from bulkops.errors import ApiError
from bulkops.wire.atom.lists import list_from_entry
from tests.enginekit import client_config, write_csv
from tests.pgkit import BOTH_STORES
from tests.serverkit import RunningServer
from tests.test_server_lists import ATOM_XML, contact_body, list_body
from tests.test_sync_base import add as add_rows
from tests.test_sync_base import clear, contact_id, make_list, put, remove
from tests.test_sync_engine import base_rows, members, seed, sync_options

STORES = BOTH_STORES


@pytest.fixture
async def client(server: RunningServer) -> Any:
    async with open_client(client_config(server)) as opened:
        yield opened


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Snapshots go under the test's own ``BULKOPS_HOME``."""
    monkeypatch.setenv("BULKOPS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


async def reading(client: Client, list_uri: str) -> tuple[int, int]:
    """``(write_seq, server ms)`` from ``GET lists/{id}``."""
    list_id = list_uri.rstrip("/").rsplit("/", 1)[-1]
    _, _, sequence = await client.get_entry_sequenced(f"lists/{list_id}", list_from_entry)
    assert sequence is not None
    return sequence[:2]


def stamp_of(state: Any, email: str) -> int:
    db: sqlite3.Connection = state.store.connection()
    row = db.execute("SELECT last_update_time FROM contact WHERE email_key = ?", (email,))
    return int(row.fetchone()[0])


# -- the server --------------------------------------------------------------------------------


async def test_every_write_kind_bumps_the_sequence_once(
    client: Client, server: RunningServer
) -> None:
    """List POST/PUT/DELETE, contact POST/PUT/DELETE, add/remove/clear activities: one each;
    reads and refused writes: none. A write's stamp is at or after the reading before it."""
    state = server.state
    with trio.fail_after(60):
        news = await make_list(client, "News")  # list POST
        seq, _ = await reading(client, news)
        assert seq == 1

        async def expect(delta: int) -> int:
            nonlocal seq
            now, _ = await reading(client, news)
            assert now - seq == delta
            seq = now
            return now

        await expect(0)  # reading does not count
        other = await make_list(client, "Other")
        await expect(1)
        body = list_body("Other2")
        other_id = other.rstrip("/").rsplit("/", 1)[-1]
        await client.request("PUT", f"lists/{other_id}", content=body, headers=ATOM_XML)
        await expect(1)  # list PUT
        await add_rows(client, [["a@example.org", "A", "X", ""]], news)
        await expect(1)  # add activity
        await add_rows(client, [["a@example.org", "A", "X", ""]], news)
        await expect(1)  # an add that changes nothing still counts once
        _, before = await reading(client, news)
        await put(client, state, "a@example.org", FirstName="Changed")
        assert stamp_of(state, "a@example.org") >= before  # stamped under the lock, after
        await expect(1)  # contact PUT
        with pytest.raises(ApiError):
            await client.request(
                "PUT",
                "contacts/999999",
                content=contact_body("zz@example.org", None, FirstName="Q"),
                headers=ATOM_XML,
            )
        with pytest.raises(ApiError):  # the name is taken
            await client.request("POST", "lists", content=list_body("News"), headers=ATOM_XML)
        await expect(0)  # a refused write does not count
        created = await client.request(
            "POST",
            "contacts",
            content=contact_body("b@example.org", [news], FirstName="B"),
            headers=ATOM_XML,
        )
        assert created.status_code == 201
        await expect(1)  # contact POST
        await remove(client, ["b@example.org"], news)
        await expect(1)  # remove activity
        await clear(client, news)
        await expect(1)  # clear activity
        await client.request("DELETE", f"contacts/{contact_id(state, 'a@example.org')}")
        await expect(1)  # contact DELETE (opt-out)
        await client.request("DELETE", f"contacts/{contact_id(state, 'a@example.org')}")
        await expect(0)  # already opted out: nothing changed
        await client.request("DELETE", f"lists/{other_id}")
        await expect(1)  # list DELETE


async def test_an_era_answer_gives_no_sequence() -> None:
    """Missing or hostile headers read as None, never a crash."""
    import httpx

    from bulkops.engine.client import _write_seq_of

    def answer(**headers: str) -> httpx.Response:
        return httpx.Response(200, headers=headers)

    assert _write_seq_of(answer()) is None
    assert _write_seq_of(answer(**{"X-Bulkops-Write-Seq": "5"})) is None
    for bad in (b"-1", b"1e3", b"\xb3", b"", b"9" * 40, b"5 5"):  # \xb3: a latin-1 digit
        headers = [(b"X-Bulkops-Write-Seq", bad), (b"X-Bulkops-Write-Time", b"1000")]
        assert _write_seq_of(httpx.Response(200, headers=headers)) is None
    both = {"X-Bulkops-Write-Seq": "5", "X-Bulkops-Write-Time": "1000"}
    assert _write_seq_of(httpx.Response(200, headers=both)) == (5, 1000, None)
    for margin, stated in (("0", 0), ("250", 250), ("60000", 60000)):
        headers = {**both, "X-Bulkops-Write-Margin": margin}
        assert _write_seq_of(httpx.Response(200, headers=headers)) == (5, 1000, stated)
    for bad_margin in (b"60001", b"-1", b"1.5", b"", b"\xb3", b"9" * 30):
        headers = [
            (b"X-Bulkops-Write-Seq", b"5"),
            (b"X-Bulkops-Write-Time", b"1000"),
            (b"X-Bulkops-Write-Margin", bad_margin),
        ]
        assert _write_seq_of(httpx.Response(200, headers=headers)) == (5, 1000, None)


def test_snapshot_as_of_moves_only_on_an_exact_match() -> None:
    info = BaseInfo(
        members=0,
        opted_out=0,
        source="full",
        reason=None,
        requests=0,
        as_of="2026-01-01T00:00:00.000Z",
        write_seq=10,
        write_time=0,
    )
    end = (13, 1_767_225_601_500)  # 2026-01-01T00:00:01.500Z
    assert snapshot_as_of(info, end, 3).snapshot_as_of == "2026-01-01T00:00:00.500Z"
    for own in (2, 4, None):
        assert snapshot_as_of(info, end, own).snapshot_as_of == info.as_of
    assert snapshot_as_of(info, None, 3).snapshot_as_of == info.as_of
    era = attrs.evolve(info, write_seq=None, write_time=None)
    assert snapshot_as_of(era, end, 3).snapshot_as_of == info.as_of
    # The margin the server states replaces the default second (0: one host, one clock).
    one_host = attrs.evolve(info, write_margin_ms=0)
    assert snapshot_as_of(one_host, end, 3).snapshot_as_of == "2026-01-01T00:00:01.500Z"
    hosts = attrs.evolve(info, write_margin_ms=250)
    assert snapshot_as_of(hosts, end, 3).snapshot_as_of == "2026-01-01T00:00:01.250Z"


async def test_the_reading_states_the_stores_write_margin(
    client: Client, server: RunningServer, tmp_path: Path
) -> None:
    """SQLite (one host): 0 ms; PostgreSQL (writers may run on several hosts): 1,000 ms."""
    with trio.fail_after(60):
        news = await make_list(client, "Margins")
        list_id = news.rstrip("/").rsplit("/", 1)[-1]
        _, _, sequence = await client.get_entry_sequenced(f"lists/{list_id}", list_from_entry)
    assert sequence is not None
    expected = 0 if isinstance(server.state.store.connection(), sqlite3.Connection) else 1000
    assert sequence[2] == expected == server.state.store.write_margin_ms


# -- the sync ----------------------------------------------------------------------------------


async def test_a_second_sync_with_nothing_changed_is_incremental_and_cheap(
    client: Client, server: RunningServer, tmp_path: Path
) -> None:
    with trio.fail_after(180):
        await seed(client, tmp_path, base_rows(60))
        rows = base_rows(60)
        rows[1][1] = "Changed"  # an add
        rows[2][3] = ""  # an emptied field: a PUT
        rows.append(["new@example.org", "N", "", "", ""])
        path = write_csv(tmp_path / "crm.csv", rows)
        first = await run_sync(
            client,
            path,
            options=sync_options(remove_missing=True),
            run_dir=tmp_path / "s1",
        )
        assert first.state == "complete", first.message
        assert first.rows_sent == 2
        assert first.puts == 1
        assert first.base is not None
        assert first.base.snapshot_as_of_reason is not None
        assert "own" in first.base.snapshot_as_of_reason
        assert first.base.snapshot_as_of != first.base.as_of
        assert own_writes(tmp_path / "s1") == 2  # the add activity and the PUT
        second = await run_sync(client, path, options=sync_options(), run_dir=tmp_path / "s2")
    assert second.state == "complete", second.message
    assert second.base is not None
    assert second.base.source == "incremental"
    assert second.rows_sent == second.puts == second.removes_sent == 0
    assert second.requests <= 5, second.requests
    assert "only the sync's own 0 writes" in (second.base.snapshot_as_of_reason or "")


def own_writes(run_dir: Path) -> int | None:
    """What :func:`bulkops.engine.sync_files.own_writes` counts for the sync in ``run_dir``."""
    db = sqlite3.connect(run_dir / "sync.db")
    try:
        return sync_files.own_writes(db, run_dir)
    finally:
        db.close()


async def test_a_chunk_that_may_have_been_applied_twice_makes_the_count_unknown(
    client: Client, server: RunningServer, tmp_path: Path
) -> None:
    """A lost POST flagged ``maybe_twice`` (or a suspected chunk): the sync's own writes are
    not known, so its snapshot keeps the base's ``as_of``."""
    with trio.fail_after(120):
        await seed(client, tmp_path, base_rows(10))
        rows = base_rows(10)
        rows[1][1] = "Changed"
        path = write_csv(tmp_path / "crm.csv", rows)
        first = await run_sync(client, path, options=sync_options(), run_dir=tmp_path / "s1")
    assert first.state == "complete", first.message
    assert own_writes(tmp_path / "s1") == 1
    for flag in ("maybe_twice", "suspected"):
        journal = sqlite3.connect(tmp_path / "s1" / "add" / "journal.sqlite")
        try:
            journal.execute(f"UPDATE chunk SET {flag} = 1")
            journal.commit()
            assert own_writes(tmp_path / "s1") is None
            journal.execute(f"UPDATE chunk SET {flag} = 0")
            journal.commit()
        finally:
            journal.close()


async def test_an_out_of_band_put_during_a_sync_keeps_the_old_as_of(
    client: Client, server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PUT by someone else between the base read and the end of the sync: the snapshot
    keeps the base's ``as_of``, and the next sync sees (and undoes) the change."""
    state = server.state
    original = sync_send.apply_puts

    async def meddling(*args: Any, **kwargs: Any) -> Any:
        async with open_client(client_config(server)) as other:
            await put(other, state, "c7@example.org", FirstName="Meddled")
        return await original(*args, **kwargs)

    with trio.fail_after(180):
        await seed(client, tmp_path, base_rows(30))
        rows = base_rows(30)
        rows[1][1] = "Changed"
        path = write_csv(tmp_path / "crm.csv", rows)
        monkeypatch.setattr(sync_send, "apply_puts", meddling)
        first = await run_sync(client, path, options=sync_options(), run_dir=tmp_path / "s1")
        monkeypatch.setattr(sync_send, "apply_puts", original)
        assert first.state == "complete", first.message
        assert first.base is not None
        assert first.base.snapshot_as_of == first.base.as_of
        assert "2 writes to the account during the sync, 1 of them its own" in (
            first.base.snapshot_as_of_reason or ""
        )
        assert members(state)["c7@example.org"]["first"] == "Meddled"
        second = await run_sync(client, path, options=sync_options(), run_dir=tmp_path / "s2")
    assert second.state == "complete", second.message
    assert second.counts.updated == 1  # c7 back to the file's value
    assert members(state)["c7@example.org"]["first"] == "F7"


async def test_only_a_get_that_asks_reads_the_sequence(client: Client) -> None:
    """A plain ``GET lists/{id}`` (every era client's) answers without the extension headers
    and never waits for the write lock; asked with ``X-Bulkops-Write-Seq: ?`` it has both."""
    list_uri = await make_list(client, "asked")
    list_id = list_uri.rstrip("/").rsplit("/", 1)[-1]
    plain = await client.request("GET", f"lists/{list_id}")
    assert "X-Bulkops-Write-Seq" not in plain.headers
    assert "X-Bulkops-Write-Time" not in plain.headers
    asked = await client.request("GET", f"lists/{list_id}", headers={"X-Bulkops-Write-Seq": "?"})
    assert asked.headers["X-Bulkops-Write-Seq"].isdigit()
    assert asked.headers["X-Bulkops-Write-Time"].isdigit()
