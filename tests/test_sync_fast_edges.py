"""Edge cases of the fast plan of ``sync`` (an outside tester's attempts to break its promise).

The promise (README "Keeping a list in sync"): a later sync that reads only the records whose
bytes changed has exactly the outcomes of the full plan (per row: kind and line; removed
members; counts) and leaves the list in the same state. Each case syncs a sequence of files
against the real server; before each sync a full dry run (``full``) on the identical server
state is the reference, and after the last sync a full dry run must find nothing to do.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from bulkops.engine import sync_records, sync_run
from bulkops.engine.clear import run_clear
from bulkops.engine.client import Client, open_client
from bulkops.engine.import_options import ImportOptions
from bulkops.engine.imports import run_import
from bulkops.engine.journal import Journal
from bulkops.engine.lists import resolve_lists
from bulkops.engine.sync import resume_sync, run_sync
from bulkops.engine.sync_report import SyncOptions, SyncReport
from bulkops.stream.options import ReadOptions
from tests.enginekit import client_config
from tests.serverkit import make_state, start_server
from tests.test_server_lists import contact_body
from tests.test_sync_stateful import ATOM_XML, FAST, server_view

KINDS = ("added", "updated", "opted_out", "rejected", "duplicate", "failed")
H = b"Email Address,First Name,City"


def csv_bytes(*lines: bytes, header: bytes = H, end: bytes = b"\n", last: bool = True) -> bytes:
    """A file of ``header`` and ``lines`` joined by ``end`` (a final ``end`` when ``last``)."""
    text = end.join([header, *lines])
    return text + end if last else text


def rows(count: int, first: str = "F", start: int = 0) -> list[bytes]:
    """``count`` valid rows ``c{i}@example.com,{first}{i},City{i}``."""
    return [f"c{i}@example.com,{first}{i},City{i}".encode() for i in range(start, count)]


class Bench:
    """A server state with the list ``News``, its own ``BULKOPS_HOME``, and syncs checked
    against the full plan."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="bulkops-fast-edges-"))
        self.home_before = os.environ.get("BULKOPS_HOME")
        os.environ["BULKOPS_HOME"] = str(self.tmp / "home")
        self.state = make_state(self.tmp)
        self.runs = 0
        self.fast: list[bool] = []
        self.on_server(self._create_list)

    def close(self) -> None:
        if self.home_before is None:
            os.environ.pop("BULKOPS_HOME", None)
        else:
            os.environ["BULKOPS_HOME"] = self.home_before
        self.state.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def on_server(self, job: Callable[[Client], Awaitable[Any]]) -> Any:
        async def main() -> object:
            async with trio.open_nursery() as nursery:
                server = await start_server(nursery, self.state)
                async with open_client(client_config(server)) as client:
                    with trio.fail_after(120):
                        result = await job(client)
                nursery.cancel_scope.cancel()
            return result

        return trio.run(main)

    async def _create_list(self, client: Client) -> None:
        await resolve_lists(client, ["News"], create=True)

    def options(self, read: ReadOptions | None = None, **kwargs: Any) -> SyncOptions:
        send = ImportOptions(read=read or ReadOptions(), **FAST)  # type: ignore[arg-type]
        kwargs.setdefault("remove_missing", True)
        kwargs.setdefault("yes", True)
        return SyncOptions(list="News", send=send, **kwargs)

    def write(self, data: bytes) -> Path:
        self.runs += 1
        path = self.tmp / f"file{self.runs}.csv"
        path.write_bytes(data)
        return path

    def plan_full(
        self, path: Path, read: ReadOptions | None, name: str, **kwargs: Any
    ) -> tuple[Any, dict[str, str]]:
        """The full plan of ``path`` on the server as it is (a dry run: nothing changes)."""
        options = self.options(read, dry_run=True, full=True, **kwargs)
        run_dir = self.tmp / name

        async def plan(client: Client) -> SyncReport:
            return await run_sync(client, path, options=options, run_dir=run_dir)

        report = self.on_server(plan)
        return report, outcomes(run_dir, "to_remove")

    def sync(self, data: bytes, read: ReadOptions | None = None, **kwargs: Any) -> SyncReport:
        """Sync ``data``; its plan and outcome files must be the full plan's."""
        path = self.write(data)
        reference, files = self.plan_full(path, read, f"ref{self.runs}", **kwargs)
        run_dir = self.tmp / f"run{self.runs}"
        options = self.options(read, **kwargs)

        async def go(client: Client) -> SyncReport:
            return await run_sync(client, path, options=options, run_dir=run_dir)

        report = self.on_server(go)
        return self.check(report, run_dir, reference, files)

    def check(
        self, report: SyncReport, run_dir: Path, reference: Any, files: dict[str, str]
    ) -> SyncReport:
        assert report.state == "complete", report.message
        assert report.counts.balanced
        meta = Journal(run_dir, create=False, read_only=True).meta()
        self.fast.append(bool(meta.get("fast")))
        assert replace(report.plan, members=0) == replace(reference.plan, members=0)
        assert outcomes(run_dir, "removed") == files
        return report

    def settled(self, data: bytes | None = None, read: ReadOptions | None = None) -> None:
        """A full plan of the last file (or ``data``) now has nothing to send or remove."""
        path = self.tmp / f"file{self.runs}.csv" if data is None else self.write(data)
        report, _files = self.plan_full(path, read, f"settled{self.runs}")
        plan = report.plan
        assert (plan.added, plan.updated, plan.put, plan.remove) == (0, 0, 0, 0), plan

    # -- out of band -----------------------------------------------------------------------

    def contact(self, key: str) -> dict[str, Any]:
        return server_view(self.state)[key]

    def put(self, key: str, body: bytes) -> None:
        cid = self.contact(key)["id"]

        async def job(client: Client) -> None:
            await client.request("PUT", f"contacts/{cid}", content=body, headers=ATOM_XML)

        self.on_server(job)

    def opt_out(self, key: str) -> None:
        cid = self.contact(key)["id"]

        async def job(client: Client) -> None:
            await client.request("DELETE", f"contacts/{cid}")

        self.on_server(job)


def outcomes(run_dir: Path, removed: str) -> dict[str, str]:
    files = {kind: (run_dir / f"{kind}.csv").read_text() for kind in KINDS}
    files["removed"] = (run_dir / f"{removed}.csv").read_text()
    return files


@pytest.fixture
def bench() -> Iterator[Bench]:
    made = Bench()
    try:
        yield made
    finally:
        made.close()


def run_files(bench: Bench, files: Sequence[bytes], fast_at: Sequence[int] = ()) -> Bench:
    """Sync each file in turn (each checked), then the list must be settled; the syncs at
    ``fast_at`` must have taken the fast plan."""
    for data in files:
        bench.sync(data)
    bench.settled()
    for at in fast_at:
        assert bench.fast[at], (at, bench.fast)
    return bench


# -- the file's bytes ---------------------------------------------------------------------

BASE = rows(12)

CASES: dict[str, list[bytes]] = {
    "shuffled": [csv_bytes(*BASE), csv_bytes(*BASE[5:], *reversed(BASE[:5]))],
    "moved far": [csv_bytes(*rows(90)), csv_bytes(*rows(90)[1:], rows(90)[0])],
    "duplicate winner deleted": [
        csv_bytes(*BASE, b"c1@example.com,Later,Rome"),
        csv_bytes(*BASE),
    ],
    "duplicate winner deleted, then back": [
        csv_bytes(*BASE, b"c1@example.com,Later,Rome"),
        csv_bytes(*BASE),
        csv_bytes(*BASE, b"c1@example.com,Later,Rome"),
    ],
    "duplicate winner moved to another email": [
        csv_bytes(*BASE, b"c1@example.com,Later,Rome"),
        csv_bytes(*BASE, b"zz@example.com,Later,Rome"),
    ],
    "duplicate winner edited to an earlier row's bytes": [
        csv_bytes(*BASE, b"c1@example.com,Later,Rome"),
        csv_bytes(*BASE, BASE[1]),
        csv_bytes(*BASE),
    ],
    "duplicate line repeated verbatim": [
        csv_bytes(*BASE),
        csv_bytes(*BASE, BASE[3], BASE[3]),
        csv_bytes(*BASE, BASE[3]),
        csv_bytes(*BASE),
    ],
    "duplicate in another spelling": [
        csv_bytes(*BASE),
        csv_bytes(*BASE, b"C2@EXAMPLE.COM,F2,City2"),
        csv_bytes(*BASE),
    ],
    "email case changes": [
        csv_bytes(*BASE),
        csv_bytes(b"C0@Example.com,F0,City0", *BASE[1:]),
        csv_bytes(*BASE),
    ],
    "whitespace only": [
        csv_bytes(*BASE),
        csv_bytes(b"c0@example.com, F0 ,City0  ", b"  c1@example.com,F1,City1", *BASE[2:]),
        csv_bytes(*BASE),
    ],
    "quoted two-line field edited on its second line": [
        csv_bytes(*BASE[:3], b'c3@example.com,"two\nlines",City3', *BASE[4:]),
        csv_bytes(*BASE[:3], b'c3@example.com,"two\nLINES",City3', *BASE[4:]),
        csv_bytes(*BASE[:3], b'c3@example.com,"two\nLINES",City3', *BASE[4:7], *BASE[8:]),
    ],
    "a two-line record before unchanged rows gains a line": [
        csv_bytes(b'c0@example.com,"a\nb",X', *BASE[1:]),
        csv_bytes(b'c0@example.com,"a\n\nb",X', *BASE[1:]),
        csv_bytes(b'c0@example.com,"a\n\nb",X', *BASE[1:6], b"c5@example.com,New,X", *BASE[6:]),
    ],
    "quoting added, same values": [
        csv_bytes(*BASE),
        csv_bytes(b'"c0@example.com","F0","City0"', *BASE[1:]),
        csv_bytes(*BASE),
    ],
    "CRLF whole file": [csv_bytes(*BASE), csv_bytes(*BASE, end=b"\r\n"), csv_bytes(*BASE)],
    "CRLF one line": [
        csv_bytes(*BASE),
        csv_bytes(*BASE[:4], BASE[4] + b"\r", *BASE[5:]),
        csv_bytes(*BASE[:4], BASE[4] + b"\r", *BASE[5:8]),
        csv_bytes(*BASE),
    ],
    "CRLF last line without newline": [
        csv_bytes(*BASE, end=b"\r\n"),
        csv_bytes(*BASE, end=b"\r\n", last=False),
        csv_bytes(*BASE, end=b"\r\n"),
    ],
    "BOM added and removed": [
        csv_bytes(*BASE),
        b"\xef\xbb\xbf" + csv_bytes(*BASE),
        b"\xef\xbb\xbf" + csv_bytes(*BASE[:10]),
        csv_bytes(*BASE[:10]),
    ],
    "last line without a newline, then with": [
        csv_bytes(*BASE, last=False),
        csv_bytes(*BASE),
        csv_bytes(*BASE, last=False),
        csv_bytes(*BASE[:-1], b"c11@example.com,Other,City11", last=False),
    ],
    "header-only file after a full one": [csv_bytes(*BASE), csv_bytes(), csv_bytes(*BASE)],
    "header without a newline after a full one": [csv_bytes(*BASE), H, csv_bytes(*BASE)],
    "column renamed": [
        csv_bytes(*BASE),
        csv_bytes(*BASE, header=b"Email Address,FirstName,City"),
        csv_bytes(*BASE),
    ],
    "columns reordered": [
        csv_bytes(*BASE),
        csv_bytes(
            *(b",".join([r.split(b",")[0], r.split(b",")[2], r.split(b",")[1]]) for r in BASE),
            header=b"Email Address,City,First Name",
        ),
        csv_bytes(*BASE),
    ],
    "column added": [
        csv_bytes(*BASE),
        csv_bytes(*(r + b",L" for r in BASE), header=H + b",Last Name"),
        csv_bytes(*BASE),
    ],
    "header padded with spaces": [
        csv_bytes(*BASE),
        csv_bytes(*BASE, header=b"Email Address, First Name,City "),
        csv_bytes(*BASE[:5], b"c5@example.com,X,Y", *BASE[6:]),
    ],
    "semicolons": [
        csv_bytes(*BASE),
        csv_bytes(*(r.replace(b",", b";") for r in BASE), header=H.replace(b",", b";")),
        csv_bytes(*(r.replace(b",", b";") for r in BASE[1:]), header=H.replace(b",", b";")),
    ],
    "an Excel sep= line added": [
        csv_bytes(*BASE),
        b"sep=,\n" + csv_bytes(*BASE),
        b"sep=,\n" + csv_bytes(*BASE[1:]),
        csv_bytes(*BASE[1:]),
    ],
    "trailing spaces after a quoted field": [
        csv_bytes(*BASE),
        csv_bytes(b'"c0@example.com" ,F0,City0', *BASE[1:]),
        csv_bytes(*BASE),
    ],
    "blank lines between rows": [
        csv_bytes(*BASE[:3], b"", *BASE[3:]),
        csv_bytes(*BASE[:3], b"", b"", *BASE[3:]),
        csv_bytes(*BASE[:3], *BASE[3:]),
    ],
    "rejected rows stay, become valid, valid become invalid": [
        csv_bytes(*BASE, b"bad-address,X,Y", b"c20@example.com,only two"),
        csv_bytes(
            *BASE[:2],
            b"c2@example.com,only two",
            *BASE[3:],
            b"bad-address,X,Y",
            b"c20@example.com,now,three",
        ),
        csv_bytes(*BASE, b"bad-address,X,Y", b"c20@example.com,only two"),
    ],
    "a rejected row after the winner of its email": [
        csv_bytes(*BASE),
        csv_bytes(*BASE, b"c1@example.com,only two"),
        csv_bytes(*BASE, b"c1@example.com,only two", b"c1@example.com,F1,City1"),
    ],
    "rows emptied": [
        csv_bytes(*BASE),
        csv_bytes(b"c0@example.com,,", *BASE[1:]),
        csv_bytes(*BASE),
    ],
    "all rows deleted but one, then back": [
        csv_bytes(*BASE),
        csv_bytes(BASE[4]),
        csv_bytes(*BASE),
    ],
}


@pytest.mark.parametrize("name", list(CASES))
def test_file_edits(bench: Bench, name: str) -> None:
    """Every sync of the sequence has the full plan's outcomes; the list ends settled."""
    run_files(bench, CASES[name])


SMALL_BLOCK_CASES = [
    "duplicate line repeated verbatim",
    "a two-line record before unchanged rows gains a line",
]


@pytest.mark.parametrize("block", [7])
@pytest.mark.parametrize("name", SMALL_BLOCK_CASES)
def test_file_edits_read_in_small_blocks(
    bench: Bench, monkeypatch: pytest.MonkeyPatch, name: str, block: int
) -> None:
    """The same with the file read a few bytes at a time (units of dirty emails found again
    from block restarts, some inside quoted records)."""
    monkeypatch.setattr(sync_records, "BLOCK", block)
    quoted = [
        csv_bytes(*BASE[:2], b'c2@example.com,"x\ny\nz",C', *BASE[3:], b'c2@example.com,"p\nq",C'),
        csv_bytes(*BASE[:2], b'c2@example.com,"x\ny\nz",C', *BASE[3:]),
        csv_bytes(*BASE[:2], b'c2@example.com,"x\ny\nz",C', *BASE[3:], b'c2@example.com,"p\nq",C'),
    ]
    run_files(bench, [*CASES[name], *quoted])


def test_the_fast_plan_is_taken_for_plain_edits(bench: Bench) -> None:
    """Not vacuous: a reordered file, an edited row and a moved record take the fast plan."""
    run_files(
        bench,
        [
            csv_bytes(*BASE),
            csv_bytes(*BASE[5:], *BASE[:5]),
            csv_bytes(*BASE[5:], b"c0@example.com,Z,Z", *BASE[1:5]),
        ],
        fast_at=(1, 2),
    )


# -- reading options ------------------------------------------------------------------------


SEMI = H.replace(b",", b";")


@pytest.mark.parametrize(
    ("read", "header"),
    [
        pytest.param(
            ReadOptions(mapping=(("First Name", "City"), ("City", "FirstName"))),
            H,
            id="map swapped",
        ),
        pytest.param(
            ReadOptions(mapping=(("City", "ignore"),)),
            H,
            id="map drops a column",
        ),
        pytest.param(
            ReadOptions(encoding="cp1252"),
            H,
            id="cp1252",
        ),
        pytest.param(
            ReadOptions(encoding="latin-1"),
            H,
            id="latin-1",
        ),
        pytest.param(
            ReadOptions(delimiter=";"),
            SEMI,
            id="semicolon named",
        ),
        pytest.param(ReadOptions(delimiter=","), H, id="comma named"),
    ],
)
def test_reading_options_changed(bench: Bench, read: ReadOptions, header: bytes) -> None:
    """A file synced with the default options, then with ``read`` (and one row edited), then
    again with the defaults: each sync has the full plan's outcomes; the list ends settled
    (as the options read the file)."""
    sep = header[len(b"Email Address") : len(b"Email Address") + 1]
    base = [r.replace(b",", sep) for r in BASE]
    zoe = "c4@example.com,Zoë,Québec".replace(",", sep.decode()).encode()
    data = csv_bytes(*base[:4], zoe, *base[5:], header=header)
    edited = csv_bytes(
        *base[:4], zoe.replace(b"Qu", b"QU").replace(b"Zo", b"ZO"), *base[5:], header=header
    )
    bench.sync(data)
    bench.sync(edited, read)
    bench.settled(read=read)
    bench.sync(data)
    bench.settled()


# -- out-of-band server changes to contacts whose rows did not change ----------------------


def test_server_edits_between_syncs(bench: Bench) -> None:
    """A contact edited, one taken off the list, one opted out, one edited to the file's own
    values; their rows unchanged: the fast plan sees them all, as the full one."""
    data = csv_bytes(*BASE)
    bench.sync(data)
    bench.put("c1@example.com", contact_body(None, None, source=None, FirstName="z", City="z"))
    bench.put("c2@example.com", contact_body(None, [], source=None))
    bench.opt_out("c3@example.com")
    bench.put("c4@example.com", contact_body(None, None, source=None, FirstName="F4"))
    report = bench.sync(data)
    assert report.counts.opted_out == 1
    assert report.counts.updated + report.counts.added == 2
    bench.sync(data)
    bench.settled()
    assert bench.fast[1:] == [True, True]


def test_server_edit_of_a_duplicate_loser(bench: Bench) -> None:
    """The server takes the value of an earlier (duplicate) row; the winner is unchanged."""
    data = csv_bytes(*BASE, b"c1@example.com,Later,Rome")
    bench.sync(data)
    bench.put("c1@example.com", contact_body(None, None, source=None, FirstName="F1"))
    bench.sync(data)
    bench.settled()


def test_member_removed_on_server_then_row_deleted(bench: Bench) -> None:
    """A member taken off the list on the server, and its row deleted from the file."""
    bench.sync(csv_bytes(*BASE))
    bench.put("c6@example.com", contact_body(None, [], source=None))
    bench.sync(csv_bytes(*BASE[:6], *BASE[7:]))
    bench.settled()


def test_contact_added_to_the_list_on_server(bench: Bench) -> None:
    """A contact that is in no row put on the list on the server (remove_missing)."""
    bench.sync(csv_bytes(*BASE))
    bench.sync(csv_bytes(*BASE[:11]))
    list_uri = server_lists(bench)
    bench.put("c11@example.com", contact_body(None, [list_uri], source=None))
    assert server_view(bench.state)["c11@example.com"]["member"]
    bench.sync(csv_bytes(*BASE[:11]))
    bench.settled()
    assert not server_view(bench.state)["c11@example.com"]["member"]


def server_lists(bench: Bench) -> str:
    async def job(client: Client) -> str:
        (found,) = await resolve_lists(client, ["News"], create=False)
        return str(found.uri)

    return str(bench.on_server(job))


def test_without_remove_missing_then_with(bench: Bench) -> None:
    """Syncs without ``remove_missing`` then with it: members the file lost are removed."""
    bench.sync(csv_bytes(*BASE), remove_missing=False)
    bench.sync(csv_bytes(*BASE[:8]), remove_missing=False)
    bench.sync(csv_bytes(*BASE[:8]), remove_missing=True)
    bench.settled()
    members = {k for k, c in server_view(bench.state).items() if c["member"]}
    assert members == {f"c{i}@example.com" for i in range(8)}


# -- interrupted syncs ------------------------------------------------------------------------


class Crash(BaseException):
    """Raised at a crash point (as a SIGKILL would stop the sync there)."""


def sync_crashing_at(
    bench: Bench, monkeypatch: pytest.MonkeyPatch, path: Path, run_dir: Path, point: str
) -> None:
    """A sync of ``path`` into ``run_dir`` stopped by a :class:`Crash` at the crash point
    ``point`` (checked); the crash points do nothing again afterwards."""
    options = bench.options()

    def crash(name: str) -> None:
        if name == point:
            raise Crash(name)

    monkeypatch.setattr(sync_run, "crash_point", crash)

    async def go(client: Client) -> SyncReport:
        return await run_sync(client, path, options=options, run_dir=run_dir)

    with pytest.raises(BaseException) as caught:  # noqa: PT011 - a Crash, maybe grouped
        bench.on_server(go)
    assert "Crash" in repr(caught.value) or isinstance(caught.value, Crash)
    monkeypatch.setattr(sync_run, "crash_point", lambda _name: None)


@pytest.mark.parametrize("point", ["planned", "puts-done", "confirmed"])
def test_interrupted_fast_sync_resumed_then_another(
    bench: Bench, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    """A fast sync stopped at ``point``, resumed in-process (its state lost with the crash),
    then a further sync: each with the full plan's outcomes; the list settled."""
    first = csv_bytes(*BASE, b"c1@example.com,Later,Rome")
    bench.sync(first)
    second = csv_bytes(b"c0@example.com,,", *BASE[1:3], *BASE[4:], b"n1@example.com,N,", BASE[5])
    path = bench.write(second)
    reference, files = bench.plan_full(path, None, "ref-crash")
    run_dir = bench.tmp / "crashed"
    sync_crashing_at(bench, monkeypatch, path, run_dir, point)

    async def again(client: Client) -> SyncReport:
        return await resume_sync(client, run_dir)

    report = bench.on_server(again)
    bench.check(report, run_dir, reference, files)
    assert bench.fast[-1]
    bench.settled(second)
    bench.sync(csv_bytes(*BASE[:3], b"c3@example.com,Back,X", *BASE[4:]))
    bench.settled()
    bench.sync(second)
    bench.settled()


# -- random files -----------------------------------------------------------------------------

emails = st.sampled_from(["a@x.org", "A@x.org", "b@x.org", "c@x.org", "bad", " a@x.org"])
cell = st.sampled_from(["", "v", " v", "w", '"q"', '"two\nlines"'])
line = st.tuples(emails, cell, cell, st.sampled_from([b"\n", b"\r\n"]))
files_of = st.lists(line, max_size=6)


def render(lines: list[tuple[str, str, str, bytes]], last: bool) -> bytes:
    out = [H + b"\n"]
    for email, first, city, end in lines:
        out.append(f"{email},{first},{city}".encode() + end)
    data = b"".join(out)
    return data if last else data.rstrip(b"\r\n")


@given(
    files=st.lists(st.tuples(files_of, st.booleans()), min_size=2, max_size=3),
)
@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_random_small_files(files: list[tuple[list[tuple[str, str, str, bytes]], bool]]) -> None:
    """Random small files (mixed line ends, quotes, two-line fields, duplicates, spellings,
    bad rows): every sync has the full plan's outcomes; the list ends settled."""
    made = Bench()
    try:
        for lines, last in files:
            made.sync(render(lines, last))
        made.settled()
    finally:
        made.close()


# -- plans that send nothing between two syncs -----------------------------------------------


def dry_run(bench: Bench, data: bytes, **kwargs: Any) -> SyncReport:
    """A sync of ``data`` that sends nothing (a dry run, or one refused by ``max_remove``)."""
    path = bench.write(data)
    options = bench.options(**kwargs)

    async def go(client: Client) -> SyncReport:
        return await run_sync(client, path, options=options, run_dir=bench.tmp / f"dry{bench.runs}")

    return bench.on_server(go)  # type: ignore[no-any-return]


def test_server_edit_seen_by_a_dry_run_then_synced(bench: Bench) -> None:
    """A contact edited on the server, a dry run (fast) in between: the next sync still
    restores it."""
    data = csv_bytes(*BASE)
    bench.sync(data)
    bench.put("c1@example.com", contact_body(None, None, source=None, FirstName="z", City="z"))
    bench.opt_out("c3@example.com")
    reference, files = bench.plan_full(bench.tmp / f"file{bench.runs}.csv", None, "ref-dry")
    dry = dry_run(bench, data, dry_run=True)
    plan = dry.plan
    assert (plan.updated, plan.opted_out) == (1, 1)
    assert replace(plan, members=0) == replace(reference.plan, members=0)
    assert outcomes(bench.tmp / f"dry{bench.runs}", "to_remove") == files
    meta = Journal(bench.tmp / f"dry{bench.runs}", create=False, read_only=True).meta()
    assert meta.get("fast")
    report = bench.sync(data)
    assert (report.counts.updated, report.counts.opted_out) == (1, 1)
    bench.settled()


def test_server_edit_seen_by_a_refused_sync_then_synced(bench: Bench) -> None:
    """A sync refused by ``max_remove`` (after its plan) in between."""
    data = csv_bytes(*BASE)
    bench.sync(data)
    bench.put("c1@example.com", contact_body(None, None, source=None, FirstName="z"))
    refused = dry_run(bench, csv_bytes(*BASE[:2]), yes=False, max_remove="1")
    assert refused.state == "refused"
    report = bench.sync(data)
    assert report.counts.updated == 1
    bench.settled()


def test_dry_run_of_another_file_in_between(bench: Bench) -> None:
    """A dry run of an edited file, then a sync of the first file, then of the edited one."""
    first = csv_bytes(*BASE)
    second = csv_bytes(b"c0@example.com,New,", *BASE[2:], b"n@example.com,N,N")
    bench.sync(first)
    dry_run(bench, second, dry_run=True)
    bench.sync(first)
    bench.sync(second)
    bench.settled()


def test_abandoned_sync_then_a_new_one(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fast sync stopped after its adds and never resumed; a new sync of the same file
    (its adds already on the server) and then of the first file."""
    first = csv_bytes(*BASE)
    bench.sync(first)
    second = csv_bytes(b"c0@example.com,Zed,", *BASE[1:5], b"n1@example.com,N,", *BASE[6:])
    path = bench.write(second)
    sync_crashing_at(bench, monkeypatch, path, bench.tmp / "abandoned", "adds-done")
    bench.sync(second)
    bench.settled()
    bench.sync(first)
    bench.settled()


@pytest.mark.parametrize(("kept", "new"), [(18, 0), (17, 0), (17, 10)])
def test_max_remove_decided_as_the_full_plan(bench: Bench, kept: int, new: int) -> None:
    """The default ``max_remove`` (10% of the list) refuses or allows a fast sync exactly as
    it does the full plan (``members`` is the list before the sync in both)."""
    many = rows(20)
    bench.sync(csv_bytes(*many))
    data = csv_bytes(*many[:kept], *rows(20 + new, "N", 20))
    path = bench.write(data)
    reference, _files = bench.plan_full(path, None, "ref-limit", yes=False)
    options = bench.options(yes=False)

    async def go(client: Client) -> SyncReport:
        return await run_sync(client, path, options=options, run_dir=bench.tmp / "limit")

    report = bench.on_server(go)
    expected = "refused" if 20 - kept > 2 else "complete"
    assert reference.state == ("refused" if expected == "refused" else "dry-run")
    assert report.state == expected
    assert report.plan.remove == reference.plan.remove
    if expected == "refused":
        assert report.plan.members == reference.plan.members == 20
        assert report.message == reference.message
    bench.sync(data)
    bench.settled()


def test_email_spelling_changed_on_server(bench: Bench) -> None:
    """A contact's address re-spelled on the server (its row unchanged): updated back."""
    data = csv_bytes(*BASE)
    bench.sync(data)
    bench.put("c2@example.com", contact_body("C2@EXAMPLE.com", None, source=None))
    assert server_view(bench.state)["c2@example.com"]["email"] == "C2@EXAMPLE.com"
    report = bench.sync(data)
    assert report.counts.updated == 1
    bench.settled()
    assert server_view(bench.state)["c2@example.com"]["email"] == "c2@example.com"


# -- out-of-band bulk activities ----------------------------------------------------------


def bulk(bench: Bench, data: bytes, kind: str, name: str) -> None:
    """An ``import`` (add) or ``remove`` activity of ``data`` on ``News``, outside the sync."""
    path = bench.tmp / f"{name}.csv"
    path.write_bytes(data)
    options = ImportOptions(kind=kind, lists=("News",), **FAST)  # type: ignore[arg-type]

    async def go(client: Client) -> None:
        report = await run_import(client, path, options=options, run_dir=bench.tmp / name)
        assert report.state == "complete"

    bench.on_server(go)


def test_bulk_remove_and_add_between_syncs(bench: Bench) -> None:
    """A member taken off by a remove activity and an outsider put on by an add activity
    (the list's size unchanged); the file unchanged: both undone, as by the full plan."""
    data = csv_bytes(*BASE)
    bench.sync(data)
    bulk(bench, csv_bytes(b"c5@example.com,,"), "remove", "rm")
    bulk(bench, csv_bytes(b"z@example.com,Z,Z"), "add", "add")
    view = server_view(bench.state)
    assert not view["c5@example.com"]["member"]
    assert view["z@example.com"]["member"]
    bench.sync(data)
    bench.settled()
    assert bench.fast[-1]


def test_bulk_add_edits_a_member_between_syncs(bench: Bench) -> None:
    """An add activity outside the sync changes a member's value (its row unchanged)."""
    data = csv_bytes(*BASE)
    bench.sync(data)
    bulk(bench, csv_bytes(b"c7@example.com,Other,Place"), "add", "edit")
    report = bench.sync(data)
    assert report.counts.updated == 1
    bench.settled()


def test_list_cleared_between_syncs(bench: Bench) -> None:
    """Every member cleared by a CLEAR_CONTACTS_FROM_LISTS activity, the file unchanged."""
    data = csv_bytes(*BASE)
    bench.sync(data)

    async def clear(client: Client) -> None:
        report = await run_clear(client, lists=["News"], run_dir=bench.tmp / "clear")
        assert report.state == "complete"

    bench.on_server(clear)
    report = bench.sync(data)
    assert report.counts.added == 12
    bench.settled()


def test_interrupted_sync_resumed_after_a_newer_sync(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fast sync of B stopped after its plan; a sync of C completes; resuming B's sync is
    refused (its plan is older than the list's snapshot); a sync of C again settles C."""
    bench.sync(csv_bytes(*BASE))
    b_file = csv_bytes(b"c0@example.com,B,", *BASE[1:4], *BASE[5:], b"nb@example.com,B,B")
    c_file = csv_bytes(*BASE[:8], b"c9@example.com,C,C", b"nc@example.com,C,C")
    path = bench.write(b_file)
    sync_crashing_at(bench, monkeypatch, path, bench.tmp / "stale", "planned")
    bench.sync(c_file)

    async def again(client: Client) -> SyncReport:
        return await resume_sync(client, bench.tmp / "stale")

    # Its plan was made against A: sending it on top of C would leave neither B nor C.
    with pytest.raises(BaseException) as refused:  # noqa: PT011 - maybe grouped
        bench.on_server(again)
    assert "another sync of the list 'News' finished after" in repr(refused.value)
    bench.sync(c_file)
    bench.settled()
    assert bench.fast[-1]
