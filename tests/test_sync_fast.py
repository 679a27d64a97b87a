"""The fast plan of ``sync`` (only changed records read, the snapshot used in place) against
the full plan, its reference: the same outcomes, lines, reasons and counts; and the raw
record cutting it rests on (:mod:`bulkops.engine.sync_records`)."""

from __future__ import annotations

import csv
import io
from array import array
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import rule, run_state_machine_as_test
from msgspec.structs import replace

from bulkops.engine import sync_records
from bulkops.engine.client import Client
from bulkops.engine.import_options import ImportOptions
from bulkops.engine.journal import Journal
from bulkops.engine.sync import run_sync
from bulkops.engine.sync_records import NotSimple, OldSet, digest, iter_units, scan, units_at
from bulkops.engine.sync_report import SyncOptions
from bulkops.engine.sync_snap import runs_of
from tests.test_sync_stateful import FAST, SyncMachine, names, spellings

# -- cutting a file into units -------------------------------------------------------------

cells = st.text(alphabet=st.sampled_from(list('ab ,"\n\r\xe9@')), max_size=6)
rows_of = st.lists(st.lists(cells, min_size=2, max_size=2), max_size=12)


def _write(tmp: Path, rows: list[list[str]], terminator: str) -> Path:
    path = tmp / "f.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator=terminator)
        writer.writerow(["Email", "Name"])
        writer.writerows(rows)
    return path


@given(rows=rows_of, terminator=st.sampled_from(["\n", "\r\n"]))
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_units_are_the_records_csv_reads(
    tmp_path: Path, rows: list[list[str]], terminator: str
) -> None:
    """A file csv.writer wrote is cut into the records csv.reader reads, with their lines
    (a bare CR inside a value makes it one the cut refuses)."""
    path = _write(tmp_path, rows, terminator)
    data = path.read_bytes()
    try:
        units = list(iter_units(path, ","))
    except NotSimple:
        assert data.count(b"\r") != data.count(b"\r\n")
        return
    text = data.decode()
    reader = csv.reader(io.StringIO(text, newline=""))
    records = []
    start = 1
    for record in reader:
        records.append((record, start))
        start = reader.line_num + 1
    assert len(units) == len(records)
    for unit, (record, line) in zip(units, records, strict=True):
        assert unit.line == line
        assert next(csv.reader(io.StringIO(unit.content.decode(), newline=""))) == record


@pytest.mark.parametrize(
    "text",
    ['Email,Name\na@x.org,b"c\n', 'Email,Name\na@x.org,"b"c\n', "Email\ra@x.org\r", 'Email\n"a\n'],
)
def test_files_the_cut_may_misread_are_refused(tmp_path: Path, text: str) -> None:
    """Stray quotes, bare carriage returns, an open quote at the end: NotSimple."""
    path = tmp_path / "f.csv"
    path.write_bytes(text.encode())
    with pytest.raises(NotSimple):
        list(iter_units(path, ","))


@given(
    old=st.lists(st.integers(0, 30), max_size=40),
    new=st.lists(st.integers(0, 30), max_size=40),
)
@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_matching_pairs_equal_units_once(tmp_path: Path, old: list[int], new: list[int]) -> None:
    """A matched unit has the bytes of its old entry; no entry is matched twice; the entries
    left are the disappeared ones; a unit found nowhere in the old file is fresh."""
    path = tmp_path / "f.csv"
    path.write_text("Email\n" + "".join(f"r{n}@x.org\n" for n in new), encoding="utf-8")
    contents = [f"r{n}@x.org".encode() for n in old]
    olds = OldSet(array("Q", map(digest, contents)), array("I", [0] * len(old)))
    found = scan(path, olds, ",")
    assert len(found.match) == len(new)
    matched = [k for k in found.match if k >= 0]
    assert len(matched) == len(set(matched))
    for n, k in zip(new, found.match, strict=True):
        if k >= 0:
            assert contents[k] == f"r{n}@x.org".encode()
        elif f"r{n}@x.org".encode() not in contents:
            pass  # fresh: new bytes
    assert set(found.disappeared()) == set(range(len(old))) - set(matched)
    assert [u.content for u in found.fresh] == [
        f"r{n}@x.org".encode() for n, k in zip(new, found.match, strict=True) if k < 0
    ]


@given(steps=st.lists(st.sampled_from([1, 1, 1, 1, 2, 0, -3, 40]), max_size=300))
@settings(max_examples=300, deadline=None)
def test_runs_of_cover_the_entries_in_maximal_runs(steps: list[int]) -> None:
    """``runs_of`` (halving, compared in C) gives exactly the maximal runs of consecutive
    ascending entries that a walk one entry at a time finds."""
    entries = array("i")
    value = 7
    for step in steps:
        value += step
        entries.append(value)
    expected: list[tuple[int, int]] = []
    for i in range(len(entries)):
        if expected and entries[i - 1] + 1 == entries[i]:
            expected[-1] = (expected[-1][0], i + 1)
        else:
            expected.append((i, i + 1))
    assert runs_of(entries) == expected


# -- the fast plan against the full plan ------------------------------------------------------

#: Syncs made, and those that took the fast plan (the property must not pass vacuously).
TAKEN = {"all": 0, "fast": 0}
KINDS = ("added", "updated", "opted_out", "rejected", "duplicate", "failed")


def _outcomes(run_dir: Path, removed: str) -> dict[str, str]:
    files = {kind: (run_dir / f"{kind}.csv").read_text() for kind in KINDS}
    files["removed"] = (run_dir / f"{removed}.csv").read_text()
    return files


class FastMachine(SyncMachine):
    """The stateful machine of acceptance 1, each sync also planned by the full path (a dry
    run with ``full``) first: both plans must be the same."""

    def before_sync(self, path: Path) -> None:
        options = SyncOptions(
            list="News",
            remove_missing=True,
            yes=True,
            dry_run=True,
            full=True,
            send=ImportOptions(**FAST),  # type: ignore[arg-type]
        )
        run_dir = self.tmp / f"full{self.runs}"

        async def plan(client: Client, _server: Any) -> Any:
            return await run_sync(client, path, options=options, run_dir=run_dir)

        self.reference = self._on_server(plan)
        self.reference_files = _outcomes(run_dir, "to_remove")

    def sync_and_check(self) -> Any:
        report = super().sync_and_check()
        meta = Journal(self.tmp / f"run{self.runs}", create=False, read_only=True).meta()
        TAKEN["fast"] += bool(meta.get("fast"))
        TAKEN["all"] += 1
        assert self.reference.rows_parsed == self.reference.counts.read
        skipped = int((meta.get("fast") or {}).get("skipped") or 0)
        assert report.rows_parsed == report.counts.read - skipped
        # ``members`` of a complete sync's plan is counted after its changes: left out.
        assert replace(report.plan, members=0) == replace(self.reference.plan, members=0)
        got = _outcomes(self.tmp / f"run{self.runs}", "removed")
        # A complete sync reports what it removed; the dry run what it would remove.
        assert got == self.reference_files
        return report

    @rule(name=names, spell=spellings)
    def add_two_line_row(self, name: str, spell: Any) -> None:
        """A row whose value holds a line break (a quoted field over two lines)."""
        self.rows.append([spell(name) + "@example.com", "two\nlines", ' "q" '])
        self.sync_and_check()

    @rule(at=st.integers(0, 30))
    def move_row_to_the_end(self, at: int) -> None:
        """A row moved (its bytes unchanged, its place not)."""
        if self.rows:
            self.rows.append(self.rows.pop(at % len(self.rows)))
        self.sync_and_check()


@pytest.mark.slow
def test_the_fast_plan_equals_the_full_plan() -> None:
    """Random file edits and server changes: the fast plan's outcomes are the full plan's."""
    run_state_machine_as_test(
        FastMachine,
        settings=settings(
            max_examples=10,
            stateful_step_count=10,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
    assert TAKEN["fast"] >= TAKEN["all"] // 4, TAKEN


@given(
    rows=rows_of,
    block=st.integers(1, 40),
    picks=st.lists(st.integers(0, 20), max_size=6),
)
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_units_are_found_again_from_the_restarts(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    rows: list[list[str]],
    block: int,
    picks: list[int],
) -> None:
    """Units fetched by index (cutting only from the nearest clean block start) are the
    units of a whole cut, whatever the block size."""
    monkeypatch.setattr(sync_records, "BLOCK", block)
    path = _write(tmp_path, rows, "\n")
    try:
        every = list(iter_units(path, ","))[1:]
        found = scan(path, OldSet(), ",")
    except NotSimple:
        return
    assert [u.content for u in found.fresh] == [u.content for u in every]
    assert found.fresh_at == list(range(len(every)))
    indexes = sorted({p for p in picks if p < len(every)})
    assert units_at(path, ",", found.restarts, indexes) == [every[i] for i in indexes]
