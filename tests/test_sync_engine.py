"""``run_sync`` against the real server over HTTP: the list ends equal to the file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import trio

from bulkops.engine.client import Client, open_client
from bulkops.engine.import_options import ImportOptions
from bulkops.engine.imports import run_import
from bulkops.engine.sync import run_sync
from bulkops.engine.sync_report import SyncOptions, SyncReport
from bulkops.server.app import ApiState
from tests.enginekit import client_config, server_contacts, write_csv
from tests.serverkit import RunningServer

FAST = {"poll_min": 0.05, "poll_max": 0.5}


def sync_options(**kwargs: object) -> SyncOptions:
    """Options for the list ``News`` with fast polling."""
    return SyncOptions(list="News", send=ImportOptions(**FAST), **kwargs)  # type: ignore[arg-type]


def members(state: ApiState, name: str = "News") -> dict[str, dict[str, object]]:
    """The list's members as the server stores them: key -> fields."""
    return {k: v for k, v in server_contacts(state).items() if name in v["lists"]}  # type: ignore[operator]


def spelling(state: ApiState, key: str) -> str:
    """The stored spelling of an address."""
    row = (
        state.store.connection()
        .execute("SELECT EmailAddress FROM contact WHERE email_key = ?", (key,))
        .fetchone()
    )
    return str(row[0])


def contact_id(state: ApiState, key: str) -> int:
    """The server's id of a contact."""
    row = (
        state.store.connection()
        .execute("SELECT id FROM contact WHERE email_key = ?", (key,))
        .fetchone()
    )
    return int(row[0])


def base_rows(count: int) -> list[list[str]]:
    """Rows ``c0..`` with every column filled."""
    return [[f"c{i}@example.org", f"F{i}", f"L{i}", f"City{i}", "MA"] for i in range(count)]


async def seed(client: Client, tmp_path: Path, rows: list[list[str]], lst: str = "News") -> None:
    """Import ``rows`` onto ``lst`` (created)."""
    path = write_csv(tmp_path / f"seed-{lst}.csv", rows)
    options = ImportOptions(lists=(lst,), create_lists=True, **FAST)  # type: ignore[arg-type]
    report = await run_import(client, path, options=options, run_dir=tmp_path / f"seed-{lst}")
    assert report.state == "complete"


def read_csv(path: str) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


async def test_a_sync_adds_updates_empties_and_leaves_the_rest(
    server: RunningServer, tmp_path: Path
) -> None:
    """Every kind of row gets its outcome; the list equals the file; only changes are sent."""
    async with open_client(client_config(server)) as client:
        with trio.fail_after(120):
            await seed(client, tmp_path, base_rows(40))
            await seed(client, tmp_path, [["out@example.org", "O", "P", "Q", "MA"]], "Other")
            await client.request(
                "DELETE", f"contacts/{contact_id(server.state, 'out@example.org')}"
            )
            rows = base_rows(40)
            rows[1][1] = "Changed"  # line 3: updated by an add
            rows[2][3] = ""  # line 4: City emptied, by a PUT
            rows[3][0] = "C3@Example.ORG"  # line 5: new spelling only
            rows[4][2] = "  L4  "  # line 6: whitespace only: unchanged
            rows.append(["n1@example.org", "N", "", "", ""])  # line 42: added
            rows.append(["out@example.org", "O", "P", "Q", "MA"])  # line 43: opted out
            rows.append(["bad-address", "B", "", "", ""])  # line 44: rejected
            rows.append(["c5@example.org", "F5", "L5", "City5", "MA"])  # line 45: c5 again
            path = write_csv(tmp_path / "crm.csv", rows)
            report = await run_sync(
                client, path, options=sync_options(), run_dir=tmp_path / "sync1"
            )
    c = report.counts
    assert report.state == "complete", report.message
    assert (c.read, c.added, c.updated, c.unchanged) == (44, 1, 3, 37)
    assert (c.opted_out, c.rejected, c.duplicate, c.failed, c.removed) == (1, 1, 1, 0, 0)
    assert c.balanced
    assert report.rows_sent == 3  # c1, c3 and n1 by an add
    assert report.puts == 1  # c2's emptied city
    assert report.exit_code == 2  # a rejected row, a duplicate
    got = members(server.state)
    assert len(got) == 41
    assert got["c1@example.org"]["first"] == "Changed"
    assert got["c2@example.org"]["city"] in ("", None)
    assert got["c2@example.org"]["first"] == "F2"
    assert spelling(server.state, "c3@example.org") == "C3@Example.ORG"
    assert "out@example.org" not in got
    updated = read_csv(report.files["updated"])
    assert {(r["line"], r["changed"]) for r in updated} == {
        ("3", "FirstName"),
        ("4", "City"),
        ("5", "EmailAddress"),
    }
    assert [r["line"] for r in read_csv(report.files["opted_out"])] == ["43"]
    saved = json.loads((tmp_path / "sync1" / "report.json").read_text())
    assert saved["counts"]["added"] == 1


async def _sync(client: Client, path: Path, run_dir: Path, **kwargs: object) -> SyncReport:
    return await run_sync(client, path, options=sync_options(**kwargs), run_dir=run_dir)


async def test_removing_missing_members_stops_above_the_limit_unless_allowed(
    server: RunningServer, tmp_path: Path
) -> None:
    """25% of the list gone: refused (nothing sent) at the default 10%, done with yes."""
    async with open_client(client_config(server)) as client:
        with trio.fail_after(120):
            await seed(client, tmp_path, base_rows(40))
            path = write_csv(tmp_path / "crm.csv", base_rows(30))
            before = client.statistics().requests
            refused = await _sync(client, path, tmp_path / "r1", remove_missing=True)
            assert refused.state == "refused"
            assert refused.exit_code == 1
            assert refused.plan.remove == 10
            assert len(members(server.state)) == 40
            assert refused.rows_sent == refused.removes_sent == refused.puts == 0
            assert client.statistics().requests - before == refused.requests
            kept = await _sync(client, path, tmp_path / "r2")
            assert kept.counts.removed == 0
            assert len(members(server.state)) == 40
            done = await _sync(client, path, tmp_path / "r3", remove_missing=True, yes=True)
            assert done.counts.removed == 10
            assert set(members(server.state)) == {f"c{i}@example.org" for i in range(30)}
            limit = await _sync(
                client,
                write_csv(tmp_path / "less.csv", base_rows(29)),
                tmp_path / "r4",
                remove_missing=True,
                max_remove="1",
            )
            assert limit.counts.removed == 1


async def test_a_dry_run_plans_and_sends_nothing(server: RunningServer, tmp_path: Path) -> None:
    """Counts per outcome and the outcome files; the server is unchanged."""
    async with open_client(client_config(server)) as client:
        with trio.fail_after(120):
            await seed(client, tmp_path, base_rows(10))
            rows = base_rows(10)
            rows[0][1] = "X"
            rows.append(["new@example.org", "N", "", "", ""])
            path = write_csv(tmp_path / "crm.csv", rows)
            report = await _sync(client, path, tmp_path / "dry", dry_run=True)
    assert report.state == "dry-run"
    assert (report.plan.added, report.plan.updated, report.plan.unchanged) == (1, 1, 9)
    assert report.rows_sent == 0
    assert [r["line"] for r in read_csv(report.files["added"])] == ["12"]
    assert members(server.state)["c0@example.org"]["first"] == "F0"
    assert "new@example.org" not in members(server.state)


async def test_a_second_sync_with_nothing_changed_sends_nothing(
    server: RunningServer, tmp_path: Path
) -> None:
    """Every row unchanged: no activity, no PUT."""
    async with open_client(client_config(server)) as client:
        with trio.fail_after(120):
            await seed(client, tmp_path, base_rows(30))
            path = write_csv(tmp_path / "crm.csv", base_rows(30))
            report = await _sync(client, path, tmp_path / "s")
    assert report.counts.unchanged == 30
    assert report.rows_sent == report.puts == report.removes_sent == 0
    assert report.bytes_sent == 0


async def test_a_contact_readded_after_leaving_the_list_gets_the_file_values(
    server: RunningServer, tmp_path: Path
) -> None:
    """A contact that left the list keeps its fields; added back, its empty cells empty them."""
    async with open_client(client_config(server)) as client:
        with trio.fail_after(120):
            await seed(client, tmp_path, base_rows(5), "Other")
            await seed(client, tmp_path, [["z@example.org", "Z", "", "", ""]])
            path = write_csv(tmp_path / "crm.csv", [["c1@example.org", "F1", "", "", ""]])
            report = await _sync(client, path, tmp_path / "s", remove_missing=True, yes=True)
    assert report.state == "complete", report.message
    got = members(server.state)
    assert set(got) == {"c1@example.org"}
    assert got["c1@example.org"]["last"] in ("", None)
    assert got["c1@example.org"]["city"] in ("", None)
    assert report.puts == 1


SAMPLES = Path(__file__).parent.parent / "samples"


async def test_the_samples_sync_onto_a_list_then_a_second_sync_sends_nothing(
    server: RunningServer, tmp_path: Path
) -> None:
    """Both sample files (12 columns, other header spellings, a quoted newline, repeats,
    rejects): the first sync adds every valid row; the next finds every row unchanged."""
    async with open_client(client_config(server)) as client:
        with trio.fail_after(120):
            await seed(client, tmp_path, [["x@example.org", "X", "", "", ""]], "News")
            for name in ("contacts.csv", "messy.csv"):
                source = SAMPLES / name
                first = await _sync(
                    client, source, tmp_path / f"{name}-1", remove_missing=True, yes=True
                )
                assert first.state == "complete", first.message
                assert first.counts.balanced
                assert first.counts.failed == 0
                second = await _sync(client, source, tmp_path / f"{name}-2", remove_missing=True)
                c = second.counts
                assert (c.added, c.updated, c.removed, c.failed) == (0, 0, 0, 0), name
                assert second.rows_sent == second.puts == second.removes_sent == 0
                valid = c.read - c.rejected - c.duplicate
                assert c.unchanged == valid
                assert len(members(server.state)) == valid
