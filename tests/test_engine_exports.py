"""Exports against the real server over HTTP: round trips, resume, checks, prefetch, sync."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode

import attrs
import pytest
import trio

from bulkops.engine.client import Client, open_client, same_account
from bulkops.engine.export_options import ExportOptions, ExportReport
from bulkops.engine.export_runs import since_from_run
from bulkops.engine.exports import resume_export, run_export
from bulkops.engine.feeds import open_pages, open_records
from bulkops.engine.tracker import ActivityTracker
from bulkops.errors import (
    ActivityFailed,
    BodyBrokenOff,
    ConfigError,
    NotFound,
    TransportError,
    single_errors,
)
from bulkops.server import queries
from bulkops.server.app import ApiState
from bulkops.server.seed import seed_contacts
from bulkops.wire.atom.feeds import parse_entry
from bulkops.wire.model import Activity, ContactListMember, ListInput
from tests.enginekit import HEADER, client_config, contact_rows
from tests.serverkit import HANG_GUARD, USER, RunningServer, make_state, start_server

FAST: dict[str, float] = {"poll_min": 0.05, "poll_max": 0.5}
COLUMNS = tuple(HEADER[1:])


# -- helpers -----------------------------------------------------------------------------------


def account_id(state: ApiState) -> int:
    row = (
        state.store.connection()
        .execute("SELECT id FROM account WHERE username = ?", (USER,))
        .fetchone()
    )
    return int(row[0])


def make_list(state: ApiState, name: str) -> str:
    created = queries.create_list(
        state.store.connection(), account_id(state), ListInput(name=name), 0
    )
    return created.id


def seed(state: ApiState, count: int, list_id: str, *, start: int = 0) -> None:
    seed_contacts(
        state.store.connection(),
        account_id(state),
        count,
        lists=[int(list_id)],
        seed=7,
        start=start,
        removed_ratio=0.0,
        do_not_mail_ratio=0.0,
    )


def member_emails(state: ApiState, list_id: str) -> set[str]:
    rows = state.store.connection().execute(
        "SELECT c.EmailAddress FROM membership m JOIN contact c ON c.id = m.contact_id"
        " WHERE m.list_id = ?",
        (int(list_id),),
    )
    return {row[0] for row in rows}


async def post_activity(client: Client, fields: Sequence[tuple[str, str]]) -> Activity:
    """POST an activity form and wait until it is final."""
    response = await client.request(
        "POST",
        "activities",
        content=urlencode(fields).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    created = parse_entry(response.content)
    assert isinstance(created, Activity)
    tracker = ActivityTracker(client, poll_min=0.05, poll_max=0.5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tracker.run)
        done = await tracker.wait(created.id, 1)
        nursery.cancel_scope.cancel()
    assert done.status == "COMPLETE", done
    return done


def data_of(rows: Sequence[Sequence[str]], header: Sequence[str] = HEADER) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
    return buffer.getvalue()


def read_output(path: Path, fmt: str) -> list[dict[str, str]]:
    text = path.read_text(encoding="utf-8")
    if fmt == "jsonl":
        return [json.loads(line) for line in text.splitlines()]
    return list(csv.DictReader(io.StringIO(text, newline="")))


async def export(
    client: Client, out: Path, run_dir: Path, stop: trio.Event | None = None, **options: object
) -> ExportReport:
    with trio.fail_after(HANG_GUARD):
        return await run_export(
            client,
            out,
            options=ExportOptions(**{**FAST, **options}),  # type: ignore[arg-type]
            run_dir=run_dir,
            stop=stop,
        )


def stopped() -> trio.Event:
    """A stop event already set: the run checkpoints and stops after its first page."""
    event = trio.Event()
    event.set()
    return event


# -- round trip --------------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["activity", "feed"])
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
async def test_imported_rows_come_back_exactly(
    server: RunningServer, tmp_path: Path, via: str, fmt: str
) -> None:
    """Import a generated file, export the list: exactly the imported rows, either way."""
    list_id = make_list(server.state, "Round trip")
    rows = contact_rows(120, seed=3)
    async with open_client(client_config(server)) as client:
        with trio.fail_after(HANG_GUARD):
            await post_activity(
                client,
                [
                    ("activityType", "SV_ADD"),
                    ("data", data_of(rows)),
                    ("lists", client.url(f"lists/{list_id}")),
                ],
            )
        report = await export(
            client,
            tmp_path / f"out.{fmt}",
            tmp_path / "run",
            list="Round trip",
            via=via,
            format=fmt,
            columns=COLUMNS,
        )
    assert report.state == "complete"
    assert (report.rows, report.expected_rows, report.count_check) == (120, 120, "match")
    assert report.header == HEADER
    got = read_output(tmp_path / f"out.{fmt}", fmt)
    expected = [dict(zip(HEADER, row, strict=True)) for row in rows]
    key = "Email Address"
    assert sorted(got, key=lambda r: r[key]) == sorted(expected, key=lambda r: r[key])
    if via == "activity":
        assert [r[key] for r in got] == sorted(r[key] for r in got)  # sortBy=EMAIL_ADDRESS
        assert report.expected_from == "TransactionCount"
        assert report.activity_id is not None
    else:
        assert report.expected_from == "ContactCount"
        assert report.detail_requests == 120  # the members feed carries only the address
        assert report.pages == 3
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".part"] == []  # noqa: ASYNC240


async def test_the_feed_default_needs_no_contact_requests(
    server: RunningServer, tmp_path: Path
) -> None:
    """Without --columns, the members feed's own column is exported, page by page."""
    list_id = make_list(server.state, "Big")
    seed(server.state, 260, list_id)
    async with open_client(client_config(server)) as client:
        report = await export(
            client, tmp_path / "m.csv", tmp_path / "run", list=list_id, via="feed"
        )
    assert report.header == ["Email Address"]
    assert (report.rows, report.pages, report.detail_requests) == (260, 6, 0)
    assert report.requests == 6 + 2  # the lists feed and the list, to resolve and count
    got = read_output(tmp_path / "m.csv", "csv")
    assert {r["Email Address"] for r in got} == member_emails(server.state, list_id)


# -- resume and atomicity ----------------------------------------------------------------------


@pytest.mark.parametrize("via", ["activity", "feed"])
async def test_an_interrupted_export_resumes_to_the_same_file(
    server: RunningServer, tmp_path: Path, via: str
) -> None:
    """Stopped after its first checkpoint, resumed: byte for byte the uninterrupted file."""
    list_id = make_list(server.state, "Resume")
    seed(server.state, 330, list_id)
    options = {"list": list_id, "via": via, "columns": ("all",) if via == "activity" else None}
    async with open_client(client_config(server)) as client:
        await export(client, tmp_path / "whole.csv", tmp_path / "r1", **options)
        target = tmp_path / "part.csv"
        target.write_bytes(b"the previous export\n")
        first = await export(
            client, target, tmp_path / "r2", stop=stopped(), checkpoint_rows=60, **options
        )
        assert first.state == "interrupted"
        assert first.exit_code == 3
        if via == "feed":
            assert first.rows == 50  # one page, then the stop
        else:
            assert (first.rows, first.activity_id is not None) == (0, True)  # stopped waiting
        assert target.read_bytes() == b"the previous export\n"  # untouched until complete
        (partial,) = [p for p in tmp_path.iterdir() if p.suffix == ".part"]  # noqa: ASYNC240
        with partial.open("ab") as handle:
            handle.write(b"garbage past the checkpoint")  # as a crash could leave it
        with trio.fail_after(HANG_GUARD):
            second = await resume_export(client, tmp_path / "r2")
    assert second.state == "complete"
    assert second.resumes == 1
    assert (second.rows, second.count_check) == (330, "match")
    assert target.read_bytes() == (tmp_path / "whole.csv").read_bytes()
    assert not partial.exists()


async def test_resuming_a_finished_export_reports_it_again(
    server: RunningServer, tmp_path: Path
) -> None:
    """Nothing is fetched or written twice."""
    list_id = make_list(server.state, "Done")
    seed(server.state, 10, list_id)
    async with open_client(client_config(server)) as client:
        report = await export(
            client, tmp_path / "d.csv", tmp_path / "run", list=list_id, via="feed"
        )
        before = client.statistics().requests
        again = await resume_export(client, tmp_path / "run")
        assert client.statistics().requests == before
    assert again == report


async def test_a_list_that_changes_during_the_export_is_a_reported_mismatch(
    server: RunningServer, tmp_path: Path
) -> None:
    """Members removed between two pages: the row count disagrees with ContactCount."""
    list_id = make_list(server.state, "Shrinks")
    seed(server.state, 150, list_id)
    async with open_client(client_config(server)) as client:
        first = await export(
            client, tmp_path / "s.csv", tmp_path / "run", stop=stopped(), list=list_id, via="feed"
        )
        assert first.rows == 50  # members come newest first: the 100 oldest are still to come
        (partial,) = [p for p in tmp_path.iterdir() if p.suffix == ".part"]  # noqa: ASYNC240
        with partial.open("ab") as handle:  # leftovers longer than the rest of the export
            handle.write(b"x@leftover.example\r\n" * 10_000)
        server.state.store.connection().execute(
            "DELETE FROM membership WHERE list_id = ? AND contact_id IN"
            " (SELECT contact_id FROM membership WHERE list_id = ? ORDER BY contact_id LIMIT 7)",
            (int(list_id), int(list_id)),
        )
        with trio.fail_after(HANG_GUARD):
            report = await resume_export(client, tmp_path / "run")
    assert (report.rows, report.expected_rows, report.count_check) == (143, 150, "mismatch")
    got = read_output(tmp_path / "s.csv", "csv")
    assert len(got) == 143
    assert {r["Email Address"] for r in got} == member_emails(server.state, list_id)
    assert report.exit_code == 2
    assert "ContactCount is 150" in report.message


async def test_a_run_directory_is_used_once(server: RunningServer, tmp_path: Path) -> None:
    """A second export into the same run directory is refused."""
    list_id = make_list(server.state, "Once")
    async with open_client(client_config(server)) as client:
        await export(client, tmp_path / "a.csv", tmp_path / "run", list=list_id, via="feed")
        with pytest.raises(ConfigError, match="already holds a run"):
            await export(client, tmp_path / "b.csv", tmp_path / "run", list=list_id, via="feed")
        with pytest.raises(ConfigError, match="no list"):
            await export(client, tmp_path / "c.csv", tmp_path / "run2", list="Nope", via="feed")


async def test_faults_on_the_wire_do_not_change_the_output(tmp_path: Path) -> None:
    """503s, 429s, dropped connections and lost answers are retried; the file is the same."""
    clean = make_state(tmp_path / "clean")
    faulty = make_state(tmp_path / "faulty", faults="503=0.1,429=0.1,reset=0.05,lost=0.05,seed=5")
    outputs = []
    try:
        async with trio.open_nursery() as nursery:
            for name, state in (("clean", clean), ("faulty", faulty)):
                list_id = make_list(state, "Faults")
                seed(state, 400, list_id)
                server = await start_server(nursery, state)
                async with open_client(client_config(server)) as client:
                    for via in ("feed", "activity"):
                        out = tmp_path / f"{name}-{via}.jsonl"
                        report = await export(
                            client, out, tmp_path / f"run-{name}-{via}", list=list_id, via=via
                        )
                        assert report.count_check == "match"
                        outputs.append(out.read_bytes())
                    if name == "faulty":
                        assert client.statistics().retries > 0
            nursery.cancel_scope.cancel()
    finally:
        clean.store.close()
        faulty.store.close()
    assert outputs[0] == outputs[2]
    assert outputs[1] == outputs[3]


class CuttingProxy:
    """A TCP proxy to the server that breaks responses off mid-body, ``times`` times.

    A response is cut ``after`` bytes past the first ``marker`` it carries (``<entry`` for a
    feed page, ``text/csv`` for an export file): the network failing, the server unchanged.
    """

    def __init__(self, server_port: int, *, marker: bytes, after: int, times: int) -> None:
        self.server_port = server_port
        self.marker = marker
        self.after = after
        self.times = times

    async def serve(self, task_status: trio.TaskStatus[int]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        upstream = await trio.open_tcp_stream("127.0.0.1", self.server_port)
        async with client, upstream, trio.open_nursery() as nursery:
            nursery.start_soon(self._pipe, client, upstream, False, nursery)
            nursery.start_soon(self._pipe, upstream, client, True, nursery)

    async def _pipe(
        self, source: trio.SocketStream, sink: trio.SocketStream, cut: bool, nursery: trio.Nursery
    ) -> None:
        window = b""
        countdown: int | None = None
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await source.receive_some(4096):
                if cut and self.times > 0:
                    if countdown is None and self.marker in window + data:
                        countdown = self.after + len(data) - (window + data).index(self.marker)
                        countdown -= len(window)
                    window = data[-len(self.marker) :]
                    if countdown is not None:
                        if countdown <= len(data):
                            self.times -= 1
                            await sink.send_all(data[: max(countdown, 1)])
                            nursery.cancel_scope.cancel()  # drop both directions
                            return
                        countdown -= len(data)
                await sink.send_all(data)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(("via", "marker"), [("feed", b"<entry"), ("activity", b"text/csv")])
async def test_bodies_that_break_off_are_read_again(
    server: RunningServer, nursery: trio.Nursery, tmp_path: Path, via: str, marker: bytes
) -> None:
    """Pages and export files cut mid-body by the network: read again, same output."""
    list_id = make_list(server.state, "Flaky")
    seed(server.state, 700, list_id)
    port = int(server.origin.rsplit(":", 1)[1])
    proxy = CuttingProxy(port, marker=marker, after=3000, times=3)
    proxy_port = await nursery.start(proxy.serve)
    flaky = attrs.evolve(server, origin=f"http://127.0.0.1:{proxy_port}")
    # Via the feed, the members feed's own column: every cut falls on a page, none on a GET
    # of a contact (those the client retries itself).
    options = {"list": list_id, "via": via, "columns": ("City",) if via == "activity" else None}
    async with open_client(client_config(server)) as client:
        clean = await export(client, tmp_path / "clean.csv", tmp_path / "r1", **options)
    async with open_client(client_config(flaky)) as client:
        cut = await export(client, tmp_path / "cut.csv", tmp_path / "r2", **options)
    assert proxy.times == 0  # every cut happened
    assert (cut.rows, cut.count_check) == (clean.rows, "match") == (700, "match")
    assert (tmp_path / "cut.csv").read_bytes() == (tmp_path / "clean.csv").read_bytes()


async def test_a_body_cut_while_it_streams_is_an_error_of_the_tree(
    server: RunningServer, nursery: trio.Nursery
) -> None:
    """The client maps a connection failing mid-body too: BodyBrokenOff, never httpx's."""
    list_id = make_list(server.state, "Cut")
    seed(server.state, 200, list_id)
    port = int(server.origin.rsplit(":", 1)[1])
    proxy = CuttingProxy(port, marker=b"<entry", after=3000, times=1)
    proxy_port = await nursery.start(proxy.serve)
    flaky = attrs.evolve(server, origin=f"http://127.0.0.1:{proxy_port}")
    received = 0

    async def read_all(client: Client) -> None:
        nonlocal received
        async with client.stream_download(f"lists/{list_id}/members", read_size=1024) as body:
            async for piece in body:
                received += len(piece)

    async with open_client(client_config(flaky)) as client:
        with trio.fail_after(HANG_GUARD), pytest.raises(BodyBrokenOff, match="broke off"):
            await read_all(client)
        assert client.statistics().transport_errors == 1
    assert proxy.times == 0
    assert received > 3000


# -- the walker --------------------------------------------------------------------------------


async def test_the_next_page_is_requested_before_this_one_is_read(
    server: RunningServer,
) -> None:
    """The next link is read from the page head; the successor is requested right then."""
    list_id = make_list(server.state, "Prefetch")
    seed(server.state, 500, list_id)
    async with open_client(client_config(server)) as client:
        with trio.fail_after(HANG_GUARD):
            async with open_pages(
                client, f"lists/{list_id}/members", prefetch=2, read_size=2048
            ) as walk:
                pages = [page async for page in walk]
    assert [p.number for p in pages] == list(range(1, 11))
    assert sum(len(p.records) for p in pages) == 500
    for page in pages[:-1]:
        assert page.next_requested_after is not None
        assert page.next_requested_after <= 2048 < page.size
    assert pages[-1].next_url is None
    assert pages[-1].next_requested_after is None


@pytest.mark.parametrize("prefetch", [0, 1, 3])
async def test_prefetch_is_bounded(server: RunningServer, prefetch: int) -> None:
    """A slow consumer lets the walk run exactly prefetch + 1 pages ahead, never more."""
    list_id = make_list(server.state, "Bounded")
    seed(server.state, 500, list_id)
    async with open_client(client_config(server)) as client:
        with trio.fail_after(HANG_GUARD):
            async with open_pages(client, f"lists/{list_id}/members", prefetch=prefetch) as walk:
                received = 0
                async for _page in walk:
                    received += 1
                    # Hold this page until the walk has fetched all it may ahead of it.
                    await walk.wait_fetched(min(10, received + prefetch + 1))
                stats = walk.statistics()
    assert (stats.started, stats.fetched, stats.received) == (10, 10, 10)
    assert stats.max_ahead == prefetch + 1


async def test_records_can_be_iterated_one_by_one(server: RunningServer) -> None:
    """open_records yields every member once, in feed order."""
    list_id = make_list(server.state, "Records")
    seed(server.state, 123, list_id)
    async with open_client(client_config(server)) as client:
        with trio.fail_after(HANG_GUARD):
            async with open_records(client, f"lists/{list_id}/members") as records:
                got = [record async for record in records]
    assert all(isinstance(r, ContactListMember) for r in got)
    ids = [int(r.contact_id) for r in got if isinstance(r, ContactListMember)]
    assert ids == sorted(ids, reverse=True)
    assert {r.email for r in got if isinstance(r, ContactListMember)} == member_emails(
        server.state, list_id
    )


# -- other collections and incremental sync ----------------------------------------------------


async def test_other_collections_export_their_records(
    server: RunningServer, tmp_path: Path
) -> None:
    """Lists and activities, as JSON Lines records and as flattened CSV."""
    list_id = make_list(server.state, "Customers")
    seed(server.state, 5, list_id)
    async with open_client(client_config(server)) as client:
        await export(client, tmp_path / "m.csv", tmp_path / "r0", list=list_id)  # an activity
        lists = await export(
            client, tmp_path / "l.jsonl", tmp_path / "r1", what="lists", via="feed"
        )
        acts = await export(
            client, tmp_path / "a.csv", tmp_path / "r2", what="activities", via="feed"
        )
    assert lists.rows == 4  # Active, Do Not Mail, Removed, Customers
    (customers,) = [
        r for r in read_output(tmp_path / "l.jsonl", "jsonl") if r["name"] == "Customers"
    ]
    assert customers["contact_count"] == 5
    assert lists.expected_rows is None
    assert lists.count_check == "unchecked"
    (activity,) = read_output(tmp_path / "a.csv", "csv")
    assert activity["type"] == "EXPORT_CONTACTS"
    assert activity["transaction_count"] == "5"
    assert acts.header[:3] == ["id", "type", "status"]


async def test_incremental_sync_starts_from_the_high_water_mark(
    server: RunningServer, tmp_path: Path
) -> None:
    """The second sync, from the first one's mark, sees exactly what changed since."""
    state = server.state
    list_id = make_list(state, "Sync")
    seed(state, 80, list_id)
    db = state.store.connection()
    latest = db.execute("SELECT max(last_update_time) FROM contact").fetchone()[0]
    async with open_client(client_config(server)) as client:
        first = await export(
            client,
            tmp_path / "1.jsonl",
            tmp_path / "r1",
            what="contacts",
            via="feed",
            updated_since="2000-01-01T00:00:00.000Z",
            list_type="active",
        )
        assert first.rows == 80
        assert first.high_water_mark is not None
        mark = datetime.fromisoformat(first.high_water_mark.replace("Z", "+00:00"))
        assert int(mark.timestamp() * 1000) == latest
        changed = [row[0] for row in db.execute("SELECT id FROM contact ORDER BY id LIMIT 3")]
        db.execute(
            f"UPDATE contact SET last_update_time = ? WHERE id IN ({','.join('?' * 3)})",
            (latest + 1000, *changed),
        )
        second = await export(
            client,
            tmp_path / "2.jsonl",
            tmp_path / "r2",
            what="contacts",
            via="feed",
            updated_since=since_from_run(tmp_path / "r1"),
            list=list_id,
        )
    emails = {r["Email Address"] for r in read_output(tmp_path / "2.jsonl", "jsonl")}
    expected = {
        row[0]
        for row in db.execute(
            "SELECT EmailAddress FROM contact WHERE last_update_time >= ?", (latest,)
        )
    }
    assert emails == expected
    assert len(expected) >= 3
    assert second.high_water_mark is not None
    assert second.high_water_mark > first.high_water_mark
    assert second.header == ["Email Address", "Email Type"]


@pytest.mark.parametrize(
    ("recorded", "current", "same"),
    [
        (
            "http://127.0.0.1:5000/ws/customers/demo/",
            "http://127.0.0.1:6000/ws/customers/demo/",
            True,
        ),
        (
            "http://localhost:5000/ws/customers/demo/",
            "http://127.0.0.1:6000/ws/customers/demo/",
            True,
        ),
        (
            "http://127.0.0.1:5000/ws/customers/demo/",
            "http://127.0.0.1:6000/ws/customers/joe/",
            False,
        ),
        (
            "https://api.example.com/ws/customers/demo/",
            "https://api.example.com:444/ws/customers/demo/",
            False,
        ),
        (
            "https://a.example.com/ws/customers/demo/",
            "https://b.example.com/ws/customers/demo/",
            False,
        ),
    ],
)
def test_a_run_resumes_only_against_its_account(recorded: str, current: str, same: bool) -> None:
    """The embedded server's port changes between runs; nothing else may."""
    assert same_account(recorded, current) is same


def test_nursery_groups_become_errors_of_the_tree() -> None:
    """One error, or several bulkops errors, come out plain; anything else stays a group."""
    with pytest.raises(ConfigError, match="one"), single_errors():
        raise ExceptionGroup("g", [ConfigError("one")])
    with pytest.raises(TransportError, match="first") as caught, single_errors():
        raise ExceptionGroup(
            "g", [TransportError("first"), ExceptionGroup("h", [NotFound(404, "x")])]
        )
    assert caught.value.__notes__ == [f"also: {NotFound(404, 'x')!r}"]
    with pytest.raises(ExceptionGroup), single_errors():
        raise ExceptionGroup("g", [TransportError("a"), ValueError("bug")])
    with pytest.raises(ValueError, match="alone"), single_errors():  # one of anything is itself
        raise ExceptionGroup("g", [ExceptionGroup("h", [ValueError("alone")])])
    with pytest.raises(KeyboardInterrupt), single_errors():  # Ctrl-C beside an error of ours
        raise BaseExceptionGroup("g", [KeyboardInterrupt(), TransportError("a")])


def test_since_from_run_needs_a_finished_export(tmp_path: Path) -> None:
    """A directory without an export report has no high-water mark."""
    with pytest.raises(ConfigError, match="no export report"):
        since_from_run(tmp_path)


# -- options -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "name the list"),
        ({"what": "lists", "via": "activity"}, "members only"),
        ({"what": "contacts", "via": "feed", "updated_since": "2020-01-01"}, "exactly one"),
        (
            {"what": "contacts", "via": "feed", "updated_since": "yesterday", "list": "1"},
            "`updated_since`",
        ),
        ({"what": "contacts", "via": "feed", "list": "1"}, "with `updated_since`"),
        ({"what": "lists", "via": "feed", "list": "1"}, "does not apply"),
        ({"what": "lists", "via": "feed", "columns": ("City",)}, "contact exports"),
        ({"list": "1", "columns": ("Shoe Size",)}, "unknown column"),
        ({"what": "collection", "via": "feed"}, "`collection`"),
        ({"list": "1", "prefetch": 9}, "prefetch"),
        ({"list": "1", "checkpoint_rows": 0}, "checkpoint_rows"),
        ({"list": "1", "format": "xml"}, "csv or jsonl"),
    ],
)
def test_contradictory_options_are_refused(options: dict[str, object], message: str) -> None:
    """Options that make no sense are a ConfigError naming the problem."""
    with pytest.raises(ConfigError, match=message):
        ExportOptions(**options)  # type: ignore[arg-type]


def test_options_survive_the_journal() -> None:
    """to_meta/from_meta is the identity (resume repeats the run)."""
    options = ExportOptions(
        what="contacts",
        via="feed",
        list_type="removed",
        updated_since="2020-01-01T00:00:00.000Z",
        columns=("City",),
        format="jsonl",
    )
    assert ExportOptions.from_meta(json.loads(json.dumps(options.to_meta()))) == options


def test_default_columns_follow_the_path() -> None:
    """All columns via an activity; the feed's own columns via the feed."""
    headers = [c.export_header for c in ExportOptions(list="1").resolved_columns()]
    assert headers[:3] == ["Email Address", "Email Type", "First Name"]
    assert len(headers) == 34
    member = ExportOptions(list="1", via="feed").resolved_columns()
    assert [c.export_header for c in member] == ["Email Address"]
    sync = ExportOptions(
        what="contacts", via="feed", list_type="active", updated_since="2020-01-01"
    ).resolved_columns()
    assert [c.export_header for c in sync] == ["Email Address", "Email Type"]


async def test_a_stalled_export_resumes_with_a_longer_stall_timeout(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """An export activity that stays RUNNING past the stall timeout stops the run; resuming
    with ``stall_timeout`` longer than the stall finishes it (the run's own would stall again)."""
    state = make_state(tmp_path / "srv", faults="stall=1.0:2,seed=1")
    server = await start_server(nursery, state)
    list_id = make_list(state, "Slow")
    seed(state, 30, list_id)
    async with open_client(client_config(server)) as client:
        with pytest.raises(ActivityFailed, match="no progress"):
            await export(
                client, tmp_path / "s.csv", tmp_path / "run", list=list_id, stall_timeout=0.3
            )
        with trio.fail_after(HANG_GUARD):
            report = await resume_export(client, tmp_path / "run", stall_timeout=HANG_GUARD)
    assert report.state == "complete"
    assert report.rows == 30
    assert len(read_output(tmp_path / "s.csv", "csv")) == 30
    state.store.close()
