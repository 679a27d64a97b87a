"""Acceptance 1 of ``sync``: a hypothesis state machine of file edits and out-of-band
server changes, with a sync after every step.

After each sync the list's members are exactly the file's valid rows (the last row of an
email wins, opted-out contacts excepted), each with the file's values as the server stores
them (trimmed) and the file's spelling of the address; and the rows the server received
(rows in add activities plus PUTs) are exactly the rows that differed from the server,
plus one PUT per added row with empty cells whose contact existed off the list.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from bulkops.engine.client import Client, open_client
from bulkops.engine.import_options import ImportOptions
from bulkops.engine.lists import resolve_lists
from bulkops.engine.sync import run_sync
from bulkops.engine.sync_report import SyncOptions
from bulkops.server.app import ApiState
from tests.enginekit import client_config, write_csv
from tests.serverkit import make_state, start_server
from tests.test_server_lists import contact_body

HEADER = ["Email Address", "First Name", "City"]
NAMES = ["ann", "bob", "cy", "dee", "eve"]
names = st.sampled_from(NAMES)
values = st.sampled_from(["", "x", " x ", "Oslo", "y", "  "])
spellings = st.sampled_from([str.lower, str.upper, str.title])
ATOM_XML = {"Content-Type": "application/atom+xml"}
FAST = {"poll_min": 0.02, "poll_max": 0.2}


def server_view(state: ApiState) -> dict[str, dict[str, Any]]:
    """Every contact of the demo account: key -> spelling, fields, status, on the list."""
    db = state.store.connection()
    rows = db.execute(
        "SELECT c.id, c.email_key, c.EmailAddress, c.FirstName, c.City, c.status,"
        " EXISTS (SELECT 1 FROM membership m JOIN list l ON l.id = m.list_id"
        "  WHERE m.contact_id = c.id AND l.name = 'News')"
        " FROM contact c"
    ).fetchall()
    return {
        key: {
            "id": cid,
            "email": email,
            "vals": [first or "", city or ""],
            "status": status,
            "member": bool(member),
        }
        for cid, key, email, first, city, status, member in rows
    }


class SyncMachine(RuleBasedStateMachine):
    """File edits and server changes, a sync after each."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="bulkops-sync-stateful-"))
        # Snapshots of this example's server only (not the user's, not another example's).
        self.home_before = os.environ.get("BULKOPS_HOME")
        os.environ["BULKOPS_HOME"] = str(self.tmp / "home")
        self.state = make_state(self.tmp)
        self.rows: list[list[str]] = []
        self.runs = 0
        self._on_server(self._create_list)

    def teardown(self) -> None:
        if self.home_before is None:
            os.environ.pop("BULKOPS_HOME", None)
        else:
            os.environ["BULKOPS_HOME"] = self.home_before
        self.state.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _on_server(self, job: Callable[[Client, Any], Awaitable[object]]) -> Any:
        async def main() -> object:
            async with trio.open_nursery() as nursery:
                server = await start_server(nursery, self.state)
                async with open_client(client_config(server)) as client:
                    with trio.fail_after(120):
                        result = await job(client, server)
                nursery.cancel_scope.cancel()
            return result

        return trio.run(main)

    async def _create_list(self, client: Client, _server: Any) -> None:
        await resolve_lists(client, ["News"], create=True)

    # -- file edits ------------------------------------------------------------------------

    @rule(name=names, spell=spellings, first=values, city=values)
    def add_row(self, name: str, spell: Callable[[str], str], first: str, city: str) -> None:
        """A row, new or repeating an address (a duplicate)."""
        self.rows.append([spell(name) + "@example.com", first, city])
        self.sync_and_check()

    @rule()
    def add_bad_row(self) -> None:
        """A row the import rules reject."""
        self.rows.append(["not-an-address", "x", ""])
        self.sync_and_check()

    @rule(at=st.integers(0, 30))
    def delete_row(self, at: int) -> None:
        """A row gone."""
        if self.rows:
            del self.rows[at % len(self.rows)]
        self.sync_and_check()

    @rule(at=st.integers(0, 30), column=st.sampled_from([1, 2]), value=values)
    def edit_field(self, at: int, column: int, value: str) -> None:
        """A value changed, emptied, or padded with spaces."""
        if self.rows:
            self.rows[at % len(self.rows)][column] = value
        self.sync_and_check()

    @rule(at=st.integers(0, 30), spell=spellings)
    def change_case(self, at: int, spell: Callable[[str], str]) -> None:
        """The address spelled otherwise."""
        if self.rows:
            row = self.rows[at % len(self.rows)]
            if "@" in row[0]:
                row[0] = spell(row[0].split("@")[0]) + "@example.com"
        self.sync_and_check()

    # -- out of band -----------------------------------------------------------------------

    def _contact(self, name: str) -> dict[str, Any] | None:
        return server_view(self.state).get(f"{name}@example.com")

    @rule(name=names, value=st.sampled_from(["z", "Rome"]))
    def edit_on_server(self, name: str, value: str) -> None:
        """A contact's first name and city edited through the API."""
        contact = self._contact(name)
        if contact is not None:
            body = contact_body(None, None, source=None, FirstName=value, City=value)
            self._on_server(self._put(contact["id"], body))
        self.sync_and_check()

    @rule(name=names)
    def remove_on_server(self, name: str) -> None:
        """A contact taken off every list through the API."""
        contact = self._contact(name)
        if contact is not None and contact["status"] != "Do Not Mail":
            self._on_server(self._put(contact["id"], contact_body(None, [], source=None)))
        self.sync_and_check()

    @rule(name=names)
    def opt_out_on_server(self, name: str) -> None:
        """A contact opted out (Do Not Mail) through the API."""
        contact = self._contact(name)
        if contact is not None:

            async def delete(client: Client, _server: Any) -> None:
                await client.request("DELETE", f"contacts/{contact['id']}")

            self._on_server(delete)
        self.sync_and_check()

    def _put(self, cid: int, body: bytes) -> Callable[[Client, Any], Awaitable[None]]:
        async def put(client: Client, _server: Any) -> None:
            await client.request("PUT", f"contacts/{cid}", content=body, headers=ATOM_XML)

        return put

    # -- the sync and its check ----------------------------------------------------------

    def _winners(self) -> dict[str, list[str]]:
        last: dict[str, list[str]] = {}
        for row in self.rows:
            if "@" in row[0]:
                last[row[0].lower()] = row
        return last

    def before_sync(self, path: Path) -> None:
        """Called with the file just before it is synced (a hook for subclasses)."""

    def sync_and_check(self) -> Any:
        """Sync the file; check the list and the rows sent; return the report."""
        self.runs += 1
        before = server_view(self.state)
        winners = self._winners()
        opted = {k for k, c in before.items() if c["status"] == "Do Not Mail"}
        expected: dict[str, list[str]] = {}
        received = 0
        for key, row in winners.items():
            if key in opted:
                continue
            vals = [row[1].strip(), row[2].strip()]
            expected[key] = [row[0], *vals]
            now = before.get(key)
            if now is None or not now["member"]:
                received += 1
                if now is not None and "" in vals:
                    received += 1  # the PUT after the add (the contact had values)
            elif [now["email"], *now["vals"]] != [row[0], *vals]:
                received += 1
        path = write_csv(self.tmp / f"file{self.runs}.csv", self.rows, HEADER)
        self.before_sync(path)
        options = SyncOptions(
            list="News",
            remove_missing=True,
            yes=True,
            send=ImportOptions(**FAST),  # type: ignore[arg-type]
        )

        async def sync(client: Client, _server: Any) -> Any:
            return await run_sync(
                client, path, options=options, run_dir=self.tmp / f"run{self.runs}"
            )

        report = self._on_server(sync)
        assert report.state == "complete", report.message
        assert report.counts.balanced
        after = server_view(self.state)
        got = {k: [c["email"], *c["vals"]] for k, c in after.items() if c["member"]}
        assert got == expected
        assert report.rows_sent + report.puts == received
        return report


@pytest.mark.slow
def test_the_list_always_equals_the_file_and_unchanged_rows_are_never_sent() -> None:
    """Random file edits and server changes, a sync after each (acceptance 1)."""
    run_state_machine_as_test(
        SyncMachine,
        settings=settings(
            max_examples=12,
            stateful_step_count=10,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
